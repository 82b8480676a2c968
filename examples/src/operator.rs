//! The operator's view of the ledger: list problem operations, show one,
//! retry one with the next attempt's key, sweep old rows.
//!
//! The `operator_retry` binary is a thin shell around [`run`]; tests call
//! [`run`] directly.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use idem::ledger::{ListFilter, PgStore, SqliteStore};
use idem::{IdempotencyKey, LedgerStore, Operation, OperationState, StoreError};

/// What went wrong with an operator command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorError {
    /// The command line was not understood.
    #[error("{0}\n\n{USAGE}")]
    Usage(String),
    /// A key argument is not a valid idempotency key.
    #[error("invalid key: {0}")]
    Key(#[from] idem::KeyError),
    /// The ledger refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The command-line help.
pub const USAGE: &str = "usage: operator_retry --db <sqlite-file|postgres-url> <command>
commands:
  list [--state failed,unknown] [--provider NAME] [--limit N]
                         operations needing attention (default: failed and unknown)
  show KEY               one operation in full (no bodies)
  retry KEY [--force]    supersede KEY and print the next attempt's key
                         (--force is needed when KEY succeeded)
  sweep [--older-than-days N] [--batch N]
                         delete succeeded/failed/superseded rows older than N days (default 7)
The database may also come from IDEM_DATABASE_URL.";

/// Opens a ledger from a PostgreSQL URL or a SQLite file path / `sqlite:` URL.
///
/// # Errors
///
/// When the database cannot be opened or migrated.
pub async fn open_store(db: &str) -> Result<Arc<dyn LedgerStore>, StoreError> {
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(db).await?))
    } else if db.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(db).await?))
    } else {
        Ok(Arc::new(SqliteStore::open(db).await?))
    }
}

/// Runs one command (arguments after `--db`) against `store` and returns
/// what it prints.
///
/// # Errors
///
/// [`OperatorError`] for bad arguments, bad keys and refused changes (for
/// example a bump of an operation that succeeded, without `--force`).
pub async fn run(
    store: &dyn LedgerStore,
    args: &[String],
    now: SystemTime,
) -> Result<String, OperatorError> {
    let mut out = String::new();
    let (command, rest) = args
        .split_first()
        .ok_or_else(|| OperatorError::Usage("no command given".into()))?;
    match command.as_str() {
        "list" => {
            let mut filter = ListFilter {
                states: vec![OperationState::Failed, OperationState::Unknown],
                ..ListFilter::default()
            };
            let mut it = rest.iter();
            while let Some(flag) = it.next() {
                let value = it
                    .next()
                    .ok_or_else(|| OperatorError::Usage(format!("{flag} needs a value")))?;
                match flag.as_str() {
                    "--state" => filter.states = parse_states(value)?,
                    "--provider" => filter.provider = Some(value.clone()),
                    "--limit" => {
                        filter.limit = Some(value.parse().map_err(|_| {
                            OperatorError::Usage(format!("--limit takes a number, not {value:?}"))
                        })?);
                    }
                    other => return Err(OperatorError::Usage(format!("unknown flag {other}"))),
                }
            }
            let ops = store.list(&filter).await?;
            table(&mut out, &ops);
        }
        "show" => {
            let key = one_key(rest)?;
            match store.get(&key).await? {
                Some(op) => show(&mut out, &op),
                None => return Err(StoreError::NotFound { key }.into()),
            }
        }
        "retry" => {
            let key = one_key(&rest[..rest.len().min(1)])?;
            let force = match rest.get(1).map(String::as_str) {
                None => false,
                Some("--force") => true,
                Some(other) => return Err(OperatorError::Usage(format!("unknown flag {other}"))),
            };
            let before = store
                .get(&key)
                .await?
                .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
            let _ = writeln!(out, "before:");
            table(&mut out, std::slice::from_ref(&before));
            if before.state == OperationState::Unknown {
                let _ = writeln!(
                    out,
                    "warning: {key} may have taken effect; bumping sends the write again under a new key.\n\
                     Reconcile with {} first unless you have checked there.",
                    before.provider
                );
            }
            let next = store.bump(&key, force, now).await?;
            let after = store
                .get(&key)
                .await?
                .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
            let _ = writeln!(out, "after:");
            table(&mut out, std::slice::from_ref(&after));
            let _ = writeln!(
                out,
                "next attempt: {next}\nStore it on the record and re-run the job; the worker sends it once."
            );
        }
        "sweep" => {
            let mut days = 7u64;
            let mut batch = 1000u32;
            let mut it = rest.iter();
            while let Some(flag) = it.next() {
                let value = it
                    .next()
                    .ok_or_else(|| OperatorError::Usage(format!("{flag} needs a value")))?;
                let bad = || OperatorError::Usage(format!("{flag} takes a number, not {value:?}"));
                match flag.as_str() {
                    "--older-than-days" => days = value.parse().map_err(|_| bad())?,
                    "--batch" => batch = value.parse().map_err(|_| bad())?,
                    other => return Err(OperatorError::Usage(format!("unknown flag {other}"))),
                }
            }
            let cut = now
                .checked_sub(Duration::from_secs(days.saturating_mul(86_400)))
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let mut total = 0;
            loop {
                let n = store.purge(cut, batch.max(1)).await?;
                total += n;
                if n < u64::from(batch.max(1)) {
                    break;
                }
            }
            let _ = writeln!(
                out,
                "swept {total} terminal row(s) older than {days} day(s)"
            );
        }
        other => return Err(OperatorError::Usage(format!("unknown command {other:?}"))),
    }
    Ok(out)
}

