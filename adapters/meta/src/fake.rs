//! A simulated Meta Graph API (feature `fake`), for tests, demos and chaos
//! runs: Page posts (`/{page-id}/feed`, `published_posts`,
//! `scheduled_posts`) and Instagram content publishing (`/{ig-user-id}/media`,
//! `media_publish`, container `status_code`, media list), with faults.
//!
//! It counts what really happened ([`FakeMeta::side_effects`]: Page posts
//! created and Instagram media published) apart from what was asked
//! ([`FakeMeta::write_requests`]), so a test can tell "sent twice" from
//! "posted twice".
//!
//! ```no_run
//! # async fn demo() {
//! use idem_meta::fake::{FakeMeta, Fault};
//! let fake = FakeMeta::start().await;
//! fake.inject(Fault::LoseResponse { delay: std::time::Duration::from_secs(2) });
//! // point a MetaClient at fake.base_url() ...
//! assert_eq!(fake.side_effects(), 0);
//! # }
//! ```
//!
//! Fidelity notes: error objects have Meta's documented shape and codes
//! (4 throttle, 190/463 expired token, 9007 media not ready). The error a
//! second `media_publish` of one container gets is not documented; the fake
//! answers a code 100 parameter error. The fake refuses an `access_token` in
//! the query string (Meta accepts it; idem never sends one, because the query
//! string is fingerprinted and logged).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A fault applied to the next write (`POST`) request, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// No fault for this write (to aim a later fault at, say, the second
    /// step of an Instagram publish).
    Pass,
    /// HTTP 500 with Meta's transient code 2; nothing is done.
    ServerError,
    /// Throttled (HTTP 400, code 4, with `X-Business-Use-Case-Usage` at
    /// 100% and `estimated_time_to_regain_access` rounded up to minutes);
    /// nothing is done.
    RateLimited {
        /// Seconds until access returns (0: retry straight away).
        retry_after_secs: u64,
    },
    /// A throttle answer with this code (4, 17, 32, 341, 613); nothing is done.
    Throttle {
        /// The Graph error code.
        code: i64,
    },
    /// The write is carried out, but the answer comes only after `delay`
    /// (longer than the client's attempt timeout: the client sees a timeout
    /// after sending).
    LoseResponse {
        /// How long the answer is held.
        delay: Duration,
    },
    /// Nothing is done, and an error answer comes only after `delay`: a
    /// timeout that had no effect.
    StallWithoutEffect {
        /// How long the answer is held.
        delay: Duration,
    },
    /// HTTP 400 `OAuthException` code 190, subcode 463 (token expired);
    /// nothing is done.
    OAuthExpired,
}

/// A Page post the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FakePost {
    /// `{page-id}_{n}`.
    pub id: String,
    /// The Page.
    pub page: String,
    /// The message.
    pub message: Option<String>,
    /// The link.
    pub link: Option<String>,
    /// Created at.
    pub created: SystemTime,
    /// Listed in `scheduled_posts` rather than the feed.
    pub scheduled: bool,
    /// Created with `published=false` and no schedule.
    pub unpublished: bool,
    /// Added with [`FakeMeta::seed_post`] (someone else's post), not a
    /// side effect.
    pub seeded: bool,
}

#[derive(Debug, Clone)]
struct Container {
    id: String,
    ig_user: String,
    caption: Option<String>,
    status: &'static str,
    polls_left: u32,
}

#[derive(Debug, Clone)]
struct Media {
    id: String,
    ig_user: String,
    caption: Option<String>,
    created: SystemTime,
}

#[derive(Debug, Default)]
struct State {
    faults: VecDeque<Fault>,
    posts: Vec<FakePost>,
    containers: Vec<Container>,
    media: Vec<Media>,
    writes: usize,
    reads: usize,
    seq: u64,
    app_usage: Option<u32>,
    processing_polls: u32,
    containers_fail: bool,
}

/// The simulated Meta Graph API.
#[derive(Debug)]
pub struct FakeMeta {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl FakeMeta {
    /// Starts the fake on a free local port.
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(wiremock::matchers::any())
            .respond_with(Handler {
                state: state.clone(),
            })
            .mount(&server)
            .await;
        Self { server, state }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The base URL to give the client (`MetaClientBuilder::base_url`).
    pub fn base_url(&self) -> String {
        self.server.uri()
    }

