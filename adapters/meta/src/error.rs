//! Errors of the Meta adapter.
//!
//! [`MetaError`] is Meta's own error object, parsed; [`Error`] is what the
//! adapter's calls return. Neither `Display` shows an access token, an
//! authorization header or a request body.

use std::fmt;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use idem::IdempotencyKey;
use idem::adapter::{AdapterFailure, CallError, WireError};
use serde::Deserialize;

use crate::model::{ContainerId, ContainerStatus};

/// Graph API error codes that mean "throttled": the request was refused
/// before it was processed.
///
/// - 4: application request limit reached (Meta's error guide),
/// - 17: user request limit reached (error guide),
/// - 32: Page-level rate limit (Meta's 2016 Page rate-limit announcement),
/// - 341: application limit reached (error guide),
/// - 613: "calls to this api have exceeded the rate limit" (listed as
///   `too_many_requests` in the official Python SDK's error codes).
pub const THROTTLE_CODES: [i64; 5] = [4, 17, 32, 341, 613];

/// Meta's error object: `{"error": {"message", "type", "code",
/// "error_subcode", "error_user_title", "error_user_msg", "is_transient",
/// "fbtrace_id"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct MetaError {
    /// Human-readable description (Meta's words).
    #[serde(default)]
    pub message: String,
    /// Error type, for example `OAuthException`.
    #[serde(rename = "type", default)]
    pub error_type: Option<String>,
    /// Error code, for example 190 (expired token) or 4 (app throttled).
    #[serde(default)]
    pub code: i64,
    /// Sub-code, for example 463 (token expired) under 190.
    pub error_subcode: Option<i64>,
    /// Title of the message meant for the end user, if any.
    pub error_user_title: Option<String>,
    /// Message meant for the end user, if any.
    pub error_user_msg: Option<String>,
    /// Meta's own "try again later" flag, as the official SDK reads it.
    pub is_transient: Option<bool>,
    /// Meta's support trace id.
    pub fbtrace_id: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    error: MetaError,
}

impl MetaError {
    /// Parses a Graph API error body. `None` when the body holds no error
    /// object.
    pub fn from_body(body: &[u8]) -> Option<Self> {
        serde_json::from_slice::<Envelope>(body)
            .ok()
            .map(|e| e.error)
    }

    /// A throttling error ([`THROTTLE_CODES`]): the request was not
    /// processed and may be sent again after a wait.
    pub fn is_throttle(&self) -> bool {
        THROTTLE_CODES.contains(&self.code)
    }

    /// An access-token error (code 190, or type `OAuthException` with code
    /// 102): a new token is needed; resending will not help.
    pub fn is_auth(&self) -> bool {
        self.code == 190 || self.code == 102
    }

    /// A permission error (code 10 or 200–299).
    pub fn is_permission(&self) -> bool {
        self.code == 10 || (200..=299).contains(&self.code)
    }

    /// Meta's "duplicate post" (506): the same content was just posted to
    /// this Page. Meta refuses identical consecutive posts; a 506 on an
    /// operator retry usually means the earlier attempt did get through.
    pub fn is_duplicate_post(&self) -> bool {
        self.code == 506
    }

    /// Meta's `is_transient` flag.
    pub fn is_transient(&self) -> bool {
        self.is_transient == Some(true)
    }

    /// Instagram's "media not ready for publishing" (code 9007): the
    /// container is still being processed; nothing was published.
    pub fn is_media_not_ready(&self) -> bool {
        self.code == 9007
    }

