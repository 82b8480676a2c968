//! The outbound executor: the one component that sends HTTP for adapters.
//!
//! For every operation it
//! 1. records the key in the ledger (`pending`) before anything is sent,
//! 2. answers from the ledger when the operation already succeeded or failed,
//! 3. claims the operation atomically (so no two workers send one key at once),
//! 4. sends with retries the provider's [`SafetyClass`] allows, honouring
//!    `Retry-After`, within bounded attempts and time,
//! 5. records the outcome: `succeeded`, `failed`, `unknown`, or back to
//!    `pending` when the request provably had no effect.
//!
//! Reads that are not operations (reconciliation lookups) go through
//! [`Executor::read`]: `GET`/`HEAD` only, same middleware and retries, no
//! ledger row.
//!
//! ```no_run
//! use idem::{Executor, IdempotencyKey, OutboundRequest, Provider, SafetyClass};
//! use idem::executor::StatusClassifier;
//! use idem::ledger::SqliteStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open("worker.db").await?;
//! let executor = Executor::builder(store).build();
//! let acme = Provider::new("acme", SafetyClass::LocalOnly, StatusClassifier);
//!
//! let key: IdempotencyKey = "joes-bikes_orders_42_v1".parse()?;
//! let request = OutboundRequest::post("https://api.acme.test/notify".parse()?)
//!     .json(&serde_json::json!({ "order": 42 }));
//! let delivered = executor.execute(&acme, &key, "notify", request).await?;
//! println!("HTTP {} ({:?})", delivered.status, delivered.source);
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Extensions, HeaderMap, StatusCode};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware};

use crate::clock::{Clock, SystemClock};
use crate::fingerprint::Fingerprint;
use crate::key::IdempotencyKey;
use crate::ledger::{
    Begin, ClaimFrom, Completion, Lease, LedgerStore, NewOperation, Operation, OperationState,
    StoreError,
};
use crate::metrics::outbound as names;

mod error;
mod http_settings;
mod policy;
mod read;
mod request;
mod retry;

pub use http_settings::{HttpSettings, HttpSettingsError};
pub use policy::{
    Classifier, Effect, Provider, RetrySettings, SafetyClass, StatusClassifier, TransportError,
    TransportKind, Verdict, default_status_verdict, parse_retry_after,
};
pub use read::ReadResponse;
pub use request::{OutboundRequest, Url};
pub use retry::{AttemptRecord, IdemRetry};

pub use error::{ExecError, ReadError, UnrecordedAnswer};

use retry::CallContext;

/// Where a [`Delivered`] answer came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// From the provider now, after this many attempts on the wire.
    Wire {
        /// Attempts in this claim.
        attempts: u32,
    },
    /// From the ledger: an earlier run succeeded, no request was made.
    Ledger,
    /// From reconciliation: the provider was asked what happened.
    Reconciled,
}

/// A successful outcome.
#[derive(Clone)]
#[non_exhaustive]
pub struct Delivered {
    /// The operation's key.
    pub key: IdempotencyKey,
    /// The provider's status.
    pub status: StatusCode,
    /// The provider's headers (empty when answered from the ledger).
    pub headers: HeaderMap,
    /// The provider's body.
    pub body: Bytes,
    /// Where it came from.
    pub source: Source,
}

impl fmt::Debug for Delivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivered")
            .field("key", &self.key)
            .field("status", &self.status)
            .field("source", &self.source)
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl Delivered {
    /// Parses the body as JSON.
    ///
    /// # Errors
    ///
    /// When the body is not the expected JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }

    /// Whether the answer was replayed from the ledger with no request.
    pub fn from_ledger(&self) -> bool {
        self.source == Source::Ledger
    }

    fn from_operation(op: &Operation, source: Source) -> Self {
        Self {
            key: op.key.clone(),
            status: op
                .response_status
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::OK),
            headers: HeaderMap::new(),
            body: op.response_body.clone().unwrap_or_default(),
            source,
        }
    }
}

