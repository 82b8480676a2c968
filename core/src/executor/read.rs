//! Unrecorded reads: `GET`/`HEAD` lookups that need no ledger row.
//!
//! Reconciliation asks a provider what happened (search for an object by its
//! key, list recent messages, read a container's status). Those requests
//! change nothing at the provider, so they need no idempotency key and no
//! ledger row, and must not touch the row of the operation being
//! reconciled: a row changes only when reconciliation reaches a verdict
//! (`LedgerStore::resolve`) or when the adapter resends the write.
//!
//! [`Executor::read`] sends such a request through the same middleware stack
//! and retry loop as a write, with three differences:
//!
//! * only safe methods (`GET`, `HEAD`) are accepted; anything else is refused
//!   with [`ReadError::UnsafeMethod`] before a byte is sent, so a write can
//!   never bypass the ledger through this door;
//! * every transient failure may be retried, whatever the provider's
//!   [`SafetyClass`](super::SafetyClass): a read is naturally idempotent. The
//!   provider's [`Classifier`](super::Classifier) still decides what is
//!   transient (and its "do not retry" signals still win), its `Retry-After`
//!   reading is honoured, and its [`RetrySettings`](super::RetrySettings)
//!   bound attempts and time;
//! * any complete HTTP answer is returned as a [`ReadResponse`], whatever its
//!   status (a 404 can be the answer the adapter is looking for); only a
//!   transport failure is an error.

use std::fmt;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Extensions, HeaderMap, Method, StatusCode};

use super::Executor;
use super::ReadError;
use super::policy::{Effect, Provider, SafetyClass, TransportError, TransportKind, Verdict};
use super::request::OutboundRequest;
use super::retry::CallContext;
use crate::metrics::outbound as names;

/// A provider's complete answer to an unrecorded read. Its status may be
/// anything: the adapter interprets it.
#[derive(Clone)]
#[non_exhaustive]
pub struct ReadResponse {
    /// The HTTP status of the last attempt.
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body, buffered.
    pub body: Bytes,
    /// The provider classifier's verdict on it (for example
    /// [`Verdict::Transient`] for a 503 that outlasted the retries).
    pub verdict: Verdict,
    /// The wait the provider asked for on this answer (its classifier's
    /// reading of `Retry-After` or the like), for example on a 429 that
    /// outlasted the retries.
    pub retry_after: Option<Duration>,
    /// Attempts on the wire, the last included.
    pub attempts: u32,
}

impl fmt::Debug for ReadResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body can hold customer data: only its length is shown.
        f.debug_struct("ReadResponse")
            .field("status", &self.status)
            .field("verdict", &self.verdict)
            .field("retry_after", &self.retry_after)
            .field("attempts", &self.attempts)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl ReadResponse {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        self.status.is_success()
    }

    /// Parses the body as JSON.
    ///
    /// # Errors
    ///
    /// When the body is not the expected JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// Whether `method` may be sent as an unrecorded read.
