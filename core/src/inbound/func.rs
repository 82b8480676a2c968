//! [`with_idempotency`]: the inbound wrapper as a plain async function over [`http`] types.

use std::convert::Infallible;
use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;

use super::engine::{self, FrontEnd, Passed};
use super::{BoxError, ClientKey, EndpointConfig, InboundBody, InboundStore, box_body};

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
    match engine::serve(store, config, parts, body, started, Handler(handler)).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// The function's handler as a front-end: it gets the body read into memory
/// either way.
struct Handler<F>(F);

impl<S, B, F, Fut, RB> FrontEnd<S, B> for Handler<F>
where
    S: InboundStore + ?Sized,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(Request<Bytes>) -> Fut,
    Fut: Future<Output = Response<RB>>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    type Error = Infallible;

    async fn pass_through(
        self,
        _store: &S,
        config: &EndpointConfig,
        parts: Parts,
        body: B,
        key: Option<&ClientKey>,
        started: Instant,
    ) -> Result<Passed, Infallible> {
        let bytes = match engine::read_unprotected(config, body, key, started).await {
            Ok(b) => b,
            Err(refused) => return Ok(refused),
        };
        let r = (self.0)(Request::from_parts(parts, bytes)).await;
        Ok(Passed::Ran(r.map(box_body)))
    }

    async fn protect(
        self,
        store: &S,
        config: &EndpointConfig,
        parts: Parts,
        body: B,
        key: ClientKey,
        started: Instant,
    ) -> Result<Response<InboundBody>, Infallible> {
        let handler = self.0;
        engine::protect(store, config, parts, body, key, started, |req| async move {
            Ok::<_, Infallible>(handler(req).await)
        })
        .await
    }
}
