//! A simulated Meta Graph API, for tests, demos and chaos runs: Page posts
//! (`/{page-id}/feed`, `published_posts`, `scheduled_posts`) and Instagram
//! content publishing (`/{ig-user-id}/media`, `media_publish`, container
//! `status_code`, media list), with faults. Like Meta, it takes no
//! idempotency key.
//!
//! It counts what really happened ([`Fake::side_effects`]: Page posts
//! created and Instagram media published) apart from what was asked
//! ([`Fake::write_requests`]), so a test can tell "sent twice" from
//! "posted twice".
//!
//! ```no_run
//! # async fn demo() {
//! use idem_testkit::{FakeMeta, Fault};
//! let fake = FakeMeta::start().await;
//! fake.inject(Fault::LoseResponse { delay: std::time::Duration::from_secs(2) });
//! // point a MetaClient at fake.base_url() ...
//! assert_eq!(fake.side_effects(), 0);
//! # }
//! ```
//!
//! Faults: [`Fault::ServerError`] is a 500 with Meta's transient code 2;
//! [`Fault::RateLimited`] is a throttle (HTTP 400, code 4, with
//! `X-Business-Use-Case-Usage` at 100% and
//! `estimated_time_to_regain_access` rounded up to minutes);
//! [`FakeMeta::throttle`] and [`FakeMeta::oauth_expired`] make its other
//! throttles and its expired-token error.
//!
//! Fidelity notes: error objects have Meta's documented shape and codes
//! (4 throttle, 190/463 expired token, 9007 media not ready). The error a
//! second `media_publish` of one container gets is not documented; the fake
//! answers a code 100 parameter error. The fake refuses an `access_token` in
//! the query string (Meta accepts it; idem never sends one, because the query
//! string is fingerprinted and logged).

use std::time::{Duration, SystemTime};

use crate::calendar::graph;
use crate::fake::{Context, Fake, Fault, Simulator};
use crate::http::{Reply, Request};

/// The simulated Meta Graph API: a [`Fake`] serving [`Meta`].
pub type FakeMeta = Fake<Meta>;

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

/// The state of the simulated Meta Graph API (see [`FakeMeta`]).
#[derive(Debug, Default)]
pub struct Meta {
    posts: Vec<FakePost>,
    containers: Vec<Container>,
    media: Vec<Media>,
    seq: u64,
    app_usage: Option<u32>,
    processing_polls: u32,
    containers_fail: bool,
}

impl FakeMeta {
    /// Starts the fake on a free local port.
    pub async fn start() -> Self {
        Fake::serve(Meta::default()).await
    }

    /// Adds a published Page post as if someone else had made it now (not a
    /// side effect): for example to push a post off the first page of a
    /// listing.
    pub fn seed_post(&self, page: &str, message: &str) -> String {
        self.with(|s| {
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
        })
    }

    /// Instagram containers created.
    pub fn containers_created(&self) -> usize {
        self.with(|s| s.containers.len())
    }

    /// Instagram media published.
    pub fn media_published(&self) -> usize {
        self.with(|s| s.media.len())
    }

    /// The Page posts held.
    pub fn posts(&self) -> Vec<FakePost> {
        self.with(|s| s.posts.clone())
    }

    /// A throttle answer with this Graph code (4, 17, 32, 341, 613);
    /// nothing is done.
    pub fn throttle(code: i64) -> Fault {
        Fault::Reply(error(
            400,
            code,
            None,
            "OAuthException",
            &format!("(#{code}) request limit reached"),
            true,
        ))
    }

    /// HTTP 400 `OAuthException` code 190, subcode 463 (token expired);
    /// nothing is done.
    pub fn oauth_expired() -> Fault {
        Fault::Reply(error(
            400,
            190,
            Some(463),
            "OAuthException",
            "Error validating access token: Session has expired.",
            false,
        ))
    }

    /// Sends `X-App-Usage` with this percentage on every answer (`None`:
    /// no usage header).
    pub fn set_app_usage(&self, percent: Option<u32>) {
        self.with(|s| s.app_usage = percent);
    }

