//! A crate on the allow-list (the test's dylint.toml allows `allowed_crate`): the same direct
//! calls as `worker_direct` are not flagged.

use reqwest::Client;

async fn send() -> Result<(), reqwest::Error> {
    let client = Client::new();
    client
        .post("https://api.stripe.com/v1/charges")
        .body("amount=2000&currency=usd")
        .send()
        .await?;
    reqwest::get("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json").await?;
    let _ = reqwest_middleware::ClientBuilder::new(client).build();
    Ok(())
}

fn main() {
    let _ = send();
}
