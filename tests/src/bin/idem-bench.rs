//! Benchmarks of idem's inbound side, with baselines measured in the same run:
//!
//! * `load`: a load generator against the inbound example server
//!   (`idem_examples::inbound::app`) on loopback, next to the same handler
//!   without the layer: throughput and p50/p99, fresh keys and replays.
//! * `lookup`: replay lookup latency at the store (the `begin` call that
//!   finds a completed record), SQLite and PostgreSQL.
//! * `growth`: lookup and first-request cost at 10^3 .. 10^6 stored records,
//!   with the database's query plan for the lookup.
//! * `sweep`: the sweeper deleting 1,000,000 expired records in batches while
//!   writers keep going: the writers' worst stall, against the same writers
//!   with no sweep.
//!
//! ```text
//! cargo run --release -p idem-tests --bin idem-bench -- [all|load|lookup|growth|sweep] [--quick]
//! ```
//!
//! PostgreSQL cases use `IDEM_TEST_DATABASE_URL` (default
//! postgres://postgres:postgres@127.0.0.1:5432/postgres) and a fresh database
//! each; they are skipped with a message when no server is reachable.
//! Every loop is bounded in count; servers listen on 127.0.0.1 only.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::post;
use idem::Fingerprint;
use idem::inbound::IdempotencyLayer;
use idem::inbound::{
    Begin, BeginRequest, ClientKey, InboundStore, RecordState, Scope, StoredResponse, Sweeper,
};
use idem::ledger::{PgStore, SqliteStore};
use idem_examples::inbound::Counters;
use idem_tests::http1::Conn;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const ENDPOINT: &str = "create-order";
const ACTOR: &str = "bench";
const TTL: Duration = Duration::from_secs(24 * 3600);
const DAY_MS: i64 = 24 * 3600 * 1000;

#[derive(Clone, Copy)]
struct Sizes {
    load_clients: usize,
    load_requests: usize,
    lookups: usize,
    growth: &'static [usize],
    sweep_rows: usize,
    writers: usize,
    baseline: Duration,
}

const FULL: Sizes = Sizes {
    load_clients: 32,
    load_requests: 500,
    lookups: 10_000,
    growth: &[1_000, 10_000, 100_000, 1_000_000],
    sweep_rows: 1_000_000,
    writers: 4,
    baseline: Duration::from_secs(5),
};

const QUICK: Sizes = Sizes {
    load_clients: 4,
    load_requests: 50,
    lookups: 500,
    growth: &[1_000, 10_000],
    sweep_rows: 20_000,
    writers: 2,
    baseline: Duration::from_secs(1),
};

