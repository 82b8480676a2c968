//! Transactional mode: the handler's writes and the stored answer commit
//! together, on SQLite and PostgreSQL.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idem::inbound::{EndpointConfig, with_idempotency_tx};

fn post(key: &str, body: &'static str) -> Request<Full<Bytes>> {
    Request::post("/orders")
        .header("idempotency-key", key)
        .extension(idem::inbound::Actor::new("alice"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

macro_rules! tx_suite {
    ($modname:ident, $db:ty, $make:expr) => {
        mod $modname {
            use super::*;

            /// Inserts a row; answers `status` (taken from the body's first
            /// three bytes when they are digits).
            fn handler() -> idem::inbound::TxHandler<$db> {
                Box::new(|tx, req| {
                    Box::pin(async move {
                        let body = String::from_utf8_lossy(req.body()).into_owned();
                        sqlx::query("INSERT INTO app_orders (note) VALUES ($1)")
                            .bind(&body)
                            .execute(&mut **tx)
                            .await
                            .unwrap();
                        let status = body.get(..3).and_then(|s| s.parse().ok()).unwrap_or(201);
                        Response::builder()
                            .status(status)
                            .header("content-type", "text/plain")
                            .body(Bytes::from(format!("stored {body}")))
                            .unwrap()
                    })
                })
            }

            async fn rows(store: &impl HasPool) -> i64 {
                store.count().await
            }

            #[tokio::test]
            async fn writes_and_answer_commit_together() {
                let Some((store, _guard)) = $make.await else {
                    return;
                };
                store.create_table().await;
                let config = EndpointConfig::builder("tx-order").build().unwrap();
                let a = with_idempotency_tx(&store, &config, post("k1", "bike"), handler()).await;
                assert_eq!(a.status(), StatusCode::CREATED);
                let first = a.into_body().collect().await.unwrap().to_bytes();
                let b = with_idempotency_tx(&store, &config, post("k1", "bike"), handler()).await;
                assert_eq!(b.headers()["idempotent-replayed"], "true");
                assert_eq!(b.into_body().collect().await.unwrap().to_bytes(), first);
                assert_eq!(rows(&store).await, 1, "one row for two requests");
            }

            #[tokio::test]
            async fn unstored_answer_rolls_writes_back() {
                let Some((store, _guard)) = $make.await else {
                    return;
                };
                store.create_table().await;
                let config = EndpointConfig::builder("tx-order").build().unwrap();
                let a =
                    with_idempotency_tx(&store, &config, post("k2", "503 down"), handler()).await;
                assert_eq!(a.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert_eq!(
                    rows(&store).await,
                    0,
                    "the 5xx handler's insert was rolled back"
                );
                let b =
                    with_idempotency_tx(&store, &config, post("k2", "503 down"), handler()).await;
                assert_eq!(b.status(), StatusCode::SERVICE_UNAVAILABLE);
                assert!(
                    b.headers().get("idempotent-replayed").is_none(),
                    "released, not stored"
                );
            }

            #[tokio::test]
            async fn store_outage_runs_nothing() {
                let Some((store, _guard)) = $make.await else {
                    return;
                };
                store.create_table().await;
                let config = EndpointConfig::builder("tx-order")
                    .lease(Duration::from_secs(5))
                    .build()
                    .unwrap();
                store.pool().close().await;
                let a = with_idempotency_tx(&store, &config, post("k3", "bike"), handler()).await;
                assert_eq!(a.status(), StatusCode::SERVICE_UNAVAILABLE);
            }
        }
    };
}

trait HasPool {
    async fn count(&self) -> i64;
    async fn create_table(&self);
}

impl HasPool for idem::ledger::SqliteStore {
    async fn count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM app_orders")
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
    async fn create_table(&self) {
        sqlx::query("CREATE TABLE app_orders (note TEXT NOT NULL)")
            .execute(self.pool())
            .await
            .unwrap();
    }
}

impl HasPool for idem::ledger::PgStore {
    async fn count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM app_orders")
            .fetch_one(self.pool())
            .await
            .unwrap()
    }
    async fn create_table(&self) {
        sqlx::query("CREATE TABLE app_orders (note TEXT NOT NULL)")
            .execute(self.pool())
            .await
            .unwrap();
    }
}

tx_suite!(sqlite, sqlx::Sqlite, async {
    let (store, dir) = idem::testing::sqlite_store().await;
    Some((store, Some(dir)))
});
tx_suite!(postgres, sqlx::Postgres, async {
    idem::testing::pg_store("inbound_tx")
        .await
        .map(|s| (s, None::<tempfile::TempDir>))
});