    /// Whether the same write may be sent again with no risk of a
    /// duplicate: only when Meta refused it unprocessed (throttling,
    /// media not ready). A transient code 1 or 2 is not enough: Meta does not
    /// say whether the write took effect.
    pub fn is_retryable(&self) -> bool {
        self.is_throttle() || self.is_media_not_ready()
    }
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Meta error {}", self.code)?;
        if let Some(sub) = self.error_subcode {
            write!(f, "/{sub}")?;
        }
        if let Some(t) = &self.error_type {
            write!(f, " ({t})")?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(trace) = &self.fbtrace_id {
            write!(f, " [fbtrace_id {trace}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for MetaError {}

/// What the adapter's calls return: idem's one error shape with Meta's
/// error object, and Meta's own cases in [`CallError::Adapter`].
pub type Error = CallError<MetaError, AdapterError>;

/// Meta's own failure cases, in [`Error::Adapter`](CallError::Adapter).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// The client held the write back because Meta's usage headers said the
    /// rate limit is close (or reached). Nothing was recorded or sent.
    #[error("held back before sending: Meta usage at {percent}% (wait {retry_after:?})")]
    Throttled {
        /// The highest usage percentage last reported.
        percent: u32,
        /// How long to wait before trying again.
        retry_after: Duration,
    },
    /// The Instagram container is still being processed (`IN_PROGRESS`).
    /// Try the same key again later; the container is reused.
    #[error("Instagram container {container} of {key} is not ready yet; try again later")]
    ContainerNotReady {
        /// The key.
        key: IdempotencyKey,
        /// The container.
        container: ContainerId,
    },
    /// The Instagram container failed (`ERROR`) or expired (`EXPIRED`, not
    /// published within 24 h). It cannot be published: an operator bump
    /// creates a new container.
    #[error(
        "Instagram container {container} of {key} is {status}; it cannot be published. \
         Bump {key} to the next attempt to create a new container"
    )]
    ContainerFailed {
        /// The key.
        key: IdempotencyKey,
        /// The container.
        container: ContainerId,
        /// Its status.
        status: ContainerStatus,
    },
    /// Meta answered 2xx with a body the adapter could not read. The record
    /// keeps whatever the executor stored.
    #[error("unexpected Meta response for {key}: {reason}")]
    UnexpectedResponse {
        /// The key.
        key: IdempotencyKey,
        /// What was wrong (no body content).
        reason: String,
    },
    /// The input is invalid (for example a post with neither message nor
    /// link). Nothing was recorded or sent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The client configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl AdapterFailure<MetaError> for AdapterError {
    fn key(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::ContainerNotReady { key, .. }
            | Self::ContainerFailed { key, .. }
            | Self::UnexpectedResponse { key, .. } => Some(key),
            Self::Throttled { .. } | Self::InvalidInput(_) | Self::Config(_) => None,
        }
    }

    /// Held back by usage, or a container not ready yet: the same job may
    /// succeed later.
    fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::ContainerNotReady { .. }
        )
    }
}

impl From<AdapterError> for Error {
    fn from(e: AdapterError) -> Self {
        Self::Adapter(e)
    }
}

impl WireError for MetaError {
    fn parse(status: StatusCode, _headers: Option<&HeaderMap>, body: &[u8]) -> Self {
        Self::from_body(body).unwrap_or_else(|| MetaError {
            message: format!("HTTP {status} with no Graph error object"),
            error_type: None,
            code: 0,
            error_subcode: None,
            error_user_title: None,
            error_user_msg: None,
            is_transient: None,
            fbtrace_id: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OAUTH: &str = r#"{"error":{"message":"Error validating access token: Session has expired","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"AbC123"}}"#;

    #[test]
    fn parses_the_documented_shape() {
        let e = MetaError::from_body(OAUTH.as_bytes()).unwrap();
        assert_eq!(e.code, 190);
        assert_eq!(e.error_subcode, Some(463));
        assert_eq!(e.error_type.as_deref(), Some("OAuthException"));
        assert!(e.is_auth());
        assert!(!e.is_retryable());
        let shown = e.to_string();
        assert!(shown.contains("190/463"), "{shown}");
        assert!(shown.contains("AbC123"), "{shown}");
    }

    #[test]
    fn throttles_are_retryable_transients_are_not() {
        for code in THROTTLE_CODES {
            let body = format!(r#"{{"error":{{"message":"limit","code":{code}}}}}"#);
            assert!(
                MetaError::from_body(body.as_bytes())
                    .unwrap()
                    .is_retryable()
            );
        }
        let body = r#"{"error":{"message":"An unexpected error has occurred","code":2,"is_transient":true}}"#;
        let e = MetaError::from_body(body.as_bytes()).unwrap();
        assert!(e.is_transient());
        assert!(
            !e.is_retryable(),
            "a transient code 2 does not prove no effect"
        );
    }

    #[test]
    fn non_error_bodies_are_none() {
        assert!(MetaError::from_body(b"{\"id\":\"1_2\"}").is_none());
        assert!(MetaError::from_body(b"<html>").is_none());
    }
}

#[cfg(test)]
mod size {
    #[test]
    fn error_stays_small() {
        // clippy's result_large_err threshold is 128 bytes.
        assert!(std::mem::size_of::<super::Error>() <= 128);
    }
}
