//! Connection settings for the executor's HTTP client, so that wiring code
//! (a worker's `main`) can set timeouts, a proxy or extra root certificates
//! without naming an HTTP client crate, which the lint forbids outside core
//! and the adapters.

use std::fmt;
use std::time::Duration;

/// Settings of the HTTP client the [`Executor`](super::Executor) builds.
///
/// Every field is optional; unset fields keep reqwest's defaults. Per-attempt
/// and per-claim time limits are provider settings
/// ([`RetrySettings`](super::RetrySettings)), not these.
///
/// ```
/// use std::time::Duration;
/// use idem::executor::HttpSettings;
///
/// let settings = HttpSettings::new()
///     .connect_timeout(Duration::from_secs(5))
///     .pool_idle_timeout(Duration::from_secs(30))
///     .user_agent("shop-worker/1.4");
/// # let _ = settings;
/// ```
#[derive(Clone, Default)]
pub struct HttpSettings {
    pub(crate) connect_timeout: Option<Duration>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) pool_idle_timeout: Option<Duration>,
    pub(crate) pool_max_idle_per_host: Option<usize>,
    pub(crate) proxy: Option<String>,
    pub(crate) root_certificates_pem: Vec<Vec<u8>>,
    pub(crate) user_agent: Option<String>,
}

impl fmt::Debug for HttpSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The proxy URL may carry credentials: only say whether one is set.
        f.debug_struct("HttpSettings")
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("pool_max_idle_per_host", &self.pool_max_idle_per_host)
            .field("proxy", &self.proxy.is_some())
            .field("root_certificates", &self.root_certificates_pem.len())
            .field("user_agent", &self.user_agent)
            .finish()
    }
}

/// Why [`HttpSettings`] could not be turned into a client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpSettingsError {
    /// The proxy URL is not valid (the URL itself is not shown).
    #[error("invalid proxy URL: {0}")]
    Proxy(String),
    /// A root certificate is not valid PEM.
    #[error("invalid root certificate #{index}: {reason}")]
    Certificate {
        /// Which certificate (0-based, in the order added).
        index: usize,
        /// The parser's message.
        reason: String,
    },
    /// The client could not be built (for example the TLS backend failed).
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

impl HttpSettings {
    /// No settings: reqwest's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time limit for establishing a connection.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = Some(t);
        self
    }

    /// Overall time limit of one HTTP exchange. Providers' per-attempt
    /// timeouts apply as well; the shorter wins.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }

    /// How long an idle pooled connection is kept.
    pub fn pool_idle_timeout(mut self, t: Duration) -> Self {
        self.pool_idle_timeout = Some(t);
        self
    }

    /// The most idle connections kept per host.
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.pool_max_idle_per_host = Some(n);
        self
    }

    /// Sends every request through this proxy (`http://`, `https://` or
    /// `socks5://` URL).
    pub fn proxy(mut self, url: impl Into<String>) -> Self {
        self.proxy = Some(url.into());
        self
    }

    /// Trusts this PEM root certificate in addition to the system's.
    ///
    /// Needs a TLS backend: idem's `rustls` (default) or `native-tls` feature.
    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    #[cfg_attr(docsrs, doc(cfg(any(feature = "rustls", feature = "native-tls"))))]
    pub fn add_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certificates_pem.push(pem.into());
        self
    }

    /// The `User-Agent` header.
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = Some(ua.into());
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`HttpSettingsError`] for an invalid proxy URL or certificate, or when
    /// the TLS backend cannot be initialised.
    pub(crate) fn build(&self) -> Result<reqwest::Client, HttpSettingsError> {
        let mut b = reqwest::Client::builder();
        if let Some(t) = self.connect_timeout {
            b = b.connect_timeout(t);
        }
        if let Some(t) = self.timeout {
            b = b.timeout(t);
        }
        if let Some(t) = self.pool_idle_timeout {
            b = b.pool_idle_timeout(t);
        }
        if let Some(n) = self.pool_max_idle_per_host {
            b = b.pool_max_idle_per_host(n);
        }
        if let Some(url) = &self.proxy {
            let proxy = reqwest::Proxy::all(url.as_str())
                .map_err(|_| HttpSettingsError::Proxy("not a valid proxy URL".to_owned()))?;
            b = b.proxy(proxy);
        }
        #[cfg(any(feature = "rustls", feature = "native-tls"))]
        for (index, pem) in self.root_certificates_pem.iter().enumerate() {
            let cert = reqwest::Certificate::from_pem(pem).map_err(|e| {
                HttpSettingsError::Certificate {
                    index,
                    reason: e.to_string(),
                }
            })?;
            b = b.add_root_certificate(cert);
        }
        if let Some(ua) = &self.user_agent {
            b = b.user_agent(ua.as_str());
        }
        b.build()
            .map_err(|e| HttpSettingsError::Build(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_build() {
        assert!(HttpSettings::new().build().is_ok());
    }

    #[test]
    fn bad_inputs_are_typed_errors_and_hide_the_proxy_url() {
        let err = HttpSettings::new()
            .proxy("::not a url with secret-password::")
            .build()
            .unwrap_err();
        assert!(matches!(err, HttpSettingsError::Proxy(_)));
        assert!(!err.to_string().contains("secret-password"));
    }

    #[cfg(any(feature = "rustls", feature = "native-tls"))]
    #[test]
    fn a_bad_root_certificate_is_a_typed_error() {
        let err = HttpSettings::new()
            .add_root_certificate_pem(
                "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
            )
            .build()
            .unwrap_err();
        assert!(matches!(
            err,
            HttpSettingsError::Certificate { index: 0, .. }
        ));
    }

    #[test]
    fn debug_hides_the_proxy_url() {
        let s = HttpSettings::new().proxy("http://user:hunter2@proxy.test:8080");
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
