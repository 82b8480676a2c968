//! Message types: what is sent and what Twilio answers.

use std::time::SystemTime;

use idem::executor::Url;
use serde::{Deserialize, Serialize};

/// Twilio's longest `Body`, in characters.
pub const MAX_BODY_CHARS: usize = 1600;
/// Twilio's largest number of `MediaUrl` parameters on one message.
pub const MAX_MEDIA: usize = 10;

idem::provider_id!(
    /// A Twilio Message SID: `SM` (SMS) or `MM` (MMS) and 32 hex digits.
    MessageSid
);

impl MessageSid {
    /// Checks the SID's shape (`SM`/`MM` and 32 hex digits).
    ///
    /// # Errors
    ///
    /// [`crate::AdapterError::Callback`] when it does not look like a Message SID.
    pub fn parse(text: &str) -> Result<Self, crate::Error> {
        let ok = text.len() == 34
            && (text.starts_with("SM") || text.starts_with("MM"))
            && text[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if ok {
            Ok(Self(text.to_owned()))
        } else {
            Err(
                crate::AdapterError::Callback(format!("{text:?} is not a Twilio Message SID"))
                    .into(),
            )
        }
    }
}

idem::wire_enum! {
    /// A message's status, as in Twilio's `message_enum_status`.
    pub enum MessageStatus {
        /// Queued for sending (initial status without a Messaging Service).
        Queued = "queued",
        /// Accepted by a Messaging Service (its initial status).
        Accepted = "accepted",
        /// Scheduled for later sending.
        Scheduled = "scheduled",
        /// Being sent.
        Sending = "sending",
        /// Sent to the carrier.
        Sent = "sent",
        /// Delivered.
        Delivered = "delivered",
        /// Not delivered.
        Undelivered = "undelivered",
        /// Failed to send.
        Failed = "failed",
        /// Inbound, being received.
        Receiving = "receiving",
        /// Inbound, received.
        Received = "received",
        /// Read (WhatsApp and similar channels).
        Read = "read",
        /// Partially delivered.
        PartiallyDelivered = "partially_delivered",
        /// A scheduled message that was canceled.
        Canceled = "canceled",
    }
}

/// A Twilio Message resource (the fields idem reads; Twilio sends more).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Message {
    /// The Message SID.
    pub sid: MessageSid,
    /// Its status.
    pub status: Option<MessageStatus>,
    /// The account.
    pub account_sid: Option<String>,
    /// Recipient.
    pub to: Option<String>,
    /// Sender.
    pub from: Option<String>,
    /// Messaging Service, if one was used.
    pub messaging_service_sid: Option<String>,
    /// The text.
    pub body: Option<String>,
    /// Number of media files, as Twilio's string.
    pub num_media: Option<String>,
    /// `outbound-api`, `inbound`, …
    pub direction: Option<String>,
    /// RFC 2822 creation time (GMT).
    pub date_created: Option<String>,
    /// RFC 2822 send time (GMT); empty until Twilio sends it.
    pub date_sent: Option<String>,
    /// Delivery error code, if delivery failed.
    pub error_code: Option<i64>,
    /// Delivery error text, if delivery failed.
    pub error_message: Option<String>,
}

/// Who sends the message: a number (or sender ID) or a Messaging Service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sender {
    /// `From`: a Twilio number in E.164, a short code, an alphanumeric
    /// sender ID or a channel address.
    From(String),
    /// `MessagingServiceSid` (`MG…`): Twilio picks the sender.
    MessagingService(String),
    /// Both: this sender, from this Messaging Service's pool.
    FromService {
        /// `From`.
        from: String,
        /// `MessagingServiceSid`.
        service: String,
    },
}

impl Sender {
    pub(crate) fn number(&self) -> Option<&str> {
        match self {
            Self::From(f) | Self::FromService { from: f, .. } => Some(f),
            Self::MessagingService(_) => None,
        }
    }

    pub(crate) fn service(&self) -> Option<&str> {
        match self {
            Self::MessagingService(s) | Self::FromService { service: s, .. } => Some(s),
            Self::From(_) => None,
        }
    }
}

