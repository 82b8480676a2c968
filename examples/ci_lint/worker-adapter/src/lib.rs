//! CI fixture: the worker from `worker-direct`, going through idem instead of calling reqwest.
//!
//! `.ci/lint.sh` expects the clippy gate, the dependency gate and the dylint lint to accept this
//! crate. Its only route to reqwest in the dependency graph runs through `idem-stripe` and
//! `idem`, which are allowed.
//!
//! Honest note: when this fixture was written, `idem-stripe`'s typed API (payment intents,
//! refunds, ...) was still being built, so the charge itself is not called here yet. The
//! fixture makes the key the adapter would be handed and names the adapter crate; replace the
//! body with the adapter's `create_payment_intent` call once it is public. The gates judge
//! what this crate calls and depends on, so they already check the shape that matters: no
//! reqwest call here, reqwest reachable only through allowed crates.

pub use idem_stripe as stripe;

/// Makes the idempotency key for charging service ticket `row`, first attempt.
///
/// # Errors
///
/// Returns the key error when `row` does not fit idem's key grammar.
pub fn charge_key(row: &str) -> Result<idem::IdempotencyKey, idem::KeyError> {
    idem::IdempotencyKey::new("joes-bikes", "service_ticket_charges", row, 1)
}
