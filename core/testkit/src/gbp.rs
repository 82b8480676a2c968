//! A simulated Google Business Profile API, for tests, demos and chaos runs.
//!
//! It serves the four calls of the GBP adapter (reply to a review, delete
//! the reply, create and list local posts) with Google's paths, field names
//! and error bodies, and keeps real state: review replies, local posts
//! (listed with `pageSize` / `pageToken`). Like Google, it takes no
//! idempotency key. It counts what it really did
//! ([`side_effects`](Fake::side_effects)), independently of the client,
//! and takes [`Fault`]s for the next write requests: [`Fault::ServerError`]
//! is 503 `UNAVAILABLE`, [`Fault::ServerErrorAfterEffect`] the 504
//! `DEADLINE_EXCEEDED` Google documents after a completed write,
//! [`Fault::RateLimited`] 429 `RESOURCE_EXHAUSTED` with a `RetryInfo`
//! detail; [`FakeGbp::unauthenticated`] and [`FakeGbp::invalid_argument`]
//! make its 401 and 400.
//!
//! ```no_run
//! # async fn demo() {
//! use idem_testkit::{FakeGbp, Fault};
//! use std::time::Duration;
//!
//! let fake = FakeGbp::start().await;
//! fake.inject(Fault::LoseResponse { delay: Duration::from_secs(2) });
//! // ... point a GbpClient at fake.base_url() ...
//! assert!(fake.side_effects() <= 1);
//! # }
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use http::Method;
use idem::{Clock, SystemClock};
use serde_json::{Value, json};

use crate::calendar::rfc3339;
use crate::fake::{Context, Fake, Fault, Simulator};
use crate::http::{Reply, Request};

/// The longest reply Google accepts, in bytes. Mirrors the GBP adapter's
/// `MAX_REPLY_BYTES` (`idem_gbp::MAX_REPLY_BYTES`), which refuses longer
/// replies before sending; the fake answers them 400 as Google does.
const MAX_REPLY_BYTES: usize = 4096;

/// The simulated Google Business Profile API: a [`Fake`] serving [`Gbp`].
pub type FakeGbp = Fake<Gbp>;

/// The state of the simulated Google Business Profile API (see
/// [`FakeGbp`]).
#[derive(Debug)]
pub struct Gbp {
    /// (account, location, review) -> reply JSON.
    replies: BTreeMap<(String, String, String), Value>,
    /// (account, location) -> posts in creation order.
    posts: BTreeMap<(String, String), Vec<Value>>,
    valid_token: Option<String>,
    max_page_size: usize,
    next_id: u64,
    clock: Arc<dyn Clock>,
}

fn google_error(code: u16, status: &str, message: &str) -> Reply {
    Reply::json(
        code,
        json!({
            "error": {"code": code, "message": message, "status": status}
        }),
    )
}

impl FakeGbp {
    /// Starts a fake on a free local port, with the system clock.
    pub async fn start() -> Self {
        Self::start_with_clock(SystemClock).await
    }

    /// Starts a fake whose `createTime` / `updateTime` come from `clock`.
    pub async fn start_with_clock(clock: impl Clock) -> Self {
        Fake::serve(Gbp {
            replies: BTreeMap::new(),
            posts: BTreeMap::new(),
            valid_token: None,
            max_page_size: 100,
            next_id: 0,
            clock: Arc::new(clock),
        })
        .await
    }

    /// Google's 401 `UNAUTHENTICATED`; nothing is done.
    pub fn unauthenticated() -> Fault {
        Fault::Reply(google_error(
            401,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials.",
        ))
    }

    /// Google's 400 `INVALID_ARGUMENT`; nothing is done.
    pub fn invalid_argument() -> Fault {
        Fault::Reply(google_error(
            400,
            "INVALID_ARGUMENT",
            "Request contains an invalid argument.",
        ))
    }

