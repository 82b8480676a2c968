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

/// The signature Twilio would send for a webhook to `url` with form
/// parameters `params`, signed with `auth_token`. Repeated parameters count
/// once per distinct value, in sorted order, as Twilio's own libraries do.
/// The algorithm lives in core ([`idem::webhook::signature::twilio_sign`]),
/// which the inbound webhook layer uses too.
pub fn compute_signature<K, V>(
    auth_token: &str,
    url: &str,
    params: impl IntoIterator<Item = (K, V)>,
) -> String
where
    K: AsRef<str>,
    V: AsRef<str>,
{
    idem::webhook::signature::twilio_sign(auth_token, url, params)
}

/// Whether `signature` (the `X-Twilio-Signature` header) is Twilio's
/// signature for this webhook. The comparison takes the same time whatever
/// the first differing byte, so it leaks nothing about the expected value.
/// An empty auth token or signature never verifies.
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
    !signature.trim().is_empty()
        && idem::webhook::signature::twilio_verify(auth_token, url, params, signature).is_ok()
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
