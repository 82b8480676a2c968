//! The SQLite store's hot path on one rusqlite connection.
//!
//! Every first send costs two durable writes: `begin_claimed` before the
//! first byte leaves, `complete` after the answer. Through sqlx each one is a
//! pool acquisition (with a ping), a hop to the connection's worker thread
//! and a hop back; measured on this project's machine that made the
//! two-write path about 2.5–3.5× what SQLite itself needs for the same two
//! statements (`idem-floors`, BENCHMARKS.md). sqlx has no way around its
//! worker thread, so the four hot statements (`begin_claimed`, `claim`,
//! `renew`, `complete`) run here instead, on a single writer connection
//! opened on the same file with the same `synchronous` level and busy
//! timeout as the pool. The inbound record's writes come here too, through
//! the group commit below. Everything else (reads, lists, sweeps, the
//! transactional `begin_in` and `complete_in`, webhooks) stays on the sqlx
//! pool; both see the same WAL database.
//!
//! One connection behind a mutex is also the single-writer design SQLite
//! favours: writers in this process queue on the mutex and wake as soon as
//! the previous write ends, instead of sleeping in SQLite's busy handler.
//! Writers in other processes are still serialised by SQLite's own lock.
//!
//! # Group commit (the inbound layer's writes)
//!
//! The inbound record's writes (start, take over, complete, release, renew)
//! go to a thread of their own, which shares this connection. It
//! takes every write that queued while the previous group committed (at
//! most [`MAX_GROUP`]) and runs them in one `BEGIN IMMEDIATE … COMMIT`, so
//! one fsync covers them all; a caller hears its write's result only after
//! that commit. If any statement or the commit fails, the group is rolled
//! back and every write in it runs again on its own, so one bad write
//! cannot fail its neighbours and none is reported before it is durable.
//! Waiting for a lock another connection holds (an application's own
//! transaction) happens on that thread, never on the caller's task, so a
//! handler whose transaction holds the lock is not stalled by its own
//! lease renewal.
//!
//! How a statement runs without stalling the async runtime: on a
//! multi-threaded tokio runtime, inside `block_in_place`, so the worker's
//! other tasks move to another thread while this one waits for the disk;
//! on a current-thread runtime (where `block_in_place` is not allowed), on
//! tokio's blocking pool; outside any runtime, in place.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, PoisonError, mpsc};
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OpenFlags, OptionalExtension, named_params};

use super::StoreError;
use crate::clock::to_millis;
use crate::key::IdempotencyKey;
use crate::ledger::sql::{self, RawRow};
use crate::ledger::{Begin, ClaimFrom, Completion, Lease, NewOperation, Operation};
use crate::store::inbound::sql::{Arg, Write};

/// Most writes one group commit takes.
const MAX_GROUP: usize = 64;

/// One queued inbound write and where its result goes.
struct Job {
    write: Write,
    reply: tokio::sync::oneshot::Sender<Result<u64, StoreError>>,
}

static BEGIN_CLAIMED: LazyLock<String> =
    LazyLock::new(|| format!("{} RETURNING {}", sql::INSERT_CLAIMED, sql::COLUMNS));
static COMPLETE: LazyLock<String> =
    LazyLock::new(|| format!("{} RETURNING {}", sql::COMPLETE, sql::COLUMNS));
static SELECT_ONE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM idem_operations WHERE key = $1",
        sql::COLUMNS
    )
});

/// The writer connection (see the module docs).
#[derive(Clone)]
pub(crate) struct SqliteWriter {
    conn: Arc<Mutex<Connection>>,
    /// The group-commit thread's queue (see the module docs). The thread
    /// ends when the last writer is dropped.
    group: mpsc::Sender<Job>,
    /// The store's pool: closing it closes the writer too.
    pool: sqlx::SqlitePool,
}

impl std::fmt::Debug for SqliteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteWriter").finish_non_exhaustive()
    }
}

fn unavailable(e: rusqlite::Error) -> StoreError {
    match e {
        rusqlite::Error::FromSqlConversionFailure(..)
        | rusqlite::Error::InvalidColumnType(..)
        | rusqlite::Error::IntegralValueOutOfRange(..) => sql::corrupt(e),
        other => StoreError::Unavailable {
            message: format!("database error: {other}"),
            source: Some(Box::new(other)),
        },
    }
}

/// Reads one row of [`sql::COLUMNS`] (in that order).
fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        key: r.get(0)?,
        provider: r.get(1)?,
        operation: r.get(2)?,
        fingerprint: r.get(3)?,
        state: r.get(4)?,
        claims: r.get(5)?,
        lease_expires_at: r.get(6)?,
        first_sent_at: r.get(7)?,
        created_at: r.get(8)?,
        updated_at: r.get(9)?,
        response_status: r.get(10)?,
        response_body: r.get(11)?,
        note: r.get(12)?,
        checkpoint: r.get(13)?,
        superseded_by: r.get(14)?,
        maybe_applied_at: r.get(15)?,
        provider_id: r.get(16)?,
        compacted_at: r.get(17)?,
    })
}

