//! A fault-injecting TCP proxy for HTTP/1.1 between a client and a local
//! fake provider.
//!
//! The proxy reads each request whole (headers and a `Content-Length` body)
//! and applies the next [`Action`] of its schedule to it: pass it, hold the
//! request or the response, reset the connection before forwarding, forward
//! and then drop the answer, or forward and send only part of the answer.
//! When the schedule is used up every request passes. Each request opens its
//! own upstream connection, so faults do not depend on connection reuse.
//!
//! Every request is logged ([`ProxyRecord`]) with whether its bytes reached
//! the upstream, so a test can prove that a request was never sent.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use idem_tests::proxy::{Action, FaultProxy};
//! let proxy = FaultProxy::start("127.0.0.1:9".parse().unwrap(), vec![Action::ResetBeforeForward])
//!     .await
//!     .unwrap();
//! assert!(proxy.base_url().starts_with("http://127.0.0.1:"));
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::http1::read_message;

/// What the proxy does with one request.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum Action {
    /// Forward the request and relay the whole answer.
    Pass,
    /// Hold the request this long, then forward it and relay the answer. A
    /// hold longer than the client's attempt timeout makes the request land
    /// after the client gave up.
    DelayRequest(Duration),
    /// Forward at once, hold the answer this long, then relay it.
    DelayResponse(Duration),
    /// Read the request, never forward it, and reset the client's
    /// connection (TCP RST). The provider sees nothing.
    ResetBeforeForward,
    /// Forward the request, read the whole answer, then reset the client's
    /// connection instead of relaying it: the effect happened, the client
    /// cannot know.
    DropResponse,
    /// Forward the request, then relay only this fraction (0 < f < 1) of the
    /// answer's bytes and close the connection.
    Truncate(f32),
}

impl Action {
    /// Whether the request reaches the provider under this action.
    pub fn forwards(self) -> bool {
        !matches!(self, Self::ResetBeforeForward)
    }
}

/// One request as the proxy handled it.
#[derive(Clone)]
pub struct ProxyRecord {
    /// The action applied.
    pub action: Action,
    /// The request line and headers plus body, as read from the client.
    pub request: Vec<u8>,
    /// Whether the request was written to the upstream whole.
    pub forwarded: bool,
    /// Answer bytes relayed to the client.
    pub relayed: usize,
}

impl fmt::Debug for ProxyRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let line = self
            .request
            .split(|b| *b == b'\r')
            .next()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        f.debug_struct("ProxyRecord")
            .field("action", &self.action)
            .field("request_line", &line)
            .field("forwarded", &self.forwarded)
            .field("relayed", &self.relayed)
            .finish()
    }
}

impl ProxyRecord {
    /// Whether the request bytes contain `needle` (for example a key in a
    /// header or in a form body).
    pub fn mentions(&self, needle: &str) -> bool {
        let needle = needle.as_bytes();
        !needle.is_empty() && self.request.windows(needle.len()).any(|w| w == needle)
    }
}

#[derive(Default)]
struct Shared {
    schedule: Mutex<VecDeque<Action>>,
    log: Mutex<Vec<ProxyRecord>>,
    /// Requests read and not yet finished (idle kept-alive connections do
    /// not count).
    busy: AtomicUsize,
}

impl Shared {
    fn next_action(&self) -> Action {
        self.schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or(Action::Pass)
    }

    fn record(&self, record: ProxyRecord) {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record);
    }
}

/// The proxy. Dropping it stops accepting connections.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// How long the proxy waits for an upstream answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

impl FaultProxy {
    /// Starts a proxy on a random loopback port in front of `upstream`,
    /// applying `schedule` to the requests in arrival order.
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn start(upstream: SocketAddr, schedule: Vec<Action>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        shared
            .schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(schedule);
        let accept_shared = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = accept_shared.clone();
                tokio::spawn(async move {
                    let _ = serve(client, upstream, &shared).await;
                });
            }
        });
        Ok(Self {
            addr,
            shared,
            accept,
        })
    }

    /// Starts a proxy in front of a URL such as `http://127.0.0.1:1234`.
    ///
    /// # Errors
    ///
    /// When the URL has no loopback socket address, or no port can be bound.
    pub async fn in_front_of(upstream: &str, schedule: Vec<Action>) -> std::io::Result<Self> {
        let addr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse::<SocketAddr>()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Self::start(addr, schedule).await
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`: the base URL to give a client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Appends actions to the schedule.
    pub fn extend(&self, actions: impl IntoIterator<Item = Action>) {
        self.shared
            .schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(actions);
    }

    /// Actions not yet applied.
    pub fn remaining(&self) -> usize {
        self.shared
            .schedule
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Every request handled so far, in the order they finished.
    pub fn log(&self) -> Vec<ProxyRecord> {
        self.shared
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Waits until no request is being handled (held requests have landed or
    /// been dropped), for at most `limit`. Returns whether it got there.
    pub async fn settle(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        loop {
            if self.shared.busy.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Serves one client connection: one request at a time, each with the next
/// action.
async fn serve(
    mut client: TcpStream,
    upstream: SocketAddr,
    shared: &Shared,
) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_message(&mut client, &mut buf, false).await? else {
            return Ok(());
        };
        let _busy = Busy::new(&shared.busy);
        let action = shared.next_action();
        let mut record = ProxyRecord {
            action,
            request: request.clone(),
            forwarded: false,
            relayed: 0,
        };
        if action == Action::ResetBeforeForward {
            shared.record(record);
            return reset(client);
        }
        if let Action::DelayRequest(d) = action {
            tokio::time::sleep(d).await;
        }
        let answer = match exchange(upstream, &request, &mut record).await {
            Ok(answer) => answer,
            Err(e) => {
                shared.record(record);
                let _ = reset(client);
                return Err(e);
            }
        };
        match action {
            Action::DropResponse => {
                shared.record(record);
                return reset(client);
            }
            Action::Truncate(fraction) => {
                let keep = ((answer.len() as f32 * fraction) as usize).clamp(1, answer.len() - 1);
                let sent = client.write_all(&answer[..keep]).await;
                record.relayed = if sent.is_ok() { keep } else { 0 };
                shared.record(record);
                let _ = client.shutdown().await;
                return Ok(());
            }
            Action::DelayResponse(d) => tokio::time::sleep(d).await,
            _ => {}
        }
        let sent = client.write_all(&answer).await;
        record.relayed = if sent.is_ok() { answer.len() } else { 0 };
        shared.record(record);
        sent?;
    }
}

/// Counts a request as in progress until dropped.
struct Busy<'a>(&'a AtomicUsize);

impl<'a> Busy<'a> {
    fn new(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Sends one request upstream on a fresh connection and reads its answer
/// whole.
async fn exchange(
    upstream: SocketAddr,
    request: &[u8],
    record: &mut ProxyRecord,
) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(upstream).await?;
    conn.set_nodelay(true)?;
    conn.write_all(request).await?;
    record.forwarded = true;
    let mut buf = Vec::new();
    match tokio::time::timeout(UPSTREAM_TIMEOUT, read_message(&mut conn, &mut buf, true)).await {
        Ok(Ok(Some(answer))) => Ok(answer),
        Ok(Ok(None)) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "upstream closed without an answer",
        )),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "upstream did not answer",
        )),
    }
}

/// Closes with a TCP reset rather than a clean FIN.
fn reset(stream: TcpStream) -> std::io::Result<()> {
    // Deprecated because a non-zero linger blocks the thread on drop; a zero
    // linger never blocks: the kernel discards the buffers and sends RST.
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO))?;
    drop(stream);
    Ok(())
}