fn is_safe(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

impl Executor {
    /// Sends a `GET` or `HEAD` that is not an operation: no idempotency key,
    /// no ledger row, nothing recorded. For reconciliation lookups and other
    /// reads an adapter needs; the row of the operation being reconciled is
    /// left alone, and changes only when the adapter reaches a verdict
    /// ([`LedgerStore::resolve`](crate::ledger::LedgerStore::resolve)) or
    /// resends the write.
    ///
    /// * Only `GET` and `HEAD` are sent; any other method is refused with
    ///   [`ReadError::UnsafeMethod`] before anything is sent, so a write
    ///   never bypasses the ledger.
    /// * The request runs through the executor's middleware (once per
    ///   attempt) and retry loop. Every failure the provider's classifier
    ///   calls transient is retried, whatever the provider's
    ///   [`SafetyClass`]: a read is naturally idempotent. The classifier's
    ///   other verdicts (a rejection, an "ambiguous, do not retry" signal)
    ///   end the loop, its `Retry-After` reading is honoured, and the
    ///   provider's [`RetrySettings`](super::RetrySettings) bound attempts
    ///   and time.
    /// * Any complete HTTP answer is returned as a [`ReadResponse`], whatever
    ///   its status (a 404 may be the answer the adapter looks for); only a
    ///   transport failure is an error.
    ///
    /// ```no_run
    /// use idem::executor::{Executor, OutboundRequest, Provider, SafetyClass, StatusClassifier};
    /// use idem::ledger::SqliteStore;
    ///
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let executor = Executor::builder(SqliteStore::open("worker.db").await?).build();
    /// // A local-only provider: its writes are never resent blindly, but its
    /// // reads are retried on any transient failure.
    /// let acme = Provider::new("acme", SafetyClass::LocalOnly, StatusClassifier);
    ///
    /// let lookup = OutboundRequest::get("https://api.acme.test/notifications?order=42".parse()?)
    ///     .bearer_auth("token");
    /// let answer = executor.read(&acme, lookup).await?;
    /// if answer.status == http::StatusCode::NOT_FOUND {
    ///     println!("no notification for order 42");
    /// } else if answer.is_success() {
    ///     let found: serde_json::Value = answer.json()?;
    ///     println!("found {found}");
    /// }
    ///
    /// // A write is refused before anything is sent.
    /// let write = OutboundRequest::post("https://api.acme.test/notify".parse()?);
    /// assert!(executor.read(&acme, write).await.unwrap_err().is_unsafe_method());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`ReadError::UnsafeMethod`] for any method other than `GET` or `HEAD`
    /// and [`ReadError::InvalidRequest`] for a request that cannot be built
    /// (nothing is sent in either case); [`ReadError::Transport`] when no
    /// complete answer arrived within the provider's retry bounds.
    pub async fn read(
        &self,
        provider: &Provider,
        request: OutboundRequest,
    ) -> Result<ReadResponse, ReadError> {
        if !is_safe(request.method()) {
            return Err(ReadError::UnsafeMethod {
                provider: provider.name().to_owned(),
                method: request.method().clone(),
            });
        }
        // A read changes nothing at the provider: any transient failure may be
        // resent, whatever the provider's writes allow.
        let mut reader = provider.clone();
        reader.class = SafetyClass::NaturallyIdempotent;
        let name = provider.name().to_owned();
        let req = request
            .into_reqwest(Some(reader.retry.attempt_timeout))
            .map_err(|reason| ReadError::InvalidRequest {
                provider: name.clone(),
                reason,
            })?;
        let path = req.url().path().to_owned();
        let method = req.method().clone();
        let ctx = CallContext::new(reader, self.inner.clock.clone());
        let mut extensions = Extensions::new();
        extensions.insert(ctx.clone());
        let started = Instant::now();
        let result = self
            .inner
            .client
            .execute_with_extensions(req, &mut extensions)
            .await;
        let records = ctx.records();
        let attempts = u32::try_from(records.len()).unwrap_or(u32::MAX);
        metrics::counter!(names::READ_ATTEMPTS, "provider" => name.clone())
            .increment(records.len() as u64);
        metrics::histogram!(names::READ_DURATION, "provider" => name.clone())
            .record(started.elapsed().as_secs_f64());
        let last = records.last();
        let failed = |error: TransportError| {
            tracing::debug!(provider = %name, %method, %path, attempts, error = %error, "read failed");
            ReadError::Transport {
                provider: name.clone(),
                attempts,
                error,
            }
        };
        let response = match result {
            Ok(response) => response,
            Err(err) => {
                let error = last
                    .and_then(|a| a.transport.clone())
                    .unwrap_or_else(|| match &err {
                        reqwest_middleware::Error::Reqwest(e) => TransportError::from_reqwest(e),
                        reqwest_middleware::Error::Middleware(e) => TransportError {
                            kind: TransportKind::Other,
                            message: format!("middleware error: {e}"),
                        },
                    });
                return Err(failed(error));
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        // Already buffered by the retry middleware: this cannot fail on the
        // network.
        let body = response
            .bytes()
            .await
            .map_err(|e| failed(TransportError::from_reqwest(&e)))?;
        let (verdict, retry_after) = last.map_or((Verdict::Transient(Effect::None), None), |a| {
            (a.verdict, a.retry_after)
        });
        tracing::debug!(provider = %name, %method, %path, status = status.as_u16(), attempts, "read answered");
        Ok(ReadResponse {
            status,
            headers,
            body,
            verdict,
            retry_after,
            attempts,
        })
    }
}
