//! Errors of the Google Business Profile adapter.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use idem::IdempotencyKey;
use idem::adapter::{AdapterFailure, CallError, WireError};
use serde::Deserialize;

/// Google's error body (the wire error of this adapter), `{"error": {"code", "message", "status", "details"}}`.
///
/// `message` is Google's text; it can quote parts of the request, so it is
/// never part of any `Display` output of this crate. Read it here.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct GbpApiError {
    /// The HTTP status Google reports in the body.
    #[serde(default)]
    pub code: u16,
    /// Google's message (may quote the request; not shown by `Display`).
    #[serde(default)]
    pub message: String,
    /// The canonical status name, for example `INVALID_ARGUMENT`.
    #[serde(default)]
    pub status: String,
    /// The `details` array, each an object with an `@type`.
    #[serde(default)]
    pub details: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct Envelope {
    error: GbpApiError,
}

/// The old name of [`GbpApiError`].
#[deprecated(note = "renamed GbpApiError: every adapter names its wire error <Provider>Error")]
pub type GoogleError = GbpApiError;

impl GbpApiError {
    /// Parses Google's error envelope; `None` when `body` is not one.
    pub fn parse(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Envelope>(body)
            .ok()
            .map(|e| e.error)
    }

    /// Whether Google marks this error as transient: `RESOURCE_EXHAUSTED`
    /// (429), `UNAVAILABLE` (503), `INTERNAL` (500), `DEADLINE_EXCEEDED`
    /// (504), `ABORTED`, `UNKNOWN`; or, without a status name, HTTP 429 or
    /// 5xx.
    pub fn is_retryable(&self) -> bool {
        match self.status.as_str() {
            "" => self.code == 429 || (500..600).contains(&self.code),
            s => matches!(
                s,
                "RESOURCE_EXHAUSTED"
                    | "UNAVAILABLE"
                    | "INTERNAL"
                    | "DEADLINE_EXCEEDED"
                    | "ABORTED"
                    | "UNKNOWN"
            ),
        }
    }

    /// The delay of a `google.rpc.RetryInfo` detail, if there is one.
    pub fn retry_delay(&self) -> Option<Duration> {
        self.details.iter().find_map(|d| {
            let ty = d.get("@type")?.as_str()?;
            if !ty.ends_with("google.rpc.RetryInfo") {
                return None;
            }
            parse_proto_duration(d.get("retryDelay")?)
        })
    }
}

/// Reads a `google.protobuf.Duration` in its JSON form (`"1.5s"`), or the
/// `{"seconds", "nanos"}` object form some encoders emit.
pub(crate) fn parse_proto_duration(v: &serde_json::Value) -> Option<Duration> {
    if let Some(s) = v.as_str() {
        let secs = s.strip_suffix('s')?;
        let secs: f64 = secs.parse().ok()?;
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        return Duration::try_from_secs_f64(secs).ok();
    }
    let seconds = match v.get("seconds")? {
        serde_json::Value::String(s) => s.parse::<u64>().ok()?,
        other => other.as_u64()?,
    };
    let nanos = v
        .get("nanos")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    Some(Duration::new(seconds, u32::try_from(nanos).ok()?))
}

/// Why the [`TokenSource`](crate::TokenSource) gave no access token.
#[derive(Debug, thiserror::Error)]
#[error("no access token: {message}")]
pub struct TokenError {
    message: String,
    retryable: bool,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl TokenError {
    /// A failure that may pass (the token endpoint was unreachable).
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            source: None,
        }
    }

    /// A failure that needs a person (refresh token revoked, no credentials).
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
            source: None,
        }
    }

    /// Keeps `source` as the cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Whether asking again later may give a token.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}

/// A failure of a GBP operation: idem's one error shape with Google's error
/// body, and this adapter's own cases in [`CallError::Adapter`].
///
/// An unknown outcome of a reply (an upsert or a delete) is safe to resend:
/// its `resend_safe_until` is set ([`resend_safe_forever`](idem::adapter::resend_safe_forever)).
/// A local post's is not: reconcile first.
pub type Error = CallError<GbpApiError, AdapterError>;

/// The old name of [`Error`].
#[deprecated(note = "renamed Error: every adapter's own error is Error")]
pub type GbpError = Error;

