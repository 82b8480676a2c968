//! Test support (feature `testing`): throwaway SQLite files and PostgreSQL
//! databases, shared by idem's own test suites and available to yours.
//!
//! `testing` turns no store on: the SQLite helpers need the `sqlite` feature,
//! the PostgreSQL ones the `postgres` feature.
//!
//! PostgreSQL tests read `IDEM_TEST_DATABASE_URL` (default
//! `postgres://postgres:postgres@127.0.0.1:5432/postgres`). Each call creates
//! a fresh database, so tests run in parallel and see only their own rows.
//! When the server cannot be reached, [`pg_store`] returns `None` and prints
//! a loud SKIP line, except under CI (`CI=true`), where it panics: in CI the
//! PostgreSQL tests must really run.

#[cfg(feature = "sqlite")]
use std::path::PathBuf;

#[cfg(feature = "postgres")]
use crate::ledger::PgStore;
#[cfg(feature = "sqlite")]
use crate::ledger::SqliteStore;

/// The default test server URL.
pub const DEFAULT_PG_URL: &str = "postgres://postgres:postgres@127.0.0.1:5432/postgres";

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
/// A SQLite store in a fresh temporary directory. Keep the directory alive as
/// long as the store.
///
/// # Panics
///
/// When the temporary file cannot be created (a test environment fault).
pub async fn sqlite_store() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = SqliteStore::open(dir.path().join("idem-test.db"))
        .await
        .expect("open a SQLite test store");
    (store, dir)
}

#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
/// The path of the SQLite file inside a directory from [`sqlite_store`].
pub fn sqlite_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("idem-test.db")
}

/// Whether this run is CI (`CI` set to anything but `false`/`0`/empty).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
/// The URL of a fresh, empty PostgreSQL database, or `None` (with a loud
/// message) when no server is reachable outside CI.
///
/// # Panics
///
/// Under CI when the server cannot be reached or the database cannot be
/// created.
pub async fn pg_database_url(test: &str) -> Option<String> {
    let admin =
        std::env::var("IDEM_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
    let pool = match sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect(&admin)
        .await
    {
        Ok(pool) => pool,
        Err(e) => {
            assert!(
                !in_ci(),
                "CI=true but PostgreSQL is unreachable at IDEM_TEST_DATABASE_URL: {e}"
            );
            eprintln!(
                "\n!!!!! SKIPPED PostgreSQL test `{test}`: no server reachable ({e}).\n\
                 !!!!! Set IDEM_TEST_DATABASE_URL or start PostgreSQL; CI runs these for real.\n"
            );
            return None;
        }
    };
    let name = format!("idem_test_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .expect("create a PostgreSQL test database");
    pool.close().await;
    let base = match admin.rfind('/') {
        Some(i) if admin[..i].contains('@') || admin[..i].ends_with('/') => &admin[..i],
        _ => admin.as_str(),
    };
    let base = base.split('?').next().unwrap_or(base);
    Some(format!("{base}/{name}"))
}

#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
/// A [`PgStore`] on a fresh database, or `None` outside CI when no server is
/// reachable (see [`pg_database_url`]).
///
/// # Panics
///
/// Under CI when PostgreSQL is unreachable.
pub async fn pg_store(test: &str) -> Option<PgStore> {
    let url = pg_database_url(test).await?;
    Some(
        PgStore::connect(&url)
            .await
            .expect("connect to the PostgreSQL test database"),
    )
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "sqlite", feature = "postgres"))))]
/// The SQL text of the ledger's fresh-key path, exactly as the SQL stores
/// run it, for benchmarks that measure the database's own floor (a driver
/// running the same statements) beside the store. Placeholders are `$1`..;
/// see each constant for their meaning.
pub mod statements {
    /// `begin_claimed` on a new key: `$1` key, `$2` provider, `$3` operation,
    /// `$4` fingerprint, `$5` lease token, `$6` lease expiry (ms), `$7` now
    /// (ms). Returns the row.
    pub fn begin_claimed() -> String {
        format!(
            "{} RETURNING {}",
            crate::ledger::sql::INSERT_CLAIMED,
            crate::ledger::sql::COLUMNS
        )
    }

    /// `complete`: `$1` key, `$2` lease token, `$3` state, `$4` status,
    /// `$5` body, `$6` note, `$7` now (ms), `$8` provider id. Returns the
    /// row.
    pub fn complete() -> String {
        format!(
            "{} RETURNING {}",
            crate::ledger::sql::COMPLETE,
            crate::ledger::sql::COLUMNS
        )
    }
}
