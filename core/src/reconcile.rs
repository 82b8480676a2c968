//! Reconciliation as a trait: "ask the provider what happened to this key".
//!
//! Each adapter knows how to look an operation up at its provider (Stripe's
//! search on `metadata['idem_key']`, Twilio's message list, …). Tools that
//! work across providers, such as the operator console, hold a set of
//! [`Reconcile`] implementations keyed by [`Reconcile::provider`] and call the
//! one that matches a ledger row's `provider`.
//!
//! An implementation settles the ledger itself (through
//! [`LedgerStore::resolve`](crate::ledger::LedgerStore::resolve)) when the
//! provider gives positive proof, and reports what it found. "Not applied"
//! needs positive proof too: when the provider's answer is silent, the
//! verdict is [`ReconcileVerdict::Undetermined`] and the row stays `unknown`.
//!
//! ```
//! use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
//! use idem::IdempotencyKey;
//!
//! #[derive(Debug)]
//! struct NeverSure;
//!
//! #[async_trait::async_trait]
//! impl Reconcile for NeverSure {
//!     fn provider(&self) -> &str {
//!         "acme"
//!     }
//!     async fn reconcile(&self, key: &IdempotencyKey) -> Result<ReconcileVerdict, ReconcileError> {
//!         Ok(ReconcileVerdict::Undetermined {
//!             note: format!("acme has no lookup for {key}"),
//!         })
//!     }
//! }
//! ```

use std::fmt;

use async_trait::async_trait;

use crate::key::IdempotencyKey;

/// What reconciliation established about one key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconcileVerdict {
    /// The provider has the effect; the row is now `succeeded`.
    Applied {
        /// The provider's id for the object, when it has one.
        provider_id: Option<String>,
        /// How it was found, in words.
        note: String,
    },
    /// The provider proves the effect is absent; the row is back to
    /// `pending` and the same key may be sent again.
    NotApplied {
        /// The proof, in words.
        note: String,
    },
    /// The provider's answer proves neither; the row stays `unknown`.
    Undetermined {
        /// Why not, in words.
        note: String,
    },
}

/// Why reconciliation could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError {
    /// The key's ledger row is missing, or in a state reconciliation does
    /// not settle (for example `succeeded`).
    #[error("{key} cannot be reconciled: {reason}")]
    NotReconcilable {
        /// The key.
        key: IdempotencyKey,
        /// Why, in words.
        reason: String,
    },
    /// The provider or the ledger failed while asking; nothing was changed.
    #[error("reconciling {key} failed: {reason}")]
    Failed {
        /// The key.
        key: IdempotencyKey,
        /// What failed, in words (no secrets, no bodies).
        reason: String,
    },
}

/// An adapter's reconciliation, usable without knowing the adapter's type.
#[async_trait]
pub trait Reconcile: Send + Sync + fmt::Debug + 'static {
    /// The provider name this reconciles, as stored in ledger rows
    /// ([`Operation::provider`](crate::ledger::Operation::provider)).
    fn provider(&self) -> &str;

    /// Asks the provider what happened to `key` and settles the ledger row
    /// when the answer is conclusive.
    ///
    /// # Errors
    ///
    /// [`ReconcileError`] when the lookup could not be made or the row cannot
    /// be reconciled; the ledger is then unchanged.
    async fn reconcile(&self, key: &IdempotencyKey) -> Result<ReconcileVerdict, ReconcileError>;
}
