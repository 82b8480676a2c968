//! A mock server for wire-level tests: canned answers for matching
//! requests, each with the number of calls it expects.
//!
//! A [`Mock`] matches requests ([`matchers`]) and answers them with a
//! [`Respond`]er: a [`Reply`], a [`Script`] or a closure. Among the mounted
//! mocks that match and are not used up, the one with the lowest priority
//! number answers (ties: the first mounted); a request nothing matches gets
//! an empty 404. Expectations set with [`Mock::expect`] are checked by
//! [`MockServer::verify`] and when the server is dropped, which panics on a
//! mismatch: a test fails when the provider would have been called more, or
//! less, often than it should.
//!
//! ```
//! use idem_testkit::mock::matchers::{method, path};
//! use idem_testkit::mock::{Mock, MockServer, Script};
//! use idem_testkit::Reply;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = MockServer::start().await;
//! // Two 503s, then a 200: the "fail N times, then succeed" script.
//! Mock::given(method("POST"))
//!     .and(path("/v1/things"))
//!     .respond_with(Script::fail_then(2, Reply::new(503), Reply::json(200, serde_json::json!({"id": 1}))))
//!     .expect(0)
//!     .mount(&server)
//!     .await;
//! assert!(server.uri().starts_with("http://127.0.0.1:"));
//! server.verify().await;
//! # }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::http::{Handler, Outcome, Reply, Request, Server, lock};

/// Decides whether a mock answers a request.
pub trait Match: Send + Sync + 'static {
    /// Whether `request` matches.
    fn matches(&self, request: &Request) -> bool;
}

impl<F: Fn(&Request) -> bool + Send + Sync + 'static> Match for F {
    fn matches(&self, request: &Request) -> bool {
        self(request)
    }
}

/// Makes the answer to a matched request.
pub trait Respond: Send + Sync + 'static {
    /// The answer to `request`.
    fn respond(&self, request: &Request) -> Reply;
}

impl Respond for Reply {
    fn respond(&self, _: &Request) -> Reply {
        self.clone()
    }
}

impl<F: Fn(&Request) -> Reply + Send + Sync + 'static> Respond for F {
    fn respond(&self, request: &Request) -> Reply {
        self(request)
    }
}

/// Answers from a list, one entry per call; the last entry repeats.
#[derive(Debug)]
pub struct Script {
    steps: Vec<Reply>,
    calls: AtomicUsize,
}

impl Script {
    /// Answers with `steps` in order, then the last one again and again. An
    /// empty list answers 500.
    pub fn new(steps: Vec<Reply>) -> Self {
        Self {
            steps,
            calls: AtomicUsize::new(0),
        }
    }

    /// Fails `n` times with `failure`, then answers `success` from then on.
    pub fn fail_then(n: usize, failure: Reply, success: Reply) -> Self {
        let mut steps = vec![failure; n];
        steps.push(success);
        Self::new(steps)
    }
}

impl Respond for Script {
    fn respond(&self, _: &Request) -> Reply {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        match self.steps.get(n).or_else(|| self.steps.last()) {
            Some(reply) => reply.clone(),
            None => Reply::new(500),
        }
    }
}

/// Matchers for [`Mock::given`] and [`MockBuilder::and`].
pub mod matchers {
    use super::Match;
    use crate::http::Request;

    /// Any request.
    pub fn any() -> impl Match {
        |_: &Request| true
    }

    /// The method, such as `"POST"`.
    pub fn method(method: &str) -> impl Match {
        let method = method.to_ascii_uppercase();
        move |r: &Request| r.method.as_str() == method
    }

    /// The path, exactly.
    pub fn path(path: impl Into<String>) -> impl Match {
        let path = path.into();
        move |r: &Request| r.path() == path
    }

    /// A header with this value.
    pub fn header(name: &str, value: &str) -> impl Match {
        let (name, value) = (name.to_owned(), value.to_owned());
        move |r: &Request| r.header(&name) == Some(value.as_str())
    }

    /// A header, whatever its value.
    pub fn header_exists(name: &str) -> impl Match {
        let name = name.to_owned();
        move |r: &Request| r.headers.contains_key(name.as_str())
    }

    /// `Authorization: Basic` with these credentials.
    pub fn basic_auth(user: &str, password: &str) -> impl Match {
        use base64::Engine as _;
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        move |r: &Request| r.header("authorization") == Some(expected.as_str())
    }

    /// A query parameter with this value.
    pub fn query_param(name: &str, value: &str) -> impl Match {
        let (name, value) = (name.to_owned(), value.to_owned());
        move |r: &Request| {
            r.query_pairs()
                .iter()
                .any(|(k, v)| *k == name && *v == value)
        }
    }

    /// No such query parameter.
    pub fn query_param_is_missing(name: &str) -> impl Match {
        let name = name.to_owned();
        move |r: &Request| r.query(&name).is_none()
    }

    /// The body, byte for byte.
    pub fn body_string(body: impl Into<String>) -> impl Match {
        let body = body.into();
        move |r: &Request| r.body == body.as_bytes()
    }

    /// The body is JSON equal to `body`.
    pub fn body_json(body: serde_json::Value) -> impl Match {
        move |r: &Request| r.json().as_ref() == Some(&body)
    }
}

/// A mock in the making: its matchers so far.
pub struct MockBuilder {
    matchers: Vec<Box<dyn Match>>,
}

