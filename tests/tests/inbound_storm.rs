//! 500 concurrent duplicate POSTs (same user, same key, same body) against
//! the inbound example server on PostgreSQL give exactly one side effect.
//!
//! `POST /orders` answers a duplicate that arrives while the first request
//! runs with 409 + `Retry-After`, and one that arrives after with a replay;
//! `POST /deployments` makes duplicates wait (up to 2 s) for the first
//! answer. Either way the handler runs once, and every answer is the first
//! answer, a replay of it, or "in flight, retry later".
//!
//! Needs PostgreSQL (`IDEM_TEST_DATABASE_URL`); outside CI it is skipped
//! loudly when no server is reachable, under `CI=true` it fails.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use idem::ledger::PgStore;
use idem_examples::inbound::{Counters, app};
use idem_tests::http1::Conn;
use serde_json::{Value, json};
use tokio::sync::Barrier;

const DUPLICATES: usize = 500;

#[derive(Debug)]
struct Answer {
    status: u16,
    replayed: bool,
    retry_after: bool,
    id: Option<u64>,
}

async fn storm(addr: SocketAddr, path: &str, key: &str, body: Value) -> Vec<Answer> {
    let barrier = Arc::new(Barrier::new(DUPLICATES));
    let tasks: Vec<_> = (0..DUPLICATES)
        .map(|_| {
            let (path, key, body) = (path.to_owned(), key.to_owned(), body.to_string());
            let barrier = barrier.clone();
            tokio::spawn(async move {
                // Connected before the barrier: the POSTs leave together.
                let mut conn = Conn::connect(addr).await.expect("connect to the server");
                barrier.wait().await;
                let reply = conn
                    .post_json(
                        &path,
                        &[("authorization", "Bearer alice"), ("idempotency-key", &key)],
                        body.as_bytes(),
                    )
                    .await
                    .expect("the server answers");
                let status = reply.status;
                let replayed = reply.header("idempotent-replayed") == Some("true");
                let retry_after = reply.header("retry-after").is_some();
                let json = reply.json();
                Answer {
                    status,
                    replayed,
                    retry_after,
                    id: json["id"].as_u64(),
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    answers
}

fn tally(answers: &[Answer]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for a in answers {
        let label = format!("{}{}", a.status, if a.replayed { " replayed" } else { "" });
        *counts.entry(label).or_insert(0usize) += 1;
    }
    format!("{counts:?}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_duplicate_posts_on_postgres_have_one_side_effect() {
    let Some(db) = idem::testing::pg_database_url("inbound_storm").await else {
        return;
    };
    let store = PgStore::connect(&db).await.unwrap();
    let counters = Arc::new(Counters::default());
    let router = app(store, counters.clone()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });

    // Orders: duplicates in flight get 409 + Retry-After, later ones a replay.
    let started = Instant::now();
    let answers = storm(addr, "/orders", "storm-order-1", json!({"item": "bike"})).await;
    let took = started.elapsed();
    eprintln!(
        "orders: {DUPLICATES} concurrent duplicates in {took:?}: {}",
        tally(&answers)
    );
    assert_eq!(
        counters.orders.load(Ordering::SeqCst),
        1,
        "one order: {}",
        tally(&answers)
    );
    let firsts = answers
        .iter()
        .filter(|a| a.status == 201 && !a.replayed)
        .count();
    assert_eq!(firsts, 1, "exactly one first answer: {}", tally(&answers));
    for a in &answers {
        let ok = match a.status {
            201 => a.id == Some(1),
            409 => a.retry_after,
            _ => false,
        };
        assert!(ok, "unexpected answer {a:?}; all: {}", tally(&answers));
    }
    // The clients told to retry get the first answer.
    let again = storm(addr, "/orders", "storm-order-1", json!({"item": "bike"})).await;
    assert!(
        again
            .iter()
            .all(|a| a.status == 201 && a.replayed && a.id == Some(1)),
        "{}",
        tally(&again)
    );
    assert_eq!(counters.orders.load(Ordering::SeqCst), 1);

    // Deployments: duplicates wait for the first answer (bounded at 2 s).
    let started = Instant::now();
    let answers = storm(
        addr,
        "/deployments",
        "storm-deploy-1",
        json!({"service": "api"}),
    )
    .await;
    let took = started.elapsed();
    eprintln!(
        "deployments: {DUPLICATES} concurrent duplicates in {took:?}: {}",
        tally(&answers)
    );
    assert_eq!(
        counters.deployments.load(Ordering::SeqCst),
        1,
        "one deployment: {}",
        tally(&answers)
    );
    for a in &answers {
        let ok = match a.status {
            202 => a.id == Some(1),
            409 => a.retry_after,
            _ => false,
        };
        assert!(ok, "unexpected answer {a:?}; all: {}", tally(&answers));
    }
    assert_eq!(
        answers
            .iter()
            .filter(|a| a.status == 202 && !a.replayed)
            .count(),
        1,
        "exactly one first answer: {}",
        tally(&answers)
    );
}
