//! The simulated world: one seeded random source, the fault plan, a
//! `LedgerStore` wrapper that fails, hangs and observes every statement, and
//! the simulated providers (a reqwest middleware, so no socket is involved
//! except for a real "connection refused").

// The simulated providers are a reqwest middleware: they take the executor's
// `reqwest::Request` and answer with a `reqwest::Response`, in process, and
// one genuine "connection refused" comes from a closed loopback port. Nothing
// here reaches a service, so the adapter-only rule is lifted for this module
// alone (the dependency gate's exemption for idem-tests says the same).
#![allow(unknown_lints, http_call_outside_adapter)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::Extensions;
use idem::ledger::{Begin, ClaimFrom, Completion, Lease, ListFilter, NewOperation, Resolution};
use idem::{Clock, IdempotencyKey, LedgerStore, ManualClock, Operation, StoreError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest_middleware::{Middleware, Next};
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::table::{self, Event};

/// Stripe keeps a key for 24 h.
pub(crate) const STRIPE_WINDOW: Duration = Duration::from_secs(24 * 3600);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Site {
    /// Before a store statement runs.
    StoreBefore(&'static str),
    /// After a store statement ran (it took effect).
    StoreAfter(&'static str),
    /// A write request reaching a simulated provider.
    Provider,
}

/// A fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fault {
    /// The statement fails and changes nothing.
    StoreFail,
    /// The statement took effect but the caller gets an error.
    StoreAckLost,
    /// The worker crashes at this await point.
    Crash,
    /// The worker stalls here (a paused VM, a GC pause): the clock moves
    /// past its lease before the statement runs or returns.
    Stall,
    /// A real connection refused (nothing reaches the provider).
    Refused,
    /// 429 with no effect.
    RateLimited,
    /// 500; the provider did nothing (Stripe stores the 500 under the key).
    ServerError,
    /// The provider applies the effect, then the connection resets.
    LostResponse,
    /// The provider applies the effect, then the body breaks off.
    Truncated,
    /// The provider applies the effect, and the worker crashes while
    /// waiting for the answer.
    CrashAfterEffect,
    /// The answer arrives after the lease ran out (the clock jumps while the
    /// request is in flight).
    LateAnswer,
    /// The provider applies the effect and the worker yields to the others
    /// before the answer comes back.
    Interleave,
}

/// The worker running in the current task (a task-local).
#[derive(Debug)]
pub(crate) struct WorkerCtx {
    /// The key it works on.
    pub(crate) key: Mutex<IdempotencyKey>,
    /// Set when it crashed.
    pub(crate) crashed: AtomicBool,
    /// Wakes the driver, which drops the worker's future.
    pub(crate) crash: Notify,
    /// Definitive answers (2xx or a 4xx rejection) delivered to it.
    pub(crate) answers: Mutex<Vec<(u16, Option<String>)>>,
    /// Injected failures of its completion writes.
    pub(crate) failed_completions: AtomicU64,
    /// The row's claim count right after this worker's own claim.
    pub(crate) claimed_as: AtomicU64,
}

impl WorkerCtx {
    pub(crate) fn new(key: IdempotencyKey) -> Arc<Self> {
        Arc::new(Self {
            key: Mutex::new(key),
            crashed: AtomicBool::new(false),
            crash: Notify::new(),
            answers: Mutex::new(Vec::new()),
            failed_completions: AtomicU64::new(0),
            claimed_as: AtomicU64::new(0),
        })
    }
}

tokio::task_local! {
    pub static WORKER: Arc<WorkerCtx>;
}

fn current_worker() -> Option<Arc<WorkerCtx>> {
    WORKER.try_with(Arc::clone).ok()
}

/// Crashes the current worker: the driver drops its future at this point.
async fn crash(ctx: &WorkerCtx) {
    ctx.crashed.store(true, Ordering::SeqCst);
    ctx.crash.notify_one();
    std::future::pending::<()>().await;
}

/// Fault rates, per site visit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    pub(crate) store: f64,
    pub(crate) provider: f64,
}

/// Everything shared in one simulated run.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) rng: Mutex<StdRng>,
    pub(crate) clock: Arc<ManualClock>,
    pub(crate) faults_on: AtomicBool,
    pub(crate) rates: Rates,
    pub(crate) script: Mutex<VecDeque<(Site, Fault)>>,
    pub(crate) faults: Mutex<BTreeMap<String, u64>>,
    pub(crate) checks: AtomicU64,
    pub(crate) violations: Mutex<Vec<String>>,
    pub(crate) touched: Mutex<BTreeSet<String>>,
    pub(crate) truth: Mutex<Truth>,
    /// A provider outage: every write gets this fault for the next batches.
    pub(crate) outage: Mutex<Option<(Fault, u32)>>,
    /// The lease the executor takes (claim budget + margin), for late answers.
    pub(crate) lease: Duration,
}

