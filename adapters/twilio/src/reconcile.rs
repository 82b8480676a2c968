//! Settling `unknown` sends: from Twilio's status callbacks
//! ([`reconcile_from_callback`]; proof: the callback names our key, which
//! travels in the `StatusCallback` URL, and the Message SID), by looking the
//! message up ([`Messages::reconcile`](crate::Messages::reconcile): recipient,
//! sender, body, media count and `date_created` inside the ledger's send
//! window; exactly one match settles the row, none proves nothing), or from
//! the key alone ([`idem::reconcile::Reconcile`] for [`TwilioClient`], with
//! the message each send records on its row, checked against the row's
//! fingerprint). None of them ever resends or marks a row "not sent": that is
//! an operator's bump. The crate docs ("Reconciliation, and how far it goes")
//! give every limit. Validate `X-Twilio-Signature` with
//! [`crate::signature::verify_signature`] before applying a callback, or
//! anyone who can reach the endpoint can settle rows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use idem::adapter::{Expect, Lookup, Proven, Settled, lookup_failed, settle_by_proof};
use idem::executor::Source;
use idem::ledger::{LedgerStore, Resolution};
use idem::{IdempotencyKey, OperationState, OutboundRequest, StoreError};
use serde::Deserialize;

use crate::client::{
    CALLBACK_KEY_PARAM, Messages, OPERATION, PROVIDER_NAME, Sent, TwilioClient, decode,
};
use crate::error::{AdapterError, Error};
use crate::model::{CreateMessage, Message, MessageSid, MessageStatus, Sender};
use idem::time::parse_rfc2822;

/// Checkpoint prefix of the message a send recorded for lookups.
const LOOKUP_FACTS: &str = "twilio-lookup-v1:";

/// The checkpoint a send records: the message, enough to look it up again
/// from the key alone.
pub(crate) fn lookup_facts(msg: &CreateMessage) -> String {
    let facts = serde_json::json!({
        "to": msg.to,
        "from": msg.sender.number(),
        "service": msg.sender.service(),
        "body": msg.body,
        "media": msg.media_urls.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "callback": msg.status_callback.as_ref().map(|u| u.as_str()),
    });
    format!("{LOOKUP_FACTS}{facts}")
}

#[derive(Deserialize)]
struct Facts {
    to: String,
    from: Option<String>,
    service: Option<String>,
    body: Option<String>,
    #[serde(default)]
    media: Vec<String>,
    callback: Option<String>,
}

/// The message recorded by [`lookup_facts`], if the checkpoint holds one.
pub(crate) fn recorded_message(checkpoint: Option<&str>) -> Option<CreateMessage> {
    let json = checkpoint?.strip_prefix(LOOKUP_FACTS)?;
    let f: Facts = serde_json::from_str(json).ok()?;
    let sender = match (f.from, f.service) {
        (Some(from), Some(service)) => Sender::FromService { from, service },
        (Some(from), None) => Sender::From(from),
        (None, Some(service)) => Sender::MessagingService(service),
        (None, None) => return None,
    };
    let mut msg = CreateMessage::new(f.to, sender, f.body);
    for m in f.media {
        msg.media_urls.push(m.parse().ok()?);
    }
    msg.status_callback = match f.callback {
        Some(c) => Some(c.parse().ok()?),
        None => None,
    };
    Some(msg)
}

/// Messages per lookup page.
const PAGE_SIZE: u32 = 200;
/// Checkpoint prefix recording when the send window closed.
const WINDOW_END: &str = "twilio-window-end-ms=";

