//! The inbound record store ([`InboundStore`], [`TxInboundStore`]) on the
//! SQL stores: the shared SQL, then SQLite's and PostgreSQL's halves (the
//! PostgreSQL notifier, which wakes waiters on other machines, included).

#![allow(clippy::wildcard_imports)]

#[cfg(feature = "postgres")]
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::error::StoreError;
use crate::fingerprint::Fingerprint;
use crate::inbound::header::ClientKey;
use crate::inbound::store::*;

#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub(crate) mod sql {
    use super::*;
    use crate::clock::{from_millis, to_millis};
    use sqlx::Row;

    pub(crate) const COLUMNS: &str = "actor, endpoint, key, fingerprint, state, \
        lease_expires_at, replay_until, created_at, updated_at, response_status, \
        response_headers, response_body, replayable";

    pub(crate) const INSERT: &str = "INSERT INTO idem_inbound (actor, endpoint, key, \
        fingerprint, state, lease_token, lease_expires_at, replay_until, created_at, updated_at, \
        replayable) VALUES ($1, $2, $3, $4, 'in_flight', $5, $6, $7, $8, $8, TRUE) \
        ON CONFLICT (actor, endpoint, key) DO NOTHING";

    /// Takes over a record whose replay window ended (and that no live
    /// request holds), or an in-flight record for the same request whose
    /// lease ran out.
    pub(crate) const TAKE_OVER: &str = "UPDATE idem_inbound SET fingerprint = $4, \
        state = 'in_flight', lease_token = $5, lease_expires_at = $6, replay_until = $7, \
        created_at = $8, updated_at = $8, response_status = NULL, response_headers = NULL, \
        response_body = NULL, replayable = TRUE, waiting = FALSE \
        WHERE actor = $1 AND endpoint = $2 AND key = $3 AND ( \
        (replay_until <= $8 AND NOT (state = 'in_flight' AND lease_expires_at > $8)) \
        OR (state = 'in_flight' AND lease_expires_at <= $8 AND fingerprint = $4))";

    pub(crate) const COMPLETE: &str = "UPDATE idem_inbound SET state = 'completed', \
        lease_token = NULL, lease_expires_at = NULL, response_status = $5, \
        response_headers = $6, response_body = $7, replayable = $8, updated_at = $9 \
        WHERE actor = $1 AND endpoint = $2 AND key = $3 AND state = 'in_flight' \
        AND lease_token = $4";

    pub(crate) const RENEW: &str = "UPDATE idem_inbound SET lease_expires_at = $5 \
        WHERE actor = $1 AND endpoint = $2 AND key = $3 AND state = 'in_flight' \
        AND lease_token = $4";

    /// A waiter's mark on an in-flight record (PostgreSQL notifies only
    /// marked records when they settle).
    #[cfg(feature = "postgres")]
    pub(crate) const MARK_WAITING: &str = "UPDATE idem_inbound SET waiting = TRUE \
        WHERE actor = $1 AND endpoint = $2 AND key = $3 AND state = 'in_flight'";

    pub(crate) const RELEASE: &str = "DELETE FROM idem_inbound WHERE actor = $1 AND \
        endpoint = $2 AND key = $3 AND state = 'in_flight' AND lease_token = $4";

    pub(crate) const SWEEP: &str = "DELETE FROM idem_inbound WHERE (actor, endpoint, key) IN \
        (SELECT actor, endpoint, key FROM idem_inbound WHERE created_at < $1 \
        AND replay_until <= $2 AND NOT (state = 'in_flight' AND lease_expires_at > $2) \
        LIMIT $3)";

    pub(crate) const RECORD_SWEEP: &str = "INSERT INTO idem_inbound_sweeps (started_at, \
        finished_at, cutoff, deleted, batches, error) VALUES ($1, $2, $3, $4, $5, $6)";

    pub(crate) const SWEEP_RUNS: &str = "SELECT started_at, finished_at, cutoff, deleted, \
        batches, error FROM idem_inbound_sweeps ORDER BY id DESC LIMIT $1";

    /// Mirrors the `WHERE` of [`TAKE_OVER`], to skip the write when it
    /// cannot match. The statement itself decides any race.
    pub(crate) fn can_take_over(record: &InboundRecord, fp: &Fingerprint, now: SystemTime) -> bool {
        let live_lease = record.state == RecordState::InFlight
            && record.lease_expires_at.is_some_and(|t| t > now);
        let window_over = record.replay_until <= now && !live_lease;
        let dead_same_request = record.state == RecordState::InFlight
            && record.lease_expires_at.is_some_and(|t| t <= now)
            && record.fingerprint == *fp;
        window_over || dead_same_request
    }

    pub(crate) fn select() -> String {
        format!(
            "SELECT {COLUMNS} FROM idem_inbound WHERE actor = $1 AND endpoint = $2 AND key = $3"
        )
    }

    /// One value bound to a [`Write`]'s numbered parameter.
    #[derive(Debug)]
    pub(crate) enum Arg {
        Text(String),
        Int(i64),
        Bool(bool),
        Blob(Vec<u8>),
    }

    /// One of the inbound record's writes, as owned values: the sqlx
    /// backends bind it on a pool or a transaction, SQLite's writer on its
    /// group-commit connection (`store::sqlite::writer`). `args[i]` binds
    /// `$i+1`.
    #[derive(Debug)]
    pub(crate) struct Write {
        pub(crate) sql: &'static str,
        pub(crate) args: Vec<Arg>,
    }

    impl Write {
        fn scoped(sql: &'static str, scope: &Scope, rest: Vec<Arg>) -> Self {
            let mut args = vec![
                Arg::Text(scope.actor.clone()),
                Arg::Text(scope.endpoint.clone()),
                Arg::Text(scope.key.as_str().to_owned()),
            ];
            args.extend(rest);
            Self { sql, args }
        }

        /// [`INSERT`] or [`TAKE_OVER`] (same parameters).
        pub(crate) fn start(
            sql: &'static str,
            scope: &Scope,
            fingerprint: &Fingerprint,
            token: &str,
            expires_at: SystemTime,
            replay_until: SystemTime,
            now: SystemTime,
        ) -> Self {
            Self::scoped(
                sql,
                scope,
                vec![
                    Arg::Text(fingerprint.as_str().to_owned()),
                    Arg::Text(token.to_owned()),
                    Arg::Int(to_millis(expires_at)),
                    Arg::Int(to_millis(replay_until)),
                    Arg::Int(to_millis(now)),
                ],
            )
        }

        pub(crate) fn complete(
            lease: &InboundLease,
            response: &StoredResponse,
            now: SystemTime,
        ) -> Self {
            Self::scoped(
                COMPLETE,
                &lease.scope,
                vec![
                    Arg::Text(lease.token.clone()),
                    Arg::Int(i64::from(response.status.as_u16())),
                    Arg::Blob(encode_headers(&response.headers)),
                    Arg::Blob(response.body.to_vec()),
                    Arg::Bool(response.replayable),
                    Arg::Int(to_millis(now)),
                ],
            )
        }

        pub(crate) fn release(lease: &InboundLease) -> Self {
            Self::scoped(RELEASE, &lease.scope, vec![Arg::Text(lease.token.clone())])
        }

        pub(crate) fn renew(lease: &InboundLease, until: SystemTime) -> Self {
            Self::scoped(
                RENEW,
                &lease.scope,
                vec![Arg::Text(lease.token.clone()), Arg::Int(to_millis(until))],
            )
        }
    }

    /// Stored header form: `name: value` lines.
    pub(crate) fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in headers {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out
    }

    pub(crate) fn decode_headers(raw: &[u8]) -> Result<HeaderMap, StoreError> {
        let mut headers = HeaderMap::new();
        for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let at = line
                .windows(2)
                .position(|w| w == b": ")
                .ok_or_else(|| StoreError::Corrupt("stored header line without ': '".into()))?;
            let name = HeaderName::from_bytes(&line[..at])
                .map_err(|e| StoreError::Corrupt(format!("stored header name: {e}")))?;
            let value = HeaderValue::from_bytes(&line[at + 2..])
                .map_err(|e| StoreError::Corrupt(format!("stored header value: {e}")))?;
            headers.append(name, value);
        }
        Ok(headers)
    }

    fn corrupt(e: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt(e.to_string())
    }

    pub(crate) fn decode_record<R>(row: &R) -> Result<InboundRecord, StoreError>
    where
        R: Row,
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> bool: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> Vec<u8>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let text = |col: &str| row.try_get::<String, _>(col).map_err(corrupt);
        let int = |col: &str| row.try_get::<i64, _>(col).map_err(corrupt);
        let opt_int = |col: &str| row.try_get::<Option<i64>, _>(col).map_err(corrupt);
        let key = ClientKey::new(text("key")?).map_err(corrupt)?;
        let state = RecordState::parse(&text("state")?)?;
        let response = match opt_int("response_status")? {
            Some(status) if state == RecordState::Completed => {
                let status = u16::try_from(status)
                    .ok()
                    .and_then(|s| StatusCode::from_u16(s).ok())
                    .ok_or_else(|| corrupt(format!("stored status {status}")))?;
                let headers = row
                    .try_get::<Option<Vec<u8>>, _>("response_headers")
                    .map_err(corrupt)?
                    .unwrap_or_default();
                let body = row
                    .try_get::<Option<Vec<u8>>, _>("response_body")
                    .map_err(corrupt)?
                    .unwrap_or_default();
                Some(StoredResponse {
                    status,
                    headers: decode_headers(&headers)?,
                    body: Bytes::from(body),
                    replayable: row.try_get::<bool, _>("replayable").map_err(corrupt)?,
                })
            }
            _ => None,
        };
        Ok(InboundRecord {
            scope: Scope {
                actor: text("actor")?,
                endpoint: text("endpoint")?,
                key,
            },
            fingerprint: Fingerprint::from_stored(text("fingerprint")?),
            state,
            lease_expires_at: opt_int("lease_expires_at")?.map(from_millis),
            replay_until: from_millis(int("replay_until")?),
            created_at: from_millis(int("created_at")?),
            updated_at: from_millis(int("updated_at")?),
            response,
        })
    }

    pub(crate) fn decode_run<R>(row: &R) -> Result<SweepRun, StoreError>
    where
        R: Row,
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let int = |col: &str| row.try_get::<i64, _>(col).map_err(corrupt);
        Ok(SweepRun {
            started_at: from_millis(int("started_at")?),
            finished_at: from_millis(int("finished_at")?),
            cutoff: from_millis(int("cutoff")?),
            deleted: u64::try_from(int("deleted")?).unwrap_or(0),
            batches: u32::try_from(int("batches")?).unwrap_or(0),
            error: row.try_get::<Option<String>, _>("error").map_err(corrupt)?,
        })
    }
}

