//! The client: typed writes through idem's executor.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use idem::adapter::{AdapterCore, finish};
use idem::executor::{Claim, RetrySettings, SendOutcome, Source, Url};
use idem::{Executor, IdempotencyKey, OutboundRequest, Provider, SafetyClass};

use crate::classifier::GoogleClassifier;
use crate::error::{AdapterError, Error, GbpApiError};
use crate::model::{LocalPost, LocationName, ReviewName, ReviewReply};
use crate::token::{AccessToken, TokenSource};
use idem::adapter::Provider as AdapterProvider;

/// Google's production endpoint.
pub const DEFAULT_BASE_URL: &str = "https://mybusiness.googleapis.com";
/// The provider name in the ledger.
pub const PROVIDER_NAME: &str = "gbp";
/// Ledger operation name of a review reply (`accounts.locations.reviews.updateReply`).
pub const OP_UPDATE_REPLY: &str = "reviews.updateReply";
/// Ledger operation name of a reply deletion (`accounts.locations.reviews.deleteReply`).
pub const OP_DELETE_REPLY: &str = "reviews.deleteReply";
/// Ledger operation name of a local post (`accounts.locations.localPosts.create`).
pub const OP_CREATE_LOCAL_POST: &str = "localPosts.create";
/// The Business Profile APIs' hosts: a raw write ([`GbpClient::post`]) may
/// name an absolute `https://` URL on exactly one of them (the same list
/// as the crate's `[package.metadata.idem] hosts`, which the lint uses).
pub const GOOGLE_HOSTS: &[&str] = &[
    "mybusiness.googleapis.com",
    "mybusinessbusinessinformation.googleapis.com",
    "mybusinessaccountmanagement.googleapis.com",
    "mybusinessnotifications.googleapis.com",
    "mybusinessverifications.googleapis.com",
    "mybusinessqanda.googleapis.com",
    "mybusinesslodging.googleapis.com",
    "mybusinessplaceactions.googleapis.com",
    "businessprofileperformance.googleapis.com",
];
/// Google's limit on a reply comment, in bytes.
pub const MAX_REPLY_BYTES: usize = 4096;

/// Google Business Profile as idem's adapter kit describes it. Review
/// replies are [`NaturallyIdempotent`](SafetyClass::NaturallyIdempotent)
/// (an upsert); local posts are built from the same name and classifier
/// with [`LocalOnly`](SafetyClass::LocalOnly).
#[derive(Debug, Clone, Copy)]
pub struct Gbp;

impl AdapterProvider for Gbp {
    const NAME: &'static str = PROVIDER_NAME;
    type WireError = GbpApiError;
    type Classifier = GoogleClassifier;

    fn safety_class() -> SafetyClass {
        SafetyClass::NaturallyIdempotent
    }

    fn classifier() -> GoogleClassifier {
        GoogleClassifier::new()
    }

    fn default_retry() -> RetrySettings {
        RetrySettings::default()
    }
}

/// Builds a [`GbpClient`].
pub struct GbpClientBuilder {
    executor: Executor,
    tokens: Arc<dyn TokenSource>,
    base_url: String,
    retry: RetrySettings,
    read_retry: Option<RetrySettings>,
    pub(crate) reconcile: ReconcileSettings,
}

impl fmt::Debug for GbpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GbpClientBuilder")
            .field("base_url", &self.base_url)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// Limits of [`GbpClient::reconcile_local_post`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReconcileSettings {
    /// How long after an outcome became unknown a missing post may be taken
    /// as "never created".
    pub(crate) settle_time: Duration,
    /// How far Google's `createTime` may be earlier than our first send.
    pub(crate) clock_skew: Duration,
    /// Most pages read (100 posts each).
    pub(crate) max_pages: u32,
}

impl GbpClientBuilder {
    /// Retry settings of the list requests reconciliation makes.
    pub fn read_retry(mut self, retry: RetrySettings) -> Self {
        self.read_retry = Some(retry);
        self
    }

    /// How long after a local post's outcome became unknown reconciliation
    /// may conclude, from an empty listing, that the post was never created
    /// (default 10 minutes). Before that, a missing post is reported as
    /// [`Reconciliation::TooEarly`](crate::Reconciliation::TooEarly): Google
    /// may still be processing the request.
    pub fn reconcile_settle_time(mut self, settle: Duration) -> Self {
        self.reconcile.settle_time = settle;
        self
    }