/// Latency summary.
struct Stats {
    n: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut v: Vec<Duration>) -> Self {
        v.sort_unstable();
        let at = |q: f64| {
            if v.is_empty() {
                Duration::ZERO
            } else {
                v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1]
            }
        };
        Self {
            n: v.len(),
            p50: at(0.50),
            p99: at(0.99),
            max: v.last().copied().unwrap_or_default(),
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

#[derive(Clone)]
enum Db {
    Sqlite(SqliteStore),
    Pg(PgStore),
}

impl Db {
    fn name(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "SQLite",
            Self::Pg(_) => "PostgreSQL",
        }
    }

    fn store(&self) -> Arc<dyn InboundStore> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Pg(s) => Arc::new(s.clone()),
        }
    }

    /// Copies the record with key `tmpl` as keys `g-<from+1>` .. `g-<to>`,
    /// with the given times, in chunks.
    async fn grow(&self, from: usize, to: usize, created_ms: i64, replay_until_ms: i64) {
        let mut start = from;
        while start < to {
            let end = (start + 100_000).min(to);
            match self {
                Self::Sqlite(s) => {
                    sqlx::query(
                        "WITH RECURSIVE c(x) AS (SELECT ?1 UNION ALL SELECT x + 1 FROM c WHERE x < ?2) \
                         INSERT INTO idem_inbound (actor, endpoint, key, fingerprint, state, lease_token, \
                         lease_expires_at, replay_until, created_at, updated_at, response_status, \
                         response_headers, response_body, replayable) \
                         SELECT actor, endpoint, 'g-' || x, fingerprint, state, NULL, NULL, ?3, ?4, ?4, \
                         response_status, response_headers, response_body, replayable \
                         FROM idem_inbound, c WHERE key = 'tmpl'",
                    )
                    .bind(i64::try_from(start + 1).unwrap_or(0))
                    .bind(i64::try_from(end).unwrap_or(0))
                    .bind(replay_until_ms)
                    .bind(created_ms)
                    .execute(s.pool())
                    .await
                    .expect("bulk insert (SQLite)");
                }
                Self::Pg(s) => {
                    sqlx::query(
                        "INSERT INTO idem_inbound (actor, endpoint, key, fingerprint, state, lease_token, \
                         lease_expires_at, replay_until, created_at, updated_at, response_status, \
                         response_headers, response_body, replayable) \
                         SELECT actor, endpoint, 'g-' || x, fingerprint, state, NULL, NULL, $3, $4, $4, \
                         response_status, response_headers, response_body, replayable \
                         FROM idem_inbound, generate_series($1::bigint, $2::bigint) AS x WHERE key = 'tmpl'",
                    )
                    .bind(i64::try_from(start + 1).unwrap_or(0))
                    .bind(i64::try_from(end).unwrap_or(0))
                    .bind(replay_until_ms)
                    .bind(created_ms)
                    .execute(s.pool())
                    .await
                    .expect("bulk insert (PostgreSQL)");
                }
            }
            start = end;
        }
        if let Self::Pg(s) = self {
            sqlx::query("ANALYZE idem_inbound")
                .execute(s.pool())
                .await
                .expect("analyze");
        }
    }

    /// Times one bare `SELECT` of a record by its key, through the store's
    /// pool: the floor under any lookup.
    async fn raw_select(&self, key: &str) -> Duration {
        let t = Instant::now();
        let found = match self {
            Self::Sqlite(s) => sqlx::query(
                "SELECT response_body FROM idem_inbound WHERE actor = ?1 AND endpoint = ?2 AND key = ?3",
            )
            .bind(ACTOR)
            .bind(ENDPOINT)
            .bind(key)
            .fetch_optional(s.pool())
            .await
            .expect("select")
            .is_some(),
            Self::Pg(s) => sqlx::query(
                "SELECT response_body FROM idem_inbound WHERE actor = $1 AND endpoint = $2 AND key = $3",
            )
            .bind(ACTOR)
            .bind(ENDPOINT)
            .bind(key)
            .fetch_optional(s.pool())
            .await
            .expect("select")
            .is_some(),
        };
        let took = t.elapsed();
        assert!(found, "{key} is stored");
        took
    }

    /// The database's plan for the replay lookup by scope.
    async fn lookup_plan(&self) -> String {
        match self {
            Self::Sqlite(s) => {
                let rows: Vec<(i64, i64, i64, String)> = sqlx::query_as(
                    "EXPLAIN QUERY PLAN SELECT * FROM idem_inbound \
                     WHERE actor = 'bench' AND endpoint = 'create-order' AND key = 'g-1'",
                )
                .fetch_all(s.pool())
                .await
                .expect("explain");
                rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
            }
            Self::Pg(s) => {
                let rows: Vec<(String,)> = sqlx::query_as(
                    "EXPLAIN SELECT * FROM idem_inbound \
                     WHERE actor = 'bench' AND endpoint = 'create-order' AND key = 'g-1'",
                )
                .fetch_all(s.pool())
                .await
                .expect("explain");
                rows.into_iter()
                    .map(|r| r.0.trim().to_owned())
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        }
    }
}

async fn databases(label: &str) -> (Vec<Db>, Vec<tempfile::TempDir>) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let sqlite = SqliteStore::open(dir.path().join(format!("{label}.db")))
        .await
        .expect("open SQLite");
    let mut dbs = vec![Db::Sqlite(sqlite)];
    match idem::testing::pg_database_url(label).await {
        Some(url) => dbs.push(Db::Pg(PgStore::connect(&url).await.expect("connect"))),
        None => println!("(PostgreSQL unreachable: its rows are missing below)"),
    }
    (dbs, vec![dir])
}

