//! Errors: Stripe's own API error ([`StripeError`]), the adapter's error
//! ([`Error`]) and value parsing errors ([`ParseError`]).
//!
//! No `Display` here shows a secret key, an authorization header or a request
//! body; Stripe's messages are shown with anything that looks like an API key
//! masked.

use std::fmt;

use http::{HeaderMap, StatusCode};
use idem::IdempotencyKey;
use idem::adapter::{AdapterFailure, CallError, WireError};
use serde::Deserialize;

/// A value could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Not an id of this kind.
    #[error("not a valid {kind} (expected `{expected_prefix}` followed by letters, digits or `_`)")]
    Id {
        /// The id type.
        kind: &'static str,
        /// Its prefix.
        expected_prefix: &'static str,
    },
    /// Not a three-letter currency code.
    #[error("not a three-letter ISO 4217 currency code")]
    Currency,
}

idem::wire_enum! {
    /// Stripe's `error.type`.
    pub enum ErrorType {
        /// `api_error`: a problem on Stripe's side.
        Api = "api_error",
        /// `card_error`: the card was declined or cannot be charged.
        Card = "card_error",
        /// `idempotency_error`: the key was reused with different parameters.
        Idempotency = "idempotency_error",
        /// `invalid_request_error`: the request is invalid.
        InvalidRequest = "invalid_request_error",
    }
}

/// An error answer from Stripe: `{"error": {"type", "code", "decline_code",
/// "param", "message", ...}}` with its HTTP status and `Request-Id`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StripeError {
    /// HTTP status.
    pub status: StatusCode,
    /// `error.type`.
    pub error_type: ErrorType,
    /// `error.code`, for example `card_declined`, `lock_timeout`.
    pub code: Option<String>,
    /// `error.decline_code` (card errors), for example `insufficient_funds`.
    pub decline_code: Option<String>,
    /// `error.param`: the parameter at fault.
    pub param: Option<String>,
    /// `error.message`: human-readable text from Stripe.
    pub message: Option<String>,
    /// `Request-Id` header (or the id in `request_log_url` when the answer
    /// was read back from the ledger, which keeps no headers).
    pub request_id: Option<String>,
    /// Whether Stripe said `Stripe-Should-Retry`, if it did.
    pub should_retry: Option<bool>,
}

#[derive(Deserialize)]
struct Envelope {
    error: Option<Body>,
}

#[derive(Deserialize)]
struct Body {
    #[serde(rename = "type")]
    error_type: Option<String>,
    code: Option<String>,
    decline_code: Option<String>,
    param: Option<String>,
    message: Option<String>,
    request_log_url: Option<String>,
}

impl StripeError {
    /// Reads an error answer. A body that is not Stripe's error JSON gives
    /// an error of type `api_error` with no details.
    pub fn from_response(status: StatusCode, headers: Option<&HeaderMap>, body: &[u8]) -> Self {
        let parsed = serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.error);
        let header = |name: &str| {
            headers
                .and_then(|h| h.get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut request_id = header("request-id");
        let should_retry = header("stripe-should-retry").and_then(|v| match v.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        });
        match parsed {
            Some(b) => {
                if request_id.is_none() {
                    request_id = b.request_log_url.as_deref().and_then(request_id_from_url);
                }
                Self {
                    status,
                    error_type: b
                        .error_type
                        .as_deref()
                        .map_or(ErrorType::Api, ErrorType::parse),
                    code: b.code,
                    decline_code: b.decline_code,
                    param: b.param,
                    message: b.message.map(|m| redact(&m)),
                    request_id,
                    should_retry,
                }
            }
            None => Self {
                status,
                error_type: ErrorType::Api,
                code: None,
                decline_code: None,
                param: None,
                message: None,
                request_id,
                should_retry,
            },
        }
    }