/// Builds an [`Executor`].
pub struct ExecutorBuilder {
    store: Arc<dyn LedgerStore>,
    clock: Arc<dyn Clock>,
    http: Option<reqwest::Client>,
    middleware: Vec<Arc<dyn Middleware>>,
    lease_margin: Duration,
}

impl fmt::Debug for ExecutorBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutorBuilder")
            .field("store", &self.store)
            .field("middleware", &self.middleware.len())
            .finish_non_exhaustive()
    }
}

impl ExecutorBuilder {
    /// Uses `clock` for ledger times, leases and key windows.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Uses `clock` (shared) for ledger times, leases and key windows.
    pub fn shared_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Uses this reqwest client (connection pool, TLS, proxy settings).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Builds the HTTP client from `settings` (timeouts, pool, proxy, root
    /// certificates, user agent). This is how wiring code configures the
    /// client without naming an HTTP client crate; it replaces an earlier
    /// [`http_client`](Self::http_client).
    ///
    /// ```
    /// use std::time::Duration;
    /// use idem::executor::HttpSettings;
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = idem::ledger::SqliteStore::open("worker.db").await?;
    /// let executor = idem::Executor::builder(store)
    ///     .http_settings(HttpSettings::new().connect_timeout(Duration::from_secs(5)))?
    ///     .build();
    /// # let _ = executor; Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`HttpSettingsError`] for an invalid proxy URL or certificate.
    pub fn http_settings(mut self, settings: HttpSettings) -> Result<Self, HttpSettingsError> {
        self.http = Some(settings.build()?);
        Ok(self)
    }

    /// Adds a middleware that runs once per attempt, inside the retry loop
    /// (for example tracing or metrics of each attempt).
    pub fn with(mut self, middleware: impl Middleware) -> Self {
        self.middleware.push(Arc::new(middleware));
        self
    }

    /// Extra lease time beyond a provider's claim budget (default 30 s).
    /// The lease must outlast the longest claim, or a live sender would be
    /// taken for dead.
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.lease_margin = margin;
        self
    }

    /// The executor.
    pub fn build(self) -> Executor {
        let http = self.http.unwrap_or_default();
        let mut builder = ClientBuilder::new(http).with(IdemRetry);
        for m in self.middleware {
            builder = builder.with_arc(m);
        }
        Executor {
            inner: Arc::new(Inner {
                store: self.store,
                clock: self.clock,
                client: builder.build(),
                lease_margin: self.lease_margin,
            }),
        }
    }
}

struct Inner {
    store: Arc<dyn LedgerStore>,
    clock: Arc<dyn Clock>,
    client: ClientWithMiddleware,
    lease_margin: Duration,
}

/// Sends adapters' requests under the ledger's protection. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("store", &self.inner.store)
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

/// What [`Executor::begin`] found.
// A `Begun` lives for one call and is matched at once; boxing the claim
// would cost an allocation per operation for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
#[non_exhaustive]
pub enum Begun {
    /// The operation already succeeded; no request is needed.
    Done(Delivered),
    /// This worker holds the operation and may send it.
    Claimed(Claim),
}

impl Executor {
    /// Starts building an executor over `store`.
    pub fn builder(store: impl LedgerStore) -> ExecutorBuilder {
        Self::builder_shared(Arc::new(store))
    }

    /// Starts building an executor over a shared store.
    pub fn builder_shared(store: Arc<dyn LedgerStore>) -> ExecutorBuilder {
        ExecutorBuilder {
            store,
            clock: Arc::new(SystemClock),
            http: None,
            middleware: Vec::new(),
            lease_margin: Duration::from_secs(30),
        }
    }

    /// The ledger store.
    pub fn store(&self) -> &Arc<dyn LedgerStore> {
        &self.inner.store
    }