/// What a status callback did to the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallbackOutcome {
    /// The callback carries no idem key: not a message sent through idem.
    NotOurs,
    /// The `unknown` row is now `succeeded` with this Message SID.
    Resolved {
        /// The key.
        key: IdempotencyKey,
        /// The message.
        sid: MessageSid,
        /// The status Twilio reported.
        status: MessageStatus,
    },
    /// The row had already succeeded with this same message (a normal
    /// delivery update).
    AlreadySucceeded {
        /// The key.
        key: IdempotencyKey,
        /// The message.
        sid: MessageSid,
    },
    /// The row succeeded with a *different* message: two messages went out
    /// under one key. Investigate; it is logged at error level.
    Duplicate {
        /// The key.
        key: IdempotencyKey,
        /// The SID in the ledger.
        recorded: MessageSid,
        /// The SID in the callback.
        reported: MessageSid,
    },
    /// A worker still holds the row's lease; its own answer (or a later
    /// callback) settles it. Nothing was changed.
    InFlight {
        /// The key.
        key: IdempotencyKey,
        /// The message.
        sid: MessageSid,
    },
    /// The key was bumped, yet its message exists: the customer may get
    /// this message and the next attempt's. Logged at warn level.
    AfterBump {
        /// The old key.
        key: IdempotencyKey,
        /// The key that replaced it.
        by: Option<IdempotencyKey>,
        /// The old key's message.
        sid: MessageSid,
    },
    /// The row is in a state a callback should not find (`pending`,
    /// `failed`); nothing was changed.
    Unexpected {
        /// The key.
        key: IdempotencyKey,
        /// Its state.
        state: OperationState,
        /// The message.
        sid: MessageSid,
    },
}

/// Applies one Twilio status callback to the ledger.
///
/// `params` are the callback's query parameters **and** form fields
/// together (Twilio posts `MessageSid`, `MessageStatus`, `AccountSid`, `To`,
/// `From`, … as a form to the `StatusCallback` URL, whose query carries
/// `idemkey`). An `unknown` row (or one whose sender's lease ran out) becomes
/// `succeeded`, storing what the callback says of the message. Validate
/// `X-Twilio-Signature` before calling this; see the [module docs](self)
/// for what a callback can and cannot prove.
///
/// # Errors
///
/// [`AdapterError::Callback`] for a malformed callback or a key that is not a
/// Twilio message's; [`Error::Store`] when the ledger fails or has no such
/// key.
pub async fn reconcile_from_callback<I, K, V>(
    store: &dyn LedgerStore,
    params: I,
    now: SystemTime,
) -> Result<CallbackOutcome, Error>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    apply_callback(store, CallbackParams::read(params)?, None, now).await
}

#[derive(Debug, Default)]
struct CallbackParams {
    key: Option<IdempotencyKey>,
    sid: Option<String>,
    status: Option<String>,
    account_sid: Option<String>,
    to: Option<String>,
    from: Option<String>,
    service: Option<String>,
    error_code: Option<String>,
}

impl CallbackParams {
    fn read<I, K, V>(params: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut cb = Self::default();
        for (k, v) in params {
            let v = v.as_ref().to_owned();
            match k.as_ref() {
                CALLBACK_KEY_PARAM => {
                    let key = v.parse().map_err(|e| {
                        AdapterError::Callback(format!(
                            "`{CALLBACK_KEY_PARAM}` is not an idem key: {e}"
                        ))
                    })?;
                    cb.key = Some(key);
                }
                "MessageSid" => cb.sid = Some(v),
                // Older callbacks carry SmsSid/SmsStatus alongside.
                "SmsSid" if cb.sid.is_none() => cb.sid = Some(v),
                "MessageStatus" => cb.status = Some(v),
                "SmsStatus" if cb.status.is_none() => cb.status = Some(v),
                "AccountSid" => cb.account_sid = Some(v),
                "To" => cb.to = Some(v),
                "From" => cb.from = Some(v),
                "MessagingServiceSid" => cb.service = Some(v),
                "ErrorCode" => cb.error_code = Some(v),
                _ => {}
            }
        }
        Ok(cb)
    }

    fn sid(&self) -> Result<MessageSid, Error> {
        let sid = self
            .sid
            .as_deref()
            .ok_or_else(|| AdapterError::Callback("no MessageSid".into()))?;
        MessageSid::parse(sid)
    }

