//! A seeded, deterministic simulation of the outbound path under attack.
//!
//! It drives the real `idem::Executor` through the real Stripe
//! (PaymentIntent create, reconciliation by search) and Twilio (message
//! create) request paths against simulated providers with their real
//! semantics (Stripe replays a key for 24 h and then forgets it; Twilio has no
//! key; search results lag), and mixes faults at random: worker crashes at
//! store and network await points, lost responses, resets, truncation, a real
//! "connection refused", store failures on any statement (before or after it
//! took effect), clock jumps (lease expiry, the 24 h window), concurrent
//! workers on one key, operator bumps, sweeps and reconciliation. After every
//! step it checks the invariants of issue 13 (I1–I5) and holds every row
//! change against the transition table of adr/0002-ledger-states.md.
//!
//! `IDEM_SIM_SEED=<n>` replays a seed (each run prints its seed);
//! `IDEM_SIM_OPS=<n>` sets how many operations run in all (default 100,000
//! under CI, 20,000 otherwise). Most runs use `MemoryStore` on a paused
//! current-thread runtime (deterministic); a share run on real SQLite and
//! PostgreSQL stores (PostgreSQL required when `CI` is set).

mod table;
mod world;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem::adapter::{AdapterFailure, CallError, WireError};
use idem::executor::RetrySettings;
use idem::ledger::{ListFilter, MemoryStore, Resolution};
use idem::{Executor, IdempotencyKey, LedgerStore, ManualClock, OperationState};
use idem_stripe::{Amount, CreatePaymentIntent, Currency, StripeClient};
use idem_twilio::{CreateMessage, Credentials, TwilioClient};

use world::{FaultStore, Rates, Shared, SimProviders, WORKER, WorkerCtx};

const T0: u64 = 1_800_000_000;
/// Operations per run: a failing run is replayed with this many.
const RUN_OPS: u64 = 2_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Stripe,
    Twilio,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Final {
    Succeeded(String),
    Failed,
    Unknown,
    /// `AnswerNotRecorded`; `true` when the store was unavailable (else the
    /// write was refused, for example fenced).
    AnswerNotRecorded(bool),
    Compacted,
}

#[derive(Debug)]
enum Out {
    Final(Final),
    Retry,
    Superseded(IdempotencyKey),
}

#[derive(Debug)]
struct Job {
    kind: Kind,
    key: IdempotencyKey,
    n: u64,
    done: Option<Final>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StoreKind {
    Memory,
    Sqlite,
    Postgres,
}

struct World {
    shared: Arc<Shared>,
    store: FaultStore,
    stripe: StripeClient,
    twilio: TwilioClient,
    jobs: Vec<Job>,
    ops: u64,
}

fn fast_retry() -> RetrySettings {
    // min == max: the wait draws no random number (deterministic).
    RetrySettings::default()
        .with_max_attempts(3)
        .with_backoff(Duration::from_millis(5), Duration::from_millis(5))
        .with_attempt_timeout(Duration::from_secs(5))
        .with_total_timeout(Duration::from_secs(10))
}

impl World {
    fn new(seed: u64, inner: Arc<dyn LedgerStore>, rates: Rates) -> Self {
        let clock = Arc::new(ManualClock::new(UNIX_EPOCH + Duration::from_secs(T0)));
        let retry = fast_retry();
        // The executor's lease: claim budget plus its default 30 s margin.
        let lease = retry.claim_budget() + Duration::from_secs(30);
        let shared = Shared::new(seed, clock.clone(), rates, lease);
        let store = FaultStore::new(inner.clone(), shared.clone());
        let executor = Executor::builder(store.clone())
            .shared_clock(clock)
            .with(SimProviders {
                shared: shared.clone(),
                inner,
            })
            .build();
        let stripe = StripeClient::builder(executor.clone(), "sk_test_sim")
            .base_url("http://stripe.sim")
            .retry(retry)
            .build()
            .expect("stripe client");
        let twilio = TwilioClient::builder(
            executor,
            Credentials::auth_token("AC00000000000000000000000000000001", "token"),
        )
        .base_url("http://twilio.sim")
        .retry(retry)
        .lookup_retry(retry)
        .build()
        .expect("twilio client");
        Self {
            shared,
            store,
            stripe,
            twilio,
            jobs: Vec::new(),
            ops: 0,
        }
    }