    /// Whether the same request (same key) may succeed if sent again: Stripe
    /// said so, or it is a lock timeout, a key still in use, a rate limit or a
    /// server error (unless Stripe said not to retry).
    pub fn is_retryable(&self) -> bool {
        if let Some(said) = self.should_retry {
            return said;
        }
        if self.error_type == ErrorType::Idempotency && self.status == StatusCode::BAD_REQUEST {
            return false;
        }
        self.status == StatusCode::CONFLICT
            || self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status.is_server_error()
            || self.code.as_deref() == Some("lock_timeout")
    }

    /// Whether Stripe refused the key because it was first used for a
    /// different request (400 `idempotency_error`).
    pub fn is_key_reuse(&self) -> bool {
        self.error_type == ErrorType::Idempotency && self.status == StatusCode::BAD_REQUEST
    }

    /// Whether the card was declined (`card_error`).
    pub fn is_card_error(&self) -> bool {
        self.error_type == ErrorType::Card
    }
}

/// `https://dashboard.stripe.com/test/logs/req_abc?t=1` → `req_abc`.
fn request_id_from_url(url: &str) -> Option<String> {
    let last = url.split('?').next()?.rsplit('/').next()?;
    last.starts_with("req_").then(|| last.to_owned())
}

/// Masks anything that looks like a Stripe secret or restricted key.
pub(crate) fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let bare = word.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_');
        if ["sk_", "rk_", "whsec_"].iter().any(|p| bare.starts_with(p)) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
    }
    out
}

impl fmt::Display for StripeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Stripe {} (HTTP {})",
            self.error_type.as_str(),
            self.status.as_u16()
        )?;
        if let Some(code) = &self.code {
            write!(f, " code={code}")?;
        }
        if let Some(d) = &self.decline_code {
            write!(f, " decline_code={d}")?;
        }
        if let Some(p) = &self.param {
            write!(f, " param={p}")?;
        }
        if let Some(m) = &self.message {
            write!(f, ": {}", redact(m))?;
        }
        if let Some(r) = &self.request_id {
            write!(f, " [request {r}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for StripeError {}

/// Errors from [`StripeClient`](crate::StripeClient): idem's one error
/// shape with Stripe's error answer, and Stripe's own cases in
/// [`CallError::Adapter`].
///
/// An unknown outcome inside Stripe's 24 h key window carries
/// `resend_safe_until` (a retry with the same key is safe and
/// [`is_retryable`](CallError::is_retryable)); past it, reconciliation runs
/// instead of a resend.
pub type Error = CallError<StripeError, AdapterError>;

/// Stripe's own failure cases, in [`Error::Adapter`](CallError::Adapter).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// Stripe's key window has passed, the outcome was unknown, and a search
    /// for the key found no object. Stripe's search can lag writes by about
    /// a minute: reconcile again later; if it is still not found, an
    /// operator may bump the key to the next attempt.
    #[error(
        "outcome of {key} is unknown and no Stripe object carries it ({note}); \
         search may lag about a minute; reconcile again later, or an operator may bump the key"
    )]
    NotFound {
        /// The key.
        key: IdempotencyKey,
        /// How it was looked up.
        note: String,
    },
    /// Stripe's key window has passed with the outcome unknown, and what
    /// Stripe shows proves neither that the operation happened nor that it
    /// did not (for example a partial capture: the intent stays
    /// `requires_capture` either way once money was received). Nothing is
    /// resent; the record stays `unknown` until an operator resolves it or
    /// bumps the key.
    #[error(
        "outcome of {key} is undetermined ({note}); not resent: an operator resolves or bumps the key"
    )]
    Undetermined {
        /// The key.
        key: IdempotencyKey,
        /// What was read and why it is not proof.
        note: String,
    },
    /// The request carries a parameter that the configured `Stripe-Version`
    /// does not have (for example `payment_method_types` on PaymentIntent
    /// create from `2026-10-28.endive`). Nothing was recorded or sent.
    #[error(
        "{param} is not accepted by Stripe-Version {version} ({hint}); {key} was not recorded or sent"
    )]
    UnsupportedParameter {
        /// The key.
        key: IdempotencyKey,
        /// The parameter.
        param: &'static str,
        /// The configured version.
        version: String,
        /// What to use instead.
        hint: &'static str,
    },
}

