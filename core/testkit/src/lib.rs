//! Test kit for idem workers: simulated providers that misbehave on demand,
//! a mock server for wire-level tests, and ledger helpers.

mod calendar;
pub mod fake;
mod gbp;
mod http;
pub mod ledger;
mod meta;
pub mod mock;
mod stripe;
mod twilio;

pub use fake::{Fake, Fault};
pub use gbp::{FakeGbp, Gbp};
pub use http::{Reply, Request};
pub use meta::{FakeMeta, FakePost, Meta};
pub use stripe::{FakeStripe, Stripe};
pub use twilio::{FakeMessage, FakeTwilio, Twilio};
