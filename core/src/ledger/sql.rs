//! SQL shared by the SQLite and PostgreSQL stores. Both accept `$N`
//! placeholders, so one text serves both; the `impl_sql_store!` macro writes
//! the [`LedgerStore`](super::LedgerStore) impl once for each backend.

use std::time::SystemTime;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
use bytes::Bytes;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use sqlx::Row;

use super::StoreError;
use super::{Completion, Operation, OperationState, Resolution};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::clock::from_millis;
use crate::fingerprint::Fingerprint;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
use crate::key::IdempotencyKey;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const COLUMNS: &str = "key, provider, operation, fingerprint, state, claims, \
    lease_expires_at, first_sent_at, created_at, updated_at, response_status, response_body, \
    note, checkpoint, superseded_by, maybe_applied_at, provider_id, compacted_at";

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const INSERT: &str = "INSERT INTO idem_operations \
    (key, provider, operation, fingerprint, state, claims, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, 'pending', 0, $5, $5) ON CONFLICT (key) DO NOTHING";

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const INSERT_CLAIMED: &str = "INSERT INTO idem_operations \
    (key, provider, operation, fingerprint, state, claims, lease_token, lease_expires_at, \
    first_sent_at, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, 'sending', 1, $5, $6, $7, $7, $7) ON CONFLICT (key) DO NOTHING";

/// A `pending` row that may have taken effect (it should not exist: such a
/// row is `unknown`) is claimable only when the caller allows `unknown`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const CLAIM: &str = "UPDATE idem_operations SET state = 'sending', lease_token = $2, \
    lease_expires_at = $3, claims = claims + 1, updated_at = $4, \
    first_sent_at = COALESCE(first_sent_at, $4) \
    WHERE key = $1 AND ((state = 'pending' AND (maybe_applied_at IS NULL OR $5)) \
    OR ($5 AND state = 'unknown'))";

/// The lease token is kept: the holder, if it is only late (a paused VM, a
/// slow answer), may still record a definitive answer as long as no newer
/// claim has replaced the token.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const EXPIRE: &str = "UPDATE idem_operations SET state = 'unknown', \
    note = 'lease expired while sending: the sender stopped before recording an outcome', \
    maybe_applied_at = COALESCE(maybe_applied_at, first_sent_at, $2), updated_at = $2 \
    WHERE key = $1 AND state = 'sending' AND (lease_expires_at IS NULL OR lease_expires_at <= $2)";

/// Extends a held lease. Fenced on the token and the `sending` state, so it
/// fails once another worker has expired or claimed the row.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const RENEW: &str = "UPDATE idem_operations SET lease_expires_at = $3, updated_at = $4 \
    WHERE key = $1 AND lease_token = $2 AND state = 'sending'";

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const CHECKPOINT: &str = "UPDATE idem_operations SET checkpoint = $3, updated_at = $4 \
    WHERE key = $1 AND state = 'sending' AND lease_token = $2";

/// Ends a claim, fenced on "no newer claim": the token matches. That holds
/// while `sending`, after the lease expired (`unknown`, token kept) and after
/// reconciliation found no effect (`pending`, token kept); in the last two
/// cases only a definitive answer (succeeded, failed) is recorded.
///
/// "May have taken effect" is never downgraded: a `pending` completion
/// (nothing sent this time) of a row with `maybe_applied_at` set leaves it
/// `unknown`.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const COMPLETE: &str = "UPDATE idem_operations SET \
    state = CASE WHEN $3 = 'pending' AND maybe_applied_at IS NOT NULL THEN 'unknown' \
        ELSE $3 END, \
    note = CASE WHEN $3 = 'pending' AND maybe_applied_at IS NOT NULL \
        THEN 'an earlier attempt may have taken effect; the latest was not sent: ' || $6 \
        ELSE $6 END, \
    maybe_applied_at = CASE WHEN $3 IN ('unknown', 'succeeded') \
        THEN COALESCE(maybe_applied_at, first_sent_at, $7) ELSE maybe_applied_at END, \
    lease_token = NULL, lease_expires_at = NULL, response_status = $4, response_body = $5, \
    provider_id = COALESCE($8, provider_id), updated_at = $7 \
    WHERE key = $1 AND lease_token = $2 AND (state IN ('sending', 'unknown') \
    OR (state = 'pending' AND $3 IN ('succeeded', 'failed')))";

