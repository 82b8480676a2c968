//! One endpoint's idempotency settings ([`EndpointConfig`] and its builder) and the policy
//! types they are made of. Checked at build time; the engine only reads them.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Response, StatusCode};

use super::ConfigError;
use crate::clock::{Clock, SystemClock};

/// The shortest replay window an endpoint may configure.
pub const MIN_TTL: Duration = Duration::from_secs(5 * 60);
/// The longest replay window an endpoint may configure.
pub const MAX_TTL: Duration = Duration::from_secs(72 * 3600);
/// The default replay window.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// The default in-flight lease (renewed every third of it while the
/// handler runs).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Who is asking. Records are scoped per actor, so two tenants using the
/// same key never see each other's answers.
///
/// Put it in the request's extensions (an authentication layer usually
/// does), or give the [`IdempotencyLayer`](super::IdempotencyLayer) an extractor. A protected request
/// without an actor is refused with 401 problem+json
/// (`urn:idem:problem:actor-missing`), unless its endpoint was built with
/// [`EndpointConfigBuilder::shared_anonymous_scope`]: then all anonymous
/// callers share one scope, and one caller's key returns another's answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor(String);

impl Actor {
    /// An actor id, for example a user id or an API client id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What to do when a request carries no `Idempotency-Key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MissingKey {
    /// Refuse with 400 problem+json (the default).
    #[default]
    Required,
    /// Run the handler unprotected.
    Optional,
    /// Generate a UUID key, protect the request with it and echo it.
    Generate,
}

/// The status for a key reused with a different request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MismatchStatus {
    /// 409 Conflict (ADR-0015; the default).
    #[default]
    Conflict,
    /// 422 Unprocessable Content (the IETF draft's choice).
    UnprocessableContent,
}

impl MismatchStatus {
    pub(super) fn status(self) -> StatusCode {
        match self {
            Self::Conflict => StatusCode::CONFLICT,
            Self::UnprocessableContent => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

/// What a request gets while the first request with its key still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InFlightPolicy {
    /// 409 with `Retry-After` at once (the default).
    #[default]
    Reject,
    /// Wait up to this long for the first request to finish, then replay its
    /// answer (the double-click case); 409 if it has not finished by then. A
    /// client may ask for less (or up to this bound) with `Prefer: wait=N`.
    Wait(Duration),
}

/// How the request body enters the fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BodyFingerprint {
    /// The raw bytes (the default): any byte of difference, key order and
    /// whitespace included, is a different request.
    #[default]
    Raw,
    /// A body that parses as JSON is fingerprinted in its RFC 8785 (JCS)
    /// canonical form, so key order, insignificant whitespace and number
    /// spelling (`1.0` and `1`) do not matter. Numbers are compared as IEEE
    /// doubles, as JCS does: integers beyond 2^53 that round to the same
    /// double are the same request. A body that is not JSON is taken raw.
    CanonicalJson,
}

/// A marker a handler's route puts in a response's extensions (for
/// example `axum::Extension(Rejection)` in an extractor rejection) to say
/// the request was refused before the handler ran. Such an answer is not
/// stored by default (see
/// [`EndpointConfigBuilder::store_rejections`]): the record is released, and
/// a corrected retry with the same key runs the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rejection;

/// Whether `response` is a rejection made before the handler ran: marked
/// with [`Rejection`], or 404, 405 or 415 (routing, method and media-type
/// refusals; a handler answering those has, by their meaning, not acted on
/// the request).
pub fn is_rejection<B>(response: &Response<B>) -> bool {
    response.extensions().get::<Rejection>().is_some()
        || matches!(response.status().as_u16(), 404 | 405 | 415)
}

/// Which handler answers are stored and replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StoredOutcomes {
    /// 2xx, 3xx and deterministic 4xx are stored; 5xx and the transient 4xx
    /// (408, 423, 425, 429) are not: the record is released so a retry runs
    /// the handler again. The default.
    #[default]
    SuccessAndClientErrors,
    /// Only 2xx and 3xx are stored.
    SuccessOnly,
    /// Every status is stored, 5xx included (Stripe's choice).
    All,
}