impl Shared {
    pub(crate) fn new(
        seed: u64,
        clock: Arc<ManualClock>,
        rates: Rates,
        lease: Duration,
    ) -> Arc<Self> {
        Arc::new(Self {
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            clock,
            faults_on: AtomicBool::new(true),
            rates,
            script: Mutex::new(VecDeque::new()),
            faults: Mutex::new(BTreeMap::new()),
            checks: AtomicU64::new(0),
            violations: Mutex::new(Vec::new()),
            touched: Mutex::new(BTreeSet::new()),
            truth: Mutex::new(Truth::default()),
            outage: Mutex::new(None),
            lease,
        })
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.clock.now()
    }

    pub(crate) fn chance(&self, p: f64) -> bool {
        lock(&self.rng).random_bool(p.clamp(0.0, 1.0))
    }

    pub(crate) fn below(&self, n: u64) -> u64 {
        lock(&self.rng).random_range(0..n.max(1))
    }

    pub(crate) fn violation(&self, what: String) {
        lock(&self.violations).push(what);
    }

    pub(crate) fn count(&self, kind: &str) {
        *lock(&self.faults).entry(kind.to_owned()).or_default() += 1;
    }

    pub(crate) fn checked(&self) {
        self.checks.fetch_add(1, Ordering::Relaxed);
    }

    /// The fault (if any) at `site`: a scripted one first, else a random one
    /// while faults are on.
    fn fault(&self, site: Site, choices: &[Fault]) -> Option<Fault> {
        {
            let mut script = lock(&self.script);
            if let Some(pos) = script.iter().position(|(s, _)| *s == site) {
                let (_, fault) = script.remove(pos).expect("position is valid");
                self.count(&fault_name(site, fault));
                return Some(fault);
            }
        }
        if !self.faults_on.load(Ordering::Relaxed) {
            return None;
        }
        if site == Site::Provider {
            if let Some((fault, _)) = *lock(&self.outage) {
                self.count(&format!("provider outage: {fault:?}"));
                return Some(fault);
            }
        }
        let rate = match site {
            Site::Provider => self.rates.provider,
            _ => self.rates.store,
        };
        if !self.chance(rate) {
            return None;
        }
        let fault = choices[self.below(choices.len() as u64) as usize];
        self.count(&fault_name(site, fault));
        Some(fault)
    }
}

fn fault_name(site: Site, fault: Fault) -> String {
    match site {
        Site::StoreBefore(what) => format!("store {what}: {fault:?} (before)"),
        Site::StoreAfter(what) => format!("store {what}: {fault:?} (after)"),
        Site::Provider => format!("provider: {fault:?}"),
    }
}

