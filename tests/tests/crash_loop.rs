//! Crash loop: the worker binary is killed with SIGKILL at random points, at
//! least 100 times, while it works through a job list against one SQLite
//! ledger file. The fake providers live in this test process, so their
//! side-effect counts survive every kill. A last run finishes the list.
//!
//! Invariants, per job: a Stripe charge has exactly one charge at the fake
//! and its row `succeeded`; a Twilio text has exactly one message when its
//! row `succeeded`, at most one when it is `unknown` (never resent), and no
//! row is left `pending`, `sending` or missing (nothing lost).
//!
//! `IDEM_CRASH_SEED` changes the kill points, `IDEM_CRASH_KILLS` the number of
//! kills (default 120).

use std::path::Path;
use std::time::{Duration, Instant};

use idem::ledger::SqliteStore;
use idem::{LedgerStore, OperationState};
use idem_testkit::FakeStripe;
use idem_testkit::FakeTwilio;
use idem_tests::jobs::{Job, Kind};
use idem_tests::proxy::{Action, FaultProxy};
use idem_tests::seed;
use idem_tests::worker::{Worker, WorkerArgs};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const DEFAULT_SEED: u64 = 0xc4a5_11e0_0000_0009;
const JOBS: usize = 300;

fn kills_wanted() -> usize {
    std::env::var("IDEM_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(120)
}

/// Small random holds on the way to and from the fakes, so that kills land
/// while requests are in flight, not only between jobs.
fn jitter(rng: &mut StdRng, n: usize) -> Vec<Action> {
    (0..n)
        .map(|_| match rng.random_range(0..4) {
            0 => Action::DelayRequest(Duration::from_millis(rng.random_range(1..15))),
            1 => Action::DelayResponse(Duration::from_millis(rng.random_range(1..15))),
            _ => Action::Pass,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_never_doubles_or_loses_a_job() {
    let started = Instant::now();
    let seed = seed::from_env("IDEM_CRASH_SEED", DEFAULT_SEED);
    let mut rng = StdRng::seed_from_u64(seed);
    let bin = Path::new(env!("CARGO_BIN_EXE_idem-worker"));
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("crash-loop.db");
    let stripe = FakeStripe::start().await;
    let twilio = FakeTwilio::start().await;
    let stripe_proxy = FaultProxy::in_front_of(&stripe.base_url(), jitter(&mut rng, 5000))
        .await
        .unwrap();
    let twilio_proxy = FaultProxy::in_front_of(&twilio.base_url(), jitter(&mut rng, 5000))
        .await
        .unwrap();
    let args = |start: usize| WorkerArgs {
        ledger: ledger.display().to_string(),
        stripe: stripe_proxy.base_url(),
        twilio: twilio_proxy.base_url(),
        shop: "crash".into(),
        jobs: JOBS,
        start,
        attempt_ms: 300,
        lease_margin_ms: 100,
        deadline_s: 120,
    };

    let wanted = kills_wanted();
    let (mut kills, mut lives) = (0usize, 0usize);
    while kills < wanted {
        lives += 1;
        assert!(
            lives <= wanted * 3,
            "only {kills} of {lives} lives could be killed while running (seed {seed:#x})"
        );
        let start = rng.random_range(0..JOBS);
        let mut worker = Worker::start(bin, &args(start), Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("life {lives}: {e} (seed {seed:#x})"));
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..60))).await;
        if worker.running() {
            kills += 1;
        }
        worker.kill().await;
    }
    let killed_after = started.elapsed();

    // The last life runs to the end of the list.
    let last = Worker::start(bin, &args(0), Duration::from_secs(30))
        .await
        .unwrap();
    let finished = last
        .finish(Duration::from_secs(150))
        .await
        .unwrap_or_else(|e| panic!("last run: {e} (seed {seed:#x})"));
    assert!(stripe_proxy.settle(Duration::from_secs(10)).await);
    assert!(twilio_proxy.settle(Duration::from_secs(10)).await);

    let store = SqliteStore::open(&ledger).await.unwrap();
    let charges = stripe.charges();
    let messages = twilio.messages();
    let wire_keys = stripe.keys_on_wire();
    let (mut texts_sent, mut unknown_sent, mut unknown_unsent, mut resent, mut reclaimed) =
        (0usize, 0usize, 0usize, 0usize, 0usize);
    let mut problems = Vec::new();
    for i in 0..JOBS {
        let job = Job::new("crash", i);
        let key = job.key.as_str();
        let Some(op) = store.get(&job.key).await.unwrap() else {
            problems.push(format!("{key}: no ledger row (lost)"));
            continue;
        };
        if op.claims > 1 {
            reclaimed += 1;
        }
        match job.kind {
            Kind::Charge => {
                let n = charges
                    .iter()
                    .filter(|c| c["metadata"]["idem_key"].as_str() == Some(key))
                    .count();
                if n != 1 || op.state != OperationState::Succeeded {
                    problems.push(format!("{key}: {n} charges, row {}", op.state));
                }
                if wire_keys.iter().filter(|k| k.as_str() == key).count() > 1 {
                    resent += 1;
                }
            }
            Kind::Text => {
                let body = job.text_body();
                let n = messages
                    .iter()
                    .filter(|m| m.body.as_deref() == Some(body.as_str()))
                    .count();
                texts_sent += n;
                match (op.state, n) {
                    (OperationState::Succeeded, 1) => {}
                    (OperationState::Unknown, 0) => unknown_unsent += 1,
                    (OperationState::Unknown, 1) => unknown_sent += 1,
                    (state, n) => problems.push(format!("{key}: {n} texts, row {state}")),
                }
            }
        }
    }
    eprintln!(
        "crash loop: {kills} SIGKILLs in {lives} lives ({:.1}s), last run `{finished}`; \
         {reclaimed} jobs were claimed again after a dead worker's lease, {resent} Stripe keys \
         resent (deduped by the key), Twilio unknown {} ({unknown_sent} had texted, \
         {unknown_unsent} had not); total {:.1}s",
        killed_after.as_secs_f64(),
        unknown_sent + unknown_unsent,
        started.elapsed().as_secs_f64(),
    );
    assert!(
        problems.is_empty(),
        "{} job(s) doubled or lost (IDEM_CRASH_SEED={seed:#x}):\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(stripe.side_effects(), JOBS / 2, "one charge per Stripe job");
    assert_eq!(twilio.side_effects(), texts_sent, "only the jobs' texts");
    assert!(kills >= wanted);
    assert!(
        reclaimed > 0,
        "no kill landed mid-operation; the crash path was not exercised"
    );
}
