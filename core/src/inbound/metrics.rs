//! What the inbound wrapper reports: the [`Outcome`] of each request as metrics (names in
//! [`crate::metrics::inbound`], also `idem::inbound::metric`) and one `tracing` event, and the
//! in-flight gauge.

use std::time::Instant;

use http::StatusCode;

use super::{ClientKey, EndpointConfig};
use crate::metrics::inbound as metric;

/// How a request ended, as reported in metrics and the per-request event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler ran and its answer was stored.
    Executed,
    /// The handler ran; its answer was not stored (by policy or because the
    /// store failed afterwards), or the record was released.
    ExecutedNotStored,
    /// A stored answer was replayed.
    Replayed,
    /// The key was reused for a different request.
    Mismatch,
    /// The first request with the key is still running.
    InFlight,
    /// The stored answer cannot be replayed.
    NotReplayable,
    /// The request was refused (bad or missing key, no actor, body too
    /// large).
    Refused,
    /// The store was unavailable.
    StoreUnavailable,
    /// The request was not protected (safe method, or optional key absent).
    PassedThrough,
    /// The handler panicked or failed, or its route rejected the request
    /// before it ran; the record was released.
    Released,
}

impl Outcome {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executed => "executed",
            Self::ExecutedNotStored => "executed_not_stored",
            Self::Replayed => "replayed",
            Self::Mismatch => "mismatch",
            Self::InFlight => "in_flight",
            Self::NotReplayable => "not_replayable",
            Self::Refused => "refused",
            Self::StoreUnavailable => "store_unavailable",
            Self::PassedThrough => "passed_through",
            Self::Released => "released",
        }
    }
}

pub(super) fn report(
    config: &EndpointConfig,
    key: Option<&ClientKey>,
    outcome: Outcome,
    status: StatusCode,
    started: Instant,
) {
    let elapsed = started.elapsed();
    let endpoint = config.name.clone();
    ::metrics::counter!(metric::REQUEST_COUNT, "endpoint" => endpoint.clone(), "outcome" => outcome.as_str())
        .increment(1);
    ::metrics::histogram!(metric::REQUEST_DURATION, "endpoint" => endpoint.clone(), "outcome" => outcome.as_str())
        .record(elapsed.as_secs_f64());
    match outcome {
        Outcome::Replayed => {
            ::metrics::counter!(metric::REPLAY_COUNT, "endpoint" => endpoint).increment(1);
        }
        Outcome::Mismatch | Outcome::InFlight | Outcome::NotReplayable => {
            ::metrics::counter!(metric::CONFLICT_COUNT, "endpoint" => endpoint, "reason" => outcome.as_str())
                .increment(1);
        }
        _ => {}
    }
    // Never the body, never other headers: the key is a client token.
    tracing::info!(
        target: "idem::inbound",
        endpoint = %config.name,
        key = key.map(ClientKey::as_str),
        outcome = outcome.as_str(),
        status = status.as_u16(),
        duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "idempotent request"
    );
}

pub(super) struct InFlightGauge(String);

impl InFlightGauge {
    pub(super) fn start(endpoint: &str) -> Self {
        ::metrics::gauge!(metric::INFLIGHT_GAUGE, "endpoint" => endpoint.to_owned()).increment(1.0);
        Self(endpoint.to_owned())
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        ::metrics::gauge!(metric::INFLIGHT_GAUGE, "endpoint" => self.0.clone()).decrement(1.0);
    }
}
