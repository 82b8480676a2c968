//! How Google's answers are read: Google's own `error.status` wins over the
//! HTTP status code.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use idem::executor::{Classifier, Effect, Verdict, parse_retry_after};

use crate::error::GbpApiError;

/// The classifier of Google Business Profile answers.
///
/// | answer | verdict |
/// | --- | --- |
/// | 2xx | success |
/// | `RESOURCE_EXHAUSTED` / 429 | transient, **not processed** (quota is checked before the request runs): resent even for local posts, after the `RetryInfo` delay |
/// | `UNAVAILABLE` / 503, `INTERNAL` / 500, `DEADLINE_EXCEEDED` / 504, `ABORTED`, `UNKNOWN`, `CANCELLED`, `DATA_LOSS`, 408, other 5xx | transient, **effect possible**: resent for review replies (an upsert); a local post ends `unknown` |
/// | `UNAUTHENTICATED` / 401 | rejected here; the client refreshes the token once and sends again |
/// | `INVALID_ARGUMENT` / 400, `PERMISSION_DENIED` / 403, `NOT_FOUND` / 404, `FAILED_PRECONDITION`, any other 4xx | rejected (`failed`) |
///
/// With [`absent_is_success`](Self::absent_is_success), a 404 counts as
/// success: deleting a reply that is already gone has the wanted effect.
#[derive(Debug, Clone, Copy, Default)]
pub struct GoogleClassifier {
    absent_is_success: bool,
}

impl GoogleClassifier {
    /// The classifier for writes.
    pub fn new() -> Self {
        Self::default()
    }

    /// The classifier for deletes: 404 `NOT_FOUND` means "already gone".
    pub fn absent_is_success() -> Self {
        Self {
            absent_is_success: true,
        }
    }
}

impl Classifier for GoogleClassifier {
    fn classify(&self, status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> Verdict {
        if status.is_success() {
            return Verdict::Success;
        }
        if self.absent_is_success && status == StatusCode::NOT_FOUND {
            return Verdict::Success;
        }
        let google = GbpApiError::parse(body);
        match google.as_ref().map(|e| e.status.as_str()) {
            Some("RESOURCE_EXHAUSTED") => Verdict::Transient(Effect::None),
            Some(
                "UNAVAILABLE" | "DEADLINE_EXCEEDED" | "INTERNAL" | "UNKNOWN" | "ABORTED"
                | "CANCELLED" | "DATA_LOSS",
            ) => Verdict::Transient(Effect::Possible),
            Some(s) if !s.is_empty() => Verdict::Rejected,
            _ => by_status(status),
        }
    }

    fn retry_after(
        &self,
        _status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
        now: SystemTime,
    ) -> Option<Duration> {
        GbpApiError::parse(body)
            .and_then(|e| e.retry_delay())
            .or_else(|| parse_retry_after(headers, now))
    }
}

fn by_status(status: StatusCode) -> Verdict {
    if status == StatusCode::TOO_MANY_REQUESTS {
        Verdict::Transient(Effect::None)
    } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        Verdict::Transient(Effect::Possible)
    } else {
        Verdict::Rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(code: u16, status: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "error": {"code": code, "message": "m", "status": status}
        }))
        .unwrap()
    }

    #[test]
    fn google_status_wins() {
        let c = GoogleClassifier::new();
        let h = HeaderMap::new();
        let v = |code: u16, status: &str| {
            c.classify(StatusCode::from_u16(code).unwrap(), &h, &body(code, status))
        };
        assert_eq!(
            v(429, "RESOURCE_EXHAUSTED"),
            Verdict::Transient(Effect::None)
        );
        assert_eq!(v(503, "UNAVAILABLE"), Verdict::Transient(Effect::Possible));
        assert_eq!(
            v(504, "DEADLINE_EXCEEDED"),
            Verdict::Transient(Effect::Possible)
        );
        assert_eq!(v(500, "INTERNAL"), Verdict::Transient(Effect::Possible));
        assert_eq!(v(400, "INVALID_ARGUMENT"), Verdict::Rejected);
        assert_eq!(v(401, "UNAUTHENTICATED"), Verdict::Rejected);
        assert_eq!(v(404, "NOT_FOUND"), Verdict::Rejected);
        assert_eq!(c.classify(StatusCode::OK, &h, b"{}"), Verdict::Success);
    }

    #[test]
    fn status_code_fallback() {
        let c = GoogleClassifier::new();
        let h = HeaderMap::new();
        assert_eq!(
            c.classify(StatusCode::TOO_MANY_REQUESTS, &h, b""),
            Verdict::Transient(Effect::None)
        );
        assert_eq!(
            c.classify(StatusCode::BAD_GATEWAY, &h, b"<html>"),
            Verdict::Transient(Effect::Possible)
        );
        assert_eq!(c.classify(StatusCode::CONFLICT, &h, b""), Verdict::Rejected);
    }

    #[test]
    fn delete_treats_absent_as_success() {
        let h = HeaderMap::new();
        assert_eq!(
            GoogleClassifier::absent_is_success().classify(
                StatusCode::NOT_FOUND,
                &h,
                &body(404, "NOT_FOUND")
            ),
            Verdict::Success
        );
    }

    #[test]
    fn retry_info_feeds_retry_after() {
        let c = GoogleClassifier::new();
        let b = serde_json::to_vec(&serde_json::json!({"error": {
            "code": 429, "status": "RESOURCE_EXHAUSTED", "message": "slow down",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}]
        }}))
        .unwrap();
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(
            c.retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                &h,
                &b,
                SystemTime::UNIX_EPOCH
            ),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            c.retry_after(
                StatusCode::TOO_MANY_REQUESTS,
                &h,
                b"",
                SystemTime::UNIX_EPOCH
            ),
            Some(Duration::from_secs(3))
        );
    }
}
