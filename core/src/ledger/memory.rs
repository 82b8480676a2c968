//! The in-memory store: the SQL stores' semantics without a database, for
//! fast tests.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;

use super::StoreError;
use super::sql::{self, Values};
use super::{
    Begin, ClaimFrom, Completion, Lease, LedgerStore, ListFilter, NewOperation, Operation,
    OperationState, Resolution,
};
use crate::clock::{from_millis, to_millis};
use crate::key::IdempotencyKey;

/// A [`LedgerStore`] that keeps its rows in memory.
///
/// Every method makes exactly the change the SQL statements of
/// [`SqliteStore`](super::SqliteStore) and [`PgStore`](super::PgStore) make
/// (the same conformance suite runs on all three), including the
/// millisecond precision of stored times. It is meant for tests: an
/// application's own test suite can run its workers against it without a
/// database file, and a simulation can run many thousands of operations a
/// second.
///
/// It is **not** a ledger for production: the rows live only as long as the
/// value (and its clones, which share them), so a restart forgets every key
/// and a retry after a restart sends again.
///
/// Lease tokens are drawn from a counter, so a test that runs the same steps
/// sees the same tokens.
///
/// ```
/// # async fn demo() -> Result<(), idem::StoreError> {
/// use std::time::{Duration, SystemTime};
/// use idem::ledger::{ClaimFrom, MemoryStore, NewOperation};
/// use idem::{Fingerprint, LedgerStore, OperationState};
///
/// let store = MemoryStore::new();
/// let key = "acme_orders_7_v1".parse().expect("a valid key");
/// let fingerprint = Fingerprint::builder().method("POST").target("/x").finish();
/// let op = NewOperation::new(key, "acme", "orders.create", fingerprint);
/// let row = store.begin(&op, SystemTime::now()).await?;
/// assert_eq!(row.state, OperationState::Pending);
/// let lease = store
///     .claim(&op.key, ClaimFrom::Pending, Duration::from_secs(60), SystemTime::now())
///     .await?;
/// assert!(lease.is_some());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    inner: std::sync::Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rows: Mutex<BTreeMap<String, Row>>,
    tokens: AtomicU64,
}

#[derive(Debug, Clone)]
struct Row {
    op: Operation,
    token: Option<String>,
}

/// Stored times have the SQL stores' millisecond precision.
fn ms(t: SystemTime) -> SystemTime {
    from_millis(to_millis(t))
}

