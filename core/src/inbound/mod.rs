//! Inbound idempotency: a client that retries or double-clicks a `POST` gets
//! the first answer back, and the handler's side effect happens once.
//!
//! Two ways in:
//!
//! - [`with_idempotency`]: a plain async function over [`http`] types, for
//!   any framework;
//! - [`IdempotencyLayer`]: a tower `Layer` for axum (or any tower stack),
//!   configured per route.
//!
//! | request | answer |
//! | --- | --- |
//! | a method the endpoint does not protect (only `POST` by default) | passed to the handler unprotected |
//! | no [`Actor`] (unless the endpoint opts into a shared anonymous scope) | 401 problem+json; the handler does not run |
//! | no `Idempotency-Key` where one is required | 400 problem+json |
//! | malformed key (empty, over 255, not visible ASCII) | 400 problem+json |
//! | first request | the handler runs once; its answer is stored (see [`StoredOutcomes`]) |
//! | same key and fingerprint, completed | the stored answer, with `Idempotent-Replayed: true` |
//! | the handler's route rejected the request before the handler ran (404, 405, 415, or marked [`Rejection`]) | that answer, not stored: a corrected retry with the same key runs |
//! | same key, different fingerprint | 409 (or 422, see [`MismatchStatus`]) problem+json |
//! | same key, still running | 409 with `Retry-After`, or a bounded wait (see [`InFlightPolicy`]) |
//! | key past its replay window | a new request |
//! | store unavailable | 503 problem+json; the handler does not run |
//!
//! Records are scoped per (actor, endpoint, key): the [`Actor`] comes from
//! a request extension or the layer's extractor, so one tenant's key never
//! reaches another tenant's answer. A request without an actor is refused
//! (fail closed), so a bug in an app's extractor cannot put two callers in
//! one scope; an endpoint that really serves anonymous callers says so with
//! [`EndpointConfigBuilder::shared_anonymous_scope`]. Every protected answer
//! carries the key back in `Idempotency-Key` and the end of its replay
//! window in `Idempotency-Key-Expires`. The decisions behind what is stored
//! are in `adr/0004-inbound-response-storage.md`.
//!
//! **The fingerprint.** Two requests with one key are "the same request"
//! when their method, path with query, `Content-Type`, `Content-Encoding`,
//! any configured extra headers and body are equal **byte for byte**. The
//! same JSON with its keys reordered, other spacing or a trailing newline is
//! a different request (409). Endpoints whose clients re-serialise a body on
//! retry can compare bodies in their RFC 8785 canonical form instead, with
//! [`BodyFingerprint::CanonicalJson`].
//!
//! **The lease.** While the handler runs, its lease is renewed every
//! [`EndpointConfigBuilder::heartbeat`] (default a third of the lease,
//! default lease 10 s). A process killed mid-request stops renewing, so its
//! key is free again within one lease; a long handler keeps its key for as
//! long as it runs. A concurrent duplicate's `Retry-After` is the lease time
//! left, in whole seconds rounded up.
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use idem::inbound::{EndpointConfig, IdempotencyLayer};
//! use idem::ledger::SqliteStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open("app.db").await?;
//! let orders = EndpointConfig::builder("create-order").build()?;
//! let layer = IdempotencyLayer::new(store, orders).actor_from(|parts| {
//!     parts.headers.get("x-user-id")?.to_str().ok().map(idem::inbound::Actor::new)
//! });
//! // `route_layer`: a 404 or 405 from routing never reaches the layer.
//! let app: Router = Router::new().route("/orders", post(|| async { "created" }).route_layer(layer));
//! # let _ = app; Ok(()) }
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};

use crate::clock::{Clock, SystemClock};
use crate::fingerprint::Fingerprint;

mod error;
mod header;
mod layer;
pub mod openapi;
mod problem;
mod store;
mod sweeper;

