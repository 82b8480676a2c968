//! The console's functions over one ledger: what the pages, the JSON API and
//! the CLI all call.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use idem::ledger::{PgStore, SqliteStore};
use idem::reconcile::{Reconcile, ReconcileVerdict};
use idem::{IdempotencyKey, LedgerStore, Operation, OperationState, StoreError};
use serde::Serialize;
use sqlx::{PgPool, Row as _, SqlitePool};

use crate::error::ConsoleError;
use crate::view::{AuditEntry, InboundView, OperationView, TimelineEvent, millis, to_millis};

/// The most rows one page of a listing holds.
pub const MAX_PER_PAGE: u32 = 200;
/// Rows per page when the caller does not say.
pub const DEFAULT_PER_PAGE: u32 = 25;
/// The most attempts of one record a timeline walks (`v1`, `v2`, …).
const MAX_ATTEMPTS_SHOWN: u32 = 50;

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A value bound into a console query.
enum Arg {
    Text(String),
    Int(i64),
}

/// One ledger (SQLite or PostgreSQL) with the console's audit table and the
/// registered [`Reconcile`] implementations.
///
/// Every change goes through [`LedgerStore`]; the console reads the ledger's
/// and the inbound store's tables directly only for the listings the store
/// traits do not offer (filter by shop and age, pagination, inbound records in
/// flight), and writes only its own table `idem_console_audit`.
#[derive(Clone)]
pub struct Ledger {
    store: Arc<dyn LedgerStore>,
    db: Db,
    reconcilers: BTreeMap<String, Arc<dyn Reconcile>>,
}

impl fmt::Debug for Ledger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ledger")
            .field("store", &self.store)
            .field("reconcilers", &self.reconcilers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

const SQLITE_AUDIT: &str = "CREATE TABLE IF NOT EXISTS idem_console_audit (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,
    actor        TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    key          TEXT,
    state_before TEXT,
    state_after  TEXT,
    outcome      TEXT    NOT NULL,
    detail       TEXT
)";
const PG_AUDIT: &str = "CREATE TABLE IF NOT EXISTS idem_console_audit (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT   NOT NULL,
    action       TEXT   NOT NULL,
    key          TEXT,
    state_before TEXT,
    state_after  TEXT,
    outcome      TEXT   NOT NULL,
    detail       TEXT
)";
const AUDIT_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS idem_console_audit_key ON idem_console_audit (key, id)";

/// Which operations a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttentionFilter {
    /// Only these states; empty means the three that need attention
    /// (`failed`, `unknown`, `sending`). `sending` rows are listed only when
    /// their lease has run out: a live lease is a worker at work.
    pub states: Vec<OperationState>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Only keys of this shop (the key's first part).
    pub shop: Option<String>,
    /// Only rows unchanged for at least this long.
    pub older_than: Option<Duration>,
    /// Page number, from 1 (0 is read as 1).
    pub page: u32,
    /// Rows per page ([`DEFAULT_PER_PAGE`] when 0, at most [`MAX_PER_PAGE`]).
    pub per_page: u32,
}

impl AttentionFilter {
    /// The states listed: the given ones, or the three that need attention.
    pub fn effective_states(&self) -> Vec<OperationState> {
        if self.states.is_empty() {
            vec![
                OperationState::Failed,
                OperationState::Unknown,
                OperationState::Sending,
            ]
        } else {
            self.states.clone()
        }
    }

    /// The page number, from 1.
    pub fn page(&self) -> u32 {
        self.page.max(1)
    }

    /// Rows per page, within bounds.
    pub fn per_page(&self) -> u32 {
        if self.per_page == 0 {
            DEFAULT_PER_PAGE
        } else {
            self.per_page.min(MAX_PER_PAGE)
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// This page's number, from 1.
    pub page: u32,
    /// Rows per page.
    pub per_page: u32,
    /// Whether a next page exists.
    pub has_next: bool,
}

/// An operation with everything the console knows about it.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    /// The operation itself.
    pub operation: OperationView,
    /// Every attempt of the same record (`v1`, `v2`, …), this one included.
    pub attempts: Vec<OperationView>,
    /// What happened, oldest first.
    pub events: Vec<TimelineEvent>,
    /// The console actions taken on this key, newest first.
    pub audit: Vec<AuditEntry>,
    /// Whether a [`Reconcile`] implementation is registered for its provider.
    pub reconcilable: bool,
}

/// What an operator asks of a retry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryRequest {
    /// The key typed again by the operator. Required when the operation is
    /// `unknown` (the write may already have happened) or `succeeded`.
    pub confirm: Option<String>,
    /// Required when the operation `succeeded`.
    pub force: bool,
}

