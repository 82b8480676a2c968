//! The SQLite store: the embedded default (bundled SQLite, WAL journal).

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::Connection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

use super::migrate::{self, Migration};
use crate::error::StoreError;

/// A [`LedgerStore`](super::LedgerStore) on SQLite.
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
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
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
            .create_if_missing(true);
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
        let options = SqliteConnectOptions::from_str(url).map_err(StoreError::from_sqlx)?;
        Self::connect_with(options).await
    }

    /// Opens a database with the given options (WAL, `synchronous=NORMAL`
    /// and a 10 s busy timeout are applied on top) and applies the
    /// migrations.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open`].
    pub async fn connect_with(options: SqliteConnectOptions) -> Result<Self, StoreError> {
        let options = options
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Wraps an existing pool (the application's own). Call
    /// [`migrate`](Self::migrate) once before use.
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { pool }
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

super::sql::impl_sql_store!(SqliteStore, sqlx::Sqlite, SqliteConnection);
