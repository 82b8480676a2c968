//! The inbound engine, shared by the three front-ends ([`with_idempotency`](super::with_idempotency),
//! the [`IdempotencyLayer`](super::IdempotencyLayer) and
//! [`with_idempotency_tx`](super::with_idempotency_tx)).
//!
//! A request goes through [`serve`]: [`decide`] reads its head and gives one [`Decision`]
//! (refuse, pass through, protect); a front-end only says how to run its handler unprotected
//! and protected ([`FrontEnd`]). A protected request is [`admit`]ted against the store (an
//! answer now, or a [`Claim`] on its record), and every claim ends through the claim's own
//! completion methods, so the function, the layer and the transactional mode release, echo
//! the key and report the same way.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures::FutureExt;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::metrics::{InFlightGauge, report};
use super::problem::{self, Problem, ProblemKind};
use super::{
    Actor, Begin, BeginRequest, BodyFingerprint, BoxError, ClientKey, EndpointConfig,
    IDEMPOTENCY_KEY, IDEMPOTENCY_KEY_EXPIRES, IDEMPOTENT_REPLAYED, InFlightPolicy, InboundBody,
    InboundLease, InboundRecord, InboundStore, MissingKey, Outcome, RecordState, Scope,
    StoredResponse, box_body, full_body, is_rejection, prefer_wait,
};
use crate::fingerprint::Fingerprint;

/// What the wrapper does with a request, decided from its head alone.
pub(super) enum Decision {
    /// Run the handler unprotected; echo the key if one was sent.
    PassThrough(Option<ClientKey>),
    /// Answer without running the handler.
    Refuse(Response<InboundBody>),
    /// Protect the request with this key.
    Protect(ClientKey),
}

/// The one decision for a request's head: actor, method and key against the endpoint's
/// policy.
pub(super) fn decide(config: &EndpointConfig, parts: &Parts) -> Decision {
    let key = ClientKey::from_headers(&parts.headers);
    let safe = !config.methods.contains(&parts.method);
    let no_actor = parts
        .extensions
        .get::<Actor>()
        .is_none_or(|a| a.as_str().is_empty());
    if !safe && !config.anonymous && no_actor {
        let mut r = Problem::new(ProblemKind::ActorMissing).into_response();
        if let Some(challenge) = &config.challenge {
            r.headers_mut()
                .insert(http::header::WWW_AUTHENTICATE, challenge.clone());
        }
        return Decision::Refuse(r);
    }
    match key {
        Err(e) => Decision::Refuse(
            Problem::new(ProblemKind::KeyMalformed {
                reason: e.to_string(),
            })
            .into_response(),
        ),
        Ok(key) if safe => Decision::PassThrough(key),
        Ok(Some(key)) => Decision::Protect(key),
        Ok(None) => match config.missing_key {
            MissingKey::Required => {
                Decision::Refuse(Problem::new(ProblemKind::KeyMissing).into_response())
            }
            MissingKey::Optional => Decision::PassThrough(None),
            MissingKey::Generate => Decision::Protect(ClientKey::generate()),
        },
    }
}

/// How an unprotected run ended.
pub(super) enum Passed {
    /// The handler answered: [`serve`] echoes the key and reports `PassedThrough`.
    Ran(Response<InboundBody>),
    /// The front-end answered itself (body refused, store down) and has reported it.
    Answered(Response<InboundBody>),
}

/// A front-end: how to run its handler, unprotected and protected. Everything else is
/// [`serve`]'s.
pub(super) trait FrontEnd<S: ?Sized, B> {
    /// What the handler may fail with (the layer's inner service error).
    type Error;

    /// Runs the handler without a record.
    fn pass_through(
        self,
        store: &S,
        config: &EndpointConfig,
        parts: Parts,
        body: B,
        key: Option<&ClientKey>,
        started: Instant,
    ) -> impl Future<Output = Result<Passed, Self::Error>>;

    /// Runs the handler under `key`'s record (through [`admit`] and a [`Claim`]).
    fn protect(
        self,
        store: &S,
        config: &EndpointConfig,
        parts: Parts,
        body: B,
        key: ClientKey,
        started: Instant,
    ) -> impl Future<Output = Result<Response<InboundBody>, Self::Error>>;
}

