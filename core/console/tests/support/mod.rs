//! Shared by the console's test targets: a seeded ledger on SQLite or
//! PostgreSQL, a test reconciliation, and a raw HTTP/1.1 client.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use idem::ledger::{ClaimFrom, Completion, NewOperation, Resolution};
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
use idem::{Fingerprint, IdempotencyKey, LedgerStore};
use idem_console::Ledger;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const FAILED: &str = "joes-bikes_transactions_1_v1";
pub const UNKNOWN: &str = "joes-bikes_service_ticket_messages_2_v1";
pub const OTHER_SHOP_UNKNOWN: &str = "ann-cycles_transactions_3_v1";
pub const SUCCEEDED: &str = "joes-bikes_transactions_4_v1";
pub const STALE_SENDING: &str = "joes-bikes_social_posts_5_v1";
pub const LIVE_SENDING: &str = "joes-bikes_social_posts_6_v1";
pub const OLD_FAILED: &str = "joes-bikes_transactions_7_v1";
/// Stored in a response body: must never reach a page, the API or the CLI.
pub const BODY_SECRET: &str = "SECRET-BODY-4242";

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A ledger store of either kind, kept alive with its temporary directory.
pub struct Db {
    pub store: Arc<dyn LedgerStore>,
    pub ledger: Ledger,
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

/// Opens a fresh database of `backend`, or `None` (PostgreSQL unreachable
/// outside CI, with a loud SKIP from idem's helper).
pub async fn open(backend: Backend, test: &str) -> Option<Db> {
    match backend {
        Backend::Sqlite => {
            let (store, dir) = idem::testing::sqlite_store().await;
            let url = idem::testing::sqlite_path(&dir).display().to_string();
            Some(Db {
                store: Arc::new(store.clone()),
                ledger: Ledger::sqlite(store).await.unwrap(),
                url,
                _dir: Some(dir),
            })
        }
        Backend::Postgres => {
            let url = idem::testing::pg_database_url(test).await?;
            let store = idem::ledger::PgStore::connect(&url).await.unwrap();
            Some(Db {
                store: Arc::new(store.clone()),
                ledger: Ledger::postgres(store).await.unwrap(),
                url,
                _dir: None,
            })
        }
    }
}

pub fn key(s: &str) -> IdempotencyKey {
    s.parse().unwrap()
}

pub async fn seed_one(
    store: &dyn LedgerStore,
    k: &str,
    provider: &str,
    completion: Option<Completion>,
    lease: Duration,
    at: SystemTime,
) -> IdempotencyKey {
    let k = key(k);
    let fp = Fingerprint::builder().body(k.as_str().as_bytes()).finish();
    store
        .begin(&NewOperation::new(k.clone(), provider, "create", fp), at)
        .await
        .unwrap();
    let l = store
        .claim(&k, ClaimFrom::Pending, lease, at)
        .await
        .unwrap()
        .unwrap();
    if let Some(c) = completion {
        store.complete(&l, &c, at).await.unwrap();
    }
    k
}

/// Seeds one row of every kind the console must tell apart.
pub async fn seed(store: &dyn LedgerStore, now: SystemTime) {
    let hour = Duration::from_secs(3600);
    let earlier = now - hour;
    let failed = Completion::Failed {
        status: 402,
        body: Bytes::from(format!(
            "{{\"id\":\"ch_declined\",\"detail\":\"{BODY_SECRET}\"}}"
        )),
        note: "card declined".into(),
    };
    let unknown = || Completion::Unknown {
        note: "timed out after sending".into(),
        status: None,
    };
    seed_one(store, FAILED, "stripe", Some(failed), hour, earlier).await;
    seed_one(store, UNKNOWN, "twilio", Some(unknown()), hour, earlier).await;
    seed_one(
        store,
        OTHER_SHOP_UNKNOWN,
        "stripe",
        Some(unknown()),
        hour,
        earlier,
    )
    .await;
    let ok = Completion::Succeeded {
        status: 200,
        body: Bytes::from(format!(
            "{{\"id\":\"pi_42\",\"client_secret\":\"{BODY_SECRET}\"}}"
        )),
    };
    seed_one(store, SUCCEEDED, "stripe", Some(ok), hour, earlier).await;
    // A worker died holding this one: its lease ran out 59 minutes ago.
    seed_one(
        store,
        STALE_SENDING,
        "meta",
        None,
        Duration::from_secs(60),
        earlier,
    )
    .await;
    // A worker is sending this one right now.
    seed_one(store, LIVE_SENDING, "meta", None, hour, now).await;
    let old = Completion::Failed {
        status: 400,
        body: Bytes::from_static(b"{}"),
        note: "invalid phone".into(),
    };
    seed_one(
        store,
        OLD_FAILED,
        "stripe",
        Some(old),
        hour,
        now - 10 * 86_400 * Duration::from_secs(1),
    )
    .await;
}

/// A reconciliation for `twilio` that finds every message (and settles the
/// row through the store), as an adapter would on positive proof.
#[derive(Debug)]
pub struct FindsEverything {
    pub store: Arc<dyn LedgerStore>,
    pub provider: &'static str,
}

#[async_trait::async_trait]
impl Reconcile for FindsEverything {
    fn provider(&self) -> &str {
        self.provider
    }
    async fn reconcile(&self, key: &IdempotencyKey) -> Result<ReconcileVerdict, ReconcileError> {
        self.store
            .resolve(
                key,
                &Resolution::Succeeded {
                    status: 200,
                    body: Bytes::from_static(b"{\"sid\":\"SM0001\"}"),
                    note: "found by the test lookup".into(),
                },
                SystemTime::now(),
            )
            .await
            .map_err(|e| ReconcileError::NotReconcilable {
                key: key.clone(),
                reason: e.to_string(),
            })?;
        Ok(ReconcileVerdict::Applied {
            provider_id: Some("SM0001".into()),
            note: "found by the test lookup".into(),
        })
    }
}

/// Serves `app` on a free local port.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// A response read off the wire.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// One plain HTTP/1.1 request over a fresh TCP connection.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, rest) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    Reply {
        status,
        head: head.to_owned(),
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}