fn scope(key: &str) -> Scope {
    Scope {
        actor: ACTOR.into(),
        endpoint: ENDPOINT.into(),
        key: ClientKey::new(key).expect("valid client key"),
    }
}

fn fingerprint() -> Fingerprint {
    Fingerprint::builder()
        .method("POST")
        .target("/orders")
        .body(br#"{"item":"bike"}"#)
        .finish()
}

fn answer() -> StoredResponse {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("value"),
    );
    headers.insert(header::LOCATION, "/orders/1".parse().expect("value"));
    StoredResponse {
        status: StatusCode::CREATED,
        headers,
        body: bytes_of(r#"{"id":1,"item":"bike"}"#),
        replayable: true,
    }
}

fn bytes_of(s: &'static str) -> axum::body::Bytes {
    axum::body::Bytes::from_static(s.as_bytes())
}

/// A first request: begin (insert) and complete.
async fn first_request(store: &dyn InboundStore, key: &str) -> Duration {
    let scope = scope(key);
    let fp = fingerprint();
    let req = BeginRequest {
        scope: &scope,
        fingerprint: &fp,
        ttl: TTL,
        lease_for: Duration::from_secs(30),
    };
    let t = Instant::now();
    let now = SystemTime::now();
    match store.begin(&req, now).await.expect("begin") {
        Begin::Started(lease) => {
            assert!(
                store
                    .complete(&lease, &answer(), now)
                    .await
                    .expect("complete"),
                "lease held"
            );
        }
        other => panic!("{key}: expected a new record, got {other:?}"),
    }
    t.elapsed()
}

/// A replay lookup: begin on a completed record.
async fn replay_lookup(store: &dyn InboundStore, key: &str) -> Duration {
    let scope = scope(key);
    let fp = fingerprint();
    let req = BeginRequest {
        scope: &scope,
        fingerprint: &fp,
        ttl: TTL,
        lease_for: Duration::from_secs(30),
    };
    let t = Instant::now();
    let found = store.begin(&req, SystemTime::now()).await.expect("begin");
    let took = t.elapsed();
    match found {
        Begin::Existing(r) if r.state == RecordState::Completed && r.response.is_some() => took,
        other => panic!("{key}: expected a completed record, got {other:?}"),
    }
}

// ---------------------------------------------------------------- load

async fn bare_order(
    State(c): State<Arc<Counters>>,
    axum::Json(body): axum::Json<Value>,
) -> impl IntoResponse {
    // The example's `create_order`, without the idempotency layer.
    let id = c.orders.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{id}"))],
        axum::Json(json!({ "id": id, "item": body.get("item") })),
    )
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, router).await });
    addr
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Bare,
    Fresh,
    Replay,
}

static KEYS: AtomicU64 = AtomicU64::new(0);

