#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod classifier;
mod client;
pub mod error;
mod model;
pub mod reconcile;
pub mod signature;

pub use classifier::TwilioClassifier;
#[allow(deprecated)]
pub use client::{
    CALLBACK_KEY_PARAM, Credentials, DEFAULT_BASE_URL, Messages, OPERATION, PROVIDER,
    PROVIDER_NAME, Sent, Twilio, TwilioClient, TwilioClientBuilder,
};
pub use error::{AdapterError, Error, TwilioError};
pub use model::{
    CreateMessage, MAX_BODY_CHARS, MAX_MEDIA, Message, MessageSid, MessageStatus, Sender,
};
pub use reconcile::{CallbackOutcome, Reconciled, reconcile_from_callback};
