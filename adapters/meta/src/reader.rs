//! Reads (reconciliation lookups, container status) through core's executor.
//!
//! Core's executor is the one place that sends HTTP, and it only sends under
//! a ledger row. Reads must not leave rows in the application's ledger (a
//! stored "succeeded" read would be replayed forever), so they run under a
//! throwaway executor of their own: a SQLite ledger in a temporary directory,
//! a fresh key per read, and a naturally idempotent provider (a `GET` may be
//! resent on any transient failure). Rows are purged after each read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem::executor::{Delivered, Provider, RetrySettings, SafetyClass};
use idem::ledger::SqliteStore;
use idem::{Clock, ExecError, Executor, IdempotencyKey, OutboundRequest};
use tokio::sync::OnceCell;

use crate::classifier::MetaClassifier;

/// Why a read failed, in words (no URL, no token).
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Meta answered with an error.
    Rejected(http::StatusCode, bytes::Bytes),
    /// Anything else.
    Other(String),
}

impl ReadError {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Rejected(status, body) => match crate::error::MetaError::from_body(body) {
                Some(e) => format!("HTTP {status}: {e}"),
                None => format!("HTTP {status}"),
            },
            Self::Other(s) => s.clone(),
        }
    }
}

#[derive(Debug)]
struct Ready {
    executor: Executor,
    _dir: tempfile::TempDir,
}

#[derive(Debug)]
pub(crate) struct Reader {
    ready: OnceCell<Ready>,
    provider: Provider,
    clock: Arc<dyn Clock>,
    counter: AtomicU64,
}

impl Reader {
    pub(crate) fn new(retry: RetrySettings, clock: Arc<dyn Clock>) -> Self {
        Self {
            ready: OnceCell::new(),
            provider: Provider::new(
                "meta-read",
                SafetyClass::NaturallyIdempotent,
                MetaClassifier,
            )
            .with_retry(retry),
            clock,
            counter: AtomicU64::new(0),
        }
    }

    async fn ready(&self) -> Result<&Ready, ReadError> {
        self.ready
            .get_or_try_init(|| async {
                let dir = tempfile::Builder::new()
                    .prefix("idem-meta-reads")
                    .tempdir()
                    .map_err(|e| ReadError::Other(format!("cannot create the read ledger: {e}")))?;
                let store = SqliteStore::open(dir.path().join("reads.db"))
                    .await
                    .map_err(|e| ReadError::Other(format!("cannot open the read ledger: {e}")))?;
                let executor = Executor::builder(store)
                    .shared_clock(self.clock.clone())
                    .build();
                Ok(Ready {
                    executor,
                    _dir: dir,
                })
            })
            .await
    }

    /// Sends one `GET` and returns Meta's answer.
    pub(crate) async fn get(&self, request: OutboundRequest) -> Result<Delivered, ReadError> {
        let ready = self.ready().await?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let row = format!("{}-{n}-{nanos}", std::process::id());
        let key = IdempotencyKey::new("idem-meta", "graph_reads", &row, 1)
            .map_err(|e| ReadError::Other(format!("read key: {e}")))?;
        let result = ready
            .executor
            .execute(&self.provider, &key, "graph.read", request)
            .await;
        // Reads are never replayed: drop finished read rows straight away.
        let now = ready.executor.now() + Duration::from_secs(1);
        if let Err(e) = ready.executor.store().purge(now, 1000).await {
            tracing::debug!(error = %e, "could not purge the read ledger");
        }
        result.map_err(|e| match e {
            ExecError::Rejected { status, body, .. } => ReadError::Rejected(status, body),
            other => ReadError::Other(other.to_string()),
        })
    }
}