/// Settles an `unknown` row. "Not applied" clears `maybe_applied_at` and keeps
/// the last holder's token, so its late definitive answer still counts.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const RESOLVE: &str = "UPDATE idem_operations SET state = $2, response_status = $3, \
    response_body = $4, note = $5, \
    lease_token = CASE WHEN $2 = 'pending' THEN lease_token ELSE NULL END, \
    lease_expires_at = NULL, updated_at = $6, \
    maybe_applied_at = CASE WHEN $2 = 'pending' THEN NULL ELSE maybe_applied_at END, \
    provider_id = COALESCE($7, provider_id) \
    WHERE key = $1 AND (state = 'unknown' OR (state = 'sending' AND \
    (lease_expires_at IS NULL OR lease_expires_at <= $6)))";

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const BUMP: &str = "UPDATE idem_operations SET state = 'superseded', superseded_by = $2, \
    lease_token = NULL, lease_expires_at = NULL, updated_at = $3 \
    WHERE key = $1 AND state <> 'superseded' \
    AND NOT (state = 'sending' AND lease_expires_at IS NOT NULL AND lease_expires_at > $3) \
    AND (state <> 'succeeded' OR $4)";

/// The sweep: drops the stored bodies of settled rows and keeps the rows, so a
/// redelivered job still finds its key (and is not sent again).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const COMPACT: &str = "UPDATE idem_operations SET response_body = NULL, \
    compacted_at = $1 WHERE key IN (SELECT key FROM idem_operations \
    WHERE state IN ('succeeded', 'failed', 'superseded') AND updated_at < $1 \
    AND compacted_at IS NULL LIMIT $2)";

/// Outright deletion of settled rows: a retry of these keys sends again.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) const FORGET: &str = "DELETE FROM idem_operations WHERE key IN (SELECT key FROM \
    idem_operations WHERE state IN ('succeeded', 'failed', 'superseded') AND updated_at < $1 \
    LIMIT $2)";

/// The provider's id for the object in a stored answer: the first string
/// among the top-level JSON fields `id` (Stripe, Meta), `sid` (Twilio) and
/// `name` (Google resource names). `None` for anything else.
pub(crate) fn provider_id_of(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object()?;
    ["id", "sid", "name"]
        .iter()
        .find_map(|field| object.get(*field)?.as_str())
        .filter(|id| !id.is_empty() && id.len() <= 512)
        .map(str::to_owned)
}

/// Bind values for [`COMPLETE`].
pub(crate) struct Values {
    pub(crate) state: OperationState,
    pub(crate) status: Option<i64>,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) note: Option<String>,
    pub(crate) provider_id: Option<String>,
}

/// Bind values for [`COMPLETE`].
pub(crate) fn completion_values(c: &Completion) -> Values {
    let (state, status, body, note) = match c {
        Completion::Succeeded { status, body } => (
            OperationState::Succeeded,
            Some(i64::from(*status)),
            Some(body.to_vec()),
            None,
        ),
        Completion::Failed { status, body, note } => (
            OperationState::Failed,
            Some(i64::from(*status)),
            Some(body.to_vec()),
            Some(note.clone()),
        ),
        Completion::Unknown { note, status } => (
            OperationState::Unknown,
            status.map(i64::from),
            None,
            Some(note.clone()),
        ),
        Completion::NotSent { note } => (OperationState::Pending, None, None, Some(note.clone())),
    };
    let provider_id = match c {
        Completion::Succeeded { body, .. } => provider_id_of(body),
        _ => None,
    };
    Values {
        state,
        status,
        body,
        note,
        provider_id,
    }
}

/// Bind values for [`RESOLVE`].
pub(crate) fn resolution_values(r: &Resolution) -> Values {
    match r {
        Resolution::Succeeded { status, body, note } => Values {
            state: OperationState::Succeeded,
            status: Some(i64::from(*status)),
            body: Some(body.to_vec()),
            note: Some(note.clone()),
            provider_id: provider_id_of(body),
        },
        Resolution::NotApplied { note } => Values {
            state: OperationState::Pending,
            status: None,
            body: None,
            note: Some(note.clone()),
            provider_id: None,
        },
    }
}

/// Why `bump` matched no row, given the row as it is now.
pub(crate) fn bump_refusal(op: &Operation, now: SystemTime) -> StoreError {
    let reason = match op.state {
        OperationState::Superseded => "it was already bumped; retry the newest attempt instead",
        OperationState::Succeeded => {
            "it succeeded; bumping would repeat a completed side effect (use force to override)"
        }
        OperationState::Sending if !op.lease_expired(now) => {
            "a worker is sending it right now; wait for the lease to end"
        }
        _ => "the record changed concurrently; look again",
    };
    StoreError::InvalidState {
        key: op.key.clone(),
        state: op.state,
        reason,
    }
}

