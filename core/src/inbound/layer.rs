//! [`IdempotencyLayer`]: the inbound wrapper as a tower `Layer`, for axum or
//! any tower stack.
//!
//! Apply one layer per route, each with its own [`EndpointConfig`]. The
//! layer does not authenticate: it reads the [`Actor`] that an earlier layer
//! put in the request extensions, or calls the extractor given to
//! [`IdempotencyLayer::actor_from`]. It does not override the inner
//! service's status, headers or body, except to add `Idempotency-Key`,
//! `Idempotency-Key-Expires` and, on replays, `Idempotent-Replayed`.
//!
//! In axum, apply it with `MethodRouter::route_layer` (not `layer`), so the
//! router's own 404 and 405 answers never reach it; methods the endpoint
//! does not protect (anything but `POST` by default) pass through anyway.
//!
//! ```
//! use axum::{Router, routing::post};
//! use idem::inbound::{Actor, EndpointConfig, IdempotencyLayer};
//! use idem::ledger::SqliteStore;
//!
//! fn routes(store: SqliteStore) -> Result<Router, idem::inbound::ConfigError> {
//!     let orders = EndpointConfig::builder("create-order").build()?;
//!     let layer = IdempotencyLayer::new(store, orders).actor_from(|parts| {
//!         parts.headers.get("x-user-id")?.to_str().ok().map(Actor::new)
//!     });
//!     Ok(Router::new().route("/orders", post(|| async { "created" }).route_layer(layer)))
//! }
//! ```

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;
use tower_layer::Layer;
use tower_service::Service;

use super::engine::{self, FrontEnd, Passed};
use super::{Actor, BoxError, ClientKey, EndpointConfig, InboundBody, InboundStore, box_body};

type ActorFn = Arc<dyn Fn(&Parts) -> Option<Actor> + Send + Sync>;

/// Protects the wrapped service with idempotency keys (see the
/// [module docs](super)).
pub struct IdempotencyLayer<S> {
    store: Arc<S>,
    config: Arc<EndpointConfig>,
    actor: Option<ActorFn>,
}

impl<S> Clone for IdempotencyLayer<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            config: Arc::clone(&self.config),
            actor: self.actor.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for IdempotencyLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyLayer")
            .field("store", &self.store)
            .field("config", &self.config)
            .field("actor_extractor", &self.actor.is_some())
            .finish()
    }
}

impl<S: InboundStore> IdempotencyLayer<S> {
    /// A layer storing records in `store` under `config`.
    pub fn new(store: S, config: EndpointConfig) -> Self {
        Self::shared(Arc::new(store), config)
    }

    /// As [`IdempotencyLayer::new`], sharing one store between layers.
    pub fn shared(store: Arc<S>, config: EndpointConfig) -> Self {
        Self {
            store,
            config: Arc::new(config),
            actor: None,
        }
    }

    /// Finds the actor with `extract` instead of reading the [`Actor`]
    /// request extension. Returning `None` (or an empty actor) refuses a
    /// protected request with 401 problem+json, unless the endpoint opted
    /// into [`shared_anonymous_scope`](super::EndpointConfigBuilder::shared_anonymous_scope).
    pub fn actor_from<F>(mut self, extract: F) -> Self
    where
        F: Fn(&Parts) -> Option<Actor> + Send + Sync + 'static,
    {
        self.actor = Some(Arc::new(extract));
        self
    }
}

impl<S, I> Layer<I> for IdempotencyLayer<S> {
    type Service = IdempotencyService<I, S>;

    fn layer(&self, inner: I) -> Self::Service {
        IdempotencyService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service made by [`IdempotencyLayer`].
pub struct IdempotencyService<I, S> {
    inner: I,
    layer: IdempotencyLayer<S>,
}

impl<I: Clone, S> Clone for IdempotencyService<I, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<I: fmt::Debug, S: fmt::Debug> fmt::Debug for IdempotencyService<I, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdempotencyService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

impl<I, S, ReqB, ResB> Service<Request<ReqB>> for IdempotencyService<I, S>
where
    I: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    I::Future: Send + 'static,
    I::Error: Send + 'static,
    S: InboundStore,
    ReqB: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<InboundBody>;
    type Error = I::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        // The clone that was polled ready is the one that gets called.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let started = Instant::now();
            let (mut parts, body) = request.into_parts();
            if let Some(extract) = &layer.actor {
                match extract(&parts) {
                    Some(actor) => parts.extensions.insert(actor),
                    None => parts.extensions.remove::<Actor>(),
                };
            }
            engine::serve(
                &*layer.store,
                &layer.config,
                parts,
                body,
                started,
                Inner(inner),
            )
            .await
        })
    }
}

/// The inner service as a front-end: unprotected, it gets the request as it came; protected,
/// the body read into memory.
struct Inner<I>(I);

impl<I, S, ReqB, ResB> FrontEnd<S, ReqB> for Inner<I>
where
    I: Service<Request<ReqB>, Response = Response<ResB>>,
    S: InboundStore,
    ReqB: Body<Data = Bytes> + From<Bytes>,
    ReqB::Error: Into<BoxError>,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError>,
{
    type Error = I::Error;

    async fn pass_through(
        self,
        _store: &S,
        _config: &EndpointConfig,
        parts: Parts,
        body: ReqB,
        _key: Option<&ClientKey>,
        _started: Instant,
    ) -> Result<Passed, I::Error> {
        let mut inner = self.0;
        let r = inner.call(Request::from_parts(parts, body)).await?;
        Ok(Passed::Ran(r.map(box_body)))
    }

    async fn protect(
        self,
        store: &S,
        config: &EndpointConfig,
        parts: Parts,
        body: ReqB,
        key: ClientKey,
        started: Instant,
    ) -> Result<Response<InboundBody>, I::Error> {
        let mut inner = self.0;
        engine::protect(store, config, parts, body, key, started, |req| {
            inner.call(req.map(ReqB::from))
        })
        .await
    }
}
