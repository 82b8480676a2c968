//! PostgreSQL: a waiter is woken by `LISTEN/NOTIFY` when another process
//! changes its in-flight record.
//!
//! What is shared in one process: the in-process notifier is a single static
//! (`local_notifier`), shared by every store, and the `LISTEN` connection is
//! one per database per process. So two `PgStore`s in one process are not
//! two processes: a completion through either store's `complete` wakes every
//! waiter in-process, and would hide a broken `NOTIFY`. Hence:
//!
//! - the "other process" here is a plain sqlx pool running SQL, with no idem
//!   code, so nothing reaches the in-process notifier;
//! - this test is alone in its test binary (its own process), so no other
//!   test completes a record and wakes the waiter in-process;
//! - during the main check the record stays in flight, so the waiter cannot
//!   return because it re-read a settled record: only a notification (or its
//!   60 s timeout, which the 20 s outer bound turns into a failure) ends it;
//! - a control with the trigger dropped shows the same waiter then sleeps to
//!   its timeout, i.e. the check above can tell NOTIFY from no NOTIFY;
//! - the trigger notifies only records a waiter marked (see
//!   `inbound_pg_notify_waiters.rs`, in a binary of its own for the same
//!   reason).

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use idem::Fingerprint;
use idem::inbound::{Begin, BeginRequest, ClientKey, InboundStore, RecordState, Scope};
use idem::ledger::PgStore;
use sqlx::postgres::PgPoolOptions;

fn scope(key: &str) -> Scope {
    Scope {
        actor: "alice".into(),
        endpoint: "notify".into(),
        key: ClientKey::new(key).unwrap(),
    }
}

/// Puts an in-flight record for `key` in the store; returns its lease token.
async fn in_flight(store: &PgStore, key: &str) -> String {
    let s = scope(key);
    let fp = Fingerprint::builder().method("POST").body(b"x").finish();
    let req = BeginRequest {
        scope: &s,
        fingerprint: &fp,
        ttl: Duration::from_secs(3600),
        lease_for: Duration::from_secs(600),
    };
    match store.begin(&req, SystemTime::now()).await.unwrap() {
        Begin::Started(lease) => lease.token,
        other => panic!("fresh key: {other:?}"),
    }
}

/// The other process hands the in-flight row to a new holder every 50 ms
/// (a new lease token, the record still in flight: what a takeover does,
/// and it notifies a marked record), so a `LISTEN` connection still
/// starting up is not a reason to miss every notification.
fn touch_repeatedly(other: sqlx::PgPool, key: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            sqlx::query(
                "UPDATE idem_inbound SET lease_token = md5(random()::text), \
                 updated_at = updated_at + 1 WHERE key = $1",
            )
            .bind(key)
            .execute(&other)
            .await
            .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_from_another_process_wakes_a_waiter() {
    let Some(url) = idem::testing::pg_database_url("inbound_pg_notify").await else {
        return;
    };
    let waiter = PgStore::connect(&url).await.unwrap();
    let other = PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();

    // 1. The record stays in flight; only NOTIFY can end the 60 s wait early.
    in_flight(&waiter, "k-touched").await;
    let toucher = touch_repeatedly(other.clone(), "k-touched");
    let woke = tokio::time::timeout(
        Duration::from_secs(20),
        waiter.wait_for_change(&scope("k-touched"), Duration::from_secs(60)),
    )
    .await;
    toucher.abort();
    assert!(
        woke.is_ok(),
        "a change made by another process must wake the waiter through NOTIFY"
    );
    let record = waiter.get(&scope("k-touched")).await.unwrap().unwrap();
    assert_eq!(
        record.state,
        RecordState::InFlight,
        "still in flight: the waiter was woken, it did not see a settled record"
    );

    // 2. A real completion by the other process (the same statement idem
    //    runs) wakes a waiter, and the waiter then reads the stored answer.
    let token = in_flight(&waiter, "k-completed").await;
    let waiting = {
        let waiter = waiter.clone();
        tokio::spawn(async move {
            waiter
                .wait_for_change(&scope("k-completed"), Duration::from_secs(60))
                .await;
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let done = sqlx::query(
        "UPDATE idem_inbound SET state = 'completed', lease_token = NULL, \
         lease_expires_at = NULL, response_status = 201, response_headers = ''::bytea, \
         response_body = 'done'::bytea, updated_at = updated_at + 1 \
         WHERE key = $1 AND lease_token = $2",
    )
    .bind("k-completed")
    .bind(&token)
    .execute(&other)
    .await
    .unwrap();
    assert_eq!(done.rows_affected(), 1);
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("the completion in another process wakes the waiter")
        .unwrap();
    let record = waiter.get(&scope("k-completed")).await.unwrap().unwrap();
    assert_eq!(record.state, RecordState::Completed);
    let response = record.response.unwrap();
    assert_eq!(response.status, StatusCode::CREATED);
    assert_eq!(response.body, Bytes::from_static(b"done"));
    assert_eq!(response.headers, HeaderMap::new());

    // 3. Control: without the trigger, the same touches wake nobody and the
    //    waiter sleeps to its own timeout.
    sqlx::query("DROP TRIGGER idem_inbound_settled ON idem_inbound")
        .execute(&other)
        .await
        .unwrap();
    in_flight(&waiter, "k-silent").await;
    let toucher = touch_repeatedly(other.clone(), "k-silent");
    let started = Instant::now();
    waiter
        .wait_for_change(&scope("k-silent"), Duration::from_secs(2))
        .await;
    toucher.abort();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "without NOTIFY nothing wakes the waiter before its timeout"
    );
}
