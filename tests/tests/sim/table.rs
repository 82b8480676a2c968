//! The ledger's transition table (adr/0002-ledger-states.md, derived from
//! `core/src/ledger/sql.rs`), and a checker that holds every observed row
//! change against it.

use std::time::SystemTime;

use idem::{Operation, OperationState};

use OperationState::{Failed, Pending, Sending, Succeeded, Superseded, Unknown};

/// A store call that may change a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Begin,
    BeginClaimed,
    Claim { allow_unknown: bool },
    ExpireLease,
    Renew,
    Checkpoint,
    CompleteSucceeded,
    CompleteFailed,
    CompleteUnknown,
    CompleteNotSent,
    ResolveSucceeded,
    ResolveNotApplied,
    Bump { force: bool },
    Purge,
    Forget,
}

/// Who may make a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    Worker,
    Sweeper,
    Reconciliation,
    Operator,
}

/// A row's state for the table; `None` is "no row".
type S = Option<OperationState>;

/// One line of the table: from, event, to, who.
pub(crate) struct Transition {
    pub(crate) from: S,
    pub(crate) event: fn(Event) -> bool,
    pub(crate) to: S,
    pub(crate) who: &'static [Who],
    pub(crate) guard: &'static str,
}

const W: &[Who] = &[Who::Worker];
const R: &[Who] = &[Who::Worker, Who::Reconciliation];
const O: &[Who] = &[Who::Operator];
const SW: &[Who] = &[Who::Sweeper];
const FO: &[Who] = &[Who::Sweeper, Who::Operator];

macro_rules! t {
    ($from:expr, $event:pat, $to:expr, $who:expr, $guard:expr) => {
        Transition {
            from: $from,
            event: |e| matches!(e, $event),
            to: $to,
            who: $who,
            guard: $guard,
        }
    };
}

/// The table. A call that matches no row (a lost claim race, a fenced
/// completion) changes nothing; that is always allowed and not listed.
pub(crate) const TABLE: &[Transition] = &[
    t!(None, Event::Begin, Some(Pending), W, "new key"),
    t!(None, Event::BeginClaimed, Some(Sending), W, "new key; claims = 1, first_sent_at = now"),
    t!(Some(Pending), Event::Claim { .. }, Some(Sending), W,
        "maybe_applied_at unset, or the caller allows unknown"),
    t!(Some(Unknown), Event::Claim { allow_unknown: true }, Some(Sending), W,
        "caller decided a resend with the same key is safe"),
    t!(Some(Sending), Event::ExpireLease, Some(Unknown), R,
        "lease_expires_at <= now; token kept; maybe_applied_at set"),
    t!(Some(Sending), Event::Renew | Event::Checkpoint, Some(Sending), W, "token matches"),
    t!(Some(Sending), Event::CompleteSucceeded, Some(Succeeded), W, "token matches"),
    t!(Some(Unknown), Event::CompleteSucceeded, Some(Succeeded), W,
        "token kept since expiry (no newer claim)"),
    t!(Some(Pending), Event::CompleteSucceeded, Some(Succeeded), W,
        "token kept since a NotApplied resolution (no newer claim)"),
    t!(Some(Sending), Event::CompleteFailed, Some(Failed), W, "token matches"),
    t!(Some(Unknown), Event::CompleteFailed, Some(Failed), W, "token kept since expiry"),
    t!(Some(Pending), Event::CompleteFailed, Some(Failed), W,
        "token kept since a NotApplied resolution"),
    t!(Some(Sending), Event::CompleteUnknown, Some(Unknown), W, "token matches"),
    t!(Some(Unknown), Event::CompleteUnknown, Some(Unknown), W, "token kept since expiry"),
    t!(Some(Sending), Event::CompleteNotSent, Some(Pending), W, "maybe_applied_at unset"),
    t!(Some(Sending), Event::CompleteNotSent, Some(Unknown), W, "maybe_applied_at set"),
    t!(Some(Unknown), Event::CompleteNotSent, Some(Unknown), W,
        "token kept since expiry; maybe_applied_at set by the expiry"),
    t!(Some(Unknown), Event::ResolveSucceeded, Some(Succeeded), R, "found at the provider"),
    t!(Some(Sending), Event::ResolveSucceeded, Some(Succeeded), R,
        "lease expired; found at the provider"),
    t!(Some(Unknown), Event::ResolveNotApplied, Some(Pending), R,
        "positive proof of no effect; clears maybe_applied_at; token kept"),
    t!(Some(Sending), Event::ResolveNotApplied, Some(Pending), R,
        "lease expired; positive proof of no effect"),
    t!(Some(Pending), Event::Bump { .. }, Some(Superseded), O, "names its successor"),
    t!(Some(Failed), Event::Bump { .. }, Some(Superseded), O, "names its successor"),
    t!(Some(Unknown), Event::Bump { .. }, Some(Superseded), O, "names its successor"),
    t!(Some(Sending), Event::Bump { .. }, Some(Superseded), O, "lease expired"),
    t!(Some(Succeeded), Event::Bump { force: true }, Some(Superseded), O, "force"),
    t!(Some(Succeeded), Event::Purge, Some(Succeeded), SW, "updated_at < cutoff; body dropped"),
    t!(Some(Failed), Event::Purge, Some(Failed), SW, "updated_at < cutoff; body dropped"),
    t!(Some(Superseded), Event::Purge, Some(Superseded), SW, "updated_at < cutoff; body dropped"),
    t!(Some(Succeeded), Event::Forget, None, FO, "explicit deletion: a retry sends again"),
    t!(Some(Failed), Event::Forget, None, FO, "explicit deletion"),
    t!(Some(Superseded), Event::Forget, None, FO, "explicit deletion"),
];

