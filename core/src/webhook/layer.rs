//! The tower layer: [`handle_webhook`](super::handle_webhook) in front of
//! an inner service that is the handler.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt as _;
use tokio::sync::{Mutex, OwnedMappedMutexGuard, OwnedMutexGuard};
use tower_layer::Layer;
use tower_service::Service;

use super::inbound::{HandlerError, InboundWebhook, process, read_body};
use super::store::WebhookStore;
use crate::inbound::{BoxError, InboundBody};

/// The open transaction, handed to the inner service in the request's
/// extensions next to the [`WebhookEvent`](super::WebhookEvent). Write
/// through it; the layer commits it together with the "processed" mark when
/// the inner service answers 2xx, and rolls it back otherwise.
///
/// ```no_run
/// # async fn handler(request: http::Request<bytes::Bytes>) -> Result<(), idem::webhook::HandlerError> {
/// use idem::webhook::{WebhookEvent, WebhookTx};
/// let event = request.extensions().get::<WebhookEvent>().expect("set by the layer");
/// let tx = request.extensions().get::<WebhookTx<sqlx::Sqlite>>().expect("set by the layer");
/// let mut tx = tx.lock().await?;
/// sqlx::query("INSERT INTO seen (id) VALUES ($1)").bind(&event.id).execute(&mut **tx).await
///     .map_err(|e| idem::webhook::HandlerError::new(e.to_string()))?;
/// # Ok(()) }
/// ```
pub struct WebhookTx<Db: sqlx::Database> {
    slot: Arc<Mutex<Option<sqlx::Transaction<'static, Db>>>>,
}

/// A locked [`WebhookTx`]: dereferences to the transaction.
pub type TxGuard<Db> =
    OwnedMappedMutexGuard<Option<sqlx::Transaction<'static, Db>>, sqlx::Transaction<'static, Db>>;

impl<Db: sqlx::Database> Clone for WebhookTx<Db> {
    fn clone(&self) -> Self {
        Self {
            slot: Arc::clone(&self.slot),
        }
    }
}

impl<Db: sqlx::Database> fmt::Debug for WebhookTx<Db> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WebhookTx")
    }
}

impl<Db: sqlx::Database> WebhookTx<Db> {
    /// Locks the transaction for a few statements. Drop the guard before
    /// answering. The future owns what it needs (no borrow of `self`), so
    /// it is `Send` in any handler.
    ///
    /// # Errors
    ///
    /// [`HandlerError`] when the layer has already taken the transaction
    /// back (the request was answered).
    pub fn lock(&self) -> impl Future<Output = Result<TxGuard<Db>, HandlerError>> + Send + 'static {
        let slot = Arc::clone(&self.slot);
        async move {
            OwnedMutexGuard::try_map(slot.lock_owned().await, Option::as_mut)
                .map_err(|_| HandlerError::new("the webhook transaction is closed"))
        }
    }
}

/// A tower layer that verifies, deduplicates and runs the inner service
/// (the handler) inside one transaction with the "processed" mark. The
/// inner service sees the request with the verified body, a
/// [`WebhookEvent`](super::WebhookEvent) and a [`WebhookTx`] in its
/// extensions. A 2xx answer from it commits; anything else rolls back and
/// answers 500 so the provider retries.
///
/// ```no_run
/// use axum::{Router, routing::post};
/// use idem::ledger::SqliteStore;
/// use idem::webhook::{InboundWebhook, Verifier, WebhookLayer};
///
/// # async fn app() -> Result<(), Box<dyn std::error::Error>> {
/// let store = SqliteStore::open("app.db").await?;
/// let config = InboundWebhook::builder("stripe", Verifier::stripe(["whsec_..."])).build()?;
/// let app: Router = Router::new().route(
///     "/hooks/stripe",
///     post(|| async { "ok" }).layer(WebhookLayer::new(store, config)),
/// );
/// # let _ = app; Ok(()) }
/// ```
pub struct WebhookLayer<S> {
    store: Arc<S>,
    config: Arc<InboundWebhook>,
}

impl<S> Clone for WebhookLayer<S> {
    fn clone(&self) -> Self {
        Self {
            store: Arc::clone(&self.store),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for WebhookLayer<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookLayer")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish()
    }
}

impl<S> WebhookLayer<S> {
    /// A layer over `store` with `config`.
    pub fn new(store: S, config: InboundWebhook) -> Self {
        Self {
            store: Arc::new(store),
            config: Arc::new(config),
        }
    }
}

impl<I, S> Layer<I> for WebhookLayer<S> {
    type Service = WebhookService<I, S>;
    fn layer(&self, inner: I) -> Self::Service {
        WebhookService {
            inner,
            layer: self.clone(),
            _p: PhantomData,
        }
    }
}

/// The service made by [`WebhookLayer`].
pub struct WebhookService<I, S> {
    inner: I,
    layer: WebhookLayer<S>,
    _p: PhantomData<fn()>,
}

impl<I: Clone, S> Clone for WebhookService<I, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
            _p: PhantomData,
        }
    }
}

impl<I: fmt::Debug, S: fmt::Debug> fmt::Debug for WebhookService<I, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookService")
            .field("inner", &self.inner)
            .field("layer", &self.layer)
            .finish()
    }
}

fn boxed<B>(r: Response<B>) -> Response<InboundBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    r.map(|b| b.map_err(Into::into).boxed_unsync())
}

impl<I, S, ReqB, ResB> Service<Request<ReqB>> for WebhookService<I, S>
where
    I: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    I::Future: Send + 'static,
    I::Error: Into<BoxError> + Send + 'static,
    S: WebhookStore,
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
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let layer = self.layer.clone();
        Box::pin(async move {
            let config = &*layer.config;
            let (parts, body) = request.into_parts();
            let body = match read_body(body, config.max_body()).await {
                Ok(b) => b,
                Err(a) => return Ok(boxed(a.response().map(http_body_util::Full::new))),
            };
            let forwarded = parts.clone();
            let result = process(
                &*layer.store,
                config,
                &parts,
                body.clone(),
                |tx, event| async move {
                    let slot = WebhookTx {
                        slot: Arc::new(Mutex::new(Some(tx))),
                    };
                    let mut req = Request::from_parts(forwarded, ReqB::from(body));
                    req.extensions_mut().insert(event);
                    req.extensions_mut().insert(slot.clone());
                    let answer = inner.call(req).await;
                    let tx = slot.slot.lock().await.take();
                    let result = match answer {
                        Ok(r) if r.status().is_success() => Ok(r),
                        Ok(r) => Err(HandlerError::new(format!(
                            "the handler answered HTTP {}",
                            r.status()
                        ))),
                        Err(e) => Err(HandlerError::new(format!(
                            "the handler failed: {}",
                            e.into()
                        ))),
                    };
                    (tx, result)
                },
            )
            .await;
            Ok(match result {
                Ok(r) => boxed(r),
                Err(a) => boxed(a.response().map(http_body_util::Full::new)),
            })
        })
    }
}