    /// Objects really created: Page posts plus Instagram media published.
    pub fn side_effects(&self) -> usize {
        let s = self.state();
        s.posts.iter().filter(|p| !p.seeded).count() + s.media.len()
    }

    /// Adds a published Page post as if someone else had made it now (not a
    /// side effect): for example to push a post off the first page of a
    /// listing.
    pub fn seed_post(&self, page: &str, message: &str) -> String {
        let mut s = self.state();
        s.seq += 1;
        let id = format!("{page}_{}", s.seq);
        s.posts.push(FakePost {
            id: id.clone(),
            page: page.to_owned(),
            message: Some(message.to_owned()),
            link: None,
            created: SystemTime::now(),
            scheduled: false,
            unpublished: false,
            seeded: true,
        });
        id
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

    /// Write (`POST`) requests seen on the wire.
    pub fn write_requests(&self) -> usize {
        self.state().writes
    }

    /// Read (`GET`) requests seen on the wire.
    pub fn read_requests(&self) -> usize {
        self.state().reads
    }

    /// Instagram containers created.
    pub fn containers_created(&self) -> usize {
        self.state().containers.len()
    }

    /// Instagram media published.
    pub fn media_published(&self) -> usize {
        self.state().media.len()
    }

    /// The Page posts held.
    pub fn posts(&self) -> Vec<FakePost> {
        self.state().posts.clone()
    }

    /// Queues a fault for the next write request.
    pub fn inject(&self, fault: Fault) {
        self.state().faults.push_back(fault);
    }

    /// Sends `X-App-Usage` with this percentage on every answer (`None`:
    /// no usage header).
    pub fn set_app_usage(&self, percent: Option<u32>) {
        self.state().app_usage = percent;
    }

    /// New containers stay `IN_PROGRESS` for this many status reads.
    pub fn set_container_processing(&self, polls: u32) {
        self.state().processing_polls = polls;
    }

    /// New containers end in `ERROR` (for example an image URL Meta cannot
    /// fetch).
    pub fn fail_new_containers(&self, fail: bool) {
        self.state().containers_fail = fail;
    }

    /// Finishes processing of every `IN_PROGRESS` container.
    pub fn finish_containers(&self) {
        for c in &mut self.state().containers {
            if c.status == "IN_PROGRESS" {
                c.status = "FINISHED";
                c.polls_left = 0;
            }
        }
    }

    /// Marks every container `EXPIRED` (as after 24 h unpublished).
    pub fn expire_containers(&self) {
        for c in &mut self.state().containers {
            if c.status != "PUBLISHED" {
                c.status = "EXPIRED";
            }
        }
    }
}

struct Handler {
    state: Arc<Mutex<State>>,
}

fn error(
    status: u16,
    code: i64,
    subcode: Option<i64>,
    kind: &str,
    message: &str,
    transient: bool,
) -> ResponseTemplate {
    let mut e = serde_json::json!({
        "message": message,
        "type": kind,
        "code": code,
        "is_transient": transient,
        "fbtrace_id": "FakeTrace01",
    });
    if let Some(sub) = subcode {
        e["error_subcode"] = serde_json::json!(sub);
    }
    ResponseTemplate::new(status).set_body_json(serde_json::json!({ "error": e }))
}

fn ok(body: serde_json::Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body)
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let usage = state.app_usage;
        let mut answer = handle(&mut state, request);
        if let Some(p) = usage {
            answer = answer.insert_header(
                "x-app-usage",
                format!(r#"{{"call_count":{p},"total_cputime":{p},"total_time":{p}}}"#).as_str(),
            );
        }
        answer
    }
}

fn handle(state: &mut State, request: &Request) -> ResponseTemplate {
    let bearer = request
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| !t.trim().is_empty());
    if request.url.query_pairs().any(|(k, _)| k == "access_token") {
        return error(
            400,
            100,
            None,
            "OAuthException",
            "fake: access_token in the query string is refused",
            false,
        );
    }
    if !bearer {
        return error(
            400,
            104,
            None,
            "OAuthException",
            "An access token is required to request this resource.",
            false,
        );
    }
    let segments: Vec<String> = request
        .url
        .path_segments()
        .map(|s| s.map(str::to_owned).collect())
        .unwrap_or_default();
    // The first segment is the version (`v25.0`).
    let rest: Vec<&str> = segments.iter().skip(1).map(String::as_str).collect();
    let method = request.method.as_str();
    if method == "POST" {
        state.writes += 1;
        return write(state, request, &rest);
    }
    state.reads += 1;
    read(state, request, &rest)
}