/// Writes the [`InboundStore`] and [`TxInboundStore`] impls for one sqlx
/// backend.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
macro_rules! impl_inbound_store {
    ($store:ty, $db:ty, $wait:ident, $write:ident) => {
        impl $store {
            /// Runs one inbound write on `executor`; the rows it changed.
            async fn inbound_write_on<'e, E>(
                executor: E,
                write: &sql::Write,
            ) -> Result<u64, StoreError>
            where
                E: sqlx::Executor<'e, Database = $db>,
            {
                let mut query = sqlx::query(write.sql);
                for arg in &write.args {
                    query = match arg {
                        sql::Arg::Text(v) => query.bind(v.as_str()),
                        sql::Arg::Int(v) => query.bind(*v),
                        sql::Arg::Bool(v) => query.bind(*v),
                        sql::Arg::Blob(v) => query.bind(v.as_slice()),
                    };
                }
                let done = query
                    .execute(executor)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                Ok(done.rows_affected())
            }
        }

        #[async_trait]
        impl InboundStore for $store {
            async fn begin(
                &self,
                req: &BeginRequest<'_>,
                now: SystemTime,
            ) -> Result<Begin, StoreError> {
                let scope = req.scope;
                let expires_at = now + req.lease_for;
                let replay_until = now + req.ttl;
                // Read first: a replay (the key exists and is not stale)
                // costs one SELECT and no write. A fresh key pays one extra
                // index read before its insert.
                if let Some(record) = self.get(scope).await? {
                    if !sql::can_take_over(&record, req.fingerprint, now) {
                        return Ok(Begin::Existing(record));
                    }
                }
                // A record can vanish (swept or released) between the insert
                // and the read; try again a few times.
                for _ in 0..4 {
                    let token = uuid::Uuid::new_v4().to_string();
                    let start = |statement| {
                        sql::Write::start(
                            statement,
                            scope,
                            req.fingerprint,
                            &token,
                            expires_at,
                            replay_until,
                            now,
                        )
                    };
                    let inserted = $write(self, start(sql::INSERT)).await?;
                    let lease = |took_over| InboundLease {
                        scope: scope.clone(),
                        token: token.clone(),
                        expires_at,
                        replay_until,
                        took_over,
                    };
                    if inserted == 1 {
                        return Ok(Begin::Started(lease(false)));
                    }
                    // The key exists. A replay needs nothing more than this
                    // read; only a stale record is worth a conditional write.
                    let Some(record) = self.get(scope).await? else {
                        continue;
                    };
                    if !sql::can_take_over(&record, req.fingerprint, now) {
                        return Ok(Begin::Existing(record));
                    }
                    let taken = $write(self, start(sql::TAKE_OVER)).await?;
                    if taken == 1 {
                        return Ok(Begin::Started(lease(true)));
                    }
                    // Another request took it over first: look again.
                }
                Err(StoreError::Unavailable {
                    message: "inbound record kept vanishing during begin".into(),
                    source: None,
                })
            }

            async fn get(&self, scope: &Scope) -> Result<Option<InboundRecord>, StoreError> {
                let row = sqlx::query(&sql::select())
                    .bind(&scope.actor)
                    .bind(&scope.endpoint)
                    .bind(scope.key.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                row.as_ref().map(sql::decode_record).transpose()
            }

            async fn complete(
                &self,
                lease: &InboundLease,
                response: &StoredResponse,
                now: SystemTime,
            ) -> Result<bool, StoreError> {
                let done = $write(self, sql::Write::complete(lease, response, now)).await;
                local_notifier().notify_waiters();
                Ok(done? == 1)
            }

            async fn release(&self, lease: &InboundLease) -> Result<bool, StoreError> {
                let done = $write(self, sql::Write::release(lease)).await;
                local_notifier().notify_waiters();
                Ok(done? == 1)
            }

            async fn renew(
                &self,
                lease: &InboundLease,
                lease_for: Duration,
                now: SystemTime,
            ) -> Result<bool, StoreError> {
                let done = $write(self, sql::Write::renew(lease, now + lease_for)).await?;
                Ok(done == 1)
            }

            async fn sweep_batch(
                &self,
                cutoff: SystemTime,
                now: SystemTime,
                batch: u32,
            ) -> Result<u64, StoreError> {
                let done = sqlx::query(sql::SWEEP)
                    .bind(to_millis(cutoff))
                    .bind(to_millis(now))
                    .bind(i64::from(batch))
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                Ok(done.rows_affected())
            }

            async fn record_sweep(&self, run: &SweepRun) -> Result<(), StoreError> {
                sqlx::query(sql::RECORD_SWEEP)
                    .bind(to_millis(run.started_at))
                    .bind(to_millis(run.finished_at))
                    .bind(to_millis(run.cutoff))
                    .bind(i64::try_from(run.deleted).unwrap_or(i64::MAX))
                    .bind(i64::from(run.batches))
                    .bind(run.error.as_deref())
                    .execute(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                Ok(())
            }

            async fn sweep_runs(&self, limit: u32) -> Result<Vec<SweepRun>, StoreError> {
                let rows = sqlx::query(sql::SWEEP_RUNS)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                rows.iter().map(sql::decode_run).collect()
            }

            async fn wait_for_change(&self, scope: &Scope, timeout: Duration) {
                $wait(self, scope, timeout).await
            }
        }

        #[async_trait]
        impl TxInboundStore for $store {
            type Db = $db;

            async fn begin_tx(&self) -> Result<sqlx::Transaction<'static, $db>, StoreError> {
                begin_tx_on(&self.pool).await
            }

            async fn complete_in(
                tx: &mut sqlx::Transaction<'static, $db>,
                lease: &InboundLease,
                response: &StoredResponse,
                now: SystemTime,
            ) -> Result<bool, StoreError> {
                let write = sql::Write::complete(lease, response, now);
                Ok(Self::inbound_write_on(&mut **tx, &write).await? == 1)
            }
        }
    };
}

