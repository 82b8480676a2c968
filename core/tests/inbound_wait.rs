//! In-flight duplicates (`InFlightPolicy`, `Prefer: wait=N`), the
//! transactional mode's lost lease, and the spawned sweeper, on SQLite and
//! PostgreSQL.
//!
//! The first request is held inside its handler by a gate, so "in flight" is
//! a fact rather than a timing guess; a wrapper store reports when a
//! duplicate starts waiting.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idem::inbound::{
    Begin, BeginRequest, ClientKey, EndpointConfig, InFlightPolicy, InboundLease, InboundRecord,
    InboundStore, Scope, StoredResponse, SweepRun, Sweeper, TxInboundStore, with_idempotency,
    with_idempotency_tx,
};
use idem::{Clock, Fingerprint, ManualClock, StoreError};
use tokio::sync::Notify;

// ---- a store that reports waits, and can run a hook before `begin_tx` -------

struct Watched<S> {
    inner: S,
    waits: AtomicUsize,
    waiting: Notify,
    before_tx: Mutex<Option<BoxFuture<'static, ()>>>,
}

impl<S: std::fmt::Debug> std::fmt::Debug for Watched<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Watched<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            waits: AtomicUsize::new(0),
            waiting: Notify::new(),
            before_tx: Mutex::new(None),
        }
    }
}

#[async_trait]
impl<S: InboundStore> InboundStore for Watched<S> {
    async fn begin(&self, req: &BeginRequest<'_>, now: SystemTime) -> Result<Begin, StoreError> {
        self.inner.begin(req, now).await
    }
    async fn get(&self, scope: &Scope) -> Result<Option<InboundRecord>, StoreError> {
        self.inner.get(scope).await
    }
    async fn complete(
        &self,
        lease: &InboundLease,
        response: &StoredResponse,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.inner.complete(lease, response, now).await
    }
    async fn release(&self, lease: &InboundLease) -> Result<bool, StoreError> {
        self.inner.release(lease).await
    }
    async fn renew(
        &self,
        lease: &InboundLease,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.inner.renew(lease, lease_for, now).await
    }
    async fn sweep_batch(
        &self,
        cutoff: SystemTime,
        now: SystemTime,
        batch: u32,
    ) -> Result<u64, StoreError> {
        self.inner.sweep_batch(cutoff, now, batch).await
    }
    async fn record_sweep(&self, run: &SweepRun) -> Result<(), StoreError> {
        self.inner.record_sweep(run).await
    }
    async fn sweep_runs(&self, limit: u32) -> Result<Vec<SweepRun>, StoreError> {
        self.inner.sweep_runs(limit).await
    }
    async fn wait_for_change(&self, scope: &Scope, timeout: Duration) {
        self.waits.fetch_add(1, Ordering::SeqCst);
        self.waiting.notify_one();
        self.inner.wait_for_change(scope, timeout).await;
    }
}

#[async_trait]
impl<S: TxInboundStore> TxInboundStore for Watched<S> {
    type Db = S::Db;

    async fn begin_tx(&self) -> Result<sqlx::Transaction<'static, S::Db>, StoreError> {
        let hook = self.before_tx.lock().unwrap().take();
        if let Some(hook) = hook {
            hook.await;
        }
        self.inner.begin_tx().await
    }

    async fn complete_in(
        tx: &mut sqlx::Transaction<'static, S::Db>,
        lease: &InboundLease,
        response: &StoredResponse,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        S::complete_in(tx, lease, response, now).await
    }
}

// ---- requests -------------------------------------------------------------

#[derive(Default)]
struct Gate {
    entered: Notify,
    open: Notify,
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Answer {
    fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }
    fn problem_type(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        v["type"].as_str().unwrap().to_owned()
    }
    fn retry_after(&self) -> u64 {
        self.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    }
}

fn post(key: &str, prefer: Option<&str>) -> Request<Full<Bytes>> {
    let mut b = Request::post("/orders")
        .header("idempotency-key", key)
        .extension(idem::inbound::Actor::new("alice"));
    if let Some(p) = prefer {
        b = b.header("prefer", p);
    }
    b.body(Full::new(Bytes::from_static(b"bike"))).unwrap()
}