    fn now(&self) -> SystemTime {
        self.shared.now()
    }

    fn add_job(&mut self, kind: Kind) -> usize {
        let n = self.jobs.len() as u64;
        let prefix = match kind {
            Kind::Stripe => "pay",
            Kind::Twilio => "sms",
        };
        let key = format!("sim_{prefix}_{n}_v1").parse().expect("a valid key");
        self.jobs.push(Job {
            kind,
            key,
            n,
            done: None,
        });
        self.jobs.len() - 1
    }

    /// One worker runs job `i` once; `None` when it crashed.
    async fn attempt(&self, i: usize) -> Option<(Out, Arc<WorkerCtx>)> {
        let job = &self.jobs[i];
        let ctx = WorkerCtx::new(job.key.clone());
        let key = job.key.clone();
        let work = async {
            match job.kind {
                Kind::Stripe => {
                    let amount = if job.n % 17 == 5 { 13 } else { 1000 + job.n };
                    let params = CreatePaymentIntent::new(Amount::minor(amount), Currency::usd());
                    let result = self.stripe.payment_intents().create(&key, &params).await;
                    stripe_out(&self.shared, &key, result.map(|r| r.object.id.to_string()))
                }
                Kind::Twilio => {
                    let to = if job.n % 17 == 6 {
                        "+15550000013".to_owned()
                    } else {
                        format!("+1555{:07}", job.n)
                    };
                    let msg =
                        CreateMessage::from_number(to, "+15559870000", format!("job {}", job.n));
                    let result = self.twilio.messages().create(&key, &msg).await;
                    call_out(
                        &self.shared,
                        &key,
                        result.map(|s| s.message.sid.as_str().to_owned()),
                    )
                }
            }
        };
        let scoped = WORKER.scope(ctx.clone(), work);
        tokio::select! {
            biased;
            out = scoped => Some((out, ctx)),
            () = ctx.crash.notified() => None,
        }
    }

