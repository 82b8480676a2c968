//! Chaos: the real Stripe and Twilio adapters talk to their fakes through the
//! fault proxy, under randomized fault schedules from a fixed seed.
//!
//! Each schedule is a list of proxy actions (delay the request or the answer
//! past the attempt timeout, reset before forwarding, forward then drop the
//! answer, truncate the answer) plus faults injected at the fake itself (5xx,
//! 429, lost answers). Jobs are run again while the adapter says a later run
//! may succeed, as a job queue would; once the schedule is used up every
//! request passes.
//!
//! Invariants, per operation:
//! * Stripe (native key): exactly one side effect at the fake, the ledger row
//!   `succeeded`, and a further run answers from the ledger with no request.
//! * Twilio (local only): at most one side effect; a row that `succeeded` has
//!   exactly one; every other row is `unknown` or `failed` and the error
//!   names its key (or `pending` only when no request carrying the key ever
//!   reached the fake); a further run sends nothing.
//!
//! `IDEM_CHAOS_SEED` (decimal or 0x hex) changes the seed,
//! `IDEM_CHAOS_SCHEDULES` the number of schedules per provider (default 300),
//! `IDEM_CHAOS_ONLY=<i>` runs one schedule.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use idem::{Executor, LedgerStore, OperationState};
use idem_stripe::{
    Amount, CreateCustomer, CreatePaymentIntent, CreateRefund, Currency, PaymentMethodId,
};
use idem_testkit::FakeTwilio;
use idem_testkit::{FakeStripe, Fault};
use idem_tests::jobs;
use idem_tests::proxy::{Action, FaultProxy};
use idem_tests::seed;
use idem_twilio::CreateMessage;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const DEFAULT_SEED: u64 = 0x1de4_c4a0_5000_0009;
/// Per-attempt timeout of the clients under test.
const ATTEMPT: Duration = Duration::from_millis(250);
/// Runs of one job before the test gives up on it.
const MAX_RUNS: usize = 40;
/// Schedules run at once.
const CONCURRENCY: usize = 24;

fn schedule_count() -> usize {
    std::env::var("IDEM_CHAOS_SCHEDULES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300)
}

fn only() -> Option<usize> {
    std::env::var("IDEM_CHAOS_ONLY")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// A hold that outlasts the client's attempt timeout.
fn long(rng: &mut StdRng) -> Duration {
    ATTEMPT + Duration::from_millis(rng.random_range(30..200))
}

fn short(rng: &mut StdRng) -> Duration {
    Duration::from_millis(rng.random_range(1..40))
}

fn random_action(rng: &mut StdRng) -> Action {
    match rng.random_range(0..100) {
        0..20 => Action::Pass,
        20..25 => Action::DelayRequest(short(rng)),
        25..35 => Action::DelayRequest(long(rng)),
        35..40 => Action::DelayResponse(short(rng)),
        40..50 => Action::DelayResponse(long(rng)),
        50..67 => Action::ResetBeforeForward,
        67..84 => Action::DropResponse,
        _ => Action::Truncate(rng.random_range(0.02..0.98)),
    }
}

struct Schedule<F> {
    index: usize,
    seed: u64,
    proxy: Vec<Action>,
    fake: Vec<F>,
}

impl<F: fmt::Debug> fmt::Debug for Schedule<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "schedule #{} (seed {:#x}): proxy {:?}; fake {:?}",
            self.index, self.seed, self.proxy, self.fake
        )
    }
}

fn proxy_actions(rng: &mut StdRng, most: usize) -> Vec<Action> {
    let n = rng.random_range(1..=most);
    (0..n).map(|_| random_action(rng)).collect()
}