    /// The Message as far as the callback shows it, stored as the row's
    /// answer.
    fn message_json(&self, sid: &MessageSid) -> Bytes {
        let body = serde_json::json!({
            "sid": sid.as_str(),
            "status": self.status,
            "account_sid": self.account_sid,
            "to": self.to,
            "from": self.from,
            "messaging_service_sid": self.service,
            "direction": "outbound-api",
            "error_code": self.error_code.as_deref().and_then(|c| c.parse::<i64>().ok()),
        });
        Bytes::from(body.to_string())
    }
}

/// Applies a read callback; with `account`, only one for that account.
async fn apply_callback(
    store: &dyn LedgerStore,
    cb: CallbackParams,
    account: Option<&str>,
    now: SystemTime,
) -> Result<CallbackOutcome, Error> {
    let Some(key) = cb.key.clone() else {
        return Ok(CallbackOutcome::NotOurs);
    };
    if account.is_some_and(|a| cb.account_sid.as_deref() != Some(a)) {
        let why = "the callback's AccountSid is not this client's account";
        return Err(AdapterError::Callback(why.into()).into());
    }
    let sid = cb.sid()?;
    let status = MessageStatus::parse(cb.status.as_deref().unwrap_or("unknown"));
    let note = format!("reconciled from a Twilio status callback ({sid}, {status})");
    let ours = |op: &idem::Operation| op.provider == PROVIDER_NAME && op.operation == OPERATION;
    Ok(
        match settle_by_proof(store, &key, ours, cb.message_json(&sid), &note, now).await? {
            Proven::NoRecord => return Err(StoreError::NotFound { key }.into()),
            Proven::NotCovered(op) => {
                let (provider, operation) = (op.provider, op.operation);
                let what =
                    format!("{key} is a {provider} {operation} record, not a Twilio message");
                return Err(AdapterError::Callback(what).into());
            }
            Proven::Settled(_) => {
                tracing::info!(key = %key, sid = %sid, status = %status,
                    "twilio send reconciled from status callback");
                CallbackOutcome::Resolved { key, sid, status }
            }
            Proven::AlreadySucceeded(op) => {
                let recorded = op
                    .response_body
                    .as_deref()
                    .and_then(|b| serde_json::from_slice::<Message>(b).ok())
                    .map(|m| m.sid);
                match recorded {
                    Some(recorded) if recorded != sid => {
                        tracing::error!(key = %key, recorded = %recorded, reported = %sid,
                            "two Twilio messages under one idempotency key");
                        let reported = sid;
                        CallbackOutcome::Duplicate {
                            key,
                            recorded,
                            reported,
                        }
                    }
                    _ => CallbackOutcome::AlreadySucceeded { key, sid },
                }
            }
            // A live lease: the sender is still waiting for its answer.
            Proven::InFlight(_) => CallbackOutcome::InFlight { key, sid },
            Proven::Untouched(op) if op.state == OperationState::Superseded => {
                tracing::warn!(key = %key, sid = %sid, by = ?op.superseded_by,
                    "a bumped Twilio send was delivered after all; the customer may get two messages");
                let by = op.superseded_by;
                CallbackOutcome::AfterBump { key, by, sid }
            }
            Proven::Untouched(op) => {
                let state = op.state;
                CallbackOutcome::Unexpected { key, state, sid }
            }
            Proven::KeptChanging => {
                return Err(AdapterError::Callback(format!(
                    "{key} kept changing while the callback was applied; deliver the callback again"
                ))
                .into());
            }
        },
    )
}

impl TwilioClient {
    /// [`reconcile_from_callback`] on this client's ledger and clock, after
    /// checking that the callback's `AccountSid` is this client's.
    ///
    /// # Errors
    ///
    /// As [`reconcile_from_callback`], and [`AdapterError::Callback`] when the
    /// account differs.
    pub async fn handle_status_callback<I, K, V>(&self, params: I) -> Result<CallbackOutcome, Error>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let cb = CallbackParams::read(params)?;
        let exec = self.executor();
        let account = Some(self.account_sid());
        apply_callback(exec.store().as_ref(), cb, account, exec.now()).await
    }
}