    /// Runs a batch of jobs concurrently (duplicates allowed: two workers on
    /// one key) and records their outcomes.
    async fn run_batch(&mut self, batch: &[usize]) {
        let results = futures::future::join_all(batch.iter().map(|&i| self.attempt(i))).await;
        {
            let mut outage = self.shared.outage.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, left)) = outage.as_mut() {
                *left = left.saturating_sub(1);
                if *left == 0 {
                    *outage = None;
                }
            }
        }
        for (&i, result) in batch.iter().zip(results) {
            self.ops += 1;
            let Some((out, ctx)) = result else { continue };
            let key = self.jobs[i].key.clone();
            self.check_answer(&key, &out, &ctx).await;
            match out {
                Out::Final(f) => {
                    if let (Some(Final::Succeeded(a)), Final::Succeeded(b)) =
                        (&self.jobs[i].done, &f)
                    {
                        if a != b {
                            self.shared
                                .violation(format!("{key}: answered {a} earlier and {b} now"));
                        }
                    }
                    self.jobs[i].done = Some(f);
                }
                Out::Retry => {}
                Out::Superseded(by) => {
                    self.jobs[i].key = by;
                    self.jobs[i].done = None;
                }
            }
        }
    }

    /// I4: a definitive answer that reached a worker is recorded, or
    /// surfaced as `AnswerNotRecorded`.
    async fn check_answer(&self, key: &IdempotencyKey, out: &Out, ctx: &WorkerCtx) {
        self.shared.checked();
        let answers = ctx
            .answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some((status, id)) = answers.last().cloned() else {
            return;
        };
        let row = self.store.inner.get(key).await.ok().flatten();
        if let Out::Final(Final::AnswerNotRecorded(unavailable)) = out {
            // Surfacing is right only after the bounded write retries, or
            // when a newer claim, a settlement or a bump came in between:
            // a late answer with no newer claim is recorded.
            let failures = ctx.failed_completions.load(Ordering::SeqCst);
            let state = row.as_ref().map(|r| r.state);
            if *unavailable && failures < 2 {
                self.shared.violation(format!(
                    "I4: {key}: one failed completion write lost the answer (HTTP {status})"
                ));
            }
            let newer_claim = row
                .as_ref()
                .is_none_or(|r| u64::from(r.claims) != ctx.claimed_as.load(Ordering::SeqCst));
            if !*unavailable
                && !newer_claim
                && matches!(
                    state,
                    Some(OperationState::Unknown | OperationState::Pending)
                )
            {
                self.shared.violation(format!(
                    "I4: {key}: a definitive answer (HTTP {status}) was refused though no newer claim came (row {state:?})"
                ));
            }
            return;
        }
        let recorded = row.as_ref().is_some_and(|r| match r.state {
            OperationState::Succeeded => {
                status < 300 && (id.is_none() || r.provider_id == id || r.compacted_at.is_some())
            }
            OperationState::Failed => status >= 400,
            OperationState::Superseded => true,
            _ => false,
        });
        if !recorded {
            self.shared.violation(format!(
                "I4: {key} got HTTP {status} ({id:?}) from the provider but the row is {:?} and the caller got {out:?}",
                row.map(|r| r.state)
            ));
        }
    }

    /// Reconciles one unknown row: Stripe through the adapter (search);
    /// Twilio from the provider's truth, and only on positive proof.
    async fn reconcile_one(&mut self) {
        let Ok(rows) = self
            .store
            .inner
            .list(&ListFilter {
                states: vec![OperationState::Unknown, OperationState::Sending],
                limit: Some(50),
                ..ListFilter::default()
            })
            .await
        else {
            return;
        };
        if rows.is_empty() {
            return;
        }
        let row = &rows[self.shared.below(rows.len() as u64) as usize];
        let key = row.key.clone();
        self.shared.count("reconcile");
        if row.provider == "stripe" {
            let ctx = WorkerCtx::new(key.clone());
            let r = WORKER.scope(ctx.clone(), self.stripe.reconcile(&key));
            let r = tokio::select! { biased; r = r => Some(r), () = ctx.crash.notified() => None };
            if let Some(Err(e)) = r {
                if e.key().is_none()
                    && !matches!(e, idem_stripe::Error::Store(ref s) if s.is_unavailable())
                {
                    self.shared.violation(format!(
                        "I3: reconcile of {key} failed without naming it: {e}"
                    ));
                }
            }
            return;
        }
        let (effects, inflight, object) = {
            let truth = self.shared.truth.lock().unwrap_or_else(|e| e.into_inner());
            (
                truth.effects.get(key.as_str()).copied().unwrap_or(0),
                truth.inflight.get(key.as_str()).copied().unwrap_or(0),
                truth
                    .objects
                    .get(key.as_str())
                    .and_then(|o| o.first())
                    .map(|(_, v)| v.clone()),
            )
        };
        let resolution = match (effects, inflight, object) {
            (n, _, Some(object)) if n > 0 => Resolution::Succeeded {
                status: 200,
                body: serde_json::to_vec(&object).expect("json").into(),
                note: "simulated provider has the message".into(),
            },
            (0, 0, _) => Resolution::NotApplied {
                note: "simulated provider has no message and none in flight".into(),
            },
            _ => return,
        };
        let _ = self.store.resolve(&key, &resolution, self.now()).await;
    }

    /// An operator bumps a failed or unknown row to its next attempt.
    async fn bump_one(&mut self) {
        let candidates: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| {
                matches!(
                    self.jobs[i].done,
                    Some(Final::Failed) | Some(Final::Unknown)
                )
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let i = candidates[self.shared.below(candidates.len() as u64) as usize];
        let key = self.jobs[i].key.clone();
        self.shared.count("bump");
        if let Ok(next) = self.store.bump(&key, false, self.now()).await {
            self.jobs[i].key = next;
            self.jobs[i].done = None;
        }
    }

    async fn sweep(&mut self) {
        self.shared.count("sweep");
        let days = 1 + self.shared.below(9);
        let before = self.now() - Duration::from_secs(days * 86_400);
        let batch = 1 + self.shared.below(64) as u32;
        let _ = self.store.purge(before, batch).await;
    }

    fn advance(&self, by: Duration, kind: &str) {
        self.shared.count(kind);
        self.shared.clock.advance(by);
    }

    /// I1 (per key, from the provider), I2 (a row whose key has an effect
    /// is not pending, failed or gone), I5 (superseded chains), on the keys
    /// touched since the last check.
    async fn check_touched(&self) {
        let touched: Vec<String> = std::mem::take(
            &mut *self
                .shared
                .touched
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        )
        .into_iter()
        .collect();
        for key in touched {
            self.check_key(&key).await;
        }
    }

    async fn check_key(&self, key: &str) {
        self.shared.checked();
        let Ok(k) = key.parse::<IdempotencyKey>() else {
            return;
        };
        let (effects, inflight) = {
            let truth = self.shared.truth.lock().unwrap_or_else(|e| e.into_inner());
            (
                truth.effects.get(key).copied().unwrap_or(0),
                truth.inflight.get(key).copied().unwrap_or(0),
            )
        };
        let row = self.store.inner.get(&k).await.ok().flatten();
        if effects > 0 && inflight == 0 {
            match &row {
                None => self.shared.violation(format!("I2: {key} took effect but its row is gone")),
                Some(r) => match r.state {
                    OperationState::Sending | OperationState::Superseded => {}
                    OperationState::Succeeded | OperationState::Unknown if r.maybe_applied_at.is_some() || r.state == OperationState::Succeeded => {}
                    state => self.shared.violation(format!(
                        "I2: {key} took effect at the provider but its row is {state} (maybe_applied_at {:?})",
                        r.maybe_applied_at
                    )),
                },
            }
        }
        // I5: the chain of this key's base.
        let mut chain = Vec::new();
        let mut cursor = Some(first_attempt(&k));
        while let Some(c) = cursor {
            let Ok(Some(r)) = self.store.inner.get(&c).await else {
                break;
            };
            cursor = r.superseded_by.clone();
            if r.state == OperationState::Superseded
                && r.superseded_by.as_ref() != c.next_attempt().ok().as_ref()
            {
                self.shared.violation(format!(
                    "I5: {c} is superseded but names {:?}",
                    r.superseded_by
                ));
            }
            chain.push(r);
            if chain.len() > 64 {
                break;
            }
        }
        let live = chain
            .iter()
            .filter(|r| r.state != OperationState::Superseded)
            .count();
        if live > 1 {
            self.shared
                .violation(format!("I5: the chain of {key} has {live} live attempts"));
        }
        if let Some((last, rest)) = chain.split_last() {
            if rest.iter().any(|r| r.state != OperationState::Superseded)
                || last.superseded_by.is_some() && last.state != OperationState::Superseded
            {
                self.shared
                    .violation(format!("I5: the chain of {key} is inconsistent"));
            }
        }
    }

    /// Picks what the next batch runs: new jobs, redeliveries of unsettled
    /// ones, and now and then a settled one again (an at-least-once queue).
    fn pick_batch(&mut self) -> Vec<usize> {
        let size = 1 + self.shared.below(3) as usize;
        let mut batch = Vec::new();
        for _ in 0..size {
            let open: Vec<usize> = (0..self.jobs.len())
                .filter(|&i| self.jobs[i].done.is_none())
                .collect();
            let r = self.shared.below(100);
            let i = if r < 40 || self.jobs.is_empty() {
                let kind = if self.shared.chance(0.5) {
                    Kind::Stripe
                } else {
                    Kind::Twilio
                };
                self.add_job(kind)
            } else if r < 85 && !open.is_empty() {
                open[self.shared.below(open.len() as u64) as usize]
            } else if !batch.is_empty() && r < 92 {
                batch[0]
            } else {
                self.shared.below(self.jobs.len() as u64) as usize
            };
            batch.push(i);
        }
        batch
    }

    async fn step(&mut self) {
        match self.shared.below(100) {
            0..=59 => {
                let batch = self.pick_batch();
                self.run_batch(&batch).await;
            }
            60..=71 => self.advance(
                Duration::from_millis(self.shared.below(10_000)),
                "clock: seconds",
            ),
            72..=79 => self.advance(
                Duration::from_secs(40 + self.shared.below(160)),
                "clock: past a lease",
            ),
            80..=82 => self.advance(
                Duration::from_secs(3600 * (1 + self.shared.below(6))),
                "clock: hours",
            ),
            83..=84 => self.advance(
                Duration::from_secs(25 * 3600),
                "clock: past the 24 h window",
            ),
            85..=88 => self.reconcile_one().await,
            89..=91 => {
                // An outage: every write is refused (or rate limited) for a
                // few batches, as when a provider or the network is down.
                let fault = if self.shared.chance(0.6) {
                    world::Fault::Refused
                } else {
                    world::Fault::RateLimited
                };
                let batches = 1 + self.shared.below(4) as u32;
                self.shared.count(&format!("outage starts: {fault:?}"));
                *self.shared.outage.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((fault, batches));
            }
            92..=95 => self.bump_one().await,
            _ => self.sweep().await,
        }
        self.check_touched().await;
    }

    /// Faults off: every job is driven until it settles (I3), then checked
    /// against the provider's truth.
    async fn quiesce(&mut self) {
        self.shared.faults_on.store(false, Ordering::SeqCst);
        for _round in 0..6 {
            self.shared.clock.advance(Duration::from_secs(120));
            // A row reconciled back to pending since its job last ran is
            // redelivered.
            for i in 0..self.jobs.len() {
                let row = self.store.inner.get(&self.jobs[i].key).await.ok().flatten();
                if row.is_some_and(|r| r.state == OperationState::Pending) {
                    self.jobs[i].done = None;
                }
            }
            let open: Vec<usize> = (0..self.jobs.len())
                .filter(|&i| self.jobs[i].done.is_none())
                .collect();
            if open.is_empty() {
                break;
            }
            for i in open {
                self.run_batch(&[i]).await;
            }
        }
        for i in 0..self.jobs.len() {
            self.shared.checked();
            let job = &self.jobs[i];
            let key = job.key.clone();
            let row = self.store.inner.get(&key).await.ok().flatten();
            let effects = self
                .shared
                .truth
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .effects
                .get(key.as_str())
                .copied()
                .unwrap_or(0);
            match (&job.done, row.as_ref().map(|r| r.state)) {
                (None, state) => self
                    .shared
                    .violation(format!("I3: {key} never settled (row {state:?})")),
                (Some(Final::Succeeded(_)), Some(OperationState::Succeeded)) if effects == 1 => {}
                (Some(Final::Failed), Some(OperationState::Failed)) if effects == 0 => {}
                (Some(Final::Unknown), Some(OperationState::Unknown | OperationState::Sending)) => {
                }
                (
                    Some(
                        Final::AnswerNotRecorded(_)
                        | Final::Compacted
                        | Final::Succeeded(_)
                        | Final::Failed
                        | Final::Unknown,
                    ),
                    Some(_),
                ) => {
                    // Settled by someone else since (a replay, a late answer,
                    // reconciliation): the row must agree with the provider.
                    let state = row.as_ref().map(|r| r.state);
                    let ok = match state {
                        Some(OperationState::Succeeded) => effects == 1,
                        Some(OperationState::Failed) => effects == 0,
                        Some(OperationState::Unknown | OperationState::Sending) => true,
                        // Bumped by the operator (the bump's answer was lost).
                        Some(OperationState::Superseded) => true,
                        _ => false,
                    };
                    if !ok {
                        self.shared.violation(format!(
                            "I3: {key} ended {:?}, row {state:?}, {effects} effect(s) at the provider",
                            job.done
                        ));
                    }
                }
                (done, state) => self
                    .shared
                    .violation(format!("I3: {key} ended {done:?} with row {state:?}")),
            }
        }
        self.check_touched().await;
    }
}

