//! CI fixture: the worker from `worker-direct`, charging the same card through idem's Stripe
//! adapter instead of calling reqwest.
//!
//! `.ci/lint.sh` expects the clippy gate, the dependency gate and the dylint lint to accept this
//! crate: it makes no reqwest call, and its only route to reqwest in the dependency graph runs
//! through `idem-stripe` and `idem`, which are allowed.

use idem::ledger::SqliteStore;
use idem::{Executor, IdempotencyKey};
use idem_stripe::{Amount, CreatePaymentIntent, Currency, StripeClient};

/// Makes the idempotency key for charging service ticket `row`, first attempt.
///
/// # Errors
///
/// Returns the key error when `row` does not fit idem's key grammar.
pub fn charge_key(row: &str) -> Result<IdempotencyKey, idem::KeyError> {
    IdempotencyKey::new("joes-bikes", "service_ticket_charges", row, 1)
}

/// Charges a card through the adapter: the key is stored in the ledger before the request
/// leaves, and a retried job is answered from the ledger or deduplicated by Stripe.
///
/// # Errors
///
/// Any error of opening the ledger, building the client or the charge itself.
pub async fn charge_through_adapter(
    ledger: &str,
    secret: &str,
    row: &str,
) -> Result<String, Box<dyn std::error::Error>> {
    let executor = Executor::builder(SqliteStore::open(ledger).await?).build();
    let stripe = StripeClient::builder(executor, secret).build()?;
    let key = charge_key(row)?;
    let params = CreatePaymentIntent::new(Amount::minor(2000), Currency::usd());
    let intent = stripe.payment_intents().create(&key, &params).await?;
    Ok(intent.object.id.to_string())
}
