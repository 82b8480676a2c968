//! A simulated Google Business Profile API (feature `fake`), for tests, demos
//! and chaos runs.
//!
//! It serves the four calls the adapter makes, with Google's paths, field
//! names and error bodies, and keeps real state: review replies, local posts
//! (listed with `pageSize` / `pageToken`). It counts what it really did
//! ([`side_effects`](FakeGbp::side_effects)), independently of the client,
//! and takes [`Fault`]s for the next write requests.
//!
//! ```no_run
//! # async fn demo() {
//! use idem_gbp::fake::{FakeGbp, Fault};
//! use std::time::Duration;
//!
//! let fake = FakeGbp::start().await;
//! fake.inject(Fault::LoseResponse { delay: Duration::from_secs(2) });
//! // ... point a GbpClient at fake.base_url() ...
//! assert!(fake.side_effects() <= 1);
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::Method;
use idem::{Clock, SystemClock};
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::client::MAX_REPLY_BYTES;
use idem::time::format_rfc3339_nanos as format_rfc3339;

/// A fault for the next write request (`PUT`, `POST`, `DELETE`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// 503 `UNAVAILABLE`; nothing is done.
    ServerError,
    /// 429 `RESOURCE_EXHAUSTED` with a `RetryInfo` detail and `Retry-After`;
    /// nothing is done.
    RateLimited {
        /// The delay Google asks for.
        retry_after_secs: u64,
    },
    /// The write is done, but the answer comes only after `delay` (longer
    /// than the client's attempt timeout: the client sees a timeout).
    LoseResponse {
        /// How long the answer is held back.
        delay: Duration,
    },
    /// The write is done, then 504 `DEADLINE_EXCEEDED` is returned (Google
    /// documents that this may happen).
    DeadlineExceeded,
    /// 401 `UNAUTHENTICATED`; nothing is done.
    Unauthenticated,
    /// 400 `INVALID_ARGUMENT`; nothing is done.
    InvalidArgument,
}

#[derive(Debug, Default)]
struct State {
    faults: VecDeque<Fault>,
    /// (account, location, review) -> reply JSON.
    replies: BTreeMap<(String, String, String), Value>,
    /// (account, location) -> posts in creation order.
    posts: BTreeMap<(String, String), Vec<Value>>,
    side_effects: usize,
    write_requests: usize,
    read_requests: usize,
    valid_token: Option<String>,
    max_page_size: usize,
    next_id: u64,
}

/// The simulated provider. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeGbp {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

struct Responder {
    state: Arc<Mutex<State>>,
    clock: Arc<dyn Clock>,
}

fn google_error(code: u16, status: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(code).set_body_json(json!({
        "error": {"code": code, "message": message, "status": status}
    }))
}

impl FakeGbp {
    /// Starts a fake on a free local port, with the system clock.
    pub async fn start() -> Self {
        Self::start_with_clock(SystemClock).await
    }

