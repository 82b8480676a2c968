//! `application/problem+json` answers (RFC 9457) for every refusal the
//! wrapper makes itself.
//!
//! Each body names the reason in `type` (a stable URN a client can match
//! on), and, when a record exists, carries the key and when its replay
//! window ends (`idempotency_key_expires`, RFC 3339), as the
//! `Idempotency-Key-Expires` header does.
//!
//! ```
//! use idem::inbound::{Problem, ProblemKind};
//!
//! let response = Problem::new(ProblemKind::KeyMissing).into_response();
//! assert_eq!(response.status(), 400);
//! assert_eq!(response.headers()["content-type"], "application/problem+json");
//! ```

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::header::{ClientKey, IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_EXPIRES};
use super::{InboundBody, full_body};

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Why the wrapper answered instead of the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProblemKind {
    /// The request carries no [`Actor`](super::Actor) and the endpoint does
    /// not share an anonymous scope (401).
    ActorMissing,
    /// The endpoint requires an `Idempotency-Key` and none was sent (400).
    KeyMissing,
    /// The `Idempotency-Key` is malformed (400).
    KeyMalformed {
        /// What is wrong with it.
        reason: String,
    },
    /// The key was already used for a different request at this endpoint
    /// (409 by default, 422 when configured).
    KeyReused {
        /// 409 or 422.
        status: StatusCode,
    },
    /// The first request with this key is still running (409, with
    /// `Retry-After`).
    InFlight {
        /// Suggested wait before retrying.
        retry_after: Duration,
    },
    /// The first request completed, but its answer was too large or streamed
    /// and was not stored (409). The handler is not run again.
    NotReplayable {
        /// The status the first request got.
        original_status: StatusCode,
    },
    /// The request body is over the endpoint's cap, so it cannot be
    /// fingerprinted (413).
    BodyTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// The request body could not be read (400).
    BodyUnreadable,
    /// The idempotency store is unavailable; the handler was not run (503).
    StoreUnavailable,
}

impl ProblemKind {
    /// The HTTP status for this kind.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::KeyMissing | Self::KeyMalformed { .. } | Self::BodyUnreadable => {
                StatusCode::BAD_REQUEST
            }
            Self::ActorMissing => StatusCode::UNAUTHORIZED,
            Self::KeyReused { status } => *status,
            Self::InFlight { .. } | Self::NotReplayable { .. } => StatusCode::CONFLICT,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The stable problem type URI.
    pub fn type_uri(&self) -> &'static str {
        match self {
            Self::ActorMissing => "urn:idem:problem:actor-missing",
            Self::KeyMissing => "urn:idem:problem:idempotency-key-missing",
            Self::KeyMalformed { .. } => "urn:idem:problem:idempotency-key-malformed",
            Self::KeyReused { .. } => "urn:idem:problem:idempotency-key-reused",
            Self::InFlight { .. } => "urn:idem:problem:idempotency-key-in-flight",
            Self::NotReplayable { .. } => "urn:idem:problem:response-not-replayable",
            Self::BodyTooLarge { .. } => "urn:idem:problem:request-body-too-large",
            Self::BodyUnreadable => "urn:idem:problem:request-body-unreadable",
            Self::StoreUnavailable => "urn:idem:problem:idempotency-store-unavailable",
        }
    }

    /// Every kind, with sample values, for documentation and tests.
    pub fn all() -> Vec<Self> {
        vec![
            Self::ActorMissing,
            Self::KeyMissing,
            Self::KeyMalformed {
                reason: "the Idempotency-Key header is empty".to_owned(),
            },
            Self::KeyReused {
                status: StatusCode::CONFLICT,
            },
            Self::KeyReused {
                status: StatusCode::UNPROCESSABLE_ENTITY,
            },
            Self::InFlight {
                retry_after: Duration::from_secs(1),
            },
            Self::NotReplayable {
                original_status: StatusCode::CREATED,
            },
            Self::BodyTooLarge { limit: 1 << 20 },
            Self::BodyUnreadable,
            Self::StoreUnavailable,
        ]
    }

    /// The problem's title.
    pub fn title(&self) -> &'static str {
        match self {
            Self::ActorMissing => "Authentication required",
            Self::KeyMissing => "Idempotency-Key header required",
            Self::KeyMalformed { .. } => "Malformed Idempotency-Key header",
            Self::KeyReused { .. } => "Idempotency-Key reused for a different request",
            Self::InFlight { .. } => "A request with this Idempotency-Key is in progress",
            Self::NotReplayable { .. } => "The stored response cannot be replayed",
            Self::BodyTooLarge { .. } => "Request body too large to protect",
            Self::BodyUnreadable => "Request body could not be read",
            Self::StoreUnavailable => "Idempotency store unavailable",
        }
    }

    fn detail(&self) -> String {
        match self {
            Self::ActorMissing => "This endpoint keeps idempotency records per caller, and \
                 this request does not say who is calling."
                .to_owned(),
            Self::KeyMissing => {
                "This endpoint requires an Idempotency-Key header: 1 to 255 visible ASCII \
                 characters, quoted or bare."
                    .to_owned()
            }
            Self::KeyMalformed { reason } => format!("{reason}."),
            Self::KeyReused { .. } => "This key was first used with a different method, path, \
                 body or fingerprinted header. Use a new key for a new request."
                .to_owned(),
            Self::InFlight { retry_after } => format!(
                "The first request with this key has not finished. Retry with the same key \
                 after {} s.",
                retry_after.as_secs().max(1)
            ),
            Self::NotReplayable { original_status } => format!(
                "The first request with this key completed with status {}, but its response \
                 was too large or streamed and was not stored. It will not run again.",
                original_status.as_u16()
            ),
            Self::BodyTooLarge { limit } => format!(
                "Requests to this endpoint are protected up to {limit} bytes of body; this one \
                 is larger and was not run."
            ),
            Self::BodyUnreadable => "The request body ended with an error.".to_owned(),
            Self::StoreUnavailable => "The request was not run because its idempotency could \
                 not be guaranteed. Retry later with the same key."
                .to_owned(),
        }
    }
}

