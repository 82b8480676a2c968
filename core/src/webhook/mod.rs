//! Webhooks in both directions.
//!
//! # Inbound: provider events processed once
//!
//! [`handle_webhook`] (a function) and [`WebhookLayer`] (a tower layer)
//! receive provider events (Stripe, Twilio, Meta, Standard Webhooks, see
//! [`Verifier`]). For each delivery, in this order:
//!
//! 1. **Signature.** Checked before anything else, with constant-time
//!    comparisons; a timestamp outside [`InboundWebhookBuilder::tolerance`]
//!    is refused like a bad signature. Either answers 400 and the store is
//!    not touched.
//! 2. **Deduplication** by the provider's event id, per endpoint (table
//!    `idem_webhook_events`). A processed event answers 200 with
//!    `webhook-duplicate: true` and the handler does not run. An event whose
//!    handler is running for another delivery answers 503 with
//!    `Retry-After`: that run may still fail, so this delivery must not be
//!    told it was processed, and the provider retries it.
//! 3. **Ledger.** An event that names an idem key settles the matching
//!    `unknown` row as `succeeded` through
//!    [`LedgerStore::resolve`](crate::LedgerStore::resolve), with the
//!    provider's object as the stored answer and a note naming the event id
//!    and provider id. Only `unknown` rows (and sends whose lease ran out)
//!    move, and only to `succeeded`: a `succeeded` row is never touched, and
//!    no event ever marks a row as not applied. Stripe `payment_intent.*`:
//!    `data.object.metadata.idem_key` settles a `payment_intents.create` row
//!    (the event proves the PaymentIntent exists); `request.idempotency_key`
//!    settles the request that caused the event, except for
//!    `payment_intent.payment_failed` (a declined confirm is a rejection,
//!    which the event does not prove was recorded). Twilio: the `idemkey`
//!    query parameter of the status-callback URL settles a `messages.create`
//!    row (any status callback proves the message exists).
//! 4. **One transaction.** The handler gets an open sqlx transaction; its
//!    writes and the "processed" mark commit together. A handler failure
//!    rolls both back, answers 500 and leaves the event `pending`, so the
//!    provider's redelivery runs it again.
//!
//! The handler's transactional writes commit at most once per event id. A
//! second run can only start when the first one's lease (default 5 min) ran
//! out; its mark is fenced by a token, so only one run commits. Side effects
//! a handler makes outside its transaction may repeat in that case.
//! Processed ids are kept for the [replay
//! window](InboundWebhookBuilder::replay_window) (purge them with
//! [`WebhookStore::purge_events`]); it must cover the provider's retry
//! period (Stripe: 3 days).
//!
//! # Outbound: the platform's own webhooks
//!
//! [`WebhookSender`] delivers per the Standard Webhooks specification.
//! [`WebhookSender::enqueue`] is idempotent by `webhook:{event_id}`: a
//! retried "send webhook" job finds the existing delivery. Each attempt goes
//! through the [`Executor`](crate::Executor) under the ledger key
//! [`delivery_key`] and carries `webhook-id: <event_id>`, the same on every
//! attempt, so receivers can deduplicate.
//!
//! **What "delivered once" means.** Delivery is *at least once* with a
//! stable id. idem guarantees: one delivery record per event id; once an
//! attempt got a 2xx and it is recorded, no further attempt is made (a
//! retried job or a second worker is answered from the ledger); every copy
//! a receiver gets carries the same `webhook-id`, so a receiver that
//! deduplicates on it processes the event once. It **cannot** guarantee
//! that the receiver sees one request: a timeout, a reset connection or a
//! lost 2xx leaves the outcome unknown, and the next attempt sends the same
//! event again (a receiver that does not deduplicate processes it twice). A
//! worker that dies after the receiver answered but before the answer was
//! recorded also causes one more copy. After the delivery record is purged
//! (keep it at least 24 h, see [`WebhookStore::purge_deliveries`]), an
//! enqueue of the same id creates a new delivery, which the ledger row (if
//! still kept) answers without sending.

mod inbound;
mod layer;
mod outbound;
pub mod signature;
mod store;

pub use inbound::{
    DUPLICATE_HEADER, EventHandler, HandlerError, InboundWebhook, InboundWebhookBuilder,
    LedgerLink, LinkOutcome, TWILIO_KEY_PARAM, Verifier, WebhookConfigError, WebhookEvent,
    event_handler, handle_webhook,
};
pub use layer::{TxGuard, WebhookLayer, WebhookService, WebhookTx};
pub use outbound::{
    AttemptReport, Enqueued, KEY_TABLE, OPERATION, PROVIDER, ReceiverClassifier, WebhookError,
    WebhookSender, WebhookSenderBuilder, delivery_key, event_id_from_key,
};
pub use signature::{SignatureError, WebhookSecret};
pub use store::{
    AttemptResult, Delivery, DeliveryAttempt, DeliveryState, EndpointStatus, EventClaim,
    EventRecord, EventState, WebhookStore,
};