    /// How much earlier than our first send Google's `createTime` of a match
    /// may be (clock skew between us and Google; default 2 minutes).
    pub fn reconcile_clock_skew(mut self, skew: Duration) -> Self {
        self.reconcile.clock_skew = skew;
        self
    }

    /// The most pages of 100 posts reconciliation reads (default 50).
    pub fn reconcile_max_pages(mut self, pages: u32) -> Self {
        self.reconcile.max_pages = pages.max(1);
        self
    }

    /// The client.
    ///
    /// # Errors
    ///
    /// [`AdapterError::BaseUrl`] when the base URL is not an absolute http(s)
    /// URL.
    pub fn build(self) -> Result<GbpClient, Error> {
        let core = AdapterCore::new::<Gbp>(self.executor, &self.base_url, self.retry)
            .map_err(AdapterError::BaseUrl)?
            .with_raw_hosts(GOOGLE_HOSTS);
        if self.base_url.contains('?')
            || !core.base().username().is_empty()
            || core.base().password().is_some()
        {
            return Err(AdapterError::BaseUrl(
                "must not carry a query string or credentials".to_owned(),
            )
            .into());
        }
        let delete = Provider::new(
            PROVIDER_NAME,
            SafetyClass::NaturallyIdempotent,
            GoogleClassifier::absent_is_success(),
        )
        .with_retry(self.retry);
        let post = Provider::new(
            PROVIDER_NAME,
            SafetyClass::LocalOnly,
            GoogleClassifier::new(),
        )
        .with_retry(self.retry);
        // Only ever passed to `Executor::read` (reconciliation's list
        // requests): it carries the read retry settings and never claims a
        // ledger row.
        let read = Provider::new(
            PROVIDER_NAME,
            SafetyClass::NaturallyIdempotent,
            GoogleClassifier::new(),
        )
        .with_retry(self.read_retry.unwrap_or(self.retry));
        Ok(GbpClient {
            inner: Arc::new(Inner {
                core,
                tokens: self.tokens,
                delete,
                post,
                read,
                reconcile: self.reconcile,
            }),
        })
    }
}

pub(crate) struct Inner {
    pub(crate) core: AdapterCore,
    pub(crate) tokens: Arc<dyn TokenSource>,
    pub(crate) delete: Provider,
    pub(crate) post: Provider,
    pub(crate) read: Provider,
    pub(crate) reconcile: ReconcileSettings,
}

/// Retry-safe Google Business Profile writes. Cheap to clone.
///
/// | call | Google method | safety class | on a lost answer |
/// | --- | --- | --- | --- |
/// | [`update_reply`](Self::update_reply) | `PUT …/reviews/{r}/reply` | naturally idempotent | resent with the same key |
/// | [`delete_reply`](Self::delete_reply) | `DELETE …/reviews/{r}/reply` | naturally idempotent (404 = already gone) | resent with the same key |
/// | [`create_local_post`](Self::create_local_post) | `POST …/locations/{l}/localPosts` | local only | `unknown`; [`reconcile_local_post`](Self::reconcile_local_post) |
#[derive(Clone)]
pub struct GbpClient {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for GbpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GbpClient")
            .field("base_url", &self.inner.core.base().as_str())
            .field("tokens", &self.inner.tokens)
            .finish_non_exhaustive()
    }
}

/// A review reply, as Google stored it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplyUpdated {
    /// The operation's key.
    pub key: IdempotencyKey,
    /// The reply.
    pub reply: ReviewReply,
    /// From the wire now, or from the ledger (no request made).
    pub source: Source,
}

impl ReplyUpdated {
    /// Whether this was answered from the ledger with no request.
    pub fn from_ledger(&self) -> bool {
        self.source == Source::Ledger
    }
}

/// A deleted review reply.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplyDeleted {
    /// The operation's key.
    pub key: IdempotencyKey,
    /// Google answered 404: there was no reply (any more) to delete.
    pub already_absent: bool,
    /// From the wire now, or from the ledger (no request made).
    pub source: Source,
}

impl ReplyDeleted {
    /// Whether this was answered from the ledger with no request.
    pub fn from_ledger(&self) -> bool {
        self.source == Source::Ledger
    }
}