fn first_attempt(key: &IdempotencyKey) -> IdempotencyKey {
    let s = key.as_str();
    let base = s.rsplit_once("_v").map_or(s, |(b, _)| b);
    format!("{base}_v1").parse().unwrap_or_else(|_| key.clone())
}

/// One match for every adapter's error (idem's `CallError`): the same code
/// for Stripe and Twilio.
fn call_out<E: WireError, A: AdapterFailure<E>>(
    shared: &Shared,
    key: &IdempotencyKey,
    r: Result<String, CallError<E, A>>,
) -> Out {
    match r {
        Ok(id) => Out::Final(Final::Succeeded(id)),
        Err(CallError::Rejected { .. }) => Out::Final(Final::Failed),
        Err(CallError::OutcomeUnknown { key: k, .. }) if &k == key => Out::Final(Final::Unknown),
        Err(CallError::AnswerNotRecorded { key: k, answer }) if &k == key => {
            Out::Final(Final::AnswerNotRecorded(answer.error.is_unavailable()))
        }
        Err(CallError::Compacted { key: k, .. }) if &k == key => Out::Final(Final::Compacted),
        Err(CallError::Superseded { by, .. }) => Out::Superseded(by),
        Err(CallError::Store(idem::StoreError::LeaseLost { .. })) => Out::Retry,
        Err(e) if e.is_retryable() => Out::Retry,
        Err(e) => {
            shared.violation(format!("I3: {key} ended with {e} ({e:?})"));
            Out::Retry
        }
    }
}

