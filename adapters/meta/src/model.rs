//! Typed inputs and answers.

use std::time::SystemTime;

use idem::executor::{Source, Url};
use serde::{Deserialize, Serialize};

use crate::error::{AdapterError, Error};

idem::provider_id!(
    /// A Facebook Page id.
    PageId, unchecked
);
idem::provider_id!(
    /// A Page post id, `{page-id}_{post-id}` as Meta returns it.
    PostId, unchecked
);
idem::provider_id!(
    /// An Instagram professional account (IG User) id.
    IgUserId, unchecked
);
idem::provider_id!(
    /// An Instagram media container id (step one of publishing).
    ContainerId, unchecked
);
idem::provider_id!(
    /// A published Instagram media id.
    MediaId, unchecked
);

/// Checks that an id is safe as one URL path segment.
pub(crate) fn check_segment(what: &str, id: &str) -> Result<(), Error> {
    if id.is_empty()
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(AdapterError::InvalidInput(format!(
            "{what} must be a non-empty Graph id (letters, digits, `_`, `-`, `.`)"
        ))
        .into());
    }
    Ok(())
}

/// When a Page post goes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Publish {
    /// Now (Meta's default).
    Now,
    /// Created unpublished (`published=false`), with no schedule.
    Unpublished,
    /// Scheduled (`published=false`, `scheduled_publish_time` as a UNIX
    /// timestamp). Meta accepts times between 10 minutes and 30 days ahead.
    At(SystemTime),
}

/// A Page post: `POST /{page-id}/feed` with `message`, `link`, `published`
/// and `scheduled_publish_time`.
///
/// ```
/// use idem_meta::PagePost;
/// let post = PagePost::message("Open late on Friday!").link("https://joes.bike/hours".parse()?);
/// assert_eq!(post.form()[0], ("message", "Open late on Friday!".to_owned()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PagePost {
    message: Option<String>,
    link: Option<Url>,
    publish: Publish,
    extra: idem::adapter::Extra,
}

impl PagePost {
    /// A post with this text.
    pub fn message(text: impl Into<String>) -> Self {
        Self {
            message: Some(text.into()),
            link: None,
            publish: Publish::Now,
            extra: idem::adapter::Extra::default(),
        }
    }

    /// A post that only shares a link.
    pub fn link_only(link: Url) -> Self {
        Self {
            message: None,
            link: Some(link),
            publish: Publish::Now,
            extra: idem::adapter::Extra::default(),
        }
    }

    /// Attaches a link.
    pub fn link(mut self, link: Url) -> Self {
        self.link = Some(link);
        self
    }

    /// A call-to-action button on a link post (`call_to_action`), for
    /// example `("SHOP_NOW", https://shop.example/bikes)`.
    pub fn call_to_action(self, kind: &str, link: &Url) -> Self {
        let cta = serde_json::json!({ "type": kind, "value": { "link": link.as_str() } });
        self.extra("call_to_action", cta.to_string())
    }

    /// A parameter this type lacks (for example `child_attachments` for a
    /// carousel link post, as its JSON text), sent as it is. It is part of
    /// the request, so of the fingerprint; a name the post already sends is
    /// refused with `InvalidInput`, never overridden.
    pub fn extra(mut self, name: impl Into<String>, value: impl Into<serde_json::Value>) -> Self {
        self.extra.push(name, value);
        self
    }

    /// The form the post is sent as, extras included.
    pub(crate) fn full_form(&self) -> Result<Vec<(String, String)>, Error> {
        let mut form: Vec<(String, String)> = self
            .form()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        self.extra
            .append_to(&mut form)
            .map_err(AdapterError::InvalidInput)?;
        Ok(form)
    }

    /// Creates the post unpublished.
    pub fn unpublished(mut self) -> Self {
        self.publish = Publish::Unpublished;
        self
    }

    /// Schedules the post.
    pub fn scheduled_at(mut self, when: SystemTime) -> Self {
        self.publish = Publish::At(when);
        self
    }

    /// The text.
    pub fn text(&self) -> Option<&str> {
        self.message.as_deref()
    }

    /// The link.
    pub fn link_url(&self) -> Option<&Url> {
        self.link.as_ref()
    }

    /// When it goes live.
    pub fn publish(&self) -> Publish {
        self.publish
    }

