//! Webhook signatures: Stripe (`Stripe-Signature`), Twilio
//! (`X-Twilio-Signature`), Meta (`X-Hub-Signature-256`) and Standard Webhooks
//! (`webhook-id` / `webhook-timestamp` / `webhook-signature`).
//!
//! Every check decodes the signature it was sent and compares it with the
//! expected MAC through [`Mac::verify_slice`], which takes the same time
//! whatever the first differing byte. Nothing here logs a secret or a body.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use idem::webhook::signature::{standard_sign, standard_verify, WebhookSecret};
//!
//! let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")?;
//! let at = UNIX_EPOCH + Duration::from_secs(1_614_265_330);
//! let header = standard_sign(std::slice::from_ref(&secret), "msg_p5jXN8AQM9LWM0D4loKWxJek", at, br#"{"test": 2432232314}"#);
//! assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
//! standard_verify(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &header,
//!     br#"{"test": 2432232314}"#, at, Duration::from_secs(300))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Why a webhook's signature was refused. The messages name what was wrong,
/// never a secret or an expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// The signature header (or another required header) is missing.
    #[error("the {0} header is missing")]
    MissingHeader(&'static str),
    /// A header could not be parsed.
    #[error("the {0} header is malformed")]
    Malformed(&'static str),
    /// No signature in the header matches any configured secret.
    #[error("no signature matches")]
    Mismatch,
    /// The signed timestamp is outside the tolerance.
    #[error(
        "the signed timestamp is {age_secs} s away from now; the tolerance is {tolerance_secs} s"
    )]
    Expired {
        /// Distance between the signed timestamp and now, in seconds.
        age_secs: u64,
        /// The configured tolerance, in seconds.
        tolerance_secs: u64,
    },
    /// No secret is configured (fail closed).
    #[error("no signing secret is configured")]
    NoSecret,
}

/// A Standard Webhooks signing secret: `whsec_` followed by base64 of the
/// key bytes. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    key: Vec<u8>,
}

impl fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

/// The Standard Webhooks secret prefix.
pub const SECRET_PREFIX: &str = "whsec_";

impl WebhookSecret {
    /// Parses `whsec_<base64>` (the prefix is optional, as in the reference
    /// libraries).
    ///
    /// # Errors
    ///
    /// [`SignatureError::Malformed`] when the rest is not base64 or is empty.
    pub fn parse(text: &str) -> Result<Self, SignatureError> {
        let body = text.strip_prefix(SECRET_PREFIX).unwrap_or(text);
        let key = B64
            .decode(body.trim())
            .map_err(|_| SignatureError::Malformed("secret"))?;
        if key.is_empty() {
            return Err(SignatureError::Malformed("secret"));
        }
        Ok(Self { key })
    }

    /// A secret from raw key bytes.
    ///
    /// # Errors
    ///
    /// [`SignatureError::Malformed`] when `key` is empty.
    pub fn from_bytes(key: &[u8]) -> Result<Self, SignatureError> {
        if key.is_empty() {
            return Err(SignatureError::Malformed("secret"));
        }
        Ok(Self { key: key.to_vec() })
    }

    /// A fresh random 32-byte secret.
    pub fn generate() -> Self {
        let key: [u8; 32] = rand::random();
        Self { key: key.to_vec() }
    }

