//! Cross-crate integration, fault-injection and multi-process tests for idem.
//!
//! * [`proxy`]: a TCP proxy that delays, resets, drops or truncates HTTP
//!   exchanges between an adapter and a fake provider, per request, from a
//!   schedule.
//! * [`http1`]: a minimal HTTP/1.1 client for load against local servers.
//! * [`jobs`]: the job list the worker binary (`src/bin/idem-worker.rs`)
//!   works through, shared with the suites that check what it did.
//! * [`seed`]: seeds for randomized suites, printed on failure and
//!   overridable from the environment.
//! * [`worker`]: starting, killing and reaping worker processes.
//!
//! The suites live in `tests/tests/`: `chaos.rs` (fault proxy, at least 500
//! randomized schedules over Stripe and Twilio), `crash_loop.rs` (a worker
//! killed with SIGKILL at random points, at least 100 times) and
//! `many_workers.rs` (8 worker processes racing over 1,000 jobs on
//! PostgreSQL).

pub mod http1;
pub mod jobs;
pub mod proxy;
pub mod seed;
pub mod worker;
