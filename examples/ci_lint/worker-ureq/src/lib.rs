//! CI fixture: a worker that charges a card with ureq instead of reqwest.
//!
//! Another HTTP client is the same bug: no stored idempotency key, so a retried job charges
//! again. `.ci/lint.sh` expects the dependency gate, the clippy gate and the dylint lint to
//! reject it.

/// Charges a card directly at Stripe with ureq. Rejected by every gate.
pub fn charge_directly(secret: &str) -> Result<u16, ureq::Error> {
    let response = ureq::post("https://api.stripe.com/v1/payment_intents")
        .header("Authorization", &format!("Bearer {secret}"))
        .send("amount=2000&currency=usd")?;
    Ok(response.status().as_u16())
}

/// The same through an agent (a configured client).
pub fn charge_with_agent(secret: &str) -> Result<u16, ureq::Error> {
    let agent = ureq::Agent::new_with_defaults();
    let response = agent
        .post("https://api.stripe.com/v1/payment_intents")
        .header("Authorization", &format!("Bearer {secret}"))
        .send("amount=2000&currency=usd")?;
    Ok(response.status().as_u16())
}