pub use error::{ConfigError, KeyHeaderError};
pub use header::{
    ClientKey, IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_EXPIRES, IDEMPOTENT_REPLAYED, MAX_CLIENT_KEY_LEN,
    prefer_wait,
};
pub use layer::{IdempotencyLayer, IdempotencyService};
pub use problem::{PROBLEM_JSON, Problem, ProblemKind};
pub use store::{
    Begin, BeginRequest, InboundLease, InboundRecord, InboundStore, RecordState, Scope,
    StoredResponse, SweepRun, TxInboundStore,
};
pub use sweeper::{DEFAULT_RETENTION, SweepReport, Sweeper, SweeperHandle};

/// A boxed error, as carried by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the wrapper returns.
pub type InboundBody = UnsyncBoxBody<Bytes, BoxError>;

pub(crate) fn full_body(bytes: Bytes) -> InboundBody {
    Full::new(bytes)
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn box_body<B>(body: B) -> InboundBody
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}

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
/// does), or give the [`IdempotencyLayer`] an extractor. A protected request
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
    fn status(self) -> StatusCode {
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
    name: String,
    ttl: Duration,
    lease: Duration,
    missing_key: MissingKey,
    mismatch: MismatchStatus,
    in_flight: InFlightPolicy,
    outcomes: StoredOutcomes,
    fingerprint_headers: Vec<HeaderName>,
    replay_headers: Vec<HeaderName>,
    max_request_body: usize,
    max_response_body: usize,
    clock: Arc<dyn Clock>,
    heartbeat: Option<Duration>,
    methods: Vec<Method>,
    anonymous: bool,
    store_rejections: bool,
    body_fingerprint: BodyFingerprint,
    challenge: Option<HeaderValue>,
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

/// How a request ended, as reported in metrics and the per-request event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// The handler ran and its answer was stored.
    Executed,
    /// The handler ran; its answer was not stored (by policy or because the
    /// store failed afterwards), or the record was released.
    ExecutedNotStored,
    /// A stored answer was replayed.
    Replayed,
    /// The key was reused for a different request.
    Mismatch,
    /// The first request with the key is still running.
    InFlight,
    /// The stored answer cannot be replayed.
    NotReplayable,
    /// The request was refused (bad or missing key, no actor, body too
    /// large).
    Refused,
    /// The store was unavailable.
    StoreUnavailable,
    /// The request was not protected (safe method, or optional key absent).
    PassedThrough,
    /// The handler panicked or failed, or its route rejected the request
    /// before it ran; the record was released.
    Released,
}

impl Outcome {
    /// The label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Executed => "executed",
            Self::ExecutedNotStored => "executed_not_stored",
            Self::Replayed => "replayed",
            Self::Mismatch => "mismatch",
            Self::InFlight => "in_flight",
            Self::NotReplayable => "not_replayable",
            Self::Refused => "refused",
            Self::StoreUnavailable => "store_unavailable",
            Self::PassedThrough => "passed_through",
            Self::Released => "released",
        }
    }
}

/// The inbound metric names, kept here under their old path; they live in
/// [`crate::metrics::inbound`] with every other name.
pub use crate::metrics::inbound as metric;

fn report(
    config: &EndpointConfig,
    key: Option<&ClientKey>,
    outcome: Outcome,
    status: StatusCode,
    started: Instant,
) {
    let elapsed = started.elapsed();
    let endpoint = config.name.clone();
    metrics::counter!(metric::REQUEST_COUNT, "endpoint" => endpoint.clone(), "outcome" => outcome.as_str())
        .increment(1);
    metrics::histogram!(metric::REQUEST_DURATION, "endpoint" => endpoint.clone(), "outcome" => outcome.as_str())
        .record(elapsed.as_secs_f64());
    match outcome {
        Outcome::Replayed => {
            metrics::counter!(metric::REPLAY_COUNT, "endpoint" => endpoint).increment(1);
        }
        Outcome::Mismatch | Outcome::InFlight | Outcome::NotReplayable => {
            metrics::counter!(metric::CONFLICT_COUNT, "endpoint" => endpoint, "reason" => outcome.as_str())
                .increment(1);
        }
        _ => {}
    }
    // Never the body, never other headers: the key is a client token.
    tracing::info!(
        target: "idem::inbound",
        endpoint = %config.name,
        key = key.map(ClientKey::as_str),
        outcome = outcome.as_str(),
        status = status.as_u16(),
        duration_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "idempotent request"
    );
}