    /// Accepts only `Authorization: Bearer <token>` from now on; any other
    /// request gets 401 `UNAUTHENTICATED` and is not processed.
    pub fn require_token(&self, token: impl Into<String>) {
        let token = token.into();
        self.with(|s| s.valid_token = Some(token));
    }

    /// Caps the page size of listings (to exercise pagination).
    pub fn set_max_page_size(&self, n: usize) {
        self.with(|s| s.max_page_size = n.max(1));
    }

    /// Adds a post as if it had been created earlier (not a side effect).
    /// `post` is the `LocalPost` JSON; `name` is filled in when missing.
    pub fn seed_post(&self, account: &str, location: &str, mut post: Value) {
        self.with(|s| {
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
        });
    }

    /// The location's posts, in creation order.
    pub fn posts(&self, account: &str, location: &str) -> Vec<Value> {
        self.with(|s| {
            s.posts
                .get(&(account.to_owned(), location.to_owned()))
                .cloned()
                .unwrap_or_default()
        })
    }

    /// The current reply text of a review, if it has one.
    pub fn reply(&self, account: &str, location: &str, review: &str) -> Option<String> {
        self.with(|s| {
            s.replies
                .get(&(account.to_owned(), location.to_owned(), review.to_owned()))
                .and_then(|r| r.get("comment"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
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

impl Simulator for Gbp {
    fn screen(&mut self, request: &Request) -> Option<Reply> {
        let valid = self.valid_token.as_ref()?;
        let auth = request.header("authorization").unwrap_or_default();
        (auth != format!("Bearer {valid}")).then(|| {
            google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials.",
            )
        })
    }

    fn server_error(&self, _: &Request, after_effect: bool) -> Reply {
        if after_effect {
            google_error(
                504,
                "DEADLINE_EXCEEDED",
                "Deadline expired before operation could complete.",
            )
        } else {
            google_error(503, "UNAVAILABLE", "The service is currently unavailable.")
        }
    }

    fn rate_limited(&self, _: &Request, retry_after_secs: u64) -> Reply {
        Reply::json(
            429,
            json!({"error": {
                "code": 429,
                "message": "Quota exceeded for quota metric 'Requests'.",
                "status": "RESOURCE_EXHAUSTED",
                "details": [{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{retry_after_secs}s")
                }]
            }}),
        )
        .insert_header("retry-after", retry_after_secs.to_string())
    }

    fn handle(&mut self, request: &Request, cx: &mut Context) -> Reply {
        let s = self;
        let now = rfc3339(s.clock.now());
        match (route(request.url.path()), &request.method) {
            (Some(Route::Reply(a, l, r)), &Method::PUT) => {
                let comment = request
                    .json()
                    .and_then(|v| v.get("comment").and_then(Value::as_str).map(str::to_owned));
                match comment {
                    None => google_error(400, "INVALID_ARGUMENT", "comment is required."),
                    Some(c) if c.len() > MAX_REPLY_BYTES => {
                        google_error(400, "INVALID_ARGUMENT", "comment is too long.")
                    }
                    Some(c) => {
                        let reply = json!({"comment": c, "updateTime": now});
                        s.replies.insert((a, l, r), reply.clone());
                        cx.side_effect();
                        Reply::json(200, reply)
                    }
                }
            }
            (Some(Route::Reply(a, l, r)), &Method::DELETE) => {
                if s.replies.remove(&(a, l, r)).is_some() {
                    cx.side_effect();
                    Reply::json(200, json!({}))
                } else {
                    google_error(404, "NOT_FOUND", "Requested entity was not found.")
                }
            }
            (Some(Route::Posts(a, l)), &Method::POST) => match request.json() {
                Some(mut post)
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
                    cx.side_effect();
                    Reply::json(200, post)
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
                    Reply::json(200, body)
                }
            }
            _ => google_error(404, "NOT_FOUND", "Requested entity was not found."),
        }
    }
}