    /// The `whsec_<base64>` text, for giving to the receiver (a secret:
    /// never log it).
    pub fn expose(&self) -> String {
        format!("{SECRET_PREFIX}{}", B64.encode(&self.key))
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length.
        HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length")
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Checks that `signed_at` (Unix seconds) is within `tolerance` of `now`,
/// in either direction.
fn check_tolerance(
    signed_at: i64,
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    let age = unix_secs(now).abs_diff(signed_at);
    if age > tolerance.as_secs() {
        return Err(SignatureError::Expired {
            age_secs: age,
            tolerance_secs: tolerance.as_secs(),
        });
    }
    Ok(())
}

// ---------------------------------------------------------------- Standard

/// The `webhook-signature` header value for one message: `v1,<base64>`
/// per secret, space-separated (several secrets = rotation).
pub fn standard_sign(
    secrets: &[WebhookSecret],
    msg_id: &str,
    at: SystemTime,
    body: &[u8],
) -> String {
    let ts = unix_secs(at);
    secrets
        .iter()
        .map(|s| {
            let mut mac = s.mac();
            standard_content(&mut mac, msg_id, ts, body);
            format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn standard_content(mac: &mut HmacSha256, msg_id: &str, ts: i64, body: &[u8]) {
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
}

/// Verifies a Standard Webhooks message: `webhook-timestamp` within
/// `tolerance` of `now`, and at least one `v1` signature of
/// `webhook-signature` made with one of `secrets`.
///
/// # Errors
///
/// [`SignatureError`] naming what failed.
pub fn standard_verify(
    secrets: &[WebhookSecret],
    msg_id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    if secrets.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    if msg_id.is_empty() {
        return Err(SignatureError::MissingHeader("webhook-id"));
    }
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| SignatureError::Malformed("webhook-timestamp"))?;
    check_tolerance(ts, now, tolerance)?;
    let candidates: Vec<Vec<u8>> = signature_header
        .split(' ')
        .filter_map(|part| part.strip_prefix("v1,"))
        .filter_map(|b| B64.decode(b).ok())
        .collect();
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("webhook-signature"));
    }
    let mut ok = false;
    for secret in secrets {
        for candidate in &candidates {
            let mut mac = secret.mac();
            standard_content(&mut mac, msg_id, ts, body);
            // Every pair is checked, so the time taken does not depend on
            // which one matched.
            ok |= mac.verify_slice(candidate).is_ok();
        }
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

// ---------------------------------------------------------------- Stripe

/// The `Stripe-Signature` header Stripe would send for `body` at `at`,
/// signed with each endpoint secret (`whsec_…`, used as text, as Stripe
/// does): `t=<unix>,v1=<hex>[,v1=<hex>…]`. For tests and cross-checks.
pub fn stripe_sign(secrets: &[&str], at: SystemTime, body: &[u8]) -> String {
    let ts = unix_secs(at);
    let mut header = format!("t={ts}");
    for secret in secrets {
        let sig = hex::encode(stripe_mac(secret, ts, body).finalize().into_bytes());
        header.push_str(",v1=");
        header.push_str(&sig);
    }
    header
}

fn stripe_mac(secret: &str, ts: i64, body: &[u8]) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// Verifies a `Stripe-Signature` header: its `t` within `tolerance` of
/// `now` and one of its `v1` signatures made with one of `secrets` (during a
/// secret roll Stripe signs with both). `v0` and unknown schemes are
/// ignored, as Stripe's libraries do.
///
/// # Errors
///
/// [`SignatureError`] naming what failed.
pub fn stripe_verify(
    secrets: &[&str],
    header: &str,
    body: &[u8],
    now: SystemTime,
    tolerance: Duration,
) -> Result<(), SignatureError> {
    if secrets.is_empty() || secrets.iter().any(|s| s.is_empty()) {
        return Err(SignatureError::NoSecret);
    }
    let mut ts = None;
    let mut candidates = Vec::new();
    for item in header.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else {
            continue;
        };
        match k {
            "t" => {
                ts = Some(
                    v.parse::<i64>()
                        .map_err(|_| SignatureError::Malformed("Stripe-Signature"))?,
                )
            }
            "v1" => {
                if let Ok(bytes) = hex::decode(v) {
                    candidates.push(bytes);
                }
            }
            _ => {}
        }
    }
    let ts = ts.ok_or(SignatureError::Malformed("Stripe-Signature"))?;
    if candidates.is_empty() {
        return Err(SignatureError::Malformed("Stripe-Signature"));
    }
    check_tolerance(ts, now, tolerance)?;
    let mut ok = false;
    for secret in secrets {
        for candidate in &candidates {
            ok |= stripe_mac(secret, ts, body).verify_slice(candidate).is_ok();
        }
    }
    if ok {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

// ---------------------------------------------------------------- Meta

/// The `X-Hub-Signature-256` header Meta would send: `sha256=<hex>` of
/// HMAC-SHA256 over the raw body with the app secret.
pub fn meta_sign(app_secret: &str, body: &[u8]) -> String {
    let mut mac =
        HmacSha256::new_from_slice(app_secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Verifies `X-Hub-Signature-256` against the raw body. Meta signs no
/// timestamp, so replays are stopped only by event deduplication.
///
/// # Errors
///
/// [`SignatureError`] naming what failed.
pub fn meta_verify(app_secret: &str, header: &str, body: &[u8]) -> Result<(), SignatureError> {
    if app_secret.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let hexsig = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(SignatureError::Malformed("X-Hub-Signature-256"))?;
    let sig = hex::decode(hexsig).map_err(|_| SignatureError::Malformed("X-Hub-Signature-256"))?;
    let mut mac =
        HmacSha256::new_from_slice(app_secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body);
    mac.verify_slice(&sig).map_err(|_| SignatureError::Mismatch)
}

// ---------------------------------------------------------------- Twilio

/// The `X-Twilio-Signature` Twilio would send: base64 of HMAC-SHA1 over the
/// full URL followed by every POST parameter sorted by name (name, then
/// value). `idem_twilio::signature` calls this; it is tested against
/// Twilio's published vector.
pub fn twilio_sign<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: impl IntoIterator<Item = (K, V)>,
) -> String {
    B64.encode(twilio_mac(auth_token, url, params).finalize().into_bytes())
}

fn twilio_mac<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: impl IntoIterator<Item = (K, V)>,
) -> Hmac<Sha1> {
    let mut pairs: Vec<(String, String)> = params
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    pairs.sort();
    pairs.dedup();
    let mut mac =
        Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()).expect("HMAC accepts any key length");
    mac.update(url.as_bytes());
    for (k, v) in &pairs {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    mac
}

/// Verifies `X-Twilio-Signature` for a form-encoded webhook to `url` (the
/// exact public URL Twilio called, query included).
///
/// # Errors
///
/// [`SignatureError`] naming what failed.
pub fn twilio_verify<K: AsRef<str>, V: AsRef<str>>(
    auth_token: &str,
    url: &str,
    params: impl IntoIterator<Item = (K, V)>,
    header: &str,
) -> Result<(), SignatureError> {
    if auth_token.is_empty() {
        return Err(SignatureError::NoSecret);
    }
    let sig = B64
        .decode(header.trim())
        .map_err(|_| SignatureError::Malformed("X-Twilio-Signature"))?;
    twilio_mac(auth_token, url, params)
        .verify_slice(&sig)
        .map_err(|_| SignatureError::Mismatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn standard_webhooks_reference_vector() {
        // The example of the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let header = standard_sign(
            std::slice::from_ref(&secret),
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            at(1_614_265_330),
            body,
        );
        assert_eq!(header, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let tol = Duration::from_secs(300);
        assert!(
            standard_verify(
                std::slice::from_ref(&secret),
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &header,
                body,
                at(1_614_265_330),
                tol
            )
            .is_ok()
        );
        assert_eq!(
            standard_verify(
                std::slice::from_ref(&secret),
                "msg_other",
                "1614265330",
                &header,
                body,
                at(1_614_265_330),
                tol
            ),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            standard_verify(
                &[secret],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                "1614265330",
                &header,
                body,
                at(1_614_265_331 + 300),
                tol
            ),
            Err(SignatureError::Expired { .. })
        ));
    }

    #[test]
    fn standard_rotation_signs_with_every_secret() {
        let old = WebhookSecret::generate();
        let new = WebhookSecret::generate();
        let header = standard_sign(&[new.clone(), old.clone()], "m1", at(1000), b"{}");
        assert_eq!(header.split(' ').count(), 2);
        let tol = Duration::from_secs(300);
        assert!(standard_verify(&[old], "m1", "1000", &header, b"{}", at(1000), tol).is_ok());
        assert!(standard_verify(&[new], "m1", "1000", &header, b"{}", at(1000), tol).is_ok());
        assert!(
            standard_verify(
                &[WebhookSecret::generate()],
                "m1",
                "1000",
                &header,
                b"{}",
                at(1000),
                tol
            )
            .is_err()
        );
    }

    #[test]
    fn stripe_round_trip_tolerance_and_rotation() {
        let body = br#"{"id":"evt_1"}"#;
        let header = stripe_sign(&["whsec_new", "whsec_old"], at(5000), body);
        let tol = Duration::from_secs(300);
        assert!(stripe_verify(&["whsec_old"], &header, body, at(5100), tol).is_ok());
        assert!(stripe_verify(&["whsec_new"], &header, body, at(5100), tol).is_ok());
        assert_eq!(
            stripe_verify(&["whsec_x"], &header, body, at(5100), tol),
            Err(SignatureError::Mismatch)
        );
        assert!(matches!(
            stripe_verify(&["whsec_old"], &header, body, at(5301), tol),
            Err(SignatureError::Expired { .. })
        ));
        assert_eq!(
            stripe_verify(&["whsec_old"], &header, b"{}", at(5100), tol),
            Err(SignatureError::Mismatch)
        );
        assert!(stripe_verify(&["whsec_old"], "v1=00", body, at(5100), tol).is_err());
        assert!(stripe_verify(&[], &header, body, at(5100), tol).is_err());
    }

    #[test]
    fn meta_round_trip() {
        let h = meta_sign("appsecret", b"{\"object\":\"page\"}");
        assert!(h.starts_with("sha256="));
        assert!(meta_verify("appsecret", &h, b"{\"object\":\"page\"}").is_ok());
        assert_eq!(
            meta_verify("other", &h, b"{\"object\":\"page\"}"),
            Err(SignatureError::Mismatch)
        );
        assert!(meta_verify("appsecret", "sha1=00", b"").is_err());
    }

    #[test]
    fn twilio_published_vector() {
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        let params = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ];
        assert_eq!(
            twilio_sign("12345", url, params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert!(twilio_verify("12345", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=").is_ok());
        assert!(twilio_verify("54321", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8=").is_err());
        assert!(twilio_verify("12345", url, params, "not base64!").is_err());
    }

    #[test]
    fn secrets_are_not_shown() {
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert!(!format!("{s:?}").contains("MfKQ"));
        assert_eq!(s.expose(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert!(WebhookSecret::parse("whsec_").is_err());
        assert!(WebhookSecret::parse("whsec_!!").is_err());
    }
}
