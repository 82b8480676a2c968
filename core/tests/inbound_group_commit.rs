//! The SQLite store commits the inbound layer's record writes in groups on
//! its writer connection (`store::sqlite::writer`). These attack what that
//! could break: a write reported before its group committed, two requests
//! for one key landing in the same group, and a handler whose own
//! transaction holds the write lock while its lease is renewed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::Full;
use idem::Fingerprint;
use idem::inbound::{
    Begin, BeginRequest, ClientKey, EndpointConfig, InboundStore, RecordState, Scope,
    StoredResponse, with_idempotency_tx,
};
use idem::ledger::SqliteStore;

const HOUR: Duration = Duration::from_secs(3600);

fn scope(key: &str) -> Scope {
    Scope {
        actor: "alice".into(),
        endpoint: "group".into(),
        key: ClientKey::new(key).unwrap(),
    }
}

fn answer(body: String) -> StoredResponse {
    StoredResponse {
        status: StatusCode::CREATED,
        headers: HeaderMap::new(),
        body: Bytes::from(body),
        replayable: true,
    }
}

/// Every write the store reports is already committed: a second store on
/// the same file (its own connections) sees it at once. 64 requests at once
/// queue behind each other, so they share group commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reported_write_is_committed_for_every_other_connection() {
    let (store, dir) = idem::testing::sqlite_store().await;
    let other = SqliteStore::open(idem::testing::sqlite_path(&dir))
        .await
        .unwrap();
    let (store, other) = (Arc::new(store), Arc::new(other));
    let fp = Fingerprint::builder().method("POST").body(b"x").finish();
    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let (store, other, fp) = (Arc::clone(&store), Arc::clone(&other), fp.clone());
            tokio::spawn(async move {
                let scope = scope(&format!("k-{i}"));
                let req = BeginRequest {
                    scope: &scope,
                    fingerprint: &fp,
                    ttl: HOUR,
                    lease_for: Duration::from_secs(30),
                };
                let now = SystemTime::now();
                let Begin::Started(lease) = store.begin(&req, now).await.unwrap() else {
                    panic!("a fresh key starts");
                };
                let seen = other.get(&scope).await.unwrap();
                assert_eq!(
                    seen.map(|r| r.state),
                    Some(RecordState::InFlight),
                    "the started record is visible to another connection as soon as begin returns"
                );
                assert!(
                    store
                        .renew(&lease, Duration::from_secs(30), now)
                        .await
                        .unwrap()
                );
                assert!(
                    store
                        .complete(&lease, &answer(format!("order {i}")), now)
                        .await
                        .unwrap()
                );
                let seen = other.get(&scope).await.unwrap().unwrap();
                assert_eq!(seen.state, RecordState::Completed);
                assert_eq!(seen.response.unwrap().body, format!("order {i}"));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// 32 requests for one key at once: whichever group their inserts land in,
/// one starts and every other sees that record.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_key_in_one_group_starts_once() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    let store = Arc::new(store);
    let fp = Fingerprint::builder().method("POST").body(b"same").finish();
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let (store, fp) = (Arc::clone(&store), fp.clone());
            tokio::spawn(async move {
                let scope = scope("k-shared");
                let req = BeginRequest {
                    scope: &scope,
                    fingerprint: &fp,
                    ttl: HOUR,
                    lease_for: Duration::from_secs(30),
                };
                store.begin(&req, SystemTime::now()).await.unwrap()
            })
        })
        .collect();
    let mut started = 0;
    for t in tasks {
        match t.await.unwrap() {
            Begin::Started(_) => started += 1,
            Begin::Existing(r) => assert_eq!(r.state, RecordState::InFlight),
            other => panic!("unexpected begin: {other:?}"),
        }
    }
    assert_eq!(started, 1, "exactly one request holds the key");
}

/// A transactional handler holds SQLite's write lock (`BEGIN IMMEDIATE`)
/// for several heartbeats. Its lease renewals wait for that lock on the
/// writer's thread, not on the handler's task, so the handler finishes and
/// commits instead of stalling for the 10 s busy timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_does_not_stall_the_handler_that_holds_the_lock() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    sqlx::query("CREATE TABLE app_orders (note TEXT NOT NULL)")
        .execute(store.pool())
        .await
        .unwrap();
    let config = EndpointConfig::builder("tx-slow")
        .lease(Duration::from_secs(1))
        .heartbeat(Duration::from_millis(100))
        .build()
        .unwrap();
    let request = Request::post("/orders")
        .header("idempotency-key", "k-slow")
        .extension(idem::inbound::Actor::new("alice"))
        .body(Full::new(Bytes::from_static(b"bike")))
        .unwrap();
    let started = Instant::now();
    let response = with_idempotency_tx(
        &store,
        &config,
        request,
        Box::new(|tx, _req| {
            Box::pin(async move {
                sqlx::query("INSERT INTO app_orders (note) VALUES ('bike')")
                    .execute(&mut **tx)
                    .await
                    .unwrap();
                // Five heartbeats with the write lock held.
                tokio::time::sleep(Duration::from_millis(500)).await;
                Response::builder()
                    .status(StatusCode::CREATED)
                    .body(Bytes::from_static(b"stored"))
                    .unwrap()
            })
        }),
    )
    .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the handler stalled behind its own renewal for {:?}",
        started.elapsed()
    );
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM app_orders")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(rows, 1);
    let slow = Scope {
        endpoint: "tx-slow".into(),
        ..scope("k-slow")
    };
    let record = store.get(&slow).await.unwrap().unwrap();
    assert_eq!(record.state, RecordState::Completed);
}