/// A created local post.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LocalPostCreated {
    /// The operation's key.
    pub key: IdempotencyKey,
    /// The post as Google returned it (with its `name`).
    pub post: LocalPost,
    /// From the wire, from the ledger, or found by reconciliation.
    pub source: Source,
}

impl LocalPostCreated {
    /// Whether this was answered from the ledger with no request.
    pub fn from_ledger(&self) -> bool {
        self.source == Source::Ledger
    }
}

impl GbpClient {
    /// Starts a client over `executor`, authenticating with `tokens`.
    pub fn builder(executor: Executor, tokens: impl TokenSource) -> GbpClientBuilder {
        Self::builder_shared(executor, Arc::new(tokens))
    }

    /// As [`builder`](Self::builder), with a shared token source.
    pub fn builder_shared(executor: Executor, tokens: Arc<dyn TokenSource>) -> GbpClientBuilder {
        GbpClientBuilder {
            executor,
            tokens,
            base_url: DEFAULT_BASE_URL.to_owned(),
            retry: Gbp::default_retry(),
            read_retry: None,
            reconcile: ReconcileSettings {
                settle_time: Duration::from_secs(600),
                clock_skew: Duration::from_secs(120),
                max_pages: 50,
            },
        }
    }

    /// The provider policy of review replies (naturally idempotent).
    pub fn reply_provider(&self) -> &Provider {
        self.inner.core.provider()
    }

