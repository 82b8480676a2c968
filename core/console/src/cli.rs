//! The `idem` command-line tool: the console's functions from a shell, with
//! text or `--json` output, and `serve` to run the web console.
//!
//! ```text
//! idem --db worker.db list                          # failed, unknown, expired sending
//! idem --db worker.db show joes-bikes_transactions_1042_v1
//! idem --db worker.db retry joes-bikes_transactions_1042_v1 [--confirm KEY] [--force]
//! idem --db postgres://… sweep --older-than-days 7
//! IDEM_CONSOLE_PASSWORD=… idem --db worker.db serve --listen 127.0.0.1:8080
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Parser, Subcommand};
use idem::IdempotencyKey;

use crate::error::ConsoleError;
use crate::ledger::{AttentionFilter, Ledger, RetryRequest};
use crate::login::SingleOperator;
use crate::view::{AuditEntry, OperationView};
use crate::{Role, parse_age, parse_states};

/// `idem`: see, retry and sweep idem ledger operations, or serve the console.
#[derive(Debug, Clone, Parser)]
#[command(name = "idem", version, about)]
pub struct Cli {
    /// The ledger: a SQLite file, a `sqlite:` URL or a `postgres://` URL.
    #[arg(long, env = "IDEM_DATABASE_URL", global = true, hide_env_values = true)]
    pub db: Option<String>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    /// Who is acting, for the audit table (default: `cli:$USER`).
    #[arg(long, global = true)]
    pub actor: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Clone, Subcommand)]
#[non_exhaustive]
pub enum Command {
    /// Operations needing attention (default: failed, unknown, and sending
    /// with an expired lease).
    List {
        /// Comma-separated states, for example `failed,unknown`.
        #[arg(long)]
        state: Option<String>,
        /// Only this provider.
        #[arg(long)]
        provider: Option<String>,
        /// Only this shop.
        #[arg(long)]
        shop: Option<String>,
        /// Only rows unchanged for at least this long (`30m`, `2h`, `7d`).
        #[arg(long)]
        older_than: Option<String>,
        /// Rows per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Page number, from 1.
        #[arg(long, default_value_t = 1)]
        page: u32,
    },
    /// One operation in full: its timeline and attempts (never its body).
    Show {
        /// The idempotency key.
        key: String,
    },
    /// Supersede KEY and print the next attempt's key (`v<n+1>`).
    Retry {
        /// The idempotency key.
        key: String,
        /// Needed when KEY succeeded.
        #[arg(long)]
        force: bool,
        /// The key typed again: needed when KEY is unknown or succeeded.
        #[arg(long)]
        confirm: Option<String>,
    },
    /// Compact old terminal rows: drop their stored bodies, keep the rows
    /// (key, state, fingerprint, provider id, successor).
    Sweep {
        /// Rows unchanged for more than this many days.
        #[arg(long, default_value_t = 7)]
        older_than_days: u64,
        /// Rows per batch.
        #[arg(long, default_value_t = 1000)]
        batch: u32,
    },
    /// Delete old terminal rows outright. A job redelivered with a deleted
    /// key sends again: only for keys whose jobs can never come back.
    Forget {
        /// Rows unchanged for more than this many days.
        #[arg(long)]
        older_than_days: u64,
        /// Rows per batch.
        #[arg(long, default_value_t = 1000)]
        batch: u32,
        /// Required: says you know a retry of a deleted key sends again.
        #[arg(long)]
        yes_delete_rows: bool,
    },
    /// The console's audit log, newest first.
    Audit {
        /// Only this key.
        #[arg(long)]
        key: Option<String>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Inbound records in flight or stuck.
    Inbound {
        /// Page number, from 1.
        #[arg(long, default_value_t = 1)]
        page: u32,
    },
    /// Serve the web console with a single-operator login. The password comes
    /// from `IDEM_CONSOLE_PASSWORD` (at least 8 characters).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// The operator's sign-in name.
        #[arg(long, default_value = "operator")]
        user: String,
        /// The operator may view but not act.
        #[arg(long)]
        read_only: bool,
        /// Mark the session cookie Secure (behind HTTPS).
        #[arg(long)]
        secure_cookie: bool,
    },
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// The console refused or failed.
    #[error(transparent)]
    Console(#[from] ConsoleError),
    /// Something the command line must provide is missing.
    #[error("{0}")]
    Usage(String),
    /// Serving failed.
    #[error("serve: {0}")]
    Serve(String),
}

impl CliError {
    fn code(&self) -> &'static str {
        match self {
            Self::Console(e) => e.code(),
            Self::Usage(_) => "usage",
            Self::Serve(_) => "serve",
        }
    }
}