fn stripe_schedule(seed: u64, index: usize) -> Schedule<Fault> {
    let s = seed::derive(seed, index as u64);
    let mut rng = StdRng::seed_from_u64(s);
    let proxy = proxy_actions(&mut rng, 8);
    let n = rng.random_range(0..=3);
    let fake = (0..n)
        .map(|_| match rng.random_range(0..5) {
            0 => Fault::ServerError,
            1 => Fault::RateLimited {
                retry_after_secs: 0,
            },
            2 => FakeStripe::lock_timeout(),
            3 => Fault::LoseResponse {
                delay: long(&mut rng),
            },
            _ => Fault::StallWithoutEffect {
                delay: long(&mut rng),
            },
        })
        .collect();
    Schedule {
        index,
        seed: s,
        proxy,
        fake,
    }
}

fn twilio_schedule(seed: u64, index: usize) -> Schedule<Fault> {
    let s = seed::derive(seed ^ 0x7477_696c_696f, index as u64);
    let mut rng = StdRng::seed_from_u64(s);
    let proxy = proxy_actions(&mut rng, 5);
    let n = rng.random_range(0..=2);
    let fake = (0..n)
        .map(|_| match rng.random_range(0..20) {
            0..5 => Fault::ServerError,
            5..10 => Fault::ServerErrorAfterEffect,
            10..15 => Fault::RateLimited {
                retry_after_secs: 0,
            },
            15..19 => Fault::LoseResponse {
                delay: long(&mut rng),
            },
            _ => FakeTwilio::invalid_to(),
        })
        .collect();
    Schedule {
        index,
        seed: s,
        proxy,
        fake,
    }
}

/// What the schedules of a suite share: one ledger and one executor (every
/// schedule has its own keys and its own fake; building an HTTP client per
/// schedule, root certificates and all, costs more than a schedule), and
/// totals that show the faults really bit.
#[derive(Debug)]
struct Totals {
    store: idem::ledger::SqliteStore,
    exec: Executor,
    schedules: AtomicUsize,
    faults_applied: AtomicUsize,
    wire_writes: AtomicUsize,
    runs: AtomicUsize,
    succeeded: AtomicUsize,
    unknown: AtomicUsize,
    failed: AtomicUsize,
    unknown_with_effect: AtomicUsize,
}

impl Totals {
    fn add(&self, field: &AtomicUsize, n: usize) {
        field.fetch_add(n, Ordering::Relaxed);
    }
}

fn get(n: &AtomicUsize) -> usize {
    n.load(Ordering::Relaxed)
}

