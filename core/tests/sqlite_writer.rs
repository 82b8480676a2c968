//! The SQLite store's hot writes run on a rusqlite connection beside the
//! sqlx pool (ADR 0008). These check the cases around it: a store with no
//! writer (in-memory, or the application's own pool) behaves the same, and
//! concurrent claims through the writer on a multi-threaded runtime still
//! give one key to one worker.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use idem::ledger::{Begin, Completion, LedgerStore, NewOperation, OperationState, SqliteStore};
use idem::{Fingerprint, IdempotencyKey};

fn op(key: &str) -> NewOperation {
    NewOperation::new(
        key.parse::<IdempotencyKey>().unwrap(),
        "stripe",
        "charges.create",
        Fingerprint::builder().extra("amount", b"500").finish(),
    )
}

async fn fresh_key_round_trip(store: &SqliteStore) {
    let now = SystemTime::now();
    let Begin::Claimed(_, lease) = store
        .begin_claimed(&op("shop_charges_1_v1"), Duration::from_secs(60), now)
        .await
        .unwrap()
    else {
        panic!("a fresh key is claimed");
    };
    let done = store
        .complete(
            &lease,
            &Completion::Succeeded {
                status: 200,
                body: Bytes::from_static(br#"{"id":"ch_1"}"#),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(done.state, OperationState::Succeeded);
    assert_eq!(done.provider_id.as_deref(), Some("ch_1"));
    // The same key again is the recorded row, not a second claim.
    match store
        .begin_claimed(&op("shop_charges_1_v1"), Duration::from_secs(60), now)
        .await
        .unwrap()
    {
        Begin::Existing(row) => assert_eq!(row.state, OperationState::Succeeded),
        other => panic!("expected the recorded row, got {other:?}"),
    }
}

#[tokio::test]
async fn an_in_memory_store_has_no_writer_and_works() {
    let store = SqliteStore::connect("sqlite::memory:").await.unwrap();
    fresh_key_round_trip(&store).await;
}

#[tokio::test]
async fn the_applications_own_pool_works_without_a_writer() {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("app.db"))
        .create_if_missing(true)
        .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
        .synchronous(sqlx::sqlite::SqliteSynchronous::Full);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let store = SqliteStore::from_pool(pool);
    store.migrate().await.unwrap();
    fresh_key_round_trip(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_through_the_writer_give_one_key_to_one_worker() {
    let (store, dir) = idem::testing::sqlite_store().await;
    let store = Arc::new(store);
    let now = SystemTime::now();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            matches!(
                store
                    .begin_claimed(&op("shop_charges_7_v1"), Duration::from_secs(60), now)
                    .await
                    .unwrap(),
                Begin::Claimed(..)
            )
        }));
    }
    let mut claimed = 0;
    for t in tasks {
        claimed += usize::from(t.await.unwrap());
    }
    assert_eq!(claimed, 1, "one key, one worker");
    // A second store on the same file (another process, say) sees the row
    // the writer committed.
    let other = SqliteStore::open(idem::testing::sqlite_path(&dir))
        .await
        .unwrap();
    let row = other
        .get(&"shop_charges_7_v1".parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.state, OperationState::Sending);
}
