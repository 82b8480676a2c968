//! Reconciliation: [`MetaClient::reconcile_page_post`], the Instagram resume,
//! and [`idem::reconcile::Reconcile`] for [`MetaClient`]. What each proves is
//! in the README ("Reconciliation and its limits").

use async_trait::async_trait;
use idem::adapter::{Expect, Lookup, Settled, ToReconcile, record_to_reconcile};
use idem::executor::Source;
use idem::ledger::Resolution;
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
use idem::{IdempotencyKey, Operation};

use super::*;
use crate::model::{ContainerId, ContainerStatus, IgPublished};

#[async_trait]
impl Reconcile for MetaClient {
    fn provider(&self) -> &str {
        PROVIDER_NAME
    }

    async fn reconcile(&self, key: &IdempotencyKey) -> Result<ReconcileVerdict, ReconcileError> {
        let op = match record_to_reconcile(self.executor(), PROVIDER_NAME, key, false).await? {
            ToReconcile::Succeeded(op) => return Ok(already_applied(&op)),
            ToReconcile::Open(op) => op,
        };
        match op.operation.as_str() {
            OP_PAGE_POST => Ok(ReconcileVerdict::Undetermined {
                note: "Meta keeps no key for Page posts and the record holds neither the Page nor \
                       the message, so nothing can be looked up from the key alone; call \
                       MetaClient::reconcile_page_post with the original Page and post"
                    .to_owned(),
            }),
            OP_IG_PUBLISH => self.reconcile_instagram(key, &op).await,
            other => Err(ReconcileError::NotReconcilable {
                key: key.clone(),
                reason: format!("unknown Meta operation {other:?}"),
            }),
        }
    }
}

impl MetaClient {
    async fn reconcile_instagram(
        &self,
        key: &IdempotencyKey,
        op: &Operation,
    ) -> Result<ReconcileVerdict, ReconcileError> {
        let Some(container) = op.checkpoint.clone().map(ContainerId::new) else {
            return Ok(ReconcileVerdict::Undetermined {
                note: "no container was recorded (the container creation's own answer was \
                       lost): a container may exist at Meta, never shown unless published; an \
                       operator bumps the key to create a new one"
                    .to_owned(),
            });
        };
        let status = self
            .container_status(key, &container)
            .await
            .map_err(|e| e.into_reconcile_error(key))?;
        let (resolution, verdict) = match status {
            ContainerStatus::Published => {
                let published = IgPublished {
                    media_id: None,
                    container_id: container.clone(),
                    source: Source::Reconciled,
                };
                let note = format!("container {container} is PUBLISHED");
                (
                    Resolution::Succeeded {
                        status: 200,
                        body: published_body(&published),
                        note: format!("reconciled: {note}"),
                    },
                    ReconcileVerdict::Applied {
                        provider_id: None,
                        note,
                    },
                )
            }
            ContainerStatus::Finished | ContainerStatus::Error | ContainerStatus::Expired => {
                let note = format!(
                    "container {container} is {}: it was not published; the next publish with \
                     this key reuses it (Meta publishes a container at most once)",
                    status.as_str()
                );
                (
                    Resolution::NotApplied {
                        note: format!("reconciled: {note}"),
                    },
                    ReconcileVerdict::NotApplied { note },
                )
            }
            other => {
                return Ok(ReconcileVerdict::Undetermined {
                    note: format!(
                        "container {container} is {}; ask again later",
                        other.as_str()
                    ),
                });
            }
        };
        // The status was read without a lease: `settle` records the verdict
        // only if nobody claimed or settled the row meanwhile.
        match self
            .inner
            .core
            .settle::<MetaError, AdapterError>(key, op, &resolution)
            .await
        {
            Ok(Settled::Recorded(_)) => Ok(verdict),
            Ok(Settled::AlreadySucceeded(op)) => Ok(already_applied(&op)),
            Err(e) => Err(e.into_reconcile_error(key)),
        }
    }
}

/// The verdict for a record that had already succeeded, with its stored id.
fn already_applied(op: &Operation) -> ReconcileVerdict {
    let id = op
        .response_body
        .as_deref()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(b).ok())
        .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_owned));
    ReconcileVerdict::Applied {
        provider_id: id,
        note: "the record had already succeeded".to_owned(),
    }
}

/// A Page post found in the ledger: the stored answer's id.
fn posted(key: &IdempotencyKey, body: &[u8]) -> Result<Reconciled, Error> {
    Ok(Reconciled::AlreadySucceeded(PostId::new(parse_id(
        key, body,
    )?)))
}

