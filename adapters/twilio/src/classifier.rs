//! How Twilio's answers are read: which failures may be sent again.

use http::{HeaderMap, StatusCode};
use idem::executor::{Classifier, Effect, TransportError, TransportKind, Verdict};

use crate::error::TwilioError;

/// The classifier for Twilio message sends (`SafetyClass::LocalOnly`).
///
/// | answer | verdict | resent in the same claim? |
/// | --- | --- | --- |
/// | 2xx | success | — |
/// | 429 (error 20429, or no Twilio code) | transient, no effect | yes, after `Retry-After` |
/// | 429 with another Twilio code | transient, possible effect | no → `unknown` |
/// | other 4xx (21211 invalid `To`, 20003 auth, …) | rejected | no → `failed` |
/// | 5xx, 408 | transient, possible effect | no → `unknown` |
/// | connect failure (refused, DNS, TLS) | transient, no effect | yes |
/// | timeout, reset, broken body after sending | transient, possible effect | no → `unknown` |
///
/// Twilio documents 429 answers as "not processed and safe to retry". A 429
/// carrying some other Twilio code is not covered by that sentence, so it is
/// treated as a possible effect.
#[derive(Debug, Clone, Copy, Default)]
pub struct TwilioClassifier;

impl Classifier for TwilioClassifier {
    fn classify(&self, status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> Verdict {
        if status.is_success() {
            return Verdict::Success;
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let error = TwilioError::from_response(status, body);
            return match error.code {
                None | Some(TwilioError::TOO_MANY_REQUESTS) => Verdict::Transient(Effect::None),
                Some(_) => Verdict::Transient(Effect::Possible),
            };
        }
        if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
            return Verdict::Transient(Effect::Possible);
        }
        Verdict::Rejected
    }

    fn classify_transport(&self, error: &TransportError) -> Verdict {
        match error.kind {
            TransportKind::Connect => Verdict::Transient(Effect::None),
            _ => Verdict::Transient(Effect::Possible),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(status: u16, body: &str) -> Verdict {
        TwilioClassifier.classify(
            StatusCode::from_u16(status).unwrap(),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn statuses() {
        assert_eq!(verdict(201, "{}"), Verdict::Success);
        assert_eq!(
            verdict(
                429,
                r#"{"code":20429,"message":"Too Many Requests","status":429}"#
            ),
            Verdict::Transient(Effect::None)
        );
        assert_eq!(verdict(429, ""), Verdict::Transient(Effect::None));
        assert_eq!(
            verdict(
                429,
                r#"{"code":30001,"message":"Queue overflow","status":429}"#
            ),
            Verdict::Transient(Effect::Possible)
        );
        assert_eq!(
            verdict(400, r#"{"code":21211,"message":"invalid To","status":400}"#),
            Verdict::Rejected
        );
        assert_eq!(verdict(401, ""), Verdict::Rejected);
        assert_eq!(verdict(500, ""), Verdict::Transient(Effect::Possible));
        assert_eq!(verdict(503, ""), Verdict::Transient(Effect::Possible));
    }

    #[test]
    fn transport() {
        let connect = TransportError {
            kind: TransportKind::Connect,
            message: "could not connect".into(),
        };
        let timeout = TransportError {
            kind: TransportKind::Timeout,
            message: "timed out".into(),
        };
        assert_eq!(
            TwilioClassifier.classify_transport(&connect),
            Verdict::Transient(Effect::None)
        );
        assert_eq!(
            TwilioClassifier.classify_transport(&timeout),
            Verdict::Transient(Effect::Possible)
        );
    }
}