fn is_terminal(state: OperationState) -> bool {
    matches!(
        state,
        OperationState::Succeeded | OperationState::Failed | OperationState::Superseded
    )
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many rows the store holds.
    pub fn len(&self) -> usize {
        self.rows().len()
    }

    /// Whether the store holds no row.
    pub fn is_empty(&self) -> bool {
        self.rows().is_empty()
    }

    fn rows(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Row>> {
        self.inner
            .rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn token(&self) -> String {
        let n = self.inner.tokens.fetch_add(1, Ordering::Relaxed);
        format!("memory-lease-{n}")
    }

    fn fresh(op: &NewOperation, now: SystemTime) -> Operation {
        Operation {
            key: op.key.clone(),
            provider: op.provider.clone(),
            operation: op.operation.clone(),
            fingerprint: op.fingerprint.clone(),
            state: OperationState::Pending,
            claims: 0,
            lease_expires_at: None,
            first_sent_at: None,
            created_at: now,
            updated_at: now,
            response_status: None,
            response_body: None,
            note: None,
            checkpoint: None,
            superseded_by: None,
            maybe_applied_at: None,
            provider_id: None,
            compacted_at: None,
        }
    }
}

fn status_of(v: &Values) -> Option<u16> {
    // The SQL stores bind an i64 and read it back as u16; values come from
    // a u16, so the conversion cannot fail.
    v.status.and_then(|s| u16::try_from(s).ok())
}

#[async_trait]
impl LedgerStore for MemoryStore {
    async fn begin(&self, op: &NewOperation, now: SystemTime) -> Result<Operation, StoreError> {
        let now = ms(now);
        let mut rows = self.rows();
        let row = rows
            .entry(op.key.as_str().to_owned())
            .or_insert_with(|| Row {
                op: Self::fresh(op, now),
                token: None,
            });
        sql::check_same_request(&row.op, &op.provider, &op.operation, &op.fingerprint)?;
        Ok(row.op.clone())
    }

    async fn begin_claimed(
        &self,
        op: &NewOperation,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Begin, StoreError> {
        let expires_at = now + lease_for;
        let now = ms(now);
        let mut rows = self.rows();
        if let Some(existing) = rows.get(op.key.as_str()) {
            sql::check_same_request(&existing.op, &op.provider, &op.operation, &op.fingerprint)?;
            return Ok(Begin::Existing(existing.op.clone()));
        }
        let token = self.token();
        let mut fresh = Self::fresh(op, now);
        fresh.state = OperationState::Sending;
        fresh.claims = 1;
        fresh.lease_expires_at = Some(ms(expires_at));
        fresh.first_sent_at = Some(now);
        rows.insert(
            op.key.as_str().to_owned(),
            Row {
                op: fresh.clone(),
                token: Some(token.clone()),
            },
        );
        Ok(Begin::Claimed(
            fresh,
            Lease {
                key: op.key.clone(),
                token,
                expires_at,
            },
        ))
    }

    async fn get(&self, key: &IdempotencyKey) -> Result<Option<Operation>, StoreError> {
        Ok(self.rows().get(key.as_str()).map(|row| row.op.clone()))
    }

    async fn claim(
        &self,
        key: &IdempotencyKey,
        from: ClaimFrom,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Option<Lease>, StoreError> {
        let expires_at = now + lease_for;
        let now = ms(now);
        let allow_unknown = matches!(from, ClaimFrom::PendingOrUnknown);
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(key.as_str()) else {
            return Ok(None);
        };
        let op = &mut row.op;
        let claimable = (op.state == OperationState::Pending
            && (op.maybe_applied_at.is_none() || allow_unknown))
            || (allow_unknown && op.state == OperationState::Unknown);
        if !claimable {
            return Ok(None);
        }
        let token = self.token();
        op.state = OperationState::Sending;
        op.lease_expires_at = Some(ms(expires_at));
        op.claims = op.claims.saturating_add(1);
        op.updated_at = now;
        op.first_sent_at = op.first_sent_at.or(Some(now));
        row.token = Some(token.clone());
        Ok(Some(Lease {
            key: key.clone(),
            token,
            expires_at,
        }))
    }

    async fn expire_lease(
        &self,
        key: &IdempotencyKey,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let now = ms(now);
        let mut rows = self.rows();
        let Some(row) = rows.get_mut(key.as_str()) else {
            return Ok(false);
        };
        let op = &mut row.op;
        if op.state != OperationState::Sending || op.lease_expires_at.is_some_and(|t| t > now) {
            return Ok(false);
        }
        // The token is kept, as in the SQL stores: a late holder may still
        // record a definitive answer.
        op.state = OperationState::Unknown;
        op.note = Some(
            "lease expired while sending: the sender stopped before recording an outcome"
                .to_owned(),
        );
        op.maybe_applied_at = op.maybe_applied_at.or(op.first_sent_at).or(Some(now));
        op.updated_at = now;
        Ok(true)
    }

    async fn checkpoint(
        &self,
        lease: &Lease,
        value: &str,
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let now = ms(now);
        let mut rows = self.rows();
        match rows.get_mut(lease.key.as_str()) {
            Some(row)
                if row.op.state == OperationState::Sending
                    && row.token.as_deref() == Some(lease.token.as_str()) =>
            {
                row.op.checkpoint = Some(value.to_owned());
                row.op.updated_at = now;
                Ok(())
            }
            _ => Err(StoreError::LeaseLost {
                key: lease.key.clone(),
            }),
        }
    }

    async fn renew(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Lease, StoreError> {
        let expires_at = now + lease_for;
        let now = ms(now);
        let mut rows = self.rows();
        match rows.get_mut(lease.key.as_str()) {
            Some(row)
                if row.op.state == OperationState::Sending
                    && row.token.as_deref() == Some(lease.token.as_str()) =>
            {
                row.op.lease_expires_at = Some(ms(expires_at));
                row.op.updated_at = now;
                Ok(Lease {
                    key: lease.key.clone(),
                    token: lease.token.clone(),
                    expires_at,
                })
            }
            _ => Err(StoreError::LeaseLost {
                key: lease.key.clone(),
            }),
        }
    }

    async fn complete(
        &self,
        lease: &Lease,
        completion: &Completion,
        now: SystemTime,
    ) -> Result<Operation, StoreError> {
        let now = ms(now);
        let v = sql::completion_values(completion);
        let mut rows = self.rows();
        let lost = || StoreError::LeaseLost {
            key: lease.key.clone(),
        };
        let row = rows.get_mut(lease.key.as_str()).ok_or_else(lost)?;
        let definitive = matches!(v.state, OperationState::Succeeded | OperationState::Failed);
        let fenced = row.token.as_deref() == Some(lease.token.as_str())
            && (matches!(
                row.op.state,
                OperationState::Sending | OperationState::Unknown
            ) || (row.op.state == OperationState::Pending && definitive));
        if !fenced {
            return Err(lost());
        }
        let op = &mut row.op;
        // "May have taken effect" is never downgraded by an attempt that was
        // not sent.
        let keep_unknown = v.state == OperationState::Pending && op.maybe_applied_at.is_some();
        if keep_unknown {
            op.state = OperationState::Unknown;
            op.note = v.note.as_ref().map(|note| {
                format!("an earlier attempt may have taken effect; the latest was not sent: {note}")
            });
        } else {
            op.state = v.state;
            op.note = v.note.clone();
        }
        if matches!(v.state, OperationState::Unknown | OperationState::Succeeded) {
            op.maybe_applied_at = op.maybe_applied_at.or(op.first_sent_at).or(Some(now));
        }
        row.token = None;
        op.lease_expires_at = None;
        op.response_status = status_of(&v);
        op.response_body = v.body.clone().map(Bytes::from);
        if v.provider_id.is_some() {
            op.provider_id = v.provider_id.clone();
        }
        op.updated_at = now;
        Ok(op.clone())
    }

    async fn resolve(
        &self,
        key: &IdempotencyKey,
        resolution: &Resolution,
        now: SystemTime,
    ) -> Result<Operation, StoreError> {
        let now = ms(now);
        let v = sql::resolution_values(resolution);
        let mut rows = self.rows();
        let row = rows
            .get_mut(key.as_str())
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        let op = &mut row.op;
        let settleable = op.state == OperationState::Unknown
            || (op.state == OperationState::Sending
                && op.lease_expires_at.is_none_or(|t| t <= now));
        if !settleable {
            return Err(StoreError::InvalidState {
                key: key.clone(),
                state: op.state,
                reason: "only an unknown outcome (or an expired send) can be resolved",
            });
        }
        let not_applied = v.state == OperationState::Pending;
        op.state = v.state;
        op.response_status = status_of(&v);
        op.response_body = v.body.clone().map(Bytes::from);
        op.note = v.note.clone();
        if !not_applied {
            row.token = None;
        }
        op.lease_expires_at = None;
        op.updated_at = now;
        if not_applied {
            op.maybe_applied_at = None;
        }
        if v.provider_id.is_some() {
            op.provider_id = v.provider_id.clone();
        }
        Ok(op.clone())
    }

    async fn bump(
        &self,
        key: &IdempotencyKey,
        force: bool,
        now: SystemTime,
    ) -> Result<IdempotencyKey, StoreError> {
        let next = key
            .next_attempt()
            .map_err(|e| StoreError::Corrupt(format!("cannot bump {key}: {e}")))?;
        let now = ms(now);
        let mut rows = self.rows();
        let row = rows
            .get_mut(key.as_str())
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        let op = &mut row.op;
        let live_lease =
            op.state == OperationState::Sending && op.lease_expires_at.is_some_and(|t| t > now);
        let allowed = op.state != OperationState::Superseded
            && !live_lease
            && (op.state != OperationState::Succeeded || force);
        if !allowed {
            return Err(sql::bump_refusal(op, now));
        }
        op.state = OperationState::Superseded;
        op.superseded_by = Some(next.clone());
        row.token = None;
        op.lease_expires_at = None;
        op.updated_at = now;
        Ok(next)
    }

    async fn list(&self, filter: &ListFilter) -> Result<Vec<Operation>, StoreError> {
        let rows = self.rows();
        let mut found: Vec<Operation> = rows
            .values()
            .map(|row| &row.op)
            .filter(|op| filter.states.is_empty() || filter.states.contains(&op.state))
            .filter(|op| filter.provider.as_ref().is_none_or(|p| *p == op.provider))
            .cloned()
            .collect();
        found.sort_by(|a, b| {
            b.updated_at
                .cmp(&a.updated_at)
                .then_with(|| a.key.as_str().cmp(b.key.as_str()))
        });
        found.truncate(usize::try_from(filter.limit.unwrap_or(100)).unwrap_or(usize::MAX));
        Ok(found)
    }

    async fn purge(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        let before = ms(before);
        let mut rows = self.rows();
        let mut done = 0u64;
        for row in rows.values_mut() {
            if done >= u64::from(batch) {
                break;
            }
            let op = &mut row.op;
            if is_terminal(op.state) && op.updated_at < before && op.compacted_at.is_none() {
                op.response_body = None;
                op.compacted_at = Some(before);
                done += 1;
            }
        }
        Ok(done)
    }

    async fn forget(&self, before: SystemTime, batch: u32) -> Result<u64, StoreError> {
        let before = ms(before);
        let mut rows = self.rows();
        let doomed: Vec<String> = rows
            .iter()
            .filter(|(_, row)| is_terminal(row.op.state) && row.op.updated_at < before)
            .map(|(key, _)| key.clone())
            .take(usize::try_from(batch).unwrap_or(usize::MAX))
            .collect();
        for key in &doomed {
            rows.remove(key);
        }
        Ok(doomed.len() as u64)
    }
}