struct InFlightGauge(String);

impl InFlightGauge {
    fn start(endpoint: &str) -> Self {
        metrics::gauge!(metric::INFLIGHT_GAUGE, "endpoint" => endpoint.to_owned()).increment(1.0);
        Self(endpoint.to_owned())
    }
}

impl Drop for InFlightGauge {
    fn drop(&mut self) {
        metrics::gauge!(metric::INFLIGHT_GAUGE, "endpoint" => self.0.clone()).decrement(1.0);
    }
}

/// What the wrapper does with a request, decided from its head alone.
pub(crate) enum Plan {
    /// Run the handler unprotected; echo the key if one was sent.
    PassThrough(Option<ClientKey>),
    /// Answer without running the handler.
    Refuse(Response<InboundBody>),
    /// Protect the request with this key.
    Protect(ClientKey),
}

pub(crate) fn plan(config: &EndpointConfig, parts: &Parts) -> Plan {
    let key = ClientKey::from_headers(&parts.headers);
    let safe = !config.methods.contains(&parts.method);
    let no_actor = parts
        .extensions
        .get::<Actor>()
        .is_none_or(|a| a.0.is_empty());
    if !safe && !config.anonymous && no_actor {
        let mut r = Problem::new(ProblemKind::ActorMissing).into_response();
        if let Some(challenge) = &config.challenge {
            r.headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
        }
        return Plan::Refuse(r);
    }
    match key {
        Err(e) => Plan::Refuse(
            Problem::new(ProblemKind::KeyMalformed {
                reason: e.to_string(),
            })
            .into_response(),
        ),
        Ok(key) if safe => Plan::PassThrough(key),
        Ok(Some(key)) => Plan::Protect(key),
        Ok(None) => match config.missing_key {
            MissingKey::Required => {
                Plan::Refuse(Problem::new(ProblemKind::KeyMissing).into_response())
            }
            MissingKey::Optional => Plan::PassThrough(None),
            MissingKey::Generate => Plan::Protect(ClientKey::generate()),
        },
    }
}

fn echo_key(headers: &mut HeaderMap, key: &ClientKey, expires: Option<SystemTime>) {
    headers.insert(&IDEMPOTENCY_KEY, key.to_header_value());
    if let Some(at) = expires {
        headers.insert(&IDEMPOTENCY_KEY_EXPIRES, problem::http_date(at));
    }
}