/// Serves one request: [`decide`], then the front-end's unprotected or protected run.
pub(super) async fn serve<S, B, F>(
    store: &S,
    config: &EndpointConfig,
    parts: Parts,
    body: B,
    started: Instant,
    front: F,
) -> Result<Response<InboundBody>, F::Error>
where
    S: ?Sized,
    F: FrontEnd<S, B>,
{
    match decide(config, &parts) {
        Decision::Refuse(r) => Ok(finish_refused(config, None, r, started)),
        Decision::PassThrough(key) => {
            match front
                .pass_through(store, config, parts, body, key.as_ref(), started)
                .await?
            {
                Passed::Answered(r) => Ok(r),
                Passed::Ran(mut r) => {
                    if let Some(k) = &key {
                        echo_key(r.headers_mut(), k, None);
                    }
                    report(
                        config,
                        key.as_ref(),
                        Outcome::PassedThrough,
                        r.status(),
                        started,
                    );
                    Ok(r)
                }
            }
        }
        Decision::Protect(key) => {
            front
                .protect(store, config, parts, body, key, started)
                .await
        }
    }
}

pub(super) fn echo_key(headers: &mut HeaderMap, key: &ClientKey, expires: Option<SystemTime>) {
    headers.insert(&IDEMPOTENCY_KEY, key.to_header_value());
    if let Some(at) = expires {
        headers.insert(&IDEMPOTENCY_KEY_EXPIRES, problem::http_date(at));
    }
}

/// Reports a refusal and returns it.
fn finish_refused(
    config: &EndpointConfig,
    key: Option<&ClientKey>,
    r: Response<InboundBody>,
    started: Instant,
) -> Response<InboundBody> {
    report(config, key, Outcome::Refused, r.status(), started);
    r
}

/// Reads the request body up to the endpoint's cap; the error is the refusal to send.
// The error is the HTTP answer itself, built once per request.
#[allow(clippy::result_large_err)]
async fn read_body<B>(
    config: &EndpointConfig,
    body: B,
    key: Option<&ClientKey>,
) -> Result<Bytes, Response<InboundBody>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    match Limited::new(body, config.max_request_body).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => {
            let kind = if e.is::<LengthLimitError>() {
                ProblemKind::BodyTooLarge {
                    limit: config.max_request_body,
                }
            } else {
                ProblemKind::BodyUnreadable
            };
            let mut p = Problem::new(kind);
            if let Some(k) = key {
                p = p.key(k);
            }
            Err(p.into_response())
        }
    }
}

/// Reads an unprotected request's body for a front-end that hands its handler
/// the bytes; a refused body is answered (and reported) as [`Passed::Answered`].
pub(super) async fn read_unprotected<B>(
    config: &EndpointConfig,
    body: B,
    key: Option<&ClientKey>,
    started: Instant,
) -> Result<Bytes, Passed>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    read_body(config, body, key)
        .await
        .map_err(|r| Passed::Answered(finish_refused(config, key, r, started)))
}

fn fingerprint(config: &EndpointConfig, parts: &Parts, body: &[u8]) -> Fingerprint {
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |pq| pq.as_str());
    let mut fp = Fingerprint::builder()
        .method(parts.method.as_str())
        .target(target);
    for name in &config.fingerprint_headers {
        for value in parts.headers.get_all(name) {
            fp = fp.header(name.as_str(), value.as_bytes());
        }
    }
    match config.body_fingerprint {
        BodyFingerprint::Raw => fp.body(body).finish(),
        BodyFingerprint::CanonicalJson => match canonical_json(body) {
            Some(canonical) => fp.body(&canonical).finish(),
            None => fp.body(body).finish(),
        },
    }
}

/// The RFC 8785 form of a JSON body, or `None` when it is not JSON.
fn canonical_json(body: &[u8]) -> Option<Vec<u8>> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    serde_jcs::to_vec(&value).ok()
}

/// Same request, as far as fingerprints of one algorithm version can tell.
/// Fingerprints of different versions cannot be compared and are treated as
/// the same request, so an upgrade does not turn honest retries into 409s.
fn same_request(stored: &Fingerprint, now: &Fingerprint) -> bool {
    stored == now || stored.version() != now.version()
}

/// The lease time left, rounded up to whole seconds, at least 1: with the
/// heartbeat, at most the lease, and the key is free by then if its holder
/// died.
///
/// `now` was read before the record, so a heartbeat that renewed the lease in
/// between can make the time left look longer than the lease: it is clamped
/// to `lease`.
fn retry_after(record: &InboundRecord, now: SystemTime, lease: Duration) -> Duration {
    let left = record
        .lease_expires_at
        .and_then(|t| t.duration_since(now).ok())
        .unwrap_or_default()
        .min(lease);
    let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
    Duration::from_secs(secs.max(1))
}