fn stripe_out(shared: &Shared, key: &IdempotencyKey, r: Result<String, idem_stripe::Error>) -> Out {
    use idem_stripe::AdapterError as A;
    match r {
        // Stripe's own "still unknown after the key window" cases.
        Err(
            CallError::Adapter(A::NotFound { key: k, .. } | A::Undetermined { key: k, .. })
            | CallError::LookupFailed { key: k, .. }
            | CallError::RecordChanged { key: k, .. },
        ) if &k == key => Out::Final(Final::Unknown),
        r => call_out(shared, key, r),
    }
}

/// What a run reports.
#[derive(Debug, Default)]
struct Report {
    runs: u64,
    ops: u64,
    checks: u64,
    faults: BTreeMap<String, u64>,
}

impl Report {
    fn add(&mut self, world: &World) {
        self.runs += 1;
        self.ops += world.ops;
        self.checks += world.shared.checks.load(Ordering::Relaxed);
        for (k, v) in world
            .shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            *self.faults.entry(k.clone()).or_default() += v;
        }
    }
}

async fn run_world(
    seed: u64,
    store: StoreKind,
    inner: Arc<dyn LedgerStore>,
    ops: u64,
    rates: Rates,
) -> Result<World, String> {
    let mut world = World::new(seed, inner, rates);
    while world.ops < ops {
        world.step().await;
        let violations = world
            .shared
            .violations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !violations.is_empty() {
            return Err(failure(seed, store, ops, &violations));
        }
    }
    world.quiesce().await;
    let violations = world
        .shared
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    if violations.is_empty() {
        Ok(world)
    } else {
        Err(failure(seed, store, ops, &violations))
    }
}

