//! A worker crate that calls reqwest and reqwest-middleware itself. Every call is flagged.

use reqwest::Client;

mod http {
    // A re-export: the lint goes by the crate that defines the function, not the path used.
    pub use reqwest::Client as Http;
}

async fn charge_directly() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::new();
    client
        .post("https://api.stripe.com/v1/charges")
        .body("amount=2000&currency=usd")
        .send()
        .await?;
    // A path call through the type, and one through a module-level function.
    Client::put(
        &client,
        "https://mybusiness.googleapis.com/v4/accounts/1/locations/2/reviews/3/reply",
    );
    reqwest::get("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json").await?;
    Ok(())
}

fn clients() {
    // Trait impls resolve into reqwest.
    let _a = <Client as Default>::default();
    let _b: Client = Default::default();
    let _d = _b.clone();
    let _c = http::Http::builder().build();
    // A function passed as a value.
    let _pending: Vec<_> = ["https://example.com/a"]
        .into_iter()
        .map(reqwest::get)
        .collect();
}

fn middleware(client: Client) {
    let client = reqwest_middleware::ClientBuilder::new(client).build();
    let _ = client.patch("https://graph.facebook.com/v19.0/123");
    let _ = client.delete("https://example.com/x").build();
}

fn main() {
    let _ = charge_directly();
    clients();
    middleware(reqwest::Client::new());
}