fn write(state: &mut State, request: &Request, rest: &[&str]) -> ResponseTemplate {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let mut delay = None;
    match state.faults.pop_front() {
        None | Some(Fault::Pass) => {}
        Some(Fault::ServerError) => {
            return error(
                500,
                2,
                None,
                "OAuthException",
                "An unexpected error has occurred. Please retry your request later.",
                true,
            );
        }
        Some(Fault::RateLimited { retry_after_secs }) => {
            let minutes = retry_after_secs.div_ceil(60);
            return error(400, 4, None, "OAuthException", "(#4) Application request limit reached", true).insert_header(
                "x-business-use-case-usage",
                format!(
                    r#"{{"{}":[{{"type":"pages","call_count":100,"total_cputime":10,"total_time":10,"estimated_time_to_regain_access":{minutes}}}]}}"#,
                    rest.first().copied().unwrap_or("0")
                )
                .as_str(),
            );
        }
        Some(Fault::Throttle { code }) => {
            return error(
                400,
                code,
                None,
                "OAuthException",
                &format!("(#{code}) request limit reached"),
                true,
            );
        }
        Some(Fault::OAuthExpired) => {
            return error(
                400,
                190,
                Some(463),
                "OAuthException",
                "Error validating access token: Session has expired.",
                false,
            );
        }
        Some(Fault::StallWithoutEffect { delay }) => {
            return error(
                500,
                2,
                None,
                "OAuthException",
                "fake: stalled, nothing done",
                true,
            )
            .set_delay(delay);
        }
        Some(Fault::LoseResponse { delay: d }) => delay = Some(d),
    }
    let answer = match rest {
        [page, "feed"] => {
            let message = field("message");
            let link = field("link");
            if message.as_deref().is_none_or(|m| m.trim().is_empty()) && link.is_none() {
                return error(
                    400,
                    100,
                    None,
                    "OAuthException",
                    "(#100) The parameter message or link is required",
                    false,
                );
            }
            let published = field("published").as_deref() != Some("false");
            let scheduled = field("scheduled_publish_time").is_some();
            state.seq += 1;
            let id = format!("{page}_{}", 9000 + state.seq);
            state.posts.push(FakePost {
                id: id.clone(),
                page: (*page).to_owned(),
                message,
                link,
                created: SystemTime::now(),
                scheduled: !published && scheduled,
                unpublished: !published && !scheduled,
                seeded: false,
            });
            ok(serde_json::json!({ "id": id }))
        }
        [ig_user, "media"] => {
            if field("image_url").is_none() && field("video_url").is_none() {
                return error(
                    400,
                    100,
                    None,
                    "OAuthException",
                    "(#100) image_url or video_url is required",
                    false,
                );
            }
            state.seq += 1;
            let id = format!("1789{:08}", state.seq);
            let polls = state.processing_polls;
            let failing = state.containers_fail;
            state.containers.push(Container {
                id: id.clone(),
                ig_user: (*ig_user).to_owned(),
                caption: field("caption"),
                status: if failing {
                    "ERROR"
                } else if polls > 0 {
                    "IN_PROGRESS"
                } else {
                    "FINISHED"
                },
                polls_left: polls,
            });
            ok(serde_json::json!({ "id": id }))
        }
        [ig_user, "media_publish"] => {
            let Some(creation_id) = field("creation_id") else {
                return error(
                    400,
                    100,
                    None,
                    "OAuthException",
                    "(#100) creation_id is required",
                    false,
                );
            };
            let Some(c) = state
                .containers
                .iter_mut()
                .find(|c| c.id == creation_id && c.ig_user == *ig_user)
            else {
                return error(
                    400,
                    100,
                    Some(2207006),
                    "OAuthException",
                    "The media with id was not found",
                    false,
                );
            };
            match c.status {
                "FINISHED" => {
                    c.status = "PUBLISHED";
                    let caption = c.caption.clone();
                    state.seq += 1;
                    let id = format!("1790{:08}", state.seq);
                    state.media.push(Media {
                        id: id.clone(),
                        ig_user: (*ig_user).to_owned(),
                        caption,
                        created: SystemTime::now(),
                    });
                    ok(serde_json::json!({ "id": id }))
                }
                "IN_PROGRESS" => error(
                    400,
                    9007,
                    Some(2207027),
                    "OAuthException",
                    "Media ID is not available",
                    false,
                ),
                _ => error(
                    400,
                    100,
                    None,
                    "OAuthException",
                    "fake: the container cannot be published (already published, failed or expired)",
                    false,
                ),
            }
        }
        _ => error(
            400,
            100,
            None,
            "GraphMethodException",
            "fake: unsupported write",
            false,
        ),
    };
    match delay {
        Some(d) => answer.set_delay(d),
        None => answer,
    }
}

