//! The client: credentials, builder, and `messages().create`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use idem::adapter::{AdapterCore, Answer, Facts, Provider as AdapterProvider};
use idem::executor::{Provider, RetrySettings, SafetyClass, Source, Url};
use idem::{Executor, IdempotencyKey, OutboundRequest};

use crate::classifier::TwilioClassifier;
use crate::error::{AdapterError, Error, TwilioError};
use crate::model::{CreateMessage, Message, check_callback_url};

/// The provider name recorded in the ledger.
pub const PROVIDER_NAME: &str = "twilio";
/// The old name of [`PROVIDER_NAME`].
#[deprecated(note = "renamed PROVIDER_NAME, as in every adapter")]
pub const PROVIDER: &str = PROVIDER_NAME;
/// The operation name recorded in the ledger for a message send.
pub const OPERATION: &str = "messages.create";
/// The query parameter of the status-callback URL that carries the key.
///
/// Twilio's reference says a status callback URL must not contain
/// underscores, and every idem key does; so the parameter name has none and
/// the key's `_` are written `%5F`, which every form/query decoder turns
/// back into `_`.
pub const CALLBACK_KEY_PARAM: &str = "idemkey";
/// Twilio's API base.
pub const DEFAULT_BASE_URL: &str = "https://api.twilio.com";

/// Twilio as idem's adapter kit describes it: sends are
/// [`LocalOnly`](SafetyClass::LocalOnly) (Twilio has no idempotency key).
#[derive(Debug, Clone, Copy)]
pub struct Twilio;

impl AdapterProvider for Twilio {
    const NAME: &'static str = PROVIDER_NAME;
    type WireError = TwilioError;
    type Classifier = TwilioClassifier;

    fn safety_class() -> SafetyClass {
        SafetyClass::LocalOnly
    }

    fn classifier() -> TwilioClassifier {
        TwilioClassifier
    }

    fn default_retry() -> RetrySettings {
        RetrySettings::default()
            .with_max_attempts(4)
            .with_attempt_timeout(Duration::from_secs(15))
            .with_total_timeout(Duration::from_secs(60))
    }
}

/// Twilio credentials for HTTP Basic auth. `Debug` hides the secret.
#[derive(Clone)]
pub struct Credentials {
    account_sid: String,
    username: String,
    secret: String,
}

impl Credentials {
    /// The account's SID (`AC…`) and Auth Token.
    pub fn auth_token(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        let account_sid = account_sid.into();
        Self {
            username: account_sid.clone(),
            account_sid,
            secret: auth_token.into(),
        }
    }

    /// An API key (`SK…`) and its secret, acting for `account_sid`.
    pub fn api_key(
        account_sid: impl Into<String>,
        key_sid: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            account_sid: account_sid.into(),
            username: key_sid.into(),
            secret: secret.into(),
        }
    }

    /// The account SID the requests are made for.
    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("account_sid", &self.account_sid)
            .field("username", &self.username)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Builds a [`TwilioClient`].
#[derive(Debug)]
pub struct TwilioClientBuilder {
    executor: Executor,
    credentials: Credentials,
    base_url: String,
    retry: RetrySettings,
    lookup_retry: RetrySettings,
    status_callback: Option<Url>,
    clock_skew: Duration,
    max_pages: u32,
}

impl TwilioClientBuilder {
    /// Retry bounds for reconciliation lookups (GETs, retried freely).
    pub fn lookup_retry(mut self, retry: RetrySettings) -> Self {
        self.lookup_retry = retry;
        self
    }

    /// The default `StatusCallback` base URL for every message. The key is
    /// added to it as `?idemkey=…`, so Twilio's status callbacks can settle
    /// an `unknown` send (see [`reconcile_from_callback`](crate::reconcile_from_callback)).
    /// Without one (and without a per-message callback), reconciliation can
    /// only use the message lookup.
    pub fn status_callback(mut self, url: Url) -> Self {
        self.status_callback = Some(url);
        self
    }

    /// How far apart idem's clock and Twilio's may be when a lookup compares
    /// `date_created` with the ledger's send window (default 2 minutes).
    pub fn reconcile_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// The most list pages one lookup reads (default 5, 200 messages each).
    pub fn reconcile_max_pages(mut self, pages: u32) -> Self {
        self.max_pages = pages.max(1);
        self
    }

    /// The client.
    ///
    /// # Errors
    ///
    /// [`AdapterError::Config`] when the account SID, the base URL or the status
    /// callback URL is invalid.
    pub fn build(self) -> Result<TwilioClient, Error> {
        let sid = self.credentials.account_sid();
        if sid.len() < 3
            || !sid.starts_with("AC")
            || !sid.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(AdapterError::Config(
                "the account SID must look like AC followed by letters and digits".into(),
            )
            .into());
        }
        if self.credentials.username.is_empty() || self.credentials.secret.is_empty() {
            return Err(AdapterError::Config("the credentials are empty".into()).into());
        }
        let core = AdapterCore::new::<Twilio>(self.executor, &self.base_url, self.retry)
            .map_err(AdapterError::Config)?;
        if let Some(cb) = &self.status_callback {
            check_callback_url(cb).map_err(AdapterError::Config)?;
        }
        Ok(TwilioClient {
            inner: Arc::new(Inner {
                core,
                // Only ever passed to `Executor::read`, which retries reads
                // whatever the class; it never claims a ledger row. A GET
                // changes nothing: 408, 429 and 5xx are retried.
                lookup_provider: Provider::new(
                    PROVIDER_NAME,
                    SafetyClass::NaturallyIdempotent,
                    idem::executor::StatusClassifier,
                )
                .with_retry(self.lookup_retry),
                credentials: self.credentials,
                status_callback: self.status_callback,
                clock_skew: self.clock_skew,
                max_pages: self.max_pages,
            }),
        })
    }
}