async fn collect(r: Response<idem::inbound::InboundBody>) -> Answer {
    let (parts, body) = r.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// One request; the handler counts its runs and, with a gate, stops there
/// until the gate opens.
async fn call<S: InboundStore>(
    store: &S,
    config: &EndpointConfig,
    key: &str,
    prefer: Option<&str>,
    calls: &AtomicUsize,
    gate: Option<&Gate>,
) -> Answer {
    let r = with_idempotency(
        store,
        config,
        post(key, prefer),
        |_req: Request<Bytes>| async move {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            if let Some(g) = gate {
                g.entered.notify_one();
                g.open.notified().await;
            }
            Response::builder()
                .status(StatusCode::CREATED)
                .body(Full::new(Bytes::from(format!("order {n}"))))
                .unwrap()
        },
    )
    .await;
    collect(r).await
}

struct Held<S> {
    store: Arc<Watched<S>>,
    config: Arc<EndpointConfig>,
    calls: Arc<AtomicUsize>,
    gate: Arc<Gate>,
    first: tokio::task::JoinHandle<Answer>,
}

/// Starts a first request for `key` and returns once its handler runs (its
/// record is in flight and stays so until the gate opens).
async fn hold_first<S: InboundStore>(store: S, config: EndpointConfig, key: &str) -> Held<S> {
    let store = Arc::new(Watched::new(store));
    let config = Arc::new(config);
    let calls = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Gate::default());
    let first = {
        let (store, config, calls, gate) = (
            Arc::clone(&store),
            Arc::clone(&config),
            Arc::clone(&calls),
            Arc::clone(&gate),
        );
        let key = key.to_owned();
        tokio::spawn(async move { call(&*store, &config, &key, None, &calls, Some(&gate)).await })
    };
    gate.entered.notified().await;
    Held {
        store,
        config,
        calls,
        gate,
        first,
    }
}

impl<S: InboundStore> Held<S> {
    async fn duplicate(&self, key: &str, prefer: Option<&str>) -> Answer {
        call(&*self.store, &self.config, key, prefer, &self.calls, None).await
    }

    /// Lets the first request finish; it must have run and stored its answer.
    async fn finish(self) -> Answer {
        self.gate.open.notify_one();
        let a = self.first.await.unwrap();
        assert_eq!(a.status, StatusCode::CREATED);
        assert!(!a.replayed());
        a
    }
}

const IN_FLIGHT: &str = "urn:idem:problem:idempotency-key-in-flight";

// ---- Prefer: wait -------------------------------------------------------------

/// `Prefer: wait=2` under a wait policy: the duplicate waits for the first
/// request and replays its answer; the handler runs once.
async fn prefer_wait_replays_the_first_answer<S: InboundStore>(store: S) {
    let config = EndpointConfig::builder("wait-replay")
        .in_flight(InFlightPolicy::Wait(Duration::from_secs(10)))
        .build()
        .unwrap();
    let held = hold_first(store, config, "k-wait").await;
    let dup = {
        let (store, config, calls) = (
            Arc::clone(&held.store),
            Arc::clone(&held.config),
            Arc::clone(&held.calls),
        );
        tokio::spawn(
            async move { call(&*store, &config, "k-wait", Some("wait=2"), &calls, None).await },
        )
    };
    // Open the gate only once the duplicate is waiting on the record, so it
    // cannot have simply arrived after the first request finished.
    held.store.waiting.notified().await;
    assert!(!dup.is_finished(), "the duplicate waits");
    let calls = Arc::clone(&held.calls);
    let first = held.finish().await;
    let dup = dup.await.unwrap();
    assert_eq!(dup.status, StatusCode::CREATED, "replay, not 409: {dup:?}");
    assert!(dup.replayed());
    assert_eq!(dup.body, first.body);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler ran once");
}

/// The default policy: a duplicate gets 409 with `Retry-After` at once and
/// never waits, with or without `Prefer: wait`.
async fn default_policy_rejects_with_retry_after<S: InboundStore>(store: S) {
    let config = EndpointConfig::builder("wait-default")
        .lease(Duration::from_secs(30))
        .build()
        .unwrap();
    assert_eq!(config.in_flight(), InFlightPolicy::Reject);
    let held = hold_first(store, config, "k-reject").await;
    for prefer in [None, Some("wait=5")] {
        let dup = held.duplicate("k-reject", prefer).await;
        assert_eq!(dup.status, StatusCode::CONFLICT, "{prefer:?}");
        assert_eq!(dup.problem_type(), IN_FLIGHT);
        // The lease's remaining time (about 30 s), rounded up.
        assert!((28..=30).contains(&dup.retry_after()), "{prefer:?}");
        assert_eq!(dup.headers["idempotency-key"], "k-reject");
    }
    assert_eq!(
        held.store.waits.load(Ordering::SeqCst),
        0,
        "Reject never waits, whatever the client prefers"
    );
    assert_eq!(held.calls.load(Ordering::SeqCst), 1);
    held.finish().await;
}