impl StoredOutcomes {
    /// Whether an answer with `status` is stored.
    pub fn stores(self, status: StatusCode) -> bool {
        let transient_4xx = matches!(status.as_u16(), 408 | 423 | 425 | 429);
        match self {
            Self::SuccessAndClientErrors => {
                status.is_success()
                    || status.is_redirection()
                    || (status.is_client_error() && !transient_4xx)
            }
            Self::SuccessOnly => status.is_success() || status.is_redirection(),
            Self::All => !status.is_informational(),
        }
    }
}

/// One endpoint's idempotency settings. Built with
/// [`EndpointConfig::builder`]; out-of-range values fail at build time.
#[derive(Clone)]
pub struct EndpointConfig {
    pub(super) name: String,
    pub(super) ttl: Duration,
    pub(super) lease: Duration,
    pub(super) missing_key: MissingKey,
    pub(super) mismatch: MismatchStatus,
    pub(super) in_flight: InFlightPolicy,
    pub(super) outcomes: StoredOutcomes,
    pub(super) fingerprint_headers: Vec<HeaderName>,
    pub(super) replay_headers: Vec<HeaderName>,
    pub(super) max_request_body: usize,
    pub(super) max_response_body: usize,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) heartbeat: Option<Duration>,
    pub(super) methods: Vec<Method>,
    pub(super) anonymous: bool,
    pub(super) store_rejections: bool,
    pub(super) body_fingerprint: BodyFingerprint,
    pub(super) challenge: Option<HeaderValue>,
}

impl fmt::Debug for EndpointConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointConfig")
            .field("name", &self.name)
            .field("ttl", &self.ttl)
            .field("lease", &self.lease)
            .field("missing_key", &self.missing_key)
            .field("mismatch", &self.mismatch)
            .field("in_flight", &self.in_flight)
            .field("outcomes", &self.outcomes)
            .field("fingerprint_headers", &self.fingerprint_headers)
            .field("replay_headers", &self.replay_headers)
            .field("max_request_body", &self.max_request_body)
            .field("max_response_body", &self.max_response_body)
            .field("heartbeat", &self.heartbeat())
            .field("methods", &self.methods)
            .field("anonymous", &self.anonymous)
            .field("store_rejections", &self.store_rejections)
            .field("body_fingerprint", &self.body_fingerprint)
            .finish_non_exhaustive()
    }
}

impl EndpointConfig {
    /// Starts a configuration for the endpoint `name` (for example
    /// `create-order`). The name is part of every record's scope: keep it
    /// stable across deploys.
    pub fn builder(name: impl Into<String>) -> EndpointConfigBuilder {
        EndpointConfigBuilder {
            config: Self {
                name: name.into(),
                ttl: DEFAULT_TTL,
                lease: DEFAULT_LEASE,
                missing_key: MissingKey::default(),
                mismatch: MismatchStatus::default(),
                in_flight: InFlightPolicy::default(),
                outcomes: StoredOutcomes::default(),
                fingerprint_headers: vec![
                    http::header::CONTENT_TYPE,
                    http::header::CONTENT_ENCODING,
                ],
                replay_headers: vec![http::header::CONTENT_TYPE, http::header::LOCATION],
                max_request_body: 1 << 20,
                max_response_body: 1 << 20,
                clock: Arc::new(SystemClock),
                heartbeat: None,
                methods: vec![Method::POST],
                anonymous: false,
                store_rejections: false,
                body_fingerprint: BodyFingerprint::Raw,
                challenge: None,
            },
        }
    }

    /// The endpoint name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The replay window.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The in-flight lease: how long a request's record stays claimed after
    /// its last renewal.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often a running handler's lease is renewed (default a third of
    /// the lease).
    pub fn heartbeat(&self) -> Duration {
        self.heartbeat.unwrap_or(self.lease / 3)
    }

    /// The methods the endpoint protects (default `POST` only).
    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// Whether requests without an actor share one anonymous scope.
    pub fn shares_anonymous_scope(&self) -> bool {
        self.anonymous
    }

    /// Whether rejections made before the handler ran are stored.
    pub fn stores_rejections(&self) -> bool {
        self.store_rejections
    }