    /// New containers stay `IN_PROGRESS` for this many status reads.
    pub fn set_container_processing(&self, polls: u32) {
        self.with(|s| s.processing_polls = polls);
    }

    /// New containers end in `ERROR` (for example an image URL Meta cannot
    /// fetch).
    pub fn fail_new_containers(&self, fail: bool) {
        self.with(|s| s.containers_fail = fail);
    }

    /// Finishes processing of every `IN_PROGRESS` container.
    pub fn finish_containers(&self) {
        self.with(|s| {
            for c in &mut s.containers {
                if c.status == "IN_PROGRESS" {
                    c.status = "FINISHED";
                    c.polls_left = 0;
                }
            }
        });
    }

    /// Marks every container `EXPIRED` (as after 24 h unpublished).
    pub fn expire_containers(&self) {
        self.with(|s| {
            for c in &mut s.containers {
                if c.status != "PUBLISHED" {
                    c.status = "EXPIRED";
                }
            }
        });
    }
}

fn error(
    status: u16,
    code: i64,
    subcode: Option<i64>,
    kind: &str,
    message: &str,
    transient: bool,
) -> Reply {
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
    Reply::json(status, serde_json::json!({ "error": e }))
}

/// The answer to a call the fake does not serve.
fn unsupported(what: &str) -> Reply {
    error(
        400,
        100,
        None,
        "GraphMethodException",
        &format!("fake: unsupported {what}"),
        false,
    )
}

fn ok(body: serde_json::Value) -> Reply {
    Reply::json(200, body)
}

impl Simulator for Meta {
    fn screen(&mut self, request: &Request) -> Option<Reply> {
        let bearer = request
            .header("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| !t.trim().is_empty());
        if request.query("access_token").is_some() {
            return Some(error(
                400,
                100,
                None,
                "OAuthException",
                "fake: access_token in the query string is refused",
                false,
            ));
        }
        if !bearer {
            return Some(error(
                400,
                104,
                None,
                "OAuthException",
                "An access token is required to request this resource.",
                false,
            ));
        }
        None
    }

    fn handle(&mut self, request: &Request, cx: &mut Context) -> Reply {
        let segments: Vec<String> = request
            .url
            .path_segments()
            .map(|s| s.map(str::to_owned).collect())
            .unwrap_or_default();
        // The first segment is the version (`v25.0`).
        let rest: Vec<&str> = segments.iter().skip(1).map(String::as_str).collect();
        if request.method == http::Method::POST {
            return write(self, request, &rest, cx);
        }
        read(self, request, &rest)
    }

    fn server_error(&self, _: &Request, _: bool) -> Reply {
        error(
            500,
            2,
            None,
            "OAuthException",
            "An unexpected error has occurred. Please retry your request later.",
            true,
        )
    }

    fn rate_limited(&self, request: &Request, retry_after_secs: u64) -> Reply {
        let minutes = retry_after_secs.div_ceil(60);
        let id = request
            .url
            .path_segments()
            .and_then(|mut s| s.nth(1))
            .unwrap_or("0");
        error(400, 4, None, "OAuthException", "(#4) Application request limit reached", true).insert_header(
            "x-business-use-case-usage",
            format!(
                r#"{{"{id}":[{{"type":"pages","call_count":100,"total_cputime":10,"total_time":10,"estimated_time_to_regain_access":{minutes}}}]}}"#
            ),
        )
    }

    fn decorate(&self, reply: Reply) -> Reply {
        match self.app_usage {
            Some(p) => reply.insert_header(
                "x-app-usage",
                format!(r#"{{"call_count":{p},"total_cputime":{p},"total_time":{p}}}"#),
            ),
            None => reply,
        }
    }
}

fn write(state: &mut Meta, request: &Request, rest: &[&str], cx: &mut Context) -> Reply {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&request.body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match rest {
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
            cx.side_effect();
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
                    cx.side_effect();
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
        _ => unsupported("write"),
    }
}

fn read(state: &mut Meta, request: &Request, rest: &[&str]) -> Reply {
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
                        "created_time": graph(p.created),
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
                        "timestamp": graph(m.created),
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
        _ => unsupported("read"),
    }
}