/// `Prefer: wait=30` on an endpoint whose bound is 1 s: the duplicate gives
/// up after the bound (409 with `Retry-After`) while the first request is
/// still held, instead of waiting 30 s.
async fn prefer_wait_is_capped_by_the_endpoint_bound<S: InboundStore>(store: S) {
    let config = EndpointConfig::builder("wait-bound")
        .in_flight(InFlightPolicy::Wait(Duration::from_secs(1)))
        .build()
        .unwrap();
    let held = hold_first(store, config, "k-bound").await;
    let started = Instant::now();
    let dup = tokio::time::timeout(
        Duration::from_secs(15),
        held.duplicate("k-bound", Some("wait=30")),
    )
    .await
    .expect("the wait ends at the endpoint's 1 s bound, not the client's 30 s");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited up to the bound before giving up"
    );
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.problem_type(), IN_FLIGHT);
    // At most the default 10 s lease, renewed while the first one runs.
    assert!((1..=10).contains(&dup.retry_after()));
    assert!(held.store.waits.load(Ordering::SeqCst) >= 1, "it did wait");
    assert!(!held.first.is_finished(), "the first request is still held");
    held.finish().await;
}

/// `Prefer: wait=1` on an endpoint whose bound is 30 s: the client's shorter
/// wait wins.
async fn prefer_wait_shortens_the_wait<S: InboundStore>(store: S) {
    let config = EndpointConfig::builder("wait-short")
        .in_flight(InFlightPolicy::Wait(Duration::from_secs(30)))
        .build()
        .unwrap();
    let held = hold_first(store, config, "k-short").await;
    let started = Instant::now();
    let dup = tokio::time::timeout(
        Duration::from_secs(15),
        held.duplicate("k-short", Some("wait=1")),
    )
    .await
    .expect("the client's 1 s wait is honoured, not the 30 s bound");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert_eq!(dup.problem_type(), IN_FLIGHT);
    assert!(!held.first.is_finished());
    held.finish().await;
}

// ---- transactional mode: the lease is lost ------------------------------------

/// The first request's lease runs out before its transaction starts (say,
/// `BEGIN IMMEDIATE` waited for the write lock), and a retry takes the
/// record over, runs and stores its answer. The first request's handler then
/// runs in its transaction, but its answer cannot be stored: its writes roll
/// back, it gets 409 in-flight, and later retries replay the retry's answer.
async fn tx_lease_lost_rolls_back<S>(store: S)
where
    S: TxInboundStore + Clone,
    S::Db: AppTable,
{
    S::Db::create(&store).await;
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let config = Arc::new(
        EndpointConfig::builder("tx-lease")
            .lease(Duration::from_secs(1))
            .clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    let watched = Watched::new(store.clone());
    let retry_runs = Arc::new(AtomicUsize::new(0));
    {
        let (store, config, retry_runs) =
            (store.clone(), Arc::clone(&config), Arc::clone(&retry_runs));
        let clock = clock.clone();
        *watched.before_tx.lock().unwrap() = Some(Box::pin(async move {
            clock.advance(Duration::from_secs(2));
            let r = with_idempotency(&store, &config, post("k-lost", None), |_req| async {
                retry_runs.fetch_add(1, Ordering::SeqCst);
                Response::builder()
                    .status(StatusCode::CREATED)
                    .body(Full::new(Bytes::from_static(b"from the retry")))
                    .unwrap()
            })
            .await;
            let r = collect(r).await;
            assert_eq!(r.status, StatusCode::CREATED, "the retry took over and ran");
            assert!(!r.replayed());
        }));
    }
    let first_runs = Arc::new(AtomicUsize::new(0));
    let handler = |runs: Arc<AtomicUsize>| -> idem::inbound::TxHandler<S::Db> {
        Box::new(move |tx, _req| {
            Box::pin(async move {
                runs.fetch_add(1, Ordering::SeqCst);
                S::Db::insert(tx, "from the first request").await;
                Response::builder()
                    .status(StatusCode::CREATED)
                    .body(Bytes::from_static(b"from the first request"))
                    .unwrap()
            })
        })
    };
    let a = collect(
        with_idempotency_tx(
            &watched,
            &config,
            post("k-lost", None),
            handler(Arc::clone(&first_runs)),
        )
        .await,
    )
    .await;
    assert_eq!(first_runs.load(Ordering::SeqCst), 1, "the handler ran");
    assert_eq!(retry_runs.load(Ordering::SeqCst), 1, "so did the retry's");
    assert_eq!(a.status, StatusCode::CONFLICT, "{a:?}");
    assert_eq!(a.problem_type(), IN_FLIGHT);
    assert!(a.headers.contains_key("retry-after"));
    assert_eq!(a.headers["idempotency-key"], "k-lost");
    assert_eq!(
        S::Db::count(&store).await,
        0,
        "the first request's writes rolled back with its unstored answer"
    );
    // The record holds the retry's answer, and replays it.
    let again = collect(
        with_idempotency_tx(
            &watched,
            &config,
            post("k-lost", None),
            handler(Arc::clone(&first_runs)),
        )
        .await,
    )
    .await;
    assert!(again.replayed(), "{again:?}");
    assert_eq!(again.body, "from the retry");
    assert_eq!(first_runs.load(Ordering::SeqCst), 1, "no third run");
    assert_eq!(S::Db::count(&store).await, 0);
}

/// The application's own table, per database.
trait AppTable: sqlx::Database + Sized {
    async fn create<S: TxInboundStore<Db = Self>>(store: &S);
    fn insert<'a>(tx: &'a mut sqlx::Transaction<'static, Self>, note: &'a str)
    -> BoxFuture<'a, ()>;
    async fn count<S: TxInboundStore<Db = Self>>(store: &S) -> i64;
}

