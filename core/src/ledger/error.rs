//! [`StoreError`]: what a [`LedgerStore`](super::LedgerStore) (and the inbound and webhook
//! stores, which share it) can fail with.
//!
//! Storage knows the key and its own states, never the executor or HTTP.

use super::OperationState;
use crate::key::IdempotencyKey;

/// Errors from a [`LedgerStore`](crate::ledger::LedgerStore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database could not be reached or failed; nothing was changed by
    /// this call. Safe to retry later.
    #[error("ledger store unavailable: {message}")]
    Unavailable {
        /// What failed, without credentials.
        message: String,
        /// The underlying database error.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The key already names a different request (other provider, operation
    /// or request fingerprint).
    #[error("idempotency key {key} was already used for a different request ({detail})")]
    KeyReused {
        /// The key.
        key: IdempotencyKey,
        /// Which field differs (never the request body).
        detail: String,
    },
    /// No record has this key.
    #[error("no ledger record for idempotency key {key}")]
    NotFound {
        /// The key.
        key: IdempotencyKey,
    },
    /// The record is not in a state that allows the change.
    #[error("ledger record {key} is {state}: {reason}")]
    InvalidState {
        /// The key.
        key: IdempotencyKey,
        /// Its current state.
        state: OperationState,
        /// Why the change is refused.
        reason: &'static str,
    },
    /// The caller's lease was lost (expired and taken over); its result was
    /// not written.
    #[error("lease on {key} was lost; another worker took the operation over")]
    LeaseLost {
        /// The key.
        key: IdempotencyKey,
    },
    /// A stored row could not be read back (corrupt or from a newer version).
    #[error("ledger row is unreadable: {0}")]
    Corrupt(String),
    /// Applying the shipped migrations failed.
    #[error("ledger migration failed: {0}")]
    Migration(String),
    /// A schema name given to [`PgStore::connect_in_schema`](crate::ledger::PgStore::connect_in_schema)
    /// is not a plain lowercase identifier. Nothing was connected.
    #[error("invalid schema name {name:?}: use lowercase letters, digits and _ (at most 63 bytes)")]
    InvalidSchemaName {
        /// The refused name (cut to 64 characters).
        name: String,
    },
}

impl StoreError {
    /// Whether trying the same call later may succeed (the store was down).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    pub(crate) fn from_sqlx(err: sqlx::Error) -> Self {
        let message = match &err {
            sqlx::Error::PoolTimedOut => "timed out waiting for a database connection".to_owned(),
            sqlx::Error::PoolClosed => "the connection pool is closed".to_owned(),
            sqlx::Error::Io(e) => format!("I/O error: {e}"),
            sqlx::Error::Database(e) => format!("database error: {}", e.message()),
            other => other.to_string(),
        };
        Self::Unavailable {
            message,
            source: Some(Box::new(err)),
        }
    }
}