/// Pages of 100 posts read per listing edge by
/// [`MetaClient::reconcile_page_post`]. When the window holds more, "not
/// found" is not proof and the record stays `unknown` whatever the
/// [`ReconcileOptions`].
pub const RECONCILE_MAX_PAGES: usize = 10;

#[derive(Deserialize)]
struct ListBody<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    paging: Option<Paging>,
}

/// Graph API cursor paging: `next` is present while more items remain.
#[derive(Deserialize, Default)]
struct Paging {
    cursors: Option<Cursors>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
struct Cursors {
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
    message: Option<String>,
    created_time: Option<String>,
}

#[derive(Deserialize)]
struct MediaItem {
    id: String,
    caption: Option<String>,
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
    /// [`Error::Store`] (`NotFound`) with no record, [`Error::KeyReused`] for
    /// another request's record, [`Error::NotUnknown`], [`Error::Rejected`],
    /// [`Error::Superseded`] or [`Error::InFlight`] for a record that is not
    /// open, [`Error::InvalidRequest`] for a post that cannot be matched,
    /// [`Error::LookupFailed`], [`Error::RecordChanged`] (the record changed
    /// while Meta was asked; nothing recorded), or [`Error::Store`].
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
        let fingerprint = fingerprint(&path, &request, OP_PAGE_POST);
        let op = match self.reconcilable(key, &fingerprint).await? {
            Ok(op) => op,
            Err(body) => return posted(key, &body),
        };
        let Some(text) = post.text().map(str::trim).filter(|t| !t.is_empty()) else {
            return Err(Error::invalid(
                key,
                "a post with no message cannot be matched by content",
            ));
        };
        let edges: &[&str] = match post.publish() {
            Publish::Now => &["published_posts"],
            Publish::At(_) => &["scheduled_posts", "published_posts"],
            _ => {
                let reason = "unpublished, unscheduled posts are not listed by Meta";
                return Err(Error::invalid(key, reason));
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
        let core = &self.inner.core;
        let now = core.executor().now();
        if let Some((_, id)) = found.first() {
            let body = serde_json::json!({ "id": id }).to_string();
            let note = format!(
                "reconciled: found post {id} by message match among the Page's recent posts \
                 ({} match(es))",
                found.len()
            );
            let status = 200;
            let body = Bytes::from(body);
            let resolution = Resolution::Succeeded { status, body, note };
            if let Settled::AlreadySucceeded(op) = core.settle(key, &op, &resolution).await? {
                return posted(key, &op.response_body.unwrap_or_default());
            }
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
                if let Settled::AlreadySucceeded(op) = core
                    .settle(key, &op, &Resolution::NotApplied { note })
                    .await?
                {
                    return posted(key, &op.response_body.unwrap_or_default());
                }
                return Ok(Reconciled::MarkedNotApplied);
            }
        }
        Ok(Reconciled::NotFound)
    }

    pub(super) async fn resume_instagram(
        &self,
        key: &IdempotencyKey,
        ig_user: &IgUserId,
        media: &IgMedia,
        fingerprint: Fingerprint,
        reason: String,
    ) -> Result<IgPublished, Error> {
        let op = match self.reconcilable(key, &fingerprint).await? {
            Ok(op) => op,
            Err(body) => return parse_published(key, &body, Source::Ledger),
        };
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
                    .core
                    .executor()
                    .begin_after_reconcile(
                        self.inner.core.provider(),
                        key,
                        OP_IG_PUBLISH,
                        fingerprint,
                    )
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
                let (status, body) = (200, published_body(&published));
                let resolution = Resolution::Succeeded { status, body, note };
                match self.inner.core.settle(key, &op, &resolution).await? {
                    Settled::Recorded(_) => Ok(published),
                    Settled::AlreadySucceeded(op) => {
                        let body = op.response_body.unwrap_or_default();
                        parse_published(key, &body, Source::Ledger)
                    }
                }
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

    /// The media created from a published container, matched by caption in
    /// the account's recent media. `None` when it cannot be told apart.
    pub(super) async fn find_media(
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

    /// The open record this request left, or the stored answer of one that
    /// already succeeded (`Ok(Err(body))`).
    async fn reconcilable(
        &self,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<Result<Operation, Bytes>, Error> {
        match self
            .inner
            .core
            .open_lookup(key, Expect::any().fingerprint(fingerprint))
            .await?
        {
            Lookup::Open(op) => Ok(Ok(op)),
            Lookup::Succeeded(op) => Ok(Err(op.response_body.unwrap_or_default())),
            Lookup::Pending(op) => Err(Error::NotUnknown {
                key: key.clone(),
                state: op.state,
            }),
        }
    }
}