/// Runs `load_clients` clients, each on its own kept-alive connection, each
/// sending `load_requests` requests one after another. Returns the latency
/// summary and the throughput.
async fn generate(addr: SocketAddr, mode: Mode, sizes: Sizes) -> (Stats, f64) {
    let body = br#"{"item":"bike"}"#;
    let mut conns = Vec::new();
    for c in 0..sizes.load_clients {
        let mut conn = Conn::connect(addr).await.expect("connect");
        let key = format!("replay-{}-{c}", KEYS.fetch_add(1, Ordering::Relaxed));
        if mode == Mode::Replay {
            // The key's record is made first (not timed).
            assert_eq!(send(&mut conn, Some(&key), body).await, 201);
        }
        conns.push((conn, key));
    }
    let started = Instant::now();
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|(mut conn, replay_key)| {
            tokio::spawn(async move {
                let mut times = Vec::with_capacity(sizes.load_requests);
                for _ in 0..sizes.load_requests {
                    let key = match mode {
                        Mode::Bare => None,
                        Mode::Fresh => {
                            Some(format!("fresh-{}", KEYS.fetch_add(1, Ordering::Relaxed)))
                        }
                        Mode::Replay => Some(replay_key.clone()),
                    };
                    let t = Instant::now();
                    let status = send(&mut conn, key.as_deref(), body).await;
                    times.push(t.elapsed());
                    assert_eq!(status, 201, "every answer is the order (first or replayed)");
                }
                times
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let wall = started.elapsed().as_secs_f64();
    let n = all.len();
    (Stats::of(all), n as f64 / wall)
}

async fn send(conn: &mut Conn, key: Option<&str>, body: &[u8]) -> u16 {
    let mut headers = vec![("authorization", "Bearer alice")];
    if let Some(k) = key {
        headers.push(("idempotency-key", k));
    }
    conn.post_json("/orders", &headers, body)
        .await
        .expect("the loopback server answers")
        .status
}

/// The insert-handler baseline: the same `POST /orders`, which now inserts
/// one order into the database the store uses (what a real create endpoint
/// does), with no idempotency layer. The layered rows wrap this handler.
#[derive(Clone)]
enum OrderDb {
    Sqlite(sqlx::SqlitePool),
    Pg(sqlx::PgPool),
}

const ORDERS_SQLITE: &str = "CREATE TABLE IF NOT EXISTS bench_orders (id INTEGER PRIMARY KEY \
    AUTOINCREMENT, item TEXT NOT NULL, created_at BIGINT NOT NULL)";
const ORDERS_PG: &str = "CREATE TABLE IF NOT EXISTS bench_orders (id BIGINT GENERATED ALWAYS AS \
    IDENTITY PRIMARY KEY, item TEXT NOT NULL, created_at BIGINT NOT NULL)";
const INSERT_ORDER: &str =
    "INSERT INTO bench_orders (item, created_at) VALUES ($1, $2) RETURNING id";

async fn insert_order(
    State((db, c)): State<(OrderDb, Arc<Counters>)>,
    axum::Json(body): axum::Json<Value>,
) -> Result<impl IntoResponse, StatusCode> {
    let item = body
        .get("item")
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_owned();
    let id: i64 = match &db {
        OrderDb::Sqlite(pool) => {
            sqlx::query_scalar(INSERT_ORDER)
                .bind(&item)
                .bind(now_ms())
                .fetch_one(pool)
                .await
        }
        OrderDb::Pg(pool) => {
            sqlx::query_scalar(INSERT_ORDER)
                .bind(&item)
                .bind(now_ms())
                .fetch_one(pool)
                .await
        }
    }
    .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)?;
    c.orders.fetch_add(1, Ordering::SeqCst);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{id}"))],
        axum::Json(json!({ "id": id, "item": item })),
    ))
}

fn load_row(store: &str, label: &str, s: &Stats, rps: f64, base_rps: f64, runs: u64) {
    println!(
        "| {store} | {label} | {} | {rps:.0} | {:.2} | {} | {} | {} | {runs} |",
        s.n,
        rps / base_rps,
        ms(s.p50),
        ms(s.p99),
        ms(s.max)
    );
}