/// A retry that was made.
#[derive(Debug, Clone, Serialize)]
pub struct RetryOutcome {
    /// The operation before.
    pub before: OperationView,
    /// The operation after (`superseded`).
    pub after: OperationView,
    /// The next attempt's key: store it on the record and re-run the job.
    pub next: String,
    /// The warning that applied (an `unknown` or `succeeded` row), if any.
    pub warning: Option<String>,
}

/// A reconciliation that ran.
#[derive(Debug, Clone, Serialize)]
pub struct ReconcileOutcome {
    /// The operation before.
    pub before: OperationView,
    /// The operation after.
    pub after: OperationView,
    /// `applied`, `not_applied` or `undetermined`.
    pub verdict: &'static str,
    /// The provider's id for the object, when found.
    pub provider_id: Option<String>,
    /// What the provider's answer showed, in words.
    pub note: String,
}

/// A sweep (or a forget) that ran.
#[derive(Debug, Clone, Serialize)]
pub struct SweepOutcome {
    /// How many rows were compacted (sweep) or deleted (forget).
    pub rows: u64,
    /// Rows last changed before this time were eligible (RFC 3339).
    pub cutoff: String,
}

/// The warning shown before retrying an `unknown` operation.
pub fn unknown_warning(op: &Operation) -> String {
    format!(
        "{} may already have happened at {}: the request was sent and its answer was lost. \
         Retrying sends the write again under a new key, so the customer may get it twice. \
         Reconcile with {} first unless you have checked there.",
        op.key, op.provider, op.provider
    )
}

/// Whether retrying `op` needs its key typed again because the write may
/// already have happened: `unknown` rows, `sending` rows whose worker died,
/// and any other row the ledger marks as possibly applied
/// ([`Operation::may_have_taken_effect`]), except `succeeded` ones (which
/// need force and the typed key) and `failed` ones (the provider refused).
pub fn needs_typed_confirmation(op: &Operation) -> bool {
    match op.state {
        OperationState::Unknown | OperationState::Sending => true,
        OperationState::Succeeded | OperationState::Failed | OperationState::Superseded => false,
        _ => op.may_have_taken_effect(),
    }
}

/// The warning shown before retrying a `succeeded` operation.
pub fn succeeded_warning(op: &Operation) -> String {
    format!(
        "{} succeeded at {}. Retrying makes the write happen a second time.",
        op.key, op.provider
    )
}

impl Ledger {
    /// A console over a SQLite ledger; creates the audit table if needed.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::Database`] when the table cannot be created.
    pub async fn sqlite(store: SqliteStore) -> Result<Self, ConsoleError> {
        let pool = store.pool().clone();
        sqlx::query(SQLITE_AUDIT).execute(&pool).await?;
        sqlx::query(AUDIT_INDEX).execute(&pool).await?;
        Ok(Self {
            store: Arc::new(store),
            db: Db::Sqlite(pool),
            reconcilers: BTreeMap::new(),
        })
    }

    /// A console over a PostgreSQL ledger; creates the audit table if needed.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::Database`] when the table cannot be created.
    pub async fn postgres(store: PgStore) -> Result<Self, ConsoleError> {
        let pool = store.pool().clone();
        sqlx::query(PG_AUDIT).execute(&pool).await?;
        sqlx::query(AUDIT_INDEX).execute(&pool).await?;
        Ok(Self {
            store: Arc::new(store),
            db: Db::Postgres(pool),
            reconcilers: BTreeMap::new(),
        })
    }

