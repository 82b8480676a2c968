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
    Migration {
        version: 3,
        name: "ledger_effects",
        sql: include_str!("../../migrations/sqlite/0003_ledger_effects.sql"),
    },
    Migration {
        version: 10,
        name: "webhooks",
        sql: include_str!("../../migrations/sqlite/0010_webhooks.sql"),
    },
    Migration {
        version: 11,
        name: "inbound_waiters",
        sql: include_str!("../../migrations/sqlite/0011_inbound_waiters.sql"),
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
    Migration {
        version: 3,
        name: "ledger_effects",
        sql: include_str!("../../migrations/postgres/0003_ledger_effects.sql"),
    },
    Migration {
        version: 10,
        name: "webhooks",
        sql: include_str!("../../migrations/postgres/0010_webhooks.sql"),
    },
    Migration {
        version: 11,
        name: "inbound_waiters",
        sql: include_str!("../../migrations/postgres/0011_inbound_waiters.sql"),
    },
];

pub(crate) const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS idem_schema_migrations (\
    version BIGINT PRIMARY KEY NOT NULL, name TEXT NOT NULL, applied_at BIGINT NOT NULL)";

/// Creates the version table and applies, in order, the migrations it does
/// not list yet, inside the caller's transaction `$tx` (which already holds
/// the backend's migration lock). `$fail` maps `sqlx::Error` to the caller's
/// error.
macro_rules! apply_pending {
    ($tx:ident, $migrations:expr, $fail:ident) => {{
        use sqlx::Row as _;
        sqlx::raw_sql($crate::store::migrate::VERSION_TABLE)
            .execute(&mut *$tx)
            .await
            .map_err($fail)?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM idem_schema_migrations")
            .fetch_all(&mut *$tx)
            .await
            .map_err($fail)?
            .iter()
            .map(|r| r.get::<i64, _>(0))
            .collect();
        for m in $migrations.iter().filter(|m| !applied.contains(&m.version)) {
            sqlx::raw_sql(m.sql).execute(&mut *$tx).await.map_err($fail)?;
            sqlx::query(
                "INSERT INTO idem_schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(m.version)
            .bind(m.name)
            .bind($crate::clock::to_millis($crate::clock::Clock::now(&$crate::clock::SystemClock)))
            .execute(&mut *$tx)
            .await
            .map_err($fail)?;
        }
    }};
}

pub(crate) use apply_pending;
