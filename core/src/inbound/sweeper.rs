//! The sweeper: removes inbound records once their retention ends.
//!
//! Records stay 7 days by default (well past the longest replay window, so
//! they remain available for audit and metrics), then a periodic tokio task
//! deletes them in bounded batches, so one run never holds a long lock. Every
//! run writes one audit row (see [`InboundStore::sweep_runs`]). A record is
//! never deleted while its replay window is open or a live request holds it,
//! whatever the retention.
//!
//! ```no_run
//! use std::time::Duration;
//! use idem::inbound::Sweeper;
//! use idem::ledger::SqliteStore;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open("app.db").await?;
//! let handle = Sweeper::new(store).period(Duration::from_secs(600)).build()?.spawn();
//! // ... on shutdown:
//! handle.shutdown().await;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{ConfigError, InboundStore, SweepRun};
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;

/// How long records are kept by default.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What one sweeper run did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SweepReport {
    /// Records deleted.
    pub deleted: u64,
    /// Batches run.
    pub batches: u32,
    /// Whether the run stopped at its batch limit with rows left over.
    pub more_left: bool,
}

/// Deletes inbound records older than the retention, in batches.
#[derive(Debug, Clone)]
pub struct Sweeper<S> {
    store: Arc<S>,
    period: Duration,
    retention: Duration,
    batch_size: u32,
    max_batches: u32,
    clock: Arc<dyn Clock>,
}

impl<S: InboundStore> Sweeper<S> {
    /// A sweeper with the defaults: hourly, 7-day retention, batches of 500,
    /// at most 100 batches per run.
    pub fn new(store: S) -> Self {
        Self::shared(Arc::new(store))
    }

    /// As [`Sweeper::new`], sharing the store.
    pub fn shared(store: Arc<S>) -> Self {
        Self {
            store,
            period: Duration::from_secs(3600),
            retention: DEFAULT_RETENTION,
            batch_size: 500,
            max_batches: 100,
            clock: Arc::new(SystemClock),
        }
    }

    /// Time between runs (default 1 hour; at least 1 second).
    pub fn period(mut self, period: Duration) -> Self {
        self.period = period;
        self
    }

    /// How long records are kept (default 7 days; at least 1 hour).
    pub fn retention(mut self, retention: Duration) -> Self {
        self.retention = retention;
        self
    }

    /// Rows deleted per statement (default 500; 1 to 10 000).
    pub fn batch_size(mut self, rows: u32) -> Self {
        self.batch_size = rows;
        self
    }

    /// Batches per run (default 100; at least 1). What is left waits for the
    /// next run.
    pub fn max_batches(mut self, batches: u32) -> Self {
        self.max_batches = batches;
        self
    }

    /// The clock (default the system clock).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Sweeper`] naming the setting out of range.
    pub fn build(self) -> Result<Self, ConfigError> {
        let bad = |setting, reason| Err(ConfigError::Sweeper { setting, reason });
        if self.period < Duration::from_secs(1) {
            return bad("period", "must be at least 1 second");
        }
        if self.retention < Duration::from_secs(3600) {
            return bad("retention", "must be at least 1 hour");
        }
        if !(1..=10_000).contains(&self.batch_size) {
            return bad("batch_size", "must be 1 to 10000 rows");
        }
        if self.max_batches == 0 {
            return bad("max_batches", "must be at least 1");
        }
        Ok(self)
    }

    /// Runs once now: deletes eligible records in batches and writes one
    /// audit row.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store fails; the audit row records the error
    /// when the store still accepts it.
    pub async fn run_once(&self) -> Result<SweepReport, StoreError> {
        let started_at = self.clock.now();
        let cutoff = started_at
            .checked_sub(self.retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut report = SweepReport {
            deleted: 0,
            batches: 0,
            more_left: false,
        };
        let mut failure = None;
        while report.batches < self.max_batches {
            match self
                .store
                .sweep_batch(cutoff, self.clock.now(), self.batch_size)
                .await
            {
                Ok(n) => {
                    report.batches += 1;
                    report.deleted += n;
                    if n < u64::from(self.batch_size) {
                        break;
                    }
                    report.more_left = report.batches == self.max_batches;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let run = SweepRun::new(
            started_at,
            self.clock.now(),
            cutoff,
            report.deleted,
            report.batches,
            failure.as_ref().map(ToString::to_string),
        );
        let audit = self.store.record_sweep(&run).await;
        tracing::info!(
            target: "idem::inbound::sweeper",
            deleted = report.deleted,
            batches = report.batches,
            more_left = report.more_left,
            failed = failure.is_some(),
            "inbound sweep finished"
        );
        metrics::counter!(crate::metrics::inbound::SWEEP_DELETED_COUNT).increment(report.deleted);
        match failure {
            Some(e) => Err(e),
            None => audit.map(|()| report),
        }
    }

    /// Starts the periodic task on the current tokio runtime. The first run
    /// starts after one period.
    pub fn spawn(self) -> SweeperHandle {
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(self.period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = self.run_once().await {
                            tracing::error!(target: "idem::inbound::sweeper", error = %e, "inbound sweep failed");
                        }
                    }
                    _ = stopped.changed() => break,
                }
            }
        });
        SweeperHandle { stop, task }
    }
}

/// Controls a spawned [`Sweeper`].
#[derive(Debug)]
pub struct SweeperHandle {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl SweeperHandle {
    /// Stops the task after its current run and waits for it.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