    /// The clock.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// The current time by the executor's clock.
    pub fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    /// Runs one single-request operation end to end: record, claim, send
    /// with the provider's retries, record the outcome.
    ///
    /// # Errors
    ///
    /// See [`ExecError`]: every variant about an operation names its key and
    /// leaves the ledger in a state from which the next run does the right
    /// thing.
    pub async fn execute(
        &self,
        provider: &Provider,
        key: &IdempotencyKey,
        operation: &str,
        request: OutboundRequest,
    ) -> Result<Delivered, ExecError> {
        if let Some(e) = &request.error {
            return Err(ExecError::InvalidRequest {
                key: key.clone(),
                reason: e.clone(),
            });
        }
        match self
            .begin(provider, key, operation, request.fingerprint())
            .await?
        {
            Begun::Done(delivered) => Ok(delivered),
            Begun::Claimed(mut claim) => {
                let outcome = claim.send(request).await;
                claim.finish(outcome).await
            }
        }
    }

    /// Records the operation (if new) and claims it for sending, or answers
    /// from the ledger. For multi-step operations; single requests use
    /// [`execute`](Self::execute).
    ///
    /// # Errors
    ///
    /// [`ExecError::Rejected`] (stored failure), [`ExecError::OutcomeUnknown`],
    /// [`ExecError::InFlight`], [`ExecError::Superseded`], or a store error
    /// such as [`StoreError::KeyReused`].
    pub async fn begin(
        &self,
        provider: &Provider,
        key: &IdempotencyKey,
        operation: &str,
        fingerprint: Fingerprint,
    ) -> Result<Begun, ExecError> {
        self.begin_inner(provider, key, operation, fingerprint, false)
            .await
    }

    /// As [`begin`](Self::begin), but an `unknown` operation is claimed for a
    /// resend even where the safety class would not allow it. Only for an
    /// adapter that has just reconciled with the provider and established
    /// that the earlier attempt had no effect (for example an Instagram
    /// container that is still unpublished).
    ///
    /// # Errors
    ///
    /// As [`begin`](Self::begin).
    pub async fn begin_after_reconcile(
        &self,
        provider: &Provider,
        key: &IdempotencyKey,
        operation: &str,
        fingerprint: Fingerprint,
    ) -> Result<Begun, ExecError> {
        self.begin_inner(provider, key, operation, fingerprint, true)
            .await
    }

    async fn begin_inner(
        &self,
        provider: &Provider,
        key: &IdempotencyKey,
        operation: &str,
        fingerprint: Fingerprint,
        reconciled: bool,
    ) -> Result<Begun, ExecError> {
        let store = &self.inner.store;
        let new = NewOperation::new(key.clone(), provider.name(), operation, fingerprint);
        let lease_for = provider.retry.claim_budget() + self.inner.lease_margin;
        // The common case, a key never seen before, is recorded and claimed
        // in one durable write.
        let mut op = match store.begin_claimed(&new, lease_for, self.now()).await? {
            Begin::Claimed(op, lease) => {
                return Ok(Begun::Claimed(Claim {
                    executor: self.clone(),
                    provider: provider.clone(),
                    lease,
                    op,
                    attempts: 0,
                }));
            }
            Begin::Existing(op) => op,
        };
        // A few rounds at most: each round either returns or moves the row
        // forward (expired lease -> unknown; lost claim race -> re-read).
        for _ in 0..4 {
            let now = self.now();
            // A `pending` row that may have taken effect cannot exist by the
            // store's rules; if one does, it is treated as `unknown`.
            let state = match op.state {
                OperationState::Pending if op.may_have_taken_effect() => OperationState::Unknown,
                state => state,
            };
            let from = match state {
                OperationState::Succeeded | OperationState::Failed if op.compacted_at.is_some() => {
                    return Err(ExecError::Compacted {
                        key: op.key,
                        state: op.state,
                        provider_id: op.provider_id,
                    });
                }
                OperationState::Succeeded => {
                    metrics::counter!(names::LEDGER_REPLAY, "provider" => provider.name().to_owned())
                        .increment(1);
                    return Ok(Begun::Done(Delivered::from_operation(&op, Source::Ledger)));
                }
                OperationState::Failed => return Err(stored_rejection(&op)),
                OperationState::Superseded => {
                    return Err(match op.superseded_by {
                        Some(by) => ExecError::Superseded { key: op.key, by },
                        None => ExecError::Store(StoreError::Corrupt(format!(
                            "{} is superseded but names no successor",
                            op.key
                        ))),
                    });
                }
                OperationState::Sending if !op.lease_expired(now) => {
                    return Err(ExecError::InFlight {
                        key: op.key,
                        lease_expires_at: op.lease_expires_at.unwrap_or(now),
                    });
                }
                OperationState::Sending => {
                    // The sender died mid-flight: its outcome is unknown.
                    store.expire_lease(key, now).await?;
                    op = self.reload(key).await?;
                    continue;
                }
                OperationState::Unknown => {
                    let budget = provider.retry.claim_budget();
                    if reconciled
                        || provider
                            .class
                            .may_resend_unknown(op.first_sent_at, now, budget)
                    {
                        ClaimFrom::PendingOrUnknown
                    } else {
                        let reason = unknown_reason(&op, provider);
                        return Err(ExecError::OutcomeUnknown {
                            key: op.key,
                            reason,
                        });
                    }
                }
                OperationState::Pending => ClaimFrom::Pending,
            };
            match store.claim(key, from, lease_for, now).await? {
                Some(lease) => {
                    let op = self.reload(key).await?;
                    return Ok(Begun::Claimed(Claim {
                        executor: self.clone(),
                        provider: provider.clone(),
                        lease,
                        op,
                        attempts: 0,
                    }));
                }
                None => op = self.reload(key).await?,
            }
        }
        Err(ExecError::InFlight {
            key: key.clone(),
            lease_expires_at: op.lease_expires_at.unwrap_or_else(|| self.now()),
        })
    }