    /// The form fields sent, in a fixed order (the fingerprint depends on
    /// it).
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut form = Vec::new();
        if let Some(m) = &self.message {
            form.push(("message", m.clone()));
        }
        if let Some(l) = &self.link {
            form.push(("link", l.to_string()));
        }
        match self.publish {
            Publish::Now => {}
            Publish::Unpublished => form.push(("published", "false".to_owned())),
            Publish::At(when) => {
                form.push(("published", "false".to_owned()));
                form.push((
                    "scheduled_publish_time",
                    idem::time::unix_seconds(when).to_string(),
                ));
            }
        }
        form
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let empty = self.message.as_deref().is_none_or(|m| m.trim().is_empty());
        if empty && self.link.is_none() {
            return Err(AdapterError::InvalidInput(
                "a Page post needs a message or a link".to_owned(),
            )
            .into());
        }
        Ok(())
    }
}

/// What an Instagram post shows.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgMediaKind {
    /// A single image (`image_url`; JPEG is what Meta documents).
    Image {
        /// Public URL Meta fetches the image from.
        image_url: Url,
    },
    /// A reel (`media_type=REELS`, `video_url`). Meta shares single feed
    /// videos as reels and has deprecated `media_type=VIDEO`.
    Reel {
        /// Public URL Meta fetches the video from.
        video_url: Url,
    },
}

/// An Instagram post: container (`POST /{ig-user-id}/media`), then publish
/// (`POST /{ig-user-id}/media_publish` with `creation_id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgMedia {
    kind: IgMediaKind,
    caption: Option<String>,
}

impl IgMedia {
    /// An image post.
    pub fn image(image_url: Url) -> Self {
        Self {
            kind: IgMediaKind::Image { image_url },
            caption: None,
        }
    }

    /// A reel.
    pub fn reel(video_url: Url) -> Self {
        Self {
            kind: IgMediaKind::Reel { video_url },
            caption: None,
        }
    }

    /// Sets the caption (Meta allows up to 2,200 characters).
    pub fn caption(mut self, caption: impl Into<String>) -> Self {
        self.caption = Some(caption.into());
        self
    }

    /// The caption.
    pub fn caption_text(&self) -> Option<&str> {
        self.caption.as_deref()
    }

    /// The media.
    pub fn kind(&self) -> &IgMediaKind {
        &self.kind
    }

    /// The container-creation form fields, in a fixed order.
    pub fn form(&self) -> Vec<(&'static str, String)> {
        let mut form = Vec::new();
        match &self.kind {
            IgMediaKind::Image { image_url } => form.push(("image_url", image_url.to_string())),
            IgMediaKind::Reel { video_url } => {
                form.push(("media_type", "REELS".to_owned()));
                form.push(("video_url", video_url.to_string()));
            }
        }
        if let Some(c) = &self.caption {
            form.push(("caption", c.clone()));
        }
        form
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        if self
            .caption
            .as_ref()
            .is_some_and(|c| c.chars().count() > 2200)
        {
            return Err(AdapterError::InvalidInput(
                "an Instagram caption is at most 2,200 characters".to_owned(),
            )
            .into());
        }
        Ok(())
    }
}

idem::wire_enum! {
    /// An Instagram container's `status_code`.
    pub enum ContainerStatus {
        /// Still being processed (or published).
        InProgress = "IN_PROGRESS",
        /// Ready to publish.
        Finished = "FINISHED",
        /// Its media was published.
        Published = "PUBLISHED",
        /// It could not complete.
        Error = "ERROR",
        /// Not published within 24 h.
        Expired = "EXPIRED",
    }
}

/// A Page post that exists at Meta.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostCreated {
    /// Meta's post id.
    pub id: PostId,
    /// Where the answer came from (wire, ledger, reconciliation).
    pub source: Source,
}

/// A published Instagram post.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct IgPublished {
    /// The media id; `None` when publishing was proved by reconciliation
    /// (container `PUBLISHED`) but the media could not be matched in the
    /// account's recent media.
    #[serde(rename = "id")]
    pub media_id: Option<MediaId>,
    /// The container that was published.
    pub container_id: ContainerId,
    /// Where the answer came from.
    #[serde(skip, default = "ledger_source")]
    pub source: Source,
}

fn ledger_source() -> Source {
    Source::Ledger
}

/// What [`MetaClient::reconcile_page_post`](crate::MetaClient::reconcile_page_post)
/// established.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reconciled {
    /// The post exists; the record is now `succeeded`.
    Found {
        /// The post.
        id: PostId,
        /// How many recent posts matched (more than one means the same text
        /// was posted more than once in the window; the earliest is taken).
        matches: usize,
    },
    /// No matching post was found; the record stays `unknown`.
    NotFound,
    /// No matching post was found and the caller allowed it to be treated
    /// as not applied: the record is back to `pending` and the next run
    /// posts with the same key.
    MarkedNotApplied,
    /// The record had already succeeded; nothing was asked of Meta.
    AlreadySucceeded(PostId),
}