impl AdapterFailure<StripeError> for AdapterError {
    fn key(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::NotFound { key, .. }
            | Self::Undetermined { key, .. }
            | Self::UnsupportedParameter { key, .. } => Some(key),
        }
    }

    /// A lookup that may find the object later is retryable.
    fn is_retryable(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    fn is_unknown(&self) -> bool {
        matches!(self, Self::NotFound { .. } | Self::Undetermined { .. })
    }
}

impl From<AdapterError> for Error {
    fn from(e: AdapterError) -> Self {
        Self::Adapter(e)
    }
}

impl WireError for StripeError {
    fn parse(status: StatusCode, headers: Option<&HeaderMap>, body: &[u8]) -> Self {
        Self::from_response(status, headers, body)
    }

    fn is_key_reuse(&self) -> bool {
        StripeError::is_key_reuse(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stripe_error_body() {
        let body = br#"{"error":{"type":"card_error","code":"card_declined","decline_code":"insufficient_funds","param":"payment_method","message":"Your card has insufficient funds.","request_log_url":"https://dashboard.stripe.com/test/logs/req_9?t=1"}}"#;
        let e = StripeError::from_response(StatusCode::PAYMENT_REQUIRED, None, body);
        assert_eq!(e.error_type, ErrorType::Card);
        assert_eq!(e.code.as_deref(), Some("card_declined"));
        assert_eq!(e.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(e.param.as_deref(), Some("payment_method"));
        assert_eq!(e.request_id.as_deref(), Some("req_9"));
        assert!(!e.is_retryable());
        assert!(e.is_card_error());
    }

    #[test]
    fn retryable_rules() {
        let mut h = HeaderMap::new();
        let e = StripeError::from_response(StatusCode::INTERNAL_SERVER_ERROR, Some(&h), b"{}");
        assert!(e.is_retryable());
        h.insert("stripe-should-retry", "false".parse().unwrap());
        let e = StripeError::from_response(StatusCode::INTERNAL_SERVER_ERROR, Some(&h), b"{}");
        assert!(!e.is_retryable());
        let e = StripeError::from_response(
            StatusCode::BAD_REQUEST,
            None,
            br#"{"error":{"type":"idempotency_error","message":"Keys for idempotent requests can only be used with the same parameters"}}"#,
        );
        assert!(e.is_key_reuse());
        assert!(!e.is_retryable());
        let e = StripeError::from_response(
            StatusCode::CONFLICT,
            None,
            br#"{"error":{"type":"invalid_request_error","code":"lock_timeout"}}"#,
        );
        assert!(e.is_retryable());
    }

    #[test]
    fn display_masks_keys() {
        let body = br#"{"error":{"type":"invalid_request_error","message":"Invalid API Key provided: sk_test_abcdef123"}}"#;
        let e = StripeError::from_response(StatusCode::UNAUTHORIZED, None, body);
        let shown = e.to_string();
        assert!(!shown.contains("sk_test_abcdef123"), "{shown}");
        assert!(shown.contains("[redacted]"));
    }
}

/// The client's settings are invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The base URL does not parse or cannot carry a path.
    #[error("invalid Stripe base URL")]
    BaseUrl,
    /// The secret key is empty or not a valid header value (its text is not
    /// shown).
    #[error("invalid Stripe secret key (empty or not a valid header value)")]
    SecretKey,
    /// The `Stripe-Version` or `Stripe-Account` value is not a valid header
    /// value.
    #[error("invalid {0} header value")]
    Header(&'static str),
    /// The `Stripe-Version` does not start with a `YYYY-MM-DD` date (Stripe's
    /// versions look like `2026-10-28.endive`), so the parameters it accepts
    /// cannot be told.
    #[error("Stripe-Version must look like YYYY-MM-DD or YYYY-MM-DD.name")]
    StripeVersion,
}
