//! An allowed crate (the test's dylint.toml allows `leaky_adapter`) whose public API hands its
//! client out: each leak is flagged by `http_client_leak`; private use and parameters are not.

/// Leak: the whole client crate.
pub use reqwest;
/// Leak: one of its types.
pub use reqwest::Client as Http;

/// Leak: a client returned.
pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Leak: hidden behind `impl Trait`.
pub fn service() -> impl Clone {
    reqwest::Client::new()
}

/// A public type with leaks of its own.
pub struct Adapter {
    /// Leak: a public field.
    pub client: reqwest::Client,
    inner: reqwest::Client,
}

impl Adapter {
    /// Not a leak: taking a client in.
    pub fn new(client: reqwest::Client) -> Self {
        Self {
            client: client.clone(),
            inner: client,
        }
    }

    /// Leak: a method handing out a reference to the client.
    pub fn inner(&self) -> &reqwest::Client {
        &self.inner
    }
}

impl std::ops::Deref for Adapter {
    /// Leak: through `Deref`.
    type Target = reqwest::Client;
    fn deref(&self) -> &reqwest::Client {
        &self.inner
    }
}

/// Leak: a public alias.
pub type Alias = reqwest::Client;

/// Not a leak: private.
fn private_client() -> reqwest::Client {
    reqwest::Client::new()
}

fn main() {
    let _ = private_client();
}