    async fn reload(&self, key: &IdempotencyKey) -> Result<Operation, StoreError> {
        self.inner
            .store
            .get(key)
            .await?
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })
    }
}

fn unknown_reason(op: &Operation, provider: &Provider) -> String {
    let what = op
        .note
        .as_deref()
        .unwrap_or("an earlier attempt may have reached the provider");
    match provider.class {
        SafetyClass::NativeKey { .. } => {
            format!("{what}; the provider's key window no longer covers a resend")
        }
        _ => format!(
            "{what}; {} has no idempotency key to dedupe a resend",
            provider.name()
        ),
    }
}

fn stored_rejection(op: &Operation) -> ExecError {
    ExecError::Rejected {
        key: op.key.clone(),
        status: op
            .response_status
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::BAD_REQUEST),
        body: op.response_body.clone().unwrap_or_default(),
        from_ledger: true,
    }
}

/// The result of [`Claim::send`]: every attempt of one send, and the last
/// answer.
#[derive(Debug)]
#[non_exhaustive]
pub struct SendOutcome {
    /// The final verdict.
    pub verdict: Verdict,
    /// The final response, when one arrived whole.
    pub response: Option<(StatusCode, HeaderMap, Bytes)>,
    /// The final transport failure, when no whole response arrived.
    pub transport: Option<TransportError>,
    /// Every attempt on the wire, in order.
    pub attempts: Vec<AttemptRecord>,
    /// The wait the provider asked for on its last answer.
    pub retry_after: Option<Duration>,
    /// A request problem found before sending (nothing was sent).
    pub invalid: Option<String>,
    /// The claim's lease had run out and could not be renewed, so nothing
    /// was sent: another worker may own the operation now.
    pub lease_lost: bool,
}

impl SendOutcome {
    /// Whether any attempt may have had an effect at the provider.
    pub fn effect_possible(&self) -> bool {
        self.attempts.iter().any(|a| a.verdict.effect_possible())
    }

