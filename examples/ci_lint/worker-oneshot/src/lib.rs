//! CI fixture: the `oneshot` evasion.
//!
//! No reqwest function is called here: the client is built inside std's generic code
//! (`Option::unwrap_or_default`) and the request is sent by tower's generic `oneshot` or by a
//! generic helper, so a lint that only judges call sites sees nothing but a type name.
//! `.ci/lint.sh` expects the dylint lint to flag the client values themselves, and the
//! dependency gate to reject the crate (it depends on reqwest).

// `None.unwrap_or_default()` is the point of this fixture, not a style slip.
#![allow(clippy::unnecessary_literal_unwrap)]

use tower::{Service, ServiceExt};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Charges a card through a reqwest client built by std and driven by `oneshot`. Rejected.
pub async fn charge_by_oneshot(body: &'static str) -> Result<u16, Error> {
    let client: reqwest::Client = None.unwrap_or_default();
    let request = http::Request::post("https://api.stripe.com/v1/payment_intents").body(body)?;
    let response = client.oneshot(request.try_into()?).await?;
    Ok(response.status().as_u16())
}

/// The same, the client handed to a generic helper. Rejected.
pub async fn charge_by_helper(body: &'static str) -> Result<u16, Error> {
    let request = http::Request::post("https://api.stripe.com/v1/payment_intents").body(body)?;
    let client: Option<reqwest::Client> = None;
    let status = send(client.unwrap_or_default(), request.try_into()?).await?;
    Ok(status)
}

async fn send<S, R>(service: S, request: R) -> Result<u16, Error>
where
    S: Service<R>,
    S::Error: Into<Error>,
    S::Response: Status,
{
    let response = service.oneshot(request).await.map_err(Into::into)?;
    Ok(response.status_code())
}

/// Anything with an HTTP status.
pub trait Status {
    /// The status code.
    fn status_code(&self) -> u16;
}

impl Status for reqwest::Response {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}
