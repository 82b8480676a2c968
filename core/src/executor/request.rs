//! The request an adapter hands to the executor. Bodies are always buffered,
//! so every retry sends the same bytes.

use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Method};

use crate::fingerprint::Fingerprint;

pub use reqwest::Url;

/// Headers left out of [`OutboundRequest::fingerprint`]: `content-type` (taken
/// first, always), credentials, the idempotency key itself, and headers that
/// describe the transport rather than the operation.
const NOT_FINGERPRINTED: &[&str] = &[
    "content-type",
    "authorization",
    "proxy-authorization",
    "cookie",
    "idempotency-key",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "content-length",
    "host",
    "connection",
    "traceparent",
    "tracestate",
    "x-request-id",
];

/// An outbound HTTP request with a buffered body.
///
/// Builder methods never fail; an invalid header name or value is kept as an
/// error and reported by the executor as
/// [`ExecError::InvalidRequest`](crate::ExecError::InvalidRequest) before
/// anything is recorded or sent.
///
/// ```
/// use idem::OutboundRequest;
/// let req = OutboundRequest::post("https://api.example.com/v1/things".parse().unwrap())
///     .bearer_auth("sk_test_123")
///     .form([("amount", "500"), ("metadata[order]", "42")]);
/// assert_eq!(&req.body()[..], b"amount=500&metadata%5Border%5D=42");
/// ```
#[derive(Clone)]
pub struct OutboundRequest {
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) error: Option<String>,
}

impl fmt::Debug for OutboundRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither headers (credentials) nor the body (customer data) nor the
        // query string are shown.
        f.debug_struct("OutboundRequest")
            .field("method", &self.method)
            .field("path", &self.url.path())
            .field("body_len", &self.body.len())
            .finish_non_exhaustive()
    }
}

impl OutboundRequest {
    /// A request with no body.
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            error: None,
        }
    }

    /// A `GET`.
    pub fn get(url: Url) -> Self {
        Self::new(Method::GET, url)
    }

    /// A `POST`.
    pub fn post(url: Url) -> Self {
        Self::new(Method::POST, url)
    }

    /// A `PUT`.
    pub fn put(url: Url) -> Self {
        Self::new(Method::PUT, url)
    }

    /// A `DELETE`.
    pub fn delete(url: Url) -> Self {
        Self::new(Method::DELETE, url)
    }

    /// Sets a header, replacing any earlier value.
    pub fn header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_ref()),
        ) {
            (Ok(n), Ok(v)) => {
                self.headers.insert(n, v);
            }
            _ => self.fail(format!("invalid header {name:?}")),
        }
        self
    }

    /// Sets a header whose value is secret: it is marked sensitive and never
    /// logged.
    pub fn sensitive_header(mut self, name: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        let name = name.as_ref();
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_ref()),
        ) {
            (Ok(n), Ok(mut v)) => {
                v.set_sensitive(true);
                self.headers.insert(n, v);
            }
            _ => self.fail(format!("invalid value for header {name:?}")),
        }
        self
    }

    /// `Authorization: Bearer <token>`, marked sensitive.
    pub fn bearer_auth(self, token: impl fmt::Display) -> Self {
        self.sensitive_header(AUTHORIZATION, format!("Bearer {token}"))
    }

    /// `Authorization: Basic …`, marked sensitive.
    pub fn basic_auth(self, user: impl fmt::Display, password: impl fmt::Display) -> Self {
        use base64_lite::encode;
        let credentials = encode(format!("{user}:{password}").as_bytes());
        self.sensitive_header(AUTHORIZATION, format!("Basic {credentials}"))
    }

    /// A form-encoded body (`application/x-www-form-urlencoded`), pairs in
    /// the given order.
    pub fn form<K: AsRef<str>, V: AsRef<str>>(
        mut self,
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            ser.append_pair(k.as_ref(), v.as_ref());
        }
        self.body = Bytes::from(ser.finish());
        self.headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        self
    }

    /// A JSON body.
    pub fn json<T: serde::Serialize + ?Sized>(mut self, value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => {
                self.body = Bytes::from(body);
                self.headers
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Err(e) => self.fail(format!("body is not serialisable as JSON: {e}")),
        }
        self
    }

    /// A raw body with its content type.
    pub fn body_bytes(mut self, content_type: &str, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self.header(CONTENT_TYPE, content_type)
    }

    /// The method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The headers.
    pub fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The body bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The request's fingerprint: method, path and query, content type and
    /// body. The host is left out (so a test base URL does not change it), and
    /// so are other headers: keep credentials out of the query string, or a
    /// rotated token would look like a different request.
    pub fn fingerprint(&self) -> Fingerprint {
        let target = match self.url.query() {
            Some(q) => format!("{}?{q}", self.url.path()),
            None => self.url.path().to_owned(),
        };
        let content_type = self
            .headers
            .get(CONTENT_TYPE)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        let mut fp = Fingerprint::builder()
            .method(self.method.as_str())
            .target(&target)
            .header("content-type", content_type);
        // Every other header the adapter set can change what the request
        // does (`Stripe-Account` sends it to another connected account,
        // `Stripe-Version` changes its meaning), so it is part of the
        // request's identity. Credentials, the key itself and transport
        // headers are not.
        let mut names: Vec<&HeaderName> = self
            .headers
            .keys()
            .filter(|name| !NOT_FINGERPRINTED.contains(&name.as_str()))
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        for name in names {
            for value in self.headers.get_all(name) {
                fp = fp.header(name.as_str(), value.as_bytes());
            }
        }
        fp.body(&self.body).finish()
    }

    fn fail(&mut self, msg: String) {
        self.error.get_or_insert(msg);
    }

    pub(crate) fn into_reqwest(
        self,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Request, String> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let mut req = reqwest::Request::new(self.method, self.url);
        *req.headers_mut() = self.headers;
        *req.body_mut() = Some(reqwest::Body::from(self.body));
        *req.timeout_mut() = timeout;
        Ok(req)
    }
}

