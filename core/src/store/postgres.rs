//! The PostgreSQL store: many workers on many machines.

use std::str::FromStr;

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};

use super::migrate::{self, Migration};
use crate::ledger::StoreError;

/// A [`LedgerStore`](crate::ledger::LedgerStore) on PostgreSQL.
///
/// Claims are single conditional `UPDATE`s, so two processes can never hold
/// the same key at once.
///
/// ```no_run
/// # async fn demo() -> Result<(), idem::StoreError> {
/// let store = idem::ledger::PgStore::connect("postgres://postgres:postgres@127.0.0.1/app").await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub struct PgStore {
    pub(crate) pool: PgPool,
}

/// Advisory lock id that serialises idem's migrations across processes.
const MIGRATION_LOCK: i64 = 0x1de3_0001;

impl PgStore {
    /// Connects to `url` and applies the shipped migrations.
    ///
    /// # Errors
    ///
    /// [`StoreError::Unavailable`] when the server cannot be reached;
    /// [`StoreError::Migration`] when the schema cannot be applied.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url).map_err(StoreError::from_sqlx)?;
        Self::connect_with(options).await
    }

    /// Connects with `options` and applies the shipped migrations.
    ///
    /// # Errors
    ///
    /// As [`PgStore::connect`].
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(std::time::Duration::from_secs(5))
            // sqlx pings every connection before handing it out: a round trip
            // to the server on each of the two acquisitions per key (about a
            // fifth of a fresh key's cost, BENCHMARKS.md). A connection that
            // worked within the last second is handed out as it is; one that
            // sat idle longer is pinged, as a restarted server leaves idle
            // connections dead. A write on a connection that died in between
            // fails as `StoreError::Unavailable` (never as success), sqlx
            // closes that connection on release, and the executor retries a
            // completion write on another one.
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_PING_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await
            .map_err(StoreError::from_sqlx)?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// Connects to `url` and keeps every idem table (ledger, inbound
    /// records, webhooks, the migration list) in the PostgreSQL schema
    /// `schema`, created if missing, for platforms that keep such tables
    /// apart (for example `control_plane`). Every pooled connection gets
    /// `search_path` set to that schema alone.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), idem::StoreError> {
    /// let store = idem::ledger::PgStore::connect_in_schema(
    ///     "postgres://postgres:postgres@127.0.0.1/app",
    ///     "control_plane",
    /// )
    /// .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidSchemaName`] unless `schema` is a plain
    /// lowercase identifier (`[a-z_][a-z0-9_]*`, at most 63 bytes); otherwise
    /// as [`PgStore::connect`].
    pub async fn connect_in_schema(url: &str, schema: &str) -> Result<Self, StoreError> {
        let plain = !schema.is_empty()
            && schema.len() <= 63
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !plain || schema.starts_with("pg_") {
            return Err(StoreError::InvalidSchemaName {
                name: schema.chars().take(64).collect(),
            });
        }
        let options = PgConnectOptions::from_str(url).map_err(StoreError::from_sqlx)?;
        // The schema must exist before the pool's connections use it.
        let mut conn = PgConnection::connect_with(&options)
            .await
            .map_err(StoreError::from_sqlx)?;
        sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut conn)
            .await
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        conn.close().await.map_err(StoreError::from_sqlx)?;
        Self::connect_with(options.options([("search_path", schema)])).await
    }

    /// Wraps an existing pool (the application's own). Call
    /// [`migrate`](Self::migrate) once before use.
    pub fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    /// The underlying pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Applies the shipped migrations that are not yet applied, under an
    /// advisory lock. Safe to call from several processes at once.
    ///
    /// # Errors
    ///
    /// [`StoreError::Migration`] when a migration fails.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_with(migrate::POSTGRES).await
    }

    pub(crate) async fn migrate_with(&self, migrations: &[Migration]) -> Result<(), StoreError> {
        let fail = |e: sqlx::Error| StoreError::Migration(e.to_string());
        let mut conn = self.pool.acquire().await.map_err(StoreError::from_sqlx)?;
        let conn: &mut PgConnection = &mut conn;
        let mut tx = conn.begin().await.map_err(fail)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        migrate::apply_pending!(tx, migrations, fail);
        tx.commit().await.map_err(fail)
    }
}

/// How long a pooled connection may sit idle before it is pinged on
/// acquisition (see [`PgStore::connect_with`]).
const IDLE_PING_AFTER: std::time::Duration = std::time::Duration::from_secs(1);

crate::ledger::sql::impl_sql_store!(PgStore, sqlx::Postgres, PgConnection);