/// What the simulated providers hold: the truth the invariants are checked
/// against.
#[derive(Debug, Default)]
pub(crate) struct Truth {
    /// Side effects per idempotency key (PaymentIntents created, messages
    /// queued).
    pub(crate) effects: BTreeMap<String, u32>,
    /// Requests for a key being handled right now.
    pub(crate) inflight: BTreeMap<String, u32>,
    /// Stripe's idempotency cache: key -> (first seen, status, body).
    pub(crate) stripe_keys: BTreeMap<String, (SystemTime, u16, Bytes)>,
    /// Objects by key, with the time they show up in search/list results.
    pub(crate) objects: BTreeMap<String, Vec<(SystemTime, Value)>>,
    pub(crate) next_id: u64,
}

// ---------------------------------------------------------------- the store

/// A [`LedgerStore`] over a real one that injects faults on every statement
/// and holds every row change against the transition table.
#[derive(Debug, Clone)]
pub(crate) struct FaultStore {
    pub(crate) inner: Arc<dyn LedgerStore>,
    pub(crate) shared: Arc<Shared>,
    serial: Arc<tokio::sync::Mutex<()>>,
}

const STORE_FAULTS: &[Fault] = &[
    Fault::StoreFail,
    Fault::StoreFail,
    Fault::Crash,
    Fault::Stall,
];
const AFTER_FAULTS: &[Fault] = &[Fault::StoreAckLost, Fault::Crash, Fault::Stall];

fn unavailable(what: &str) -> StoreError {
    StoreError::Unavailable {
        message: format!("simulated database failure on {what}"),
        source: None,
    }
}

