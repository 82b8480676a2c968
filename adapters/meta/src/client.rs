//! The client: Page posts, Instagram publishing, reconciliation.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use idem::executor::{Begun, Claim, RetrySettings, SafetyClass, SendOutcome, Source, Url, Verdict};
use idem::ledger::Completion;
use idem::{Delivered, ExecError, Executor, Fingerprint, IdempotencyKey, OutboundRequest};
use serde::Deserialize;

use crate::classifier::MetaClassifier;
use crate::error::{AdapterError, Error, MetaError};
use crate::model::{
    ContainerId, ContainerStatus, IgMedia, IgPublished, IgUserId, MediaId, PageId, PagePost,
    PostCreated, PostId, Publish, Reconciled, check_segment,
};
use crate::usage::Usage;
use idem::adapter::{
    AdapterCore, Provider as AdapterProvider, decode_json, lookup_answer, lookup_failed,
};

/// Meta's Graph API host.
pub const DEFAULT_BASE_URL: &str = "https://graph.facebook.com";
/// The Graph API version used unless configured: the one the official
/// Python Business SDK pins (`facebook_business/apiconfig.py`).
pub const DEFAULT_API_VERSION: &str = "v25.0";
/// The provider name stored in the ledger.
pub const PROVIDER_NAME: &str = "meta";
/// Ledger operation name of a Page post.
pub const OP_PAGE_POST: &str = "page_post.create";
/// Ledger operation name of an Instagram publish (container + publish).
pub const OP_IG_PUBLISH: &str = "instagram.publish";

const FORM: &[u8] = b"application/x-www-form-urlencoded";

/// Meta's Graph API as idem's adapter kit describes it: writes are
/// [`LocalOnly`](SafetyClass::LocalOnly) (the Graph API has no idempotency
/// key), with the default retry bounds.
#[derive(Debug, Clone, Copy)]
pub struct Meta;

impl AdapterProvider for Meta {
    const NAME: &'static str = PROVIDER_NAME;
    type WireError = MetaError;
    type Classifier = MetaClassifier;

    fn safety_class() -> SafetyClass {
        SafetyClass::LocalOnly
    }

    fn classifier() -> MetaClassifier {
        MetaClassifier
    }

    fn default_retry() -> RetrySettings {
        RetrySettings::default()
    }
}

/// Builds a [`MetaClient`].
pub struct MetaClientBuilder {
    executor: Executor,
    token: String,
    base_url: String,
    api_version: String,
    retry: RetrySettings,
    usage_threshold: f64,
    high_usage_pause: Duration,
    max_usage_wait: Duration,
    container_wait: Duration,
    container_poll: Duration,
    clock_slack: Duration,
}

impl fmt::Debug for MetaClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaClientBuilder")
            .field("base_url", &self.base_url)
            .field("api_version", &self.api_version)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl MetaClientBuilder {
    /// The Graph API version, for example `v25.0`.
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = version.into();
        self
    }

    /// Usage percentage (from `X-App-Usage` / `X-Business-Use-Case-Usage`)
    /// at which writes are held back (default 90).
    pub fn usage_threshold(mut self, percent: f64) -> Self {
        self.usage_threshold = percent;
        self
    }

    /// How long writes are held back once usage reaches the threshold and
    /// Meta gave no `estimated_time_to_regain_access` (default 60 s).
    pub fn high_usage_pause(mut self, pause: Duration) -> Self {
        self.high_usage_pause = pause;
        self
    }

    /// The longest hold a write waits out in place; a longer one fails fast
    /// with [`AdapterError::Throttled`] (default 30 s).
    pub fn max_usage_wait(mut self, wait: Duration) -> Self {
        self.max_usage_wait = wait;
        self
    }

    /// How long to wait for an Instagram container to finish processing
    /// before publishing (default 60 s), and how often to look (default 2 s).
    pub fn container_wait(mut self, wait: Duration, poll: Duration) -> Self {
        self.container_wait = wait;
        self.container_poll = poll;
        self
    }

    /// Allowance for clock differences when reconciling by time window
    /// (default 5 minutes).
    pub fn clock_slack(mut self, slack: Duration) -> Self {
        self.clock_slack = slack;
        self
    }

    /// The client.
    ///
    /// # Errors
    ///
    /// [`AdapterError::Config`] for an unparsable base URL, a version not of the
    /// form `v<major>.<minor>`, or an empty token.
    pub fn build(self) -> Result<MetaClient, Error> {
        if self.base_url.contains('?') {
            return Err(AdapterError::Config(
                "base URL must be http(s) with no query string".to_owned(),
            )
            .into());
        }
        let v = &self.api_version;
        let ok = v
            .strip_prefix('v')
            .and_then(|r| r.split_once('.'))
            .is_some_and(|(a, b)| {
                !a.is_empty()
                    && !b.is_empty()
                    && a.bytes().all(|c| c.is_ascii_digit())
                    && b.bytes().all(|c| c.is_ascii_digit())
            });
        if !ok {
            return Err(AdapterError::Config(format!(
                "API version {v:?} is not of the form v<major>.<minor>"
            ))
            .into());
        }
        if self.token.trim().is_empty() {
            return Err(AdapterError::Config("the access token is empty".to_owned()).into());
        }
        let core =
            AdapterCore::new::<Meta>(self.executor, &self.base_url, self.retry).map_err(|e| {
                AdapterError::Config(format!(
                    "base URL must be http(s) with no query string: {e}"
                ))
            })?;
        Ok(MetaClient {
            inner: Arc::new(Inner {
                core,
                token: self.token,
                version: self.api_version,
                usage_threshold: self.usage_threshold,
                high_usage_pause: self.high_usage_pause,
                max_usage_wait: self.max_usage_wait,
                container_wait: self.container_wait,
                container_poll: self.container_poll,
                clock_slack: self.clock_slack,
                guard: Mutex::new(Guard::default()),
            }),
        })
    }
}

