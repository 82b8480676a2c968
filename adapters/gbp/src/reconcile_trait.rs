//! [`idem::reconcile::Reconcile`] for [`GbpClient`], for tools that work
//! across providers (the operator console).
//!
//! Google keeps no key for local posts: the only lookup is
//! [`GbpClient::reconcile_local_post`], which lists the location's posts and
//! matches the post's content. The ledger row holds neither the location
//! nor the post (only the request's fingerprint, which cannot be turned
//! back into them), so from the key alone nothing can be listed. The trait
//! therefore:
//!
//! * answers `Applied` for a row that already succeeded (with the post's
//!   resource name from the stored answer);
//! * answers `Undetermined` for an `unknown` row, naming
//!   `reconcile_local_post` as the way to settle it (with the original
//!   location and post), and reads or changes nothing;
//! * refuses (`NotReconcilable`) rows that are not the adapter's, or are
//!   `pending`, `failed`, `superseded`, or in flight.
//!
//! It never answers `NotApplied`. Replies (`reviews.updateReply`,
//! `reviews.deleteReply`) are naturally idempotent: an unknown one is
//! settled by running the same job again, which the trait says.

use async_trait::async_trait;
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
use idem::{IdempotencyKey, OperationState};

use crate::client::{GbpClient, OP_CREATE_LOCAL_POST, PROVIDER_NAME};
use crate::model::LocalPost;

#[async_trait]
impl Reconcile for GbpClient {
    fn provider(&self) -> &str {
        PROVIDER_NAME
    }

    async fn reconcile(&self, key: &IdempotencyKey) -> Result<ReconcileVerdict, ReconcileError> {
        let not = |reason: String| ReconcileError::NotReconcilable {
            key: key.clone(),
            reason,
        };
        let executor = &self.inner.executor;
        let op = executor
            .store()
            .get(key)
            .await
            .map_err(|e| ReconcileError::Failed {
                key: key.clone(),
                reason: format!("the ledger failed: {e}"),
            })?
            .ok_or_else(|| not("no ledger record".to_owned()))?;
        if op.provider != PROVIDER_NAME {
            return Err(not(format!(
                "the record belongs to provider {:?}",
                op.provider
            )));
        }
        let post = op.operation == OP_CREATE_LOCAL_POST;
        match op.state {
            OperationState::Succeeded => {
                let name = post
                    .then(|| {
                        op.response_body
                            .as_deref()
                            .and_then(|b| serde_json::from_slice::<LocalPost>(b).ok())
                            .and_then(|p| p.name)
                    })
                    .flatten();
                Ok(ReconcileVerdict::Applied {
                    provider_id: name,
                    note: "the record had already succeeded".to_owned(),
                })
            }
            OperationState::Unknown => Ok(ReconcileVerdict::Undetermined { note: note(post) }),
            OperationState::Sending if op.lease_expired(executor.now()) => {
                Ok(ReconcileVerdict::Undetermined { note: note(post) })
            }
            state => Err(not(format!("the record is {state}, not unknown"))),
        }
    }
}

fn note(post: bool) -> String {
    if post {
        "Google keeps no key for local posts and the record holds neither the location nor the \
         post, so nothing can be looked up from the key alone; call \
         GbpClient::reconcile_local_post with the original location and post"
            .to_owned()
    } else {
        "a review reply is naturally idempotent: run the same job again with the same key"
            .to_owned()
    }
}
