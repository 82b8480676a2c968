//! `operator_retry`: list, inspect, retry (bump) and sweep ledger operations.
//!
//! ```text
//! cargo run -p idem-examples --bin operator_retry -- --db worker.db list
//! cargo run -p idem-examples --bin operator_retry -- --db worker.db retry joes-bikes_transactions_42_v1
//! ```

use std::process::ExitCode;

use idem::Clock;
use idem_examples::operator::{USAGE, open_store, run};

#[tokio::main]
async fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let db = match args.iter().position(|a| a == "--db") {
        Some(i) if i + 1 < args.len() => {
            let db = args.remove(i + 1);
            args.remove(i);
            db
        }
        _ => match std::env::var("IDEM_DATABASE_URL") {
            Ok(db) => db,
            Err(_) => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    let store = match open_store(&db).await {
        Ok(store) => store,
        Err(e) => {
            eprintln!("cannot open the ledger: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&*store, &args, idem::SystemClock.now()).await {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
