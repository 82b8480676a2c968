//! The fake-server skeleton every simulated provider is built on: a fault
//! queue, a request log, counters of requests and of side effects, on a
//! server of its own.
//!
//! A simulated provider is a [`Simulator`]: it carries out the requests that
//! reach it and says what its errors look like. [`Fake`] serves it and
//! applies the [`Fault`]s queued with [`Fake::inject`] to the next write
//! requests, one fault per request, in order. The four providers of this
//! crate ([`FakeStripe`](crate::FakeStripe), [`FakeTwilio`](crate::FakeTwilio),
//! [`FakeGbp`](crate::FakeGbp), [`FakeMeta`](crate::FakeMeta)) are `Fake`s,
//! and so can be yours.
//!
//! ```
//! use idem_testkit::fake::{Context, Fake, Fault, Simulator};
//! use idem_testkit::{Reply, Request};
//!
//! /// A provider that records notes.
//! #[derive(Debug, Default)]
//! struct Notes(Vec<String>);
//!
//! impl Simulator for Notes {
//!     fn handle(&mut self, request: &Request, cx: &mut Context) -> Reply {
//!         self.0.push(request.body_text());
//!         cx.side_effect();
//!         Reply::json(201, serde_json::json!({ "id": self.0.len() }))
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let notes = Fake::serve(Notes::default()).await;
//! notes.fail_times(2, Fault::ServerError);
//! assert!(notes.base_url().starts_with("http://127.0.0.1:"));
//! assert_eq!(notes.side_effects(), 0);
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::http::{Handler, Outcome, Reply, Request, Server, lock};

/// A failure for the next write request (any method but `GET` and `HEAD`).
///
/// Faults are taken from the queue one per write request, in order, after
/// the provider's own checks (credentials; at Stripe, replays of a stored
/// idempotency key) and before the request is carried out. Every variant
/// says whether the write takes effect: that is what a test of retry safety
/// looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// No fault for this write (to aim a later fault at a later write).
    Pass,
    /// The provider's own server error (Stripe 500 `api_error`, Twilio 500
    /// error 20500, Google 503 `UNAVAILABLE`, Meta 500 code 2); nothing is
    /// done.
    ServerError,
    /// The provider's own rate-limit answer, with `Retry-After` (or its
    /// equivalent); nothing is done.
    RateLimited {
        /// Seconds until the provider accepts requests again.
        retry_after_secs: u64,
    },
    /// This answer (an error status with its body) instead of the
    /// provider's; nothing is done. The providers' types have constructors
    /// for their usual ones, such as
    /// [`FakeStripe::lock_timeout`](crate::FakeStripe::lock_timeout).
    Reply(Reply),
    /// This answer instead of the provider's, nothing done, but the provider
    /// keeps it as the request's outcome: a retry with the same idempotency
    /// key gets it again (Stripe stores a 500 under the key). Providers
    /// without keys treat it as [`Reply`](Self::Reply).
    Recorded(Reply),
    /// The connection is reset before the request reaches the provider:
    /// nothing is done, and the client gets no answer.
    ResetBeforeEffect,
    /// Nothing is done, and the provider's server error leaves only after
    /// `delay`: a timeout that had no effect.
    StallWithoutEffect {
        /// How long the answer is held back.
        delay: Duration,
    },
    /// The request is carried out, but its answer leaves only after `delay`.
    /// Longer than the client's attempt timeout, the client sees a timeout
    /// after the effect; shorter, a slow answer.
    LoseResponse {
        /// How long the answer is held back.
        delay: Duration,
    },
    /// The request is carried out, then the connection is reset: the client
    /// gets no answer.
    ResetAfterEffect,
    /// The request is carried out, then the provider's server error replaces
    /// its answer (Twilio 500 after queueing, Google 504
    /// `DEADLINE_EXCEEDED`).
    ServerErrorAfterEffect,
    /// The request is carried out, then this answer replaces the provider's.
    ReplyAfterEffect(Reply),
    /// The request is carried out, and for `delay` the provider treats it as
    /// still in progress (Stripe answers 409 `idempotency_key_in_use` to the
    /// same key meanwhile); its answer leaves after `delay`.
    SlowProcessing {
        /// How long processing takes.
        delay: Duration,
    },
}

