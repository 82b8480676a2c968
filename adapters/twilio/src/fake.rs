//! A simulated Twilio Messages API (feature `fake`), for tests, demos and
//! chaos runs.
//!
//! It serves `POST`/`GET /2010-04-01/Accounts/{AccountSid}/Messages.json` and
//! `GET …/Messages/{Sid}.json` the way Twilio does (form-encoded create,
//! `201` with a Message resource, Twilio's error bodies and codes, list
//! filters `To`, `From`, `DateSent`, `DateSent>`, `DateSent<`, paging), counts
//! what it really did, and fails on demand with [`Fault`]s.
//!
//! As at Twilio, a message is created `queued` (or `accepted` through a
//! Messaging Service) with `date_sent: null`; it gets a `date_sent` only
//! once it is sent ([`FakeTwilio::status_callback`] with `sent` or a later
//! status). The `DateSent` filters match on `date_sent`, so they never list
//! a message that has not been sent yet.
//!
//! ```no_run
//! # async fn demo() {
//! use idem_twilio::fake::{Fault, FakeTwilio};
//! use std::time::Duration;
//!
//! let twilio = FakeTwilio::start().await;
//! twilio.inject(Fault::LoseResponse { delay: Duration::from_secs(5) });
//! // point a TwilioClient at twilio.base_url() with credentials for
//! // FakeTwilio::ACCOUNT_SID, send, then:
//! assert_eq!(twilio.side_effects(), 1);
//! # }
//! ```

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use idem::time::{format_date as ymd, format_rfc2822 as rfc2822};

/// A failure the fake applies to the next write request (one per request,
/// in order).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// HTTP 500 (Twilio error 20500); nothing is queued.
    ServerError,
    /// HTTP 500 *after* the message was queued (a real possibility: the
    /// client cannot tell it from [`ServerError`](Self::ServerError)).
    ServerErrorAfterQueue,
    /// HTTP 429, error 20429, `Retry-After`; nothing is queued.
    RateLimited {
        /// The `Retry-After` seconds.
        retry_after_secs: u64,
    },
    /// The message IS queued, but the answer is held for `delay` (make it
    /// longer than the client's attempt timeout): the client times out after
    /// sending.
    LoseResponse {
        /// How long the answer is held.
        delay: Duration,
    },
    /// HTTP 400, error 21211 (invalid `To`); nothing is queued.
    InvalidTo,
}

/// A message the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FakeMessage {
    /// Its SID.
    pub sid: String,
    /// `To`.
    pub to: String,
    /// `From`, or the sender the fake picked for a Messaging Service.
    pub from: String,
    /// `MessagingServiceSid`.
    pub messaging_service_sid: Option<String>,
    /// `Body`.
    pub body: Option<String>,
    /// `MediaUrl`s.
    pub media_urls: Vec<String>,
    /// `StatusCallback`, exactly as received.
    pub status_callback: Option<String>,
    /// Status.
    pub status: String,
    /// Creation time.
    pub created_at: SystemTime,
    /// When Twilio sent it: `None` while `queued`, `accepted` or
    /// `scheduled` (shown as `date_sent: null`).
    pub sent_at: Option<SystemTime>,
}

#[derive(Debug, Default)]
struct State {
    messages: Vec<FakeMessage>,
    faults: VecDeque<Fault>,
    write_requests: usize,
    side_effects: usize,
    seq: u64,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The simulated Twilio.
#[derive(Debug)]
pub struct FakeTwilio {
    server: MockServer,
    state: Shared,
}

impl FakeTwilio {
    /// The account the fake serves.
    pub const ACCOUNT_SID: &'static str = "AC00000000000000000000000000000fa4";
    /// The sender the fake uses for Messaging Service sends.
    pub const SERVICE_SENDER: &'static str = "+15005550006";

    /// Starts the fake on a local port.
    pub async fn start() -> Self {
        Self::on(MockServer::start().await).await
    }