#[cfg(feature = "sqlite")]
mod sqlite_impl {
    use super::*;
    use crate::clock::to_millis;
    use crate::ledger::SqliteStore;

    async fn begin_tx_on(
        pool: &sqlx::SqlitePool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>, StoreError> {
        // IMMEDIATE takes the write lock up front, so the handler's writes
        // never fail on a lock upgrade halfway through.
        pool.begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::from_sqlx)
    }

    async fn local_wait(store: &SqliteStore, scope: &Scope, timeout: Duration) {
        let notified = local_notifier().notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Ok(Some(r)) = store.get(scope).await
            && r.state == RecordState::InFlight
        {
            let _ = tokio::time::timeout(timeout, notified).await;
        }
    }

    /// An inbound write: on the store's writer connection, which commits
    /// the writes that queue behind each other together (group commit),
    /// when the store has one; otherwise on the pool.
    async fn sqlite_write(store: &SqliteStore, write: sql::Write) -> Result<u64, StoreError> {
        match store.writer() {
            Some(writer) => writer.grouped(write).await,
            None => SqliteStore::inbound_write_on(&store.pool, &write).await,
        }
    }

    impl_inbound_store!(SqliteStore, sqlx::Sqlite, local_wait, sqlite_write);
}

#[cfg(feature = "postgres")]
mod postgres_impl {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use tokio::sync::broadcast;

