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
use bytes::Bytes;
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

mod config;
mod engine;
mod error;
mod func;
pub(crate) mod header;
mod layer;
mod metrics;
pub mod openapi;
mod problem;
pub(crate) mod store;
mod sweeper;
mod tx;

pub use config::{
    Actor, BodyFingerprint, DEFAULT_LEASE, DEFAULT_TTL, EndpointConfig, EndpointConfigBuilder,
    InFlightPolicy, MAX_TTL, MIN_TTL, MismatchStatus, MissingKey, Rejection, StoredOutcomes,
    is_rejection,
};
pub use error::{ConfigError, KeyHeaderError};
pub use func::with_idempotency;
pub use header::{
    ClientKey, IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_EXPIRES, IDEMPOTENT_REPLAYED, MAX_CLIENT_KEY_LEN,
    prefer_wait,
};
pub use layer::{IdempotencyLayer, IdempotencyService};
pub use metrics::Outcome;
pub use problem::{PROBLEM_JSON, Problem, ProblemKind};
pub use store::{
    Begin, BeginRequest, InboundLease, InboundRecord, InboundStore, RecordState, Scope,
    StoredResponse, SweepRun, TxInboundStore,
};
pub use sweeper::{DEFAULT_RETENTION, SweepReport, Sweeper, SweeperHandle};
pub use tx::{TxHandler, with_idempotency_tx};

/// The inbound metric names, kept here under their old path; they live in
/// [`crate::metrics::inbound`] with every other name.
pub use crate::metrics::inbound as metric;

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
