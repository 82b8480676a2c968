//! CI fixture: an adapter crate on the allow-list that leaks its client.
//!
//! It may use reqwest inside, but its public API hands the client (and the whole crate) to
//! whoever depends on it, which turns the allowance into a way around every gate. The leak
//! gate (dylint's `http_client_leak`) must reject each marked item.

/// Leak 1: the whole client crate, re-exported.
pub use reqwest;

/// Leak 2: a client handed out by a public function.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Leak 3: a public field of a client type.
pub struct Adapter {
    /// The client the adapter sends with.
    pub client: reqwest::Client,
}

/// Leak 4: a public type alias of a client type.
pub type Http = reqwest::Client;

/// Not a leak: taking a client in hands nothing out (idem's `ExecutorBuilder::http_client`).
pub fn with_client(client: reqwest::Client) -> Adapter {
    Adapter { client }
}

/// Not a leak: private use of the client inside the adapter.
pub async fn charge(amount: u64) -> Result<u16, String> {
    let client = reqwest::Client::new();
    let response = client
        .post("https://api.example.com/v1/charges")
        .body(format!("amount={amount}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}