fn read(state: &mut State, request: &Request, rest: &[&str]) -> ResponseTemplate {
    let query = |name: &str| {
        request
            .url
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let since = query("since")
        .and_then(|s| s.parse::<u64>().ok())
        .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s));
    let limit = query("limit")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(25);
    match rest {
        [
            page,
            edge @ ("feed" | "published_posts" | "scheduled_posts"),
        ] => {
            let want_scheduled = *edge == "scheduled_posts";
            let mut posts: Vec<&FakePost> = state
                .posts
                .iter()
                .filter(|p| p.page == *page && !p.unpublished && p.scheduled == want_scheduled)
                .filter(|p| since.is_none_or(|s| p.created >= s))
                .collect();
            posts.reverse();
            // Cursor paging as the Graph API does it: `paging.cursors.after`
            // and `paging.next` while more remain, `after=<cursor>` to go on.
            let start = query("after")
                .and_then(|a| a.parse::<usize>().ok())
                .unwrap_or(0)
                .min(posts.len());
            let end = start.saturating_add(limit).min(posts.len());
            let paging = (end < posts.len()).then(|| {
                let mut next = request.url.clone();
                let pairs: Vec<(String, String)> = next
                    .query_pairs()
                    .filter(|(k, _)| k != "after")
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
                next.query_pairs_mut()
                    .clear()
                    .extend_pairs(pairs)
                    .append_pair("after", &end.to_string());
                serde_json::json!({
                    "cursors": { "before": start.to_string(), "after": end.to_string() },
                    "next": next.as_str(),
                })
            });
            let data: Vec<serde_json::Value> = posts[start..end]
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "id": p.id,
                        "message": p.message,
                        "created_time": crate::time::format(p.created),
                    })
                })
                .collect();
            match paging {
                Some(paging) => ok(serde_json::json!({ "data": data, "paging": paging })),
                None => ok(serde_json::json!({ "data": data })),
            }
        }
        [ig_user, "media"] => {
            let data: Vec<serde_json::Value> = state
                .media
                .iter()
                .rev()
                .filter(|m| m.ig_user == *ig_user)
                .take(limit)
                .map(|m| {
                    serde_json::json!({
                        "id": m.id,
                        "caption": m.caption,
                        "timestamp": crate::time::format(m.created),
                    })
                })
                .collect();
            ok(serde_json::json!({ "data": data }))
        }
        [id] => match state.containers.iter_mut().find(|c| c.id == *id) {
            Some(c) => {
                if c.status == "IN_PROGRESS" {
                    if c.polls_left <= 1 {
                        c.status = "FINISHED";
                        c.polls_left = 0;
                    } else {
                        c.polls_left -= 1;
                    }
                    // This read still sees IN_PROGRESS.
                    return ok(
                        serde_json::json!({ "id": c.id, "status_code": "IN_PROGRESS", "status": "In Progress" }),
                    );
                }
                ok(serde_json::json!({ "id": c.id, "status_code": c.status }))
            }
            None => error(
                400,
                100,
                Some(33),
                "GraphMethodException",
                "Unsupported get request.",
                false,
            ),
        },
        _ => error(
            400,
            100,
            None,
            "GraphMethodException",
            "fake: unsupported read",
            false,
        ),
    }
}