fn actor(cli: &Cli) -> String {
    cli.actor.clone().unwrap_or_else(|| {
        format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "unknown".into())
        )
    })
}

fn key(text: &str) -> Result<IdempotencyKey, ConsoleError> {
    text.parse()
        .map_err(|e| ConsoleError::BadInput(format!("invalid key: {e}")))
}

fn json<T: serde::Serialize>(v: &T) -> String {
    let mut s =
        serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// Runs one command (not `serve`) against `ledger` and returns what it
/// prints.
///
/// # Errors
///
/// [`CliError`] for bad input and refused or failed actions (for example a
/// retry of an `unknown` operation without `--confirm KEY`).
pub async fn execute(ledger: &Ledger, cli: &Cli, now: SystemTime) -> Result<String, CliError> {
    let mut out = String::new();
    match &cli.command {
        Command::List {
            state,
            provider,
            shop,
            older_than,
            limit,
            page,
        } => {
            let filter = AttentionFilter {
                states: state
                    .as_deref()
                    .map(parse_states)
                    .transpose()?
                    .unwrap_or_default(),
                provider: provider.clone(),
                shop: shop.clone(),
                older_than: older_than.as_deref().map(parse_age).transpose()?,
                page: *page,
                per_page: (*limit).max(1),
            };
            let listed = ledger.attention(&filter, now).await?;
            if cli.json {
                return Ok(json(&listed));
            }
            table(&mut out, &listed.items);
            if listed.has_next {
                let _ = writeln!(out, "(more: --page {})", listed.page + 1);
            }
        }
        Command::Show { key: k } => {
            let t = ledger.timeline(&key(k)?, now).await?;
            if cli.json {
                return Ok(json(&t));
            }
            show(&mut out, &t.operation);
            let _ = writeln!(out, "timeline:");
            for e in &t.events {
                let _ = writeln!(out, "  {}  {}", e.at, e.what);
            }
            let _ = writeln!(out, "attempts:");
            table(&mut out, &t.attempts);
        }
        Command::Retry {
            key: k,
            force,
            confirm,
        } => {
            let k = key(k)?;
            let request = RetryRequest {
                confirm: confirm.clone(),
                force: *force,
            };
            let o = ledger.retry(&actor(cli), &k, &request, now).await?;
            if cli.json {
                return Ok(json(&o));
            }
            let _ = writeln!(out, "before:");
            table(&mut out, std::slice::from_ref(&o.before));
            if let Some(w) = &o.warning {
                let _ = writeln!(out, "warning: {w}");
            }
            let _ = writeln!(out, "after:");
            table(&mut out, std::slice::from_ref(&o.after));
            let _ = writeln!(
                out,
                "next attempt: {}\nStore it on the record and re-run the job; the worker sends it once.",
                o.next
            );
        }
        Command::Sweep {
            older_than_days,
            batch,
        } => {
            let age = Duration::from_secs(older_than_days.saturating_mul(86_400));
            let o = ledger.sweep(&actor(cli), age, *batch, now).await?;
            if cli.json {
                return Ok(json(&o));
            }
            let _ = writeln!(
                out,
                "swept {} terminal row(s) older than {older_than_days} day(s): bodies dropped, rows kept",
                o.rows
            );
        }
        Command::Forget {
            older_than_days,
            batch,
            yes_delete_rows,
        } => {
            if !yes_delete_rows {
                return Err(CliError::Usage(
                    "forget deletes rows outright, and a job redelivered with a deleted key sends \
                     again; pass --yes-delete-rows if its jobs can never come back (`sweep` keeps the rows)"
                        .into(),
                ));
            }
            let age = Duration::from_secs(older_than_days.saturating_mul(86_400));
            let o = ledger.forget(&actor(cli), age, *batch, now).await?;
            if cli.json {
                return Ok(json(&o));
            }
            let _ = writeln!(
                out,
                "deleted {} terminal row(s) older than {older_than_days} day(s)",
                o.rows
            );
        }
        Command::Audit { key: k, limit } => {
            let k = k.as_deref().map(key).transpose()?;
            let rows = ledger.audit(k.as_ref(), *limit).await?;
            if cli.json {
                return Ok(json(&rows));
            }
            audit(&mut out, &rows);
        }
        Command::Inbound { page } => {
            let p = ledger.inbound(*page, 0, now).await?;
            if cli.json {
                return Ok(json(&p));
            }
            let _ = writeln!(
                out,
                "{:<24} {:<24} {:<40} {:<10} age",
                "endpoint", "actor", "client key", "state"
            );
            for r in &p.items {
                let _ = writeln!(
                    out,
                    "{:<24} {:<24} {:<40} {:<10} {}",
                    r.endpoint,
                    r.actor,
                    r.key,
                    if r.stuck { "stuck" } else { "in flight" },
                    r.age
                );
            }
            if p.items.is_empty() {
                let _ = writeln!(out, "(none)");
            }
        }
        Command::Serve { .. } => {
            return Err(CliError::Usage(
                "serve runs from the binary, not execute()".into(),
            ));
        }
    }
    Ok(out)
}

/// The binary's whole run: parse the arguments, open the ledger, run the
/// command (or serve), print, and return the exit status.
pub async fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = run(&cli).await;
    match result {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            if cli.json {
                eprint!(
                    "{}",
                    json(&serde_json::json!({ "error": e.to_string(), "code": e.code() }))
                );
            } else {
                eprintln!("idem: {e}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> Result<String, CliError> {
    let db = cli.db.as_deref().ok_or_else(|| {
        CliError::Usage("no ledger given: pass --db or set IDEM_DATABASE_URL".into())
    })?;
    let ledger = Ledger::open(db).await?;
    if let Command::Serve {
        listen,
        user,
        read_only,
        secure_cookie,
    } = &cli.command
    {
        let password = std::env::var("IDEM_CONSOLE_PASSWORD").map_err(|_| {
            CliError::Usage("serve needs IDEM_CONSOLE_PASSWORD (the operator's password)".into())
        })?;
        let role = if *read_only {
            Role::Viewer
        } else {
            Role::Operator
        };
        let account = SingleOperator::new(user.clone(), password, role)
            .map_err(CliError::Usage)?
            .secure_cookie(*secure_cookie);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| CliError::Serve(format!("cannot listen on {listen}: {e}")))?;
        eprintln!("idem console on http://{listen}/ (sign in as {user})");
        axum::serve(listener, crate::login::app(ledger, account))
            .with_graceful_shutdown(async {
                let _ = tokio::signal::ctrl_c().await;
            })
            .await
            .map_err(|e| CliError::Serve(e.to_string()))?;
        return Ok(String::new());
    }
    execute(&ledger, cli, SystemTime::now()).await
}

fn table(out: &mut String, ops: &[OperationView]) {
    let _ = writeln!(
        out,
        "{:<48} {:<8} {:<26} {:<11} {:>6} {:>6}  note",
        "key", "provider", "operation", "state", "claims", "status"
    );
    for op in ops {
        let _ = writeln!(
            out,
            "{:<48} {:<8} {:<26} {:<11} {:>6} {:>6}  {}",
            op.key,
            op.provider,
            op.operation,
            if op.lease_expired {
                "sending*"
            } else {
                op.state.as_str()
            },
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

fn show(out: &mut String, op: &OperationView) {
    let o = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let _ = writeln!(out, "key:            {}", op.key);
    let _ = writeln!(out, "provider:       {}", op.provider);
    let _ = writeln!(out, "operation:      {}", op.operation);
    let _ = writeln!(out, "state:          {}", op.state);
    let _ = writeln!(out, "claims:         {}", op.claims);
    let _ = writeln!(out, "recorded:       {}", op.created_at);
    let _ = writeln!(out, "first sent:     {}", o(op.first_sent_at.as_deref()));
    let _ = writeln!(out, "updated:        {}", op.updated_at);
    let _ = writeln!(out, "lease until:    {}", o(op.lease_expires_at.as_deref()));
    let _ = writeln!(
        out,
        "status:         {}",
        op.response_status
            .map_or_else(|| "-".to_owned(), |s| s.to_string())
    );
    let _ = writeln!(out, "provider id:    {}", o(op.provider_id.as_deref()));
    let _ = writeln!(
        out,
        "stored body:    {}",
        op.response_body_len
            .map_or_else(|| "-".to_owned(), |n| format!("{n} bytes (not shown)"))
    );
    let _ = writeln!(out, "note:           {}", o(op.note.as_deref()));
    let _ = writeln!(out, "checkpoint:     {}", o(op.checkpoint.as_deref()));
    if let Some(by) = &op.superseded_by {
        let _ = writeln!(out, "superseded by:  {by}");
    }
}

fn audit(out: &mut String, rows: &[AuditEntry]) {
    let _ = writeln!(
        out,
        "{:<20} {:<16} {:<9} {:<44} {:<10} {:<10} {:<12} detail",
        "at", "actor", "action", "key", "before", "after", "outcome"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<20} {:<16} {:<9} {:<44} {:<10} {:<10} {:<12} {}",
            r.at,
            r.actor,
            r.action,
            r.key.as_deref().unwrap_or("-"),
            r.state_before.as_deref().unwrap_or("-"),
            r.state_after.as_deref().unwrap_or("-"),
            r.outcome,
            r.detail.as_deref().unwrap_or("")
        );
    }
    if rows.is_empty() {
        let _ = writeln!(out, "(none)");
    }
}