    /// Opens a ledger from a PostgreSQL URL (`postgres://…`), a `sqlite:` URL
    /// or a SQLite file path, migrating it as the stores do.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::Store`] when the database cannot be opened or
    /// migrated.
    pub async fn open(db: &str) -> Result<Self, ConsoleError> {
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            Self::postgres(PgStore::connect(db).await?).await
        } else if db.starts_with("sqlite:") {
            Self::sqlite(SqliteStore::connect(db).await?).await
        } else {
            Self::sqlite(SqliteStore::open(db).await?).await
        }
    }

    /// Registers the reconciliation for one provider (keyed by
    /// [`Reconcile::provider`]); a later one for the same provider replaces
    /// it.
    #[must_use]
    pub fn with_reconciler(mut self, reconciler: Arc<dyn Reconcile>) -> Self {
        self.reconcilers
            .insert(reconciler.provider().to_owned(), reconciler);
        self
    }

    /// The providers that have a registered reconciliation.
    pub fn reconcilable_providers(&self) -> Vec<String> {
        self.reconcilers.keys().cloned().collect()
    }

    /// The underlying store.
    pub fn store(&self) -> &dyn LedgerStore {
        &*self.store
    }

    async fn keys(&self, sql: &str, args: Vec<Arg>) -> Result<Vec<String>, ConsoleError> {
        macro_rules! run {
            ($pool:expr) => {{
                let mut q = sqlx::query(sql);
                for a in args {
                    q = match a {
                        Arg::Text(s) => q.bind(s),
                        Arg::Int(i) => q.bind(i),
                    };
                }
                q.fetch_all($pool)
                    .await?
                    .iter()
                    .map(|r| r.try_get::<String, _>(0))
                    .collect::<Result<Vec<_>, _>>()?
            }};
        }
        Ok(match &self.db {
            Db::Sqlite(pool) => run!(pool),
            Db::Postgres(pool) => run!(pool),
        })
    }

    fn placeholder(&self, n: usize) -> String {
        match self.db {
            Db::Sqlite(_) => "?".to_owned(),
            Db::Postgres(_) => format!("${n}"),
        }
    }

    /// Operations needing attention (or the states the filter names), most
    /// recently changed first.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::BadInput`] for a shop that is not a valid key part;
    /// [`ConsoleError::Database`] or [`ConsoleError::Store`] when the ledger
    /// fails.
    pub async fn attention(
        &self,
        filter: &AttentionFilter,
        now: SystemTime,
    ) -> Result<Page<OperationView>, ConsoleError> {
        let mut args = Vec::new();
        let mut clauses = Vec::new();
        let states = filter.effective_states();
        let mut ors = Vec::new();
        let plain: Vec<String> = states
            .iter()
            .filter(|s| **s != OperationState::Sending)
            .map(|s| format!("'{}'", s.as_str()))
            .collect();
        if !plain.is_empty() {
            ors.push(format!("state IN ({})", plain.join(", ")));
        }
        if states.contains(&OperationState::Sending) {
            args.push(Arg::Int(to_millis(now)));
            ors.push(format!(
                "(state = 'sending' AND (lease_expires_at IS NULL OR lease_expires_at <= {}))",
                self.placeholder(args.len())
            ));
        }
        clauses.push(format!("({})", ors.join(" OR ")));
        if let Some(provider) = filter.provider.as_deref().filter(|p| !p.is_empty()) {
            args.push(Arg::Text(provider.to_owned()));
            clauses.push(format!("provider = {}", self.placeholder(args.len())));
        }
        if let Some(shop) = filter.shop.as_deref().filter(|s| !s.is_empty()) {
            // Validates the shop with the key grammar: it then holds no LIKE
            // wildcard, and `_` (the separator) is escaped.
            IdempotencyKey::new(shop, "t", "r", 1)
                .map_err(|e| ConsoleError::BadInput(format!("shop {shop:?}: {e}")))?;
            args.push(Arg::Text(format!("{shop}\\_%")));
            clauses.push(format!(
                "key LIKE {} ESCAPE '\\'",
                self.placeholder(args.len())
            ));
        }
        if let Some(age) = filter.older_than {
            let cut = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
            args.push(Arg::Int(to_millis(cut)));
            clauses.push(format!("updated_at <= {}", self.placeholder(args.len())));
        }
        let per_page = filter.per_page();
        let offset = i64::from(filter.page() - 1) * i64::from(per_page);
        args.push(Arg::Int(i64::from(per_page) + 1));
        let limit = self.placeholder(args.len());
        args.push(Arg::Int(offset));
        let off = self.placeholder(args.len());
        let sql = format!(
            "SELECT key FROM idem_operations WHERE {} ORDER BY updated_at DESC, key LIMIT {limit} OFFSET {off}",
            clauses.join(" AND ")
        );
        let mut keys = self.keys(&sql, args).await?;
        let has_next = keys.len() > per_page as usize;
        keys.truncate(per_page as usize);
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            let key: IdempotencyKey = key.parse().map_err(|e| {
                ConsoleError::Store(StoreError::Corrupt(format!("stored key: {e}")))
            })?;
            // A row removed between the two reads is simply not listed.
            if let Some(op) = self.store.get(&key).await? {
                items.push(OperationView::new(&op, now));
            }
        }
        Ok(Page {
            items,
            page: filter.page(),
            per_page,
            has_next,
        })
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Operation, ConsoleError> {
        self.store
            .get(key)
            .await?
            .ok_or_else(|| ConsoleError::NotFound(key.to_string()))
    }

    /// One operation: its row, every attempt of its record, what happened
    /// and the console actions taken on it. Bodies are never included.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::NotFound`] when the key has no row.
    pub async fn timeline(
        &self,
        key: &IdempotencyKey,
        now: SystemTime,
    ) -> Result<Timeline, ConsoleError> {
        let op = self.get(key).await?;
        let mut attempts = Vec::new();
        // Earlier attempts of the same record, then later ones while they exist.
        let first = key.attempt().saturating_sub(MAX_ATTEMPTS_SHOWN).max(1);
        let mut n = first;
        while n - first < 2 * MAX_ATTEMPTS_SHOWN {
            let Ok(k) = IdempotencyKey::new(key.shop(), key.table(), key.row(), n) else {
                break;
            };
            match self.store.get(&k).await? {
                Some(a) => attempts.push(OperationView::new(&a, now)),
                None if n > key.attempt() => break,
                None => {}
            }
            n = match n.checked_add(1) {
                Some(n) => n,
                None => break,
            };
        }
        let audit = self.audit(Some(key), 100).await?;
        let view = OperationView::new(&op, now);
        let mut events = view.events();
        for entry in &audit {
            events.push(TimelineEvent {
                at: entry.at.clone(),
                at_ms: entry.at_ms,
                what: format!(
                    "{} by {}: {}{}",
                    entry.action,
                    entry.actor,
                    entry.outcome,
                    entry
                        .detail
                        .as_deref()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ),
            });
        }
        events.sort_by_key(|e| e.at_ms);
        Ok(Timeline {
            reconcilable: self.reconcilers.contains_key(&op.provider),
            operation: view,
            attempts,
            events,
            audit,
        })
    }

    /// Retries an operation: supersedes `key` and returns the next attempt's
    /// key (`v<n+1>`), through [`LedgerStore::bump`]. An `unknown` operation
    /// needs the key typed in [`RetryRequest::confirm`]; a `succeeded` one
    /// needs [`RetryRequest::force`] and the typed key. Every bump the store
    /// is asked for is audited, refused or not.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::ConfirmationRequired`] or [`ConsoleError::ForceRequired`]
    /// (nothing changed, nothing audited); [`ConsoleError::Store`] when the
    /// store refuses (for example a live lease).
    pub async fn retry(
        &self,
        actor: &str,
        key: &IdempotencyKey,
        request: &RetryRequest,
        now: SystemTime,
    ) -> Result<RetryOutcome, ConsoleError> {
        let before = self.get(key).await?;
        let typed = request.confirm.as_deref().map(str::trim) == Some(key.as_str());
        let warning = match before.state {
            _ if needs_typed_confirmation(&before) => {
                let warning = unknown_warning(&before);
                if !typed {
                    return Err(ConsoleError::ConfirmationRequired {
                        key: key.to_string(),
                        warning,
                    });
                }
                Some(warning)
            }
            OperationState::Succeeded => {
                let warning = succeeded_warning(&before);
                if !request.force {
                    return Err(ConsoleError::ForceRequired {
                        key: key.to_string(),
                        warning,
                    });
                }
                if !typed {
                    return Err(ConsoleError::ConfirmationRequired {
                        key: key.to_string(),
                        warning,
                    });
                }
                Some(warning)
            }
            _ => None,
        };
        let force = request.force && before.state == OperationState::Succeeded;
        match self.store.bump(key, force, now).await {
            Ok(next) => {
                let after = self.get(key).await?;
                self.record(
                    now,
                    actor,
                    "retry",
                    Some(key),
                    Some(before.state),
                    Some(after.state),
                    "ok",
                    Some(&format!(
                        "next attempt {next}{}",
                        if force { " (forced)" } else { "" }
                    )),
                )
                .await?;
                Ok(RetryOutcome {
                    before: OperationView::new(&before, now),
                    after: OperationView::new(&after, now),
                    next: next.to_string(),
                    warning,
                })
            }
            Err(e) => {
                let state = self.store.get(key).await?.map(|o| o.state);
                self.record(
                    now,
                    actor,
                    "retry",
                    Some(key),
                    Some(before.state),
                    state,
                    "refused",
                    Some(&e.to_string()),
                )
                .await?;
                Err(e.into())
            }
        }
    }

    /// Reconciles an operation with its provider through the registered
    /// [`Reconcile`] implementation, and audits what it found.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::NoReconciler`] when none is registered for the
    /// provider; [`ConsoleError::Reconcile`] when the lookup failed or the
    /// row cannot be reconciled (audited, ledger unchanged).
    pub async fn reconcile(
        &self,
        actor: &str,
        key: &IdempotencyKey,
        now: SystemTime,
    ) -> Result<ReconcileOutcome, ConsoleError> {
        let before = self.get(key).await?;
        let reconciler = self
            .reconcilers
            .get(&before.provider)
            .ok_or_else(|| ConsoleError::NoReconciler(before.provider.clone()))?;
        let result = reconciler.reconcile(key).await;
        let after = self.get(key).await?;
        let (verdict, provider_id, note) = match result {
            Ok(ReconcileVerdict::Applied { provider_id, note }) => ("applied", provider_id, note),
            Ok(ReconcileVerdict::NotApplied { note }) => ("not_applied", None, note),
            Ok(ReconcileVerdict::Undetermined { note }) => ("undetermined", None, note),
            Ok(other) => ("undetermined", None, format!("{other:?}")),
            Err(e) => {
                let reason = e.to_string();
                self.record(
                    now,
                    actor,
                    "reconcile",
                    Some(key),
                    Some(before.state),
                    Some(after.state),
                    "error",
                    Some(&reason),
                )
                .await?;
                return Err(ConsoleError::Reconcile(reason));
            }
        };
        let detail = match &provider_id {
            Some(id) => format!("{note}; provider id {id}"),
            None => note.clone(),
        };
        self.record(
            now,
            actor,
            "reconcile",
            Some(key),
            Some(before.state),
            Some(after.state),
            verdict,
            Some(&detail),
        )
        .await?;
        Ok(ReconcileOutcome {
            before: OperationView::new(&before, now),
            after: OperationView::new(&after, now),
            verdict,
            provider_id,
            note,
        })
    }

    /// Runs the store's sweep ([`LedgerStore::purge`]): compacts terminal
    /// rows last changed more than `older_than` ago (their bodies are
    /// dropped, the rows kept), `batch` rows at a time, and audits it.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::Store`] when the store fails (what was compacted
    /// before stays compacted).
    pub async fn sweep(
        &self,
        actor: &str,
        older_than: Duration,
        batch: u32,
        now: SystemTime,
    ) -> Result<SweepOutcome, ConsoleError> {
        self.batches(actor, "sweep", older_than, batch, now, false)
            .await
    }

    /// Deletes terminal rows last changed more than `older_than` ago,
    /// outright ([`LedgerStore::forget`]), and audits it. A job redelivered
    /// with a deleted key sends again: only for keys whose jobs can never
    /// come back.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::Store`] when the store fails or cannot delete.
    pub async fn forget(
        &self,
        actor: &str,
        older_than: Duration,
        batch: u32,
        now: SystemTime,
    ) -> Result<SweepOutcome, ConsoleError> {
        self.batches(actor, "forget", older_than, batch, now, true)
            .await
    }

    async fn batches(
        &self,
        actor: &str,
        action: &str,
        older_than: Duration,
        batch: u32,
        now: SystemTime,
        delete: bool,
    ) -> Result<SweepOutcome, ConsoleError> {
        let cut = now
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let batch = batch.max(1);
        let mut rows = 0;
        let result = loop {
            let step = if delete {
                self.store.forget(cut, batch).await
            } else {
                self.store.purge(cut, batch).await
            };
            match step {
                Ok(n) => {
                    rows += n;
                    if n < u64::from(batch) {
                        break Ok(());
                    }
                }
                Err(e) => break Err(e),
            }
        };
        let cutoff = millis(to_millis(cut));
        let verb = if delete { "deleted" } else { "compacted" };
        let detail = format!("{rows} row(s) {verb}, last changed before {cutoff}");
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.record(now, actor, action, None, None, None, outcome, Some(&detail))
            .await?;
        result?;
        Ok(SweepOutcome { rows, cutoff })
    }

    /// Inbound records in flight, stuck ones (lease run out) included,
    /// oldest first.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::Database`] when the query fails.
    pub async fn inbound(
        &self,
        page: u32,
        per_page: u32,
        now: SystemTime,
    ) -> Result<Page<InboundView>, ConsoleError> {
        let filter = AttentionFilter {
            page,
            per_page,
            ..AttentionFilter::default()
        };
        let per_page = filter.per_page();
        let offset = i64::from(filter.page() - 1) * i64::from(per_page);
        let sql = format!(
            "SELECT actor, endpoint, key, lease_expires_at, created_at, updated_at \
             FROM idem_inbound WHERE state = 'in_flight' ORDER BY created_at, endpoint, key \
             LIMIT {} OFFSET {}",
            self.placeholder(1),
            self.placeholder(2)
        );
        macro_rules! run {
            ($pool:expr) => {{
                sqlx::query(&sql)
                    .bind(i64::from(per_page) + 1)
                    .bind(offset)
                    .fetch_all($pool)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok::<_, sqlx::Error>(InboundView::new(
                            r.try_get("actor")?,
                            r.try_get("endpoint")?,
                            r.try_get("key")?,
                            r.try_get("lease_expires_at")?,
                            r.try_get("created_at")?,
                            r.try_get("updated_at")?,
                            to_millis(now),
                        ))
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }};
        }
        let mut items = match &self.db {
            Db::Sqlite(pool) => run!(pool),
            Db::Postgres(pool) => run!(pool),
        };
        let has_next = items.len() > per_page as usize;
        items.truncate(per_page as usize);
        Ok(Page {
            items,
            page: filter.page(),
            per_page,
            has_next,
        })
    }

    /// The latest audit rows, newest first; only those of `key` when given.
    ///
    /// # Errors
    ///
    /// [`ConsoleError::Database`] when the query fails.
    pub async fn audit(
        &self,
        key: Option<&IdempotencyKey>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>, ConsoleError> {
        let limit = i64::from(limit.clamp(1, 1000));
        let cols = "SELECT id, at, actor, action, key, state_before, state_after, outcome, detail \
                    FROM idem_console_audit";
        let sql = match key {
            Some(_) => format!(
                "{cols} WHERE key = {} ORDER BY id DESC LIMIT {}",
                self.placeholder(1),
                self.placeholder(2)
            ),
            None => format!("{cols} ORDER BY id DESC LIMIT {}", self.placeholder(1)),
        };
        macro_rules! run {
            ($pool:expr) => {{
                let mut q = sqlx::query(&sql);
                if let Some(key) = key {
                    q = q.bind(key.as_str().to_owned());
                }
                q.bind(limit)
                    .fetch_all($pool)
                    .await?
                    .iter()
                    .map(|r| {
                        let at: i64 = r.try_get("at")?;
                        Ok::<_, sqlx::Error>(AuditEntry {
                            id: r.try_get("id")?,
                            at: millis(at),
                            at_ms: at,
                            actor: r.try_get("actor")?,
                            action: r.try_get("action")?,
                            key: r.try_get("key")?,
                            state_before: r.try_get("state_before")?,
                            state_after: r.try_get("state_after")?,
                            outcome: r.try_get("outcome")?,
                            detail: r.try_get("detail")?,
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }};
        }
        Ok(match &self.db {
            Db::Sqlite(pool) => run!(pool),
            Db::Postgres(pool) => run!(pool),
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        now: SystemTime,
        actor: &str,
        action: &str,
        key: Option<&IdempotencyKey>,
        before: Option<OperationState>,
        after: Option<OperationState>,
        outcome: &str,
        detail: Option<&str>,
    ) -> Result<(), ConsoleError> {
        let sql = format!(
            "INSERT INTO idem_console_audit (at, actor, action, key, state_before, state_after, outcome, detail) \
             VALUES ({})",
            (1..=8)
                .map(|n| self.placeholder(n))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let detail = detail.map(|d| d.chars().take(1000).collect::<String>());
        macro_rules! run {
            ($pool:expr) => {{
                sqlx::query(&sql)
                    .bind(to_millis(now))
                    .bind(actor.to_owned())
                    .bind(action.to_owned())
                    .bind(key.map(|k| k.as_str().to_owned()))
                    .bind(before.map(|s| s.as_str().to_owned()))
                    .bind(after.map(|s| s.as_str().to_owned()))
                    .bind(outcome.to_owned())
                    .bind(detail)
                    .execute($pool)
                    .await?;
            }};
        }
        match &self.db {
            Db::Sqlite(pool) => run!(pool),
            Db::Postgres(pool) => run!(pool),
        }
        Ok(())
    }
}
