//! Reconciliation: [`StripeClient::reconcile`] and [`idem::reconcile::Reconcile`]
//! for [`StripeClient`]. What each lookup proves is in the README
//! ("Reconciliation and its limits").

use async_trait::async_trait;
use bytes::Bytes;
use idem::adapter::{Expect, Lookup, Settled, lookup_failed, lookup_succeeded};
use idem::executor::{OutboundRequest, Source};
use idem::ledger::Resolution;
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
use idem::{IdempotencyKey, StoreError};
use serde::de::DeserializeOwned;

use crate::client::{KEY_RETENTION, OpKind, PROVIDER_NAME, StripeClient, StripeResponse, decode};
use crate::error::{AdapterError, Error};
use crate::model::objects::{
    Charge, Customer, PaymentIntent, PaymentIntentStatus, Refund, StripeObject,
};
use crate::model::params::CapturePaymentIntent;
use crate::model::types::{Amount, IDEM_KEY_METADATA, PaymentIntentId};

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
            Err(e) => Err(e.into_reconcile_error(key)),
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

/// What [`StripeClient::reconcile`] established.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reconciliation {
    /// The operation took effect; this is the object. The ledger record is
    /// now `succeeded` (or already was).
    Found(Box<StripeObject>),
    /// The operation provably did not take effect (it was never sent, or the
    /// PaymentIntent is still waiting for this confirm or capture). The record
    /// is `pending`: the next run sends it with the same key.
    NotApplied {
        /// How this was established.
        note: String,
    },
    /// No object carries the key. Stripe's search lags writes by up to about
    /// a minute, so this is not proof: the record stays `unknown`. Try again
    /// later; if still not found, an operator may bump the key.
    NotFound {
        /// How it was looked up.
        note: String,
    },
    /// Stripe's answer proves neither that the operation happened nor that
    /// it did not (for example a partial capture while the intent still
    /// waits for more captures). The record stays `unknown`; nothing is
    /// resent. An operator settles it (`store.resolve`) or bumps the key.
    Undetermined {
        /// What was read and why it is not proof.
        note: String,
    },
}

pub(crate) enum RawReconciliation {
    Found(Bytes),
    NotApplied(String),
    NotFound(String),
    Undetermined(String),
}

impl StripeClient {
    /// Finds out what happened to the operation recorded under `key`:
    ///
    /// * a create (PaymentIntent, Customer, Charge) is looked up with
    ///   Stripe's search API, `metadata['idem_key']:'<key>'`;
    /// * a refund is looked up by listing the refunds of its PaymentIntent or
    ///   charge (Stripe has no refund search) and matching `metadata[idem_key]`;
    /// * a confirm or capture is looked up by reading the PaymentIntent's
    ///   status (Stripe takes no metadata on confirm).
    ///
    /// When found, the ledger record becomes `succeeded` with the object as
    /// its stored answer. A record that already succeeded answers from the
    /// ledger with no request. The lookup is a plain read
    /// ([`Executor::read`](idem::Executor::read)): it takes no lease and leaves the record as it is
    /// unless it reaches a verdict (found: `succeeded`; a confirm or capture
    /// proven not applied: back to `pending`, checked against the record
    /// just before, so a stale read never causes a resend).
    ///
    /// # Errors
    ///
    /// [`Error::Store`] (`NotFound`) when the ledger has no such key,
    /// [`Error::KeyReused`] for another provider's record, [`Error::InFlight`]
    /// while a worker is sending it, [`Error::Rejected`] when it failed
    /// earlier, [`Error::Superseded`], [`Error::LookupFailed`] when the lookup
    /// itself failed, [`Error::RecordChanged`] when the record changed while
    /// Stripe was asked (nothing recorded), and store errors.
    pub async fn reconcile(&self, key: &IdempotencyKey) -> Result<Reconciliation, Error> {
        let (kind, raw) = self.reconcile_raw(key).await?;
        Ok(match raw {
            RawReconciliation::Found(body) => {
                let object = match kind {
                    OpKind::PaymentIntentCreate
                    | OpKind::PaymentIntentConfirm
                    | OpKind::PaymentIntentCapture => {
                        StripeObject::PaymentIntent(decode::<PaymentIntent>(key, &body)?)
                    }
                    OpKind::RefundCreate => StripeObject::Refund(decode::<Refund>(key, &body)?),
                    OpKind::CustomerCreate => {
                        StripeObject::Customer(decode::<Customer>(key, &body)?)
                    }
                    OpKind::ChargeCreate => StripeObject::Charge(decode::<Charge>(key, &body)?),
                };
                Reconciliation::Found(Box::new(object))
            }
            RawReconciliation::NotApplied(note) => Reconciliation::NotApplied { note },
            RawReconciliation::NotFound(note) => Reconciliation::NotFound { note },
            RawReconciliation::Undetermined(note) => Reconciliation::Undetermined { note },
        })
    }