    /// The provider policy of local posts (local only).
    pub fn local_post_provider(&self) -> &Provider {
        &self.inner.post
    }

    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        self.inner.core.url(segments, &[])
    }

    /// A keyed raw write for what the typed API lacks: `method` (POST,
    /// PATCH, PUT) to `path` below the base URL, for example
    /// `"v4/accounts/1/locations/2/media"`, or to an absolute `https://` URL
    /// on one of [`GOOGLE_HOSTS`] (the Business Information API's location
    /// `PATCH`, for example), with a JSON `body` and an access
    /// token, through the executor under `key` (recorded first,
    /// fingerprinted, answered from the ledger on a rerun). Raw writes are
    /// local-only: a write that may have reached Google is never resent
    /// automatically, whatever the method.
    ///
    /// # Errors
    ///
    /// As [`create_local_post`](Self::create_local_post);
    /// [`Error::InvalidRequest`] for a path that would leave the base URL.
    pub async fn post<T: serde::de::DeserializeOwned>(
        &self,
        key: &IdempotencyKey,
        method: http::Method,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<idem::adapter::Answer<T>, Error> {
        let core = &self.inner.core;
        let request = core.raw_request(key, method.clone(), path)?.json(body);
        let route = request.url().path().to_owned();
        let operation = AdapterCore::raw_operation(&method, &route);
        let (status, body, source) = self
            .write(&self.inner.post, key, &operation, request, false)
            .await?;
        let value = idem::adapter::decode_json(key, &body)?;
        Ok(idem::adapter::Answer::new(
            value,
            key.clone(),
            status,
            source,
        ))
    }

    /// Creates or replaces the owner's reply to a review
    /// (`accounts.locations.reviews.updateReply`). An upsert: transient
    /// failures are resent with the same key, in this claim and in later
    /// runs. A job whose ledger row already `succeeded` makes no request.
    ///
    /// # Errors
    ///
    /// [`AdapterError::CommentTooLong`] before anything is recorded;
    /// [`Error::Rejected`] when Google rejects it (row `failed`);
    /// [`Error::NotSent`] / [`Error::OutcomeUnknown`] (resend-safe)
    /// when it should be run again later; [`AdapterError::Unauthenticated`] or
    /// [`AdapterError::Token`] for credential problems (row `pending`); an
    /// executor error for ledger problems.
    pub async fn update_reply(
        &self,
        key: &IdempotencyKey,
        review: &ReviewName,
        comment: &str,
    ) -> Result<ReplyUpdated, Error> {
        if comment.len() > MAX_REPLY_BYTES {
            return Err(AdapterError::CommentTooLong {
                len: comment.len(),
                max: MAX_REPLY_BYTES,
            }
            .into());
        }
        let request = OutboundRequest::put(self.reply_url(review))
            .json(&serde_json::json!({ "comment": comment }));
        let provider = self.inner.core.provider().clone();
        let (_status, body, source) = self
            .write(&provider, key, OP_UPDATE_REPLY, request, true)
            .await?;
        let reply = parse_body::<ReviewReply>(key, &body)?;
        Ok(ReplyUpdated {
            key: key.clone(),
            reply,
            source,
        })
    }

    /// Deletes the owner's reply to a review
    /// (`accounts.locations.reviews.deleteReply`). Idempotent: a 404
    /// `NOT_FOUND` counts as success (`already_absent`), so a delete whose
    /// first answer was lost and was resent still ends `succeeded`. Note that
    /// Google also answers 404 when the review itself is gone; either way no
    /// reply exists afterwards.
    ///
    /// # Errors
    ///
    /// As [`update_reply`](Self::update_reply).
    pub async fn delete_reply(
        &self,
        key: &IdempotencyKey,
        review: &ReviewName,
    ) -> Result<ReplyDeleted, Error> {
        let request = OutboundRequest::delete(self.reply_url(review));
        let provider = self.inner.delete.clone();
        let (status, _body, source) = self
            .write(&provider, key, OP_DELETE_REPLY, request, true)
            .await?;
        Ok(ReplyDeleted {
            key: key.clone(),
            already_absent: status == StatusCode::NOT_FOUND,
            source,
        })
    }

    /// Creates a local post (`accounts.locations.localPosts.create`).
    ///
    /// Google has no idempotency key for this call, so only the ledger
    /// prevents a duplicate: it is resent only when Google provably did not
    /// process it (connection refused, 429 `RESOURCE_EXHAUSTED`). A timeout,
    /// reset, 500, 503 `UNAVAILABLE` or 504 `DEADLINE_EXCEEDED` after sending
    /// leaves the row `unknown` and returns [`Error::OutcomeUnknown`]:
    /// call [`reconcile_local_post`](Self::reconcile_local_post) with the
    /// same key and post.
    ///
    /// # Errors
    ///
    /// [`Error::OutcomeUnknown`] (not resend-safe), [`Error::Rejected`],
    /// [`Error::NotSent`], credential and executor errors as for
    /// [`update_reply`](Self::update_reply).
    pub async fn create_local_post(
        &self,
        key: &IdempotencyKey,
        location: &LocationName,
        post: &LocalPost,
    ) -> Result<LocalPostCreated, Error> {
        let request = self.create_post_request(location, post);
        let provider = self.inner.post.clone();
        let (_status, body, source) = self
            .write(&provider, key, OP_CREATE_LOCAL_POST, request, false)
            .await?;
        let post = parse_body::<LocalPost>(key, &body)?;
        Ok(LocalPostCreated {
            key: key.clone(),
            post,
            source,
        })
    }

    fn reply_url(&self, review: &ReviewName) -> Url {
        let mut segments: Vec<&str> = review.location().segments().to_vec();
        segments.extend(["reviews", review.review(), "reply"]);
        self.url(&segments)
    }

    pub(crate) fn posts_url(&self, location: &LocationName) -> Url {
        let mut segments: Vec<&str> = location.segments().to_vec();
        segments.push("localPosts");
        self.url(&segments)
    }

    pub(crate) fn create_post_request(
        &self,
        location: &LocationName,
        post: &LocalPost,
    ) -> OutboundRequest {
        OutboundRequest::post(self.posts_url(location)).json(&post.for_create())
    }

    /// One write: claim, send with a token, one refresh-and-resend on 401,
    /// record. Returns the stored status, body and source.
    async fn write(
        &self,
        provider: &Provider,
        key: &IdempotencyKey,
        operation: &str,
        request: OutboundRequest,
        resend_safe: bool,
    ) -> Result<(StatusCode, bytes::Bytes, Source), Error> {
        let mark = |e: Error| {
            if resend_safe {
                e.resend_safe_until(idem::adapter::resend_safe_forever())
            } else {
                e
            }
        };
        let core = &self.inner.core;
        let mut claim = match core
            .begin(provider, key, operation, &request)
            .await
            .map_err(mark)?
        {
            Ok(d) => return Ok((d.status, d.body, d.source)),
            Err(claim) => claim,
        };
        let outcome = match self.send_authed(&mut claim, &request).await {
            Ok(outcome) => outcome,
            Err(failure) => return Err(failure.record(claim, resend_safe).await),
        };
        let delivered = finish(claim, outcome).await.map_err(mark)?;
        Ok((delivered.status, delivered.body, delivered.source))
    }

    /// Sends `request` with the current token; on 401 refreshes the token
    /// once and sends again within the same claim. The 401 attempt had no
    /// effect at Google, so the second send is safe under every safety class.
    pub(crate) async fn send_authed(
        &self,
        claim: &mut Claim,
        request: &OutboundRequest,
    ) -> Result<SendOutcome, AuthFailure> {
        let token = self.inner.tokens.token().await.map_err(|e| AuthFailure {
            kind: AuthFailureKind::Token(e),
            effect_possible: false,
        })?;
        let first = claim.send(with_token(request, &token)).await;
        if !is_unauthenticated(&first) {
            return Ok(first);
        }
        tracing::info!(key = %claim.key(), "Google answered 401; refreshing the access token once");
        let fresh = self.inner.tokens.refresh().await.map_err(|e| AuthFailure {
            kind: AuthFailureKind::Token(e),
            effect_possible: first.effect_possible(),
        })?;
        let mut second = claim.send(with_token(request, &fresh)).await;
        // Keep every attempt of this claim, so "was anything possibly
        // applied?" is judged over both sends.
        let mut attempts = first.attempts;
        attempts.append(&mut second.attempts);
        second.attempts = attempts;
        if is_unauthenticated(&second) {
            return Err(AuthFailure {
                kind: AuthFailureKind::Refused,
                effect_possible: second.effect_possible(),
            });
        }
        Ok(second)
    }
}