/// A message to create: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`.
///
/// ```
/// use idem_twilio::CreateMessage;
/// let msg = CreateMessage::from_number("+15558675310", "+15017122661", "Your bike is ready")
///     .media_url("https://example.com/bike.jpg".parse().unwrap());
/// assert_eq!(msg.media_urls.len(), 1);
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CreateMessage {
    /// `To`: the recipient (E.164, or a channel address such as `whatsapp:+1…`).
    pub to: String,
    /// `From` and/or `MessagingServiceSid`.
    pub sender: Sender,
    /// `Body`: up to 1,600 characters.
    pub body: Option<String>,
    /// `MediaUrl`, repeated: up to 10.
    pub media_urls: Vec<Url>,
    /// `StatusCallback` for this message, overriding the client's default.
    /// The adapter adds the idempotency key to it as a query parameter.
    pub status_callback: Option<Url>,
    /// `ContentSid` (`HX…`): a Content Template instead of, or with, a body.
    pub content_sid: Option<String>,
    /// `ContentVariables`: the template's variables, sent as a JSON object.
    pub content_variables: Option<serde_json::Map<String, serde_json::Value>>,
    /// `SendAt` with `ScheduleType=fixed`: a scheduled message (needs a
    /// Messaging Service sender; Twilio takes 15 minutes to 35 days ahead).
    pub send_at: Option<SystemTime>,
    /// Parameters this struct lacks, sent as they are (see [`CreateMessage::extra`]).
    pub extra: idem::adapter::Extra,
}

impl CreateMessage {
    /// A message from a number or sender ID.
    pub fn from_number(
        to: impl Into<String>,
        from: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        Self::new(to, Sender::From(from.into()), Some(body.into()))
    }

    /// A message through a Messaging Service (`MG…`).
    pub fn via_service(
        to: impl Into<String>,
        messaging_service_sid: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        Self::new(
            to,
            Sender::MessagingService(messaging_service_sid.into()),
            Some(body.into()),
        )
    }

    /// A message with any sender and an optional body (media-only MMS).
    pub fn new(to: impl Into<String>, sender: Sender, body: Option<String>) -> Self {
        Self {
            to: to.into(),
            sender,
            body,
            media_urls: Vec::new(),
            status_callback: None,
            content_sid: None,
            content_variables: None,
            send_at: None,
            extra: idem::adapter::Extra::default(),
        }
    }

    /// Sends a Content Template (`ContentSid`, `HX…`) with its variables.
    pub fn content(
        mut self,
        content_sid: impl Into<String>,
        variables: serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        self.content_sid = Some(content_sid.into());
        self.content_variables = (!variables.is_empty()).then_some(variables);
        self
    }

    /// Schedules the message for `at` (`SendAt`, `ScheduleType=fixed`).
    pub fn send_at(mut self, at: SystemTime) -> Self {
        self.send_at = Some(at);
        self
    }

    /// A parameter this struct lacks (for example `ValidityPeriod`,
    /// `ShortenUrls`), sent as it is. It is part of the request, so of the
    /// fingerprint; a name the adapter sets itself is refused with
    /// `InvalidRequest`, never overridden.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.extra.push(name, value);
        self
    }

    /// Adds a `MediaUrl`.
    pub fn media_url(mut self, url: Url) -> Self {
        self.media_urls.push(url);
        self
    }

    /// Sets this message's `StatusCallback` base URL.
    pub fn status_callback(mut self, url: Url) -> Self {
        self.status_callback = Some(url);
        self
    }

    /// Checks what Twilio would reject for sure, before anything is recorded.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.to.trim().is_empty() {
            return Err("`To` is empty".into());
        }
        match &self.sender {
            Sender::From(f) if f.trim().is_empty() => return Err("`From` is empty".into()),
            Sender::MessagingService(s) if s.trim().is_empty() => {
                return Err("`MessagingServiceSid` is empty".into());
            }
            Sender::FromService { from, service }
                if from.trim().is_empty() || service.trim().is_empty() =>
            {
                return Err("`From` or `MessagingServiceSid` is empty".into());
            }
            _ => {}
        }
        let body_chars = self.body.as_deref().map_or(0, |b| b.chars().count());
        if body_chars == 0 && self.media_urls.is_empty() && self.content_sid.is_none() {
            return Err(
                "a message needs a `Body`, a `ContentSid` or at least one `MediaUrl`".into(),
            );
        }
        if let Some(sid) = &self.content_sid {
            if sid.len() != 34
                || !sid.starts_with("HX")
                || !sid.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err("`ContentSid` must be HX followed by 32 letters and digits".into());
            }
        }
        if self.content_variables.is_some() && self.content_sid.is_none() {
            return Err("`ContentVariables` needs a `ContentSid`".into());
        }
        if self.send_at.is_some() && self.sender.service().is_none() {
            return Err("a scheduled message (`SendAt`) needs a `MessagingServiceSid`".into());
        }
        if body_chars > MAX_BODY_CHARS {
            return Err(format!(
                "`Body` is {body_chars} characters; Twilio's limit is {MAX_BODY_CHARS}"
            ));
        }
        if self.media_urls.len() > MAX_MEDIA {
            return Err(format!(
                "{} `MediaUrl`s; Twilio's limit is {MAX_MEDIA}",
                self.media_urls.len()
            ));
        }
        if let Some(cb) = &self.status_callback {
            check_callback_url(cb)?;
        }
        Ok(())
    }
}

