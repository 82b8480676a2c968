//! Errors of the Twilio adapter.
//!
//! [`Error`] is what every fallible call returns. Each variant about a send
//! names the idempotency key and says what the operator can do next.
//! [`TwilioError`] is Twilio's own error body (`code`, `message`,
//! `more_info`, `status`).

use std::fmt;

use http::{HeaderMap, StatusCode};
use idem::IdempotencyKey;
use idem::adapter::{AdapterFailure, CallError, WireError};
use serde::Deserialize;

/// Twilio's error body, as the REST API returns it:
/// `{"code": 21211, "message": "...", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}`.
///
/// Newer Twilio endpoints may answer with RFC 9457 problem details; those are
/// read too (`detail`/`title` become the message).
///
/// `Display` shows the HTTP status, the Twilio code and the `more_info` link,
/// never Twilio's `message`: Twilio echoes request values (for example the
/// `To` number) in it. Read it with [`message`](Self::message).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TwilioError {
    /// Twilio's error code (for example 21211, 20429), when it sent one.
    pub code: Option<u32>,
    /// Twilio's explanation. May contain request values such as phone numbers.
    pub message: String,
    /// A link to Twilio's page about the code.
    pub more_info: Option<String>,
    /// The HTTP status.
    pub status: u16,
}

#[derive(Deserialize)]
struct RawError {
    code: Option<serde_json::Value>,
    message: Option<String>,
    more_info: Option<String>,
    status: Option<serde_json::Value>,
    // RFC 9457 problem details.
    title: Option<String>,
    detail: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn as_u32(v: &serde_json::Value) -> Option<u32> {
    match v {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

impl TwilioError {
    /// Twilio's code for "too many requests": the request was not processed.
    pub const TOO_MANY_REQUESTS: u32 = 20429;
    /// Twilio's code for an invalid `To` number.
    pub const INVALID_TO: u32 = 21211;

    /// Reads Twilio's error body for a response with `status`. A body that is
    /// not Twilio JSON still gives an error with the status and no code.
    pub fn from_response(status: StatusCode, body: &[u8]) -> Self {
        let raw: Option<RawError> = serde_json::from_slice(body).ok();
        match raw {
            Some(raw) => Self {
                code: raw.code.as_ref().and_then(as_u32),
                message: raw
                    .message
                    .or(raw.detail)
                    .or(raw.title)
                    .unwrap_or_else(|| format!("HTTP {status}")),
                more_info: raw.more_info.or(raw.kind),
                status: raw
                    .status
                    .as_ref()
                    .and_then(as_u32)
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(status.as_u16()),
            },
            None => Self {
                code: None,
                message: format!(
                    "HTTP {status} without a Twilio error body{}",
                    if body.is_empty() { "" } else { " (not JSON)" }
                ),
                more_info: None,
                status: status.as_u16(),
            },
        }
    }

    /// Twilio's code, if any.
    pub fn code(&self) -> Option<u32> {
        self.code
    }

    /// Twilio's explanation (may contain request values such as numbers).
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The link to Twilio's documentation of the code.
    pub fn more_info(&self) -> Option<&str> {
        self.more_info.as_deref()
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// Whether Twilio said the request was not processed and may be sent
    /// again later: HTTP 429 (error 20429). Twilio documents such requests as
    /// "not processed and safe to retry". Nothing else is: a 5xx on a send may
    /// have queued the message, and a 4xx will fail again.
    pub fn is_retryable(&self) -> bool {
        self.status == 429 || self.code == Some(Self::TOO_MANY_REQUESTS)
    }
}

impl fmt::Display for TwilioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Twilio HTTP {}", self.status)?;
        if let Some(code) = self.code {
            write!(f, ", error {code}")?;
        }
        if let Some(more) = &self.more_info {
            write!(f, " ({more})")?;
        }
        Ok(())
    }
}

impl std::error::Error for TwilioError {}

/// Errors of the Twilio adapter: idem's one error shape with Twilio's error
/// body, and Twilio's own cases in [`CallError::Adapter`].
///
/// Twilio has no idempotency key, so an unknown outcome is never resent
/// (`resend_safe_until` is always `None`): reconcile it (status callback, or
/// `messages().reconcile`); if Twilio has no such message, bump the key to
/// the next attempt to send once more. A rejection is recorded as `failed`:
/// fix the data, then bump the key.
pub type Error = CallError<TwilioError, AdapterError>;

/// Twilio's own failure cases, in [`Error::Adapter`](CallError::Adapter).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The client configuration is invalid.
    #[error("invalid Twilio client configuration: {0}")]
    Config(String),
    /// A status callback could not be read.
    #[error("invalid Twilio status callback: {0}")]
    Callback(String),
}

impl AdapterFailure<TwilioError> for AdapterError {
    fn key(&self) -> Option<&IdempotencyKey> {
        None
    }

    fn is_retryable(&self) -> bool {
        false
    }
}

impl From<AdapterError> for Error {
    fn from(e: AdapterError) -> Self {
        Self::Adapter(e)
    }
}

impl WireError for TwilioError {
    fn parse(status: StatusCode, _headers: Option<&HeaderMap>, body: &[u8]) -> Self {
        Self::from_response(status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_twilio_error_body() {
        let body = br#"{"code": 21211, "message": "The 'To' number +1555 is not a valid phone number.", "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        let e = TwilioError::from_response(StatusCode::BAD_REQUEST, body);
        assert_eq!(e.code(), Some(21211));
        assert_eq!(e.status(), 400);
        assert_eq!(
            e.more_info(),
            Some("https://www.twilio.com/docs/errors/21211")
        );
        assert!(!e.is_retryable());
        let shown = e.to_string();
        assert!(shown.contains("21211"), "{shown}");
        assert!(
            !shown.contains("+1555"),
            "Display leaks request values: {shown}"
        );
    }

    #[test]
    fn rate_limit_is_retryable() {
        let body = br#"{"code": 20429, "message": "Too Many Requests", "more_info": "https://www.twilio.com/docs/errors/20429", "status": 429}"#;
        let e = TwilioError::from_response(StatusCode::TOO_MANY_REQUESTS, body);
        assert!(e.is_retryable());
    }

    #[test]
    fn non_json_and_problem_details() {
        let e = TwilioError::from_response(StatusCode::BAD_GATEWAY, b"<html>bad gateway</html>");
        assert_eq!(e.code(), None);
        assert_eq!(e.status(), 502);
        assert!(!e.is_retryable());
        let e = TwilioError::from_response(
            StatusCode::BAD_REQUEST,
            br#"{"type":"https://www.twilio.com/docs/errors/20001","title":"Invalid","status":400,"detail":"bad field","code":20001}"#,
        );
        assert_eq!(e.code(), Some(20001));
        assert_eq!(e.message(), "bad field");
    }

    #[test]
    fn unknown_error_names_key_and_next_step() {
        let key: IdempotencyKey = "joes-bikes_sms_42_v1".parse().unwrap();
        let e = Error::OutcomeUnknown {
            key,
            reason: "timed out after 1 attempt(s)".into(),
            resend_safe_until: None,
        };
        let shown = e.to_string();
        assert!(shown.contains("joes-bikes_sms_42_v1"));
        assert!(shown.contains("bump"));
        assert!(shown.contains("not resent"));
        assert!(!e.is_retryable());
        assert!(e.is_unknown());
    }
}