/// Runs `handler` for `request` at most once per (actor, endpoint, key)
/// within the endpoint's replay window, and replays its stored answer to
/// every retry.
///
/// The request body is read into memory (up to the endpoint's cap) to
/// fingerprint it, and handed to `handler` as [`Bytes`]. Unprotected
/// requests (safe methods, or an optional key that is absent) are read the
/// same way and passed through.
///
/// The function never fails: every refusal is a problem+json answer, and a
/// store outage is a 503 without running the handler. A handler panic
/// releases the record and resumes unwinding.
///
/// ```no_run
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use idem::inbound::{EndpointConfig, with_idempotency};
/// use idem::ledger::SqliteStore;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::open("app.db").await?;
/// let config = EndpointConfig::builder("create-order").build()?;
/// let request = Request::post("/orders")
///     .header("idempotency-key", "order-7f3a")
///     .body(Full::new(Bytes::from_static(b"{\"sku\":\"bike\"}")))?;
/// let response = with_idempotency(&store, &config, request, |req: Request<Bytes>| async move {
///     // create the order once
///     Response::builder().status(201).body(Full::new(req.into_body())).unwrap()
/// })
/// .await;
/// assert_eq!(response.headers()["idempotency-key"], "order-7f3a");
/// # Ok(()) }
/// ```
pub async fn with_idempotency<S, B, F, Fut, RB>(
    store: &S,
    config: &EndpointConfig,
    request: Request<B>,
    handler: F,
) -> Response<InboundBody>
where
    S: InboundStore + ?Sized,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(Request<Bytes>) -> Fut,
    Fut: Future<Output = Response<RB>>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let outcome = match plan(config, &parts) {
        Plan::Refuse(r) => {
            report(config, None, Outcome::Refused, r.status(), started);
            return r;
        }
        Plan::PassThrough(key) => {
            let bytes = match read_body(config, body, key.as_ref()).await {
                Ok(b) => b,
                Err(r) => return finish_refused(config, key.as_ref(), r, started),
            };
            let mut r = handler(Request::from_parts(parts, bytes))
                .await
                .map(box_body);
            if let Some(k) = &key {
                echo_key(r.headers_mut(), k, None);
            }
            report(
                config,
                key.as_ref(),
                Outcome::PassedThrough,
                r.status(),
                started,
            );
            return r;
        }
        Plan::Protect(key) => {
            protect(store, config, parts, body, key, started, |req| async move {
                Ok::<_, Infallible>(handler(req).await)
            })
            .await
        }
    };
    match outcome {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

fn finish_refused(
    config: &EndpointConfig,
    key: Option<&ClientKey>,
    r: Response<InboundBody>,
    started: Instant,
) -> Response<InboundBody> {
    report(config, key, Outcome::Refused, r.status(), started);
    r
}

// The error is the HTTP answer itself, built once per request.
#[allow(clippy::result_large_err)]
async fn read_body<B>(
    config: &EndpointConfig,
    body: B,
    key: Option<&ClientKey>,
) -> Result<Bytes, Response<InboundBody>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, config.max_request_body).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            let kind = if e.is::<LengthLimitError>() {
                ProblemKind::BodyTooLarge {
                    limit: config.max_request_body,
                }
            } else {
                ProblemKind::BodyUnreadable
            };
            let mut p = Problem::new(kind);
            if let Some(k) = key {
                p = p.key(k);
            }
            Err(p.into_response())
        }
    }
}

fn fingerprint(config: &EndpointConfig, parts: &Parts, body: &[u8]) -> Fingerprint {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let mut fp = Fingerprint::builder()
        .method(parts.method.as_str())
        .target(target);
    for name in &config.fingerprint_headers {
        for value in parts.headers.get_all(name) {
            fp = fp.header(name.as_str(), value.as_bytes());
        }
    }
    match config.body_fingerprint {
        BodyFingerprint::Raw => fp.body(body).finish(),
        BodyFingerprint::CanonicalJson => match canonical_json(body) {
            Some(canonical) => fp.body(&canonical).finish(),
            None => fp.body(body).finish(),
        },
    }
}

/// The RFC 8785 form of a JSON body, or `None` when it is not JSON.
fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    serde_jcs::to_vec(&value).ok()
}

/// Same request, as far as fingerprints of one algorithm version can tell.
/// Fingerprints of different versions cannot be compared and are treated as
/// the same request, so an upgrade does not turn honest retries into 409s.
fn same_request(stored: &Fingerprint, now: &Fingerprint) -> bool {
    stored == now || stored.version() != now.version()
}