impl SqliteWriter {
    /// Opens the writer on an existing, migrated database file.
    pub(crate) fn open(
        pool: &sqlx::SqlitePool,
        path: &Path,
        synchronous: i64,
        busy_timeout: Duration,
    ) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(unavailable)?;
        conn.busy_timeout(busy_timeout).map_err(unavailable)?;
        conn.pragma_update(None, "synchronous", synchronous)
            .map_err(unavailable)?;
        let level: i64 = conn
            .pragma_query_value(None, "synchronous", |r| r.get(0))
            .map_err(unavailable)?;
        if level != synchronous {
            return Err(StoreError::Unavailable {
                message: format!(
                    "the SQLite writer runs synchronous={level}, the pool {synchronous}"
                ),
                source: None,
            });
        }
        let conn = Arc::new(Mutex::new(conn));
        let (group, jobs) = mpsc::channel();
        let on_thread = Arc::clone(&conn);
        std::thread::Builder::new()
            .name("idem-sqlite-group".into())
            .spawn(move || group_commit_loop(&on_thread, &jobs))
            .map_err(|e| StoreError::Unavailable {
                message: format!("could not start the SQLite group-commit thread: {e}"),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            conn,
            group,
            pool: pool.clone(),
        })
    }

    /// A closed pool closes the writer too.
    fn check_open(&self) -> Result<(), StoreError> {
        if self.pool.is_closed() {
            return Err(StoreError::from_sqlx(sqlx::Error::PoolClosed));
        }
        Ok(())
    }

    /// Runs one inbound write in the next group commit (see the module
    /// docs); the rows it changed, once that commit is durable.
    pub(crate) async fn grouped(&self, write: Write) -> Result<u64, StoreError> {
        self.check_open()?;
        let gone = || StoreError::Unavailable {
            message: "the SQLite group-commit thread has stopped".into(),
            source: None,
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.group.send(Job { write, reply }).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Runs `job` on the connection without stalling the runtime (see the
    /// module docs).
    async fn run<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.check_open()?;
        let conn = Arc::clone(&self.conn);
        let work = move || {
            // A panic inside a job cannot leave the connection mid-statement
            // (each statement is its own transaction), so a poisoned lock is
            // still a usable connection.
            let conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            job(&conn)
        };
        match tokio::runtime::Handle::try_current() {
            Err(_) => work(),
            Ok(handle) => match handle.runtime_flavor() {
                tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(work),
                _ => handle
                    .spawn_blocking(work)
                    .await
                    .map_err(|e| StoreError::Unavailable {
                        message: format!("the SQLite writer task failed: {e}"),
                        source: None,
                    })?,
            },
        }
    }

    pub(crate) async fn begin_claimed(
        &self,
        op: &NewOperation,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Begin, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let expires_at = now + lease_for;
        let (key, provider, operation) = (
            op.key.as_str().to_owned(),
            op.provider.clone(),
            op.operation.clone(),
        );
        let fingerprint = op.fingerprint.as_str().to_owned();
        let bound_token = token.clone();
        let (claimed, raw) = self
            .run(move |c| {
                let inserted = c
                    .prepare_cached(&BEGIN_CLAIMED)
                    .and_then(|mut st| {
                        st.query_row(
                            named_params! {
                                "$1": key, "$2": provider, "$3": operation, "$4": fingerprint,
                                "$5": bound_token, "$6": to_millis(expires_at), "$7": to_millis(now),
                            },
                            raw_row,
                        )
                        .optional()
                    })
                    .map_err(unavailable)?;
                match inserted {
                    Some(row) => Ok((true, row)),
                    None => select_one(c, &key)?
                        .map(|row| (false, row))
                        .ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "row {key} vanished right after a conflicting insert"
                            ))
                        }),
                }
            })
            .await?;
        let operation = raw.into_operation()?;
        if claimed {
            let lease = Lease {
                key: op.key.clone(),
                token,
                expires_at,
            };
            return Ok(Begin::Claimed(operation, lease));
        }
        sql::check_same_request(&operation, &op.provider, &op.operation, &op.fingerprint)?;
        Ok(Begin::Existing(operation))
    }

    pub(crate) async fn claim(
        &self,
        key: &IdempotencyKey,
        from: ClaimFrom,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Option<Lease>, StoreError> {
        let token = uuid::Uuid::new_v4().to_string();
        let expires_at = now + lease_for;
        let allow_unknown = matches!(from, ClaimFrom::PendingOrUnknown);
        let (bound_key, bound_token) = (key.as_str().to_owned(), token.clone());
        let changed = self
            .run(move |c| {
                c.prepare_cached(sql::CLAIM)
                    .and_then(|mut st| {
                        st.execute(named_params! {
                            "$1": bound_key, "$2": bound_token, "$3": to_millis(expires_at),
                            "$4": to_millis(now), "$5": allow_unknown,
                        })
                    })
                    .map_err(unavailable)
            })
            .await?;
        Ok((changed == 1).then(|| Lease {
            key: key.clone(),
            token,
            expires_at,
        }))
    }

    pub(crate) async fn renew(
        &self,
        lease: &Lease,
        lease_for: Duration,
        now: SystemTime,
    ) -> Result<Lease, StoreError> {
        let expires_at = now + lease_for;
        let (key, token) = (lease.key.as_str().to_owned(), lease.token.clone());
        let changed = self
            .run(move |c| {
                c.prepare_cached(sql::RENEW)
                    .and_then(|mut st| {
                        st.execute(named_params! {
                            "$1": key, "$2": token, "$3": to_millis(expires_at),
                            "$4": to_millis(now),
                        })
                    })
                    .map_err(unavailable)
            })
            .await?;
        if changed == 1 {
            Ok(Lease {
                key: lease.key.clone(),
                token: lease.token.clone(),
                expires_at,
            })
        } else {
            Err(StoreError::LeaseLost {
                key: lease.key.clone(),
            })
        }
    }

    pub(crate) async fn complete(
        &self,
        lease: &Lease,
        completion: &Completion,
        now: SystemTime,
    ) -> Result<Operation, StoreError> {
        let v = sql::completion_values(completion);
        let (key, token) = (lease.key.as_str().to_owned(), lease.token.clone());
        let raw = self
            .run(move |c| {
                c.prepare_cached(&COMPLETE)
                    .and_then(|mut st| {
                        st.query_row(
                            named_params! {
                                "$1": key, "$2": token, "$3": v.state.as_str(), "$4": v.status,
                                "$5": v.body, "$6": v.note, "$7": to_millis(now),
                                "$8": v.provider_id,
                            },
                            raw_row,
                        )
                        .optional()
                    })
                    .map_err(unavailable)
            })
            .await?;
        match raw {
            Some(raw) => raw.into_operation(),
            None => Err(StoreError::LeaseLost {
                key: lease.key.clone(),
            }),
        }
    }
}

