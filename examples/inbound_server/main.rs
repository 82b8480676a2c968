//! Serves the inbound example on a loopback address.
//!
//! ```text
//! inbound_server [--addr 127.0.0.1:8080]
//! DATABASE_URL=postgres://...   use PostgreSQL instead of SQLite
//! INBOUND_SQLITE=path.db        SQLite file (default inbound-example.db)
//! ```
//!
//! Prints `listening on http://<addr>` once ready.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use idem::inbound::{InboundStore, Sweeper};
use idem::ledger::{PgStore, SqliteStore};
use idem_examples::inbound::{Counters, app};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut addr: SocketAddr = "127.0.0.1:8080".parse()?;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = args.next().ok_or("--addr needs a value")?.parse()?,
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    if !addr.ip().is_loopback() {
        return Err(
            format!("{addr} is not a loopback address; this example serves loopback only").into(),
        );
    }
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => serve(PgStore::connect(&url).await?, addr).await,
        _ => {
            let path =
                std::env::var("INBOUND_SQLITE").unwrap_or_else(|_| "inbound-example.db".into());
            serve(SqliteStore::open(path).await?, addr).await
        }
    }
}

async fn serve<S: InboundStore + Clone>(
    store: S,
    addr: SocketAddr,
) -> Result<(), Box<dyn std::error::Error>> {
    let sweeper = Sweeper::new(store.clone()).build()?.spawn();
    let router = app(store, Arc::new(Counters::default()))?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    sweeper.shutdown().await;
    Ok(())
}