    use super::*;
    use crate::clock::to_millis;
    use crate::ledger::PgStore;

    /// The channel the `idem_inbound` trigger notifies on (payload: the
    /// client key).
    const CHANNEL: &str = "idem_inbound";

    async fn begin_tx_on(
        pool: &sqlx::PgPool,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        pool.begin().await.map_err(StoreError::from_sqlx)
    }

    type Listeners = HashMap<String, (broadcast::Sender<String>, tokio::task::JoinHandle<()>)>;

    /// One `LISTEN` connection per database per process, shared by every
    /// waiter; started on the first wait.
    fn subscribe(pool: &sqlx::PgPool) -> broadcast::Receiver<String> {
        static LISTENERS: OnceLock<Mutex<Listeners>> = OnceLock::new();
        let options = pool.connect_options();
        let id = format!(
            "{}:{}/{}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or_default()
        );
        let mut map = LISTENERS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((tx, task)) = map.get(&id)
            && !task.is_finished()
        {
            return tx.subscribe();
        }
        let (tx, rx) = broadcast::channel(1024);
        let sender = tx.clone();
        let options = (*options).clone();
        let task = tokio::spawn(async move {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(options);
            let Ok(mut listener) = sqlx::postgres::PgListener::connect_with(&pool).await else {
                return;
            };
            if listener.listen(CHANNEL).await.is_err() {
                return;
            }
            while let Ok(n) = listener.recv().await {
                let _ = sender.send(n.payload().to_owned());
            }
        });
        map.insert(id, (tx, task));
        rx
    }

