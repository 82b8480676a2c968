//! [`with_idempotency_tx`]: the transactional mode, where the handler's writes and its stored
//! answer commit together.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::request::Parts;
use http::{Request, Response};
use http_body::Body;

use super::engine::{self, FrontEnd, Passed};
use super::metrics::report;
use super::problem::{Problem, ProblemKind};
use super::{
    BoxError, ClientKey, EndpointConfig, InboundBody, Outcome, StoredResponse, TxInboundStore,
    full_body, store,
};

/// The handler type of [`with_idempotency_tx`]: it gets the store's open
/// transaction and the request.
pub type TxHandler<Db> = Box<
    dyn for<'t> FnOnce(
            &'t mut sqlx::Transaction<'static, Db>,
            Request<Bytes>,
        ) -> BoxFuture<'t, Response<Bytes>>
        + Send,
>;

/// As [`with_idempotency`](super::with_idempotency), but the handler runs inside a transaction of
/// the store's own database, and its answer is stored in that same
/// transaction: the handler's writes and the stored answer commit together,
/// or neither does.
///
/// When the answer is not stored (see [`StoredOutcomes`](super::StoredOutcomes)) the transaction
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
    match engine::serve(store, config, parts, body, started, InTx(handler)).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// The transactional handler as a front-end.
struct InTx<Db: sqlx::Database>(TxHandler<Db>);

impl<S, B> FrontEnd<S, B> for InTx<S::Db>
where
    S: TxInboundStore,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Error = Infallible;

    /// Unprotected, but still in one transaction.
    async fn pass_through(
        self,
        store: &S,
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
        let Ok(mut tx) = store.begin_tx().await else {
            let r = Problem::new(ProblemKind::StoreUnavailable).into_response();
            report(config, key, Outcome::StoreUnavailable, r.status(), started);
            return Ok(Passed::Answered(r));
        };
        let r = (self.0)(&mut tx, Request::from_parts(parts, bytes)).await;
        let r = if r.status().is_server_error() {
            let _ = tx.rollback().await;
            r.map(full_body)
        } else if let Err(e) = tx.commit().await {
            tracing::error!(target: "idem::inbound", endpoint = %config.name, error = %e, "commit failed; handler writes rolled back");
            Problem::new(ProblemKind::StoreUnavailable).into_response()
        } else {
            r.map(full_body)
        };
        Ok(Passed::Ran(r))
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
        let (mut claim, request) =
            match engine::admit(store, config, parts, body, key, started).await {
                Ok(a) => a,
                Err(r) => return Ok(r),
            };
        let mut tx = match store.begin_tx().await {
            Ok(tx) => tx,
            Err(_) => return Ok(claim.unavailable().await),
        };
        let result = claim.run(handler(&mut tx, request)).await;
        claim.landed();
        let response = match result {
            Ok(r) => r,
            Err(panic) => {
                drop(tx);
                claim.abandon().await;
                std::panic::resume_unwind(panic);
            }
        };
        if claim.unstored(&response).is_some() {
            // Reported as `ExecutedNotStored` whatever the reason, a
            // rejection included, as this mode always has.
            let _ = tx.rollback().await;
            return Ok(claim
                .pass_on(response.map(full_body), Outcome::ExecutedNotStored)
                .await);
        }
        let (head, bytes) = response.into_parts();
        let replayable = bytes.len() <= config.max_response_body;
        let stored = StoredResponse {
            status: head.status,
            headers: engine::pick_headers(config, &head.headers),
            body: if replayable {
                bytes.clone()
            } else {
                Bytes::new()
            },
            replayable,
        };
        match S::complete_in(&mut tx, claim.lease(), &stored, config.clock.now()).await {
            Ok(true) => {}
            Ok(false) => {
                // Another request took the record over: roll back this one's
                // writes and send the client back to read that one's answer.
                let _ = tx.rollback().await;
                return Ok(claim.taken_over());
            }
            Err(_) => {
                let _ = tx.rollback().await;
                return Ok(claim.unavailable().await);
            }
        }
        if let Err(e) = tx.commit().await {
            tracing::error!(target: "idem::inbound", endpoint = %config.name, error = %e, "commit failed; handler writes rolled back");
            return Ok(claim.unavailable().await);
        }
        store::local_notifier().notify_waiters();
        Ok(claim.finish(head, full_body(bytes), Outcome::Executed))
    }
}
