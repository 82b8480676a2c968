//! `PgStore` hands out a connection that worked within the last second
//! without pinging it first (a round trip saved on every write). These tests
//! kill every server process of the database in between, as a server restart
//! or failover does, and check what the guarantee needs: a provider's answer
//! in hand is still recorded (the executor's completion retries outlast the
//! unpinged window), and a write that fails on a dead connection says
//! "unavailable" and is never taken for success.

use std::time::Duration;

use bytes::Bytes;
use idem::executor::{Begun, Provider, SafetyClass, StatusClassifier};
use idem::ledger::{Completion, OperationState, PgStore};
use idem::{Executor, Fingerprint, IdempotencyKey, LedgerStore};
use sqlx::Connection;

fn key(s: &str) -> IdempotencyKey {
    s.parse().unwrap()
}

fn provider() -> Provider {
    Provider::new(
        "stripe",
        SafetyClass::NativeKey {
            retention: Duration::from_secs(24 * 3600),
        },
        StatusClassifier,
    )
}

/// Terminates every other server process on this database; returns how many.
async fn kill_backends(url: &str) -> i64 {
    let mut admin = sqlx::PgConnection::connect(url).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    admin.close().await.unwrap();
    i64::try_from(killed.into_iter().filter(|k| *k).count()).unwrap()
}

/// Makes the pool hold several recently used connections.
async fn warm(store: &PgStore, n: usize) {
    let mut held = Vec::new();
    for _ in 0..n {
        held.push(store.pool().acquire().await.unwrap());
    }
    for conn in &mut held {
        sqlx::query("SELECT 1").execute(&mut **conn).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_hand_is_recorded_across_dead_connections() {
    let Some(url) = idem::testing::pg_database_url("pg_dead_connections_answer").await else {
        return;
    };
    let store = PgStore::connect(&url).await.unwrap();
    let exec = Executor::builder(store.clone()).build();
    let k = key("shop_charges_1_v1");
    let Begun::Claimed(claim) = exec
        .begin(
            &provider(),
            &k,
            "charges.create",
            Fingerprint::builder().finish(),
        )
        .await
        .unwrap()
    else {
        panic!("a fresh key is claimed");
    };
    warm(&store, 8).await;
    assert!(
        kill_backends(&url).await >= 1,
        "the pool's connections were killed"
    );
    // The provider answered while the server restarted.
    let op = claim
        .complete(Completion::Succeeded {
            status: 200,
            body: Bytes::from_static(br#"{"id":"pi_1"}"#),
        })
        .await
        .expect("the completion write outlasts the dead connections");
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.provider_id.as_deref(), Some("pi_1"));
    let row = store.get(&k).await.unwrap().unwrap();
    assert_eq!(row.state, OperationState::Succeeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_a_dead_connection_is_unavailable_never_success() {
    let Some(url) = idem::testing::pg_database_url("pg_dead_connections_begin").await else {
        return;
    };
    let store = PgStore::connect(&url).await.unwrap();
    let exec = Executor::builder(store.clone()).build();
    warm(&store, 4).await;
    assert!(kill_backends(&url).await >= 1);
    // Right after the restart each try either claims the key (a live or
    // new connection) or fails as a retryable store error (a dead one);
    // nothing in between, and a claim is claimed exactly once.
    let k = key("shop_charges_2_v1");
    let mut claimed = 0;
    for _ in 0..8 {
        match exec
            .begin(
                &provider(),
                &k,
                "charges.create",
                Fingerprint::builder().finish(),
            )
            .await
        {
            Ok(Begun::Claimed(claim)) => {
                claimed += 1;
                claim
                    .complete(Completion::NotSent {
                        note: "test: released".to_owned(),
                    })
                    .await
                    .unwrap();
            }
            Ok(_) => panic!("nothing was ever sent for this key"),
            Err(e) => assert!(e.is_retryable(), "a dead connection is retryable: {e}"),
        }
    }
    assert!(claimed >= 1, "the pool recovers within a few tries");
    let row = store.get(&k).await.unwrap().unwrap();
    assert_eq!(row.state, OperationState::Pending);
}
