//! Beginning an operation inside the application's own transaction: the
//! domain row and the ledger row commit (or roll back) together.

use std::time::SystemTime;

use idem::ledger::{NewOperation, PgStore, SqliteStore};
use idem::{Fingerprint, IdempotencyKey, LedgerStore};
use sqlx::Connection;

fn op(k: &str) -> NewOperation {
    let fp = Fingerprint::builder().body(b"x").finish();
    NewOperation::new(
        k.parse::<IdempotencyKey>().unwrap(),
        "acme",
        "things.create",
        fp,
    )
}

#[tokio::test]
async fn sqlite_ledger_row_commits_and_rolls_back_with_the_domain_row() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    sqlx::query("CREATE TABLE orders (id INTEGER PRIMARY KEY, charge_key TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let mut conn = store.pool().acquire().await.unwrap();

    let mut tx = conn.begin().await.unwrap();
    let rolled_back: IdempotencyKey = "s_orders_1_v1".parse().unwrap();
    sqlx::query("INSERT INTO orders (id, charge_key) VALUES (1, $1)")
        .bind(&rolled_back)
        .execute(&mut *tx)
        .await
        .unwrap();
    SqliteStore::begin_in(&mut tx, &op("s_orders_1_v1"), SystemTime::now())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(store.get(&rolled_back).await.unwrap().is_none());

    let mut tx = conn.begin().await.unwrap();
    let committed: IdempotencyKey = "s_orders_2_v1".parse().unwrap();
    sqlx::query("INSERT INTO orders (id, charge_key) VALUES (2, $1)")
        .bind(&committed)
        .execute(&mut *tx)
        .await
        .unwrap();
    SqliteStore::begin_in(&mut tx, &op("s_orders_2_v1"), SystemTime::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(store.get(&committed).await.unwrap().is_some());
    // The key type round-trips through the app's own column.
    let stored: IdempotencyKey = sqlx::query_scalar("SELECT charge_key FROM orders WHERE id = 2")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, committed);
}

#[tokio::test]
async fn postgres_ledger_row_commits_and_rolls_back_with_the_domain_row() {
    let Some(store) = idem::testing::pg_store("postgres_transactions").await else {
        return;
    };
    sqlx::query("CREATE TABLE orders (id BIGINT PRIMARY KEY, charge_key TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let mut tx = store.pool().begin().await.unwrap();
    let rolled_back: IdempotencyKey = "s_orders_1_v1".parse().unwrap();
    sqlx::query("INSERT INTO orders (id, charge_key) VALUES (1, $1)")
        .bind(&rolled_back)
        .execute(&mut *tx)
        .await
        .unwrap();
    PgStore::begin_in(&mut tx, &op("s_orders_1_v1"), SystemTime::now())
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert!(store.get(&rolled_back).await.unwrap().is_none());

    let mut tx = store.pool().begin().await.unwrap();
    let committed: IdempotencyKey = "s_orders_2_v1".parse().unwrap();
    sqlx::query("INSERT INTO orders (id, charge_key) VALUES (2, $1)")
        .bind(&committed)
        .execute(&mut *tx)
        .await
        .unwrap();
    PgStore::begin_in(&mut tx, &op("s_orders_2_v1"), SystemTime::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let stored: IdempotencyKey = sqlx::query_scalar("SELECT charge_key FROM orders WHERE id = 2")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(stored, committed);
    assert!(store.get(&committed).await.unwrap().is_some());
}

#[tokio::test]
async fn a_malformed_key_in_a_column_is_a_decode_error_not_a_panic() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    let got: Result<IdempotencyKey, _> = sqlx::query_scalar("SELECT 'not a key'")
        .fetch_one(store.pool())
        .await;
    assert!(
        matches!(got, Err(sqlx::Error::ColumnDecode { .. })),
        "{got:?}"
    );
}

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    let err = PgStore::connect("postgres://postgres:postgres@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err}");
}