fn one_key(rest: &[String]) -> Result<IdempotencyKey, OperatorError> {
    match rest {
        [key] => Ok(key.parse()?),
        _ => Err(OperatorError::Usage("expected exactly one KEY".into())),
    }
}

fn parse_states(value: &str) -> Result<Vec<OperationState>, OperatorError> {
    value
        .split(',')
        .map(|s| {
            s.trim()
                .parse::<OperationState>()
                .map_err(|_| OperatorError::Usage(format!("unknown state {s:?}")))
        })
        .collect()
}

fn table(out: &mut String, ops: &[Operation]) {
    let _ = writeln!(
        out,
        "{:<48} {:<8} {:<26} {:<11} {:>6} {:>6}  note",
        "key", "provider", "operation", "state", "claims", "status"
    );
    for op in ops {
        let _ = writeln!(
            out,
            "{:<48} {:<8} {:<26} {:<11} {:>6} {:>6}  {}",
            op.key.as_str(),
            op.provider,
            op.operation,
            op.state.as_str(),
            op.claims,
            op.response_status
                .map_or_else(|| "-".to_owned(), |s| s.to_string()),
            op.note.as_deref().unwrap_or("")
        );
    }
    if ops.is_empty() {
        let _ = writeln!(out, "(none)");
    }
}

fn show(out: &mut String, op: &Operation) {
    let when = |t: Option<SystemTime>| {
        t.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or_else(|| "-".to_owned(), |d| format!("{} (unix s)", d.as_secs()))
    };
    let _ = writeln!(out, "key:            {}", op.key);
    let _ = writeln!(out, "provider:       {}", op.provider);
    let _ = writeln!(out, "operation:      {}", op.operation);
    let _ = writeln!(out, "state:          {}", op.state);
    let _ = writeln!(out, "claims:         {}", op.claims);
    let _ = writeln!(out, "first sent:     {}", when(op.first_sent_at));
    let _ = writeln!(out, "updated:        {}", when(Some(op.updated_at)));
    let _ = writeln!(out, "lease until:    {}", when(op.lease_expires_at));
    let _ = writeln!(
        out,
        "status:         {}",
        op.response_status
            .map_or_else(|| "-".to_owned(), |s| s.to_string())
    );
    let _ = writeln!(
        out,
        "stored body:    {}",
        op.response_body.as_ref().map_or_else(
            || "-".to_owned(),
            |b| format!("{} bytes (not shown)", b.len())
        )
    );
    let _ = writeln!(out, "note:           {}", op.note.as_deref().unwrap_or("-"));
    let _ = writeln!(
        out,
        "checkpoint:     {}",
        op.checkpoint.as_deref().unwrap_or("-")
    );
    if let Some(by) = &op.superseded_by {
        let _ = writeln!(out, "superseded by:  {by}");
    }
}