    async fn reconcile_raw(
        &self,
        key: &IdempotencyKey,
    ) -> Result<(OpKind, RawReconciliation), Error> {
        let core = &self.inner.core;
        let op = match core.open_lookup(key, Expect::any()).await? {
            Lookup::Open(op) => op,
            Lookup::Succeeded(op) => {
                let kind = kind_of(key, &op)?;
                let body = op.response_body.unwrap_or_default();
                return Ok((kind, RawReconciliation::Found(body)));
            }
            Lookup::Pending(op) => {
                let note = "the record is pending: nothing was processed by Stripe yet";
                return Ok((
                    kind_of(key, &op)?,
                    RawReconciliation::NotApplied(note.into()),
                ));
            }
        };
        let kind = kind_of(key, &op)?;
        let Some((request, what)) = self.lookup_request(kind, key, op.checkpoint.as_deref()) else {
            // Nothing learned: the record stays as it is.
            return Ok((
                kind,
                RawReconciliation::Undetermined(
                    "no way to look this operation up (its target was not recorded)".to_owned(),
                ),
            ));
        };
        // A plain read: no ledger row, no lease, the record untouched.
        let answer = core
            .executor()
            .read(core.provider(), request)
            .await
            .map_err(|e| lookup_failed(key, format!("{what} failed: {e}"), None))?;
        lookup_succeeded(key, &answer, &what)?;
        let found = interpret(kind, key, &answer.body, &what, op.checkpoint.as_deref());
        let resolution = match &found {
            RawReconciliation::Found(object) => Resolution::Succeeded {
                status: 200,
                body: object.clone(),
                note: format!("reconciled: found by {what}"),
            },
            // "Not applied" leads to a resend: `settle` records it only if
            // nobody claimed or settled the record while Stripe was asked.
            RawReconciliation::NotApplied(note) => Resolution::NotApplied {
                note: format!("reconciled: {note}"),
            },
            // Not proof either way: the record stays as it is.
            RawReconciliation::NotFound(_) | RawReconciliation::Undetermined(_) => {
                tracing::warn!(key = %key, operation = kind.name(), lookup = %what,
                    "Stripe reconciliation undetermined; the record stays unknown");
                return Ok((kind, found));
            }
        };
        if let Settled::AlreadySucceeded(op) = core.settle(key, &op, &resolution).await? {
            let body = op.response_body.unwrap_or_default();
            return Ok((kind, RawReconciliation::Found(body)));
        }
        tracing::info!(key = %key, operation = kind.name(), lookup = %what, "Stripe reconciliation done");
        Ok((kind, found))
    }