/// This adapter's own failure cases, in [`Error::Adapter`](CallError::Adapter).
///
/// Variants that concern a recorded operation name its key; each says what
/// state the ledger row was left in, so the caller knows what a re-run does.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The reply comment is longer than Google's 4,096-byte limit. Nothing
    /// was recorded or sent.
    #[error("review reply comment is {len} bytes; Google accepts at most {max}")]
    CommentTooLong {
        /// The comment's length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An argument cannot form a valid request (for example an empty
    /// location id). Nothing was recorded or sent.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which argument.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Google refused the access token even after one refresh. Nothing took
    /// effect; the row is back to `pending` and the next run, with working
    /// credentials, sends it with the same key.
    #[error(
        "Google refused the access token for {key} after a refresh; nothing was sent with effect, the record stays pending"
    )]
    Unauthenticated {
        /// The key.
        key: IdempotencyKey,
    },
    /// The token source failed. Nothing was sent; the row is back to
    /// `pending`.
    #[error("no access token for {key}; nothing was sent, the record stays pending")]
    Token {
        /// The key.
        key: IdempotencyKey,
        /// The token source's error.
        #[source]
        source: TokenError,
    },
    /// The base URL given to the builder cannot be used.
    #[error("invalid base URL: {0}")]
    BaseUrl(String),
}

impl AdapterFailure<GbpApiError> for AdapterError {
    fn key(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::Unauthenticated { key } | Self::Token { key, .. } => Some(key),
            Self::CommentTooLong { .. } | Self::InvalidInput { .. } | Self::BaseUrl(_) => None,
        }
    }

    /// A token source that may recover may succeed later.
    fn is_retryable(&self) -> bool {
        matches!(self, Self::Token { source, .. } if source.is_retryable())
    }
}

impl From<AdapterError> for Error {
    fn from(e: AdapterError) -> Self {
        Self::Adapter(e)
    }
}

impl WireError for GbpApiError {
    /// Google's envelope, or an error with only the HTTP status when the
    /// body is not one.
    fn parse(status: StatusCode, _headers: Option<&HeaderMap>, body: &[u8]) -> Self {
        Self::parse(body).unwrap_or_else(|| Self {
            code: status.as_u16(),
            message: String::new(),
            status: String::new(),
            details: Vec::new(),
        })
    }
}

/// `Display` shows the code and the status name, never Google's message.
impl fmt::Display for GbpApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Google error {}", self.code)?;
        if !self.status.is_empty() {
            write!(f, " ({})", self.status)?;
        }
        Ok(())
    }
}

impl std::error::Error for GbpApiError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_google_error_and_retry_info() {
        let body = br#"{"error": {"code": 429, "message": "Quota exceeded for quota metric 'Requests'",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED"},
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.500s"}]}}"#;
        let e = GbpApiError::parse(body).unwrap();
        assert_eq!(e.code, 429);
        assert_eq!(e.status, "RESOURCE_EXHAUSTED");
        assert!(e.is_retryable());
        assert_eq!(e.retry_delay(), Some(Duration::from_millis(1500)));
        assert!(GbpApiError::parse(b"<html>").is_none());
        let invalid = GbpApiError::parse(
            br#"{"error": {"code": 400, "message": "x", "status": "INVALID_ARGUMENT"}}"#,
        )
        .unwrap();
        assert!(!invalid.is_retryable());
        assert_eq!(invalid.retry_delay(), None);
    }

    #[test]
    fn proto_duration_forms() {
        let v = serde_json::json!({"seconds": "3", "nanos": 5});
        assert_eq!(parse_proto_duration(&v), Some(Duration::new(3, 5)));
        assert_eq!(
            parse_proto_duration(&serde_json::json!("30s")),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_proto_duration(&serde_json::json!("-1s")), None);
        assert_eq!(parse_proto_duration(&serde_json::json!("soon")), None);
    }

    #[test]
    fn display_hides_google_message() {
        let key: IdempotencyKey = "s_t_1_v1".parse().unwrap();
        let e = Error::Rejected {
            key,
            status: StatusCode::BAD_REQUEST,
            error: Box::new(GbpApiError::parse(
                br#"{"error": {"code": 400, "message": "Invalid value at 'comment' (secret text)", "status": "INVALID_ARGUMENT"}}"#,
            ).unwrap()),
            from_ledger: false,
        };
        let shown = e.to_string();
        assert!(shown.contains("INVALID_ARGUMENT"), "{shown}");
        assert!(!shown.contains("secret text"), "{shown}");
        assert!(!e.is_retryable());
    }
}
