//! Checking that a webhook (for example a status callback) really comes from
//! Twilio: the `X-Twilio-Signature` header.
//!
//! Twilio signs each webhook with the account's Auth Token: HMAC-SHA1 over
//! the full URL it called (query string included) followed by every POST
//! parameter, sorted by name, as name and value concatenated; the header
//! carries the base64 of that digest. Check it before handing a callback to
//! [`reconcile_from_callback`](crate::reconcile_from_callback): a forged
//! callback could otherwise mark an `unknown` send as `succeeded`.
//!
//! ```
//! use idem_twilio::signature::{compute_signature, verify_signature};
//!
//! let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
//! let params = [
//!     ("CallSid", "CA1234567890ABCDE"),
//!     ("Caller", "+14158675309"),
//!     ("Digits", "1234"),
//!     ("From", "+14158675309"),
//!     ("To", "+18005551212"),
//! ];
//! // The example from Twilio's own request-validator tests.
//! assert_eq!(compute_signature("12345", url, params), "RSOYDt4T1cUTdK1PDd93/VVr8B8=");
//! assert!(verify_signature("12345", url, params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
//! ```
//!
//! Limits: the URL must be exactly the one Twilio called (scheme, host,
//! port and query as Twilio saw them: behind a proxy, rebuild it from the
//! public address). JSON-bodied webhooks (`bodySHA256`) are not covered.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The signature Twilio would send for a webhook to `url` with form
/// parameters `params`, signed with `auth_token`. Repeated parameters count
/// once per distinct value, in sorted order, as Twilio's own libraries do.
pub fn compute_signature<K, V>(
    auth_token: &str,
    url: &str,
    params: impl IntoIterator<Item = (K, V)>,
) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut pairs: Vec<(String, String)> = params
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
        .collect();
    pairs.sort();
    pairs.dedup();
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = match Hmac::<Sha1>::new_from_slice(auth_token.as_bytes()) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(url.as_bytes());
    for (k, v) in &pairs {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `signature` (the `X-Twilio-Signature` header) is Twilio's
/// signature for this webhook. The comparison takes the same time whatever
/// the first differing byte, so it leaks nothing about the expected value.
pub fn verify_signature<K, V>(
    auth_token: &str,
    url: &str,
    params: impl IntoIterator<Item = (K, V)>,
    signature: &str,
) -> bool
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    let expected = compute_signature(auth_token, url, params);
    let (a, b) = (expected.as_bytes(), signature.trim().as_bytes());
    if a.len() != b.len() || a.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";
    const GOOD: &str = "RSOYDt4T1cUTdK1PDd93/VVr8B8=";

    fn params() -> Vec<(&'static str, &'static str)> {
        vec![
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
    }

    #[test]
    fn twilios_published_vector() {
        assert_eq!(compute_signature("12345", URL, params()), GOOD);
        let mut reversed = params();
        reversed.reverse();
        assert!(
            verify_signature("12345", URL, reversed, GOOD),
            "order does not matter"
        );
    }

    #[test]
    fn tampering_is_rejected() {
        let mut tampered = params();
        tampered[2] = ("Digits", "9999");
        assert!(!verify_signature("12345", URL, tampered, GOOD));
        assert!(!verify_signature(
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            params(),
            GOOD
        ));
        assert!(
            !verify_signature("54321", URL, params(), GOOD),
            "another account's token"
        );
        assert!(!verify_signature("12345", URL, params(), ""));
        assert!(!verify_signature(
            "12345",
            URL,
            params(),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8"
        ));
        let mut extra = params();
        extra.push(("MessageStatus", "delivered"));
        assert!(
            !verify_signature("12345", URL, extra, GOOD),
            "an added parameter"
        );
    }
}