async fn run_suite<F, Fut>(name: &str, salt: u64, run: F) -> Arc<Totals>
where
    F: Fn(u64, usize, Arc<Totals>) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let started = Instant::now();
    let seed = seed::from_env("IDEM_CHAOS_SEED", DEFAULT_SEED) ^ salt;
    let indices: Vec<usize> = match only() {
        Some(i) => vec![i],
        None => (0..schedule_count()).collect(),
    };
    let (store, _dir) = idem::testing::sqlite_store().await;
    let exec = Executor::builder(store.clone())
        .lease_margin(Duration::from_millis(200))
        .build();
    let totals = Arc::new(Totals {
        store,
        exec,
        schedules: AtomicUsize::default(),
        faults_applied: AtomicUsize::default(),
        wire_writes: AtomicUsize::default(),
        runs: AtomicUsize::default(),
        succeeded: AtomicUsize::default(),
        unknown: AtomicUsize::default(),
        failed: AtomicUsize::default(),
        unknown_with_effect: AtomicUsize::default(),
    });
    let failures: Vec<String> = futures::stream::iter(indices.iter().copied())
        .map(|i| {
            let fut = run(seed, i, totals.clone());
            async move {
                match tokio::time::timeout(Duration::from_secs(90), fut).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("#{i}: {e}")),
                    Err(_) => Some(format!("#{i}: did not finish within 90 s")),
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    eprintln!(
        "{name}: {} schedules in {:.1}s: {} proxy faults applied, {} write requests on the wire, \
         {} job runs; operations succeeded {}, unknown {} ({} of them with an effect at the \
         fake), failed {}",
        get(&totals.schedules),
        started.elapsed().as_secs_f64(),
        get(&totals.faults_applied),
        get(&totals.wire_writes),
        get(&totals.runs),
        get(&totals.succeeded),
        get(&totals.unknown),
        get(&totals.unknown_with_effect),
        get(&totals.failed),
    );
    assert!(
        failures.is_empty(),
        "{name}: {} of {} schedules broke an invariant (IDEM_CHAOS_SEED={:#x}, repeat one with \
         IDEM_CHAOS_ONLY=<#>):\n{}",
        failures.len(),
        indices.len(),
        seed ^ salt,
        failures.join("\n")
    );
    assert_eq!(get(&totals.schedules), indices.len());
    totals
}

fn count_faults(proxy: &FaultProxy) -> usize {
    proxy
        .log()
        .iter()
        .filter(|r| r.action != Action::Pass)
        .count()
}

fn with_key(objects: &[Value], key: &str) -> usize {
    objects
        .iter()
        .filter(|o| o["metadata"]["idem_key"].as_str() == Some(key))
        .count()
}

/// Runs `op` until it succeeds, as a job queue would: every error must name
/// the key and say a later run may succeed.
macro_rules! until_ok {
    ($key:expr, $runs:ident, $op:expr) => {{
        let mut last = String::new();
        let mut done = None;
        for _ in 0..MAX_RUNS {
            $runs += 1;
            match $op.await {
                Ok(v) => {
                    done = Some(v);
                    break;
                }
                Err(e) => {
                    if e.key() != Some($key) {
                        return Err(format!("{}: error does not name the key: {e}", $key));
                    }
                    if !e.is_retryable() {
                        return Err(format!("{}: error is not retryable: {e}", $key));
                    }
                    last = e.to_string();
                }
            }
        }
        match done {
            Some(v) => v,
            None => {
                return Err(format!(
                    "{}: not succeeded after {MAX_RUNS} runs; last error: {last}",
                    $key
                ));
            }
        }
    }};
}

async fn stripe_one(seed: u64, index: usize, totals: Arc<Totals>) -> Result<(), String> {
    let schedule = stripe_schedule(seed, index);
    let context = format!("{schedule:?}");
    stripe_checked(schedule, &totals)
        .await
        .map_err(|e| format!("{e}\n    {context}"))
}

async fn stripe_checked(schedule: Schedule<Fault>, totals: &Totals) -> Result<(), String> {
    let store = totals.store.clone();
    let fake = FakeStripe::start().await;
    for f in &schedule.fake {
        fake.inject(f.clone());
    }
    let proxy = FaultProxy::in_front_of(&fake.base_url(), schedule.proxy.clone())
        .await
        .map_err(|e| e.to_string())?;
    let exec = totals.exec.clone();
    let stripe = jobs::stripe(exec, &proxy.base_url(), jobs::fast_retry(ATTEMPT));
    let i = schedule.index;
    let k_cus: idem::IdempotencyKey = format!("chaos_customers_{i}_v1").parse().unwrap();
    let k_pi: idem::IdempotencyKey = format!("chaos_payment_intents_{i}_v1").parse().unwrap();
    let k_re: idem::IdempotencyKey = format!("chaos_refunds_{i}_v1").parse().unwrap();
    let mut runs = 0usize;

    let cus = CreateCustomer {
        email: Some(format!("c{i}@example.com")),
        ..CreateCustomer::default()
    };
    let customer = until_ok!(&k_cus, runs, stripe.customers().create(&k_cus, &cus));
    let mut pi = CreatePaymentIntent::new(Amount::minor(2000), Currency::usd());
    pi.customer = Some(customer.object.id.clone());
    pi.payment_method = Some("pm_card_visa".parse::<PaymentMethodId>().unwrap());
    pi.confirm = Some(true);
    let intent = until_ok!(&k_pi, runs, stripe.payment_intents().create(&k_pi, &pi));
    let mut re = CreateRefund::payment_intent(intent.object.id.clone());
    re.amount = Some(Amount::minor(500));
    until_ok!(&k_re, runs, stripe.refunds().create(&k_re, &re));

    if !proxy.settle(Duration::from_secs(10)).await {
        return Err("the proxy did not settle".into());
    }
    // Exactly one side effect per operation, whatever the faults.
    let counts = [
        (k_cus.as_str(), with_key(&fake.customers(), k_cus.as_str())),
        (
            k_pi.as_str(),
            with_key(&fake.payment_intents(), k_pi.as_str()),
        ),
        (k_re.as_str(), with_key(&fake.refunds(), k_re.as_str())),
    ];
    for (key, n) in counts {
        if n != 1 {
            return Err(format!(
                "{key}: {n} objects at the fake, expected exactly 1"
            ));
        }
    }
    if fake.side_effects() != 3 {
        return Err(format!(
            "{} side effects at the fake for 3 operations",
            fake.side_effects()
        ));
    }
    if let Some(k) = fake
        .keys_on_wire()
        .iter()
        .find(|k| ![k_cus.as_str(), k_pi.as_str(), k_re.as_str()].contains(&k.as_str()))
    {
        return Err(format!("a write went out under a foreign key {k}"));
    }
    for k in [&k_cus, &k_pi, &k_re] {
        let op = store
            .get(k)
            .await
            .map_err(|e| e.to_string())?
            .ok_or(format!("{k}: no ledger row"))?;
        if op.state != OperationState::Succeeded {
            return Err(format!("{k}: ledger row is {}", op.state));
        }
    }
    // A further run answers from the ledger and sends nothing.
    let writes = fake.write_requests();
    let again = stripe
        .payment_intents()
        .create(&k_pi, &pi)
        .await
        .map_err(|e| format!("{k_pi}: rerun failed: {e}"))?;
    if !again.replayed || fake.write_requests() != writes {
        return Err(format!("{k_pi}: a rerun after success went to the wire"));
    }
    totals.add(&totals.schedules, 1);
    totals.add(&totals.faults_applied, count_faults(&proxy));
    totals.add(&totals.wire_writes, fake.write_requests());
    totals.add(&totals.runs, runs);
    totals.add(&totals.succeeded, 3);
    Ok(())
}

async fn twilio_one(seed: u64, index: usize, totals: Arc<Totals>) -> Result<(), String> {
    let schedule = twilio_schedule(seed, index);
    let context = format!("{schedule:?}");
    twilio_checked(schedule, &totals)
        .await
        .map_err(|e| format!("{e}\n    {context}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Succeeded,
    Unknown,
    Failed,
    Pending,
}

async fn twilio_checked(schedule: Schedule<Fault>, totals: &Totals) -> Result<(), String> {
    let store = totals.store.clone();
    let fake = FakeTwilio::start().await;
    for f in &schedule.fake {
        fake.inject(f.clone());
    }
    let proxy = FaultProxy::in_front_of(&fake.base_url(), schedule.proxy.clone())
        .await
        .map_err(|e| e.to_string())?;
    let exec = totals.exec.clone();
    let twilio = jobs::twilio(exec, &proxy.base_url(), jobs::fast_retry(ATTEMPT));
    let i = schedule.index;
    let ops: Vec<(idem::IdempotencyKey, CreateMessage)> = (0..5)
        .map(|j| {
            let key: idem::IdempotencyKey = format!("chaos_texts_{i}-{j}_v1").parse().unwrap();
            let msg = CreateMessage::from_number(jobs::TO, jobs::FROM, format!("text {key}"));
            (key, msg)
        })
        .collect();
    let mut runs = 0usize;
    let mut ends = Vec::new();
    for (key, msg) in &ops {
        let mut end = End::Pending;
        for _ in 0..MAX_RUNS {
            runs += 1;
            match twilio.messages().create(key, msg).await {
                Ok(_) => {
                    end = End::Succeeded;
                    break;
                }
                Err(e) => {
                    if e.key() != Some(key) || !e.to_string().contains(key.as_str()) {
                        return Err(format!("{key}: error does not name the key: {e}"));
                    }
                    if e.is_unknown() {
                        end = End::Unknown;
                        break;
                    }
                    if matches!(e, idem_twilio::Error::Rejected { .. }) {
                        end = End::Failed;
                        break;
                    }
                    if !e.is_retryable() {
                        return Err(format!("{key}: unexpected error: {e}"));
                    }
                }
            }
        }
        ends.push(end);
    }
    if !proxy.settle(Duration::from_secs(10)).await {
        return Err("the proxy did not settle".into());
    }
    // A further run of every job sends nothing and gives the same answer.
    let writes = fake.write_requests();
    for ((key, msg), end) in ops.iter().zip(&ends) {
        if *end == End::Pending {
            continue;
        }
        let again = twilio.messages().create(key, msg).await;
        let same = match (end, &again) {
            (End::Succeeded, Ok(sent)) => sent.from_ledger(),
            (End::Unknown, Err(e)) => e.is_unknown() && e.key() == Some(key),
            (End::Failed, Err(e)) => matches!(e, idem_twilio::Error::Rejected { .. }),
            _ => false,
        };
        if !same {
            return Err(format!("{key}: ended {end:?}, a rerun answered {again:?}"));
        }
    }
    if fake.write_requests() != writes {
        return Err(format!(
            "a rerun of settled jobs sent {} request(s)",
            fake.write_requests() - writes
        ));
    }
    let messages = fake.messages();
    let log = proxy.log();
    let mut effects = 0;
    for ((key, msg), end) in ops.iter().zip(&ends) {
        let body = msg.body.clone().unwrap_or_default();
        let n = messages
            .iter()
            .filter(|m| m.body.as_deref() == Some(body.as_str()))
            .count();
        effects += n;
        let op = store
            .get(key)
            .await
            .map_err(|e| e.to_string())?
            .ok_or(format!("{key}: no ledger row: silently dropped"))?;
        let ok = match (end, op.state) {
            (End::Succeeded, OperationState::Succeeded) => n == 1,
            (End::Unknown, OperationState::Unknown) => n <= 1,
            (End::Failed, OperationState::Failed) => n == 0,
            (End::Pending, OperationState::Pending) => {
                n == 0 && !log.iter().any(|r| r.forwarded && r.mentions(key.as_str()))
            }
            _ => false,
        };
        if !ok {
            return Err(format!(
                "{key}: run ended {end:?}, ledger row {}, {n} message(s) at the fake",
                op.state
            ));
        }
        match end {
            End::Succeeded => totals.add(&totals.succeeded, 1),
            End::Unknown => {
                totals.add(&totals.unknown, 1);
                totals.add(&totals.unknown_with_effect, n);
            }
            End::Failed => totals.add(&totals.failed, 1),
            End::Pending => {}
        }
    }
    if effects != fake.side_effects() {
        return Err(format!(
            "the fake counts {} side effects, the jobs' messages are {effects}",
            fake.side_effects()
        ));
    }
    totals.add(&totals.schedules, 1);
    totals.add(&totals.faults_applied, count_faults(&proxy));
    totals.add(&totals.wire_writes, writes);
    totals.add(&totals.runs, runs);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_charges_exactly_once_under_random_faults() {
    let totals = run_suite("stripe chaos", 0, stripe_one).await;
    if only().is_none() {
        // The schedules really hurt: faults were applied and retried.
        assert!(get(&totals.faults_applied) > get(&totals.schedules));
        assert!(get(&totals.wire_writes) > 3 * get(&totals.schedules));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twilio_texts_at_most_once_under_random_faults() {
    let totals = run_suite("twilio chaos", 0x7477, twilio_one).await;
    if only().is_none() {
        assert!(get(&totals.faults_applied) > get(&totals.schedules));
        assert!(get(&totals.succeeded) > 0, "some sends got through");
        assert!(get(&totals.unknown) > 0, "some sends ended unknown");
        assert!(
            get(&totals.unknown_with_effect) > 0,
            "some unknown sends had really texted (proving they must not be resent)"
        );
    }
}