impl AppTable for sqlx::Sqlite {
    async fn create<S: TxInboundStore<Db = Self>>(store: &S) {
        let mut tx = store.begin_tx().await.unwrap();
        sqlx::query("CREATE TABLE app_orders (note TEXT NOT NULL)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    fn insert<'a>(
        tx: &'a mut sqlx::Transaction<'static, Self>,
        note: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("INSERT INTO app_orders (note) VALUES ($1)")
                .bind(note.to_owned())
                .execute(&mut **tx)
                .await
                .unwrap();
        })
    }
    async fn count<S: TxInboundStore<Db = Self>>(store: &S) -> i64 {
        let mut tx = store.begin_tx().await.unwrap();
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM app_orders")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        n
    }
}

impl AppTable for sqlx::Postgres {
    async fn create<S: TxInboundStore<Db = Self>>(store: &S) {
        let mut tx = store.begin_tx().await.unwrap();
        sqlx::query("CREATE TABLE app_orders (note TEXT NOT NULL)")
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    fn insert<'a>(
        tx: &'a mut sqlx::Transaction<'static, Self>,
        note: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            sqlx::query("INSERT INTO app_orders (note) VALUES ($1)")
                .bind(note.to_owned())
                .execute(&mut **tx)
                .await
                .unwrap();
        })
    }
    async fn count<S: TxInboundStore<Db = Self>>(store: &S) -> i64 {
        let mut tx = store.begin_tx().await.unwrap();
        let n = sqlx::query_scalar("SELECT COUNT(*) FROM app_orders")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        n
    }
}

// ---- the spawned sweeper --------------------------------------------------------