    /// Starts the fake on a given listener (for a port chosen in advance).
    pub async fn start_on(listener: std::net::TcpListener) -> Self {
        Self::on(MockServer::builder().listener(listener).start().await).await
    }

    async fn on(server: MockServer) -> Self {
        let state: Shared = Arc::default();
        let list = r"^/2010-04-01/Accounts/[^/]+/Messages\.json$";
        Mock::given(method("POST"))
            .and(path_regex(list))
            .respond_with(Create(state.clone()))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(list))
            .respond_with(List(state.clone()))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path_regex(
                r"^/2010-04-01/Accounts/[^/]+/Messages/[^/]+\.json$",
            ))
            .respond_with(Fetch(state.clone()))
            .mount(&server)
            .await;
        Self { server, state }
    }

    /// The base URL to give the client.
    pub fn base_url(&self) -> String {
        self.server.uri()
    }

    /// The account SID to give the client.
    pub fn account_sid(&self) -> &'static str {
        Self::ACCOUNT_SID
    }

    /// Messages really queued through the API (seeded ones not included).
    pub fn side_effects(&self) -> usize {
        lock(&self.state).side_effects
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

    /// Every `GET` request (lookups) as it arrived on the wire, in order.
    pub async fn received_reads(&self) -> Vec<wiremock::Request> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.method == http::Method::GET)
            .collect()
    }

    /// Write requests (`POST`s) seen on the wire, whatever their answer.
    pub fn write_requests(&self) -> usize {
        lock(&self.state).write_requests
    }

    /// Queues a fault for the next write request.
    pub fn inject(&self, fault: Fault) {
        lock(&self.state).faults.push_back(fault);
    }

    /// Every message the fake holds, oldest first.
    pub fn messages(&self) -> Vec<FakeMessage> {
        lock(&self.state).messages.clone()
    }

    /// Adds a message as if sent earlier by someone else (not counted as a
    /// side effect): for example an identical text, to make a lookup
    /// ambiguous.
    pub fn seed_message(&self, to: &str, from: &str, body: &str) -> String {
        let mut st = lock(&self.state);
        let sid = next_sid(&mut st, false);
        st.messages.push(FakeMessage {
            sid: sid.clone(),
            to: to.to_owned(),
            from: from.to_owned(),
            messaging_service_sid: None,
            body: Some(body.to_owned()),
            media_urls: Vec::new(),
            status_callback: None,
            status: "sent".to_owned(),
            created_at: SystemTime::now(),
            sent_at: Some(SystemTime::now()),
        });
        sid
    }

    /// Moves a message to `status` and returns the parameters Twilio would
    /// send to its status callback: the callback URL's query parameters
    /// followed by the form fields (`MessageSid`, `MessageStatus`,
    /// `AccountSid`, `To`, `From`, …). `None` when the message is unknown or
    /// had no callback URL.
    pub fn status_callback(&self, sid: &str, status: &str) -> Option<Vec<(String, String)>> {
        let mut st = lock(&self.state);
        let m = st.messages.iter_mut().find(|m| m.sid == sid)?;
        m.status = status.to_owned();
        if !matches!(status, "queued" | "accepted" | "scheduled" | "canceled") {
            m.sent_at.get_or_insert_with(SystemTime::now);
        }
        let url: url::Url = m.status_callback.as_deref()?.parse().ok()?;
        let mut params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        for (k, v) in [
            ("ApiVersion", "2010-04-01"),
            ("AccountSid", Self::ACCOUNT_SID),
            ("MessageSid", &m.sid),
            ("SmsSid", &m.sid),
            ("MessageStatus", status),
            ("SmsStatus", status),
            ("To", &m.to),
            ("From", &m.from),
        ] {
            params.push((k.to_owned(), v.to_owned()));
        }
        if let Some(s) = &m.messaging_service_sid {
            params.push(("MessagingServiceSid".to_owned(), s.clone()));
        }
        Some(params)
    }
}

