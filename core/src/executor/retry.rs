//! The retry loop, as a `reqwest-middleware` middleware.
//!
//! reqwest-retry's own `RetryTransientMiddleware` retries every method on
//! timeouts and 5xx and does not read `Retry-After`; both are wrong for
//! writes without a native key. This middleware keeps reqwest-retry's
//! policy for the retry budget and adds what idem needs: the
//! provider's [`Classifier`](super::Classifier) reads each answer (body
//! included), the [`SafetyClass`](super::SafetyClass) decides whether a
//! resend is allowed, `Retry-After` is honoured, and every attempt is logged
//! so the executor can tell "never sent" from "outcome unknown".
//!
//! The wait between attempts is drawn by [`backoff_wait`], not by
//! reqwest-retry: retry-policies 0.5's `Jitter::Bounded` draws from
//! `[0.5 × min, interval]`, so a configured minimum backoff (which a provider
//! may demand after a 429) was not honoured. Ours draws from
//! `[min, min(max, min × 2^n)]` and reads no wall clock, so a clock step cannot
//! shorten or stretch a wait.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Extensions, HeaderMap, StatusCode};
use reqwest_middleware::{Middleware, Next};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::{Jitter, RetryDecision, RetryPolicy};

use super::policy::{Provider, RetrySettings, TransportError, Verdict};
use crate::clock::Clock;

/// The wait before retry number `past_retries + 1`: exponential from
/// `min_backoff` (base 2), capped at `max_backoff`, with uniform jitter that
/// never goes below `min_backoff`.
pub(crate) fn backoff_wait(
    settings: &RetrySettings,
    past_retries: u32,
    rng: &mut impl rand::Rng,
) -> Duration {
    let min = settings.min_backoff;
    let max = settings.max_backoff.max(min);
    let factor = 2u32.saturating_pow(past_retries.min(31));
    let interval = min.saturating_mul(factor).min(max);
    if interval <= min {
        return min;
    }
    let spread = (interval - min).as_nanos() as u64;
    min + Duration::from_nanos(rng.random_range(0..=spread))
}

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
    /// The executor's clock: `Retry-After` dates are measured from it.
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) deadline: Instant,
    pub(crate) log: Arc<Mutex<Vec<AttemptRecord>>>,
}

impl CallContext {
    pub(crate) fn new(provider: Provider, clock: Arc<dyn Clock>) -> Self {
        let deadline = Instant::now() + provider.retry.total_timeout;
        Self {
            provider,
            clock,
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
/// `CallContext` in the extensions; without one it passes requests through.
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
            .jitter(Jitter::None)
            .base(2)
            .build_with_max_retries(settings.max_attempts.saturating_sub(1));
        // Only the retry budget comes from the policy; `started` and the
        // policy's own (wall-clock) times are not used for the wait.
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
            let (record, out) = read_attempt(&ctx, result).await;
            let verdict = record.verdict;
            let retry_after = record.retry_after;
            ctx.push(record);

            match verdict {
                Verdict::Transient(effect) if ctx.provider.class.may_retry(effect) => {}
                _ => return out,
            }
            let backoff = match policy.should_retry(started, past_retries) {
                RetryDecision::Retry { .. } => {
                    backoff_wait(&settings, past_retries, &mut rand::rng())
                }
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
    ctx: &CallContext,
    result: reqwest_middleware::Result<reqwest::Response>,
) -> (AttemptRecord, reqwest_middleware::Result<reqwest::Response>) {
    let classifier = ctx.provider.classifier();
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
                retry_after: classifier.retry_after(status, &headers, &body, ctx.clock.now()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn settings(min_ms: u64, max_ms: u64) -> RetrySettings {
        RetrySettings::default()
            .with_backoff(Duration::from_millis(min_ms), Duration::from_millis(max_ms))
    }

    #[test]
    fn the_wait_never_goes_below_the_configured_minimum() {
        // retry-policies' Jitter::Bounded went down to 0.5 × min: with 10,000
        // draws per retry number that shows up at once.
        let s = settings(20, 1_000);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for retry in 0..12 {
            let cap = Duration::from_millis((20u64 << retry.min(10)).min(1_000));
            for _ in 0..10_000 {
                let w = backoff_wait(&s, retry, &mut rng);
                assert!(w >= Duration::from_millis(20), "retry {retry}: {w:?} < min");
                assert!(w <= cap, "retry {retry}: {w:?} > {cap:?}");
            }
        }
    }

    #[test]
    fn the_wait_grows_and_is_capped() {
        let s = settings(100, 400);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert_eq!(backoff_wait(&s, 0, &mut rng), Duration::from_millis(100));
        let late: Vec<_> = (0..1000).map(|_| backoff_wait(&s, 40, &mut rng)).collect();
        assert!(late.iter().all(|w| *w <= Duration::from_millis(400)));
        assert!(late.iter().any(|w| *w > Duration::from_millis(300)));
    }
}
