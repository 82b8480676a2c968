//! [`idem::reconcile::Reconcile`] for [`TwilioClient`]: reconciliation from
//! the key alone, for tools that work across providers (the operator
//! console).
//!
//! Twilio keeps no idempotency key, so the lookup is
//! [`Messages::reconcile`](crate::Messages::reconcile): the recipient's
//! messages, matched on sender, body, media and creation time. The message
//! it needs comes from the ledger row, where each send records it (see the
//! [`reconcile`](crate::reconcile) module). The verdicts:
//!
//! | lookup | [`ReconcileVerdict`] |
//! | --- | --- |
//! | exactly one match (or the row had already succeeded) | `Applied`, with the Message SID (row `succeeded`) |
//! | no match | `Undetermined`: not proof that nothing was sent (row `unknown`) |
//! | several matches | `Undetermined` (row `unknown`) |
//! | the row records no message | `Undetermined` (row `unknown`) |
//!
//! It never answers `NotApplied`: nothing Twilio shows proves that a message
//! was not created. An operator bumps the key, accepting the risk of a
//! second text, or waits for a status callback.

use async_trait::async_trait;
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
use idem::{IdempotencyKey, OperationState};

use crate::client::{OPERATION, PROVIDER, TwilioClient, decode};
use crate::error::{AdapterError, Error};
use crate::reconcile::{Reconciled, recorded_message};

#[async_trait]
impl Reconcile for TwilioClient {
    fn provider(&self) -> &str {
        PROVIDER
    }

    async fn reconcile(&self, key: &IdempotencyKey) -> Result<ReconcileVerdict, ReconcileError> {
        let not = |reason: String| ReconcileError::NotReconcilable {
            key: key.clone(),
            reason,
        };
        let op = self
            .executor()
            .store()
            .get(key)
            .await
            .map_err(|e| ReconcileError::Failed {
                key: key.clone(),
                reason: format!("the ledger failed: {e}"),
            })?
            .ok_or_else(|| not("no ledger record".to_owned()))?;
        if op.provider != PROVIDER || op.operation != OPERATION {
            return Err(not(format!(
                "the record is a {} {} operation, not a Twilio message",
                op.provider, op.operation
            )));
        }
        match op.state {
            OperationState::Succeeded => {
                let body = op.response_body.clone().unwrap_or_default();
                let sent = decode(key, &body, idem::executor::Source::Ledger)
                    .map_err(|e| to_trait_error(key, e))?;
                return Ok(ReconcileVerdict::Applied {
                    provider_id: Some(sent.message.sid.to_string()),
                    note: "the record had already succeeded".to_owned(),
                });
            }
            OperationState::Unknown | OperationState::Sending => {}
            state => return Err(not(format!("the record is {state}, not unknown"))),
        }
        let Some(msg) = recorded_message(op.checkpoint.as_deref()) else {
            return Ok(ReconcileVerdict::Undetermined {
                note: "the record holds no message to look up (written by an older version, or \
                       the ledger failed at send time); use Messages::reconcile with the original \
                       message, or wait for a status callback"
                    .to_owned(),
            });
        };
        match self.messages().reconcile(key, &msg).await {
            Ok(Reconciled::Found(sent) | Reconciled::AlreadySucceeded(sent)) => {
                Ok(ReconcileVerdict::Applied {
                    provider_id: Some(sent.message.sid.to_string()),
                    note: format!("found by lookup: {}", sent.message.sid),
                })
            }
            Ok(Reconciled::NotFound { .. }) => Ok(ReconcileVerdict::Undetermined {
                note: "no matching message in the send window; that does not prove none was sent"
                    .to_owned(),
            }),
            Ok(Reconciled::Ambiguous { candidates, .. }) => Ok(ReconcileVerdict::Undetermined {
                note: format!(
                    "{} identical messages in the send window; cannot tell which is ours",
                    candidates.len()
                ),
            }),
            Err(e) => Err(to_trait_error(key, e)),
        }
    }
}

fn to_trait_error(key: &IdempotencyKey, e: Error) -> ReconcileError {
    let reason = e.to_string();
    match e {
        Error::Adapter(AdapterError::State { .. })
        | Error::Superseded { .. }
        | Error::InFlight { .. }
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