#[derive(Debug, Default)]
struct Guard {
    last: Option<Usage>,
    hold_until: Option<tokio::time::Instant>,
    percent: u32,
}

struct Inner {
    core: AdapterCore,
    token: String,
    version: String,
    usage_threshold: f64,
    high_usage_pause: Duration,
    max_usage_wait: Duration,
    container_wait: Duration,
    container_poll: Duration,
    clock_slack: Duration,
    guard: Mutex<Guard>,
}

/// Typed, retry-safe Meta Graph writes. Cheap to clone.
///
/// Meta offers no idempotency key, so the safety class is
/// [`SafetyClass::LocalOnly`]: the ledger row is the only guard. A write
/// is resent automatically only when Meta provably did not process it
/// (throttled, never reached); a timeout after sending ends `unknown`, and
/// [`reconcile_page_post`](Self::reconcile_page_post) or, for Instagram, the
/// recorded container settles it.
#[derive(Clone)]
pub struct MetaClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for MetaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetaClient")
            .field("base", &self.inner.core.base().as_str())
            .field("version", &self.inner.version)
            .field("token", &"<redacted>")
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct IdBody {
    id: String,
}

#[derive(Deserialize)]
struct FailedContainer {
    container_id: ContainerId,
    status_code: String,
}

#[derive(Deserialize)]
struct StatusBody {
    status_code: Option<String>,
}

impl MetaClient {
    /// Starts building a client over `executor` with a Page (or User)
    /// access token. The token is sent as `Authorization: Bearer`, never in
    /// the query string.
    pub fn builder(executor: Executor, access_token: impl Into<String>) -> MetaClientBuilder {
        MetaClientBuilder {
            executor,
            token: access_token.into(),
            base_url: DEFAULT_BASE_URL.to_owned(),
            api_version: DEFAULT_API_VERSION.to_owned(),
            retry: Meta::default_retry(),
            usage_threshold: 90.0,
            high_usage_pause: Duration::from_secs(60),
            max_usage_wait: Duration::from_secs(30),
            container_wait: Duration::from_secs(60),
            container_poll: Duration::from_secs(2),
            clock_slack: Duration::from_secs(300),
        }
    }

    /// The usage Meta reported on the last response that carried usage
    /// headers.
    pub fn last_usage(&self) -> Option<Usage> {
        self.guard().last.clone()
    }

    /// Operator retry: supersedes `key` and returns the next attempt's key
    /// (`…_v2`). The next publish with that key is a new post.
    ///
    /// # Errors
    ///
    /// [`Error::Store`] with the store's refusal (live lease, already
    /// superseded, succeeded without `force`).
    pub async fn bump(&self, key: &IdempotencyKey, force: bool) -> Result<IdempotencyKey, Error> {
        let now = self.inner.core.executor().now();
        Ok(self
            .inner
            .core
            .executor()
            .store()
            .bump(key, force, now)
            .await?)
    }

