#![doc = include_str!("../README.md")]

mod classifier;
mod client;
mod error;
mod model;
mod reconcile;
mod token;

pub use classifier::GoogleClassifier;
pub use client::{
    DEFAULT_BASE_URL, GOOGLE_HOSTS, Gbp, GbpClient, GbpClientBuilder, LocalPostCreated,
    MAX_REPLY_BYTES, OP_CREATE_LOCAL_POST, OP_DELETE_REPLY, OP_UPDATE_REPLY, PROVIDER_NAME,
    ReplyDeleted, ReplyUpdated,
};
#[allow(deprecated)]
pub use error::{AdapterError, Error, GbpApiError, GbpError, GoogleError, TokenError};
pub use model::{
    ActionType, CallToAction, Date, LocalPost, LocalPostEvent, LocalPostOffer, LocationName,
    MediaFormat, MediaItem, ReviewName, ReviewReply, TimeInterval, TimeOfDay, TopicType,
};
pub use reconcile::Reconciliation;
pub use token::{AccessToken, StaticToken, TokenSource};
