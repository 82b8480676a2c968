//! Every metric name the SDK records, in one place, for dashboards and
//! alerts. idem records through the [`metrics`](https://docs.rs/metrics)
//! facade: install any recorder (Prometheus, StatsD, ...) and these appear.
//!
//! There are two prefixes, and they stay as they are because dashboards
//! already read them:
//!
//! - **`idem.outbound.*`** ([`outbound`]): the executor's writes and reads
//!   to providers, labelled by `provider` (the provider's name, such as
//!   `stripe`) and, for outcomes, `outcome`.
//! - **`idempotency.*`** ([`inbound`]): the inbound wrapper that makes your
//!   own endpoints idempotent, and its sweeper, labelled by `endpoint` (the
//!   endpoint's configured name) and, where it says so, `outcome` or
//!   `reason`.
//!
//! Webhook delivery records no metrics of its own: its sends go through the
//! executor and count under `idem.outbound.*`.
//!
//! No label ever carries a key, a body or a credential.
//!
//! ```
//! use idem::metrics::{ALL, inbound, outbound};
//!
//! assert_eq!(outbound::ATTEMPTS, "idem.outbound.attempts");
//! assert_eq!(inbound::REPLAY_COUNT, "idempotency.replay.count");
//! assert!(ALL.contains(&inbound::SWEEP_DELETED_COUNT));
//! ```

/// Metrics of the outbound executor, under `idem.outbound.`; every one is
/// labelled by `provider`.
pub mod outbound {
    /// Counter: attempts on the wire for writes, retries included.
    pub const ATTEMPTS: &str = "idem.outbound.attempts";
    /// Histogram: seconds one claim spent sending, all attempts and waits
    /// included.
    pub const DURATION: &str = "idem.outbound.duration_seconds";
    /// Counter: claims completed in the ledger, labelled by `outcome`
    /// (`succeeded`, `failed`, `unknown` or `not_sent`).
    pub const OUTCOME: &str = "idem.outbound.outcome";
    /// Counter: writes answered from the ledger without a send, because the
    /// key had already succeeded.
    pub const LEDGER_REPLAY: &str = "idem.outbound.ledger_replay";
    /// Counter: attempts on the wire for unrecorded reads (`GET`, `HEAD`).
    pub const READ_ATTEMPTS: &str = "idem.outbound.read_attempts";
    /// Histogram: seconds one read took, all attempts and waits included.
    pub const READ_DURATION: &str = "idem.outbound.read_duration_seconds";
}

/// Metrics of the inbound wrapper and its sweeper, under `idempotency.`;
/// also reachable as [`idem::inbound::metric`](crate::inbound::metric).
pub mod inbound {
    /// Counter: stored answers replayed, by `endpoint`.
    pub const REPLAY_COUNT: &str = "idempotency.replay.count";
    /// Counter: requests refused because their key was reused for another
    /// request or is still in flight, by `endpoint` and `reason`.
    pub const CONFLICT_COUNT: &str = "idempotency.conflict.count";
    /// Gauge: handlers running under a lease now, by `endpoint`.
    pub const INFLIGHT_GAUGE: &str = "idempotency.inflight.gauge";
    /// Counter: requests seen, by `endpoint` and `outcome`.
    pub const REQUEST_COUNT: &str = "idempotency.request.count";
    /// Histogram: wrapper plus handler time in seconds, by `endpoint` and
    /// `outcome`.
    pub const REQUEST_DURATION: &str = "idempotency.request.duration_seconds";
    /// Counter: expired inbound records the sweeper deleted (no labels).
    pub const SWEEP_DELETED_COUNT: &str = "idempotency.sweep.deleted.count";
}

/// Every name above, outbound first.
pub const ALL: [&str; 12] = [
    outbound::ATTEMPTS,
    outbound::DURATION,
    outbound::OUTCOME,
    outbound::LEDGER_REPLAY,
    outbound::READ_ATTEMPTS,
    outbound::READ_DURATION,
    inbound::REPLAY_COUNT,
    inbound::CONFLICT_COUNT,
    inbound::INFLIGHT_GAUGE,
    inbound::REQUEST_COUNT,
    inbound::REQUEST_DURATION,
    inbound::SWEEP_DELETED_COUNT,
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_keep_their_prefixes() {
        let unique: HashSet<_> = ALL.iter().collect();
        assert_eq!(unique.len(), ALL.len());
        for name in &ALL[..6] {
            assert!(name.starts_with("idem.outbound."), "{name}");
        }
        for name in &ALL[6..] {
            assert!(name.starts_with("idempotency."), "{name}");
        }
    }
}
