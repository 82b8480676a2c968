//! The retry loop, as a `reqwest-middleware` middleware.
//!
//! reqwest-retry's own `RetryTransientMiddleware` retries every method on
//! timeouts and 5xx and does not read `Retry-After`; both are wrong for
//! writes without a native key. This middleware keeps reqwest-retry's
//! backoff policy (exponential, bounded jitter) and adds what idem needs: the
//! provider's [`Classifier`](super::Classifier) reads each answer (body
//! included), the [`SafetyClass`](super::SafetyClass) decides whether a
//! resend is allowed, `Retry-After` is honoured, and every attempt is logged
//! so the executor can tell "never sent" from "outcome unknown".

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Extensions, HeaderMap, StatusCode};
use reqwest_middleware::{Middleware, Next};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{Jitter, RetryDecision, RetryPolicy};

use super::policy::{Provider, TransportError, Verdict};

/// One attempt on the wire, as the executor sees it afterwards.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The classifier's verdict.
    pub verdict: Verdict,
    /// The HTTP status, when a response arrived.
    pub status: Option<StatusCode>,
    /// The transport failure, when none did.
    pub transport: Option<TransportError>,
    /// The wait the provider asked for, if any.
    pub retry_after: Option<Duration>,
}

/// Per-call context, carried in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct CallContext {
    pub(crate) provider: Provider,
    pub(crate) deadline: Instant,
    pub(crate) log: Arc<Mutex<Vec<AttemptRecord>>>,
}

impl CallContext {
    pub(crate) fn new(provider: Provider) -> Self {
        let deadline = Instant::now() + provider.retry.total_timeout;
        Self {
            provider,
            deadline,
            log: Arc::new(Mutex::new(Vec::new())),
        }
    }

    pub(crate) fn records(&self) -> Vec<AttemptRecord> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn push(&self, record: AttemptRecord) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

/// The retry middleware. Stateless: everything per call comes from the
/// [`CallContext`] in the extensions; without one it passes requests through.
#[derive(Debug, Clone, Copy, Default)]
pub struct IdemRetry;

#[async_trait::async_trait]
impl Middleware for IdemRetry {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let Some(ctx) = extensions.get::<CallContext>().cloned() else {
            return next.run(req, extensions).await;
        };
        let settings = ctx.provider.retry;
        let policy = ExponentialBackoff::builder()
            .retry_bounds(settings.min_backoff, settings.max_backoff)
            .jitter(Jitter::Bounded)
            .base(2)
            .build_with_max_retries(settings.max_attempts.saturating_sub(1));
        let started = SystemTime::now();
        let mut past_retries = 0;
        loop {
            let remaining = ctx.deadline.saturating_duration_since(Instant::now());
            let Some(mut attempt) = req.try_clone() else {
                // Bodies are buffered by OutboundRequest; a streaming body
                // from elsewhere is sent once and never retried.
                return next.run(req, extensions).await;
            };
            *attempt.timeout_mut() = Some(settings.attempt_timeout.min(remaining));
            let result = next.clone().run(attempt, extensions).await;
            let (record, out) = read_attempt(&ctx.provider, result).await;
            let verdict = record.verdict;
            let retry_after = record.retry_after;
            ctx.push(record);

            match verdict {
                Verdict::Transient(effect) if ctx.provider.class.may_retry(effect) => {}
                _ => return out,
            }
            let backoff = match policy.should_retry(started, past_retries) {
                RetryDecision::Retry { execute_after } => execute_after
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO),
                RetryDecision::DoNotRetry => return out,
            };
            let wait = match retry_after {
                Some(asked) if asked > settings.max_retry_after => return out,
                Some(asked) => asked.max(backoff),
                None => backoff,
            };
            // The next attempt must start with time left to run.
            if Instant::now() + wait >= ctx.deadline {
                return out;
            }
            tracing::debug!(
                provider = %ctx.provider.name,
                attempt = past_retries + 1,
                wait_ms = wait.as_millis() as u64,
                "transient failure; retrying with the same key"
            );
            tokio::time::sleep(wait).await;
            past_retries += 1;
        }
    }
}

/// Buffers one attempt's response (so the classifier sees the body) and
/// classifies it. Returns the record and the result to hand back up the
/// middleware chain.
async fn read_attempt(
    provider: &Provider,
    result: reqwest_middleware::Result<reqwest::Response>,
) -> (AttemptRecord, reqwest_middleware::Result<reqwest::Response>) {
    let classifier = provider.classifier();
    let response = match result {
        Ok(response) => response,
        Err(err) => {
            let transport = match &err {
                reqwest_middleware::Error::Reqwest(e) => TransportError::from_reqwest(e),
                reqwest_middleware::Error::Middleware(e) => TransportError {
                    kind: super::policy::TransportKind::Other,
                    message: format!("middleware error: {e}"),
                },
            };
            let record = AttemptRecord {
                verdict: classifier.classify_transport(&transport),
                status: None,
                transport: Some(transport),
                retry_after: None,
            };
            return (record, Err(err));
        }
    };
    let status = response.status();
    let version = response.version();
    let headers = response.headers().clone();
    match response.bytes().await {
        Ok(body) => {
            let record = AttemptRecord {
                verdict: classifier.classify(status, &headers, &body),
                status: Some(status),
                transport: None,
                retry_after: classifier.retry_after(status, &headers, &body),
            };
            (record, Ok(rebuild(status, version, headers, body)))
        }
        Err(e) => {
            // The provider answered (so it acted on the request, if it acts at
            // all) but the body was lost: the effect is possible.
            let transport = TransportError::from_reqwest(&e);
            let transport = TransportError {
                kind: super::policy::TransportKind::Body,
                message: format!("HTTP {status}, then {}", transport.message),
            };
            let record = AttemptRecord {
                verdict: classifier.classify_transport(&transport),
                status: Some(status),
                transport: Some(transport),
                retry_after: None,
            };
            (record, Err(reqwest_middleware::Error::Reqwest(e)))
        }
    }
}

fn rebuild(
    status: StatusCode,
    version: http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> reqwest::Response {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    *response.version_mut() = version;
    *response.headers_mut() = headers;
    reqwest::Response::from(response)
}