/// Checks one observed change (`before` → `after`) made by `event` at `now`.
/// Returns the violated rule, if any. `I2` marks a violation of invariant I2.
pub(crate) fn check(
    event: Event,
    before: Option<&Operation>,
    after: Option<&Operation>,
    now: SystemTime,
) -> Result<(), String> {
    if before == after {
        return Ok(());
    }
    let from = before.map(|o| o.state);
    let to = after.map(|o| o.state);
    let listed = TABLE
        .iter()
        .any(|t| t.from == from && t.to == to && (t.event)(event));
    if !listed {
        return Err(format!(
            "transition {from:?} --{event:?}--> {to:?} is not in the table"
        ));
    }
    let (Some(b), Some(a)) = (before, after) else {
        return Ok(());
    };
    if (&b.key, &b.provider, &b.operation, &b.fingerprint, b.created_at)
        != (&a.key, &a.provider, &a.operation, &a.fingerprint, a.created_at)
    {
        return Err("identity columns changed".to_owned());
    }
    if b.first_sent_at.is_some() && a.first_sent_at != b.first_sent_at {
        return Err("first_sent_at changed once set".to_owned());
    }
    // I2: "may have taken effect" is kept until reconciliation proves the
    // effect absent (or an operator bumps, which keeps the row).
    if b.maybe_applied_at.is_some()
        && a.maybe_applied_at != b.maybe_applied_at
        && event != Event::ResolveNotApplied
    {
        return Err("I2: maybe_applied_at cleared or moved without a NotApplied resolution".into());
    }
    if b.maybe_applied_at.is_some() && to == Some(Pending) && event != Event::ResolveNotApplied {
        return Err("I2: a row that may have taken effect went back to pending".to_owned());
    }
    let settles_by_worker = matches!(
        event,
        Event::ExpireLease
            | Event::CompleteSucceeded
            | Event::CompleteUnknown
            | Event::CompleteNotSent
    );
    if settles_by_worker && matches!(to, Some(Unknown) | Some(Succeeded)) && a.maybe_applied_at.is_none() {
        return Err(format!("I2: {to:?} row without maybe_applied_at"));
    }
    if b.compacted_at.is_some() && a.compacted_at != b.compacted_at {
        return Err("compaction undone".to_owned());
    }
    if a.compacted_at.is_some() && b.compacted_at.is_none() && event != Event::Purge {
        return Err("compacted by something other than the sweep".to_owned());
    }
    if event == Event::Purge && (a.response_body.is_some() || a.provider_id != b.provider_id) {
        return Err("the sweep kept a body or lost the provider id".to_owned());
    }
    match event {
        Event::Claim { .. } if a.claims != b.claims + 1 => {
            return Err("a claim did not count".to_owned());
        }
        Event::Claim { .. } if a.first_sent_at.is_none() => {
            return Err("a claimed row has no first_sent_at".to_owned());
        }
        Event::ExpireLease if b.lease_expires_at.is_some_and(|t| t > now) => {
            return Err("a live lease was expired".to_owned());
        }
        Event::ResolveSucceeded | Event::ResolveNotApplied | Event::Bump { .. }
            if b.state == Sending && b.lease_expires_at.is_some_and(|t| t > now) =>
        {
            return Err("a live lease was taken over".to_owned());
        }
        Event::Bump { .. } if a.superseded_by.is_none() => {
            return Err("I5: a bump names no successor".to_owned());
        }
        Event::Bump { .. } => {
            let next = b.key.next_attempt().map_err(|e| e.to_string())?;
            if a.superseded_by.as_ref() != Some(&next) {
                return Err("I5: a bump names the wrong successor".to_owned());
            }
        }
        _ => {}
    }
    if b.superseded_by.is_some() && a.superseded_by != b.superseded_by {
        return Err("I5: the successor changed".to_owned());
    }
    Ok(())
}
