//! The console's one error type.

use http::StatusCode;
use idem::StoreError;

/// Why a console function refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConsoleError {
    /// No ledger row for this key.
    #[error("no ledger record for {0}")]
    NotFound(String),
    /// The input is not understood (a bad key, state, shop or age).
    #[error("{0}")]
    BadInput(String),
    /// The operation may already have happened: the key must be typed again
    /// to confirm. Nothing was changed.
    #[error("confirmation required: type the key {key} to retry it. {warning}")]
    ConfirmationRequired {
        /// The key to type.
        key: String,
        /// What the operator must know first.
        warning: String,
    },
    /// The operation succeeded: retrying it needs force. Nothing was changed.
    #[error("{key} succeeded; retrying it needs force. {warning}")]
    ForceRequired {
        /// The key.
        key: String,
        /// What the operator must know first.
        warning: String,
    },
    /// No [`Reconcile`](idem::reconcile::Reconcile) implementation is
    /// registered for this provider.
    #[error("no reconciliation is registered for provider {0:?}")]
    NoReconciler(String),
    /// Reconciliation could not run; the ledger is unchanged.
    #[error("{0}")]
    Reconcile(String),
    /// The ledger store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The console's own queries failed.
    #[error("console database query failed: {0}")]
    Database(#[from] sqlx::Error),
}

impl ConsoleError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) | Self::Store(StoreError::NotFound { .. }) => StatusCode::NOT_FOUND,
            Self::BadInput(_) => StatusCode::BAD_REQUEST,
            Self::ConfirmationRequired { .. } | Self::ForceRequired { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            Self::NoReconciler(_) | Self::Store(StoreError::InvalidState { .. }) => {
                StatusCode::CONFLICT
            }
            Self::Reconcile(_) => StatusCode::BAD_GATEWAY,
            Self::Store(_) | Self::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short machine-readable code for the JSON API.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) | Self::Store(StoreError::NotFound { .. }) => "not_found",
            Self::BadInput(_) => "bad_input",
            Self::ConfirmationRequired { .. } => "confirmation_required",
            Self::ForceRequired { .. } => "force_required",
            Self::NoReconciler(_) => "no_reconciler",
            Self::Store(StoreError::InvalidState { .. }) => "invalid_state",
            Self::Reconcile(_) => "reconcile_failed",
            Self::Store(_) | Self::Database(_) => "unavailable",
        }
    }
}
