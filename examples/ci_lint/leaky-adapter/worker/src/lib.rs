//! CI fixture: a worker that never depends on reqwest, never names it, and still charges a
//! card with it: through the client `leaky-adapter` hands out, driven by tower's `oneshot`.
//! The dependency graph is clean (its only way to reqwest runs through an allowed crate) and
//! clippy sees no banned path; the dylint lint flags the client value.

use tower::ServiceExt;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Charges a card with the leaked client. Rejected by the dylint lint.
pub async fn charge_through_leak(body: &'static str) -> Result<u16, Error> {
    let request = http::Request::post("https://api.stripe.com/v1/payment_intents").body(body)?;
    let response = leaky_adapter::http_client()
        .oneshot(request.try_into()?)
        .await?;
    Ok(response.status().as_u16())
}
