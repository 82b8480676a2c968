//! CI fixture: the wiring of a worker process. It sets the executor's transport (timeouts,
//! connection pool, proxy, a private root certificate, user agent) and hands the executor to
//! the Stripe adapter. It sends nothing itself and never names an HTTP client crate, so
//! `.ci/lint.sh` expects every gate to accept it.

use std::time::Duration;

use idem::Executor;
use idem::executor::HttpSettings;
use idem::ledger::SqliteStore;
use idem_stripe::StripeClient;

/// The transport settings of this deployment.
pub fn http_settings(proxy: &str, root_pem: &[u8]) -> HttpSettings {
    HttpSettings::new()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(8)
        .proxy(proxy)
        .add_root_certificate_pem(root_pem.to_vec())
        .user_agent("joes-bikes-worker/1.0")
}

/// Opens the ledger, builds the executor with those settings and the Stripe adapter on it.
///
/// # Errors
///
/// Any error of opening the ledger, of the settings (a bad proxy URL or certificate) or of
/// building the adapter.
pub async fn wire(
    ledger: &str,
    secret: &str,
    proxy: &str,
    root_pem: &[u8],
) -> Result<StripeClient, Box<dyn std::error::Error>> {
    let executor = Executor::builder(SqliteStore::open(ledger).await?)
        .http_settings(http_settings(proxy, root_pem))?
        .lease_margin(Duration::from_secs(30))
        .build();
    Ok(StripeClient::builder(executor, secret).build()?)
}