fn next_sid(st: &mut State, mms: bool) -> String {
    st.seq += 1;
    format!("{}{:032x}", if mms { "MM" } else { "SM" }, st.seq)
}

fn error(status: u16, code: u32, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(serde_json::json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    }))
}

fn account_of(req: &Request) -> Option<String> {
    let mut parts = req.url.path().split('/').skip(3);
    parts.next().map(str::to_owned)
}

/// Common checks: credentials present, the fake's account.
fn check_auth(req: &Request) -> Option<ResponseTemplate> {
    let auth = req
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !auth.starts_with("Basic ") || auth.len() <= "Basic ".len() {
        return Some(error(401, 20003, "Authenticate"));
    }
    if account_of(req).as_deref() != Some(FakeTwilio::ACCOUNT_SID) {
        return Some(error(404, 20404, "The requested resource was not found"));
    }
    None
}

fn to_json(m: &FakeMessage) -> serde_json::Value {
    let uri = format!(
        "/2010-04-01/Accounts/{}/Messages/{}.json",
        FakeTwilio::ACCOUNT_SID,
        m.sid
    );
    let date = rfc2822(m.created_at);
    let sent = m.sent_at.map(rfc2822);
    serde_json::json!({
        "account_sid": FakeTwilio::ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": m.body,
        "date_created": date,
        "date_sent": sent,
        "date_updated": date,
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": m.from,
        "messaging_service_sid": m.messaging_service_sid,
        "num_media": m.media_urls.len().to_string(),
        "num_segments": "1",
        "price": null,
        "price_unit": null,
        "sid": m.sid,
        "status": m.status,
        "subresource_uris": { "media": uri.replace(".json", "/Media.json") },
        "to": m.to,
        "uri": uri,
    })
}