async fn load(sizes: Sizes) {
    println!("\n## Inbound load: the layer on loopback vs the same handler without it\n");
    println!(
        "{} concurrent clients x {} requests each per row; `POST /orders` with a JSON body. \
         \"insert handler\" inserts one order into the store's database; the layered rows wrap \
         that handler in `IdempotencyLayer` (the example's `create-order` endpoint config and \
         actor). Ratios are to the insert handler on the same database, measured in the same run.\n",
        sizes.load_clients, sizes.load_requests
    );
    println!(
        "| store | mode | requests | throughput (req/s) | vs insert handler | p50 (ms) | p99 (ms) | max (ms) | handler runs |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let counters = Arc::new(Counters::default());
    let bare_addr = serve(
        Router::new()
            .route("/orders", post(bare_order))
            .with_state(counters.clone()),
    )
    .await;
    let (bare, bare_rps) = generate(bare_addr, Mode::Bare, sizes).await;
    println!(
        "| none | handler without a database (reference) | {} | {bare_rps:.0} | – | {} | {} | {} | {} |",
        bare.n,
        ms(bare.p50),
        ms(bare.p99),
        ms(bare.max),
        counters.orders.load(Ordering::SeqCst)
    );
    let (dbs, _dirs) = databases("bench_load").await;
    for db in dbs {
        let orders = match &db {
            Db::Sqlite(s) => {
                sqlx::query(ORDERS_SQLITE)
                    .execute(s.pool())
                    .await
                    .expect("orders table");
                OrderDb::Sqlite(s.pool().clone())
            }
            Db::Pg(s) => {
                sqlx::query(ORDERS_PG)
                    .execute(s.pool())
                    .await
                    .expect("orders table");
                OrderDb::Pg(s.pool().clone())
            }
        };
        let counters = Arc::new(Counters::default());
        let plain = serve(
            Router::new()
                .route("/orders", post(insert_order))
                .with_state((orders.clone(), counters.clone())),
        )
        .await;
        let (s, base_rps) = generate(plain, Mode::Bare, sizes).await;
        let runs = counters.orders.swap(0, Ordering::SeqCst);
        load_row(db.name(), "insert handler", &s, base_rps, base_rps, runs);
        let config = idem_examples::inbound::endpoints().expect("endpoint config")[0].clone();
        let layer = match &db {
            Db::Sqlite(s) => {
                let layer = IdempotencyLayer::new(s.clone(), config);
                Router::new().route(
                    "/orders",
                    post(insert_order).route_layer(layer.actor_from(idem_examples::inbound::actor)),
                )
            }
            Db::Pg(s) => {
                let layer = IdempotencyLayer::new(s.clone(), config);
                Router::new().route(
                    "/orders",
                    post(insert_order).route_layer(layer.actor_from(idem_examples::inbound::actor)),
                )
            }
        };
        let layered = serve(layer.with_state((orders, counters.clone()))).await;
        for (mode, label) in [
            (Mode::Fresh, "layer + insert handler, fresh keys"),
            (Mode::Replay, "layer + insert handler, replays"),
        ] {
            let before = counters.orders.load(Ordering::SeqCst);
            let (s, rps) = generate(layered, mode, sizes).await;
            let runs = counters.orders.load(Ordering::SeqCst) - before;
            let expected = match mode {
                Mode::Fresh => (sizes.load_clients * sizes.load_requests) as u64,
                _ => sizes.load_clients as u64,
            };
            assert_eq!(
                runs, expected,
                "handler runs: once per fresh key, once per replayed key"
            );
            load_row(db.name(), label, &s, rps, base_rps, runs);
        }
    }
}

// ---------------------------------------------------------------- lookup

async fn lookup(sizes: Sizes) {
    println!("\n## Replay lookup latency at the store\n");
    println!(
        "`InboundStore::begin` on a completed record (what a replay costs before the answer is written out), \
         {} lookups over 1,000 records, one at a time. Targets: p99 < 1 ms (SQLite), < 2 ms (PostgreSQL, loopback).\n",
        sizes.lookups
    );
    println!(
        "Baseline in the same run: a bare `SELECT` of the record by its UNIQUE key through the same pool.\n"
    );
    println!("| store | case | lookups | p50 (ms) | p99 (ms) | max (ms) | target | met |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    let (dbs, _dirs) = databases("bench_lookup").await;
    let mut rng = StdRng::seed_from_u64(1);
    for db in dbs {
        let store = db.store();
        for i in 0..1000 {
            first_request(&*store, &format!("k-{i}")).await;
        }
        let mut times = Vec::with_capacity(sizes.lookups);
        for _ in 0..sizes.lookups {
            let i = rng.random_range(0..1000);
            times.push(replay_lookup(&*store, &format!("k-{i}")).await);
        }
        let mut raw = Vec::with_capacity(sizes.lookups);
        for _ in 0..sizes.lookups {
            let key = format!("k-{}", rng.random_range(0..1000));
            raw.push(db.raw_select(&key).await);
        }
        let r = Stats::of(raw);
        let s = Stats::of(times);
        println!(
            "| {} | bare SELECT (baseline) | {} | {} | {} | {} | | |",
            db.name(),
            r.n,
            ms(r.p50),
            ms(r.p99),
            ms(r.max)
        );
        let target = match db {
            Db::Sqlite(_) => Duration::from_millis(1),
            Db::Pg(_) => Duration::from_millis(2),
        };
        println!(
            "| {} | replay lookup (`begin`) | {} | {} | {} | {} | < {} | {} |",
            db.name(),
            s.n,
            ms(s.p50),
            ms(s.p99),
            ms(s.max),
            ms(target),
            if s.p99 < target { "yes" } else { "**no**" }
        );
    }
}

// ---------------------------------------------------------------- growth

async fn growth(sizes: Sizes) {
    println!("\n## Cost growth with stored records\n");
    println!(
        "At each size: {} replay lookups of random stored keys and 1,000 first requests (insert + complete), one at a time.\n",
        sizes.lookups.min(5_000)
    );
    println!(
        "| store | records | lookup p50 (ms) | lookup p99 (ms) | lookup p50 vs 10^3 | first request p50 (ms) | first request p99 (ms) | first p50 vs 10^3 |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let (dbs, _dirs) = databases("bench_growth").await;
    let mut plans = Vec::new();
    let mut rng = StdRng::seed_from_u64(2);
    for db in dbs {
        let store = db.store();
        first_request(&*store, "tmpl").await;
        let mut have = 0;
        let mut base: Option<(Duration, Duration)> = None;
        for &n in sizes.growth {
            let now = now_ms();
            db.grow(have, n, now, now + DAY_MS).await;
            have = n;
            let mut look = Vec::new();
            for _ in 0..sizes.lookups.min(5_000) {
                let i = rng.random_range(1..=n);
                look.push(replay_lookup(&*store, &format!("g-{i}")).await);
            }
            let mut first = Vec::new();
            for _ in 0..1000 {
                let key = format!("f-{}", KEYS.fetch_add(1, Ordering::Relaxed));
                first.push(first_request(&*store, &key).await);
            }
            let (l, f) = (Stats::of(look), Stats::of(first));
            let (l0, f0) = *base.get_or_insert((l.p50, f.p50));
            println!(
                "| {} | {n} | {} | {} | {:.2} | {} | {} | {:.2} |",
                db.name(),
                ms(l.p50),
                ms(l.p99),
                l.p50.as_secs_f64() / l0.as_secs_f64(),
                ms(f.p50),
                ms(f.p99),
                f.p50.as_secs_f64() / f0.as_secs_f64(),
            );
        }
        plans.push(format!(
            "- {} at {have} records: `{}`",
            db.name(),
            db.lookup_plan().await
        ));
    }
    println!("\nQuery plans of the lookup by (actor, endpoint, key):\n");
    for p in plans {
        println!("{p}");
    }
}

// ---------------------------------------------------------------- sweep

async fn writers_for(
    store: Arc<dyn InboundStore>,
    writers: usize,
    stop: Arc<AtomicBool>,
) -> Vec<Duration> {
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move {
                let mut times = Vec::new();
                // Bounded: at most a million writes per writer.
                for _ in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("w-{}", KEYS.fetch_add(1, Ordering::Relaxed));
                    times.push(first_request(&*store, &key).await);
                }
                times
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("writer"));
    }
    all
}

async fn sweep(sizes: Sizes) {
    println!(
        "\n## Sweeper: {} expired records deleted in batches while writers keep going\n",
        sizes.sweep_rows
    );
    println!(
        "{} writers make first requests (insert + complete) one after another. Baseline: the same writers for {:?} with no sweep. \
         Sweep: `Sweeper::run_once` with batches of 1,000 rows until nothing is left.\n",
        sizes.writers, sizes.baseline
    );
    println!(
        "| store | phase | writes | writes/s | p50 (ms) | p99 (ms) | worst stall (ms) | deleted | batches | sweep time (s) | deleted/s |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let (dbs, _dirs) = databases("bench_sweep").await;
    for db in dbs {
        let store = db.store();
        first_request(&*store, "tmpl").await;
        let now = now_ms();
        let t = Instant::now();
        db.grow(0, sizes.sweep_rows, now - 8 * DAY_MS, now - 7 * DAY_MS)
            .await;
        let filled = t.elapsed();

        let stop = Arc::new(AtomicBool::new(false));
        let w = tokio::spawn(writers_for(store.clone(), sizes.writers, stop.clone()));
        tokio::time::sleep(sizes.baseline).await;
        stop.store(true, Ordering::Relaxed);
        let base = w.await.expect("writers");
        let base_n = base.len();
        let b = Stats::of(base);
        println!(
            "| {} | baseline, no sweep | {base_n} | {:.0} | {} | {} | {} | | | | |",
            db.name(),
            base_n as f64 / sizes.baseline.as_secs_f64(),
            ms(b.p50),
            ms(b.p99),
            ms(b.max)
        );

        let stop = Arc::new(AtomicBool::new(false));
        let w = tokio::spawn(writers_for(store.clone(), sizes.writers, stop.clone()));
        let sweeper = match &db {
            Db::Sqlite(s) => SweeperRun::Sqlite(
                Sweeper::new(s.clone())
                    .batch_size(1000)
                    .max_batches(1_000_000)
                    .build()
                    .expect("sweeper"),
            ),
            Db::Pg(s) => SweeperRun::Pg(
                Sweeper::new(s.clone())
                    .batch_size(1000)
                    .max_batches(1_000_000)
                    .build()
                    .expect("sweeper"),
            ),
        };
        let t = Instant::now();
        let (deleted, batches) = sweeper.run().await;
        let took = t.elapsed();
        stop.store(true, Ordering::Relaxed);
        let during = w.await.expect("writers");
        let n = during.len();
        let d = Stats::of(during);
        assert_eq!(
            deleted, sizes.sweep_rows as u64,
            "every expired record deleted, nothing else"
        );
        println!(
            "| {} | during sweep | {n} | {:.0} | {} | {} | {} | {deleted} | {batches} | {:.1} | {:.0} |",
            db.name(),
            n as f64 / took.as_secs_f64(),
            ms(d.p50),
            ms(d.p99),
            ms(d.max),
            took.as_secs_f64(),
            deleted as f64 / took.as_secs_f64()
        );
        println!(
            "| {} | (filling {} rows took {:.1} s) | | | | | | | | | |",
            db.name(),
            sizes.sweep_rows,
            filled.as_secs_f64()
        );
    }
}

enum SweeperRun {
    Sqlite(Sweeper<SqliteStore>),
    Pg(Sweeper<PgStore>),
}

impl SweeperRun {
    async fn run(&self) -> (u64, u32) {
        let (mut deleted, mut batches) = (0, 0);
        // Bounded: a run does at most max_batches; a few runs suffice.
        for _ in 0..100 {
            let report = match self {
                Self::Sqlite(s) => s.run_once().await,
                Self::Pg(s) => s.run_once().await,
            }
            .expect("sweep");
            deleted += report.deleted;
            batches += report.batches;
            if !report.more_left {
                break;
            }
        }
        (deleted, batches)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let which = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map_or("all", String::as_str)
        .to_owned();
    let sizes = if quick { QUICK } else { FULL };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        println!(
            "idem-bench {which}{} on {} CPU(s), {}",
            if quick { " --quick" } else { "" },
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            if cfg!(debug_assertions) {
                "debug build (numbers not representative)"
            } else {
                "release build"
            }
        );
        if matches!(which.as_str(), "all" | "load") {
            load(sizes).await;
        }
        if matches!(which.as_str(), "all" | "lookup") {
            lookup(sizes).await;
        }
        if matches!(which.as_str(), "all" | "growth") {
            growth(sizes).await;
        }
        if matches!(which.as_str(), "all" | "sweep") {
            sweep(sizes).await;
        }
    });
}