fn replay(stored: &StoredResponse, key: &ClientKey, expires: SystemTime) -> Response<InboundBody> {
    let mut r = Response::new(full_body(stored.body.clone()));
    *r.status_mut() = stored.status;
    *r.headers_mut() = stored.headers.clone();
    r.headers_mut()
        .insert(&IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    echo_key(r.headers_mut(), key, Some(expires));
    r
}

/// The response headers the endpoint stores and replays.
pub(super) fn pick_headers(config: &EndpointConfig, headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in &config.replay_headers {
        for value in headers.get_all(name) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Reads the body, fingerprints the request and settles it against the
/// store: either an answer now (reported), or the claim on the record and the
/// request to run the handler with.
// The error is the HTTP answer itself, built once per request.
#[allow(clippy::result_large_err)]
pub(super) async fn admit<'a, S, B>(
    store: &'a S,
    config: &'a EndpointConfig,
    parts: Parts,
    body: B,
    key: ClientKey,
    started: Instant,
) -> Result<(Claim<'a, S>, Request<Bytes>), Response<InboundBody>>
where
    S: InboundStore + ?Sized,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let bytes = match read_body(config, body, Some(&key)).await {
        Ok(b) => b,
        Err(r) => return Err(finish_refused(config, Some(&key), r, started)),
    };
    let fp = fingerprint(config, &parts, &bytes);
    // `decide` refused actorless requests unless the endpoint opted into the
    // shared anonymous scope, which is the empty actor.
    let scope = Scope {
        actor: parts
            .extensions
            .get::<Actor>()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default(),
        endpoint: config.name.clone(),
        key: key.clone(),
    };
    let wait = match config.in_flight {
        InFlightPolicy::Reject => Duration::ZERO,
        InFlightPolicy::Wait(bound) => prefer_wait(&parts.headers).unwrap_or(bound).min(bound),
    };
    let deadline = Instant::now() + wait;
    let begin = BeginRequest {
        scope: &scope,
        fingerprint: &fp,
        ttl: config.ttl,
        lease_for: config.lease,
    };
    loop {
        let now = config.clock.now();
        let answer = |r: Response<InboundBody>, outcome| {
            report(config, Some(&key), outcome, r.status(), started);
            Err(r)
        };
        let record = match store.begin(&begin, now).await {
            Err(e) => {
                tracing::error!(target: "idem::inbound", endpoint = %config.name, error = %e, "idempotency store unavailable; refusing to run unprotected");
                let r = Problem::new(ProblemKind::StoreUnavailable)
                    .key(&key)
                    .into_response();
                return answer(r, Outcome::StoreUnavailable);
            }
            Ok(Begin::Started(lease)) => {
                let claim = Claim {
                    store,
                    config,
                    key: key.clone(),
                    lease,
                    started,
                    gauge: None,
                };
                return Ok((claim, Request::from_parts(parts, bytes)));
            }
            Ok(Begin::Existing(record)) => record,
        };
        // The fingerprint is checked first on every path, the lost race
        // included.
        if !same_request(&record.fingerprint, &fp) {
            let r = Problem::new(ProblemKind::KeyReused {
                status: config.mismatch.status(),
            })
            .key(&key)
            .expires(record.replay_until)
            .into_response();
            return answer(r, Outcome::Mismatch);
        }
        match (&record.state, &record.response) {
            (RecordState::Completed, Some(stored)) if stored.replayable => {
                return answer(replay(stored, &key, record.replay_until), Outcome::Replayed);
            }
            (RecordState::Completed, Some(stored)) => {
                let r = Problem::new(ProblemKind::NotReplayable {
                    original_status: stored.status,
                })
                .key(&key)
                .expires(record.replay_until)
                .into_response();
                return answer(r, Outcome::NotReplayable);
            }
            _ => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let r = Problem::new(ProblemKind::InFlight {
                retry_after: retry_after(&record, now, config.lease),
            })
            .key(&key)
            .expires(record.replay_until)
            .into_response();
            return answer(r, Outcome::InFlight);
        }
        // Woken by the first request's completion; the timeout caps a lost
        // notification.
        store
            .wait_for_change(&scope, left.min(Duration::from_secs(1)))
            .await;
    }
}

/// A request that won its record: it holds the lease while the handler runs
/// ([`Claim::run`]) and ends in exactly one completion method, each of which
/// reports the outcome: [`abandon`](Claim::abandon),
/// [`pass_on`](Claim::pass_on), [`unavailable`](Claim::unavailable),
/// [`taken_over`](Claim::taken_over) or [`finish`](Claim::finish).
pub(super) struct Claim<'a, S: InboundStore + ?Sized> {
    store: &'a S,
    config: &'a EndpointConfig,
    key: ClientKey,
    lease: InboundLease,
    started: Instant,
    /// Counts the request as in flight from the handler's start to its end.
    gauge: Option<InFlightGauge>,
}

impl<S: InboundStore + ?Sized> Claim<'_, S> {
    /// The record's lease.
    pub(super) fn lease(&self) -> &InboundLease {
        &self.lease
    }

    /// Runs the handler's `work` while renewing the lease every heartbeat, so
    /// the record stays claimed for as long as it runs, and no longer than one
    /// lease after the process dies. A panic is caught and handed back. The
    /// in-flight gauge counts the request until [`landed`](Self::landed) or a
    /// completion method.
    pub(super) async fn run<T>(&mut self, work: impl Future<Output = T>) -> std::thread::Result<T> {
        self.gauge = Some(InFlightGauge::start(&self.config.name));
        let (store, config, lease) = (self.store, self.config, &self.lease);
        let work = AssertUnwindSafe(work).catch_unwind();
        let beat = async {
            let every = config.heartbeat();
            loop {
                tokio::time::sleep(every).await;
                match store.renew(lease, config.lease, config.clock.now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(target: "idem::inbound", endpoint = %config.name, key = lease.scope.key.as_str(), "lease lost while the handler runs; its answer will not be stored");
                        return std::future::pending::<Infallible>().await;
                    }
                    Err(e) => {
                        tracing::warn!(target: "idem::inbound", endpoint = %config.name, error = %e, "could not renew the lease; trying again at the next heartbeat");
                    }
                }
            }
        };
        let work = std::pin::pin!(work);
        let beat = std::pin::pin!(beat);
        match futures::future::select(work, beat).await {
            futures::future::Either::Left((done, _)) => done,
            futures::future::Either::Right((never, _)) => match never {},
        }
    }

    /// The handler has ended: it no longer counts as in flight.
    pub(super) fn landed(&mut self) {
        self.gauge = None;
    }

    /// `None` when the handler's answer is to be stored; else how the request
    /// ends when it is passed on unstored: `Released` for a rejection made
    /// before the handler ran (see [`is_rejection`]), `ExecutedNotStored` for
    /// a status the endpoint does not store.
    pub(super) fn unstored<B>(&self, response: &Response<B>) -> Option<Outcome> {
        if !self.config.store_rejections && is_rejection(response) {
            Some(Outcome::Released)
        } else if !self.config.outcomes.stores(response.status()) {
            Some(Outcome::ExecutedNotStored)
        } else {
            None
        }
    }

    async fn release(&self) {
        if let Err(e) = self.store.release(&self.lease).await {
            tracing::error!(target: "idem::inbound", endpoint = %self.config.name, error = %e, "could not release the record; a retry waits for the lease to expire");
        }
    }

    /// The handler panicked or failed: releases the record and reports
    /// `Released` (500). The caller resumes the panic or returns the error.
    pub(super) async fn abandon(mut self) {
        self.gauge = None;
        self.release().await;
        report(
            self.config,
            Some(&self.key),
            Outcome::Released,
            StatusCode::INTERNAL_SERVER_ERROR,
            self.started,
        );
    }

    /// The answer is not stored: releases the record (a retry runs the
    /// handler again) and passes `response` on with the key.
    pub(super) async fn pass_on(
        mut self,
        mut response: Response<InboundBody>,
        outcome: Outcome,
    ) -> Response<InboundBody> {
        self.gauge = None;
        self.release().await;
        echo_key(response.headers_mut(), &self.key, None);
        report(
            self.config,
            Some(&self.key),
            outcome,
            response.status(),
            self.started,
        );
        response
    }

    /// The store failed around the handler: releases the record and answers
    /// 503.
    pub(super) async fn unavailable(mut self) -> Response<InboundBody> {
        self.gauge = None;
        self.release().await;
        let r = Problem::new(ProblemKind::StoreUnavailable)
            .key(&self.key)
            .into_response();
        report(
            self.config,
            Some(&self.key),
            Outcome::StoreUnavailable,
            r.status(),
            self.started,
        );
        r
    }

    /// Another request took the record over before this one's answer was
    /// stored: the client is sent back (409, retry after 1 s) to read that
    /// one's answer. The record is not released: it is no longer this one's.
    pub(super) fn taken_over(mut self) -> Response<InboundBody> {
        self.gauge = None;
        let r = Problem::new(ProblemKind::InFlight {
            retry_after: Duration::from_secs(1),
        })
        .key(&self.key)
        .into_response();
        report(
            self.config,
            Some(&self.key),
            Outcome::InFlight,
            r.status(),
            self.started,
        );
        r
    }

    /// Stores `stored` as the record's answer: `Executed`, or
    /// `ExecutedNotStored` (logged) when the lease was lost or the store
    /// failed.
    pub(super) async fn store(&self, stored: &StoredResponse) -> Outcome {
        let config = self.config;
        match self
            .store
            .complete(&self.lease, stored, config.clock.now())
            .await
        {
            Ok(true) => Outcome::Executed,
            Ok(false) => {
                tracing::warn!(target: "idem::inbound", endpoint = %config.name, key = self.key.as_str(), "lease lost before completion; another request took this key over, answer not stored");
                Outcome::ExecutedNotStored
            }
            Err(e) => {
                tracing::error!(target: "idem::inbound", endpoint = %config.name, key = self.key.as_str(), error = %e, "could not store the answer; a retry after the lease may run the handler again");
                Outcome::ExecutedNotStored
            }
        }
    }

    /// The answer has been dealt with (stored, or `outcome` says why not):
    /// sends it with the key and the end of its replay window.
    pub(super) fn finish(
        mut self,
        mut head: http::response::Parts,
        body: InboundBody,
        outcome: Outcome,
    ) -> Response<InboundBody> {
        self.gauge = None;
        echo_key(&mut head.headers, &self.key, Some(self.lease.replay_until));
        let status = head.status;
        let r = Response::from_parts(head, body);
        report(self.config, Some(&self.key), outcome, status, self.started);
        r
    }
}

