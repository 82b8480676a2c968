//! What the console shows of ledger rows, inbound records and audit rows:
//! plain serialisable views without bodies, secrets or headers.

use std::time::SystemTime;

use idem::{Operation, OperationState};
use serde::Serialize;

/// Milliseconds since the Unix epoch (0 before it, saturating far after).
pub(crate) fn to_millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A stored millisecond time as RFC 3339 text (UTC, whole seconds).
pub(crate) fn millis(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

fn time(t: SystemTime) -> String {
    millis(to_millis(t))
}

/// "3 min", "2 h", "5 d": how long ago, roughly.
pub(crate) fn age(ms: i64, now_ms: i64) -> String {
    let secs = (now_ms - ms).max(0) / 1000;
    match secs {
        s if s < 120 => format!("{s} s"),
        s if s < 7200 => format!("{} min", s / 60),
        s if s < 172_800 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86_400),
    }
}

/// The provider's id for the object, read from a stored response body
/// without exposing the body: the top-level `id` (Stripe, Meta), `sid`
/// (Twilio) or `name` (Google) when it is short, printable text.
pub fn provider_id(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    ["id", "sid", "name"].iter().find_map(|field| {
        let text = match object.get(*field)? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        (!text.is_empty() && text.len() <= 200 && text.chars().all(|c| c.is_ascii_graphic()))
            .then_some(text)
    })
}

/// One ledger row as the console shows it. The stored body is never
/// included: only its length and the provider id read from it.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct OperationView {
    /// The idempotency key.
    pub key: String,
    /// The key's shop.
    pub shop: String,
    /// The key's attempt number.
    pub attempt: u32,
    /// Provider name.
    pub provider: String,
    /// Operation name.
    pub operation: String,
    /// State.
    pub state: String,
    /// Whether a `sending` row's lease has run out.
    pub lease_expired: bool,
    /// How many times it was claimed for sending.
    pub claims: u32,
    /// When the row was created (RFC 3339).
    pub created_at: String,
    /// When it was first claimed for sending.
    pub first_sent_at: Option<String>,
    /// When it last changed.
    pub updated_at: String,
    /// Last change, in milliseconds since the epoch.
    pub updated_at_ms: i64,
    /// How long ago it last changed, roughly.
    pub age: String,
    /// When the current lease ends.
    pub lease_expires_at: Option<String>,
    /// The stored provider status.
    pub response_status: Option<u16>,
    /// Length of the stored body (the body itself is not shown).
    pub response_body_len: Option<usize>,
    /// The provider's id for the object, from the stored body.
    pub provider_id: Option<String>,
    /// The stored note.
    pub note: Option<String>,
    /// Progress recorded inside a multi-step operation.
    pub checkpoint: Option<String>,
    /// The key that replaced this one.
    pub superseded_by: Option<String>,
    /// The earliest time an attempt may have taken effect at the provider,
    /// while nothing has settled it.
    pub maybe_applied_at: Option<String>,
    /// When the sweep dropped the stored body (the row itself is kept).
    pub compacted_at: Option<String>,
    /// Whether an operator may retry it (not superseded, no live lease).
    pub retryable: bool,
    /// Whether a retry needs the key typed again (the write may already
    /// have happened, or it succeeded).
    pub confirm_by_typing: bool,
    #[serde(skip)]
    created_ms: i64,
    #[serde(skip)]
    first_sent_ms: Option<i64>,
    #[serde(skip)]
    maybe_applied_ms: Option<i64>,
    #[serde(skip)]
    compacted_ms: Option<i64>,
}

impl OperationView {
    /// The view of `op` at `now`.
    pub fn new(op: &Operation, now: SystemTime) -> Self {
        let lease_expired = op.lease_expired(now);
        let updated_ms = to_millis(op.updated_at);
        Self {
            key: op.key.to_string(),
            shop: op.key.shop().to_owned(),
            attempt: op.key.attempt(),
            provider: op.provider.clone(),
            operation: op.operation.clone(),
            state: op.state.as_str().to_owned(),
            lease_expired,
            claims: op.claims,
            created_at: time(op.created_at),
            first_sent_at: op.first_sent_at.map(time),
            updated_at: time(op.updated_at),
            updated_at_ms: updated_ms,
            age: age(updated_ms, to_millis(now)),
            lease_expires_at: op.lease_expires_at.map(time),
            response_status: op.response_status,
            response_body_len: op.response_body.as_ref().map(|b| b.len()),
            provider_id: op
                .provider_id
                .clone()
                .or_else(|| op.response_body.as_deref().and_then(provider_id)),
            maybe_applied_at: op.maybe_applied_at.map(time),
            compacted_at: op.compacted_at.map(time),
            note: op.note.clone(),
            checkpoint: op.checkpoint.clone(),
            superseded_by: op.superseded_by.as_ref().map(ToString::to_string),
            retryable: match op.state {
                OperationState::Superseded => false,
                OperationState::Sending => lease_expired,
                _ => true,
            },
            confirm_by_typing: crate::ledger::needs_typed_confirmation(op)
                || op.state == OperationState::Succeeded,
            created_ms: to_millis(op.created_at),
            first_sent_ms: op.first_sent_at.map(to_millis),
            maybe_applied_ms: op.maybe_applied_at.map(to_millis),
            compacted_ms: op.compacted_at.map(to_millis),
        }
    }