pub(crate) struct Inner {
    pub(crate) core: AdapterCore,
    pub(crate) lookup_provider: Provider,
    pub(crate) credentials: Credentials,
    pub(crate) status_callback: Option<Url>,
    pub(crate) clock_skew: Duration,
    pub(crate) max_pages: u32,
}

/// A Twilio client whose sends go through idem's ledger and executor.
/// Cheap to clone.
#[derive(Clone)]
pub struct TwilioClient {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for TwilioClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TwilioClient")
            .field("account_sid", &self.inner.credentials.account_sid)
            .field("base", &self.inner.core.base().as_str())
            .finish_non_exhaustive()
    }
}

impl TwilioClient {
    /// Starts a client over `executor` (which owns the ledger) with these
    /// credentials.
    pub fn builder(executor: Executor, credentials: Credentials) -> TwilioClientBuilder {
        TwilioClientBuilder {
            executor,
            credentials,
            base_url: DEFAULT_BASE_URL.to_owned(),
            retry: Self::default_retry(),
            lookup_retry: RetrySettings::default()
                .with_attempt_timeout(Duration::from_secs(15))
                .with_total_timeout(Duration::from_secs(30)),
            status_callback: None,
            clock_skew: Duration::from_secs(120),
            max_pages: 5,
        }
    }

    /// The default send retry bounds: 4 attempts, backoff 0.5–5 s, 15 s per
    /// attempt, 60 s in all, `Retry-After` honoured up to 30 s.
    pub fn default_retry() -> RetrySettings {
        Twilio::default_retry()
    }

    /// Message sends and lookups.
    pub fn messages(&self) -> Messages<'_> {
        Messages { client: self }
    }

    /// The account SID.
    pub fn account_sid(&self) -> &str {
        self.inner.credentials.account_sid()
    }

    /// A keyed raw write for what the typed API lacks: a form `POST` to
    /// `path` below the base URL (for example
    /// `"2010-04-01/Accounts/AC…/Calls.json"`), with this client's
    /// credentials, through the executor under `key` (recorded first,
    /// fingerprinted, answered from the ledger on a rerun). Sends are
    /// local-only, as every Twilio write: a send that may have reached
    /// Twilio is never resent automatically.
    ///
    /// # Errors
    ///
    /// As [`Messages::create`]; [`Error::InvalidRequest`] for a path that
    /// would leave the base URL.
    pub async fn post<T: serde::de::DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<Answer<T>, Error> {
        let core = &self.inner.core;
        let req = core
            .raw_request(key, http::Method::POST, path)?
            .form(params.iter().copied());
        core.raw_write(core.provider(), key, self.authorize(req))
            .await
    }

    pub(crate) fn messages_url(&self) -> Url {
        self.inner.core.url(
            &[
                "2010-04-01",
                "Accounts",
                self.account_sid(),
                "Messages.json",
            ],
            &[],
        )
    }

    pub(crate) fn authorize(&self, req: OutboundRequest) -> OutboundRequest {
        let c = &self.inner.credentials;
        req.basic_auth(&c.username, &c.secret)
    }
}

/// A message the ledger says was sent.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Sent {
    /// The key it was sent under.
    pub key: IdempotencyKey,
    /// Twilio's Message resource (from the wire, the ledger, or
    /// reconciliation; after a status-callback reconciliation only `sid`,
    /// `status`, `to`, `from` and `account_sid` are known).
    pub message: Message,
    /// Where the answer came from.
    pub source: Source,
}

impl Sent {
    /// Whether the answer came from the ledger: no request was made now.
    pub fn from_ledger(&self) -> bool {
        self.source == Source::Ledger
    }
}

/// Message operations; from [`TwilioClient::messages`].
#[derive(Debug, Clone, Copy)]
pub struct Messages<'a> {
    pub(crate) client: &'a TwilioClient,
}