/// What a lookup found.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Reconciled {
    /// Exactly one matching message: the row is now `succeeded` with it.
    Found(Sent),
    /// The row had already succeeded; nothing was looked up.
    AlreadySucceeded(Sent),
    /// No matching message. The row stays `unknown`: this is not proof that
    /// nothing was sent (see the [module docs](crate::reconcile)).
    NotFound {
        /// The key.
        key: IdempotencyKey,
        /// Start of the searched `date_created` window.
        window_start: SystemTime,
        /// End of the searched window.
        window_end: SystemTime,
    },
    /// Several matching messages: they cannot be told apart. The row stays
    /// `unknown`.
    Ambiguous {
        /// The key.
        key: IdempotencyKey,
        /// The matching messages.
        candidates: Vec<MessageSid>,
    },
}

#[derive(Deserialize)]
struct ListPage {
    #[serde(default)]
    messages: Vec<Message>,
    next_page_uri: Option<String>,
}

impl Messages<'_> {
    /// Looks an `unknown` send up at Twilio and, when exactly one message
    /// matches, records the row as `succeeded` with it. Pass the same
    /// message the key was sent with (its fingerprint is checked). Never
    /// sends the message; see the [module docs](crate::reconcile) for what a
    /// lookup can and cannot tell.
    ///
    /// The list requests are plain reads
    /// ([`Executor::read`](idem::Executor::read)): no lease is taken and the
    /// row is left exactly as it is unless exactly one message matches (then
    /// it is resolved `succeeded`).
    ///
    /// # Errors
    ///
    /// [`Error::LookupFailed`] when Twilio could not be asked (row unchanged),
    /// [`Error::NotUnknown`] for a `pending` row, [`Error::Rejected`] for a
    /// `failed` one, [`Error::KeyReused`] for another message's row,
    /// [`Error::RecordChanged`] when the row changed during the lookup,
    /// [`Error::Superseded`], [`Error::InvalidRequest`], and [`Error::Store`]
    /// for ledger failures.
    pub async fn reconcile(
        self,
        key: &IdempotencyKey,
        msg: &CreateMessage,
    ) -> Result<Reconciled, Error> {
        let client = self.client;
        let core = &client.inner.core;
        let fingerprint = self.request(key, msg)?.fingerprint();
        // The row must be this very send (what `begin` checks for a send).
        // A lookup never resends, so a live lease does not stop it.
        let expect = Expect::operation(OPERATION)
            .fingerprint(&fingerprint)
            .live_sending();
        let op = match core.open_lookup(key, expect).await? {
            Lookup::Open(op) => op,
            Lookup::Succeeded(op) => return already(key, op),
            Lookup::Pending(op) => {
                let (key, state) = (key.clone(), op.state);
                return Err(Error::NotUnknown { key, state });
            }
        };

        // The send window: from the first claim to the moment the row went
        // unknown. The lookup leaves the row untouched, so these stay the same
        // on every lookup of this outcome. (Older versions recorded the end in
        // a checkpoint; it is honoured when present.)
        let skew = client.inner.clock_skew;
        let started = op.first_sent_at.unwrap_or(op.created_at);
        let recorded_end = op
            .checkpoint
            .as_deref()
            .filter(|c| !c.starts_with(LOOKUP_FACTS))
            .and_then(|c| c.strip_prefix(WINDOW_END))
            .and_then(|ms| ms.parse::<u64>().ok())
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
        let window_end = recorded_end.unwrap_or_else(|| {
            op.lease_expires_at
                .map_or(op.updated_at, |lease| lease.max(op.updated_at))
        });
        let from = started.checked_sub(skew).unwrap_or(UNIX_EPOCH);
        let to = window_end + skew;

        let mut url = client.messages_url();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("To", &msg.to);
            if let Some(f) = msg.sender.number() {
                q.append_pair("From", f);
            }
            // No `DateSent` filter: a message not sent yet has no sent date
            // and would be hidden. The window is applied below, on
            // `date_created`.
            q.append_pair("PageSize", &PAGE_SIZE.to_string());
        }
        let mut matches: Vec<Message> = Vec::new();
        let mut next = Some(url);
        let mut pages = 0;
        while let Some(page_url) = next.take() {
            if pages >= client.inner.max_pages {
                break;
            }
            pages += 1;
            // A plain read: no ledger row, no lease; the row is untouched.
            let request = client.authorize(OutboundRequest::get(page_url));
            let lookup = &client.inner.lookup_provider;
            let page: ListPage = core
                .read_json(key, lookup, request, "the message list")
                .await?;
            matches.extend(
                page.messages
                    .into_iter()
                    .filter(|m| matches_request(m, msg, from, to)),
            );
            next = match page.next_page_uri.as_deref() {
                Some(uri) if !uri.is_empty() => Some(core.raw_url(uri).map_err(|reason| {
                    lookup_failed(key, format!("Twilio's next_page_uri: {reason}"), None)
                })?),
                _ => None,
            };
        }
        if next.is_some() {
            tracing::debug!(key = %key, pages, "twilio lookup stopped at the page limit");
        }
        match matches.len() {
            1 => {
                let message = matches.remove(0);
                let body = serde_json::to_vec(&message).map_err(|e| Error::Undecodable {
                    key: key.clone(),
                    reason: e.to_string(),
                })?;
                let body = Bytes::from(body);
                let resolution = Resolution::Succeeded {
                    status: 200,
                    body,
                    note: format!("found by lookup: {}", message.sid),
                };
                // A status callback (or another lookup) may have settled it
                // meanwhile: its record stands.
                if let Settled::AlreadySucceeded(op) = core.settle(key, &op, &resolution).await? {
                    return already(key, op);
                }
                tracing::info!(key = %key, sid = %message.sid, "twilio send reconciled by lookup");
                Ok(Reconciled::Found(Sent {
                    key: key.clone(),
                    message,
                    source: Source::Reconciled,
                }))
            }
            // Not proof that nothing was sent: the row stays as it is.
            0 => Ok(Reconciled::NotFound {
                key: key.clone(),
                window_start: from,
                window_end: to,
            }),
            n => {
                let candidates: Vec<MessageSid> = matches.into_iter().map(|m| m.sid).collect();
                tracing::warn!(
                    key = %key,
                    candidates = n,
                    "twilio lookup: identical messages in the send window; cannot tell which is ours"
                );
                Ok(Reconciled::Ambiguous {
                    key: key.clone(),
                    candidates,
                })
            }
        }
    }
}