    /// The row's own milestones: recorded, first sent, claims, last change.
    pub fn events(&self) -> Vec<TimelineEvent> {
        let mut events = vec![TimelineEvent {
            at: self.created_at.clone(),
            at_ms: self.created_ms,
            what: format!("recorded ({} {})", self.provider, self.operation),
        }];
        if let (Some(at), Some(ms)) = (&self.first_sent_at, self.first_sent_ms) {
            events.push(TimelineEvent {
                at: at.clone(),
                at_ms: ms,
                what: "first attempt: claimed for sending".to_owned(),
            });
        }
        if let (Some(at), Some(ms)) = (&self.maybe_applied_at, self.maybe_applied_ms) {
            events.push(TimelineEvent {
                at: at.clone(),
                at_ms: ms,
                what: "may have taken effect at the provider from here on".to_owned(),
            });
        }
        if let (Some(at), Some(ms)) = (&self.compacted_at, self.compacted_ms) {
            events.push(TimelineEvent {
                at: at.clone(),
                at_ms: ms,
                what: "compacted by the sweep: stored body dropped, row kept".to_owned(),
            });
        }
        let mut last = format!("now {}", self.state);
        if self.lease_expired {
            last.push_str(" (lease expired)");
        }
        last.push_str(&format!(" after {} claim(s)", self.claims));
        if let Some(status) = self.response_status {
            last.push_str(&format!(", provider status {status}"));
        }
        if let Some(id) = &self.provider_id {
            last.push_str(&format!(", provider id {id}"));
        }
        if let Some(note) = &self.note {
            last.push_str(&format!(": {note}"));
        }
        if let Some(next) = &self.superseded_by {
            last.push_str(&format!("; next attempt {next}"));
        }
        events.push(TimelineEvent {
            at: self.updated_at.clone(),
            at_ms: self.updated_at_ms,
            what: last,
        });
        events
    }
}

/// One line of an operation's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEvent {
    /// When (RFC 3339).
    pub at: String,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
    /// What happened, in words.
    pub what: String,
}

/// One row of the console's audit table.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    /// Row id.
    pub id: i64,
    /// When (RFC 3339).
    pub at: String,
    /// When, in milliseconds since the epoch.
    pub at_ms: i64,
    /// Who (as the authorization hook named them, or the CLI's actor).
    pub actor: String,
    /// `retry`, `reconcile` or `sweep`.
    pub action: String,
    /// The key acted on.
    pub key: Option<String>,
    /// Its state before.
    pub state_before: Option<String>,
    /// Its state after.
    pub state_after: Option<String>,
    /// `ok`, `refused`, `error`, or a reconciliation verdict.
    pub outcome: String,
    /// Details in words (no bodies, no secrets).
    pub detail: Option<String>,
}

/// An inbound record that is in flight; `stuck` when its lease ran out.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct InboundView {
    /// The actor the record belongs to.
    pub actor: String,
    /// The endpoint name.
    pub endpoint: String,
    /// The client's key.
    pub key: String,
    /// Whether the request holding it died (lease run out).
    pub stuck: bool,
    /// When the lease ends.
    pub lease_expires_at: Option<String>,
    /// When it was made.
    pub created_at: String,
    /// How long ago it was made.
    pub age: String,
    /// When it last changed.
    pub updated_at: String,
}

impl InboundView {
    pub(crate) fn new(
        actor: String,
        endpoint: String,
        key: String,
        lease_expires_at: Option<i64>,
        created_at: i64,
        updated_at: i64,
        now_ms: i64,
    ) -> Self {
        Self {
            actor,
            endpoint,
            key,
            stuck: lease_expires_at.is_none_or(|t| t <= now_ms),
            lease_expires_at: lease_expires_at.map(millis),
            created_at: millis(created_at),
            age: age(created_at, now_ms),
            updated_at: millis(updated_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_id_reads_short_ids_and_nothing_else() {
        assert_eq!(
            provider_id(br#"{"id":"pi_123","amount":5}"#).as_deref(),
            Some("pi_123")
        );
        assert_eq!(provider_id(br#"{"sid":"SM1"}"#).as_deref(), Some("SM1"));
        assert_eq!(provider_id(br#"{"id":42}"#).as_deref(), Some("42"));
        assert_eq!(provider_id(br#"{"secret":"x"}"#), None);
        assert_eq!(provider_id(br#"{"id":"has space"}"#), None);
        assert_eq!(provider_id(b"not json"), None);
    }

    #[test]
    fn ages_are_rough() {
        assert_eq!(age(0, 30_000), "30 s");
        assert_eq!(age(0, 600_000), "10 min");
        assert_eq!(age(0, 3 * 86_400_000), "3 d");
    }
}
