//! The SQL migrations shipped in the crate, applied by the stores'
//! `migrate()`.
//!
//! idem keeps its own version table (`idem_schema_migrations`) rather than
//! sqlx's `_sqlx_migrations`, so it never collides with an application's own
//! sqlx migrations in the same database.

/// One migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub(crate) version: i64,
    pub(crate) name: &'static str,
    pub(crate) sql: &'static str,
}

/// SQLite migrations, in order.
#[cfg(feature = "sqlite")]
pub(crate) const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "ledger",
        sql: include_str!("../../migrations/sqlite/0001_ledger.sql"),
    },
    Migration {
        version: 2,
        name: "inbound",
        sql: include_str!("../../migrations/sqlite/0002_inbound.sql"),
    },
];

/// PostgreSQL migrations, in order.
#[cfg(feature = "postgres")]
pub(crate) const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "ledger",
        sql: include_str!("../../migrations/postgres/0001_ledger.sql"),
    },
    Migration {
        version: 2,
        name: "inbound",
        sql: include_str!("../../migrations/postgres/0002_inbound.sql"),
    },
];

pub(crate) const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS idem_schema_migrations (\
    version BIGINT PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";
