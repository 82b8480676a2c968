//! [`idem::reconcile::Reconcile`] for [`MetaClient`]: reconciliation from
//! the key alone, for tools that work across providers (the operator
//! console).
//!
//! Meta keeps no idempotency key. What the ledger row holds decides what
//! can be looked up:
//!
//! * **Instagram** (`instagram.publish`): the container id, recorded as the
//!   row's checkpoint once step one succeeded. Its `status_code` is proof:
//!   `PUBLISHED` → `Applied` (row `succeeded`); `FINISHED`, `ERROR` or
//!   `EXPIRED` → not published, `NotApplied` (row `pending`: the next
//!   publish with the key reuses that same container, which Meta publishes
//!   at most once, or reports it failed); `IN_PROGRESS` or an unknown value
//!   → `Undetermined`. Without a recorded container (step one's own answer
//!   was lost) → `Undetermined`: a container may exist.
//! * **Page posts** (`page_post.create`): the lookup matches the post's
//!   message among the Page's posts, and the row holds neither the Page nor
//!   the message (only the request's fingerprint), so from the key alone it
//!   is `Undetermined`, pointing to
//!   [`MetaClient::reconcile_page_post`] with the original post. Nothing is
//!   read or changed.
//!
//! A row that already succeeded is `Applied` with the stored id.

use async_trait::async_trait;
use idem::executor::Source;
use idem::ledger::Resolution;
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
use idem::{IdempotencyKey, Operation, OperationState};

use crate::client::{MetaClient, OP_IG_PUBLISH, OP_PAGE_POST, PROVIDER_NAME, published_body};
use crate::model::{ContainerId, ContainerStatus, IgPublished};

#[async_trait]
impl Reconcile for MetaClient {
    fn provider(&self) -> &str {
        PROVIDER_NAME
    }

    async fn reconcile(&self, key: &IdempotencyKey) -> Result<ReconcileVerdict, ReconcileError> {
        let op = self
            .row(key)
            .await?
            .ok_or_else(|| not(key, "no ledger record"))?;
        if op.provider != PROVIDER_NAME {
            return Err(not(
                key,
                &format!("the record belongs to provider {:?}", op.provider),
            ));
        }
        let now = self.executor().now();
        match op.state {
            OperationState::Succeeded => {
                let id = op
                    .response_body
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
                    .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
                return Ok(ReconcileVerdict::Applied {
                    provider_id: id,
                    note: "the record had already succeeded".to_owned(),
                });
            }
            OperationState::Unknown => {}
            OperationState::Sending if op.lease_expired(now) => {}
            state => return Err(not(key, &format!("the record is {state}, not unknown"))),
        }
        match op.operation.as_str() {
            OP_PAGE_POST => Ok(ReconcileVerdict::Undetermined {
                note: "Meta keeps no key for Page posts and the record holds neither the Page nor \
                       the message, so nothing can be looked up from the key alone; call \
                       MetaClient::reconcile_page_post with the original Page and post"
                    .to_owned(),
            }),
            OP_IG_PUBLISH => self.reconcile_instagram(key, &op).await,
            other => Err(not(key, &format!("unknown Meta operation {other:?}"))),
        }
    }
}

impl MetaClient {
    async fn row(&self, key: &IdempotencyKey) -> Result<Option<Operation>, ReconcileError> {
        self.executor()
            .store()
            .get(key)
            .await
            .map_err(|e| failed(key, &format!("the ledger failed: {e}")))
    }

    async fn reconcile_instagram(
        &self,
        key: &IdempotencyKey,
        op: &Operation,
    ) -> Result<ReconcileVerdict, ReconcileError> {
        let Some(container) = op.checkpoint.clone().map(ContainerId::new) else {
            return Ok(ReconcileVerdict::Undetermined {
                note: "no container was recorded (the container creation's own answer was \
                       lost): a container may exist at Meta, never shown unless published; an \
                       operator bumps the key to create a new one"
                    .to_owned(),
            });
        };
        let status = self
            .container_status(key, &container)
            .await
            .map_err(|e| failed(key, &e.to_string()))?;
        let (resolution, verdict) = match status {
            ContainerStatus::Published => {
                let published = IgPublished {
                    media_id: None,
                    container_id: container.clone(),
                    source: Source::Reconciled,
                };
                let note = format!("container {container} is PUBLISHED");
                (
                    Resolution::Succeeded {
                        status: 200,
                        body: published_body(&published),
                        note: format!("reconciled: {note}"),
                    },
                    ReconcileVerdict::Applied {
                        provider_id: None,
                        note,
                    },
                )
            }
            ContainerStatus::Finished | ContainerStatus::Error | ContainerStatus::Expired => {
                let note = format!(
                    "container {container} is {}: it was not published; the next publish with \
                     this key reuses it (Meta publishes a container at most once)",
                    status.as_str()
                );
                (
                    Resolution::NotApplied {
                        note: format!("reconciled: {note}"),
                    },
                    ReconcileVerdict::NotApplied { note },
                )
            }
            other => {
                return Ok(ReconcileVerdict::Undetermined {
                    note: format!(
                        "container {container} is {}; ask again later",
                        other.as_str()
                    ),
                });
            }
        };
        // The status was read without a lease: record the verdict only if
        // nobody claimed or settled the row meanwhile.
        let current = self
            .row(key)
            .await?
            .ok_or_else(|| not(key, "no ledger record"))?;
        if current.state != op.state || current.claims != op.claims {
            return Err(failed(
                key,
                &format!(
                    "the record changed (now {}) while Meta was asked; reconcile again",
                    current.state
                ),
            ));
        }
        self.resolve(key, resolution, self.executor().now())
            .await
            .map_err(|e| failed(key, &e.to_string()))?;
        Ok(verdict)
    }
}

fn not(key: &IdempotencyKey, reason: &str) -> ReconcileError {
    ReconcileError::NotReconcilable {
        key: key.clone(),
        reason: reason.to_owned(),
    }
}

fn failed(key: &IdempotencyKey, reason: &str) -> ReconcileError {
    ReconcileError::Failed {
        key: key.clone(),
        reason: reason.to_owned(),
    }
}