    // ----- Page posts -------------------------------------------------

    /// Publishes a Page post under `key`: `POST /{version}/{page-id}/feed`.
    ///
    /// A key that already succeeded answers from the ledger with no
    /// request. Throttling is retried within the provider's retry bounds; a
    /// timeout, reset or 5xx after sending ends `unknown` and is never
    /// resent.
    ///
    /// # Errors
    ///
    /// [`Error::Rejected`] (rejected, recorded `failed`), [`Error::OutcomeUnknown`],
    /// [`Error::NotSent`] (throttled; retry later), [`AdapterError::Throttled`],
    /// [`AdapterError::InvalidInput`], or [`Error::Store`].
    pub async fn publish_page_post(
        &self,
        key: &IdempotencyKey,
        page: &PageId,
        post: &PagePost,
    ) -> Result<PostCreated, Error> {
        post.validate()?;
        check_segment("page id", page.as_str())?;
        let path = format!("{page}/feed");
        let delivered = self
            .write_form(key, OP_PAGE_POST, &path, &post.full_form()?)
            .await?;
        Ok(PostCreated {
            id: PostId::new(parse_id(key, &delivered.body)?),
            source: delivered.source,
        })
    }

    /// A keyed raw write for what the typed API lacks: a form `POST` to
    /// `path` below the API version (for example `"{page-id}/photos"`),
    /// with the access token, through the same path as
    /// [`publish_page_post`](Self::publish_page_post): recorded first,
    /// fingerprinted, held back at high usage, never resent once it may have
    /// reached Meta, answered from the ledger on a rerun.
    ///
    /// # Errors
    ///
    /// As [`publish_page_post`](Self::publish_page_post);
    /// [`Error::InvalidRequest`] for a path that would leave the API.
    pub async fn post<T: serde::de::DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        path: &str,
        params: &[(&str, &str)],
    ) -> Result<idem::adapter::Answer<T>, Error> {
        let url = self
            .inner
            .core
            .raw_url(&format!("{}/{path}", self.inner.version))
            .map_err(|reason| Error::invalid(key, reason))?;
        let route = url
            .path()
            .trim_start_matches(&format!("/{}/", self.inner.version))
            .to_owned();
        let operation = AdapterCore::raw_operation(&http::Method::POST, &route);
        let form: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let done = self.write_form(key, &operation, &route, &form).await?;
        let value = idem::adapter::decode_json(key, &done.body)?;
        Ok(idem::adapter::Answer::new(
            value,
            key.clone(),
            done.status,
            done.source,
        ))
    }

    /// One form write under `key`: record, hold back at high usage, send,
    /// record the outcome.
    async fn write_form(
        &self,
        key: &IdempotencyKey,
        operation: &str,
        path: &str,
        form: &[(String, String)],
    ) -> Result<Delivered, Error> {
        let request = self.post_form(path, form)?;
        let fingerprint = fingerprint(path, &request, operation);
        let begun = self
            .inner
            .core
            .executor()
            .begin(self.inner.core.provider(), key, operation, fingerprint)
            .await
            .map_err(Error::from)?;
        match begun {
            Begun::Done(delivered) => Ok(delivered),
            Begun::Claimed(claim) => {
                let mut claim = self.headroom_or_release(claim).await?;
                let outcome = claim.send(request).await;
                self.observe_outcome(&outcome);
                idem::adapter::finish(claim, outcome).await
            }
            other => Err(unexpected_begin(key, &other)),
        }
    }

    // ----- Instagram ---------------------------------------------------

    /// Publishes an Instagram post under `key`, in two steps recorded in one
    /// ledger row: create a container (`POST /{ig-user-id}/media`), record
    /// its id as the row's checkpoint, wait for it to be `FINISHED`, then
    /// publish it (`POST /{ig-user-id}/media_publish` with `creation_id`).
    ///
    /// A retry after a failed or timed-out publish reuses the recorded
    /// container: its `status_code` is read first (`FINISHED` → publish the
    /// same container; `PUBLISHED` → record success, no second publish;
    /// `IN_PROGRESS` → try later; `ERROR`/`EXPIRED` → bump). A container
    /// can be published once, so reusing it can never publish twice.
    ///
    /// When step one itself timed out, no container id was recorded: the
    /// outcome is genuinely unknown. A container may exist at Meta; it is
    /// never shown to anyone unless published, and expires after 24 h. An
    /// operator bump creates a new one.
    ///
    /// # Errors
    ///
    /// As [`publish_page_post`](Self::publish_page_post), plus
    /// [`AdapterError::ContainerNotReady`], [`AdapterError::ContainerFailed`] and
    /// [`Error::LookupFailed`].
    pub async fn publish_instagram(
        &self,
        key: &IdempotencyKey,
        ig_user: &IgUserId,
        media: &IgMedia,
    ) -> Result<IgPublished, Error> {
        media.validate()?;
        check_segment("Instagram user id", ig_user.as_str())?;
        let path = format!("{ig_user}/media");
        let create = self.post_form(&path, &media.form())?;
        let fingerprint = fingerprint(&path, &create, OP_IG_PUBLISH);
        let exec = &self.inner.core.executor();
        match exec
            .begin(
                self.inner.core.provider(),
                key,
                OP_IG_PUBLISH,
                fingerprint.clone(),
            )
            .await
        {
            Ok(Begun::Done(delivered)) => parse_published(key, &delivered.body, delivered.source),
            Ok(Begun::Claimed(claim)) => {
                let claim = self.headroom_or_release(claim).await?;
                let (claim, container) = match claim.operation().checkpoint.clone() {
                    Some(c) => (claim, ContainerId::new(c)),
                    None => self.create_container(claim, key, create).await?,
                };
                self.publish_container(claim, key, ig_user, media, container)
                    .await
            }
            Ok(other) => Err(unexpected_begin(key, &other)),
            Err(ExecError::OutcomeUnknown { key, reason }) => {
                self.resume_instagram(&key, ig_user, media, fingerprint, reason)
                    .await
            }
            Err(ExecError::Rejected {
                key,
                body,
                from_ledger: true,
                ..
            }) if serde_json::from_slice::<FailedContainer>(&body).is_ok() => {
                // A container recorded as failed by an earlier run.
                let failed: FailedContainer = decode_json(&key, &body)?;
                Err(AdapterError::ContainerFailed {
                    key,
                    container: failed.container_id,
                    status: ContainerStatus::parse(&failed.status_code),
                }
                .into())
            }
            Err(e) => Err(Error::from(e)),
        }
    }

    async fn create_container(
        &self,
        mut claim: Claim,
        key: &IdempotencyKey,
        create: OutboundRequest,
    ) -> Result<(Claim, ContainerId), Error> {
        let outcome = claim.send(create).await;
        self.observe_outcome(&outcome);
        let id = match (&outcome.verdict, &outcome.response) {
            (Verdict::Success, Some((_, _, body))) => serde_json::from_slice::<IdBody>(body).ok(),
            _ => None,
        };
        match (outcome.verdict, id) {
            (Verdict::Success, Some(id)) => {
                claim.checkpoint(&id.id).await?;
                Ok((claim, ContainerId::new(id.id)))
            }
            (Verdict::Success, None) => {
                // Something was created, but without its id it cannot be
                // reused: the outcome is unknown.
                claim
                    .complete(Completion::Unknown {
                        note: "container created but its id is unreadable".to_owned(),
                        status: outcome.response.as_ref().map(|(s, _, _)| s.as_u16()),
                    })
                    .await?;
                Err(Error::Undecodable {
                    key: key.clone(),
                    reason: "container created but its id is unreadable".to_owned(),
                })
            }
            _ => Err(self.finish_err(claim, outcome, key).await),
        }
    }

    async fn publish_container(
        &self,
        mut claim: Claim,
        key: &IdempotencyKey,
        ig_user: &IgUserId,
        media: &IgMedia,
        container: ContainerId,
    ) -> Result<IgPublished, Error> {
        // Wait (bounded) until the container is ready.
        let deadline = tokio::time::Instant::now() + self.inner.container_wait;
        loop {
            let status = match self.container_status(key, &container).await {
                Ok(s) => s,
                Err(e) => {
                    claim
                        .complete(Completion::NotSent {
                            note: format!("container {container} recorded; its status could not be read, nothing published"),
                        })
                        .await?;
                    return Err(e);
                }
            };
            match status {
                ContainerStatus::Finished => break,
                ContainerStatus::Published => {
                    return self
                        .record_published(claim, key, ig_user, media, container)
                        .await;
                }
                ContainerStatus::Error | ContainerStatus::Expired => {
                    let body = serde_json::json!({ "container_id": container, "status_code": status.as_str() });
                    claim
                        .complete(Completion::Failed {
                            status: 200,
                            body: Bytes::from(body.to_string()),
                            note: format!(
                                "container {container} is {status}; bump to create a new one"
                            ),
                        })
                        .await?;
                    return Err(AdapterError::ContainerFailed {
                        key: key.clone(),
                        container,
                        status,
                    }
                    .into());
                }
                _ => {
                    if tokio::time::Instant::now() + self.inner.container_poll > deadline {
                        claim
                            .complete(Completion::NotSent {
                                note: format!(
                                    "container {container} still {status}; nothing published"
                                ),
                            })
                            .await?;
                        return Err(AdapterError::ContainerNotReady {
                            key: key.clone(),
                            container,
                        }
                        .into());
                    }
                    tokio::time::sleep(self.inner.container_poll).await;
                    // Polls can outlast the lease: keep it, or stop here
                    // (another worker has taken the operation over).
                    claim.renew().await.map_err(Error::from)?;
                }
            }
        }
        let path = format!("{ig_user}/media_publish");
        let request = self.post_form(&path, &[("creation_id", container.to_string())])?;
        let outcome = claim.send(request).await;
        self.observe_outcome(&outcome);
        match (&outcome.verdict, &outcome.response) {
            (Verdict::Success, Some((status, _, body))) => {
                let media_id = serde_json::from_slice::<IdBody>(body)
                    .ok()
                    .map(|b| MediaId::new(b.id));
                let published = IgPublished {
                    media_id,
                    container_id: container,
                    source: Source::Wire {
                        attempts: u32::try_from(outcome.attempts.len()).unwrap_or(u32::MAX),
                    },
                };
                claim
                    .complete(Completion::Succeeded {
                        status: status.as_u16(),
                        body: published_body(&published),
                    })
                    .await?;
                Ok(published)
            }
            (Verdict::Rejected, Some(_)) if claim.is_resend() => {
                // A resend of a container Meta may have published meanwhile:
                // a container publishes once, so look before recording failure.
                if let Ok(ContainerStatus::Published) = self.container_status(key, &container).await
                {
                    return self
                        .record_published(claim, key, ig_user, media, container)
                        .await;
                }
                Err(self.finish_err(claim, outcome, key).await)
            }
            _ => Err(self.finish_err(claim, outcome, key).await),
        }
    }

    async fn record_published(
        &self,
        claim: Claim,
        key: &IdempotencyKey,
        ig_user: &IgUserId,
        media: &IgMedia,
        container: ContainerId,
    ) -> Result<IgPublished, Error> {
        let first = claim
            .operation()
            .first_sent_at
            .unwrap_or(claim.operation().created_at);
        let media_id = self.find_media(key, ig_user, media, first).await;
        let published = IgPublished {
            media_id,
            container_id: container,
            source: Source::Reconciled,
        };
        claim
            .complete(Completion::Succeeded {
                status: 200,
                body: published_body(&published),
            })
            .await?;
        Ok(published)
    }

    pub(crate) async fn container_status(
        &self,
        key: &IdempotencyKey,
        container: &ContainerId,
    ) -> Result<ContainerStatus, Error> {
        check_segment("container id", container.as_str())?;
        let url = self.url(
            container.as_str(),
            &[("fields", "id,status_code,status".to_owned())],
        )?;
        let body: StatusBody = self
            .read_json(key, "the Instagram container's status", url)
            .await?;
        Ok(body
            .status_code
            .map_or(ContainerStatus::Other("missing".to_owned()), |s| {
                ContainerStatus::parse(&s)
            }))
    }

    // ----- plumbing ------------------------------------------------------

    fn guard(&self) -> std::sync::MutexGuard<'_, Guard> {
        self.inner
            .guard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn observe(&self, headers: &HeaderMap) {
        let Some(usage) = Usage::from_headers(headers) else {
            return;
        };
        let percent = usage.max_percent();
        let regain = usage.regain_access_after();
        let mut guard = self.guard();
        let hold = if percent >= self.inner.usage_threshold {
            Some(
                regain
                    .unwrap_or(self.inner.high_usage_pause)
                    .max(self.inner.high_usage_pause),
            )
        } else {
            regain
        };
        guard.hold_until = hold.map(|d| tokio::time::Instant::now() + d);
        guard.percent = if percent.is_finite() {
            percent.clamp(0.0, 10_000.0) as u32
        } else {
            0
        };
        if hold.is_some() {
            tracing::info!(
                percent = guard.percent,
                hold_ms = hold.map_or(0, |d| d.as_millis() as u64),
                "Meta usage high; holding writes back"
            );
        }
        guard.last = Some(usage);
    }

    fn observe_outcome(&self, outcome: &SendOutcome) {
        if let Some((_, headers, _)) = &outcome.response {
            self.observe(headers);
        }
    }

    /// Waits out a short usage hold, or releases the claim untouched
    /// (`pending`) and fails fast on a long one.
    async fn headroom_or_release(&self, claim: Claim) -> Result<Claim, Error> {
        let (until, percent) = {
            let g = self.guard();
            (g.hold_until, g.percent)
        };
        let Some(until) = until else { return Ok(claim) };
        let wait = until.saturating_duration_since(tokio::time::Instant::now());
        if wait.is_zero() {
            return Ok(claim);
        }
        if wait <= self.inner.max_usage_wait {
            tokio::time::sleep(wait).await;
            return Ok(claim);
        }
        claim
            .complete(Completion::NotSent {
                note: format!("held back before sending: Meta usage at {percent}%"),
            })
            .await?;
        Err(AdapterError::Throttled {
            percent,
            retry_after: wait,
        }
        .into())
    }

    async fn finish_err(&self, claim: Claim, outcome: SendOutcome, key: &IdempotencyKey) -> Error {
        match claim.finish(outcome).await {
            Ok(_) => AdapterError::UnexpectedResponse {
                key: key.clone(),
                reason: "a failed step was recorded as a success".to_owned(),
            }
            .into(),
            Err(e) => Error::from(e),
        }
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        what: &'static str,
        url: Url,
    ) -> Result<T, Error> {
        let request = OutboundRequest::get(url).bearer_auth(&self.inner.token);
        // A plain read (no ledger row, no lease): retried on any transient
        // failure Meta's classifier reports, within the provider's bounds.
        let core = &self.inner.core;
        let answer = core
            .executor()
            .read(core.provider(), request)
            .await
            .map_err(|e| lookup_failed(key, format!("reading {what} failed: {e}"), None))?;
        self.observe(&answer.headers);
        lookup_answer(key, &answer, what)
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url, Error> {
        let mut url = self
            .inner
            .core
            .raw_url(&format!("{}/{path}", self.inner.version))
            .map_err(AdapterError::InvalidInput)?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    fn post_form<K: AsRef<str>>(
        &self,
        path: &str,
        form: &[(K, String)],
    ) -> Result<OutboundRequest, Error> {
        Ok(OutboundRequest::post(self.url(path, &[])?)
            .bearer_auth(&self.inner.token)
            .form(form.iter().map(|(k, v)| (k.as_ref(), v.as_str()))))
    }
}

/// The row's fingerprint: method, path without the API version (so a
/// version upgrade does not turn an honest retry into a key-reuse error),
/// content type, body and operation.
fn fingerprint(path: &str, request: &OutboundRequest, operation: &str) -> Fingerprint {
    Fingerprint::builder()
        .method("POST")
        .target(&format!("/{path}"))
        .header("content-type", FORM)
        .body(request.body())
        .extra("operation", operation.as_bytes())
        .finish()
}

fn parse_id(key: &IdempotencyKey, body: &[u8]) -> Result<String, Error> {
    decode_json::<IdBody, _, _>(key, body).map(|b| b.id)
}

fn parse_published(
    key: &IdempotencyKey,
    body: &[u8],
    source: Source,
) -> Result<IgPublished, Error> {
    let mut p: IgPublished = decode_json(key, body)?;
    p.source = source;
    Ok(p)
}

pub(crate) fn published_body(p: &IgPublished) -> Bytes {
    Bytes::from(serde_json::to_vec(p).unwrap_or_default())
}

fn unexpected_begin(key: &IdempotencyKey, begun: &Begun) -> Error {
    AdapterError::UnexpectedResponse {
        key: key.clone(),
        reason: format!("unsupported executor answer {begun:?}"),
    }
    .into()
}

fn humanize(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

// Reconciliation lives in its own file, as a child module so it reaches the
// client's internals.
#[path = "reconcile.rs"]
mod reconcile;
pub use reconcile::{RECONCILE_MAX_PAGES, ReconcileOptions};

idem::adapter_basics!(
    builder: MetaClientBuilder,
    client: MetaClient,
    retry_doc: "Retry bounds of one claim (attempts, backoff, timeouts). Only failures that provably published nothing are ever resent."
);
