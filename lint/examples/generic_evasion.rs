//! Clients nobody constructs by name: built inside std's generic code, handed to generic code
//! (tower's `oneshot`, a helper), held in a field or a parameter. Every client value is flagged.

use tower::ServiceExt;

struct Holder {
    client: reqwest::Client,
}

async fn by_oneshot(body: &'static str) -> Result<u16, Box<dyn std::error::Error + Send + Sync>> {
    let client: Option<reqwest::Client> = None;
    let request = http::Request::post("https://api.stripe.com/v1/charges").body(body)?;
    let response = client.unwrap_or_default().oneshot(request.try_into()?).await?;
    Ok(response.status().as_u16())
}

async fn by_helper(holder: Holder, request: reqwest::Request) -> Result<(), reqwest::Error> {
    send(holder.client, request).await
}

async fn send<S: tower::Service<R>, R>(service: S, request: R) -> Result<(), S::Error> {
    service.oneshot(request).await.map(drop)
}

fn main() {
    let _ = by_oneshot("amount=2000");
    let holder = Holder {
        client: None.unwrap_or_default(),
    };
    let _ = holder;
    let _ = by_helper;
}
