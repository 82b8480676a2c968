//! How Meta's answers are read for retries.
//!
//! Meta's own signal wins over status-code defaults:
//!
//! | answer | verdict | why |
//! | --- | --- | --- |
//! | 2xx | success | |
//! | 4xx with a throttle code (4, 17, 32, 341, 613) | transient, no effect | a throttled request is refused before it is processed |
//! | 4xx with code 9007 (media not ready) | transient, no effect | the container was not published |
//! | code 1 or 2, or `is_transient: true` | transient, effect possible | Meta says "try again", not "nothing happened" |
//! | 5xx | transient, effect possible | |
//! | other 4xx (190 token, 10/200–299 permission, 100 parameter, 368 policy, 506 duplicate) | rejected | resending will not help |
//! | timeout or reset after sending | effect possible | |
//! | connect failure | no effect | |
//!
//! Under [`SafetyClass::LocalOnly`](idem::SafetyClass::LocalOnly) only the
//! "no effect" verdicts are resent; everything with a possible effect ends
//! `unknown`.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};
use idem::executor::{Classifier, Effect, Verdict, default_status_verdict, parse_retry_after};

use crate::error::MetaError;
use crate::usage::Usage;

/// The Meta Graph API classifier.
#[derive(Debug, Clone, Copy, Default)]
pub struct MetaClassifier;

impl Classifier for MetaClassifier {
    fn classify(&self, status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> Verdict {
        if status.is_success() {
            return Verdict::Success;
        }
        let Some(error) = MetaError::from_body(body) else {
            return default_status_verdict(status);
        };
        if status.is_client_error() && error.is_retryable() {
            return Verdict::Transient(Effect::None);
        }
        if error.code == 1 || error.code == 2 || error.is_transient() || status.is_server_error() {
            return Verdict::Transient(Effect::Possible);
        }
        Verdict::Rejected
    }

    /// `estimated_time_to_regain_access` (minutes) from
    /// `X-Business-Use-Case-Usage` when above zero, else `Retry-After`.
    fn retry_after(
        &self,
        _status: StatusCode,
        headers: &HeaderMap,
        _body: &[u8],
        now: SystemTime,
    ) -> Option<Duration> {
        Usage::from_headers(headers)
            .and_then(|u| u.regain_access_after())
            .or_else(|| parse_retry_after(headers, now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(status: u16, body: &str) -> Verdict {
        MetaClassifier.classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn meta_signal_wins() {
        assert_eq!(verdict(200, r#"{"id":"1_2"}"#), Verdict::Success);
        assert_eq!(
            verdict(
                400,
                r#"{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","code":4,"is_transient":true}}"#
            ),
            Verdict::Transient(Effect::None)
        );
        assert_eq!(
            verdict(
                403,
                r#"{"error":{"message":"(#32) Page request limit reached","code":32}}"#
            ),
            Verdict::Transient(Effect::None)
        );
        assert_eq!(
            verdict(
                400,
                r#"{"error":{"message":"Error validating access token","type":"OAuthException","code":190,"error_subcode":463}}"#
            ),
            Verdict::Rejected
        );
        assert_eq!(
            verdict(
                500,
                r#"{"error":{"message":"An unknown error has occurred.","code":1,"is_transient":true}}"#
            ),
            Verdict::Transient(Effect::Possible)
        );
        assert_eq!(
            verdict(
                400,
                r#"{"error":{"message":"Service temporarily unavailable","code":2,"is_transient":true}}"#
            ),
            Verdict::Transient(Effect::Possible)
        );
        assert_eq!(
            verdict(
                400,
                r#"{"error":{"message":"Duplicate status message","code":506}}"#
            ),
            Verdict::Rejected
        );
        // A throttle code on a 5xx is not trusted as "not processed".
        assert_eq!(
            verdict(503, r#"{"error":{"message":"limit","code":4}}"#),
            Verdict::Transient(Effect::Possible)
        );
        assert_eq!(
            verdict(502, "<html>bad gateway</html>"),
            Verdict::Transient(Effect::Possible)
        );
    }

    #[test]
    fn retry_after_reads_regain_access_minutes() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-business-use-case-usage",
            r#"{"1":[{"type":"pages","call_count":100,"total_cputime":3,"total_time":3,"estimated_time_to_regain_access":2}]}"#
                .parse()
                .unwrap(),
        );
        let wait =
            MetaClassifier.retry_after(StatusCode::BAD_REQUEST, &h, b"", SystemTime::UNIX_EPOCH);
        assert_eq!(wait, Some(Duration::from_secs(120)));
        let mut h = HeaderMap::new();
        h.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            MetaClassifier.retry_after(StatusCode::BAD_REQUEST, &h, b"", SystemTime::UNIX_EPOCH),
            Some(Duration::from_secs(7))
        );
    }
}
