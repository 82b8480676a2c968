//! The client: Page posts, Instagram publishing, reconciliation.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use idem::executor::{
    Begun, Claim, Provider, RetrySettings, SafetyClass, SendOutcome, Source, Url, Verdict,
};
use idem::ledger::{Completion, Operation, OperationState, Resolution};
use idem::{ExecError, Executor, Fingerprint, IdempotencyKey, OutboundRequest};
use serde::Deserialize;

use crate::classifier::MetaClassifier;
use crate::error::{AdapterError, Error, MetaError};
use crate::model::{
    ContainerId, ContainerStatus, IgMedia, IgPublished, IgUserId, MediaId, PageId, PagePost,
    PostCreated, PostId, Publish, Reconciled, check_segment,
};
use crate::usage::Usage;
use idem::adapter::Provider as AdapterProvider;

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

/// Pages of 100 posts read per listing edge by
/// [`MetaClient::reconcile_page_post`]. When the window holds more, "not
/// found" is not proof and the record stays `unknown` whatever the
/// [`ReconcileOptions`].
pub const RECONCILE_MAX_PAGES: usize = 10;

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
    /// Sends to another base URL (a test server, the fake).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = url.into();
        self
    }

    /// The Graph API version, for example `v25.0`.
    pub fn api_version(mut self, version: impl Into<String>) -> Self {
        self.api_version = version.into();
        self
    }

    /// Retry bounds of one claim (attempts, backoff, timeouts).
    pub fn retry(mut self, retry: RetrySettings) -> Self {
        self.retry = retry;
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
        let base: Url = self
            .base_url
            .parse()
            .map_err(|e| AdapterError::Config(format!("base URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() {
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
        let provider = Meta::executor_provider(self.retry);
        Ok(MetaClient {
            inner: Arc::new(Inner {
                executor: self.executor,
                provider,
                token: self.token,
                base: self.base_url.trim_end_matches('/').to_owned(),
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
    executor: Executor,
    provider: Provider,
    token: String,
    base: String,
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
            .field("base", &self.inner.base)
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

#[derive(Deserialize)]
struct ListBody<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    #[serde(default)]
    paging: Option<Paging>,
}

/// Graph API cursor paging: `next` is present while more items remain.
#[derive(Deserialize, Default)]
struct Paging {
    #[serde(default)]
    cursors: Option<Cursors>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize, Default)]
struct Cursors {
    #[serde(default)]
    after: Option<String>,
}

impl<T> ListBody<T> {
    /// The cursor of the next page, `Ok(None)` on the last page, `Err(())`
    /// when Meta says more remain but gives no cursor to follow.
    fn next_cursor(&self) -> Result<Option<String>, ()> {
        let Some(paging) = &self.paging else {
            return Ok(None);
        };
        if paging.next.is_none() {
            return Ok(None);
        }
        paging
            .cursors
            .as_ref()
            .and_then(|c| c.after.clone())
            .filter(|a| !a.is_empty())
            .map(Some)
            .ok_or(())
    }
}

#[derive(Deserialize)]
struct FeedItem {
    id: String,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    created_time: Option<String>,
}

#[derive(Deserialize)]
struct MediaItem {
    id: String,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

/// Options of [`MetaClient::reconcile_page_post`].
#[derive(Debug, Clone, Copy, Default)]
#[non_exhaustive]
pub struct ReconcileOptions {
    /// When no matching post is found and at least this long has passed
    /// since the first send, record the operation as not applied (back to
    /// `pending`, so the next run posts with the same key). `None` (the
    /// default) leaves it `unknown` for an operator.
    pub not_applied_after: Option<Duration>,
}

impl ReconcileOptions {
    /// Sets [`not_applied_after`](Self::not_applied_after).
    pub fn not_applied_after(mut self, grace: Duration) -> Self {
        self.not_applied_after = Some(grace);
        self
    }
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

    /// The executor.
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// The provider (name `meta`, local only, [`MetaClassifier`]).
    pub fn provider(&self) -> &Provider {
        &self.inner.provider
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
        let now = self.inner.executor.now();
        Ok(self.inner.executor.store().bump(key, force, now).await?)
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
        let request = self.post_form(&path, &post.form())?;
        let fingerprint = fingerprint(&path, &request, OP_PAGE_POST);
        let begun = self
            .inner
            .executor
            .begin(&self.inner.provider, key, OP_PAGE_POST, fingerprint)
            .await
            .map_err(Error::from)?;
        match begun {
            Begun::Done(delivered) => Ok(PostCreated {
                id: PostId::new(parse_id(key, &delivered.body)?),
                source: delivered.source,
            }),
            Begun::Claimed(claim) => {
                let mut claim = self.headroom_or_release(claim).await?;
                let outcome = claim.send(request).await;
                self.observe_outcome(&outcome);
                let delivered = claim.finish(outcome).await.map_err(Error::from)?;
                Ok(PostCreated {
                    id: PostId::new(parse_id(key, &delivered.body)?),
                    source: delivered.source,
                })
            }
            other => Err(unexpected_begin(key, &other)),
        }
    }

    /// Settles an `unknown` Page post by reading the Page's recent posts
    /// (`published_posts`; for a scheduled post also `scheduled_posts`) and
    /// matching the message, created no earlier than the first send (minus
    /// the clock slack).
    ///
    /// Found → the record becomes `succeeded` with the post id, and the next
    /// publish with the key answers from the ledger. Not found → it stays
    /// `unknown`, unless `options` allow marking it not applied.
    ///
    /// Every page of the window is read (cursor paging, up to
    /// [`RECONCILE_MAX_PAGES`] pages of 100 per edge). "Not applied" needs
    /// the whole window read: if Meta lists more, the answer is
    /// [`Reconciled::NotFound`] and the record stays `unknown`, whatever the
    /// options.
    ///
    /// Limits: a post with no message (link only) or created unpublished
    /// with no schedule cannot be matched; the same text posted by someone
    /// else in the window would match (the earliest match is taken); a post
    /// Meta has not listed yet reads as not found (hence the grace period).
    ///
    /// # Errors
    ///
    /// [`AdapterError::NotReconcilable`] (no record, another request's record, a
    /// state other than `unknown`/`succeeded`, or a post that cannot be
    /// matched), [`AdapterError::ReadFailed`], or [`Error::Store`] from the store.
    pub async fn reconcile_page_post(
        &self,
        key: &IdempotencyKey,
        page: &PageId,
        post: &PagePost,
        options: ReconcileOptions,
    ) -> Result<Reconciled, Error> {
        post.validate()?;
        check_segment("page id", page.as_str())?;
        let path = format!("{page}/feed");
        let request = self.post_form(&path, &post.form())?;
        let op = self
            .reconcilable(key, &fingerprint(&path, &request, OP_PAGE_POST))
            .await?;
        if op.state == OperationState::Succeeded {
            let body = op.response_body.clone().unwrap_or_default();
            return Ok(Reconciled::AlreadySucceeded(PostId::new(parse_id(
                key, &body,
            )?)));
        }
        let Some(text) = post.text().map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(AdapterError::NotReconcilable {
                key: key.clone(),
                reason: "a post with no message cannot be matched by content".to_owned(),
            }
            .into());
        };
        let edges: &[&str] = match post.publish() {
            Publish::Now => &["published_posts"],
            Publish::At(_) => &["scheduled_posts", "published_posts"],
            _ => {
                return Err(AdapterError::NotReconcilable {
                    key: key.clone(),
                    reason: "unpublished, unscheduled posts are not listed by Meta".to_owned(),
                }
                .into());
            }
        };
        let first = op.first_sent_at.unwrap_or(op.created_at);
        let since = first.checked_sub(self.inner.clock_slack).unwrap_or(first);
        let mut found: Vec<(Option<SystemTime>, String)> = Vec::new();
        // Whether every post of the window was read: only then can "no
        // match" count as proof that the post was not created.
        let mut complete = true;
        for edge in edges {
            let mut after: Option<String> = None;
            let mut pages = 0;
            loop {
                let mut query = vec![
                    ("fields", "id,message,created_time".to_owned()),
                    ("since", idem::time::unix_seconds(since).to_string()),
                    ("limit", "100".to_owned()),
                ];
                if let Some(a) = &after {
                    query.push(("after", a.clone()));
                }
                let url = self.url(&format!("{page}/{edge}"), &query)?;
                let list: ListBody<FeedItem> = self.read_json(key, "the Page's posts", url).await?;
                pages += 1;
                let next = list.next_cursor();
                for item in list.data {
                    let created = item.created_time.as_deref().and_then(crate::time::parse);
                    let in_window = created.is_none_or(|c| c >= since);
                    if in_window && item.message.as_deref().map(str::trim) == Some(text) {
                        found.push((created, item.id));
                    }
                }
                match next {
                    Ok(None) => break,
                    Ok(Some(cursor)) if pages < RECONCILE_MAX_PAGES => after = Some(cursor),
                    _ => {
                        complete = false;
                        break;
                    }
                }
            }
        }
        found.sort();
        let now = self.inner.executor.now();
        if let Some((_, id)) = found.first() {
            let body = serde_json::json!({ "id": id }).to_string();
            let note = format!(
                "reconciled: found post {id} by message match among the Page's recent posts \
                 ({} match(es))",
                found.len()
            );
            self.resolve(
                key,
                Resolution::Succeeded {
                    status: 200,
                    body: Bytes::from(body),
                    note,
                },
                now,
            )
            .await?;
            return Ok(Reconciled::Found {
                id: PostId::new(id.clone()),
                matches: found.len(),
            });
        }
        if !complete {
            tracing::warn!(key = %key, pages = RECONCILE_MAX_PAGES,
                "Meta lookup: more posts in the window than read; not found is not proof");
            return Ok(Reconciled::NotFound);
        }
        if let Some(grace) = options.not_applied_after {
            if now.duration_since(first).unwrap_or_default() >= grace {
                let note = format!(
                    "reconciled: no matching post among the Page's posts {} or more after the first send",
                    humanize(grace)
                );
                self.resolve(key, Resolution::NotApplied { note }, now)
                    .await?;
                return Ok(Reconciled::MarkedNotApplied);
            }
        }
        Ok(Reconciled::NotFound)
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
    /// [`AdapterError::ReadFailed`].
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
        let exec = &self.inner.executor;
        match exec
            .begin(
                &self.inner.provider,
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
                let failed: FailedContainer = serde_json::from_slice(&body).map_err(|e| {
                    AdapterError::UnexpectedResponse {
                        key: key.clone(),
                        reason: e.to_string(),
                    }
                })?;
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
                Err(AdapterError::UnexpectedResponse {
                    key: key.clone(),
                    reason: "container created but its id is unreadable".to_owned(),
                }
                .into())
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

    async fn resume_instagram(
        &self,
        key: &IdempotencyKey,
        ig_user: &IgUserId,
        media: &IgMedia,
        fingerprint: Fingerprint,
        reason: String,
    ) -> Result<IgPublished, Error> {
        let op = self.reconcilable(key, &fingerprint).await?;
        let Some(container) = op.checkpoint.clone().map(ContainerId::new) else {
            return Err(Error::OutcomeUnknown {
                key: key.clone(),
                reason: format!(
                    "{reason}; the container creation itself has no recorded outcome: a container \
                     may exist at Meta (never shown unless published, expires after 24 h). Bump to \
                     create a new one"
                ),
                resend_safe_until: None,
            });
        };
        match self.container_status(key, &container).await? {
            ContainerStatus::Finished => {
                // Provably not published: claim the row again and publish the
                // same container.
                match self
                    .inner
                    .executor
                    .begin_after_reconcile(&self.inner.provider, key, OP_IG_PUBLISH, fingerprint)
                    .await
                    .map_err(Error::from)?
                {
                    Begun::Claimed(claim) => {
                        let claim = self.headroom_or_release(claim).await?;
                        self.publish_container(claim, key, ig_user, media, container)
                            .await
                    }
                    Begun::Done(d) => parse_published(key, &d.body, d.source),
                    other => Err(unexpected_begin(key, &other)),
                }
            }
            ContainerStatus::Published => {
                let first = op.first_sent_at.unwrap_or(op.created_at);
                let media_id = self.find_media(key, ig_user, media, first).await;
                let published = IgPublished {
                    media_id,
                    container_id: container.clone(),
                    source: Source::Reconciled,
                };
                let note = format!(
                    "reconciled: container {container} is PUBLISHED{}",
                    published
                        .media_id
                        .as_ref()
                        .map(|m| format!(" as media {m}"))
                        .unwrap_or_default()
                );
                let now = self.inner.executor.now();
                self.resolve(
                    key,
                    Resolution::Succeeded {
                        status: 200,
                        body: published_body(&published),
                        note,
                    },
                    now,
                )
                .await?;
                Ok(published)
            }
            status @ (ContainerStatus::Error | ContainerStatus::Expired) => {
                Err(AdapterError::ContainerFailed {
                    key: key.clone(),
                    container,
                    status,
                }
                .into())
            }
            _ => Err(AdapterError::ContainerNotReady {
                key: key.clone(),
                container,
            }
            .into()),
        }
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

    /// The media created from a published container, matched by caption in
    /// the account's recent media. `None` when it cannot be told apart.
    async fn find_media(
        &self,
        key: &IdempotencyKey,
        ig_user: &IgUserId,
        media: &IgMedia,
        first_sent: SystemTime,
    ) -> Option<MediaId> {
        let caption = media.caption_text()?.trim().to_owned();
        let since = first_sent
            .checked_sub(self.inner.clock_slack)
            .unwrap_or(first_sent);
        let url = self
            .url(
                &format!("{ig_user}/media"),
                &[
                    ("fields", "id,caption,timestamp".to_owned()),
                    ("limit", "25".to_owned()),
                ],
            )
            .ok()?;
        let list: ListBody<MediaItem> = match self
            .read_json(key, "the Instagram account's media", url)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(key = %key, error = %e, "published container: media id lookup failed");
                return None;
            }
        };
        let mut hits: Vec<(Option<SystemTime>, String)> = list
            .data
            .into_iter()
            .filter(|m| m.caption.as_deref().map(str::trim) == Some(caption.as_str()))
            .map(|m| (m.timestamp.as_deref().and_then(crate::time::parse), m.id))
            .filter(|(t, _)| t.is_none_or(|t| t >= since))
            .collect();
        hits.sort();
        hits.into_iter().next().map(|(_, id)| MediaId::new(id))
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

    async fn reconcilable(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<Operation, Error> {
        let op = self.inner.executor.store().get(key).await?.ok_or_else(|| {
            AdapterError::NotReconcilable {
                key: key.clone(),
                reason: "no ledger record".to_owned(),
            }
        })?;
        if &op.fingerprint != fingerprint {
            return Err(AdapterError::NotReconcilable {
                key: key.clone(),
                reason: "the record was made for a different request".to_owned(),
            }
            .into());
        }
        let now = self.inner.executor.now();
        match op.state {
            OperationState::Unknown | OperationState::Succeeded => Ok(op),
            OperationState::Sending if op.lease_expired(now) => Ok(op),
            state => Err(AdapterError::NotReconcilable {
                key: key.clone(),
                reason: format!("the record is {state}, not unknown"),
            }
            .into()),
        }
    }

    pub(crate) async fn resolve(
        &self,
        key: &IdempotencyKey,
        resolution: Resolution,
        now: SystemTime,
    ) -> Result<(), Error> {
        self.inner
            .executor
            .store()
            .resolve(key, &resolution, now)
            .await?;
        Ok(())
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
        let answer = self
            .inner
            .executor
            .read(&self.inner.provider, request)
            .await
            .map_err(|e| AdapterError::ReadFailed {
                key: key.clone(),
                what,
                reason: e.to_string(),
            })?;
        self.observe(&answer.headers);
        if !answer.is_success() {
            let reason = match crate::error::MetaError::from_body(&answer.body) {
                Some(e) => format!("HTTP {}: {e}", answer.status),
                None => format!("HTTP {}", answer.status),
            };
            return Err(AdapterError::ReadFailed {
                key: key.clone(),
                what,
                reason,
            }
            .into());
        }
        answer.json().map_err(|e| {
            Error::Adapter(AdapterError::ReadFailed {
                key: key.clone(),
                what,
                reason: format!("unreadable answer: {e}"),
            })
        })
    }

    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url, Error> {
        let mut url: Url = format!("{}/{}/{path}", self.inner.base, self.inner.version)
            .parse()
            .map_err(|e| AdapterError::Config(format!("URL: {e}")))?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        Ok(url)
    }

    fn post_form(&self, path: &str, form: &[(&str, String)]) -> Result<OutboundRequest, Error> {
        Ok(OutboundRequest::post(self.url(path, &[])?)
            .bearer_auth(&self.inner.token)
            .form(form.iter().map(|(k, v)| (*k, v.as_str()))))
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
    serde_json::from_slice::<IdBody>(body)
        .map(|b| b.id)
        .map_err(|e| {
            Error::Adapter(AdapterError::UnexpectedResponse {
                key: key.clone(),
                reason: format!("no id in the answer: {e}"),
            })
        })
}

fn parse_published(
    key: &IdempotencyKey,
    body: &[u8],
    source: Source,
) -> Result<IgPublished, Error> {
    let mut p: IgPublished =
        serde_json::from_slice(body).map_err(|e| AdapterError::UnexpectedResponse {
            key: key.clone(),
            reason: format!("stored Instagram result unreadable: {e}"),
        })?;
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