fn already(key: &IdempotencyKey, op: idem::Operation) -> Result<Reconciled, Error> {
    let body = op.response_body.unwrap_or_default();
    decode(key, &body, Source::Ledger).map(Reconciled::AlreadySucceeded)
}

fn matches_request(m: &Message, msg: &CreateMessage, from: SystemTime, to: SystemTime) -> bool {
    let outbound = m
        .direction
        .as_deref()
        .is_none_or(|d| d.starts_with("outbound"));
    let same_to = m.to.as_deref() == Some(msg.to.as_str());
    let same_from = match msg.sender.number() {
        Some(f) => m.from.as_deref() == Some(f),
        None => true,
    };
    let same_service = match msg.sender.service() {
        Some(s) => m.messaging_service_sid.as_deref() == Some(s),
        None => true,
    };
    let same_body = m.body.as_deref().unwrap_or("") == msg.body.as_deref().unwrap_or("");
    let same_media = m
        .num_media
        .as_deref()
        .and_then(|n| n.parse::<usize>().ok())
        .is_none_or(|n| n == msg.media_urls.len());
    let in_window = m
        .date_created
        .as_deref()
        .and_then(parse_rfc2822)
        .is_some_and(|t| t >= from && t <= to);
    outbound && same_to && same_from && same_service && same_body && same_media && in_window
}