/// The protected path of the function and the layer: admit, run the handler
/// under the claim, store its answer when the endpoint keeps it.
pub(super) async fn protect<S, B, F, Fut, RB, E>(
    store: &S,
    config: &EndpointConfig,
    parts: Parts,
    body: B,
    key: ClientKey,
    started: Instant,
    handler: F,
) -> Result<Response<InboundBody>, E>
where
    S: InboundStore + ?Sized,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
    F: FnOnce(Request<Bytes>) -> Fut,
    Fut: Future<Output = Result<Response<RB>, E>>,
    RB: Body<Data = Bytes> + Send + 'static,
    RB::Error: Into<BoxError>,
{
    let (mut claim, request) = match admit(store, config, parts, body, key, started).await {
        Ok(a) => a,
        Err(r) => return Ok(r),
    };
    let response = match claim.run(handler(request)).await {
        Err(panic) => {
            claim.abandon().await;
            std::panic::resume_unwind(panic);
        }
        Ok(Err(e)) => {
            claim.abandon().await;
            return Err(e);
        }
        Ok(Ok(r)) => r,
    };
    if let Some(outcome) = claim.unstored(&response) {
        return Ok(claim.pass_on(response.map(box_body), outcome).await);
    }
    let status = response.status();
    let (head, body) = response.into_parts();
    let headers = pick_headers(config, &head.headers);
    let cap = config.max_response_body;
    let fits = body
        .size_hint()
        .upper()
        .is_some_and(|n| n <= u64::try_from(cap).unwrap_or(u64::MAX));
    let (stored, out_body) = if fits {
        match Limited::new(body, cap).collect().await {
            Ok(c) => {
                let bytes = c.to_bytes();
                let stored = StoredResponse {
                    status,
                    headers,
                    body: bytes.clone(),
                    replayable: true,
                };
                (stored, full_body(bytes))
            }
            Err(e) => {
                // The handler's body failed while being read: there is no
                // answer to store or to send.
                tracing::error!(target: "idem::inbound", endpoint = %config.name, error = %e, "handler response body failed");
                let mut r = Response::new(full_body(Bytes::new()));
                *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                return Ok(claim.pass_on(r, Outcome::Released).await);
            }
        }
    } else {
        // Too large or streamed: the client gets it once; retries are told
        // it cannot be replayed instead of getting a truncated copy.
        let stored = StoredResponse {
            status,
            headers,
            body: Bytes::new(),
            replayable: false,
        };
        (stored, box_body(body))
    };
    let outcome = claim.store(&stored).await;
    Ok(claim.finish(head, out_body, outcome))
}