    /// The completion this outcome records, by the usual rules: success →
    /// `succeeded`; rejection → `failed`; no attempt with a possible effect →
    /// back to `pending`; anything else → `unknown`.
    pub fn completion(&self) -> Completion {
        if self.lease_lost {
            return Completion::NotSent {
                note: "the lease ran out before sending; nothing was sent".to_owned(),
            };
        }
        if let Some(reason) = &self.invalid {
            return Completion::NotSent {
                note: format!("invalid request, nothing sent: {reason}"),
            };
        }
        match (self.verdict, &self.response) {
            (Verdict::Success, Some((status, _, body))) => Completion::Succeeded {
                status: status.as_u16(),
                body: body.clone(),
            },
            (Verdict::Rejected, Some((status, _, body))) => Completion::Failed {
                status: status.as_u16(),
                body: body.clone(),
                note: format!("provider rejected the request with HTTP {status}"),
            },
            _ if !self.effect_possible() => Completion::NotSent {
                note: format!("not processed by the provider: {}", self.describe()),
            },
            _ => Completion::Unknown {
                note: self.describe(),
                status: self.response.as_ref().map(|(s, _, _)| s.as_u16()),
            },
        }
    }

    /// The last failure, in words (no URL, no body).
    pub fn describe(&self) -> String {
        let last = match (&self.response, &self.transport) {
            (Some((status, _, _)), _) => format!("HTTP {status}"),
            (None, Some(t)) => t.message.clone(),
            (None, None) => "no attempt made".to_owned(),
        };
        format!("{last} after {} attempt(s)", self.attempts.len())
    }
}

/// A worker's hold on one operation. Send with [`send`](Self::send), record
/// progress with [`checkpoint`](Self::checkpoint), and end with
/// [`finish`](Self::finish) or [`complete`](Self::complete). A claim dropped
/// without finishing leaves the row `sending` until its lease ends; it then
/// counts as `unknown`, exactly like a crash.
#[derive(Debug)]
pub struct Claim {
    executor: Executor,
    provider: Provider,
    lease: Lease,
    op: Operation,
    attempts: u32,
}

impl Claim {
    /// The row as claimed (its `checkpoint` is kept from earlier claims).
    pub fn operation(&self) -> &Operation {
        &self.op
    }

    /// The key.
    pub fn key(&self) -> &IdempotencyKey {
        &self.lease.key
    }

    /// Whether this claim resends an operation whose earlier outcome was
    /// unknown (same key).
    pub fn is_resend(&self) -> bool {
        self.op.claims > 1
    }

