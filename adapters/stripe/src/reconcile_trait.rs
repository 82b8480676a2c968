//! [`idem::reconcile::Reconcile`] for [`StripeClient`]: reconciliation from
//! the key alone, for tools that work across providers (the operator
//! console).
//!
//! Everything a lookup needs is on the ledger row: the operation name, and
//! for a confirm, capture or refund its target (and a capture's finality) in
//! the row's checkpoint. The verdicts are [`StripeClient::reconcile`]'s:
//!
//! | [`Reconciliation`] | [`ReconcileVerdict`] |
//! | --- | --- |
//! | `Found` | `Applied` (row `succeeded`) |
//! | `NotApplied` | `NotApplied` (row `pending`, or already was) |
//! | `NotFound` (search lags) | `Undetermined` (row `unknown`) |
//! | `Undetermined` | `Undetermined` (row `unknown`) |
//!
//! The client acts for one account (`Stripe-Account`): a row written by a
//! client for another connected account is not found under this one, which
//! reads as `Undetermined` (a search) or an error (a retrieval), never as
//! `NotApplied`.

use async_trait::async_trait;
use idem::IdempotencyKey;
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};

use crate::client::{PROVIDER_NAME, Reconciliation, StripeClient};
use crate::error::{AdapterError, Error};
use crate::objects::StripeObject;

#[async_trait]
impl Reconcile for StripeClient {
    fn provider(&self) -> &str {
        PROVIDER_NAME
    }

    async fn reconcile(&self, key: &IdempotencyKey) -> Result<ReconcileVerdict, ReconcileError> {
        match StripeClient::reconcile(self, key).await {
            Ok(Reconciliation::Found(object)) => Ok(ReconcileVerdict::Applied {
                provider_id: Some(object_id(&object)),
                note: "Stripe has the object (or the record had already succeeded)".to_owned(),
            }),
            Ok(Reconciliation::NotApplied { note }) => Ok(ReconcileVerdict::NotApplied { note }),
            Ok(Reconciliation::NotFound { note }) => Ok(ReconcileVerdict::Undetermined {
                note: format!("{note}; Stripe's search lags writes, so this is not proof"),
            }),
            Ok(Reconciliation::Undetermined { note }) => {
                Ok(ReconcileVerdict::Undetermined { note })
            }
            Err(e) => Err(to_trait_error(key, e)),
        }
    }
}

fn object_id(object: &StripeObject) -> String {
    match object {
        StripeObject::PaymentIntent(pi) => pi.id.to_string(),
        StripeObject::Refund(r) => r.id.to_string(),
        StripeObject::Customer(c) => c.id.to_string(),
        StripeObject::Charge(c) => c.id.to_string(),
    }
}

fn to_trait_error(key: &IdempotencyKey, e: Error) -> ReconcileError {
    let reason = e.to_string();
    match e {
        Error::Adapter(AdapterError::NoRecord { .. })
        | Error::InFlight { .. }
        | Error::Rejected { .. }
        | Error::Superseded { .. }
        | Error::InvalidRequest { .. } => ReconcileError::NotReconcilable {
            key: key.clone(),
            reason,
        },
        _ => ReconcileError::Failed {
            key: key.clone(),
            reason,
        },
    }
}
