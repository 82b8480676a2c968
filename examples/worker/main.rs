//! The main demo: `cargo run -p idem-examples --bin worker`.
//!
//! Starts four simulated providers that misbehave on purpose, runs a worker
//! over a batch of jobs (charge, text, review reply, post), kills it with
//! SIGKILL partway, restarts it, and prints what the providers saw: one side
//! effect per job. With `--worker` it is the worker itself (started by the
//! demo; it reads its endpoints from `IDEM_DEMO_*` variables).

use std::process::ExitCode;

use std::time::{Duration, SystemTime};

use idem::ledger::{ClaimFrom, Completion, NewOperation, SqliteStore};
use idem::{Fingerprint, IdempotencyKey, LedgerStore};
use idem_examples::demo::{Endpoints, SHOP, run_scenario, run_worker};

#[tokio::main]
async fn main() -> ExitCode {
    if std::env::args().any(|a| a == "--worker") {
        let ep = match Endpoints::from_env() {
            Ok(ep) => ep,
            Err(e) => {
                eprintln!("worker: {e}");
                return ExitCode::from(2);
            }
        };
        return match run_worker(&ep).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("worker: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("cannot find this program's path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(e) => {
            eprintln!("cannot create a temporary directory: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("idem demo: 8 jobs, 4 misbehaving providers, one SIGKILL\n");
    match run_scenario(&exe, dir.path()).await {
        Ok(report) => {
            println!();
            for note in &report.notes {
                println!("* {note}");
            }
            println!();
            print!("{}", report.table());
            if report.all_exactly_once() {
                println!("\nEvery job: exactly one side effect at the provider, ledger succeeded.");
                leave_for_the_operator(dir).await;
                ExitCode::SUCCESS
            } else {
                println!("\nSOME JOB DID NOT END WITH EXACTLY ONE SIDE EFFECT: see the table.");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Keeps the demo's ledger, records one more text whose answer was lost
/// (`unknown`), and prints how to settle it in the operator console.
async fn leave_for_the_operator(dir: tempfile::TempDir) {
    let dir = dir.keep();
    let db = dir.join("demo-ledger.db");
    let key = match IdempotencyKey::new(SHOP, "service_ticket_messages", "79", 1) {
        Ok(key) => key,
        Err(e) => {
            eprintln!("cannot make the operator's key: {e}");
            return;
        }
    };
    let left = async {
        let store = SqliteStore::open(&db).await?;
        let now = SystemTime::now();
        let fp = Fingerprint::builder()
            .body(b"Your bike is ready (ticket 79)")
            .finish();
        let op = NewOperation::new(key.clone(), "twilio", "messages.create", fp);
        store.begin(&op, now).await?;
        if let Some(lease) = store
            .claim(&key, ClaimFrom::Pending, Duration::from_secs(30), now)
            .await?
        {
            let lost = Completion::Unknown {
                note: "timed out after sending; no reconciliation ran".into(),
                status: None,
            };
            store.complete(&lease, &lost, now).await?;
        }
        Ok::<_, idem::StoreError>(())
    };
    if let Err(e) = left.await {
        eprintln!("cannot leave an operation for the operator: {e}");
        return;
    }
    println!(
        "\nOne more text, {key}, was sent but its answer was lost: it is left `unknown`\n\
         in the demo's ledger for you to settle. Open the operator console on it:\n\n    \
         IDEM_CONSOLE_PASSWORD=demo-password cargo run -p idem-console --bin idem -- \\\n        \
         --db {} serve\n\n\
         then browse http://127.0.0.1:8080/ and sign in as `operator` / `demo-password`.\n\
         (`idem --db {} list` shows the same from the shell.)",
        db.display(),
        db.display()
    );
}
