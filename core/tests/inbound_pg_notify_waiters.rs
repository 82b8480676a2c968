//! PostgreSQL: the `idem_inbound` trigger notifies only records that a
//! waiter marked. A settled record nobody waits for, and a lease renewal,
//! send nothing (pg_notify serialises commits on one lock, so notifying
//! every completion halved write throughput at 32 writers). Alone in its
//! test binary: its completions wake every in-process waiter.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use idem::Fingerprint;
use idem::inbound::{Begin, BeginRequest, ClientKey, InboundLease, InboundStore, Scope};
use idem::ledger::PgStore;
use sqlx::postgres::PgListener;

fn scope(key: &str) -> Scope {
    Scope {
        actor: "alice".into(),
        endpoint: "notify".into(),
        key: ClientKey::new(key).unwrap(),
    }
}

async fn in_flight_lease(store: &PgStore, key: &str) -> InboundLease {
    let s = scope(key);
    let fp = Fingerprint::builder().method("POST").body(b"x").finish();
    let req = BeginRequest {
        scope: &s,
        fingerprint: &fp,
        ttl: Duration::from_secs(3600),
        lease_for: Duration::from_secs(600),
    };
    match store.begin(&req, SystemTime::now()).await.unwrap() {
        Begin::Started(lease) => lease,
        other => panic!("fresh key: {other:?}"),
    }
}

/// The next notification on the `idem_inbound` channel within `within`.
async fn next_notification(listener: &mut PgListener, within: Duration) -> Option<String> {
    tokio::time::timeout(within, listener.recv())
        .await
        .ok()
        .map(|n| n.unwrap().payload().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_records_somebody_waits_for_notify() {
    let Some(url) = idem::testing::pg_database_url("inbound_pg_notify_waiters").await else {
        return;
    };
    let store = PgStore::connect(&url).await.unwrap();
    let mut listener = PgListener::connect(&url).await.unwrap();
    listener.listen("idem_inbound").await.unwrap();
    let answer = || idem::inbound::StoredResponse {
        status: StatusCode::CREATED,
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"done"),
        replayable: true,
    };

    // Nobody waits: a renewal and a completion send nothing.
    let lease = in_flight_lease(&store, "k-alone").await;
    store
        .renew(&lease, Duration::from_secs(600), SystemTime::now())
        .await
        .unwrap();
    assert!(
        store
            .complete(&lease, &answer(), SystemTime::now())
            .await
            .unwrap()
    );
    assert_eq!(
        next_notification(&mut listener, Duration::from_millis(500)).await,
        None,
        "a record nobody waits for settles without a notification"
    );

    // A waiter marks the record: its renewal still sends nothing, its
    // completion notifies once, with the key.
    let lease = in_flight_lease(&store, "k-awaited").await;
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_change(&scope("k-awaited"), Duration::from_secs(60))
                .await;
        })
    };
    let marked = async {
        loop {
            let waiting: bool =
                sqlx::query_scalar("SELECT waiting FROM idem_inbound WHERE key = $1")
                    .bind("k-awaited")
                    .fetch_one(store.pool())
                    .await
                    .unwrap();
            if waiting {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), marked)
        .await
        .expect("the waiter marks the record");
    store
        .renew(&lease, Duration::from_secs(600), SystemTime::now())
        .await
        .unwrap();
    assert_eq!(
        next_notification(&mut listener, Duration::from_millis(300)).await,
        None,
        "a renewal is no settlement"
    );
    assert!(
        store
            .complete(&lease, &answer(), SystemTime::now())
            .await
            .unwrap()
    );
    assert_eq!(
        next_notification(&mut listener, Duration::from_secs(10))
            .await
            .as_deref(),
        Some("k-awaited")
    );
    tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the waiter wakes")
        .unwrap();
}
