//! The main demo: `cargo run -p idem-examples --bin worker`.
//!
//! Starts four simulated providers that misbehave on purpose, runs a worker
//! over a batch of jobs (charge, text, review reply, post), kills it with
//! SIGKILL partway, restarts it, and prints what the providers saw: one side
//! effect per job. With `--worker` it is the worker itself (started by the
//! demo; it reads its endpoints from `IDEM_DEMO_*` variables).

use std::process::ExitCode;

use idem_examples::demo::{Endpoints, run_scenario, run_worker};

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
