//! The HTTP side shared by the simulated providers and the mock server: the
//! request as the server saw it, the answer to give, and a small HTTP/1.1
//! server on a thread of its own.
//!
//! The server runs on its own thread and runtime (as wiremock did), so a test
//! that pauses tokio's clock or blocks its own runtime does not stop it, and a
//! held-back answer really takes wall-clock time.

use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use url::Url;

/// One request as the server received it.
///
/// The URL is rebuilt on `http://localhost`, whatever address the client
/// used. [`Debug`](fmt::Debug) leaves the `Authorization` header out.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The URL: `http://localhost`, then the path and query string sent.
    pub url: Url,
    /// The headers.
    pub headers: HeaderMap,
    /// The body, as received.
    pub body: Vec<u8>,
}

impl Request {
    /// A request built by hand (for unit tests of your own matchers or
    /// simulators). `path_and_query` starts with `/`.
    ///
    /// # Errors
    ///
    /// When `path_and_query` does not make a URL.
    pub fn new(
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: impl Into<Vec<u8>>,
    ) -> Result<Self, url::ParseError> {
        Ok(Self {
            method,
            url: Url::parse(&format!("http://localhost{path_and_query}"))?,
            headers,
            body: body.into(),
        })
    }

    /// The path.
    pub fn path(&self) -> &str {
        self.url.path()
    }

    /// A header's value, when present and readable as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The query string's pairs, decoded, in order.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        self.url.query_pairs().into_owned().collect()
    }

    /// The first value of a query parameter.
    pub fn query(&self, name: &str) -> Option<String> {
        self.url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The body read as `application/x-www-form-urlencoded` pairs, in order.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }

    /// The first value of a form field.
    pub fn form_value(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(&self.body)
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The body read as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether this is a write: any method but `GET` and `HEAD`.
    pub fn is_write(&self) -> bool {
        self.method != Method::GET && self.method != Method::HEAD
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .filter(|(k, _)| *k != http::header::AUTHORIZATION)
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or("<binary>")))
            .collect();
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &self.url.as_str())
            .field("headers", &headers)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// An answer: status, headers, body, and how long to hold it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Option<Duration>,
}

impl Reply {
    /// An empty answer with this status.
    pub fn new(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
        }
    }

    /// An answer with this status and a JSON body.
    pub fn json(status: u16, body: impl serde::Serialize) -> Self {
        Self::new(status).set_body_json(body)
    }

    /// Sets a JSON body (and `Content-Type: application/json`). A value
    /// that does not serialise gives an empty body.
    #[must_use]
    pub fn set_body_json(self, body: impl serde::Serialize) -> Self {
        let text = serde_json::to_vec(&body).unwrap_or_default();
        self.set_body_raw(text, "application/json")
    }

    /// Sets a text body (and `Content-Type: text/plain`).
    #[must_use]
    pub fn set_body_string(self, body: impl Into<String>) -> Self {
        self.set_body_raw(body.into(), "text/plain")
    }

    /// Sets a body with its content type.
    #[must_use]
    pub fn set_body_raw(mut self, body: impl Into<Vec<u8>>, content_type: &str) -> Self {
        self.body = body.into();
        self.insert_header("content-type", content_type)
    }

    /// Sets a header, replacing any of the same name.
    #[must_use]
    pub fn insert_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Holds the answer back for `delay` (make it longer than the client's
    /// attempt timeout and the client sees a timeout).
    #[must_use]
    pub fn set_delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    /// The status.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    /// How long the answer is held back.
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }

    fn into_response(self) -> hyper::Response<Full<Bytes>> {
        let mut response = hyper::Response::new(Full::new(Bytes::from(self.body)));
        *response.status_mut() = http::StatusCode::from_u16(self.status)
            .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
        for (k, v) in self.headers {
            if let (Ok(k), Ok(v)) = (
                http::HeaderName::try_from(k),
                http::HeaderValue::try_from(v),
            ) {
                response.headers_mut().insert(k, v);
            }
        }
        response
    }
}

/// Locks `state`, going on after a panic elsewhere (a test that panicked
/// while holding the lock has already failed; the server keeps answering).
pub(crate) fn lock<T>(state: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the server does with a request.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Answers (after the reply's delay).
    Reply(Reply),
    /// Resets the connection: no answer at all.
    Reset,
}

/// Decides the outcome of each request. Called under no lock of the
/// server's; it must not block for long.
pub(crate) trait Handler: Send + Sync + 'static {
    fn handle(&self, request: Request) -> Outcome;
}

/// A running server. Dropping it stops the server and closes its
/// connections.
pub(crate) struct Server {
    addr: SocketAddr,
    _stop: tokio::sync::watch::Sender<()>,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server").field("addr", &self.addr).finish()
    }
}

impl Server {
    /// Serves `handler` on a free loopback port.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound or no thread started (a test
    /// environment fault).
    pub(crate) fn start(handler: Arc<dyn Handler>) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind a loopback port for a test server");
        Self::start_on(listener, handler)
    }

    /// Serves `handler` on `listener`.
    ///
    /// # Panics
    ///
    /// When the listener is unusable or no thread can be started.
    pub(crate) fn start_on(listener: std::net::TcpListener, handler: Arc<dyn Handler>) -> Self {
        let addr = listener
            .local_addr()
            .expect("a bound listener has an address");
        listener
            .set_nonblocking(true)
            .expect("make the test listener non-blocking");
        let (stop, stopped) = tokio::sync::watch::channel(());
        std::thread::Builder::new()
            .name(format!("idem-testkit {addr}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the test server's runtime");
                runtime.block_on(serve(listener, handler, stopped));
            })
            .expect("start the test server's thread");
        Self { addr, _stop: stop }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }
}

async fn serve(
    listener: std::net::TcpListener,
    handler: Arc<dyn Handler>,
    mut stopped: tokio::sync::watch::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let stream = tokio::select! {
            biased;
            _ = stopped.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors or an aborted handshake: try again.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let reset = Arc::new(AtomicBool::new(false));
            let io = TokioIo::new(Connection {
                stream,
                reset: reset.clone(),
            });
            let service =
                service_fn(move |request| answer(handler.clone(), reset.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

async fn answer(
    handler: Arc<dyn Handler>,
    reset: Arc<AtomicBool>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, ConnectionReset> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let target = parts
        .uri
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let Ok(url) = Url::parse(&format!("http://localhost{target}")) else {
        return Ok(Reply::new(400).into_response());
    };
    let request = Request {
        method: parts.method,
        url,
        headers: parts.headers,
        body,
    };
    match handler.handle(request) {
        Outcome::Reset => {
            reset.store(true, Ordering::SeqCst);
            Err(ConnectionReset)
        }
        Outcome::Reply(reply) => {
            if let Some(delay) = reply.delay {
                tokio::time::sleep(delay).await;
            }
            Ok(reply.into_response())
        }
    }
}

/// The error that makes hyper drop a connection the handler wants reset.
#[derive(Debug)]
struct ConnectionReset;

impl fmt::Display for ConnectionReset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("connection reset by the test server")
    }
}

impl std::error::Error for ConnectionReset {}

/// A TCP stream that, when a reset was asked for, is closed with `SO_LINGER`
/// 0: the client gets a TCP RST rather than an orderly close.
struct Connection {
    stream: tokio::net::TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
