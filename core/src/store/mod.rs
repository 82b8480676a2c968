//! The SQL stores, in one place: [`sqlite::SqliteStore`] (the embedded
//! default) and [`postgres::PgStore`] (many workers on many machines). Each
//! implements the ledger ([`LedgerStore`](crate::ledger::LedgerStore)), the
//! inbound record store ([`InboundStore`](crate::inbound::InboundStore),
//! [`TxInboundStore`](crate::inbound::TxInboundStore)) and the webhook
//! store, with its migrations (`migrate()`) and, on PostgreSQL, the
//! notifier that wakes inbound waiters on other machines.
//!
//! The stores keep their old paths as well: `idem::ledger::SqliteStore` and
//! `idem::ledger::PgStore` are the same types.

mod inbound;
pub(crate) mod migrate;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::PgStore;
#[cfg(feature = "sqlite")]
pub use sqlite::SqliteStore;