    /// The lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Sends one request with the provider's retry rules. Does not record
    /// the outcome; pass it to [`finish`](Self::finish) or inspect it first.
    pub async fn send(&mut self, request: OutboundRequest) -> SendOutcome {
        let ctx = CallContext::new(self.provider.clone(), self.executor.inner.clock.clone());
        let mut extensions = Extensions::new();
        extensions.insert(ctx.clone());
        let timeout = Some(self.provider.retry.attempt_timeout);
        let req = match request.into_reqwest(timeout) {
            Ok(req) => req,
            Err(reason) => {
                return SendOutcome {
                    verdict: Verdict::Rejected,
                    response: None,
                    transport: None,
                    attempts: Vec::new(),
                    retry_after: None,
                    invalid: Some(reason),
                    lease_lost: false,
                };
            }
        };
        // A send never starts on a lease that could run out before the claim
        // budget does: renew it first (fenced), or send nothing.
        let now = self.executor.now();
        let budget = self.provider.retry.claim_budget();
        let left = self
            .lease
            .expires_at
            .duration_since(now)
            .unwrap_or_default();
        if left < budget && self.renew().await.is_err() {
            return SendOutcome {
                verdict: Verdict::Transient(Effect::None),
                response: None,
                transport: None,
                attempts: Vec::new(),
                retry_after: None,
                invalid: None,
                lease_lost: true,
            };
        }
        let started = std::time::Instant::now();
        let result = self
            .executor
            .inner
            .client
            .execute_with_extensions(req, &mut extensions)
            .await;
        let attempts = ctx.records();
        self.attempts += u32::try_from(attempts.len()).unwrap_or(u32::MAX);
        let last = attempts.last().cloned();
        let (verdict, retry_after) = last
            .as_ref()
            .map_or((Verdict::Transient(Effect::None), None), |a| {
                (a.verdict, a.retry_after)
            });
        let (response, transport) = match result {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                // Already buffered by the retry middleware: this cannot
                // fail on the network.
                match resp.bytes().await {
                    Ok(body) => (Some((status, headers, body)), None),
                    Err(e) => (None, Some(TransportError::from_reqwest(&e))),
                }
            }
            Err(_) => (None, last.and_then(|a| a.transport)),
        };
        let provider = self.provider.name().to_owned();
        metrics::counter!(names::ATTEMPTS, "provider" => provider.clone())
            .increment(attempts.len() as u64);
        metrics::histogram!(names::DURATION, "provider" => provider)
            .record(started.elapsed().as_secs_f64());
        SendOutcome {
            verdict,
            response,
            transport,
            attempts,
            retry_after,
            invalid: None,
            lease_lost: false,
        }
    }

    /// Extends the lease to a full claim budget (plus the executor's lease
    /// margin) from now. Long multi-step operations call it between steps;
    /// [`send`](Self::send) calls it by itself when less than one claim
    /// budget is left.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when another worker expired or claimed the
    /// row meanwhile: stop, and send nothing more.
    pub async fn renew(&mut self) -> Result<(), ExecError> {
        let lease_for = self.provider.retry.claim_budget() + self.executor.inner.lease_margin;
        let now = self.executor.now();
        let lease = self
            .executor
            .inner
            .store
            .renew(&self.lease, lease_for, now)
            .await?;
        self.lease = lease;
        Ok(())
    }

    /// Records progress inside the claim (for example a container id), kept
    /// for later claims of the same key.
    ///
    /// # Errors
    ///
    /// [`StoreError::LeaseLost`] when the lease was taken over.
    pub async fn checkpoint(&mut self, value: &str) -> Result<(), ExecError> {
        let now = self.executor.now();
        self.executor
            .inner
            .store
            .checkpoint(&self.lease, value, now)
            .await?;
        self.op.checkpoint = Some(value.to_owned());
        Ok(())
    }

    /// Records `outcome` by the usual rules (see
    /// [`SendOutcome::completion`]) and turns it into the caller's result.
    ///
    /// # Errors
    ///
    /// [`ExecError::Rejected`], [`ExecError::OutcomeUnknown`],
    /// [`ExecError::NotSent`] or a store error.
    pub async fn finish(self, outcome: SendOutcome) -> Result<Delivered, ExecError> {
        let completion = outcome.completion();
        let headers = outcome
            .response
            .as_ref()
            .map(|(_, h, _)| h.clone())
            .unwrap_or_default();
        let retry_after = outcome.retry_after;
        let invalid = outcome.invalid.clone();
        let key = self.lease.key.clone();
        let attempts = self.attempts;
        if outcome.lease_lost {
            return Err(ExecError::Store(StoreError::LeaseLost { key }));
        }
        let op = self.complete(completion.clone()).await?;
        if let Some(reason) = invalid {
            return Err(ExecError::InvalidRequest { key, reason });
        }
        if op.state == OperationState::Unknown {
            // Nothing was sent this time, but an earlier attempt may have
            // taken effect: the row stays unknown, and so does the answer.
            return Err(ExecError::OutcomeUnknown {
                key,
                reason: op.note.unwrap_or_else(|| completion_note(&completion)),
            });
        }
        match completion {
            Completion::Succeeded { .. } => {
                let mut delivered = Delivered::from_operation(&op, Source::Wire { attempts });
                delivered.headers = headers;
                Ok(delivered)
            }
            Completion::Failed { .. } => Err(ExecError::Rejected {
                key,
                status: op
                    .response_status
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .unwrap_or(StatusCode::BAD_REQUEST),
                body: op.response_body.unwrap_or_default(),
                from_ledger: false,
            }),
            Completion::NotSent { note } => Err(ExecError::NotSent {
                key,
                reason: note,
                retry_after,
            }),
            Completion::Unknown { note, .. } => {
                Err(ExecError::OutcomeUnknown { key, reason: note })
            }
        }
    }

    /// Records a completion chosen by the adapter and returns the row.
    ///
    /// A failed write is retried a few times ([`COMPLETION_WRITE_ATTEMPTS`],
    /// with backoff), so one blip of the database does not lose an answer.
    ///
    /// # Errors
    ///
    /// - [`ExecError::AnswerNotRecorded`] when the provider's answer was
    ///   definitive (success or rejection) but could not be written: never
    ///   retry the job blindly, the provider has acted (or refused). Logged
    ///   at error level with the key.
    /// - [`ExecError::OutcomeUnknown`] when the answer was "unknown" and could
    ///   not be written (the row becomes `unknown` when its lease runs out).
    /// - [`StoreError::LeaseLost`] / a store error when nothing was sent and
    ///   the write failed.
    pub async fn complete(self, completion: Completion) -> Result<Operation, ExecError> {
        let op = match self.record(&completion).await {
            Ok(op) => op,
            Err(e) => return Err(self.unrecorded(&completion, e)),
        };
        let outcome = match &completion {
            Completion::Succeeded { .. } => "succeeded",
            Completion::Failed { .. } => "failed",
            Completion::Unknown { .. } => "unknown",
            Completion::NotSent { .. } => "not_sent",
        };
        metrics::counter!(names::OUTCOME, "provider" => self.provider.name().to_owned(), "outcome" => outcome)
            .increment(1);
        tracing::info!(
            key = %self.lease.key,
            provider = %self.provider.name(),
            operation = %op.operation,
            outcome,
            attempts = self.attempts,
            "outbound operation recorded"
        );
        Ok(op)
    }

    /// Writes the completion, retrying a store that is unavailable. The
    /// waits (20 ms, 80 ms, 320 ms, 1 s) add up to more than the second for
    /// which `PgStore` hands out a recently used connection unpinged, so after
    /// a server restart the last tries get live connections
    /// (`tests/pg_dead_connections.rs`).
    async fn record(&self, completion: &Completion) -> Result<Operation, StoreError> {
        let mut wait = Duration::from_millis(20);
        let mut attempt = 1;
        loop {
            let now = self.executor.now();
            match self
                .executor
                .inner
                .store
                .complete(&self.lease, completion, now)
                .await
            {
                Err(e) if e.is_unavailable() && attempt < COMPLETION_WRITE_ATTEMPTS => {
                    tracing::warn!(
                        key = %self.lease.key,
                        attempt,
                        "recording the outcome failed; retrying the write"
                    );
                    tokio::time::sleep(wait).await;
                    wait = (wait * 4).min(Duration::from_secs(1));
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The error for a completion that could not be written.
    fn unrecorded(&self, completion: &Completion, error: StoreError) -> ExecError {
        let key = self.lease.key.clone();
        let (status, body) = match completion {
            Completion::Succeeded { status, body } | Completion::Failed { status, body, .. } => {
                (*status, body.clone())
            }
            Completion::Unknown { note, .. } => {
                return ExecError::OutcomeUnknown {
                    key,
                    reason: format!("{note}; recording it also failed: {error}"),
                };
            }
            Completion::NotSent { .. } => return ExecError::Store(error),
        };
        let provider_id = crate::ledger::provider_id_of(&body);
        tracing::error!(
            key = %key,
            provider = %self.provider.name(),
            status,
            provider_id = provider_id.as_deref().unwrap_or(""),
            error = %error,
            "the provider answered definitively but the ledger did not record it; \
             do not resend: settle this key with the provider's answer"
        );
        ExecError::AnswerNotRecorded {
            key,
            answer: Box::new(UnrecordedAnswer {
                status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                succeeded: matches!(completion, Completion::Succeeded { .. }),
                provider_id,
                body,
                error,
            }),
        }
    }
}

/// How many times [`Claim::complete`] tries to write an outcome before it
/// gives up (the first try included).
pub const COMPLETION_WRITE_ATTEMPTS: u32 = 5;

fn completion_note(c: &Completion) -> String {
    match c {
        Completion::NotSent { note } | Completion::Unknown { note, .. } => note.clone(),
        Completion::Failed { note, .. } => note.clone(),
        Completion::Succeeded { .. } => "succeeded".to_owned(),
    }
}