/// Twilio: a status callback URL "must contain a valid hostname and
/// underscores are not allowed".
pub(crate) fn check_callback_url(url: &Url) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err("the status callback URL must be http or https".into());
    }
    match url.host_str() {
        None | Some("") => Err("the status callback URL has no host".into()),
        Some(h) if h.contains('_') => {
            Err("Twilio refuses status callback URLs with `_` in the host".into())
        }
        Some(_) if url.path().contains('_') || url.query().is_some_and(|q| q.contains('_')) => {
            Err("Twilio refuses underscores in status callback URLs; remove `_` from the path and query".into())
        }
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sid_shape() {
        assert!(MessageSid::parse("SM0123456789abcdef0123456789abcdef").is_ok());
        assert!(MessageSid::parse("MM0123456789abcdef0123456789abcdef").is_ok());
        assert!(MessageSid::parse("CA0123456789abcdef0123456789abcdef").is_err());
        assert!(MessageSid::parse("SM01").is_err());
    }

    #[test]
    fn status_round_trip() {
        for s in [
            "queued",
            "accepted",
            "sent",
            "delivered",
            "partially_delivered",
            "weird",
        ] {
            assert_eq!(MessageStatus::parse(s).as_str(), s);
        }
        assert_eq!(MessageStatus::parse("sent"), MessageStatus::Sent);
    }

    #[test]
    fn parses_twilio_create_answer() {
        // Twilio's `create` example from twilio-oai (spec/json/twilio_api_v2010.json).
        let body = r#"{"account_sid":"ACaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","api_version":"2010-04-01","body":"Hello! 👍","date_created":"Thu, 24 Aug 2023 05:01:45 +0000","date_sent":"Thu, 24 Aug 2023 05:01:45 +0000","date_updated":"Thu, 24 Aug 2023 05:01:45 +0000","direction":"outbound-api","error_code":null,"error_message":null,"from":"+14155552345","num_media":"0","num_segments":"1","price":null,"price_unit":null,"messaging_service_sid":"MGaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","sid":"SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","status":"queued","subresource_uris":{"media":"/x"},"to":"+14155552345","uri":"/x.json"}"#;
        let m: Message = serde_json::from_str(body).unwrap();
        assert_eq!(m.sid.as_str(), "SMaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        assert_eq!(m.status, Some(MessageStatus::Queued));
        assert_eq!(m.num_media.as_deref(), Some("0"));
    }

    #[test]
    fn validation() {
        let ok = CreateMessage::from_number("+15558675310", "+15017122661", "hi");
        assert!(ok.validate().is_ok());
        assert!(
            CreateMessage::from_number("", "+1", "hi")
                .validate()
                .is_err()
        );
        assert!(
            CreateMessage::new("+1", Sender::From("+2".into()), None)
                .validate()
                .is_err()
        );
        let long = "x".repeat(1601);
        assert!(
            CreateMessage::from_number("+1", "+2", long)
                .validate()
                .is_err()
        );
        let bad_cb = ok
            .clone()
            .status_callback("https://my_host.example.com/cb".parse().unwrap());
        assert!(bad_cb.validate().is_err());
        let good_cb =
            ok.status_callback("https://hooks.example.com/twilio/status".parse().unwrap());
        assert!(good_cb.validate().is_ok());
    }
}
