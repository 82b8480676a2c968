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
    pub(crate) name: &'static str,
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
    ($from:expr, $event:pat, $name:expr, $to:expr, $who:expr, $guard:expr) => {
        Transition {
            from: $from,
            event: |e| matches!(e, $event),
            name: $name,
            to: $to,
            who: $who,
            guard: $guard,
        }
    };
}

/// The table. A call that matches no row (a lost claim race, a fenced
/// completion) changes nothing; that is always allowed and not listed.
pub(crate) const TABLE: &[Transition] = &[
    t!(
        None,
        Event::Begin,
        "begin",
        Some(Pending),
        W,
        "the key is new"
    ),
    t!(
        None,
        Event::BeginClaimed,
        "begin_claimed",
        Some(Sending),
        W,
        "the key is new; claims = 1, first_sent_at = now, new lease token"
    ),
    t!(
        Some(Pending),
        Event::Claim { .. },
        "claim",
        Some(Sending),
        W,
        "maybe_applied_at unset, or the caller allows unknown; claims + 1; first_sent_at kept or set; new token"
    ),
    t!(
        Some(Unknown),
        Event::Claim {
            allow_unknown: true
        },
        "claim (pending or unknown)",
        Some(Sending),
        W,
        "the caller decided a resend with the same key is safe (native key inside its window, idempotent verb, or after reconciliation)"
    ),
    t!(
        Some(Sending),
        Event::ExpireLease,
        "expire_lease",
        Some(Unknown),
        R,
        "lease_expires_at <= now; the token is kept; maybe_applied_at = earliest of (kept, first_sent_at, now)"
    ),
    t!(
        Some(Sending),
        Event::Renew | Event::Checkpoint,
        "renew, checkpoint",
        Some(Sending),
        W,
        "the token matches"
    ),
    t!(
        Some(Sending),
        Event::CompleteSucceeded,
        "complete(Succeeded)",
        Some(Succeeded),
        W,
        "the token matches; maybe_applied_at set"
    ),
    t!(
        Some(Unknown),
        Event::CompleteSucceeded,
        "complete(Succeeded)",
        Some(Succeeded),
        W,
        "the token was kept since the expiry (no newer claim): a late answer"
    ),
    t!(
        Some(Pending),
        Event::CompleteSucceeded,
        "complete(Succeeded)",
        Some(Succeeded),
        W,
        "the token was kept since a NotApplied resolution (no newer claim): a late answer"
    ),
    t!(
        Some(Sending),
        Event::CompleteFailed,
        "complete(Failed)",
        Some(Failed),
        W,
        "the token matches"
    ),
    t!(
        Some(Unknown),
        Event::CompleteFailed,
        "complete(Failed)",
        Some(Failed),
        W,
        "the token was kept since the expiry"
    ),
    t!(
        Some(Pending),
        Event::CompleteFailed,
        "complete(Failed)",
        Some(Failed),
        W,
        "the token was kept since a NotApplied resolution"
    ),
    t!(
        Some(Sending),
        Event::CompleteUnknown,
        "complete(Unknown)",
        Some(Unknown),
        W,
        "the token matches; maybe_applied_at set"
    ),
    t!(
        Some(Unknown),
        Event::CompleteUnknown,
        "complete(Unknown)",
        Some(Unknown),
        W,
        "the token was kept since the expiry"
    ),
    t!(
        Some(Sending),
        Event::CompleteNotSent,
        "complete(NotSent)",
        Some(Pending),
        W,
        "the token matches; maybe_applied_at unset"
    ),
    t!(
        Some(Sending),
        Event::CompleteNotSent,
        "complete(NotSent)",
        Some(Unknown),
        W,
        "the token matches; maybe_applied_at set (an earlier attempt may have taken effect)"
    ),
    t!(
        Some(Unknown),
        Event::CompleteNotSent,
        "complete(NotSent)",
        Some(Unknown),
        W,
        "the token was kept since the expiry (which set maybe_applied_at)"
    ),
    t!(
        Some(Unknown),
        Event::ResolveSucceeded,
        "resolve(Succeeded)",
        Some(Succeeded),
        R,
        "found at the provider; the token is dropped"
    ),
    t!(
        Some(Sending),
        Event::ResolveSucceeded,
        "resolve(Succeeded)",
        Some(Succeeded),
        R,
        "the lease expired; found at the provider"
    ),
    t!(
        Some(Unknown),
        Event::ResolveNotApplied,
        "resolve(NotApplied)",
        Some(Pending),
        R,
        "positive proof of no effect; clears maybe_applied_at; the token is kept"
    ),
    t!(
        Some(Sending),
        Event::ResolveNotApplied,
        "resolve(NotApplied)",
        Some(Pending),
        R,
        "the lease expired; positive proof of no effect"
    ),
    t!(
        Some(Pending),
        Event::Bump { .. },
        "bump",
        Some(Superseded),
        O,
        "superseded_by = the next attempt's key"
    ),
    t!(
        Some(Failed),
        Event::Bump { .. },
        "bump",
        Some(Superseded),
        O,
        "superseded_by = the next attempt's key"
    ),
    t!(
        Some(Unknown),
        Event::Bump { .. },
        "bump",
        Some(Superseded),
        O,
        "superseded_by = the next attempt's key"
    ),
    t!(
        Some(Sending),
        Event::Bump { .. },
        "bump",
        Some(Superseded),
        O,
        "the lease expired"
    ),
    t!(
        Some(Succeeded),
        Event::Bump { force: true },
        "bump (force)",
        Some(Superseded),
        O,
        "forced: repeats a completed side effect under the new key"
    ),
    t!(
        Some(Succeeded),
        Event::Purge,
        "purge",
        Some(Succeeded),
        SW,
        "updated_at < cutoff, not yet compacted: body dropped, compacted_at set"
    ),
    t!(
        Some(Failed),
        Event::Purge,
        "purge",
        Some(Failed),
        SW,
        "updated_at < cutoff, not yet compacted: body dropped, compacted_at set"
    ),
    t!(
        Some(Superseded),
        Event::Purge,
        "purge",
        Some(Superseded),
        SW,
        "updated_at < cutoff, not yet compacted: body dropped, compacted_at set"
    ),
    t!(
        Some(Succeeded),
        Event::Forget,
        "forget",
        None,
        FO,
        "updated_at < cutoff; explicit deletion: a retry of the key sends again"
    ),
    t!(
        Some(Failed),
        Event::Forget,
        "forget",
        None,
        FO,
        "updated_at < cutoff; explicit deletion"
    ),
    t!(
        Some(Superseded),
        Event::Forget,
        "forget",
        None,
        FO,
        "updated_at < cutoff; explicit deletion"
    ),
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
    if (
        &b.key,
        &b.provider,
        &b.operation,
        &b.fingerprint,
        b.created_at,
    ) != (
        &a.key,
        &a.provider,
        &a.operation,
        &a.fingerprint,
        a.created_at,
    ) {
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
    if settles_by_worker
        && matches!(to, Some(Unknown) | Some(Succeeded))
        && a.maybe_applied_at.is_none()
    {
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

fn state_cell(s: S) -> String {
    s.map_or_else(|| "(no row)".to_owned(), |s| format!("`{s}`"))
}

fn who_cell(who: &[Who]) -> String {
    who.iter()
        .map(|w| match w {
            Who::Worker => "executor/worker",
            Who::Sweeper => "sweeper",
            Who::Reconciliation => "reconciliation",
            Who::Operator => "operator",
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The table line of `t` as written in adr/0002-ledger-states.md.
pub(crate) fn adr_line(t: &Transition) -> String {
    format!(
        "| {} | `{}` | {} | {} | {} |",
        state_cell(t.from),
        t.name,
        t.guard,
        state_cell(t.to),
        who_cell(t.who)
    )
}

#[test]
fn the_adr_states_the_table_the_simulator_checks() {
    let adr = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../adr/0002-ledger-states.md"
    ))
    .expect("adr/0002-ledger-states.md");
    let lines: Vec<&str> = adr.lines().filter(|l| l.starts_with("| ")).collect();
    for t in TABLE {
        let line = adr_line(t);
        assert!(lines.contains(&line.as_str()), "the ADR lacks: {line}");
    }
    let rows = lines
        .iter()
        .filter(|l| l.contains("| `") && l.matches(" | ").count() == 4)
        .count();
    assert_eq!(
        rows,
        TABLE.len(),
        "the ADR's transition table has rows the simulator does not check"
    );
}
