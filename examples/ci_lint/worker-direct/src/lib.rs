//! CI fixture: a worker that charges a card by calling reqwest itself.
//!
//! This is the bug idem exists to prevent: the request carries no stored idempotency key, so a
//! retry after a crash or a timeout charges the customer again. `.ci/lint.sh` expects the
//! clippy gate, the dependency gate and the dylint lint to reject this crate, each naming the
//! adapter to use (`idem-stripe`).

/// Charges a card directly at Stripe. Rejected by every gate.
pub async fn charge_directly(secret: &str) -> Result<u16, reqwest::Error> {
    let response = reqwest::Client::new()
        .post("https://api.stripe.com/v1/payment_intents")
        .bearer_auth(secret)
        .body("amount=2000&currency=usd")
        .send()
        .await?;
    Ok(response.status().as_u16())
}

/// Calls every entry point banned in the root clippy.toml (except `reqwest::blocking`, a
/// feature this fixture does not enable), so `.ci/lint.sh` can check that each ban resolves
/// and fires. Never run; it only has to compile.
pub mod all_entry_points {
    /// Each reqwest entry point once.
    pub async fn reqwest_calls() -> Result<(), reqwest::Error> {
        let url = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json";
        let _ = reqwest::get(url).await?;
        let client = reqwest::Client::new();
        let _ = reqwest::Client::builder();
        let _ = reqwest::ClientBuilder::new().build()?;
        let _ = client.get(url);
        let _ = client.put(url);
        let _ = client.patch(url);
        let _ = client.delete(url);
        let _ = client.head(url);
        let _ = client.request(reqwest::Method::POST, url);
        let request = reqwest::Request::new(reqwest::Method::POST, url.parse().unwrap());
        let _ = client.execute(request).await?;
        let _ = client.post(url).build()?;
        let _ = client.post(url).build_split();
        let request = client.post(url).build()?;
        let _ = reqwest::RequestBuilder::from_parts(client.clone(), request);
        let _ = client.post(url).send().await?;
        Ok(())
    }

    /// Each reqwest-middleware entry point once.
    pub async fn middleware_calls() -> Result<(), reqwest_middleware::Error> {
        let url = "https://graph.facebook.com/v19.0/123/feed";
        let inner = reqwest::Client::default();
        let client = reqwest_middleware::ClientBuilder::new(inner.clone()).build();
        let _ = reqwest_middleware::ClientBuilder::from_client(client.clone());
        let client = reqwest_middleware::ClientWithMiddleware::new(inner, Vec::new());
        let _ = client.get(url);
        let _ = client.put(url);
        let _ = client.patch(url);
        let _ = client.delete(url);
        let _ = client.head(url);
        let _ = client.request(reqwest::Method::POST, url);
        let request = client.post(url).build()?;
        let _ = client.execute(request).await?;
        let request = client.post(url).build()?;
        let _ = client
            .execute_with_extensions(request, &mut Default::default())
            .await?;
        let _ = client.post(url).build_split();
        let (client, request) = client.post(url).build_split();
        let _ = reqwest_middleware::RequestBuilder::from_parts(client.clone(), request?);
        let _ = client.post(url).send().await?;
        Ok(())
    }
}
