#![doc = include_str!("../README.md")]
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
