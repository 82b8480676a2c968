//! `idem`: the operator's command-line tool and console server.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    idem_console::cli::main_with(std::env::args_os()).await
}