/// The lease time left, rounded up to whole seconds, at least 1: with the
/// heartbeat, at most the lease, and the key is free by then if its holder
/// died.
///
/// `now` was read before the record, so a heartbeat that renewed the lease in
/// between can make the time left look longer than the lease: it is clamped
/// to `lease`.
fn retry_after(record: &InboundRecord, now: SystemTime, lease: Duration) -> Duration {
    let left = record
        .lease_expires_at
        .and_then(|t| t.duration_since(now).ok())
        .unwrap_or_default()
        .min(lease);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

fn replay(stored: &StoredResponse, key: &ClientKey, expires: SystemTime) -> Response<InboundBody> {
    let mut r = Response::new(full_body(stored.body.clone()));
    *r.status_mut() = stored.status;
    *r.headers_mut() = stored.headers.clone();
    r.headers_mut()
        .insert(&IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    echo_key(r.headers_mut(), key, Some(expires));
    r
}

fn pick_headers(config: &EndpointConfig, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &config.replay_headers {
        for value in headers.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// A request that won its record and may run the handler.
pub(crate) struct Admitted {
    lease: InboundLease,
    request: Request<Bytes>,
}

/// Reads the body, fingerprints the request and settles it against the
/// store: either an answer now, or the lease to run the handler.
// The error is the HTTP answer itself, built once per request.
#[allow(clippy::result_large_err)]
async fn admit<S, B>(
    store: &S,
    config: &EndpointConfig,
    parts: Parts,
    body: B,
    key: &ClientKey,
    started: Instant,
) -> Result<Admitted, Response<InboundBody>>
where
    S: InboundStore + ?Sized,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let bytes = match read_body(config, body, Some(key)).await {
        Ok(b) => b,
        Err(r) => return Err(finish_refused(config, Some(key), r, started)),
    };
    let fp = fingerprint(config, &parts, &bytes);
    // `plan` refused actorless requests unless the endpoint opted into the
    // shared anonymous scope, which is the empty actor.
    let scope = Scope {
        actor: parts
            .extensions
            .get::<Actor>()
            .map(|a| a.0.clone())
            .unwrap_or_default(),
        endpoint: config.name.clone(),
        key: key.clone(),
    };
    let wait = match config.in_flight {
        InFlightPolicy::Reject => Duration::ZERO,
        InFlightPolicy::Wait(bound) => prefer_wait(&parts.headers).unwrap_or(bound).min(bound),
    };
    let deadline = Instant::now() + wait;
    let begin = BeginRequest {
        scope: &scope,
        fingerprint: &fp,
        ttl: config.ttl,
        lease_for: config.lease,
    };
    loop {
        let now = config.clock.now();
        let answer = |r: Response<InboundBody>, outcome| {
            report(config, Some(key), outcome, r.status(), started);
            Err(r)
        };
        let record = match store.begin(&begin, now).await {
            Err(e) => {
                tracing::error!(target: "idem::inbound", endpoint = %config.name, error = %e, "idempotency store unavailable; refusing to run unprotected");
                let r = Problem::new(ProblemKind::StoreUnavailable)
                    .key(key)
                    .into_response();
                return answer(r, Outcome::StoreUnavailable);
            }
            Ok(Begin::Started(lease)) => {
                return Ok(Admitted {
                    lease,
                    request: Request::from_parts(parts, bytes),
                });
            }
            Ok(Begin::Existing(record)) => record,
        };
        // The fingerprint is checked first on every path, the lost race
        // included.
        if !same_request(&record.fingerprint, &fp) {
            let r = Problem::new(ProblemKind::KeyReused {
                status: config.mismatch.status(),
            })
            .key(key)
            .expires(record.replay_until)
            .into_response();
            return answer(r, Outcome::Mismatch);
        }
        match (&record.state, &record.response) {
            (RecordState::Completed, Some(stored)) if stored.replayable => {
                return answer(replay(stored, key, record.replay_until), Outcome::Replayed);
            }
            (RecordState::Completed, Some(stored)) => {
                let r = Problem::new(ProblemKind::NotReplayable {
                    original_status: stored.status,
                })
                .key(key)
                .expires(record.replay_until)
                .into_response();
                return answer(r, Outcome::NotReplayable);
            }
            _ => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let r = Problem::new(ProblemKind::InFlight {
                retry_after: retry_after(&record, now, config.lease),
            })
            .key(key)
            .expires(record.replay_until)
            .into_response();
            return answer(r, Outcome::InFlight);
        }
        // Woken by the first request's completion; the timeout caps a lost
        // notification.
        store
            .wait_for_change(&scope, left.min(Duration::from_secs(1)))
            .await;
    }
}

/// The protected path shared by [`with_idempotency`] and the layer.
pub(crate) async fn protect<S, B, F, Fut, RB, E>(
    store: &S,
    config: &EndpointConfig,
    parts: Parts,
    body: B,
    key: ClientKey,
    started: Instant,
    handler: F,
) -> Result<Response<InboundBody>, E>
where
    S: InboundStore + ?Sized,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(Request<Bytes>) -> Fut,
    Fut: Future<Output = Result<Response<RB>, E>>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let Admitted { lease, request } = match admit(store, config, parts, body, &key, started).await {
        Ok(a) => a,
        Err(r) => return Ok(r),
    };
    let gauge = InFlightGauge::start(&config.name);
    let result = with_heartbeat(
        store,
        config,
        &lease,
        AssertUnwindSafe(handler(request)).catch_unwind(),
    )
    .await;
    let response = match result {
        Err(panic) => {
            drop(gauge);
            release(store, config, &lease).await;
            report(
                config,
                Some(&key),
                Outcome::Released,
                StatusCode::INTERNAL_SERVER_ERROR,
                started,
            );
            std::panic::resume_unwind(panic);
        }
        Ok(Err(e)) => {
            drop(gauge);
            release(store, config, &lease).await;
            report(
                config,
                Some(&key),
                Outcome::Released,
                StatusCode::INTERNAL_SERVER_ERROR,
                started,
            );
            return Err(e);
        }
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    let rejected = !config.store_rejections && is_rejection(&response);
    if rejected || !config.outcomes.stores(status) {
        drop(gauge);
        release(store, config, &lease).await;
        let mut r = response.map(box_body);
        echo_key(r.headers_mut(), &key, None);
        let outcome = if rejected {
            Outcome::Released
        } else {
            Outcome::ExecutedNotStored
        };
        report(config, Some(&key), outcome, status, started);
        return Ok(r);
    }
    let (mut head, body) = response.into_parts();
    let headers = pick_headers(config, &head.headers);
    let cap = config.max_response_body;
    let fits = body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= u64::try_from(cap).unwrap_or(u64::MAX));
    let (stored, out_body) = if fits {
        match Limited::new(body, cap).collect().await {
            Ok(c) => {
                let bytes = c.to_bytes();
                let stored = StoredResponse {
                    status,
                    headers,
                    body: bytes.clone(),
                    replayable: true,
                };
                (stored, full_body(bytes))
            }
            Err(e) => {
                // The handler's body failed while being read: there is no
                // answer to store or to send.
                drop(gauge);
                tracing::error!(target: "idem::inbound", endpoint = %config.name, error = %e, "handler response body failed");
                release(store, config, &lease).await;
                let mut r = Response::new(full_body(Bytes::new()));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                echo_key(r.headers_mut(), &key, None);
                report(config, Some(&key), Outcome::Released, r.status(), started);
                return Ok(r);
            }
        }
    } else {
        // Too large or streamed: the client gets it once; retries are told
        // it cannot be replayed instead of getting a truncated copy.
        let stored = StoredResponse {
            status,
            headers,
            body: Bytes::new(),
            replayable: false,
        };
        (stored, box_body(body))
    };
    let outcome = match store.complete(&lease, &stored, config.clock.now()).await {
        Ok(true) => Outcome::Executed,
        Ok(false) => {
            tracing::warn!(target: "idem::inbound", endpoint = %config.name, key = key.as_str(), "lease lost before completion; another request took this key over, answer not stored");
            Outcome::ExecutedNotStored
        }
        Err(e) => {
            tracing::error!(target: "idem::inbound", endpoint = %config.name, key = key.as_str(), error = %e, "could not store the answer; a retry after the lease may run the handler again");
            Outcome::ExecutedNotStored
        }
    };
    drop(gauge);
    echo_key(&mut head.headers, &key, Some(lease.replay_until));
    let r = Response::from_parts(head, out_body);
    report(config, Some(&key), outcome, status, started);
    Ok(r)
}

/// Runs `work` while renewing `lease` every heartbeat, so the record stays
/// claimed for as long as the handler runs, and no longer than one lease
/// after the process dies.
async fn with_heartbeat<S, T>(
    store: &S,
    config: &EndpointConfig,
    lease: &InboundLease,
    work: impl Future<Output = T>,
) -> T
where
    S: InboundStore + ?Sized,
{
    let beat = async {
        let every = config.heartbeat();
        loop {
            tokio::time::sleep(every).await;
            match store.renew(lease, config.lease, config.clock.now()).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(target: "idem::inbound", endpoint = %config.name, key = lease.scope.key.as_str(), "lease lost while the handler runs; its answer will not be stored");
                    return std::future::pending::<Infallible>().await;
                }
                Err(e) => {
                    tracing::warn!(target: "idem::inbound", endpoint = %config.name, error = %e, "could not renew the lease; trying again at the next heartbeat");
                }
            }
        }
    };
    let work = std::pin::pin!(work);
    let beat = std::pin::pin!(beat);
    match futures::future::select(work, beat).await {
        futures::future::Either::Left((done, _)) => done,
        futures::future::Either::Right((never, _)) => match never {},
    }
}

