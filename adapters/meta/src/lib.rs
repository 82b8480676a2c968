//! Retry-safe Meta Graph API writes: Facebook Page posts and Instagram
//! publishing, on idem's ledger and executor.
//!
//! ```no_run
//! use idem::{Executor, IdempotencyKey};
//! use idem::ledger::SqliteStore;
//! use idem_meta::{IgMedia, IgUserId, MetaClient, PageId, PagePost};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = SqliteStore::open("worker.db").await?;
//! let meta = MetaClient::builder(Executor::builder(store).build(), "<page access token>").build()?;
//!
//! // Posted once, whatever fails and however often this job is retried.
//! let key: IdempotencyKey = "joes-bikes_social_posts_01HZX3_v1".parse()?;
//! let post = PagePost::message("Open late on Friday!");
//! let created = meta.publish_page_post(&key, &PageId::new("1234567890"), &post).await?;
//! println!("post {} ({:?})", created.id, created.source);
//!
//! // Instagram: container, then publish; a retry reuses the container.
//! let key: IdempotencyKey = "joes-bikes_social_posts_01HZX4_v1".parse()?;
//! let media = IgMedia::image("https://joes.bike/img/friday.jpg".parse()?).caption("Open late!");
//! let published = meta.publish_instagram(&key, &IgUserId::new("17841400000000000"), &media).await?;
//! println!("media {:?}", published.media_id);
//! # Ok(()) }
//! ```
//!
//! Meta has no idempotency key, so the provider is
//! [`SafetyClass::LocalOnly`](idem::SafetyClass::LocalOnly): only Meta's
//! explicit "not processed" answers (throttling codes 4, 17, 32, 341, 613;
//! Instagram's "media not ready") and connect failures are resent. Anything
//! that may have taken effect ends `unknown`; see
//! [`MetaClient::reconcile_page_post`] and, for Instagram, the recorded
//! container (read the README for the limits of each). [`MetaClient`]
//! implements [`idem::reconcile::Reconcile`] (provider `meta`): from the key
//! alone it settles Instagram rows by their recorded container and answers
//! `Undetermined` for Page posts, whose lookup needs the original message.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod classifier;
mod client;
mod error;
mod model;
mod time;
pub mod usage;

pub use classifier::MetaClassifier;
pub use client::{
    DEFAULT_API_VERSION, DEFAULT_BASE_URL, Meta, MetaClient, MetaClientBuilder, OP_IG_PUBLISH,
    OP_PAGE_POST, PROVIDER_NAME, RECONCILE_MAX_PAGES, ReconcileOptions,
};
pub use error::{AdapterError, Error, MetaError, THROTTLE_CODES};
pub use model::{
    ContainerId, ContainerStatus, IgMedia, IgMediaKind, IgPublished, IgUserId, MediaId, PageId,
    PagePost, PostCreated, PostId, Publish, Reconciled,
};
pub use usage::Usage;

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