impl Messages<'_> {
    /// Sends a message under `key`, at most once whatever happens.
    ///
    /// The ledger row is written before the request leaves. A row that
    /// already `succeeded` is answered from the ledger with no request. Only
    /// failures that provably queued nothing (connect failure, 429) are
    /// resent, after Twilio's `Retry-After`; a timeout or a 5xx after sending
    /// leaves the row `unknown` and is never resent automatically.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] (Twilio said no; recorded `failed`),
    /// [`Error::OutcomeUnknown`] (reconcile, or bump),
    /// [`Error::NotSent`] (retry later, same key), [`Error::InFlight`],
    /// [`Error::Superseded`], [`Error::InvalidRequest`], [`Error::Undecodable`],
    /// or [`Error::Store`] for ledger failures and a key reused for another
    /// message.
    pub async fn create(self, key: &IdempotencyKey, msg: &CreateMessage) -> Result<Sent, Error> {
        let req = self.request(key, msg)?;
        // What a lookup needs to find this message again from the key alone
        // (`idem::reconcile::Reconcile`).
        let facts = crate::reconcile::lookup_facts(msg);
        let core = &self.client.inner.core;
        let delivered = core.write(key, OPERATION, req, Facts::Hint(&facts)).await?;
        decode(key, &delivered.body, delivered.source)
    }

    /// The `StatusCallback` URL a message under `key` carries: the message's
    /// or the client's callback base with `idemkey=<key>` added, or `None`
    /// when neither is set.
    pub fn callback_url(&self, key: &IdempotencyKey, msg: &CreateMessage) -> Option<Url> {
        let base = msg
            .status_callback
            .as_ref()
            .or(self.client.inner.status_callback.as_ref())?;
        Some(callback_with_key(base, key))
    }

    /// The exact request `create` sends (form fields in a fixed order, so its
    /// fingerprint is stable).
    pub(crate) fn request(
        &self,
        key: &IdempotencyKey,
        msg: &CreateMessage,
    ) -> Result<OutboundRequest, Error> {
        msg.validate().map_err(|reason| Error::InvalidRequest {
            key: key.clone(),
            reason,
        })?;
        let mut form = vec![("To".to_owned(), msg.to.clone())];
        let mut add = |name: &str, value: String| form.push((name.to_owned(), value));
        if let Some(from) = msg.sender.number() {
            add("From", from.to_owned());
        }
        if let Some(service) = msg.sender.service() {
            add("MessagingServiceSid", service.to_owned());
        }
        if let Some(body) = &msg.body {
            add("Body", body.clone());
        }
        for media in &msg.media_urls {
            add("MediaUrl", media.to_string());
        }
        if let Some(sid) = &msg.content_sid {
            add("ContentSid", sid.clone());
        }
        if let Some(vars) = &msg.content_variables {
            add(
                "ContentVariables",
                serde_json::Value::Object(vars.clone()).to_string(),
            );
        }
        if let Some(at) = msg.send_at {
            add("SendAt", idem::time::format_rfc3339(at));
            add("ScheduleType", "fixed".to_owned());
        }
        if let Some(cb) = self.callback_url(key, msg) {
            add("StatusCallback", cb.to_string());
        }
        msg.extra
            .append_to(&mut form)
            .map_err(|reason| Error::invalid(key, reason))?;
        let req = OutboundRequest::post(self.client.messages_url()).form(form);
        Ok(self.client.authorize(req))
    }
}

/// Adds `idemkey=<key>` to a callback URL, writing the key's `_` as `%5F`.
pub(crate) fn callback_with_key(base: &Url, key: &IdempotencyKey) -> Url {
    let mut url = base.clone();
    // Key characters are ASCII letters, digits, `-` and `_`; only `_` needs
    // care (Twilio refuses underscores in callback URLs).
    let value = key.as_str().replace('_', "%5F");
    let query = match url.query() {
        Some(q) if !q.is_empty() => format!("{q}&{CALLBACK_KEY_PARAM}={value}"),
        _ => format!("{CALLBACK_KEY_PARAM}={value}"),
    };
    url.set_query(Some(&query));
    url
}

pub(crate) fn decode(key: &IdempotencyKey, body: &[u8], source: Source) -> Result<Sent, Error> {
    let message: Message = idem::adapter::decode_json(key, body)?;
    Ok(Sent {
        key: key.clone(),
        message,
        source,
    })
}

idem::adapter_basics!(
    builder: TwilioClientBuilder,
    client: TwilioClient,
    retry_doc: "Retry bounds for sends (see [`TwilioClient::default_retry`](crate::TwilioClient::default_retry)). Only failures that provably queued nothing are ever resent."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_url_carries_key_without_underscores() {
        let key: IdempotencyKey = "joes-bikes_service_ticket_messages_01HZX3_v2"
            .parse()
            .unwrap();
        let base: Url = "https://hooks.example.com/twilio/status?shop=joes"
            .parse()
            .unwrap();
        let url = callback_with_key(&base, &key);
        assert!(!url.as_str().contains('_'), "{url}");
        let found = url
            .query_pairs()
            .find(|(k, _)| k == CALLBACK_KEY_PARAM)
            .map(|(_, v)| v.into_owned());
        assert_eq!(found.as_deref(), Some(key.as_str()));
        assert!(url.query_pairs().any(|(k, v)| k == "shop" && v == "joes"));
    }

    #[test]
    fn credentials_debug_hides_secret() {
        let c = Credentials::api_key("AC123", "SK456", "s3cret-value");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret-value"));
        assert!(shown.contains("SK456"));
    }
}