    /// How the body enters the fingerprint.
    pub fn body_fingerprint(&self) -> BodyFingerprint {
        self.body_fingerprint
    }

    /// The missing-key policy.
    pub fn missing_key(&self) -> MissingKey {
        self.missing_key
    }

    /// The in-flight policy.
    pub fn in_flight(&self) -> InFlightPolicy {
        self.in_flight
    }

    /// Which answers are stored.
    pub fn stored_outcomes(&self) -> StoredOutcomes {
        self.outcomes
    }

    /// The request body cap in bytes.
    pub fn max_request_body(&self) -> usize {
        self.max_request_body
    }

    /// The stored response body cap in bytes.
    pub fn max_response_body(&self) -> usize {
        self.max_response_body
    }
}

/// Builds an [`EndpointConfig`].
#[derive(Debug, Clone)]
pub struct EndpointConfigBuilder {
    config: EndpointConfig,
}

impl EndpointConfigBuilder {
    /// The replay window: 5 minutes to 72 hours (default 24 hours).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    /// The in-flight lease: 1 second to 1 hour (default 10 seconds). It is
    /// renewed every [`heartbeat`](Self::heartbeat) while the handler runs,
    /// so it bounds how long a crashed request keeps its key, not how long a
    /// handler may run.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// How often the lease of a running handler is renewed: more than zero
    /// and at most half the lease (default a third of it).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.config.heartbeat = Some(every);
        self
    }

    /// The methods to protect (default `POST` only). Requests with any
    /// other method pass through unprotected and never touch a record, so
    /// a wrong method cannot use up a key.
    pub fn methods(mut self, methods: impl IntoIterator<Item = Method>) -> Self {
        self.config.methods = methods.into_iter().collect();
        self
    }

    /// Lets requests without an [`Actor`] in: they all share one anonymous
    /// scope, so any anonymous caller who sends a key gets the answer that
    /// key got for any other anonymous caller. Only for endpoints whose
    /// answers are not secret to anyone. Without it (the default), such a
    /// request is refused with 401.
    pub fn shared_anonymous_scope(mut self) -> Self {
        self.config.anonymous = true;
        self
    }

    /// The `WWW-Authenticate` challenge sent with the 401 for a request
    /// without an actor (for example `Bearer`).
    pub fn www_authenticate(mut self, challenge: HeaderValue) -> Self {
        self.config.challenge = Some(challenge);
        self
    }

    /// Stores rejections made before the handler ran (see
    /// [`is_rejection`]) like any other answer (default: not stored; the
    /// record is released so a corrected retry with the same key runs).
    pub fn store_rejections(mut self, store: bool) -> Self {
        self.config.store_rejections = store;
        self
    }

    /// How the body enters the fingerprint (default
    /// [`BodyFingerprint::Raw`]).
    pub fn body_fingerprint(mut self, mode: BodyFingerprint) -> Self {
        self.config.body_fingerprint = mode;
        self
    }

    /// What to do without a key (default [`MissingKey::Required`]).
    pub fn missing_key(mut self, policy: MissingKey) -> Self {
        self.config.missing_key = policy;
        self
    }

    /// The status for a reused key (default 409).
    pub fn on_mismatch(mut self, status: MismatchStatus) -> Self {
        self.config.mismatch = status;
        self
    }

    /// What a request gets while the first one runs (default 409). A wait
    /// bound may be at most 60 seconds.
    pub fn in_flight(mut self, policy: InFlightPolicy) -> Self {
        self.config.in_flight = policy;
        self
    }

    /// Which answers are stored (default
    /// [`StoredOutcomes::SuccessAndClientErrors`]).
    pub fn stored_outcomes(mut self, outcomes: StoredOutcomes) -> Self {
        self.config.outcomes = outcomes;
        self
    }

    /// Adds a request header to the fingerprint (for example a tenant or
    /// API-version header). Method, path with query, `Content-Type`,
    /// `Content-Encoding` and body are always in it.
    pub fn fingerprint_header(mut self, name: HeaderName) -> Self {
        self.config.fingerprint_headers.push(name);
        self
    }

    /// Adds a response header to store and replay. `Content-Type` and
    /// `Location` are always included.
    pub fn replay_header(mut self, name: HeaderName) -> Self {
        if !self.config.replay_headers.contains(&name) {
            self.config.replay_headers.push(name);
        }
        self
    }

    /// The request body cap (default 1 MiB). A larger request is refused
    /// with 413 rather than run unprotected.
    pub fn max_request_body(mut self, bytes: usize) -> Self {
        self.config.max_request_body = bytes;
        self
    }

    /// The stored response body cap (default 1 MiB). A larger or streamed
    /// answer reaches its client once but is not stored; retries get 409
    /// `response-not-replayable` and the handler does not run again.
    pub fn max_response_body(mut self, bytes: usize) -> Self {
        self.config.max_response_body = bytes;
        self
    }

    /// The clock (default the system clock); tests use a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.config.clock = clock;
        self
    }

    /// The checked configuration.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the name, replay window, lease, wait bound or a
    /// body cap is out of range.
    pub fn build(self) -> Result<EndpointConfig, ConfigError> {
        let c = self.config;
        if c.name.is_empty() || c.name.len() > 200 {
            return Err(ConfigError::EndpointName { len: c.name.len() });
        }
        if !(MIN_TTL..=MAX_TTL).contains(&c.ttl) {
            return Err(ConfigError::TtlOutOfRange { ttl: c.ttl });
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&c.lease) {
            return Err(ConfigError::LeaseOutOfRange { lease: c.lease });
        }
        if let Some(every) = c.heartbeat
            && (every.is_zero() || every > c.lease / 2)
        {
            return Err(ConfigError::HeartbeatOutOfRange {
                heartbeat: every,
                lease: c.lease,
            });
        }
        if let InFlightPolicy::Wait(wait) = c.in_flight
            && wait > Duration::from_secs(60)
        {
            return Err(ConfigError::WaitTooLong { wait });
        }
        if c.max_request_body == 0 || c.max_response_body == 0 {
            return Err(ConfigError::ZeroBodyCap);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds_are_checked_at_build_time() {
        let b = |ttl| EndpointConfig::builder("e").ttl(ttl).build();
        assert!(b(MIN_TTL).is_ok());
        assert!(b(MAX_TTL).is_ok());
        assert_eq!(
            b(MIN_TTL - Duration::from_secs(1)).unwrap_err(),
            ConfigError::TtlOutOfRange {
                ttl: MIN_TTL - Duration::from_secs(1)
            }
        );
        assert!(matches!(
            b(MAX_TTL + Duration::from_secs(1)),
            Err(ConfigError::TtlOutOfRange { .. })
        ));
        assert_eq!(
            EndpointConfig::builder("e").build().unwrap().ttl(),
            DEFAULT_TTL
        );
        assert!(matches!(
            EndpointConfig::builder("").build(),
            Err(ConfigError::EndpointName { len: 0 })
        ));
        assert!(matches!(
            EndpointConfig::builder("e")
                .in_flight(InFlightPolicy::Wait(Duration::from_secs(61)))
                .build(),
            Err(ConfigError::WaitTooLong { .. })
        ));
        assert!(matches!(
            EndpointConfig::builder("e").max_response_body(0).build(),
            Err(ConfigError::ZeroBodyCap)
        ));
        assert!(matches!(
            EndpointConfig::builder("e").lease(Duration::ZERO).build(),
            Err(ConfigError::LeaseOutOfRange { .. })
        ));
    }

    #[test]
    fn default_storage_policy() {
        let p = StoredOutcomes::default();
        for s in [200, 201, 204, 303, 400, 404, 409, 422] {
            assert!(p.stores(StatusCode::from_u16(s).unwrap()), "{s} stored");
        }
        for s in [408, 423, 425, 429, 500, 502, 503] {
            assert!(
                !p.stores(StatusCode::from_u16(s).unwrap()),
                "{s} not stored"
            );
        }
        assert!(StoredOutcomes::All.stores(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(!StoredOutcomes::SuccessOnly.stores(StatusCode::NOT_FOUND));
    }
}
