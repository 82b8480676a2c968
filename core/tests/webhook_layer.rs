//! The tower layer in an axum router, on SQLite and PostgreSQL: the inner
//! service is the handler, writes through the request's `WebhookTx`, and
//! its writes commit with the "processed" mark only when it answers 2xx.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::routing::post;
use http::{Request, StatusCode};
use idem::webhook::signature;
use idem::webhook::{
    DUPLICATE_HEADER, InboundWebhook, Verifier, WebhookEvent, WebhookLayer, WebhookStore, WebhookTx,
};
use tower::ServiceExt as _;

const SECRET: &str = "whsec_layer_test";

fn request(id: &str) -> Request<Body> {
    let body = serde_json::json!({"id": id, "object": "event", "type": "charge.succeeded", "data": {"object": {}}}).to_string();
    Request::post("/hooks/stripe")
        .header(
            "stripe-signature",
            signature::stripe_sign(&[SECRET], SystemTime::now(), body.as_bytes()),
        )
        .body(Body::from(body))
        .unwrap()
}

macro_rules! layer_suite {
    ($modname:ident, $db:ty, $open:expr) => {
        mod $modname {
            use super::*;

            #[tokio::test]
            async fn the_inner_service_runs_once_and_commits_with_the_mark() {
                let Some((store, _guard)) = ($open)("webhook_layer").await else {
                    return;
                };
                let mut tx = store.begin_tx().await.unwrap();
                sqlx::query("CREATE TABLE effects (event_id TEXT NOT NULL)")
                    .execute(&mut *tx)
                    .await
                    .unwrap();
                tx.commit().await.unwrap();
                let runs = Arc::new(AtomicUsize::new(0));
                let config = InboundWebhook::builder("stripe", Verifier::stripe([SECRET]))
                    .build()
                    .unwrap();
                let counter = Arc::clone(&runs);
                let app = Router::new().route(
                    "/hooks/stripe",
                    post(move |req: Request<Body>| {
                        let counter = Arc::clone(&counter);
                        async move {
                            counter.fetch_add(1, Ordering::SeqCst);
                            let event = req.extensions().get::<WebhookEvent>().unwrap().clone();
                            let tx = req.extensions().get::<WebhookTx<$db>>().unwrap().clone();
                            let mut tx = tx.lock().await.unwrap();
                            sqlx::query("INSERT INTO effects (event_id) VALUES ($1)")
                                .bind(event.id.clone())
                                .execute(&mut **tx)
                                .await
                                .unwrap();
                            // The handler fails the first time it sees evt_fail.
                            if event.id == "evt_fail" && counter.load(Ordering::SeqCst) == 2 {
                                return StatusCode::INTERNAL_SERVER_ERROR;
                            }
                            StatusCode::NO_CONTENT
                        }
                    })
                    .layer(WebhookLayer::new(store.clone(), config)),
                );
                let r = app.clone().oneshot(request("evt_ok")).await.unwrap();
                assert_eq!(
                    r.status(),
                    StatusCode::NO_CONTENT,
                    "the inner answer after the commit"
                );
                let r = app.clone().oneshot(request("evt_ok")).await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                assert!(r.headers().contains_key(DUPLICATE_HEADER));
                assert_eq!(runs.load(Ordering::SeqCst), 1);

                let r = app.clone().oneshot(request("evt_fail")).await.unwrap();
                assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
                let r = app.clone().oneshot(request("evt_fail")).await.unwrap();
                assert_eq!(r.status(), StatusCode::NO_CONTENT);
                assert_eq!(runs.load(Ordering::SeqCst), 3);

                let mut bad = request("evt_x");
                bad.headers_mut()
                    .insert("stripe-signature", "t=1,v1=00".parse().unwrap());
                let r = app.clone().oneshot(bad).await.unwrap();
                assert_eq!(r.status(), StatusCode::BAD_REQUEST);
                assert_eq!(runs.load(Ordering::SeqCst), 3);

                let mut tx = store.begin_tx().await.unwrap();
                let rows: Vec<(String,)> =
                    sqlx::query_as("SELECT event_id FROM effects ORDER BY event_id")
                        .fetch_all(&mut *tx)
                        .await
                        .unwrap();
                tx.commit().await.unwrap();
                let rows: Vec<String> = rows.into_iter().map(|r| r.0).collect();
                assert_eq!(
                    rows,
                    vec!["evt_fail", "evt_ok"],
                    "the failed run's write was rolled back"
                );
            }
        }
    };
}

async fn open_sqlite(_name: &str) -> Option<(idem::ledger::SqliteStore, tempfile::TempDir)> {
    Some(idem::testing::sqlite_store().await)
}

async fn open_pg(name: &str) -> Option<(idem::ledger::PgStore, ())> {
    idem::testing::pg_store(name).await.map(|s| (s, ()))
}

layer_suite!(sqlite, sqlx::Sqlite, open_sqlite);
layer_suite!(postgres, sqlx::Postgres, open_pg);
