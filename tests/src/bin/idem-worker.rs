//! A worker process for the crash-loop and many-workers suites.
//!
//! It works through the job list of [`idem_tests::jobs`] against a shared
//! ledger (a SQLite file or a PostgreSQL URL) and fake providers that live in
//! another process, so side effects are counted outside the worker and
//! survive its death. Jobs that end "run again later" (not sent, in flight at
//! another worker, a Stripe outcome the key still covers) are retried in later
//! passes until every job is settled: succeeded, failed, or (Twilio) unknown.
//!
//! ```text
//! idem-worker --ledger <file.db | postgres://...> --stripe <url> --twilio <url>
//!             --shop <slug> --jobs <n> [--start <i>] [--attempt-ms <ms>]
//!             [--lease-margin-ms <ms>] [--deadline-s <s>]
//! ```
//!
//! Prints `ready` once the ledger is open, then one `finished ...` line.
//! Exit status: 0 all settled, 2 an unexpected answer, 3 deadline passed,
//! 64 bad arguments.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use idem::ledger::{PgStore, SqliteStore};
use idem::{Executor, LedgerStore};
use idem_tests::jobs::{self, Job, Outcome};

struct Args {
    ledger: String,
    stripe: String,
    twilio: String,
    shop: String,
    jobs: usize,
    start: usize,
    attempt: Duration,
    lease_margin: Duration,
    deadline: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut map = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let name = flag
            .strip_prefix("--")
            .ok_or_else(|| format!("unexpected argument {flag:?}"))?
            .to_owned();
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        map.insert(name, value);
    }
    let text = |name: &str| {
        map.get(name)
            .cloned()
            .ok_or_else(|| format!("--{name} is required"))
    };
    let number = |name: &str, default: u64| -> Result<u64, String> {
        map.get(name).map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| format!("--{name} {v:?} is not a number"))
        })
    };
    Ok(Args {
        ledger: text("ledger")?,
        stripe: text("stripe")?,
        twilio: text("twilio")?,
        shop: text("shop")?,
        jobs: usize::try_from(number("jobs", 0)?).map_err(|e| e.to_string())?,
        start: usize::try_from(number("start", 0)?).map_err(|e| e.to_string())?,
        attempt: Duration::from_millis(number("attempt-ms", 300)?),
        lease_margin: Duration::from_millis(number("lease-margin-ms", 200)?),
        deadline: Duration::from_secs(number("deadline-s", 120)?),
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(e) => {
            eprintln!("idem-worker: {e}");
            return ExitCode::from(64);
        }
    };
    let started = Instant::now();
    let store: Arc<dyn LedgerStore> = if args.ledger.starts_with("postgres://") {
        match PgStore::connect(&args.ledger).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("idem-worker: cannot open the PostgreSQL ledger: {e}");
                return ExitCode::from(2);
            }
        }
    } else {
        match SqliteStore::open(&args.ledger).await {
            Ok(s) => Arc::new(s),
            Err(e) => {
                eprintln!("idem-worker: cannot open the SQLite ledger: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let executor = Executor::builder_shared(store)
        .lease_margin(args.lease_margin)
        .build();
    let retry = jobs::fast_retry(args.attempt);
    let stripe = jobs::stripe(executor.clone(), &args.stripe, retry);
    let twilio = jobs::twilio(executor, &args.twilio, retry);
    println!("ready");

    let n = args.jobs;
    let mut todo: Vec<usize> = (0..n).map(|j| (args.start + j) % n.max(1)).collect();
    let (mut succeeded, mut unknown, mut failed) = (0usize, 0usize, 0usize);
    let (mut passes, mut deferred) = (0usize, 0usize);
    while !todo.is_empty() {
        passes += 1;
        let mut again = Vec::new();
        for i in todo {
            let job = Job::new(&args.shop, i);
            match jobs::run(&job, &stripe, &twilio).await {
                Ok(Outcome::Succeeded) => succeeded += 1,
                Ok(Outcome::Unknown) => unknown += 1,
                Ok(Outcome::Failed) => failed += 1,
                Ok(Outcome::Again(_)) => {
                    deferred += 1;
                    again.push(i);
                }
                Err(e) => {
                    eprintln!("idem-worker: {e}");
                    return ExitCode::from(2);
                }
            }
        }
        if !again.is_empty() {
            if started.elapsed() > args.deadline {
                eprintln!(
                    "idem-worker: deadline passed with {} job(s) unsettled, first {}",
                    again.len(),
                    Job::new(&args.shop, again[0]).key
                );
                return ExitCode::from(3);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        todo = again;
    }
    println!(
        "finished succeeded={succeeded} unknown={unknown} failed={failed} passes={passes} \
         deferred={deferred} ms={}",
        started.elapsed().as_millis()
    );
    ExitCode::SUCCESS
}