mod by_key {
    //! [`idem::reconcile::Reconcile`] for [`TwilioClient`]: the lookup of
    //! [`Messages::reconcile`](crate::Messages::reconcile) with the message each
    //! send records on its row; the verdicts are in the README ("From the key
    //! alone"). Never `NotApplied`.

    use async_trait::async_trait;
    use idem::IdempotencyKey;
    use idem::adapter::{ToReconcile, record_to_reconcile};
    use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};

    use crate::client::{OPERATION, PROVIDER_NAME, TwilioClient, decode};
    use crate::reconcile::{Reconciled, recorded_message};

    #[async_trait]
    impl Reconcile for TwilioClient {
        fn provider(&self) -> &str {
            PROVIDER_NAME
        }

        async fn reconcile(
            &self,
            key: &IdempotencyKey,
        ) -> Result<ReconcileVerdict, ReconcileError> {
            let found = record_to_reconcile(self.executor(), PROVIDER_NAME, key, true).await?;
            if found.operation().operation != OPERATION {
                return Err(ReconcileError::NotReconcilable {
                    key: key.clone(),
                    reason: format!(
                        "the record is a {} operation, not a Twilio message",
                        found.operation().operation
                    ),
                });
            }
            let op = match found {
                ToReconcile::Succeeded(op) => {
                    let body = op.response_body.unwrap_or_default();
                    let sent = decode(key, &body, idem::executor::Source::Ledger)
                        .map_err(|e| e.into_reconcile_error(key))?;
                    return Ok(ReconcileVerdict::Applied {
                        provider_id: Some(sent.message.sid.to_string()),
                        note: "the record had already succeeded".to_owned(),
                    });
                }
                ToReconcile::Open(op) => op,
            };
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
                    note:
                        "no matching message in the send window; that does not prove none was sent"
                            .to_owned(),
                }),
                Ok(Reconciled::Ambiguous { candidates, .. }) => {
                    Ok(ReconcileVerdict::Undetermined {
                        note: format!(
                            "{} identical messages in the send window; cannot tell which is ours",
                            candidates.len()
                        ),
                    })
                }
                Err(e) => Err(e.into_reconcile_error(key)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_params_read_key_and_sid() {
        let params = vec![
            ("idemkey", "joes-bikes_sms_42_v1"),
            ("MessageSid", "SM0123456789abcdef0123456789abcdef"),
            ("MessageStatus", "delivered"),
            ("AccountSid", "AC1"),
        ];
        let cb = CallbackParams::read(params).unwrap();
        assert_eq!(cb.key.unwrap().as_str(), "joes-bikes_sms_42_v1");
        assert_eq!(cb.status.as_deref(), Some("delivered"));
        assert!(CallbackParams::read(vec![("idemkey", "nope")]).is_err());
    }

    #[test]
    fn lookup_match_rules() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let msg = CreateMessage::from_number("+15558675310", "+15017122661", "Your bike is ready");
        let mut m: Message = serde_json::from_value(serde_json::json!({
            "sid": "SM0123456789abcdef0123456789abcdef",
            "status": "sent",
            "to": "+15558675310",
            "from": "+15017122661",
            "body": "Your bike is ready",
            "num_media": "0",
            "direction": "outbound-api",
            "date_created": idem::time::format_rfc2822(t0),
        }))
        .unwrap();
        let w0 = t0 - Duration::from_secs(60);
        let w1 = t0 + Duration::from_secs(60);
        assert!(matches_request(&m, &msg, w0, w1));
        assert!(!matches_request(&m, &msg, t0 + Duration::from_secs(1), w1));
        m.body = Some("Your bike is ready!".into());
        assert!(!matches_request(&m, &msg, w0, w1));
        m.body = Some("Your bike is ready".into());
        m.direction = Some("inbound".into());
        assert!(!matches_request(&m, &msg, w0, w1));
    }
}