    fn lookup_request(
        &self,
        kind: OpKind,
        key: &IdempotencyKey,
        checkpoint: Option<&str>,
    ) -> Option<(OutboundRequest, String)> {
        let query = format!("metadata['{IDEM_KEY_METADATA}']:'{key}'");
        let search = |object: &str| {
            let url = self.url(&["v1", object, "search"], &[("query", &query)]);
            Some((self.get(url), format!("search of {object} for {query}")))
        };
        match kind {
            OpKind::PaymentIntentCreate => search("payment_intents"),
            OpKind::CustomerCreate => search("customers"),
            OpKind::ChargeCreate => search("charges"),
            OpKind::RefundCreate => {
                let (name, id) = target_of(checkpoint?)?;
                if name != "payment_intent" && name != "charge" {
                    return None;
                }
                let url = self.url(&["v1", "refunds"], &[(name, id), ("limit", "100")]);
                Some((self.get(url), format!("list of refunds of {id}")))
            }
            OpKind::PaymentIntentConfirm | OpKind::PaymentIntentCapture => {
                let (name, id) = target_of(checkpoint?)?;
                if name != "payment_intent" {
                    return None;
                }
                let url = self.url(&["v1", "payment_intents", id], &[]);
                Some((self.get(url), format!("retrieval of {id}")))
            }
        }
    }

    /// An operation ended `unknown`. Inside Stripe's key window the next run
    /// resends the same key (Stripe dedupes it), so say so. Past it, a resend
    /// could charge twice: reconcile instead. Returns `None` when
    /// reconciliation proved the operation did not happen (record pending).
    pub(crate) async fn after_unknown<T: DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        reason: String,
    ) -> Result<Option<StripeResponse<T>>, Error> {
        let executor = self.inner.core.executor();
        let provider = self.inner.core.provider();
        let op = executor
            .store()
            .get(key)
            .await?
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        let now = executor.now();
        let budget = provider.retry().claim_budget();
        if provider
            .class()
            .may_resend_unknown(op.first_sent_at, now, budget)
        {
            let until = op.first_sent_at.map(|first| first + KEY_RETENTION - budget);
            return Err(Error::OutcomeUnknown {
                key: key.clone(),
                reason,
                resend_safe_until: until.or(Some(now)),
            });
        }
        tracing::warn!(key = %key, %reason, "Stripe key window passed with the outcome unknown; reconciling instead of resending");
        match self.reconcile_raw(key).await?.1 {
            RawReconciliation::Found(body) => {
                let object = decode::<T>(key, &body)?;
                Ok(Some(StripeResponse {
                    object,
                    key: key.clone(),
                    source: Source::Reconciled,
                    replayed: false,
                    request_id: None,
                }))
            }
            RawReconciliation::NotApplied(_) => Ok(None),
            RawReconciliation::NotFound(note) => Err(AdapterError::NotFound {
                key: key.clone(),
                note,
            }
            .into()),
            RawReconciliation::Undetermined(note) => Err(AdapterError::Undetermined {
                key: key.clone(),
                note,
            }
            .into()),
        }
    }
}

fn kind_of(key: &IdempotencyKey, op: &idem::Operation) -> Result<OpKind, Error> {
    OpKind::from_name(&op.operation)
        .ok_or_else(|| Error::invalid(key, format!("unknown Stripe operation {:?}", op.operation)))
}

/// The operation's target in a checkpoint: `payment_intent=pi_…`, possibly
/// followed by `;name=value` facts about the request (see [`capture_facts`]).
fn target_of(checkpoint: &str) -> Option<(&str, &str)> {
    checkpoint.split(';').next()?.split_once('=')
}

/// What a capture's checkpoint says of its finality: `Some(true)` for a
/// final capture, `Some(false)` for `final_capture=false`, `None` when the
/// record predates the fact (older versions recorded only the intent).
fn capture_is_final(checkpoint: Option<&str>) -> Option<bool> {
    checkpoint?
        .split(';')
        .skip(1)
        .find_map(|fact| fact.strip_prefix("final_capture="))
        .and_then(|v| v.parse().ok())
}

