//! The SQLite store: the embedded default (bundled SQLite, WAL journal).
//!
//! # Durability
//!
//! The ledger's promise rests on one fact: a row that says `sending` was on
//! disk before the first byte left. With `synchronous=NORMAL` in WAL mode a
//! commit survives a crash of the process but **not** an OS crash or a power
//! loss: the last commits can vanish, and the next run would send a
//! local-only write (an SMS, a post) a second time. So this store uses
//! `synchronous=FULL` unless told otherwise:
//!
//! - [`SqliteStore::open`] and [`SqliteStore::connect`] set `FULL`.
//! - [`SqliteStore::connect_with`] sets `FULL` unless the options passed in
//!   already choose a level; a caller that chose `NORMAL` on purpose keeps it.
//! - [`SqliteStore::from_pool`] cannot change the pool's connections: set
//!   `.synchronous(SqliteSynchronous::Full)` (and WAL) on the pool's
//!   `SqliteConnectOptions` yourself.
//!
//! The price, measured on this project's 2-core CI machine: a fresh key
//! (one durable write) took about 161 µs with `NORMAL` and 488 µs with
//! `FULL`. [`SqliteStore::synchronous`] reports the level in force.
//!
//! # The hot path
//!
//! A store opened by [`SqliteStore::open`], [`connect`](SqliteStore::connect)
//! or [`connect_with`](SqliteStore::connect_with) on a file runs its four hot
//! writes (`begin_claimed`, `claim`, `renew`, `complete`) on one rusqlite
//! connection beside the sqlx pool, with the pool's `synchronous` level and
//! busy timeout: sqlx's worker thread and per-acquire ping cost more than
//! SQLite itself on this path (ADR 0008). The inbound layer's record writes
//! (start, take over, complete, release, renew) go to the same connection,
//! where the ones that queue behind each other commit together. Everything
//! else, and every store made by [`from_pool`](SqliteStore::from_pool), runs
//! on sqlx.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use self::writer::SqliteWriter;
use super::migrate::{self, Migration};
use crate::ledger::StoreError;

pub(crate) mod writer;

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`LedgerStore`](crate::ledger::LedgerStore) on SQLite.
///
/// Writers are serialised by SQLite itself, so claims are atomic across every
/// connection and process that opens the same file.
///
/// ```no_run
/// # async fn demo() -> Result<(), idem::StoreError> {
/// let store = idem::ledger::SqliteStore::open("worker.db").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// The hot path's writer connection (see `store::sqlite::writer`); `None` for a
    /// wrapped pool or an in-memory database, which stay on sqlx alone.
    writer: Option<SqliteWriter>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` in WAL mode,
    /// and applies the shipped migrations.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the file cannot be opened;
    /// [`StoreError::Migration`] when the schema cannot be applied.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Full);
        Self::connect_with(options).await
    }

    /// Opens a database from a `sqlite:` URL (for example
    /// `sqlite://worker.db?mode=rwc`) and applies the migrations.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`], and [`StoreError::Unavailable`] for a
    /// malformed URL.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(StoreError::from_sqlx)?
            .synchronous(SqliteSynchronous::Full);
        Self::connect_with(options).await
    }

    /// Opens a database with the given options and applies the migrations.
    /// WAL and a 10 s busy timeout are applied on top. The `synchronous`
    /// level is the caller's if the options set one; otherwise SQLite's
    /// default for this build, `FULL`, applies (checked: see
    /// [`synchronous`](Self::synchronous)), and a level below `FULL` is
    /// logged once as a warning.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        // sqlx leaves `synchronous` unset unless the caller set it, and the
        // bundled SQLite defaults to FULL (also in WAL mode): so not setting
        // it here is what respects the caller's choice.
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            // A local file's connection does not go stale; sqlx's ping before
            // every acquisition is a round trip to the connection's thread.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        let mut store = Self { pool, writer: None };
        store.migrate().await?;
        let level = store.synchronous().await?;
        // The file SQLite itself opened; empty for an in-memory database,
        // which another connection could not share.
        let file: String =
            sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
                .fetch_one(&store.pool)
                .await
                .map_err(StoreError::from_sqlx)?;
        if !file.is_empty() {
            store.writer = Some(SqliteWriter::open(
                &store.pool,
                Path::new(&file),
                level,
                BUSY_TIMEOUT,
            )?);
        }
        if level < 2 {
            tracing::warn!(
                synchronous = level,
                "SQLite ledger opened below synchronous=FULL: a power loss can lose committed \
                 rows and cause a second send of a local-only write"
            );
        }
        Ok(store)
    }

    /// The `synchronous` level of the pool's connections, as SQLite reports
    /// it: 0 `OFF`, 1 `NORMAL`, 2 `FULL`, 3 `EXTRA`.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the database fails.
    pub async fn synchronous(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from_sqlx)
    }

    /// Wraps an existing pool (the application's own). Call
    /// [`migrate`](Self::migrate) once before use. The pool's own options
    /// decide durability: build it with `journal_mode(Wal)` and
    /// `synchronous(SqliteSynchronous::Full)` (see the module docs).
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { pool, writer: None }
    }

    /// The hot path's writer connection, if this store has one.
    pub(crate) fn writer(&self) -> Option<&SqliteWriter> {
        self.writer.as_ref()
    }

    /// The underlying pool.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// Applies the shipped migrations that are not yet applied. Safe to call
    /// from several processes at once.
    ///
    /// # Errors
    ///
    /// [`StoreError::Migration`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_with(migrate::SQLITE).await
    }

    pub(crate) async fn migrate_with(&self, migrations: &[Migration]) -> Result<(), StoreError> {
        let fail = |e: sqlx::Error| StoreError::Migration(e.to_string());
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        let conn: &mut SqliteConnection = &mut conn;
        // IMMEDIATE takes the write lock up front, so two processes migrating
        // at once queue instead of failing on a lock upgrade.
        let mut tx = conn.begin_with("BEGIN IMMEDIATE").await.map_err(fail)?;
        migrate::apply_pending!(tx, migrations, fail);
        tx.commit().await.map_err(fail)
    }
}

crate::ledger::sql::impl_sql_store!(SqliteStore, sqlx::Sqlite, SqliteConnection, writer);
