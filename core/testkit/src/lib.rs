//! Test kit for idem workers: simulated providers that misbehave on demand,
//! a mock server for wire-level tests, and ledger helpers. Use it as a
//! dev-dependency.
//!
//! # Simulated providers
//!
//! [`FakeStripe`], [`FakeTwilio`], [`FakeGbp`] and [`FakeMeta`] serve the
//! provider's API on a local port ([`Fake::base_url`]; give it to the
//! adapter's `base_url`) with the provider's real rules: Stripe stores the
//! first answer under an `Idempotency-Key` and replays it for 24 hours,
//! then forgets it; Twilio, Google and Meta take no key; Stripe's search
//! can lag its writes; Twilio lists a message under `DateSent` only once it
//! is sent. Each counts the side effects that really happened
//! ([`Fake::side_effects`]) apart from the requests it received
//! ([`Fake::write_requests`], [`Fake::requests`]), so a test can tell "sent
//! twice" from "charged twice".
//!
//! All four are built on one skeleton ([`fake`]): a queue of [`Fault`]s
//! applied to the next write requests, one each, in order
//! ([`Fake::inject`], and [`Fake::fail_times`] for "fail N times, then
//! succeed"), a request log, and the counters. The same skeleton serves a
//! provider of your own ([`fake::Simulator`]).
//!
//! ```
//! use idem_testkit::{FakeStripe, FakeTwilio, Fault};
//! use idem_testkit::ledger::{LOST, TestLedger};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let stripe = FakeStripe::start().await;
//! // Two 500s, a lost answer after the charge, and Stripe's lock timeout.
//! stripe.fail_times(2, Fault::ServerError);
//! stripe.inject(Fault::LoseResponse { delay: LOST });
//! stripe.inject(FakeStripe::lock_timeout());
//! assert_eq!(stripe.pending_faults(), 4);
//!
//! // A connection reset after Twilio queued the message: the client cannot
//! // tell whether it was sent.
//! let twilio = FakeTwilio::start().await;
//! twilio.inject(Fault::ResetAfterEffect);
//!
//! // The executor your adapters run on, over a throwaway SQLite ledger.
//! let ledger = TestLedger::sqlite().await;
//! let _executor = ledger.executor();
//! assert_eq!(stripe.side_effects() + twilio.side_effects(), 0);
//! # }
//! ```
//!
//! The root README of idem shows the whole loop: worker code, an adapter
//! pointed at a fake, and assertions on what the provider did.
//!
//! # Mock server
//!
//! [`mock::MockServer`] answers with canned [`Reply`]s and checks how often
//! each mock was called, for tests of the exact requests an adapter sends.
//!
//! # Ledger helpers
//!
//! [`ledger`]: keys, fast retry settings, and executors over throwaway
//! SQLite and PostgreSQL ledgers. The PostgreSQL ones read
//! `IDEM_TEST_DATABASE_URL`; outside CI they skip loudly when no server is
//! reachable, under CI they fail.
//!
//! # Servers
//!
//! Every fake and mock server runs on a thread and runtime of its own, so a
//! test that pauses tokio's clock does not stop it, and a held-back answer
//! takes real time. Dropping the value stops the server.

mod calendar;
pub mod fake;
pub mod gbp;
mod http;
pub mod ledger;
pub mod meta;
pub mod mock;
pub mod stripe;
pub mod twilio;

pub use fake::{Fake, Fault};
pub use gbp::{FakeGbp, Gbp};
pub use http::{Reply, Request};
pub use meta::{FakeMeta, FakePost, Meta};
pub use stripe::{FakeStripe, Stripe};
pub use twilio::{FakeMessage, FakeTwilio, Twilio};