fn valid_address(to: &str) -> bool {
    if let Some((channel, rest)) = to.split_once(':') {
        return !channel.is_empty() && !rest.is_empty();
    }
    let digits = to.strip_prefix('+').unwrap_or("");
    (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

struct Create(Shared);

impl Respond for Create {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let mut st = lock(&self.0);
        st.write_requests += 1;
        if let Some(denied) = check_auth(req) {
            return denied;
        }
        let mut to = None;
        let mut from = None;
        let mut service = None;
        let mut body = None;
        let mut media = Vec::new();
        let mut callback = None;
        for (k, v) in url::form_urlencoded::parse(&req.body) {
            let v = v.into_owned();
            match k.as_ref() {
                "To" => to = Some(v),
                "From" => from = Some(v),
                "MessagingServiceSid" => service = Some(v),
                "Body" => body = Some(v),
                "MediaUrl" => media.push(v),
                "StatusCallback" => callback = Some(v),
                _ => {}
            }
        }
        let fault = st.faults.pop_front();
        match &fault {
            Some(Fault::ServerError) => return error(500, 20500, "Internal Server Error"),
            Some(Fault::RateLimited { retry_after_secs }) => {
                return error(429, 20429, "Too Many Requests")
                    .insert_header("Retry-After", retry_after_secs.to_string().as_str());
            }
            Some(Fault::InvalidTo) => {
                return error(400, 21211, "The 'To' number is not a valid phone number.");
            }
            _ => {}
        }
        let Some(to) = to.filter(|t| !t.is_empty()) else {
            return error(400, 21604, "A 'To' phone number is required.");
        };
        if from.is_none() && service.is_none() {
            return error(400, 21603, "A 'From' phone number is required.");
        }
        if body.as_deref().is_none_or(str::is_empty) && media.is_empty() {
            return error(400, 21602, "Message body is required.");
        }
        if body.as_deref().is_some_and(|b| b.chars().count() > 1600) {
            return error(
                400,
                21617,
                "The concatenated message body exceeds the 1600 character limit.",
            );
        }
        if !valid_address(&to) {
            return error(400, 21211, "The 'To' number is not a valid phone number.");
        }
        if callback.as_deref().is_some_and(|c| {
            c.parse::<url::Url>().map_or(true, |u| {
                u.host_str().is_none_or(|h| h.contains('_')) || c.contains('_')
            })
        }) {
            return error(400, 21609, "Invalid StatusCallback URL.");
        }
        let sid = next_sid(&mut st, !media.is_empty());
        let status = if service.is_some() {
            "accepted"
        } else {
            "queued"
        };
        let message = FakeMessage {
            sid,
            to,
            from: from.unwrap_or_else(|| FakeTwilio::SERVICE_SENDER.to_owned()),
            messaging_service_sid: service,
            body,
            media_urls: media,
            status_callback: callback,
            status: status.to_owned(),
            created_at: SystemTime::now(),
            sent_at: None,
        };
        let json = to_json(&message);
        st.messages.push(message);
        st.side_effects += 1;
        match fault {
            Some(Fault::LoseResponse { delay }) => ResponseTemplate::new(201)
                .set_body_json(json)
                .set_delay(delay),
            Some(Fault::ServerErrorAfterQueue) => error(500, 20500, "Internal Server Error"),
            _ => ResponseTemplate::new(201).set_body_json(json),
        }
    }
}

struct List(Shared);

impl Respond for List {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        if let Some(denied) = check_auth(req) {
            return denied;
        }
        let st = lock(&self.0);
        let mut page_size = 50usize;
        let mut page = 0usize;
        let mut filters: Vec<(String, String)> = Vec::new();
        for (k, v) in req.url.query_pairs() {
            match k.as_ref() {
                "PageSize" => page_size = v.parse().unwrap_or(50).clamp(1, 1000),
                "Page" => page = v.parse().unwrap_or(0),
                _ => filters.push((k.into_owned(), v.into_owned())),
            }
        }
        let mut found: Vec<&FakeMessage> = st
            .messages
            .iter()
            .filter(|m| {
                // Twilio filters `DateSent` on `date_sent`: a message not
                // sent yet has none and matches no `DateSent` filter.
                let day = m.sent_at.map(ymd);
                let day = day.as_deref();
                filters.iter().all(|(k, v)| match k.as_str() {
                    "To" => &m.to == v,
                    "From" => &m.from == v,
                    "DateSent" => day == Some(v.as_str()),
                    "DateSent>" => day.is_some_and(|d| d >= v.as_str()),
                    "DateSent<" => day.is_some_and(|d| d <= v.as_str()),
                    _ => true,
                })
            })
            .collect();
        // Newest first, as Twilio lists them.
        found.reverse();
        let start = page.saturating_mul(page_size);
        let items: Vec<serde_json::Value> = found
            .iter()
            .skip(start)
            .take(page_size)
            .map(|m| to_json(m))
            .collect();
        let base = format!(
            "/2010-04-01/Accounts/{}/Messages.json",
            FakeTwilio::ACCOUNT_SID
        );
        let query = |p: usize| {
            let mut s = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &filters {
                s.append_pair(k, v);
            }
            s.append_pair("PageSize", &page_size.to_string());
            s.append_pair("Page", &p.to_string());
            format!("{base}?{}", s.finish())
        };
        let next = (start + page_size < found.len()).then(|| query(page + 1));
        ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "end": start + items.len().saturating_sub(1),
            "first_page_uri": query(0),
            "next_page_uri": next,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": (page > 0).then(|| query(page - 1)),
            "start": start,
            "uri": query(page),
            "messages": items,
        }))
    }
}

struct Fetch(Shared);

impl Respond for Fetch {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        if let Some(denied) = check_auth(req) {
            return denied;
        }
        let sid = req
            .url
            .path()
            .rsplit('/')
            .next()
            .and_then(|s| s.strip_suffix(".json"))
            .unwrap_or("");
        let st = lock(&self.0);
        match st.messages.iter().find(|m| m.sid == sid) {
            Some(m) => ResponseTemplate::new(200).set_body_json(to_json(m)),
            None => error(404, 20404, "The requested resource was not found"),
        }
    }
}