/// The spawned sweeper against a real store: it runs on its period, deletes
/// the old rows, writes its audit row, and `shutdown` ends the task.
async fn spawned_sweeper_sweeps_and_audits<S: InboundStore>(store: S) {
    let store = Arc::new(store);
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let fp = Fingerprint::builder().method("POST").body(b"x").finish();
    let scope = |k: &str| Scope {
        actor: "alice".into(),
        endpoint: "swept".into(),
        key: ClientKey::new(k).unwrap(),
    };
    let answer = StoredResponse {
        status: StatusCode::CREATED,
        headers: http::HeaderMap::new(),
        body: Bytes::from_static(b"ok"),
        replayable: true,
    };
    let later = t0 + Duration::from_secs(3 * 24 * 3600);
    for (k, at) in [("old-1", t0), ("old-2", t0), ("recent", later)] {
        let s = scope(k);
        let req = BeginRequest {
            scope: &s,
            fingerprint: &fp,
            ttl: Duration::from_secs(3600),
            lease_for: Duration::from_secs(60),
        };
        let Begin::Started(lease) = store.begin(&req, at).await.unwrap() else {
            panic!("fresh key")
        };
        assert!(store.complete(&lease, &answer, at).await.unwrap());
    }
    let handle = Sweeper::shared(Arc::clone(&store))
        .period(Duration::from_secs(1))
        .retention(Duration::from_secs(24 * 3600))
        .clock(Arc::new(ManualClock::new(later)))
        .build()
        .unwrap()
        .spawn();
    // A bounded wait for the first run (due after one 1 s period).
    let deadline = Instant::now() + Duration::from_secs(20);
    let runs = loop {
        let runs = store.sweep_runs(10).await.unwrap();
        if !runs.is_empty() {
            break runs;
        }
        assert!(Instant::now() < deadline, "no sweeper run within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = runs.last().unwrap();
    assert_eq!(first.deleted, 2, "{first:?}");
    assert_eq!(first.error, None);
    assert_eq!(first.started_at, later);
    for k in ["old-1", "old-2"] {
        assert!(store.get(&scope(k)).await.unwrap().is_none(), "{k} swept");
    }
    assert!(store.get(&scope("recent")).await.unwrap().is_some());
    tokio::time::timeout(Duration::from_secs(20), handle.shutdown())
        .await
        .expect("shutdown ends the task");
    let n = store.sweep_runs(100).await.unwrap().len();
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "the task and its sweeper are gone"
    );
    assert!(n >= 1);
}

/// A tokio-time clock, so audit rows show when (in paused time) each run
/// started.
#[derive(Debug)]
struct TokioClock {
    base: tokio::time::Instant,
    epoch: SystemTime,
}

impl Clock for TokioClock {
    fn now(&self) -> SystemTime {
        self.epoch + self.base.elapsed()
    }
}

/// Records audit rows in memory; nothing to sweep.
#[derive(Debug, Default)]
struct AuditOnly {
    runs: Mutex<Vec<SweepRun>>,
}

#[async_trait]
impl InboundStore for AuditOnly {
    async fn begin(&self, _: &BeginRequest<'_>, _: SystemTime) -> Result<Begin, StoreError> {
        unreachable!("the sweeper never begins a request")
    }
    async fn get(&self, _: &Scope) -> Result<Option<InboundRecord>, StoreError> {
        unreachable!("the sweeper never reads a record")
    }
    async fn complete(
        &self,
        _: &InboundLease,
        _: &StoredResponse,
        _: SystemTime,
    ) -> Result<bool, StoreError> {
        unreachable!("the sweeper never completes a record")
    }
    async fn release(&self, _: &InboundLease) -> Result<bool, StoreError> {
        unreachable!("the sweeper never releases a record")
    }
    async fn renew(
        &self,
        _: &InboundLease,
        _: Duration,
        _: SystemTime,
    ) -> Result<bool, StoreError> {
        unreachable!("the sweeper never renews a lease")
    }
    async fn sweep_batch(&self, _: SystemTime, _: SystemTime, _: u32) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn record_sweep(&self, run: &SweepRun) -> Result<(), StoreError> {
        self.runs.lock().unwrap().push(run.clone());
        Ok(())
    }
    async fn sweep_runs(&self, _: u32) -> Result<Vec<SweepRun>, StoreError> {
        Ok(self.runs.lock().unwrap().clone())
    }
}

/// In paused tokio time: the first run comes one period after `spawn`, then
/// one per period, each with its audit row; dropping the handle stops the
/// task.
#[tokio::test(start_paused = true)]
async fn spawned_sweeper_runs_on_its_period_and_stops_when_dropped() {
    let store = Arc::new(AuditOnly::default());
    let epoch = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = TokioClock {
        base: tokio::time::Instant::now(),
        epoch,
    };
    let period = Duration::from_secs(10);
    let handle = Sweeper::shared(Arc::clone(&store))
        .period(period)
        .clock(Arc::new(clock))
        .build()
        .unwrap()
        .spawn();
    tokio::time::sleep(period - Duration::from_millis(1)).await;
    assert!(
        store.runs.lock().unwrap().is_empty(),
        "no run before one period"
    );
    tokio::time::sleep(3 * period + Duration::from_millis(2)).await;
    let starts: Vec<Duration> = store
        .runs
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.started_at.duration_since(epoch).unwrap())
        .collect();
    assert_eq!(starts, [period, 2 * period, 3 * period, 4 * period]);
    drop(handle);
    // The task notices the dropped handle and ends, dropping its sweeper
    // (and with it the store it shares).
    for _ in 0..100 {
        if Arc::strong_count(&store) == 1 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(Arc::strong_count(&store), 1, "the task ended");
    tokio::time::sleep(10 * period).await;
    assert_eq!(store.runs.lock().unwrap().len(), 4, "no run after the drop");
}

// ---- both stores --------------------------------------------------------------

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let (store, _dir) = idem::testing::sqlite_store().await;
                    super::$name(store).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(store) = idem::testing::pg_store(stringify!($name)).await else {
                        return;
                    };
                    super::$name(store).await;
                }
            )*
        }
    };
}

both!(
    prefer_wait_replays_the_first_answer,
    default_policy_rejects_with_retry_after,
    prefer_wait_is_capped_by_the_endpoint_bound,
    prefer_wait_shortens_the_wait,
    tx_lease_lost_rolls_back,
    spawned_sweeper_sweeps_and_audits,
);
