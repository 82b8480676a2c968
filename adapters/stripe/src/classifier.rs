//! How Stripe's answers are read: [`StripeClassifier`].

use http::{HeaderMap, StatusCode};
use idem::executor::{Classifier, Effect, Verdict};

use crate::error::StripeError;

/// Classifies Stripe's answers for the executor's retry loop.
///
/// In order:
/// 1. 2xx is a success.
/// 2. `Stripe-Should-Retry` wins when present: `true` → transient;
///    `false` → rejected on a 4xx, and *ambiguous* on a 5xx (it may have taken
///    effect and must not be resent blindly).
/// 3. 400 `idempotency_error` (key reused with other parameters) is a
///    rejection, never retried.
/// 4. 409 (`lock_timeout`, `idempotency_key_in_use`) and 5xx are transient
///    with a possible effect; 429 is transient with no effect (Stripe did not
///    process it).
/// 5. Every other status (400, 401, 402 card errors, 403, 404) is a
///    rejection.
///
/// Connect failures have no effect; timeouts and broken connections may have
/// (the executor's default). Under Stripe's native key both are resent with
/// the same key inside the 24 h window.
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeClassifier;

impl Classifier for StripeClassifier {
    fn classify(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Verdict {
        if status.is_success() {
            return Verdict::Success;
        }
        match headers
            .get("stripe-should-retry")
            .and_then(|v| v.to_str().ok())
        {
            Some("true") => {
                return if status == StatusCode::TOO_MANY_REQUESTS {
                    Verdict::Transient(Effect::None)
                } else {
                    Verdict::Transient(Effect::Possible)
                };
            }
            Some("false") => {
                return if status.is_server_error() {
                    Verdict::Ambiguous
                } else {
                    Verdict::Rejected
                };
            }
            _ => {}
        }
        if status == StatusCode::BAD_REQUEST
            && StripeError::from_response(status, None, body).is_key_reuse()
        {
            return Verdict::Rejected;
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            Verdict::Transient(Effect::None)
        } else if status == StatusCode::CONFLICT || status.is_server_error() {
            Verdict::Transient(Effect::Possible)
        } else {
            Verdict::Rejected
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(v) = v {
            h.insert("stripe-should-retry", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn header_wins() {
        let c = StripeClassifier;
        assert_eq!(
            c.classify(StatusCode::INTERNAL_SERVER_ERROR, &h(Some("false")), b"{}"),
            Verdict::Ambiguous
        );
        assert_eq!(
            c.classify(StatusCode::BAD_REQUEST, &h(Some("true")), b"{}"),
            Verdict::Transient(Effect::Possible)
        );
        assert_eq!(
            c.classify(StatusCode::CONFLICT, &h(Some("false")), b"{}"),
            Verdict::Rejected
        );
    }

    #[test]
    fn status_defaults() {
        let c = StripeClassifier;
        let none = h(None);
        assert_eq!(c.classify(StatusCode::OK, &none, b"{}"), Verdict::Success);
        assert_eq!(
            c.classify(StatusCode::INTERNAL_SERVER_ERROR, &none, b"{}"),
            Verdict::Transient(Effect::Possible)
        );
        assert_eq!(
            c.classify(
                StatusCode::CONFLICT,
                &none,
                br#"{"error":{"type":"invalid_request_error","code":"lock_timeout"}}"#
            ),
            Verdict::Transient(Effect::Possible)
        );
        assert_eq!(
            c.classify(StatusCode::TOO_MANY_REQUESTS, &none, b"{}"),
            Verdict::Transient(Effect::None)
        );
        assert_eq!(
            c.classify(
                StatusCode::BAD_REQUEST,
                &none,
                br#"{"error":{"type":"idempotency_error"}}"#
            ),
            Verdict::Rejected
        );
        assert_eq!(
            c.classify(
                StatusCode::PAYMENT_REQUIRED,
                &none,
                br#"{"error":{"type":"card_error"}}"#
            ),
            Verdict::Rejected
        );
    }
}