/// Compares an existing row with the request that is beginning now.
pub(crate) fn check_same_request(
    existing: &Operation,
    provider: &str,
    operation: &str,
    fingerprint: &Fingerprint,
) -> Result<(), StoreError> {
    let detail = if existing.provider != provider {
        Some(format!(
            "recorded for provider {:?}, now {:?}",
            existing.provider, provider
        ))
    } else if existing.operation != operation {
        Some(format!(
            "recorded for operation {:?}, now {:?}",
            existing.operation, operation
        ))
    } else if existing.fingerprint.version() == fingerprint.version()
        && existing.fingerprint != *fingerprint
    {
        Some("the request parameters differ".to_owned())
    } else {
        // Same fingerprint, or fingerprints of different algorithm versions,
        // which cannot be compared (see the fingerprint module).
        None
    };
    match detail {
        Some(detail) => Err(StoreError::KeyReused {
            key: existing.key.clone(),
            detail,
        }),
        None => Ok(()),
    }
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// One row of [`COLUMNS`] as the database returns it, before validation.
/// Each driver fills it from its own row type ([`decode_row`] for sqlx, the
/// SQLite writer for rusqlite); [`RawRow::into_operation`] checks it once.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) struct RawRow {
    pub(crate) key: String,
    pub(crate) provider: String,
    pub(crate) operation: String,
    pub(crate) fingerprint: String,
    pub(crate) state: String,
    pub(crate) claims: i64,
    pub(crate) lease_expires_at: Option<i64>,
    pub(crate) first_sent_at: Option<i64>,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
    pub(crate) response_status: Option<i64>,
    pub(crate) response_body: Option<Vec<u8>>,
    pub(crate) note: Option<String>,
    pub(crate) checkpoint: Option<String>,
    pub(crate) superseded_by: Option<String>,
    pub(crate) maybe_applied_at: Option<i64>,
    pub(crate) provider_id: Option<String>,
    pub(crate) compacted_at: Option<i64>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl RawRow {
    /// Validates the row: a stored key, state or status that does not parse
    /// is [`StoreError::Corrupt`].
    pub(crate) fn into_operation(self) -> Result<Operation, StoreError> {
        let key: IdempotencyKey = self.key.parse().map_err(corrupt)?;
        let superseded_by = match self.superseded_by {
            Some(k) => Some(k.parse().map_err(corrupt)?),
            None => None,
        };
        let response_status = match self.response_status {
            Some(s) => Some(u16::try_from(s).map_err(corrupt)?),
            None => None,
        };
        Ok(Operation {
            key,
            provider: self.provider,
            operation: self.operation,
            fingerprint: Fingerprint::from_stored(self.fingerprint),
            state: self.state.parse()?,
            claims: u32::try_from(self.claims).unwrap_or(u32::MAX),
            lease_expires_at: self.lease_expires_at.map(from_millis),
            first_sent_at: self.first_sent_at.map(from_millis),
            created_at: from_millis(self.created_at),
            updated_at: from_millis(self.updated_at),
            response_status,
            response_body: self.response_body.map(Bytes::from),
            note: self.note,
            checkpoint: self.checkpoint,
            superseded_by,
            maybe_applied_at: self.maybe_applied_at.map(from_millis),
            provider_id: self.provider_id,
            compacted_at: self.compacted_at.map(from_millis),
        })
    }
}

/// Reads one row of [`COLUMNS`].
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) fn decode_row<R>(row: &R) -> Result<Operation, StoreError>
where
    R: Row,
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let text = |col: &str| row.try_get::<String, _>(col).map_err(corrupt);
    let opt_text = |col: &str| row.try_get::<Option<String>, _>(col).map_err(corrupt);
    let int = |col: &str| row.try_get::<i64, _>(col).map_err(corrupt);
    let opt_int = |col: &str| row.try_get::<Option<i64>, _>(col).map_err(corrupt);
    RawRow {
        key: text("key")?,
        provider: text("provider")?,
        operation: text("operation")?,
        fingerprint: text("fingerprint")?,
        state: text("state")?,
        claims: int("claims")?,
        lease_expires_at: opt_int("lease_expires_at")?,
        first_sent_at: opt_int("first_sent_at")?,
        created_at: int("created_at")?,
        updated_at: int("updated_at")?,
        response_status: opt_int("response_status")?,
        response_body: row
            .try_get::<Option<Vec<u8>>, _>("response_body")
            .map_err(corrupt)?,
        note: opt_text("note")?,
        checkpoint: opt_text("checkpoint")?,
        superseded_by: opt_text("superseded_by")?,
        maybe_applied_at: opt_int("maybe_applied_at")?,
        provider_id: opt_text("provider_id")?,
        compacted_at: opt_int("compacted_at")?,
    }
    .into_operation()
}