fn select_one(c: &Connection, key: &str) -> Result<Option<RawRow>, StoreError> {
    c.prepare_cached(&SELECT_ONE)
        .and_then(|mut st| {
            st.query_row(named_params! { "$1": key }, raw_row)
                .optional()
        })
        .map_err(unavailable)
}

/// The group-commit thread: one group per turn, until every sender is gone.
fn group_commit_loop(conn: &Mutex<Connection>, jobs: &mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let results = {
            let c = conn.lock().unwrap_or_else(PoisonError::into_inner);
            let writes: Vec<&Write> = group.iter().map(|j| &j.write).collect();
            std::panic::catch_unwind(AssertUnwindSafe(|| commit_group(&c, &writes))).unwrap_or_else(
                |_| {
                    rollback_if_open(&c);
                    writes
                        .iter()
                        .map(|_| {
                            Err(StoreError::Unavailable {
                                message: "the SQLite group commit panicked".into(),
                                source: None,
                            })
                        })
                        .collect()
                },
            )
        };
        for (job, result) in group.into_iter().zip(results) {
            // A caller that gave up no longer listens; its write stands.
            let _ = job.reply.send(result);
        }
    }
}

/// Commits `writes` together; on any failure rolls back and runs each on
/// its own (see the module docs). One result per write, in order.
fn commit_group(c: &Connection, writes: &[&Write]) -> Vec<Result<u64, StoreError>> {
    let alone = |w: &&Write| execute(c, w).map_err(unavailable);
    if writes.len() == 1 {
        return writes.iter().map(alone).collect();
    }
    let together = (|| {
        c.execute_batch("BEGIN IMMEDIATE")?;
        let changed = writes
            .iter()
            .map(|w| execute(c, w))
            .collect::<rusqlite::Result<Vec<u64>>>()?;
        c.execute_batch("COMMIT")?;
        Ok::<_, rusqlite::Error>(changed)
    })();
    match together {
        Ok(changed) => changed.into_iter().map(Ok).collect(),
        Err(_) => {
            rollback_if_open(c);
            writes.iter().map(alone).collect()
        }
    }
}

/// Ends a group's transaction if a failure left it open (SQLite rolls some
/// failures back by itself).
fn rollback_if_open(c: &Connection) {
    if !c.is_autocommit() {
        let _ = c.execute_batch("ROLLBACK");
    }
}

/// Binds `write.args[i]` to `$i+1` by name (SQLite numbers named
/// parameters by first appearance, not by their digits) and runs it.
fn execute(c: &Connection, write: &Write) -> rusqlite::Result<u64> {
    let mut st = c.prepare_cached(write.sql)?;
    for (i, arg) in write.args.iter().enumerate() {
        let name = format!("${}", i + 1);
        let at = st
            .parameter_index(&name)?
            .ok_or(rusqlite::Error::InvalidParameterName(name))?;
        match arg {
            Arg::Text(v) => st.raw_bind_parameter(at, v)?,
            Arg::Int(v) => st.raw_bind_parameter(at, v)?,
            Arg::Bool(v) => st.raw_bind_parameter(at, v)?,
            Arg::Blob(v) => st.raw_bind_parameter(at, v)?,
        }
    }
    Ok(st.raw_execute()? as u64)
}