/// A problem answer under construction.
#[derive(Debug, Clone)]
pub struct Problem {
    kind: ProblemKind,
    key: Option<ClientKey>,
    expires: Option<SystemTime>,
}

impl Problem {
    /// A problem of `kind`.
    pub fn new(kind: ProblemKind) -> Self {
        Self {
            kind,
            key: None,
            expires: None,
        }
    }

    /// Names the key (echoed in the body and the `Idempotency-Key` header).
    pub fn key(mut self, key: &ClientKey) -> Self {
        self.key = Some(key.clone());
        self
    }

    /// When the key's replay window ends.
    pub fn expires(mut self, at: SystemTime) -> Self {
        self.expires = Some(at);
        self
    }

    /// The kind.
    pub fn kind(&self) -> &ProblemKind {
        &self.kind
    }

    /// The finished response.
    pub fn into_response(self) -> Response<InboundBody> {
        let status = self.kind.status();
        let mut body = serde_json::json!({
            "type": self.kind.type_uri(),
            "title": self.kind.title(),
            "status": status.as_u16(),
            "detail": self.kind.detail(),
        });
        if let Some(key) = &self.key {
            body["idempotency_key"] = key.as_str().into();
        }
        if let Some(at) = self.expires {
            body["idempotency_key_expires"] = crate::time::format_rfc3339(at).into();
        }
        if let ProblemKind::InFlight { retry_after } = &self.kind {
            body["retry_after"] = retry_after.as_secs().max(1).into();
        }
        let mut response = Response::new(full_body(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        if let ProblemKind::InFlight { retry_after } = &self.kind {
            headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
        }
        if self.kind == ProblemKind::StoreUnavailable {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(key) = &self.key {
            headers.insert(&IDEMPOTENCY_KEY, key.to_header_value());
        }
        if let Some(at) = self.expires {
            headers.insert(&IDEMPOTENCY_KEY_EXPIRES, http_date(at));
        }
        response
    }
}

/// An HTTP date header value.
pub(crate) fn http_date(at: SystemTime) -> HeaderValue {
    HeaderValue::from_str(&crate::time::format_http_date(at))
        .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn in_flight_problem_has_retry_after_and_expiry() {
        let key = ClientKey::new("k1").unwrap();
        let r = Problem::new(ProblemKind::InFlight {
            retry_after: Duration::from_secs(2),
        })
        .key(&key)
        .expires(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        .into_response();
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
        assert_eq!(r.headers()[&IDEMPOTENCY_KEY], "k1");
        assert_eq!(
            r.headers()[&IDEMPOTENCY_KEY_EXPIRES],
            "Tue, 14 Nov 2023 22:13:20 GMT"
        );
    }
}