fn failure(seed: u64, store: StoreKind, ops: u64, violations: &[String]) -> String {
    let shown: Vec<&String> = violations.iter().take(5).collect();
    format!(
        "simulation seed {seed} ({store:?} store) broke an invariant:\n  {}\nreproduce: IDEM_SIM_SEED={seed} IDEM_SIM_OPS={ops} cargo test -p idem-tests --test sim{}",
        shown
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        if store == StoreKind::Memory {
            ""
        } else {
            " (real-store runs are not bit-for-bit deterministic)"
        }
    )
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

const RATES: Rates = Rates {
    store: 0.02,
    provider: 0.25,
};

/// The real-store runs: fewer operations and store faults, as their
/// runtime is not paused and every failed completion write waits for real.
const REAL_OPS: u64 = 300;
const REAL_RATES: Rates = Rates {
    store: 0.01,
    provider: 0.25,
};

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
}

#[test]
fn simulation() {
    let total = env_u64("IDEM_SIM_OPS").unwrap_or(if idem::testing::in_ci() {
        100_000
    } else {
        20_000
    });
    // A fixed default, like the other randomized suites, so the README's test
    // command is repeatable; `.ci/extra.sh` runs a second seed, and any seed
    // (decimal or 0x hex) can be given to explore.
    let master = idem_tests::seed::from_env("IDEM_SIM_SEED", 0x5eed_0001);
    println!(
        "simulation: seed {master}, {total} operations (IDEM_SIM_SEED={master} IDEM_SIM_OPS={total} reproduces)"
    );
    let started = std::time::Instant::now();
    let mut report = Report::default();
    let mut run = 0u64;
    while report.ops < total {
        let seed = master.wrapping_add(run);
        let ops = RUN_OPS.min(total - report.ops);
        let rt = paused_runtime();
        let world = rt
            .block_on(run_world(
                seed,
                StoreKind::Memory,
                Arc::new(MemoryStore::new()),
                ops,
                RATES,
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        report.add(&world);
        run += 1;
    }
    let memory_ops = report.ops;
    let memory_secs = started.elapsed().as_secs_f64();
    // A share on the real stores (not paused: their I/O needs real time).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (sqlite, _dir) = idem::testing::sqlite_store().await;
        let seed = master.wrapping_add(1_000_003);
        let world = run_world(
            seed,
            StoreKind::Sqlite,
            Arc::new(sqlite),
            REAL_OPS,
            REAL_RATES,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        report.add(&world);
        match idem::testing::pg_store("sim").await {
            Some(pg) => {
                let seed = master.wrapping_add(2_000_003);
                let world = run_world(
                    seed,
                    StoreKind::Postgres,
                    Arc::new(pg),
                    REAL_OPS,
                    REAL_RATES,
                )
                .await
                .unwrap_or_else(|e| panic!("{e}"));
                report.add(&world);
            }
            None => println!("simulation: PostgreSQL run skipped (no server; required under CI)"),
        }
    });
    println!(
        "simulation: seed {master}: {} runs, {} operations ({} on MemoryStore in {:.1} s, the rest on SQLite/PostgreSQL), {} invariant checks, {:.1} s in all",
        report.runs,
        report.ops,
        memory_ops,
        memory_secs,
        report.checks,
        started.elapsed().as_secs_f64()
    );
    let injected: u64 = report.faults.values().sum();
    println!("simulation: {injected} faults and events injected:");
    for (kind, n) in &report.faults {
        println!("  {kind:<28} {n}");
    }
}

/// Regression seeds, run on every test run. With the ledger's fixes
/// reverted one at a time, seed 1 catches: `COMPLETE` downgrading to pending
/// (I2), `EXPIRE` dropping the token (I4, late answer), `purge` deleting
/// (transition table), no completion-write retry (I4); seed 2 catches a
/// definitive answer surfaced as a plain store error (I4); seed 5 catches
/// Stripe reconciliation reading "no object found" as "not applied" (I2).
const REGRESSION_SEEDS: &[u64] = &[1, 2, 5, 42];

#[test]
fn regression_seeds() {
    for &seed in REGRESSION_SEEDS {
        let rt = paused_runtime();
        rt.block_on(run_world(
            seed,
            StoreKind::Memory,
            Arc::new(MemoryStore::new()),
            RUN_OPS,
            RATES,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
    }
}

mod scenarios;

/// A seed replays exactly on `MemoryStore`: the same faults, the same checks.
#[test]
fn a_seed_replays_exactly() {
    let once = || {
        let world = paused_runtime()
            .block_on(run_world(
                77,
                StoreKind::Memory,
                Arc::new(MemoryStore::new()),
                1_000,
                RATES,
            ))
            .unwrap_or_else(|e| panic!("{e}"));
        let faults = world
            .shared
            .faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let truth = world
            .shared
            .truth
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .effects
            .clone();
        (
            world.ops,
            world.shared.checks.load(Ordering::Relaxed),
            faults,
            truth,
        )
    };
    assert_eq!(once(), once());
}
