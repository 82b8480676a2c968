//! CI fixture: `cargo add async-stripe` and charge a card with the SDK.
//!
//! The SDK sends the write itself: idem stores no key before it leaves, and a retried job
//! charges again (the SDK's own idempotency key is per call, not per job). `.ci/lint.sh`
//! expects the dependency gate and the dylint lint to reject it, and the clippy gate too
//! (`stripe::Client` is a disallowed type).

use stripe::{Client, CreatePaymentIntent, Currency, PaymentIntent};

/// Charges a card through async-stripe. Rejected by every gate.
pub async fn charge_directly(secret: &str) -> Result<String, stripe::StripeError> {
    let client = Client::new(secret);
    let params = CreatePaymentIntent::new(2000, Currency::USD);
    let intent = PaymentIntent::create(&client, params).await?;
    Ok(intent.id.to_string())
}
