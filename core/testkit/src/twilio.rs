//! A simulated Twilio Messages API, for tests, demos and chaos runs.
//!
//! It serves `POST`/`GET /2010-04-01/Accounts/{AccountSid}/Messages.json` and
//! `GET …/Messages/{Sid}.json` the way Twilio does (form-encoded create,
//! `201` with a Message resource, Twilio's error bodies and codes, list
//! filters `To`, `From`, `DateSent`, `DateSent>`, `DateSent<`, paging), counts
//! the messages it really queued, and fails on demand with [`Fault`]s. Like
//! Twilio, it takes no idempotency key: a create sent twice queues twice.
//!
//! As at Twilio, a message is created `queued` (or `accepted` through a
//! Messaging Service) with `date_sent: null`; it gets a `date_sent` only
//! once it is sent ([`FakeTwilio::status_callback`] with `sent` or a later
//! status). The `DateSent` filters match on `date_sent`, so they never list
//! a message that has not been sent yet.
//!
//! Faults: [`Fault::ServerError`] is Twilio's 500 (error 20500),
//! [`Fault::ServerErrorAfterEffect`] the same 500 after the message was
//! queued, [`Fault::RateLimited`] its 429 (error 20429) with `Retry-After`,
//! and [`FakeTwilio::invalid_to`] its 400 (error 21211).
//!
//! ```no_run
//! # async fn demo() {
//! use idem_testkit::{FakeTwilio, Fault};
//! use std::time::Duration;
//!
//! let twilio = FakeTwilio::start().await;
//! twilio.inject(Fault::LoseResponse { delay: Duration::from_secs(5) });
//! // point a TwilioClient at twilio.base_url() with credentials for
//! // FakeTwilio::ACCOUNT_SID, send, then:
//! assert_eq!(twilio.side_effects(), 1);
//! # }
//! ```

use std::time::SystemTime;

use crate::calendar::{rfc2822, ymd};
use crate::fake::{Context, Fake, Fault, Simulator};
use crate::http::{Reply, Request};

/// The simulated Twilio: a [`Fake`] serving [`Twilio`].
pub type FakeTwilio = Fake<Twilio>;

/// The state of the simulated Twilio (see [`FakeTwilio`]).
#[derive(Debug, Default)]
pub struct Twilio {
    messages: Vec<FakeMessage>,
    seq: u64,
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

impl FakeTwilio {
    /// The account the fake serves.
    pub const ACCOUNT_SID: &'static str = "AC00000000000000000000000000000fa4";
    /// The sender the fake uses for Messaging Service sends.
    pub const SERVICE_SENDER: &'static str = "+15005550006";

    /// Starts the fake on a local port.
    pub async fn start() -> Self {
        Fake::serve(Twilio::default()).await
    }

    /// Starts the fake on a given listener (for a port chosen in advance).
    pub async fn start_on(listener: std::net::TcpListener) -> Self {
        Fake::serve_on(listener, Twilio::default()).await
    }

    /// The account SID to give the client.
    pub fn account_sid(&self) -> &'static str {
        Self::ACCOUNT_SID
    }

    /// Every message the fake holds, oldest first.
    pub fn messages(&self) -> Vec<FakeMessage> {
        self.with(|st| st.messages.clone())
    }

    /// Twilio's 400 error 21211 (invalid `To`); nothing is queued.
    pub fn invalid_to() -> Fault {
        Fault::Reply(error(
            400,
            21211,
            "The 'To' number is not a valid phone number.",
        ))
    }

    /// Adds a message as if sent earlier by someone else (not counted as a
    /// side effect): for example an identical text, to make a lookup
    /// ambiguous.
    pub fn seed_message(&self, to: &str, from: &str, body: &str) -> String {
        self.with(|st| {
            let sid = next_sid(st, false);
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
        })
    }

    /// Moves a message to `status` and returns the parameters Twilio would
    /// send to its status callback: the callback URL's query parameters
    /// followed by the form fields (`MessageSid`, `MessageStatus`,
    /// `AccountSid`, `To`, `From`, …). `None` when the message is unknown or
    /// had no callback URL.
    pub fn status_callback(&self, sid: &str, status: &str) -> Option<Vec<(String, String)>> {
        self.with(|st| {
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
        })
    }
}

fn next_sid(st: &mut Twilio, mms: bool) -> String {
    st.seq += 1;
    format!("{}{:032x}", if mms { "MM" } else { "SM" }, st.seq)
}

fn error(status: u16, code: u32, message: &str) -> Reply {
    Reply::json(
        status,
        serde_json::json!({
            "code": code,
            "message": message,
            "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
            "status": status,
        }),
    )
}

fn account_of(req: &Request) -> Option<String> {
    let mut parts = req.url.path().split('/').skip(3);
    parts.next().map(str::to_owned)
}

/// Common checks: credentials present, the fake's account.
fn check_auth(req: &Request) -> Option<Reply> {
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

enum Route {
    Messages,
    Message,
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.split('/').collect();
    match segments.as_slice() {
        ["", "2010-04-01", "Accounts", account, "Messages.json"] if !account.is_empty() => {
            Some(Route::Messages)
        }
        ["", "2010-04-01", "Accounts", account, "Messages", sid]
            if !account.is_empty() && sid.len() > ".json".len() && sid.ends_with(".json") =>
        {
            Some(Route::Message)
        }
        _ => None,
    }
}

impl Simulator for Twilio {
    fn screen(&mut self, req: &Request) -> Option<Reply> {
        let known = matches!(
            (route(req.path()), &req.method),
            (
                Some(Route::Messages),
                &http::Method::POST | &http::Method::GET
            ) | (Some(Route::Message), &http::Method::GET)
        );
        if !known {
            return Some(Reply::new(404));
        }
        check_auth(req)
    }

    fn handle(&mut self, req: &Request, cx: &mut Context) -> Reply {
        match route(req.path()) {
            Some(Route::Messages) if req.method == http::Method::POST => self.create(req, cx),
            Some(Route::Messages) => self.list(req),
            _ => self.fetch(req),
        }
    }

    fn server_error(&self, _: &Request, _: bool) -> Reply {
        error(500, 20500, "Internal Server Error")
    }

    fn rate_limited(&self, _: &Request, retry_after_secs: u64) -> Reply {
        error(429, 20429, "Too Many Requests")
            .insert_header("Retry-After", retry_after_secs.to_string())
    }
}

impl Twilio {
    fn create(&mut self, req: &Request, cx: &mut Context) -> Reply {
        let st = self;
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
        let sid = next_sid(st, !media.is_empty());
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
        cx.side_effect();
        Reply::json(201, json)
    }

    fn list(&self, req: &Request) -> Reply {
        let st = self;
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
        Reply::json(
            200,
            serde_json::json!({
                "end": start + items.len().saturating_sub(1),
                "first_page_uri": query(0),
                "next_page_uri": next,
                "page": page,
                "page_size": page_size,
                "previous_page_uri": (page > 0).then(|| query(page - 1)),
                "start": start,
                "uri": query(page),
                "messages": items,
            }),
        )
    }

    fn fetch(&self, req: &Request) -> Reply {
        let sid = req
            .url
            .path()
            .rsplit('/')
            .next()
            .and_then(|s| s.strip_suffix(".json"))
            .unwrap_or("");
        match self.messages.iter().find(|m| m.sid == sid) {
            Some(m) => Reply::json(200, to_json(m)),
            None => error(404, 20404, "The requested resource was not found"),
        }
    }
}
