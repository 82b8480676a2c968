//! The ledger's cost per outbound operation, next to the same call to the
//! same local mock without a ledger row (`Executor::read`: the executor's
//! client, middleware and retry loop, nothing recorded), in the same run. The
//! bench goes through the executor only, so it needs no HTTP client of its own
//! and passes the rule-5 lint like any other code. `ledger_only` compares the two ways a
//! fresh key can be recorded: `begin` + `claim` (two writes) and
//! `begin_claimed` (one write, the executor's path), each followed by
//! `complete`.
//!
//! `cargo bench -p idem --bench ledger` (PostgreSQL cases need a server at
//! `IDEM_TEST_DATABASE_URL`, default postgres://postgres:postgres@127.0.0.1:5432/postgres;
//! they are skipped with a message when none is reachable).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use idem::executor::{StatusClassifier, Url};
use idem::ledger::{Begin, ClaimFrom, Completion, NewOperation};
use idem::{
    Executor, Fingerprint, IdempotencyKey, LedgerStore, OutboundRequest, Provider, SafetyClass,
};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

static SEQ: AtomicU64 = AtomicU64::new(0);

fn fresh_key(prefix: &str) -> IdempotencyKey {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    IdempotencyKey::new("bench", prefix, &n.to_string(), 1).expect("valid key")
}

fn request(url: &Url) -> OutboundRequest {
    OutboundRequest::post(url.clone()).form([("amount", "500"), ("currency", "usd")])
}

async fn ledger_only(store: &dyn LedgerStore) {
    let key = fresh_key("ledger");
    let fp = Fingerprint::builder().body(b"amount=500").finish();
    let now = SystemTime::now();
    store
        .begin(&NewOperation::new(key.clone(), "bench", "op", fp), now)
        .await
        .expect("begin");
    let lease = store
        .claim(
            &key,
            ClaimFrom::Pending,
            std::time::Duration::from_secs(60),
            now,
        )
        .await
        .expect("claim")
        .expect("claimed");
    let done = Completion::Succeeded {
        status: 200,
        body: bytes::Bytes::from_static(b"{\"id\":\"x\"}"),
    };
    store.complete(&lease, &done, now).await.expect("complete");
}

/// The executor's path for a fresh key: record and claim in one write, then
/// complete.
async fn ledger_one_write(store: &dyn LedgerStore) {
    let key = fresh_key("onewrite");
    let fp = Fingerprint::builder().body(b"amount=500").finish();
    let now = SystemTime::now();
    let begun = store
        .begin_claimed(
            &NewOperation::new(key, "bench", "op", fp),
            std::time::Duration::from_secs(60),
            now,
        )
        .await
        .expect("begin_claimed");
    let Begin::Claimed(_, lease) = begun else {
        panic!("fresh key must be claimed")
    };
    let done = Completion::Succeeded {
        status: 200,
        body: bytes::Bytes::from_static(b"{\"id\":\"x\"}"),
    };
    store.complete(&lease, &done, now).await.expect("complete");
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let server = rt.block_on(async {
        let server = MockServer::builder()
            .disable_request_recording()
            .start()
            .await;
        for m in ["POST", "GET"] {
            Mock::given(method(m))
                .respond_with(ResponseTemplate::new(200).set_body_string("{\"id\":\"x\"}"))
                .mount(&server)
                .await;
        }
        server
    });
    let url: Url = format!("{}/v1/charges", server.uri()).parse().expect("url");
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = rt.block_on(async {
        idem::ledger::SqliteStore::open(dir.path().join("bench.db"))
            .await
            .expect("sqlite")
    });
    let pg = rt.block_on(async {
        match idem::testing::pg_database_url("ledger bench").await {
            Some(url) => Some(idem::ledger::PgStore::connect(&url).await.expect("pg")),
            None => None,
        }
    });
    let provider = Provider::new("bench", SafetyClass::LocalOnly, StatusClassifier);
    // One executor per store, on the executor's default HTTP settings.
    let sqlite_exec = Executor::builder(sqlite.clone()).build();

    let mut group = c.benchmark_group("outbound_call");
    // Baseline: the same transport with no ledger row (an unrecorded GET).
    group.bench_function("unrecorded_read", |b| {
        b.to_async(&rt).iter(|| async {
            let resp = sqlite_exec
                .read(&provider, OutboundRequest::get(url.clone()))
                .await
                .expect("read");
            assert!(resp.is_success());
        });
    });
    group.bench_function("executor_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            let key = fresh_key("sqlite");
            sqlite_exec
                .execute(&provider, &key, "charges.create", request(&url))
                .await
                .expect("execute");
        });
    });
    if let Some(pg) = &pg {
        let pg_exec = Executor::builder(pg.clone()).build();
        group.bench_function("executor_postgres", |b| {
            b.to_async(&rt).iter(|| async {
                let key = fresh_key("pg");
                pg_exec
                    .execute(&provider, &key, "charges.create", request(&url))
                    .await
                    .expect("execute");
            });
        });
    }
    group.finish();

    let mut group = c.benchmark_group("ledger_only");
    let sqlite_dyn: Arc<dyn LedgerStore> = Arc::new(sqlite.clone());
    group.bench_function("begin_claim_complete_sqlite", |b| {
        b.to_async(&rt).iter(|| ledger_only(&*sqlite_dyn));
    });
    group.bench_function("begin_claimed_complete_sqlite", |b| {
        b.to_async(&rt).iter(|| ledger_one_write(&*sqlite_dyn));
    });
    if let Some(pg) = &pg {
        let pg_dyn: Arc<dyn LedgerStore> = Arc::new(pg.clone());
        group.bench_function("begin_claim_complete_postgres", |b| {
            b.to_async(&rt).iter(|| ledger_only(&*pg_dyn));
        });
        group.bench_function("begin_claimed_complete_postgres", |b| {
            b.to_async(&rt).iter(|| ledger_one_write(&*pg_dyn));
        });
    }
    // A retried job whose operation already succeeded: answered from the ledger.
    let done_key = fresh_key("replay");
    rt.block_on(sqlite_exec.execute(&provider, &done_key, "charges.create", request(&url)))
        .expect("seed");
    group.bench_function("replay_from_ledger_sqlite", |b| {
        b.to_async(&rt).iter(|| async {
            let d = sqlite_exec
                .execute(&provider, &done_key, "charges.create", request(&url))
                .await
                .expect("replay");
            assert!(d.from_ledger());
        });
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(4));
    targets = bench
}
criterion_main!(benches);
