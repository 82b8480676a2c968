//! Test helpers around the ledger: keys, fast retry settings, and executors
//! over throwaway SQLite and PostgreSQL ledgers.
//!
//! PostgreSQL helpers read `IDEM_TEST_DATABASE_URL` and create a fresh
//! database per call. Outside CI, when no server is reachable, they return
//! `None` after a loud SKIP line; under CI (`CI=true`) they panic, so the
//! PostgreSQL tests really run there (see [`idem::testing`]).

use std::time::{Duration, SystemTime};

use idem::executor::RetrySettings;
use idem::ledger::SqliteStore;
use idem::{Clock, Executor, IdempotencyKey, LedgerStore, ManualClock, Operation, OperationState};

/// A key from text.
///
/// # Panics
///
/// When `text` is not a valid key: test keys are written by hand.
pub fn key(text: &str) -> IdempotencyKey {
    match text.parse() {
        Ok(key) => key,
        Err(e) => panic!("`{text}` is not a valid idempotency key: {e}"),
    }
}

/// Short timeouts and backoffs, so tests run fast: 3 attempts, 10–40 ms
/// backoff, 300 ms per attempt, 3 s in all. An answer held back for
/// [`LOST`] is a timeout.
pub fn fast_retry() -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(3)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_attempt_timeout(Duration::from_millis(300))
        .with_total_timeout(Duration::from_secs(3))
}

/// Longer than [`fast_retry`]'s attempt timeout: a delay that loses the
/// answer ([`Fault::LoseResponse`](crate::Fault::LoseResponse)).
pub const LOST: Duration = Duration::from_millis(900);

/// A day.
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// A manual clock at a fixed instant (2025-06-15), for tests that move time.
pub fn manual_clock() -> ManualClock {
    ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000))
}

/// How far to move a [`ManualClock`] so that a lease taken with `retry` has
/// expired: the claim budget plus the executor's default 30 s lease margin,
/// and a second.
pub fn past_lease(retry: &RetrySettings) -> Duration {
    retry.claim_budget() + Duration::from_secs(31)
}

/// An executor over a throwaway ledger. Keep it alive as long as the
/// executor: it owns the ledger's temporary directory.
#[derive(Debug)]
pub struct TestLedger {
    executor: Executor,
    dir: Option<tempfile::TempDir>,
}

impl TestLedger {
    /// A fresh SQLite ledger, with the system clock.
    ///
    /// # Panics
    ///
    /// When the temporary file cannot be created.
    pub async fn sqlite() -> Self {
        let (store, dir) = idem::testing::sqlite_store().await;
        Self {
            executor: Executor::builder(store).build(),
            dir: Some(dir),
        }
    }

    /// A fresh SQLite ledger whose executor reads `clock`.
    ///
    /// # Panics
    ///
    /// When the temporary file cannot be created.
    pub async fn sqlite_with_clock(clock: impl Clock) -> Self {
        let (store, dir) = idem::testing::sqlite_store().await;
        Self {
            executor: Executor::builder(store).clock(clock).build(),
            dir: Some(dir),
        }
    }

    /// A fresh PostgreSQL database, with the system clock; `None` (with a
    /// loud SKIP line) outside CI when no server is reachable.
    ///
    /// # Panics
    ///
    /// Under CI when PostgreSQL is unreachable.
    pub async fn postgres(test: &str) -> Option<Self> {
        let store = idem::testing::pg_store(test).await?;
        Some(Self {
            executor: Executor::builder(store).build(),
            dir: None,
        })
    }

    /// Like [`postgres`](Self::postgres), with an executor that reads
    /// `clock`.
    ///
    /// # Panics
    ///
    /// Under CI when PostgreSQL is unreachable.
    pub async fn postgres_with_clock(test: &str, clock: impl Clock) -> Option<Self> {
        let store = idem::testing::pg_store(test).await?;
        Some(Self {
            executor: Executor::builder(store).clock(clock).build(),
            dir: None,
        })
    }

    /// The executor (a cheap clone).
    pub fn executor(&self) -> Executor {
        self.executor.clone()
    }

    /// The ledger.
    pub fn store(&self) -> &std::sync::Arc<dyn LedgerStore> {
        self.executor.store()
    }

    /// A second executor over the same SQLite file, with the system clock:
    /// another worker process. `None` for a PostgreSQL ledger (connect to
    /// its database again instead).
    ///
    /// # Panics
    ///
    /// When the SQLite file cannot be opened again.
    pub async fn reopen(&self) -> Option<Executor> {
        let dir = self.dir.as_ref()?;
        let store = SqliteStore::open(idem::testing::sqlite_path(dir))
            .await
            .expect("open the SQLite test ledger again");
        Some(Executor::builder(store).build())
    }

    /// The ledger row of `key`.
    ///
    /// # Panics
    ///
    /// When the store fails or holds no row for `key`.
    pub async fn row(&self, key: &IdempotencyKey) -> Operation {
        row(&self.executor, key).await
    }

    /// The state of `key`'s row.
    ///
    /// # Panics
    ///
    /// When the store fails or holds no row for `key`.
    pub async fn state(&self, key: &IdempotencyKey) -> OperationState {
        row(&self.executor, key).await.state
    }
}

/// The ledger row of `key` in `executor`'s store.
///
/// # Panics
///
/// When the store fails or holds no row for `key`.
pub async fn row(executor: &Executor, key: &IdempotencyKey) -> Operation {
    match executor.store().get(key).await {
        Ok(Some(op)) => op,
        Ok(None) => panic!("no ledger row for `{key}`"),
        Err(e) => panic!("reading the ledger row of `{key}`: {e}"),
    }
}