/// Why a claim could not be sent with a valid token.
#[derive(Debug)]
pub(crate) struct AuthFailure {
    pub(crate) kind: AuthFailureKind,
    /// Whether an attempt before the 401 may have had an effect (a 5xx of
    /// an upsert that was then retried into the 401). Never true for a
    /// local post: local-only sends stop at the first possible effect.
    effect_possible: bool,
}

/// The credential problem itself.
#[derive(Debug)]
pub(crate) enum AuthFailureKind {
    Token(crate::error::TokenError),
    Refused,
}

impl AuthFailure {
    /// Ends the claim truthfully and returns the caller's error: back to
    /// `pending` when nothing can have taken effect (the usual case: a 401
    /// is not processed), `unknown` otherwise.
    pub(crate) async fn record(self, claim: Claim, resend_safe: bool) -> Error {
        let key = claim.key().clone();
        let what = match &self.kind {
            AuthFailureKind::Token(e) => e.to_string(),
            AuthFailureKind::Refused => {
                "Google answered 401 UNAUTHENTICATED before and after a token refresh".to_owned()
            }
        };
        let completion = if self.effect_possible {
            idem::ledger::Completion::Unknown {
                note: format!("{what}; an earlier attempt may have taken effect"),
                status: Some(401),
            }
        } else {
            idem::ledger::Completion::NotSent {
                note: format!("{what}; not processed"),
            }
        };
        if let Err(e) = claim.complete(completion).await {
            return Error::from(e);
        }
        if self.effect_possible {
            let unknown = Error::OutcomeUnknown {
                key,
                reason: what,
                resend_safe_until: None,
            };
            return if resend_safe {
                unknown.resend_safe_until(idem::adapter::resend_safe_forever())
            } else {
                unknown
            };
        }
        match self.kind {
            AuthFailureKind::Token(source) => AdapterError::Token { key, source }.into(),
            AuthFailureKind::Refused => AdapterError::Unauthenticated { key }.into(),
        }
    }
}

fn with_token(request: &OutboundRequest, token: &AccessToken) -> OutboundRequest {
    request.clone().bearer_auth(token.secret())
}

fn is_unauthenticated(outcome: &SendOutcome) -> bool {
    matches!(&outcome.response, Some((status, _, _)) if *status == StatusCode::UNAUTHORIZED)
}

fn parse_body<T: serde::de::DeserializeOwned + Default>(
    key: &IdempotencyKey,
    body: &[u8],
) -> Result<T, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    idem::adapter::decode_json(key, body)
}

idem::adapter_basics!(
    builder: GbpClientBuilder,
    client: GbpClient,
    retry_doc: "Retry settings of every write (and of reads, unless `read_retry` is set). Default: `RetrySettings::default()`."
);