async fn release<S: InboundStore + ?Sized>(
    store: &S,
    config: &EndpointConfig,
    lease: &InboundLease,
) {
    if let Err(e) = store.release(lease).await {
        tracing::error!(target: "idem::inbound", endpoint = %config.name, error = %e, "could not release the record; a retry waits for the lease to expire");
    }
}

/// The handler type of [`with_idempotency_tx`]: it gets the store's open
/// transaction and the request.
pub type TxHandler<Db> = Box<
    dyn for<'t> FnOnce(
            &'t mut sqlx::Transaction<'static, Db>,
            Request<Bytes>,
        ) -> BoxFuture<'t, Response<Bytes>>
        + Send,
>;

/// As [`with_idempotency`], but the handler runs inside a transaction of
/// the store's own database, and its answer is stored in that same
/// transaction: the handler's writes and the stored answer commit together,
/// or neither does.
///
/// When the answer is not stored (see [`StoredOutcomes`]) the transaction
/// is rolled back and the record released. If the commit fails, the client
/// gets 503 and nothing the handler wrote remains.
///
/// ```no_run
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::Full;
/// use idem::inbound::{EndpointConfig, with_idempotency_tx};
/// use idem::ledger::SqliteStore;
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::open("app.db").await?;
/// let config = EndpointConfig::builder("create-order").build()?;
/// let request = Request::post("/orders")
///     .header("idempotency-key", "order-7f3a")
///     .body(Full::new(Bytes::from_static(b"bike")))?;
/// let response = with_idempotency_tx(&store, &config, request, Box::new(|tx, req| {
///     Box::pin(async move {
///         sqlx::query("INSERT INTO orders (sku) VALUES ($1)")
///             .bind(req.body().to_vec())
///             .execute(&mut **tx)
///             .await
///             .unwrap();
///         Response::builder().status(201).body(Bytes::from_static(b"created")).unwrap()
///     })
/// }))
/// .await;
/// # let _ = response; Ok(()) }
/// ```
pub async fn with_idempotency_tx<S, B>(
    store: &S,
    config: &EndpointConfig,
    request: Request<B>,
    handler: TxHandler<S::Db>,
) -> Response<InboundBody>
where
    S: TxInboundStore,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let key = match plan(config, &parts) {
        Plan::Refuse(r) => return finish_refused(config, None, r, started),
        Plan::PassThrough(key) => {
            // Unprotected, but still in one transaction.
            let bytes = match read_body(config, body, key.as_ref()).await {
                Ok(b) => b,
                Err(r) => return finish_refused(config, key.as_ref(), r, started),
            };
            let Ok(mut tx) = store.begin_tx().await else {
                let r = Problem::new(ProblemKind::StoreUnavailable).into_response();
                report(
                    config,
                    key.as_ref(),
                    Outcome::StoreUnavailable,
                    r.status(),
                    started,
                );
                return r;
            };
            let r = handler(&mut tx, Request::from_parts(parts, bytes)).await;
            let mut r = if r.status().is_server_error() {
                let _ = tx.rollback().await;
                r.map(full_body)
            } else if let Err(e) = tx.commit().await {
                tracing::error!(target: "idem::inbound", endpoint = %config.name, error = %e, "commit failed; handler writes rolled back");
                Problem::new(ProblemKind::StoreUnavailable).into_response()
            } else {
                r.map(full_body)
            };
            if let Some(k) = &key {
                echo_key(r.headers_mut(), k, None);
            }
            report(
                config,
                key.as_ref(),
                Outcome::PassedThrough,
                r.status(),
                started,
            );
            return r;
        }
        Plan::Protect(key) => key,
    };
    let Admitted { lease, request } = match admit(store, config, parts, body, &key, started).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let unavailable = |started| {
        let r = Problem::new(ProblemKind::StoreUnavailable)
            .key(&key)
            .into_response();
        report(
            config,
            Some(&key),
            Outcome::StoreUnavailable,
            r.status(),
            started,
        );
        r
    };
    let mut tx = match store.begin_tx().await {
        Ok(tx) => tx,
        Err(_) => {
            release(store, config, &lease).await;
            return unavailable(started);
        }
    };
    let gauge = InFlightGauge::start(&config.name);
    let result = with_heartbeat(
        store,
        config,
        &lease,
        AssertUnwindSafe(handler(&mut tx, request)).catch_unwind(),
    )
    .await;
    drop(gauge);
    let response = match result {
        Ok(r) => r,
        Err(panic) => {
            drop(tx);
            release(store, config, &lease).await;
            report(
                config,
                Some(&key),
                Outcome::Released,
                StatusCode::INTERNAL_SERVER_ERROR,
                started,
            );
            std::panic::resume_unwind(panic);
        }
    };
    let status = response.status();
    if (!config.store_rejections && is_rejection(&response)) || !config.outcomes.stores(status) {
        let _ = tx.rollback().await;
        release(store, config, &lease).await;
        let mut r = response.map(full_body);
        echo_key(r.headers_mut(), &key, None);
        report(
            config,
            Some(&key),
            Outcome::ExecutedNotStored,
            status,
            started,
        );
        return r;
    }
    let (mut head, bytes) = response.into_parts();
    let replayable = bytes.len() <= config.max_response_body;
    let stored = StoredResponse {
        status,
        headers: pick_headers(config, &head.headers),
        body: if replayable {
            bytes.clone()
        } else {
            Bytes::new()
        },
        replayable,
    };
    match S::complete_in(&mut tx, &lease, &stored, config.clock.now()).await {
        Ok(true) => {}
        Ok(false) => {
            // Another request took the record over: roll back this one's
            // writes and send the client back to read that one's answer.
            let _ = tx.rollback().await;
            let r = Problem::new(ProblemKind::InFlight {
                retry_after: Duration::from_secs(1),
            })
            .key(&key)
            .into_response();
            report(config, Some(&key), Outcome::InFlight, r.status(), started);
            return r;
        }
        Err(_) => {
            let _ = tx.rollback().await;
            release(store, config, &lease).await;
            return unavailable(started);
        }
    }
    if let Err(e) = tx.commit().await {
        tracing::error!(target: "idem::inbound", endpoint = %config.name, error = %e, "commit failed; handler writes rolled back");
        release(store, config, &lease).await;
        return unavailable(started);
    }
    store::local_notifier().notify_waiters();
    echo_key(&mut head.headers, &key, Some(lease.replay_until));
    report(config, Some(&key), Outcome::Executed, status, started);
    Response::from_parts(head, full_body(bytes))
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