    /// Starts a fake whose `createTime` / `updateTime` come from `clock`.
    pub async fn start_with_clock(clock: impl Clock) -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State {
            max_page_size: 100,
            ..State::default()
        }));
        Mock::given(any())
            .respond_with(Responder {
                state: state.clone(),
                clock: Arc::new(clock),
            })
            .mount(&server)
            .await;
        Self { server, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The base URL to give `GbpClientBuilder::base_url`.
    pub fn base_url(&self) -> String {
        self.server.uri()
    }

    /// Writes the fake really applied: replies created or replaced, replies
    /// deleted, posts created.
    pub fn side_effects(&self) -> usize {
        self.state().side_effects
    }

    /// Every write request (any method but `GET`/`HEAD`) as it arrived on the
    /// wire, in order, faulted or not: for tests and demos that attribute
    /// attempts to operations by their content.
    pub async fn received_writes(&self) -> Vec<wiremock::Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method != http::Method::GET && r.method != http::Method::HEAD)
            .collect()
    }

    /// Write requests (`PUT`, `POST`, `DELETE`) seen on the wire, faulted or
    /// not.
    pub fn write_requests(&self) -> usize {
        self.state().write_requests
    }

    /// Read requests (`GET`) seen on the wire.
    pub fn read_requests(&self) -> usize {
        self.state().read_requests
    }

    /// Queues `fault` for the next write request that carries a valid token.
    pub fn inject(&self, fault: Fault) {
        self.state().faults.push_back(fault);
    }

    /// Accepts only `Authorization: Bearer <token>` from now on; any other
    /// request gets 401 `UNAUTHENTICATED` and is not processed.
    pub fn require_token(&self, token: impl Into<String>) {
        self.state().valid_token = Some(token.into());
    }

    /// Caps the page size of listings (to exercise pagination).
    pub fn set_max_page_size(&self, n: usize) {
        self.state().max_page_size = n.max(1);
    }

    /// Adds a post as if it had been created earlier (not a side effect).
    /// `post` is the `LocalPost` JSON; `name` is filled in when missing.
    pub fn seed_post(&self, account: &str, location: &str, mut post: Value) {
        let mut s = self.state();
        s.next_id += 1;
        let id = s.next_id;
        if post.get("name").is_none() {
            post["name"] = json!(format!(
                "accounts/{account}/locations/{location}/localPosts/{id}"
            ));
        }
        s.posts
            .entry((account.to_owned(), location.to_owned()))
            .or_default()
            .push(post);
    }

    /// The location's posts, in creation order.
    pub fn posts(&self, account: &str, location: &str) -> Vec<Value> {
        self.state()
            .posts
            .get(&(account.to_owned(), location.to_owned()))
            .cloned()
            .unwrap_or_default()
    }

    /// The current reply text of a review, if it has one.
    pub fn reply(&self, account: &str, location: &str, review: &str) -> Option<String> {
        self.state()
            .replies
            .get(&(account.to_owned(), location.to_owned(), review.to_owned()))
            .and_then(|r| r.get("comment"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| char::from(c).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

enum Route {
    Reply(String, String, String),
    Posts(String, String),
}

fn route(path: &str) -> Option<Route> {
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["v4", "accounts", a, "locations", l, "reviews", r, "reply"] => Some(Route::Reply(
            (*a).to_owned(),
            (*l).to_owned(),
            (*r).to_owned(),
        )),
        ["v4", "accounts", a, "locations", l, "localPosts"] => {
            Some(Route::Posts((*a).to_owned(), (*l).to_owned()))
        }
        _ => None,
    }
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let write = request.method != Method::GET;
        if write {
            s.write_requests += 1;
        } else {
            s.read_requests += 1;
        }
        if let Some(valid) = &s.valid_token {
            let auth = request
                .headers
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if auth != format!("Bearer {valid}") {
                return google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                );
            }
        }
        let fault = if write { s.faults.pop_front() } else { None };
        match &fault {
            Some(Fault::ServerError) => {
                return google_error(503, "UNAVAILABLE", "The service is currently unavailable.");
            }
            Some(Fault::RateLimited { retry_after_secs }) => {
                return ResponseTemplate::new(429)
                    .insert_header("retry-after", retry_after_secs.to_string())
                    .set_body_json(json!({"error": {
                        "code": 429,
                        "message": "Quota exceeded for quota metric 'Requests'.",
                        "status": "RESOURCE_EXHAUSTED",
                        "details": [{
                            "@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": format!("{retry_after_secs}s")
                        }]
                    }}));
            }
            Some(Fault::Unauthenticated) => {
                return google_error(
                    401,
                    "UNAUTHENTICATED",
                    "Request had invalid authentication credentials.",
                );
            }
            Some(Fault::InvalidArgument) => {
                return google_error(
                    400,
                    "INVALID_ARGUMENT",
                    "Request contains an invalid argument.",
                );
            }
            _ => {}
        }
        let now = format_rfc3339(self.clock.now());
        let answer = match (route(request.url.path()), &request.method) {
            (Some(Route::Reply(a, l, r)), &Method::PUT) => {
                let comment = request
                    .body_json::<Value>()
                    .ok()
                    .and_then(|v| v.get("comment").and_then(Value::as_str).map(str::to_owned));
                match comment {
                    None => google_error(400, "INVALID_ARGUMENT", "comment is required."),
                    Some(c) if c.len() > MAX_REPLY_BYTES => {
                        google_error(400, "INVALID_ARGUMENT", "comment is too long.")
                    }
                    Some(c) => {
                        let reply = json!({"comment": c, "updateTime": now});
                        s.replies.insert((a, l, r), reply.clone());
                        s.side_effects += 1;
                        ResponseTemplate::new(200).set_body_json(reply)
                    }
                }
            }
            (Some(Route::Reply(a, l, r)), &Method::DELETE) => {
                if s.replies.remove(&(a, l, r)).is_some() {
                    s.side_effects += 1;
                    ResponseTemplate::new(200).set_body_json(json!({}))
                } else {
                    google_error(404, "NOT_FOUND", "Requested entity was not found.")
                }
            }
            (Some(Route::Posts(a, l)), &Method::POST) => match request.body_json::<Value>() {
                Ok(mut post)
                    if post
                        .get("topicType")
                        .and_then(Value::as_str)
                        .is_some_and(|t| t != "LOCAL_POST_TOPIC_TYPE_UNSPECIFIED") =>
                {
                    s.next_id += 1;
                    let id = s.next_id;
                    post["name"] = json!(format!("accounts/{a}/locations/{l}/localPosts/{id}"));
                    post["createTime"] = json!(now);
                    post["updateTime"] = json!(now);
                    post["state"] = json!("LIVE");
                    post["searchUrl"] = json!(format!("https://local.google.com/place?lpsid={id}"));
                    s.posts.entry((a, l)).or_default().push(post.clone());
                    s.side_effects += 1;
                    ResponseTemplate::new(200).set_body_json(post)
                }
                _ => google_error(400, "INVALID_ARGUMENT", "topicType is required."),
            },
            (Some(Route::Posts(a, l)), &Method::GET) => {
                let mut page_size = 20usize;
                let mut offset = 0usize;
                for (k, v) in request.url.query_pairs() {
                    match k.as_ref() {
                        "pageSize" => page_size = v.parse().unwrap_or(20),
                        "pageToken" => offset = v.parse().unwrap_or(usize::MAX),
                        _ => {}
                    }
                }
                let page_size = page_size.clamp(1, 100).min(s.max_page_size);
                let all = s.posts.get(&(a, l)).cloned().unwrap_or_default();
                if offset != 0 && offset >= all.len() {
                    google_error(400, "INVALID_ARGUMENT", "Invalid page token.")
                } else {
                    let end = (offset + page_size).min(all.len());
                    let mut body = json!({"localPosts": all[offset..end]});
                    if end < all.len() {
                        body["nextPageToken"] = json!(end.to_string());
                    }
                    ResponseTemplate::new(200).set_body_json(body)
                }
            }
            _ => google_error(404, "NOT_FOUND", "Requested entity was not found."),
        };
        match fault {
            Some(Fault::LoseResponse { delay }) => answer.set_delay(delay),
            Some(Fault::DeadlineExceeded) => google_error(
                504,
                "DEADLINE_EXCEEDED",
                "Deadline expired before operation could complete.",
            ),
            _ => answer,
        }
    }
}