    async fn pg_wait(store: &PgStore, scope: &Scope, timeout: Duration) {
        let mut remote = subscribe(&store.pool);
        let local = local_notifier().notified();
        tokio::pin!(local);
        local.as_mut().enable();
        // Mark the record as waited for, after subscribing: a completion
        // before the mark finds no waiter and sends nothing, but then the
        // mark matches no in-flight record and the wait ends here; a
        // completion after it sees the mark and notifies.
        match sqlx::query(sql::MARK_WAITING)
            .bind(&scope.actor)
            .bind(&scope.endpoint)
            .bind(scope.key.as_str())
            .execute(&store.pool)
            .await
        {
            Ok(done) if done.rows_affected() == 1 => {}
            _ => return,
        }
        let key = scope.key.as_str().to_owned();
        let remote_done = async move {
            loop {
                match remote.recv().await {
                    Ok(k) if k == key => return,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    // The listener stopped: fall back to the timeout.
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        let _ = tokio::time::timeout(timeout, async {
            tokio::select! {
                () = &mut local => {}
                () = remote_done => {}
            }
        })
        .await;
    }

    async fn pg_write(store: &PgStore, write: sql::Write) -> Result<u64, StoreError> {
        PgStore::inbound_write_on(&store.pool, &write).await
    }

    impl_inbound_store!(PgStore, sqlx::Postgres, pg_wait, pg_write);
}