/// What a [`Simulator`] is told about the request it carries out, and how it
/// reports what it did.
#[derive(Debug, Default)]
pub struct Context {
    side_effects: usize,
    in_progress_for: Option<Duration>,
}

impl Context {
    /// Counts one side effect: something the provider really did (an object
    /// created, a message queued, a payment captured).
    pub fn side_effect(&mut self) {
        self.side_effects += 1;
    }

    /// Side effects counted so far for this request.
    pub fn side_effects(&self) -> usize {
        self.side_effects
    }

    /// How long the request is to be treated as still in progress
    /// ([`Fault::SlowProcessing`]).
    pub fn in_progress_for(&self) -> Option<Duration> {
        self.in_progress_for
    }
}

/// A simulated provider: what it does with the requests that reach it.
pub trait Simulator: Send + 'static {
    /// Carries out a request and answers it. Count what really happened
    /// with [`Context::side_effect`].
    fn handle(&mut self, request: &Request, cx: &mut Context) -> Reply;

    /// Answers a request before the fault queue is consulted, or lets it
    /// through (`None`): credentials, idempotency replays.
    fn screen(&mut self, request: &Request) -> Option<Reply> {
        let _ = request;
        None
    }

    /// The provider's server error; `after_effect` when the request was
    /// carried out first ([`Fault::ServerErrorAfterEffect`]).
    fn server_error(&self, request: &Request, after_effect: bool) -> Reply {
        let _ = (request, after_effect);
        Reply::new(500)
    }

    /// The provider's rate-limit answer.
    fn rate_limited(&self, request: &Request, retry_after_secs: u64) -> Reply {
        let _ = request;
        Reply::new(429).insert_header("retry-after", retry_after_secs.to_string())
    }

    /// Keeps `reply` as the outcome of `request` ([`Fault::Recorded`]).
    fn record(&mut self, request: &Request, reply: &Reply) {
        let _ = (request, reply);
    }

    /// Adds what the provider puts on every answer (request ids, usage
    /// headers).
    fn decorate(&self, reply: Reply) -> Reply {
        reply
    }
}

struct Core<S> {
    simulator: S,
    faults: VecDeque<Fault>,
    log: Vec<Request>,
    side_effects: usize,
    write_requests: usize,
    read_requests: usize,
}

impl<S: Simulator> Core<S> {
    fn process(&mut self, request: Request) -> Outcome {
        if request.is_write() {
            self.write_requests += 1;
        } else {
            self.read_requests += 1;
        }
        self.log.push(request.clone());
        let outcome = self.answer(&request);
        match outcome {
            Outcome::Reply(reply) => Outcome::Reply(self.simulator.decorate(reply)),
            Outcome::Reset => Outcome::Reset,
        }
    }

    fn answer(&mut self, request: &Request) -> Outcome {
        if let Some(reply) = self.simulator.screen(request) {
            return Outcome::Reply(reply);
        }
        let fault = if request.is_write() {
            self.faults.pop_front()
        } else {
            None
        };
        let sim = &mut self.simulator;
        let mut cx = Context::default();
        let outcome = match fault.unwrap_or(Fault::Pass) {
            Fault::Pass => Outcome::Reply(sim.handle(request, &mut cx)),
            Fault::ServerError => Outcome::Reply(sim.server_error(request, false)),
            Fault::RateLimited { retry_after_secs } => {
                Outcome::Reply(sim.rate_limited(request, retry_after_secs))
            }
            Fault::Reply(reply) => Outcome::Reply(reply),
            Fault::Recorded(reply) => {
                sim.record(request, &reply);
                Outcome::Reply(reply)
            }
            Fault::ResetBeforeEffect => Outcome::Reset,
            Fault::StallWithoutEffect { delay } => {
                Outcome::Reply(sim.server_error(request, false).set_delay(delay))
            }
            Fault::LoseResponse { delay } => {
                Outcome::Reply(sim.handle(request, &mut cx).set_delay(delay))
            }
            Fault::ResetAfterEffect => {
                sim.handle(request, &mut cx);
                Outcome::Reset
            }
            Fault::ServerErrorAfterEffect => {
                sim.handle(request, &mut cx);
                Outcome::Reply(sim.server_error(request, true))
            }
            Fault::ReplyAfterEffect(reply) => {
                sim.handle(request, &mut cx);
                Outcome::Reply(reply)
            }
            Fault::SlowProcessing { delay } => {
                cx.in_progress_for = Some(delay);
                Outcome::Reply(sim.handle(request, &mut cx).set_delay(delay))
            }
        };
        self.side_effects += cx.side_effects;
        outcome
    }
}