impl FaultStore {
    pub(crate) fn new(inner: Arc<dyn LedgerStore>, shared: Arc<Shared>) -> Self {
        Self {
            inner,
            shared,
            serial: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    async fn before(&self, what: &'static str) -> Result<(), StoreError> {
        match self.shared.fault(Site::StoreBefore(what), STORE_FAULTS) {
            Some(Fault::Crash) => match current_worker() {
                Some(ctx) => {
                    crash(&ctx).await;
                    Ok(())
                }
                None => Err(unavailable(what)),
            },
            Some(Fault::Stall) => {
                self.stall().await;
                Ok(())
            }
            Some(_) => {
                self.failed_write(what);
                Err(unavailable(what))
            }
            None => Ok(()),
        }
    }

    async fn stall(&self) {
        self.shared
            .clock
            .advance(self.shared.lease + Duration::from_secs(1));
        tokio::task::yield_now().await;
    }

    /// Counts an injected failure of the completion write for the worker.
    fn failed_write(&self, what: &str) {
        if what == "complete" {
            if let Some(ctx) = current_worker() {
                ctx.failed_completions.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    async fn after<T>(
        &self,
        what: &'static str,
        result: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match self.shared.fault(Site::StoreAfter(what), AFTER_FAULTS) {
            Some(Fault::Crash) => match current_worker() {
                Some(ctx) => {
                    crash(&ctx).await;
                    result
                }
                None => Err(unavailable(what)),
            },
            Some(Fault::Stall) => {
                self.stall().await;
                result
            }
            Some(_) => {
                self.failed_write(what);
                Err(unavailable(what))
            }
            None => result,
        }
    }

    fn observe(
        &self,
        event: Event,
        before: Option<&Operation>,
        after: Option<&Operation>,
        now: SystemTime,
    ) {
        self.shared.checked();
        if let Some(op) = before.or(after) {
            lock(&self.shared.touched).insert(op.key.as_str().to_owned());
        }
        if let Err(e) = table::check(event, before, after, now) {
            let key = before
                .or(after)
                .map(|o| o.key.to_string())
                .unwrap_or_default();
            self.shared.violation(format!(
                "{e} (key {key}; before {before:?}; after {after:?})"
            ));
        }
    }

    /// Runs one single-row statement under observation.
    async fn one<T, F>(
        &self,
        what: &'static str,
        key: &IdempotencyKey,
        now: SystemTime,
        event: impl Fn(&Result<T, StoreError>) -> Event,
        call: F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        self.before(what).await?;
        let result = {
            let _serial = self.serial.lock().await;
            let before = self.inner.get(key).await.ok().flatten();
            let result = call.await;
            let after = self.inner.get(key).await.ok().flatten();
            let event = event(&result);
            if let (Event::Claim { .. } | Event::BeginClaimed, Some(a), Some(ctx)) =
                (event, after.as_ref(), current_worker())
            {
                if before.as_ref() != Some(a) && a.state == idem::OperationState::Sending {
                    ctx.claimed_as.store(u64::from(a.claims), Ordering::SeqCst);
                }
            }
            self.observe(event, before.as_ref(), after.as_ref(), now);
            result
        };
        self.after(what, result).await
    }

    async fn all(&self) -> BTreeMap<String, Operation> {
        let all = ListFilter {
            limit: Some(u32::MAX / 2),
            ..ListFilter::default()
        };
        self.inner
            .list(&all)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|op| (op.key.as_str().to_owned(), op))
            .collect()
    }

    async fn many(
        &self,
        what: &'static str,
        event: Event,
        now: SystemTime,
        call: impl std::future::Future<Output = Result<u64, StoreError>>,
    ) -> Result<u64, StoreError> {
        self.before(what).await?;
        let result = {
            let _serial = self.serial.lock().await;
            let before = self.all().await;
            let result = call.await;
            let after = self.all().await;
            for key in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
                self.observe(event, before.get(key), after.get(key), now);
            }
            result
        };
        self.after(what, result).await
    }
}

fn completion_event(c: &Completion) -> Event {
    match c {
        Completion::Succeeded { .. } => Event::CompleteSucceeded,
        Completion::Failed { .. } => Event::CompleteFailed,
        Completion::Unknown { .. } => Event::CompleteUnknown,
        _ => Event::CompleteNotSent,
    }
}

#[async_trait]
impl LedgerStore for FaultStore {
    async fn begin(&self, op: &NewOperation, now: SystemTime) -> Result<Operation, StoreError> {
        self.one(
            "begin",
            &op.key,
            now,
            |_| Event::Begin,
            self.inner.begin(op, now),
        )
        .await
    }

    async fn begin_claimed(
        &self,
        op: &NewOperation,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Begin, StoreError> {
        self.one(
            "begin_claimed",
            &op.key,
            now,
            |_| Event::BeginClaimed,
            self.inner.begin_claimed(op, lease_for, now),
        )
        .await
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<Operation>, StoreError> {
        self.before("get").await?;
        let result = self.inner.get(key).await;
        self.after("get", result).await
    }

    async fn claim(
        &self,
        key: &IdempotencyKey,
        from: ClaimFrom,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Option<Lease>, StoreError> {
        let allow_unknown = matches!(from, ClaimFrom::PendingOrUnknown);
        self.one(
            "claim",
            key,
            now,
            |_| Event::Claim { allow_unknown },
            self.inner.claim(key, from, lease_for, now),
        )
        .await
    }

    async fn expire_lease(
        &self,
        key: &IdempotencyKey,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        self.one(
            "expire_lease",
            key,
            now,
            |_| Event::ExpireLease,
            self.inner.expire_lease(key, now),
        )
        .await
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        value: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        self.one(
            "checkpoint",
            &lease.key,
            now,
            |_| Event::Checkpoint,
            self.inner.checkpoint(lease, value, now),
        )
        .await
    }

    async fn renew(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Lease, StoreError> {
        self.one(
            "renew",
            &lease.key,
            now,
            |_| Event::Renew,
            self.inner.renew(lease, lease_for, now),
        )
        .await
    }

    async fn complete(
        &self,
        lease: &Lease,
        completion: &Completion,
        now: SystemTime,
    ) -> Result<Operation, StoreError> {
        let event = completion_event(completion);
        self.one(
            "complete",
            &lease.key,
            now,
            |_| event,
            self.inner.complete(lease, completion, now),
        )
        .await
    }

    async fn resolve(
        &self,
        key: &IdempotencyKey,
        resolution: &Resolution,
        now: SystemTime,
    ) -> Result<Operation, StoreError> {
        let event = match resolution {
            Resolution::Succeeded { .. } => Event::ResolveSucceeded,
            _ => Event::ResolveNotApplied,
        };
        self.one(
            "resolve",
            key,
            now,
            |_| event,
            self.inner.resolve(key, resolution, now),
        )
        .await
    }

    async fn bump(
        &self,
        key: &IdempotencyKey,
        force: bool,
        now: SystemTime,
    ) -> Result<IdempotencyKey, StoreError> {
        self.one(
            "bump",
            key,
            now,
            |_| Event::Bump { force },
            self.inner.bump(key, force, now),
        )
        .await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Operation>, StoreError> {
        self.before("list").await?;
        let result = self.inner.list(filter).await;
        self.after("list", result).await
    }

    async fn purge(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        let now = self.shared.now();
        self.many("purge", Event::Purge, now, self.inner.purge(before, batch))
            .await
    }

    async fn forget(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        let now = self.shared.now();
        self.many(
            "forget",
            Event::Forget,
            now,
            self.inner.forget(before, batch),
        )
        .await
    }
}

// ------------------------------------------------------------ the providers

/// A real "connection refused" error: requests to a closed loopback port,
/// made in bulk on a helper runtime (one costs milliseconds; a batch of 256
/// costs about as much) and handed out one by one.
// A plain client on purpose: it only ever connects to a closed loopback
// port, to obtain the genuine reqwest "connection refused" error that the
// executor classifies as "never sent"; no request reaches any service.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn refused_error() -> reqwest::Error {
    static HELPER: OnceLock<(tokio::runtime::Runtime, reqwest::Client, String)> = OnceLock::new();
    static POOL: Mutex<Vec<reqwest::Error>> = Mutex::new(Vec::new());
    if let Some(e) = lock(&POOL).pop() {
        return e;
    }
    let (rt, client, url) = HELPER.get_or_init(|| {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("helper runtime");
        (
            rt,
            reqwest::Client::new(),
            format!("http://127.0.0.1:{port}/"),
        )
    });
    let sends: Vec<_> = (0..256).map(|_| client.post(url.as_str()).send()).collect();
    let batch = rt.spawn(futures::future::join_all(sends));
    let mut errors: Vec<reqwest::Error> = futures::executor::block_on(batch)
        .expect("the helper runtime runs")
        .into_iter()
        .map(|r| match r {
            Err(e) if e.is_connect() => e,
            other => panic!("a request to a closed port did not fail to connect: {other:?}"),
        })
        .collect();
    let first = errors.pop().expect("a batch is not empty");
    lock(&POOL).extend(errors);
    first
}

/// A transport failure the simulated network reports.
#[derive(Debug)]
struct Wire(&'static str);

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Wire {}

fn respond(status: u16, body: &Value) -> reqwest::Response {
    let body = Bytes::from(serde_json::to_vec(body).expect("json"));
    let response = http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body)
        .expect("a valid response");
    reqwest::Response::from(response)
}

/// Decrements the in-flight count of a key when the request ends or its
/// worker is dropped.
struct InFlight {
    shared: Arc<Shared>,
    key: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut truth = lock(&self.shared.truth);
        if let Some(n) = truth.inflight.get_mut(&self.key) {
            *n = n.saturating_sub(1);
        }
    }
}

/// The simulated providers, as the last middleware of the executor's chain.
#[derive(Debug, Clone)]
pub(crate) struct SimProviders {
    pub(crate) shared: Arc<Shared>,
    pub(crate) inner: Arc<dyn LedgerStore>,
}

const PROVIDER_FAULTS: &[Fault] = &[
    Fault::Refused,
    Fault::RateLimited,
    Fault::ServerError,
    Fault::LostResponse,
    Fault::LostResponse,
    Fault::Truncated,
    Fault::Crash,
    Fault::CrashAfterEffect,
    Fault::LateAnswer,
    Fault::Interleave,
    Fault::Interleave,
];

fn form_of(body: &[u8]) -> BTreeMap<String, String> {
    url_pairs(body).into_iter().collect()
}

fn url_pairs(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl SimProviders {
    fn read(&self, req: &reqwest::Request) -> reqwest::Response {
        // Stripe search: objects carrying the key, once search has caught up.
        let query: String = req
            .url()
            .query_pairs()
            .find(|(k, _)| k == "query")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let now = self.shared.now();
        let truth = lock(&self.shared.truth);
        let data: Vec<Value> = truth
            .objects
            .iter()
            .filter(|(key, _)| query.contains(&format!("'{key}'")))
            .flat_map(|(_, objects)| objects.iter())
            .filter(|(visible, _)| *visible <= now)
            .map(|(_, o)| o.clone())
            .collect();
        respond(
            200,
            &json!({"object": "search_result", "data": data, "has_more": false, "url": "/v1/payment_intents/search"}),
        )
    }

    /// Applies one write's effect and returns the provider's answer.
    fn apply(&self, host: &str, key: &str, form: &BTreeMap<String, String>) -> (u16, Value) {
        let now = self.shared.now();
        let mut truth = lock(&self.shared.truth);
        truth.next_id += 1;
        let n = truth.next_id;
        let reject = form.get("amount").is_some_and(|a| a == "13")
            || form.get("To").is_some_and(|t| t.ends_with("0013"));
        let (status, body) = if host == "stripe.sim" {
            if reject {
                (
                    400,
                    json!({"error": {"type": "invalid_request_error", "code": "parameter_invalid_integer", "message": "Invalid amount."}}),
                )
            } else {
                let id = format!("pi_sim{n:08}");
                let pi = json!({
                    "id": id, "object": "payment_intent",
                    "amount": form.get("amount").and_then(|a| a.parse::<u64>().ok()).unwrap_or(0),
                    "amount_capturable": 0, "amount_received": 0,
                    "capture_method": "automatic", "confirmation_method": "automatic",
                    "created": now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                    "currency": form.get("currency").cloned().unwrap_or_else(|| "usd".into()),
                    "livemode": false, "metadata": {"idem_key": key},
                    "status": "requires_payment_method",
                });
                (200, pi)
            }
        } else if reject {
            (
                400,
                json!({"code": 21211, "message": "The 'To' number is not a valid phone number.", "status": 400}),
            )
        } else {
            let message = json!({
                "sid": format!("SM{n:032x}"), "status": "queued",
                "account_sid": "AC00000000000000000000000000000001",
                "to": form.get("To"), "from": form.get("From"), "body": form.get("Body"),
                "direction": "outbound-api", "num_media": "0",
            });
            (201, message)
        };
        if status < 300 {
            let count = truth.effects.entry(key.to_owned()).or_default();
            *count += 1;
            if *count > 1 {
                let what = if host == "stripe.sim" {
                    "PaymentIntent"
                } else {
                    "message"
                };
                self.shared
                    .violation(format!("I1: a second {what} for key {key}"));
            }
            let lag = Duration::from_millis(self.shared.below(90_000));
            truth
                .objects
                .entry(key.to_owned())
                .or_default()
                .push((now + lag, body.clone()));
        }
        (status, body)
    }
}

#[async_trait]
impl Middleware for SimProviders {
    async fn handle(
        &self,
        req: reqwest::Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let host = req.url().host_str().unwrap_or_default().to_owned();
        if req.method() == reqwest::Method::GET {
            return Ok(self.read(&req));
        }
        let ctx = current_worker();
        let key = match (&host[..], req.headers().get("idempotency-key"), &ctx) {
            ("stripe.sim", Some(k), _) => k.to_str().unwrap_or_default().to_owned(),
            (_, _, Some(ctx)) => lock(&ctx.key).as_str().to_owned(),
            _ => return Err(reqwest_middleware::Error::middleware(Wire("no worker"))),
        };
        let form = form_of(req.body().and_then(|b| b.as_bytes()).unwrap_or_default());
        let fault = self.shared.fault(Site::Provider, PROVIDER_FAULTS);
        if fault == Some(Fault::Refused) {
            return Err(reqwest_middleware::Error::Reqwest(refused_error()));
        }
        let _inflight = {
            let mut truth = lock(&self.shared.truth);
            *truth.inflight.entry(key.clone()).or_default() += 1;
            InFlight {
                shared: self.shared.clone(),
                key: key.clone(),
            }
        };
        lock(&self.shared.touched).insert(key.clone());
        if fault == Some(Fault::Crash) {
            if let Some(ctx) = &ctx {
                crash(ctx).await;
            }
        }
        if fault == Some(Fault::RateLimited) {
            let body = if host == "stripe.sim" {
                json!({"error": {"type": "invalid_request_error", "code": "rate_limit", "message": "Too many requests."}})
            } else {
                json!({"code": 20429, "message": "Too Many Requests", "status": 429})
            };
            return Ok(respond(429, &body));
        }
        let now = self.shared.now();
        let (status, body) = if host == "stripe.sim" {
            // I1, Stripe: nothing is sent after the key window for a key that
            // may have taken effect, unless reconciliation settled it.
            if let Ok(Some(row)) = self.inner.get(&key.parse().expect("a key")).await {
                if row
                    .maybe_applied_at
                    .is_some_and(|t| now >= t + STRIPE_WINDOW)
                {
                    self.shared.violation(format!(
                        "I1: a Stripe request for {key} was sent after the 24 h window of an attempt that may have taken effect"
                    ));
                }
            }
            let cached = {
                let mut truth = lock(&self.shared.truth);
                match truth.stripe_keys.get(&key) {
                    Some((first, _, _)) if now >= *first + STRIPE_WINDOW => {
                        truth.stripe_keys.remove(&key);
                        None
                    }
                    Some((_, status, body)) => Some((*status, body.clone())),
                    None => None,
                }
            };
            match cached {
                Some((status, body)) => {
                    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
                }
                None => {
                    let (status, body) = if fault == Some(Fault::ServerError) {
                        (
                            500,
                            json!({"error": {"type": "api_error", "message": "An unknown error occurred."}}),
                        )
                    } else {
                        self.apply(&host, &key, &form)
                    };
                    let bytes = Bytes::from(serde_json::to_vec(&body).expect("json"));
                    lock(&self.shared.truth)
                        .stripe_keys
                        .insert(key.clone(), (now, status, bytes));
                    (status, body)
                }
            }
        } else if fault == Some(Fault::ServerError) {
            (
                500,
                json!({"code": 20500, "message": "Internal Server Error", "status": 500}),
            )
        } else {
            self.apply(&host, &key, &form)
        };
        match fault {
            Some(Fault::LostResponse) => {
                return Err(reqwest_middleware::Error::middleware(Wire(
                    "connection reset by peer",
                )));
            }
            Some(Fault::Truncated) => {
                return Err(reqwest_middleware::Error::middleware(Wire(
                    "response body broke off",
                )));
            }
            Some(Fault::CrashAfterEffect) => {
                if let Some(ctx) = &ctx {
                    crash(ctx).await;
                }
            }
            Some(Fault::LateAnswer) => {
                self.shared
                    .clock
                    .advance(self.shared.lease + Duration::from_secs(1));
                tokio::task::yield_now().await;
            }
            Some(Fault::Interleave) => {
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
            }
            _ => {}
        }
        let definitive =
            (200..300).contains(&status) || (400..500).contains(&status) && status != 429;
        if definitive {
            if let Some(ctx) = &ctx {
                let id = body
                    .get("id")
                    .or_else(|| body.get("sid"))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                lock(&ctx.answers).push((status, id));
            }
        }
        Ok(respond(status, &body))
    }
}