/// Writes the [`LedgerStore`](super::LedgerStore) impl and the shared
/// inherent methods for one sqlx backend.
///
/// With a fourth argument, the name of an `Option<SqliteWriter>` field, the
/// hot methods (`begin_claimed`, `claim`, `renew`, `complete`) go through
/// that writer when it is set (see `store::sqlite::writer`).
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! impl_sql_store {
    ($store:ident, $db:ty, $conn:ty $(, $fast:ident)?) => {
        impl $store {
            /// Begins an operation on a connection the caller controls, for
            /// example inside the application's own transaction, so the
            /// domain row and the ledger row commit together.
            ///
            /// # Errors
            ///
            /// As [`LedgerStore::begin`](crate::ledger::LedgerStore::begin).
            pub async fn begin_in(
                conn: &mut $conn,
                op: &$crate::ledger::NewOperation,
                now: ::std::time::SystemTime,
            ) -> Result<$crate::ledger::Operation, $crate::ledger::StoreError> {
                use $crate::ledger::sql;
                ::sqlx::query(sql::INSERT)
                    .bind(op.key.as_str())
                    .bind(&op.provider)
                    .bind(&op.operation)
                    .bind(op.fingerprint.as_str())
                    .bind($crate::clock::to_millis(now))
                    .execute(&mut *conn)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                let existing = Self::get_in(conn, &op.key).await?.ok_or_else(|| {
                    $crate::ledger::StoreError::Corrupt(format!(
                        "row {} vanished right after insert",
                        op.key
                    ))
                })?;
                sql::check_same_request(&existing, &op.provider, &op.operation, &op.fingerprint)?;
                Ok(existing)
            }

            /// Reads one row on a connection the caller controls.
            ///
            /// # Errors
            ///
            /// As [`LedgerStore::get`](crate::ledger::LedgerStore::get).
            pub async fn get_in(
                conn: &mut $conn,
                key: &$crate::key::IdempotencyKey,
            ) -> Result<Option<$crate::ledger::Operation>, $crate::ledger::StoreError> {
                let text = format!(
                    "SELECT {} FROM idem_operations WHERE key = $1",
                    $crate::ledger::sql::COLUMNS
                );
                let row = ::sqlx::query(&text)
                    .bind(key.as_str())
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                row.as_ref()
                    .map($crate::ledger::sql::decode_row)
                    .transpose()
            }

            async fn must_get(
                &self,
                key: &$crate::key::IdempotencyKey,
            ) -> Result<$crate::ledger::Operation, $crate::ledger::StoreError> {
                use $crate::ledger::LedgerStore;
                self.get(key)
                    .await?
                    .ok_or_else(|| $crate::ledger::StoreError::NotFound { key: key.clone() })
            }
        }

        #[::async_trait::async_trait]
        impl $crate::ledger::LedgerStore for $store {
            async fn begin(
                &self,
                op: &$crate::ledger::NewOperation,
                now: ::std::time::SystemTime,
            ) -> Result<$crate::ledger::Operation, $crate::ledger::StoreError> {
                let mut conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                Self::begin_in(&mut conn, op, now).await
            }

            async fn begin_claimed(
                &self,
                op: &$crate::ledger::NewOperation,
                lease_for: ::std::time::Duration,
                now: ::std::time::SystemTime,
            ) -> Result<$crate::ledger::Begin, $crate::ledger::StoreError> {
                $(if let Some(writer) = &self.$fast {
                    return writer.begin_claimed(op, lease_for, now).await;
                })?
                let token = ::uuid::Uuid::new_v4().to_string();
                let expires_at = now + lease_for;
                let text = format!(
                    "{} RETURNING {}",
                    $crate::ledger::sql::INSERT_CLAIMED,
                    $crate::ledger::sql::COLUMNS
                );
                let mut conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                let row = ::sqlx::query(&text)
                    .bind(op.key.as_str())
                    .bind(&op.provider)
                    .bind(&op.operation)
                    .bind(op.fingerprint.as_str())
                    .bind(&token)
                    .bind($crate::clock::to_millis(expires_at))
                    .bind($crate::clock::to_millis(now))
                    .fetch_optional(&mut *conn)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                match row {
                    Some(row) => {
                        let operation = $crate::ledger::sql::decode_row(&row)?;
                        let lease = $crate::ledger::Lease {
                            key: op.key.clone(),
                            token,
                            expires_at,
                        };
                        Ok($crate::ledger::Begin::Claimed(operation, lease))
                    }
                    None => {
                        let existing =
                            Self::get_in(&mut conn, &op.key).await?.ok_or_else(|| {
                                $crate::ledger::StoreError::Corrupt(format!(
                                    "row {} vanished right after a conflicting insert",
                                    op.key
                                ))
                            })?;
                        $crate::ledger::sql::check_same_request(
                            &existing,
                            &op.provider,
                            &op.operation,
                            &op.fingerprint,
                        )?;
                        Ok($crate::ledger::Begin::Existing(existing))
                    }
                }
            }

            async fn get(
                &self,
                key: &$crate::key::IdempotencyKey,
            ) -> Result<Option<$crate::ledger::Operation>, $crate::ledger::StoreError> {
                let mut conn = self
                    .pool
                    .acquire()
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                Self::get_in(&mut conn, key).await
            }

            async fn claim(
                &self,
                key: &$crate::key::IdempotencyKey,
                from: $crate::ledger::ClaimFrom,
                lease_for: ::std::time::Duration,
                now: ::std::time::SystemTime,
            ) -> Result<Option<$crate::ledger::Lease>, $crate::ledger::StoreError> {
                $(if let Some(writer) = &self.$fast {
                    return writer.claim(key, from, lease_for, now).await;
                })?
                let token = ::uuid::Uuid::new_v4().to_string();
                let expires_at = now + lease_for;
                let allow_unknown = matches!(from, $crate::ledger::ClaimFrom::PendingOrUnknown);
                let done = ::sqlx::query($crate::ledger::sql::CLAIM)
                    .bind(key.as_str())
                    .bind(&token)
                    .bind($crate::clock::to_millis(expires_at))
                    .bind($crate::clock::to_millis(now))
                    .bind(allow_unknown)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                Ok((done.rows_affected() == 1).then(|| $crate::ledger::Lease {
                    key: key.clone(),
                    token,
                    expires_at,
                }))
            }

            async fn expire_lease(
                &self,
                key: &$crate::key::IdempotencyKey,
                now: ::std::time::SystemTime,
            ) -> Result<bool, $crate::ledger::StoreError> {
                let done = ::sqlx::query($crate::ledger::sql::EXPIRE)
                    .bind(key.as_str())
                    .bind($crate::clock::to_millis(now))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn checkpoint(
                &self,
                lease: &$crate::ledger::Lease,
                value: &str,
                now: ::std::time::SystemTime,
            ) -> Result<(), $crate::ledger::StoreError> {
                let done = ::sqlx::query($crate::ledger::sql::CHECKPOINT)
                    .bind(lease.key.as_str())
                    .bind(&lease.token)
                    .bind(value)
                    .bind($crate::clock::to_millis(now))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                if done.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err($crate::ledger::StoreError::LeaseLost {
                        key: lease.key.clone(),
                    })
                }
            }

            async fn complete(
                &self,
                lease: &$crate::ledger::Lease,
                completion: &$crate::ledger::Completion,
                now: ::std::time::SystemTime,
            ) -> Result<$crate::ledger::Operation, $crate::ledger::StoreError> {
                $(if let Some(writer) = &self.$fast {
                    return writer.complete(lease, completion, now).await;
                })?
                let v = $crate::ledger::sql::completion_values(completion);
                let text = format!(
                    "{} RETURNING {}",
                    $crate::ledger::sql::COMPLETE,
                    $crate::ledger::sql::COLUMNS
                );
                let row = ::sqlx::query(&text)
                    .bind(lease.key.as_str())
                    .bind(&lease.token)
                    .bind(v.state.as_str())
                    .bind(v.status)
                    .bind(v.body)
                    .bind(v.note)
                    .bind($crate::clock::to_millis(now))
                    .bind(v.provider_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                match row {
                    Some(row) => $crate::ledger::sql::decode_row(&row),
                    None => Err($crate::ledger::StoreError::LeaseLost {
                        key: lease.key.clone(),
                    }),
                }
            }

            async fn resolve(
                &self,
                key: &$crate::key::IdempotencyKey,
                resolution: &$crate::ledger::Resolution,
                now: ::std::time::SystemTime,
            ) -> Result<$crate::ledger::Operation, $crate::ledger::StoreError> {
                let v = $crate::ledger::sql::resolution_values(resolution);
                let done = ::sqlx::query($crate::ledger::sql::RESOLVE)
                    .bind(key.as_str())
                    .bind(v.state.as_str())
                    .bind(v.status)
                    .bind(v.body)
                    .bind(v.note)
                    .bind($crate::clock::to_millis(now))
                    .bind(v.provider_id)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                let op = self.must_get(key).await?;
                if done.rows_affected() == 1 {
                    Ok(op)
                } else {
                    Err($crate::ledger::StoreError::InvalidState {
                        key: key.clone(),
                        state: op.state,
                        reason: "only an unknown outcome (or an expired send) can be resolved",
                    })
                }
            }

            async fn bump(
                &self,
                key: &$crate::key::IdempotencyKey,
                force: bool,
                now: ::std::time::SystemTime,
            ) -> Result<$crate::key::IdempotencyKey, $crate::ledger::StoreError> {
                let next = key.next_attempt().map_err(|e| {
                    $crate::ledger::StoreError::Corrupt(format!("cannot bump {key}: {e}"))
                })?;
                let done = ::sqlx::query($crate::ledger::sql::BUMP)
                    .bind(key.as_str())
                    .bind(next.as_str())
                    .bind($crate::clock::to_millis(now))
                    .bind(force)
                    .execute(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                if done.rows_affected() == 1 {
                    return Ok(next);
                }
                let op = self.must_get(key).await?;
                Err($crate::ledger::sql::bump_refusal(&op, now))
            }

            async fn list(
                &self,
                filter: &$crate::ledger::ListFilter,
            ) -> Result<Vec<$crate::ledger::Operation>, $crate::ledger::StoreError> {
                let mut qb = ::sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {} FROM idem_operations WHERE 1 = 1",
                    $crate::ledger::sql::COLUMNS
                ));
                if !filter.states.is_empty() {
                    qb.push(" AND state IN (");
                    let mut sep = qb.separated(", ");
                    for state in &filter.states {
                        sep.push_bind(state.as_str());
                    }
                    sep.push_unseparated(")");
                }
                if let Some(provider) = &filter.provider {
                    qb.push(" AND provider = ").push_bind(provider.clone());
                }
                qb.push(" ORDER BY updated_at DESC, key LIMIT ")
                    .push_bind(i64::from(filter.limit.unwrap_or(100)));
                let rows = qb
                    .build()
                    .fetch_all(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                rows.iter().map($crate::ledger::sql::decode_row).collect()
            }

            async fn renew(
                &self,
                lease: &$crate::ledger::Lease,
                lease_for: ::std::time::Duration,
                now: ::std::time::SystemTime,
            ) -> Result<$crate::ledger::Lease, $crate::ledger::StoreError> {
                $(if let Some(writer) = &self.$fast {
                    return writer.renew(lease, lease_for, now).await;
                })?
                let expires_at = now + lease_for;
                let done = ::sqlx::query($crate::ledger::sql::RENEW)
                    .bind(lease.key.as_str())
                    .bind(&lease.token)
                    .bind($crate::clock::to_millis(expires_at))
                    .bind($crate::clock::to_millis(now))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                if done.rows_affected() == 1 {
                    Ok($crate::ledger::Lease {
                        key: lease.key.clone(),
                        token: lease.token.clone(),
                        expires_at,
                    })
                } else {
                    Err($crate::ledger::StoreError::LeaseLost {
                        key: lease.key.clone(),
                    })
                }
            }

            async fn forget(
                &self,
                before: ::std::time::SystemTime,
                batch: u32,
            ) -> Result<u64, $crate::ledger::StoreError> {
                let done = ::sqlx::query($crate::ledger::sql::FORGET)
                    .bind($crate::clock::to_millis(before))
                    .bind(i64::from(batch))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                Ok(done.rows_affected())
            }

            async fn purge(
                &self,
                before: ::std::time::SystemTime,
                batch: u32,
            ) -> Result<u64, $crate::ledger::StoreError> {
                let done = ::sqlx::query($crate::ledger::sql::COMPACT)
                    .bind($crate::clock::to_millis(before))
                    .bind(i64::from(batch))
                    .execute(&self.pool)
                    .await
                    .map_err($crate::ledger::StoreError::from_sqlx)?;
                Ok(done.rows_affected())
            }
        }
    };
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) use impl_sql_store;
