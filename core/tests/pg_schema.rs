//! `PgStore::connect_in_schema`: every idem table lives in the app's chosen
//! schema, and nothing lands in `public`.

use std::time::SystemTime;

use idem::ledger::{NewOperation, PgStore};
use idem::{Fingerprint, IdempotencyKey, LedgerStore, StoreError};

#[tokio::test]
async fn tables_live_in_the_chosen_schema() {
    let Some(url) = idem::testing::pg_database_url("tables_live_in_the_chosen_schema").await else {
        return;
    };
    let store = PgStore::connect_in_schema(&url, "control_plane")
        .await
        .unwrap();
    let key: IdempotencyKey = "shop_orders_1_v1".parse().unwrap();
    let fp = Fingerprint::builder().body(b"x").finish();
    store
        .begin(
            &NewOperation::new(key.clone(), "acme", "x", fp),
            SystemTime::now(),
        )
        .await
        .unwrap();
    let admin = sqlx::PgPool::connect(&url).await.unwrap();
    let in_schema: i64 = sqlx::query_scalar("SELECT count(*) FROM control_plane.idem_operations")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(in_schema, 1);
    for table in ["idem_operations", "idem_inbound", "idem_schema_migrations"] {
        let public: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(format!("public.{table}"))
            .fetch_one(&admin)
            .await
            .unwrap();
        assert_eq!(public, None, "{table} must not be created in public");
        let ours: Option<String> = sqlx::query_scalar("SELECT to_regclass($1)::text")
            .bind(format!("control_plane.{table}"))
            .fetch_one(&admin)
            .await
            .unwrap();
        assert!(ours.is_some(), "{table} is in control_plane");
    }
    // A second connect (another process) finds the migrations applied.
    let again = PgStore::connect_in_schema(&url, "control_plane")
        .await
        .unwrap();
    assert!(again.get(&key).await.unwrap().is_some());
}

#[tokio::test]
async fn a_hostile_schema_name_is_refused_before_connecting() {
    for bad in [
        "",
        "Control",
        "a;DROP TABLE x",
        "pg_catalog",
        "x\"y",
        &"a".repeat(64),
    ] {
        let err = PgStore::connect_in_schema("postgres://nobody@127.0.0.1:1/none", bad)
            .await
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidSchemaName { .. }),
            "{bad:?}: {err}"
        );
    }
}