/// The checkpoint of a capture: its intent and whether it is final.
pub(crate) fn capture_facts(id: &PaymentIntentId, params: &CapturePaymentIntent) -> String {
    let final_capture = params.final_capture != Some(false);
    format!("payment_intent={id};final_capture={final_capture}")
}

/// Reads a lookup's answer. "Not applied" is only ever concluded from
/// positive proof that the effect is absent; everything Stripe's answer does
/// not prove is `NotFound` (search) or `Undetermined` (status reads).
fn interpret(
    kind: OpKind,
    key: &IdempotencyKey,
    body: &[u8],
    what: &str,
    checkpoint: Option<&str>,
) -> RawReconciliation {
    match kind {
        OpKind::PaymentIntentCreate
        | OpKind::CustomerCreate
        | OpKind::ChargeCreate
        | OpKind::RefundCreate => {
            // An object carrying the key is proof it was created; no object
            // is not proof of anything (search lags, the refund list is
            // capped at 100).
            let data = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("data").and_then(|d| d.as_array()).cloned())
                .unwrap_or_default();
            let found = data.into_iter().find(|object| {
                object
                    .get("metadata")
                    .and_then(|m| m.get(IDEM_KEY_METADATA))
                    .and_then(|v| v.as_str())
                    == Some(key.as_str())
            });
            match found.and_then(|o| serde_json::to_vec(&o).ok()) {
                Some(bytes) => RawReconciliation::Found(Bytes::from(bytes)),
                None => RawReconciliation::NotFound(format!("{what}: no object found")),
            }
        }
        OpKind::PaymentIntentConfirm => {
            let Ok(pi) = serde_json::from_slice::<PaymentIntent>(body) else {
                return RawReconciliation::Undetermined(format!("{what}: unreadable answer"));
            };
            use PaymentIntentStatus as S;
            match &pi.status {
                S::RequiresAction | S::Processing | S::RequiresCapture | S::Succeeded => {
                    RawReconciliation::Found(Bytes::copy_from_slice(body))
                }
                // Nothing was charged: a confirm that went through leaves the
                // intent past this state, or (3-D Secure with manual
                // confirmation) back here with nothing charged, so a second
                // confirm cannot charge twice.
                S::RequiresConfirmation if pi.amount_received == Some(Amount::minor(0)) => {
                    RawReconciliation::NotApplied(format!(
                        "{what}: the intent is requires_confirmation with nothing received, \
                         so the confirm did not happen"
                    ))
                }
                status => RawReconciliation::Undetermined(format!(
                    "{what}: the intent is {status:?} (amount_received {:?}); cannot tell \
                     whether the confirm ran",
                    pi.amount_received.map(Amount::get)
                )),
            }
        }
        OpKind::PaymentIntentCapture => {
            let Ok(pi) = serde_json::from_slice::<PaymentIntent>(body) else {
                return RawReconciliation::Undetermined(format!("{what}: unreadable answer"));
            };
            use PaymentIntentStatus as S;
            let received = pi.amount_received.map(Amount::get);
            match (&pi.status, capture_is_final(checkpoint), received) {
                (S::Succeeded, _, _) => RawReconciliation::Found(Bytes::copy_from_slice(body)),
                // A final capture that happened leaves the intent
                // `succeeded`; still `requires_capture` proves it did not.
                (S::RequiresCapture, Some(true), _) => RawReconciliation::NotApplied(format!(
                    "{what}: the intent is still requires_capture, so the final capture did not happen"
                )),
                // A partial capture (`final_capture=false`, or a record that
                // does not say) leaves the intent `requires_capture` either
                // way: only "nothing received at all" proves it did not happen.
                (S::RequiresCapture, _, Some(0)) => RawReconciliation::NotApplied(format!(
                    "{what}: the intent is requires_capture with nothing received, so the \
                     capture did not happen"
                )),
                (status, finality, received) => RawReconciliation::Undetermined(format!(
                    "{what}: the intent is {status:?} with amount_received {received:?} and the \
                     capture is {}; that does not prove whether this capture ran",
                    match finality {
                        Some(true) => "final",
                        Some(false) => "partial (final_capture=false)",
                        None => "of unrecorded finality",
                    }
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pi(status: &str, received: Option<u64>) -> Vec<u8> {
        let mut v = serde_json::json!({
            "id": "pi_1", "amount": 1000, "currency": "usd", "status": status,
        });
        if let Some(r) = received {
            v["amount_received"] = serde_json::json!(r);
        }
        v.to_string().into_bytes()
    }

    fn verdict(kind: OpKind, body: &[u8], checkpoint: &str) -> &'static str {
        let key: IdempotencyKey = "t_x_1_v1".parse().unwrap();
        match interpret(kind, &key, body, "read", Some(checkpoint)) {
            RawReconciliation::Found(_) => "found",
            RawReconciliation::NotApplied(_) => "not applied",
            RawReconciliation::NotFound(_) => "not found",
            RawReconciliation::Undetermined(_) => "undetermined",
        }
    }

    #[test]
    fn capture_verdicts_need_positive_proof() {
        use OpKind::PaymentIntentCapture as C;
        let final_cp = "payment_intent=pi_1;final_capture=true";
        let partial_cp = "payment_intent=pi_1;final_capture=false";
        let old_cp = "payment_intent=pi_1";
        let waiting_paid = pi("requires_capture", Some(300));
        let waiting_unpaid = pi("requires_capture", Some(0));
        assert_eq!(verdict(C, &waiting_paid, final_cp), "not applied");
        assert_eq!(verdict(C, &waiting_paid, partial_cp), "undetermined");
        assert_eq!(verdict(C, &waiting_paid, old_cp), "undetermined");
        assert_eq!(verdict(C, &waiting_unpaid, partial_cp), "not applied");
        assert_eq!(verdict(C, &waiting_unpaid, old_cp), "not applied");
        // No amount_received in the answer: nothing proven.
        assert_eq!(
            verdict(C, &pi("requires_capture", None), partial_cp),
            "undetermined"
        );
        assert_eq!(
            verdict(C, &pi("succeeded", Some(1000)), partial_cp),
            "found"
        );
        assert_eq!(
            verdict(C, &pi("canceled", Some(0)), final_cp),
            "undetermined"
        );
        assert_eq!(verdict(C, b"not json", final_cp), "undetermined");
    }

    #[test]
    fn confirm_verdicts_need_positive_proof() {
        use OpKind::PaymentIntentConfirm as F;
        let cp = "payment_intent=pi_1";
        assert_eq!(
            verdict(F, &pi("requires_confirmation", Some(0)), cp),
            "not applied"
        );
        assert_eq!(
            verdict(F, &pi("requires_confirmation", None), cp),
            "undetermined"
        );
        assert_eq!(
            verdict(F, &pi("requires_payment_method", Some(0)), cp),
            "undetermined"
        );
        assert_eq!(verdict(F, &pi("processing", Some(0)), cp), "found");
    }

    #[test]
    fn checkpoints_name_the_target_and_the_finality() {
        let id: PaymentIntentId = "pi_1".parse().unwrap();
        let partial = CapturePaymentIntent {
            final_capture: Some(false),
            ..CapturePaymentIntent::default()
        };
        let cp = capture_facts(&id, &partial);
        assert_eq!(target_of(&cp), Some(("payment_intent", "pi_1")));
        assert_eq!(capture_is_final(Some(&cp)), Some(false));
        let cp = capture_facts(&id, &CapturePaymentIntent::default());
        assert_eq!(capture_is_final(Some(&cp)), Some(true));
        assert_eq!(capture_is_final(Some("payment_intent=pi_1")), None);
        assert_eq!(target_of("charge=ch_1"), Some(("charge", "ch_1")));
    }
}