struct Shared<S>(Mutex<Core<S>>);

impl<S> Shared<S> {
    fn lock(&self) -> MutexGuard<'_, Core<S>> {
        lock(&self.0)
    }
}

impl<S: Simulator> Handler for Shared<S> {
    fn handle(&self, request: Request) -> Outcome {
        self.lock().process(request)
    }
}

/// A simulated provider on a local port. Dropping it stops the server.
pub struct Fake<S> {
    server: Server,
    shared: Arc<Shared<S>>,
}

impl<S> fmt::Debug for Fake<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fake")
            .field("simulator", &std::any::type_name::<S>())
            .field("base_url", &self.server.uri())
            .finish_non_exhaustive()
    }
}

impl<S: Simulator> Fake<S> {
    /// Serves `simulator` on a free loopback port.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound (a test environment fault).
    pub async fn serve(simulator: S) -> Self {
        Self::launch(simulator, None)
    }

    /// Serves `simulator` on `listener` (for a port chosen in advance).
    ///
    /// # Panics
    ///
    /// When the listener is unusable.
    pub async fn serve_on(listener: std::net::TcpListener, simulator: S) -> Self {
        Self::launch(simulator, Some(listener))
    }

    fn launch(simulator: S, listener: Option<std::net::TcpListener>) -> Self {
        let shared = Arc::new(Shared(Mutex::new(Core {
            simulator,
            faults: VecDeque::new(),
            log: Vec::new(),
            side_effects: 0,
            write_requests: 0,
            read_requests: 0,
        })));
        let handler: Arc<dyn Handler> = shared.clone();
        let server = match listener {
            Some(listener) => Server::start_on(listener, handler),
            None => Server::start(handler),
        };
        Self { server, shared }
    }

    /// Runs `f` on the simulator's state (for the providers' own
    /// accessors).
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut S) -> R) -> R {
        f(&mut self.shared.lock().simulator)
    }

    /// The base URL to give the client: `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        self.server.uri()
    }

    /// Queues a fault for the next write request (faults apply in order, one
    /// per write request).
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push_back(fault);
    }

    /// The "fail `n` times, then succeed" script: queues `fault` for the
    /// next `n` write requests; the one after goes through.
    pub fn fail_times(&self, n: usize, fault: Fault) {
        let mut core = self.shared.lock();
        core.faults.extend(std::iter::repeat_n(fault, n));
    }

    /// Faults queued and not yet applied.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().faults.len()
    }

    /// What really happened at the provider: objects created, messages
    /// queued, replies written (each simulator says what it counts).
    /// Replays, rejections and faults without effect do not count.
    pub fn side_effects(&self) -> usize {
        self.shared.lock().side_effects
    }

    /// Write requests (any method but `GET`/`HEAD`) seen on the wire,
    /// whatever their answer.
    pub fn write_requests(&self) -> usize {
        self.shared.lock().write_requests
    }

    /// Read requests (`GET`, `HEAD`) seen on the wire.
    pub fn read_requests(&self) -> usize {
        self.shared.lock().read_requests
    }

    /// Every request seen, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().log.clone()
    }

    /// Every write request seen, in order, faulted or not: for tests and
    /// demos that attribute attempts to operations by their content.
    pub fn writes(&self) -> Vec<Request> {
        self.filtered(Request::is_write)
    }

    /// Every read request seen, in order.
    pub fn reads(&self) -> Vec<Request> {
        self.filtered(|r| !r.is_write())
    }

    fn filtered(&self, keep: impl Fn(&Request) -> bool) -> Vec<Request> {
        self.shared
            .lock()
            .log
            .iter()
            .filter(|r| keep(r))
            .cloned()
            .collect()
    }
}