/// A tiny standard-alphabet base64 encoder, enough for Basic auth.
mod base64_lite {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(super) fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn rfc4648_vectors() {
            for (input, expected) in [
                ("", ""),
                ("f", "Zg=="),
                ("fo", "Zm8="),
                ("foo", "Zm9v"),
                ("foob", "Zm9vYg=="),
                ("fooba", "Zm9vYmE="),
                ("foobar", "Zm9vYmFy"),
            ] {
                assert_eq!(super::encode(input.as_bytes()), expected);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url() -> Url {
        "https://api.example.com/v1/x?a=1".parse().unwrap()
    }

    #[test]
    fn invalid_header_is_kept_as_error() {
        let req = OutboundRequest::post(url()).header("Bad Name", "v");
        assert!(req.into_reqwest(None).is_err());
    }

    #[test]
    fn fingerprint_ignores_host_and_auth() {
        let a = OutboundRequest::post(url())
            .bearer_auth("one")
            .form([("a", "1")]);
        let other: Url = "http://127.0.0.1:9/v1/x?a=1".parse().unwrap();
        let b = OutboundRequest::post(other)
            .bearer_auth("two")
            .form([("a", "1")]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        let c = OutboundRequest::post(url()).form([("a", "2")]);
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn fingerprint_covers_headers_that_change_the_operation() {
        let base = || OutboundRequest::post(url()).form([("amount", "500")]);
        let plain = base().fingerprint();
        let acct_a = base().header("Stripe-Account", "acct_A").fingerprint();
        let acct_b = base().header("Stripe-Account", "acct_B").fingerprint();
        let version = base()
            .header("Stripe-Version", "2026-10-28.endive")
            .fingerprint();
        assert_ne!(plain, acct_a);
        assert_ne!(acct_a, acct_b);
        assert_ne!(plain, version);
        // Credentials, the key and transport headers are not part of it.
        let noisy = base()
            .bearer_auth("sk_other")
            .header("Idempotency-Key", "x")
            .header("User-Agent", "y")
            .fingerprint();
        assert_eq!(plain, noisy);
        // Header order and name case do not matter.
        let ab = base().header("X-A", "1").header("X-B", "2").fingerprint();
        let ba = base().header("x-b", "2").header("x-a", "1").fingerprint();
        assert_eq!(ab, ba);
    }

    #[test]
    fn debug_hides_secrets() {
        let req = OutboundRequest::post(url())
            .bearer_auth("sk_live_secret")
            .form([("card", "4242")]);
        let shown = format!("{req:?}");
        assert!(!shown.contains("sk_live_secret"));
        assert!(!shown.contains("4242"));
        assert!(req.headers()[AUTHORIZATION].is_sensitive());
    }
}
