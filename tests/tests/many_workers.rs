//! Many workers on PostgreSQL: 8 worker processes race over the same 1,000
//! jobs (one PostgreSQL ledger; fake providers in this test process, so the
//! counts are outside the workers). Each worker starts at a different job
//! and goes round the whole list, so every job is contended.
//!
//! Invariants: zero duplicate sends (every Stripe key and every Twilio text
//! reached its fake exactly once), every job `succeeded` with exactly one
//! side effect and one claim, and every worker finished cleanly.
//!
//! Needs PostgreSQL (`IDEM_TEST_DATABASE_URL`); outside CI it is skipped
//! loudly when no server is reachable, under `CI=true` it fails.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use idem::ledger::PgStore;
use idem::{LedgerStore, OperationState};
use idem_testkit::FakeStripe;
use idem_testkit::FakeTwilio;
use idem_tests::jobs::{Job, Kind};
use idem_tests::worker::{Worker, WorkerArgs};

const WORKERS: usize = 8;
const JOBS: usize = 1000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_workers_race_over_a_thousand_jobs_without_a_duplicate() {
    let Some(url) = idem::testing::pg_database_url("many_workers").await else {
        return;
    };
    let started = Instant::now();
    // Migrate once up front (the workers' own migrations then find nothing
    // to do; they would also be safe concurrently).
    let store = PgStore::connect(&url).await.unwrap();
    let stripe = FakeStripe::start().await;
    let twilio = FakeTwilio::start().await;
    let bin = Path::new(env!("CARGO_BIN_EXE_idem-worker"));
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let args = WorkerArgs {
            ledger: url.clone(),
            stripe: stripe.base_url(),
            twilio: twilio.base_url(),
            shop: "many".into(),
            jobs: JOBS,
            start: w * JOBS / WORKERS,
            attempt_ms: 5_000,
            lease_margin_ms: 5_000,
            deadline_s: 240,
        };
        workers.push(
            Worker::start(bin, &args, Duration::from_secs(60))
                .await
                .unwrap(),
        );
    }
    let lines: Vec<Result<String, String>> = futures::future::join_all(
        workers
            .into_iter()
            .map(|w| w.finish(Duration::from_secs(280))),
    )
    .await;
    let elapsed = started.elapsed();
    for (w, line) in lines.iter().enumerate() {
        eprintln!("worker {w}: {line:?}");
    }
    assert!(lines.iter().all(Result::is_ok), "every worker finished");

    // Zero duplicate sends: each key (Stripe) and each text (Twilio) reached
    // its fake exactly once.
    let mut stripe_sends: HashMap<String, usize> = HashMap::new();
    for k in stripe.keys_on_wire() {
        *stripe_sends.entry(k).or_default() += 1;
    }
    let mut texts: HashMap<String, usize> = HashMap::new();
    for m in twilio.messages() {
        *texts.entry(m.body.unwrap_or_default()).or_default() += 1;
    }
    let mut problems = Vec::new();
    for i in 0..JOBS {
        let job = Job::new("many", i);
        let key = job.key.as_str();
        let sends = match job.kind {
            Kind::Charge => stripe_sends.get(key).copied().unwrap_or(0),
            Kind::Text => texts.get(&job.text_body()).copied().unwrap_or(0),
        };
        let op = store.get(&job.key).await.unwrap();
        match op {
            Some(op) if sends == 1 && op.state == OperationState::Succeeded && op.claims == 1 => {}
            Some(op) => problems.push(format!(
                "{key}: {sends} sends, row {} after {} claims",
                op.state, op.claims
            )),
            None => problems.push(format!("{key}: {sends} sends, no ledger row")),
        }
    }
    eprintln!(
        "many workers: {WORKERS} processes, {JOBS} jobs, {:.1}s; {} Stripe write requests, \
         {} Twilio write requests, {} problem(s)",
        elapsed.as_secs_f64(),
        stripe.write_requests(),
        twilio.write_requests(),
        problems.len()
    );
    assert!(
        problems.is_empty(),
        "{} job(s) sent twice, not sent or unsettled:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(
        stripe.write_requests(),
        JOBS / 2,
        "zero duplicate Stripe sends"
    );
    assert_eq!(
        twilio.write_requests(),
        JOBS / 2,
        "zero duplicate Twilio sends"
    );
    assert_eq!(stripe.side_effects() + twilio.side_effects(), JOBS);
}