impl fmt::Debug for MockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockBuilder")
            .field("matchers", &self.matchers.len())
            .finish()
    }
}

impl MockBuilder {
    /// Adds a matcher: all must match.
    #[must_use]
    pub fn and(mut self, matcher: impl Match) -> Self {
        self.matchers.push(Box::new(matcher));
        self
    }

    /// The answer to matching requests.
    pub fn respond_with(self, responder: impl Respond) -> Mock {
        Mock {
            matchers: self.matchers,
            responder: Box::new(responder),
            limit: None,
            expected: None,
            priority: 5,
            name: None,
        }
    }
}

/// A canned answer for matching requests.
pub struct Mock {
    matchers: Vec<Box<dyn Match>>,
    responder: Box<dyn Respond>,
    limit: Option<u64>,
    expected: Option<u64>,
    priority: u8,
    name: Option<String>,
}

impl fmt::Debug for Mock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mock")
            .field("name", &self.name)
            .field("matchers", &self.matchers.len())
            .field("limit", &self.limit)
            .field("expected", &self.expected)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl Mock {
    /// Starts a mock with its first matcher.
    pub fn given(matcher: impl Match) -> MockBuilder {
        MockBuilder {
            matchers: vec![Box::new(matcher)],
        }
    }

    /// Answers at most `n` requests, then stops matching.
    #[must_use]
    pub fn up_to_n_times(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Expects exactly `n` requests (checked by [`MockServer::verify`] and
    /// on drop).
    #[must_use]
    pub fn expect(mut self, n: u64) -> Self {
        self.expected = Some(n);
        self
    }

    /// Lower numbers answer first (default 5).
    #[must_use]
    pub fn with_priority(mut self, priority: u8) -> Self {
        self.priority = priority;
        self
    }

    /// A name for failure messages.
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Mounts the mock on `server`.
    pub async fn mount(self, server: &MockServer) {
        server.state.lock().mocks.push(Mounted {
            mock: self,
            calls: 0,
        });
    }

    fn describe(&self, index: usize) -> String {
        match &self.name {
            Some(name) => format!("mock `{name}`"),
            None => format!("mock #{}", index + 1),
        }
    }
}

struct Mounted {
    mock: Mock,
    calls: u64,
}

#[derive(Default)]
struct State {
    mocks: Vec<Mounted>,
    received: Vec<Request>,
}

struct Shared(Mutex<State>);

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.0)
    }
}

impl Handler for Shared {
    fn handle(&self, request: Request) -> Outcome {
        let mut state = self.lock();
        state.received.push(request.clone());
        let chosen = state
            .mocks
            .iter()
            .enumerate()
            .filter(|(_, m)| m.mock.limit.is_none_or(|limit| m.calls < limit))
            .filter(|(_, m)| m.mock.matchers.iter().all(|x| x.matches(&request)))
            .min_by_key(|(i, m)| (m.mock.priority, *i))
            .map(|(i, _)| i);
        let reply = match chosen.and_then(|i| state.mocks.get_mut(i)) {
            Some(mounted) => {
                mounted.calls += 1;
                mounted.mock.responder.respond(&request)
            }
            None => Reply::new(404),
        };
        Outcome::Reply(reply)
    }
}

/// A mock HTTP server on a free loopback port. Dropping it checks the
/// mocks' expectations (and stops the server).
pub struct MockServer {
    server: Server,
    state: Arc<Shared>,
}

impl fmt::Debug for MockServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockServer")
            .field("uri", &self.server.uri())
            .finish_non_exhaustive()
    }
}

impl MockServer {
    /// Starts a server with no mocks.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound (a test environment fault).
    pub async fn start() -> Self {
        Self::launch(None)
    }

    /// Starts a server with no mocks on `listener` (for a port chosen in
    /// advance).
    ///
    /// # Panics
    ///
    /// When the listener is unusable.
    pub async fn start_on(listener: std::net::TcpListener) -> Self {
        Self::launch(Some(listener))
    }

    fn launch(listener: Option<std::net::TcpListener>) -> Self {
        let state = Arc::new(Shared(Mutex::new(State::default())));
        let handler: Arc<dyn Handler> = state.clone();
        let server = match listener {
            Some(listener) => Server::start_on(listener, handler),
            None => Server::start(handler),
        };
        Self { server, state }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// Every request received, in order.
    pub async fn received_requests(&self) -> Vec<Request> {
        self.state.lock().received.clone()
    }

    /// Panics unless every mock got the number of requests it expects.
    pub async fn verify(&self) {
        if let Some(failures) = self.failures() {
            panic!("{failures}");
        }
    }

    fn failures(&self) -> Option<String> {
        let state = self.state.lock();
        let failures: Vec<String> = state
            .mocks
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let expected = m.mock.expected?;
                (m.calls != expected).then(|| {
                    format!(
                        "{} expected {expected} request(s), got {}",
                        m.mock.describe(i),
                        m.calls
                    )
                })
            })
            .collect();
        if failures.is_empty() {
            return None;
        }
        let received: Vec<String> = state
            .received
            .iter()
            .map(|r| format!("  {} {}", r.method, r.url.as_str()))
            .collect();
        Some(format!(
            "mock expectations not met:\n  {}\nrequests received:\n{}",
            failures.join("\n  "),
            received.join("\n")
        ))
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        if let Some(failures) = self.failures() {
            panic!("{failures}");
        }
    }
}
