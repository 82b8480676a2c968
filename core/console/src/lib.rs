//! The idem operator console: see what needs a human, reconcile it with the
//! provider, retry it under the next key, and keep an audit of every action.
//!
//! Three faces over the same functions ([`Ledger`]):
//!
//! * an axum [`Router`](axum::Router) ([`Console::router`]) of server-rendered
//!   HTML pages that the app mounts behind its own authentication;
//! * a JSON API under `api/` in the same router;
//! * the `idem` command-line tool ([`cli`]), which can also serve the console
//!   with a single-operator login of its own ([`login`]).
//!
//! Access always goes through an [`Authorize`] hook that the app supplies:
//! it names the signed-in person and whether they may act. Every request that
//! changes something must carry the session's CSRF token.
//!
//! ```no_run
//! use std::sync::Arc;
//! use idem_console::{Console, Ledger, Principal, Role};
//!
//! # async fn app(store: idem::ledger::SqliteStore) -> Result<(), Box<dyn std::error::Error>> {
//! let ledger = Ledger::sqlite(store).await?; // .with_reconciler(Arc::new(stripe_reconcile))
//! let console = Console::new(ledger, |req: &http::request::Parts| {
//!     // Your auth layer ran first and left its user in the extensions.
//!     let user = req.extensions.get::<String>()?;
//!     Some(Principal::new(user.clone(), Role::Operator, user.clone()))
//! })
//! .base_path("/console");
//! let app: axum::Router = axum::Router::new().nest("/console", console.router());
//! # let _ = app; Ok(()) }
//! ```

use std::sync::Arc;

use idem::{Clock, SystemClock};

mod auth;
pub mod cli;
mod error;
mod html;
mod ledger;
pub mod login;
mod view;
mod web;

pub use auth::{Authorize, Principal, Role};
pub use error::ConsoleError;
pub use ledger::{
    AttentionFilter, DEFAULT_PER_PAGE, Ledger, MAX_PER_PAGE, Page, ReconcileOutcome, RetryOutcome,
    RetryRequest, SweepOutcome, Timeline, needs_typed_confirmation, succeeded_warning,
    unknown_warning,
};
pub use view::{AuditEntry, InboundView, OperationView, TimelineEvent, provider_id};
pub use web::{CSRF_FIELD, CSRF_HEADER, parse_age, parse_states};

/// The console: a [`Ledger`], the app's [`Authorize`] hook and its settings.
/// Turn it into a router with [`Console::router`].
pub struct Console {
    ledger: Ledger,
    authorize: Box<dyn Authorize>,
    secret: [u8; 32],
    base: String,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Console {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Console")
            .field("ledger", &self.ledger)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Console {
    /// A console over `ledger`; `authorize` decides who may view and who may
    /// act on every request. The CSRF secret is random (tokens are valid
    /// for this process); give several instances one secret with
    /// [`Console::csrf_secret`].
    pub fn new(ledger: Ledger, authorize: impl Authorize) -> Self {
        Self {
            ledger,
            authorize: Box::new(authorize),
            secret: rand::random(),
            base: String::new(),
            clock: Arc::new(SystemClock),
        }
    }

    /// The path the router is mounted under (for example `/console`), used
    /// in the pages' links and forms. Default: mounted at the root.
    #[must_use]
    pub fn base_path(mut self, base: impl Into<String>) -> Self {
        self.base = base.into().trim_end_matches('/').to_owned();
        self
    }

    /// The secret CSRF tokens are derived from: the same for every instance
    /// behind one load balancer. Keep it as secret as a session key.
    #[must_use]
    pub fn csrf_secret(mut self, secret: [u8; 32]) -> Self {
        self.secret = secret;
        self
    }

    /// The clock used for lease expiry and ages (tests).
    #[must_use]
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The router: pages at `/`, `/ops/{key}`, `/ops/{key}/retry`,
    /// `/inbound`, `/audit`; the JSON API under `/api/`.
    pub fn router(self) -> axum::Router {
        web::router(web::Inner {
            ledger: self.ledger,
            authorize: self.authorize,
            csrf: auth::Csrf::new(self.secret),
            base: self.base,
            clock: self.clock,
        })
    }
}
