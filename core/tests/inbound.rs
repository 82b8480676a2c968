//! Inbound `with_idempotency` through axum's `oneshot`, one suite run against
//! SQLite and PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::Request as AxumRequest;
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use idem::Fingerprint;
use idem::ManualClock;
use idem::inbound::{
    Actor, Begin, BeginRequest, ClientKey, EndpointConfig, EndpointConfigBuilder, IdempotencyLayer,
    InFlightPolicy, InboundStore, MismatchStatus, MissingKey, RecordState, Scope, StoredResponse,
    Sweeper,
};
use tower::ServiceExt;

const HOUR: Duration = Duration::from_secs(3600);

/// What the handler under test does on its n-th call (1-based).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    Created,
    Status(u16),
    Hang,
    Panic,
    Big(usize),
}

struct App {
    router: Router,
    calls: Arc<AtomicUsize>,
    clock: ManualClock,
}

fn app<S>(store: S, cfg: EndpointConfigBuilder, delay: Duration, script: Vec<Act>) -> App
where
    S: InboundStore + Clone,
{
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let config = cfg
        .clock(Arc::new(clock.clone()))
        .build()
        .expect("valid config");
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let script = Arc::new(script);
    let handler = move |req: AxumRequest| {
        let counter = Arc::clone(&counter);
        let script = Arc::clone(&script);
        async move {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let act = script.get(n - 1).copied().unwrap_or(Act::Created);
            let user = req
                .extensions()
                .get::<Actor>()
                .map(|a| a.as_str().to_owned())
                .unwrap_or_default();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            tokio::time::sleep(delay).await;
            match act {
                Act::Hang => std::future::pending::<()>().await,
                Act::Panic => panic!("handler panicked on purpose"),
                _ => {}
            }
            let status = match act {
                Act::Status(s) => StatusCode::from_u16(s).unwrap(),
                _ => StatusCode::CREATED,
            };
            let payload = match act {
                Act::Big(n) => "x".repeat(n),
                _ => serde_json::json!({
                    "order": n,
                    "user": user,
                    "body": String::from_utf8_lossy(&body),
                })
                .to_string(),
            };
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .header("location", format!("/orders/{n}"))
                .header("x-not-replayed", "1")
                .body(Body::from(payload))
                .unwrap()
        }
    };
    let layer = IdempotencyLayer::new(store, config)
        .actor_from(|parts| parts.headers.get("x-user")?.to_str().ok().map(Actor::new));
    App {
        router: Router::new().route("/orders", post(handler).layer(layer)),
        calls,
        clock,
    }
}

fn default_cfg() -> EndpointConfigBuilder {
    EndpointConfig::builder("create-order").lease(Duration::from_secs(10))
}

fn request(key: Option<&[u8]>, user: &str, body: &str) -> Request<Body> {
    let mut b = Request::post("/orders").header("x-user", user);
    if let Some(k) = key {
        b = b.header("idempotency-key", HeaderValue::from_bytes(k).unwrap());
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn replayed(&self) -> bool {
        self.headers
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true")
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn problem_type(&self) -> String {
        assert_eq!(self.headers["content-type"], "application/problem+json");
        self.json()["type"].as_str().unwrap().to_owned()
    }
}

async fn send(router: &Router, req: Request<Body>) -> Answer {
    let r = router.clone().oneshot(req).await.unwrap();
    let (parts, body) = r.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn post_key(app: &App, key: &str, user: &str, body: &str) -> Answer {
    send(&app.router, request(Some(key.as_bytes()), user, body)).await
}

// ---- the suite -------------------------------------------------------------

async fn duplicate_post_replays_identically<S: InboundStore + Clone>(store: S) {
    let app = app(store, default_cfg(), Duration::ZERO, vec![]);
    let first = post_key(&app, "k-dup", "alice", r#"{"sku":"bike"}"#).await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert!(!first.replayed());
    assert_eq!(first.headers["idempotency-key"], "k-dup");
    assert!(first.headers.contains_key("idempotency-key-expires"));
    let second = post_key(&app, "k-dup", "alice", r#"{"sku":"bike"}"#).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert!(second.replayed());
    assert_eq!(second.body, first.body);
    assert_eq!(second.headers["location"], first.headers["location"]);
    assert_eq!(second.headers["content-type"], "application/json");
    assert_eq!(second.headers["idempotency-key"], "k-dup");
    assert_eq!(
        second.headers["idempotency-key-expires"],
        first.headers["idempotency-key-expires"]
    );
    assert!(
        !second.headers.contains_key("x-not-replayed"),
        "only configured headers are stored"
    );
    assert_eq!(app.calls.load(Ordering::SeqCst), 1, "one side effect");
}

async fn hundred_concurrent_posts_one_side_effect<S: InboundStore + Clone>(store: S) {
    let app = Arc::new(app(
        store,
        default_cfg(),
        Duration::from_millis(150),
        vec![],
    ));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { post_key(&app, "k-race", "alice", "same body").await })
        })
        .collect();
    let mut fresh = 0;
    let mut replays = 0;
    let mut in_flight = 0;
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            StatusCode::CREATED if a.replayed() => {
                replays += 1;
                assert_eq!(a.json()["order"], 1);
            }
            StatusCode::CREATED => fresh += 1,
            StatusCode::CONFLICT => {
                assert_eq!(
                    a.problem_type(),
                    "urn:idem:problem:idempotency-key-in-flight"
                );
                assert!(a.headers.contains_key("retry-after"));
                in_flight += 1;
            }
            other => panic!("unexpected status {other}: {:?}", a.body),
        }
    }
    assert_eq!(fresh, 1, "exactly one execution answered fresh");
    assert_eq!(fresh + replays + in_flight, 100);
    assert_eq!(
        app.calls.load(Ordering::SeqCst),
        1,
        "exactly one side effect"
    );
}

async fn concurrent_posts_wait_and_replay<S: InboundStore + Clone>(store: S) {
    let cfg = default_cfg().in_flight(InFlightPolicy::Wait(Duration::from_secs(5)));
    let app = Arc::new(app(store, cfg, Duration::from_millis(300), vec![]));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let app = Arc::clone(&app);
            tokio::spawn(async move { post_key(&app, "k-wait", "alice", "b").await })
        })
        .collect();
    let mut replays = 0;
    for t in tasks {
        let a = t.await.unwrap();
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "waiters get the answer, not 409"
        );
        replays += usize::from(a.replayed());
    }
    assert_eq!(replays, 19);
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
}

async fn conflicting_body_gets_409<S: InboundStore + Clone>(store: S) {
    let app = app(store, default_cfg(), Duration::ZERO, vec![]);
    assert_eq!(
        post_key(&app, "k-c", "alice", "one").await.status,
        StatusCode::CREATED
    );
    let a = post_key(&app, "k-c", "alice", "two").await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.problem_type(), "urn:idem:problem:idempotency-key-reused");
    assert_eq!(a.json()["idempotency_key"], "k-c");
    assert!(a.json()["idempotency_key_expires"].is_string());
    assert!(a.headers.contains_key("idempotency-key-expires"));
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
}

async fn conflicting_body_gets_422_when_configured<S: InboundStore + Clone>(store: S) {
    let cfg = default_cfg().on_mismatch(MismatchStatus::UnprocessableContent);
    let app = app(store, cfg, Duration::ZERO, vec![]);
    assert_eq!(
        post_key(&app, "k-c", "alice", "one").await.status,
        StatusCode::CREATED
    );
    let a = post_key(&app, "k-c", "alice", "two").await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.problem_type(), "urn:idem:problem:idempotency-key-reused");
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
}

async fn race_loser_fingerprint_is_checked<S: InboundStore + Clone>(store: S) {
    // The first request holds the key in flight; a different body with the
    // same key is a reuse, not "in progress".
    let app = Arc::new(app(store, default_cfg(), Duration::ZERO, vec![Act::Hang]));
    let first = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { post_key(&app, "k-l", "alice", "one").await })
    };
    while app.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let a = post_key(&app, "k-l", "alice", "two").await;
    assert_eq!(a.status, StatusCode::CONFLICT);
    assert_eq!(a.problem_type(), "urn:idem:problem:idempotency-key-reused");
    let same = post_key(&app, "k-l", "alice", "one").await;
    assert_eq!(
        same.problem_type(),
        "urn:idem:problem:idempotency-key-in-flight"
    );
    first.abort();
}

async fn other_user_gets_fresh_execution<S: InboundStore + Clone>(store: S) {
    let app = app(store, default_cfg(), Duration::ZERO, vec![]);
    let a = post_key(&app, "k-shared", "alice", "x").await;
    let b = post_key(&app, "k-shared", "bob", "x").await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert!(!b.replayed(), "bob never gets alice's stored answer");
    assert_eq!(b.json()["user"], "bob");
    assert_ne!(a.body, b.body);
    let a2 = post_key(&app, "k-shared", "alice", "x").await;
    assert!(a2.replayed());
    assert_eq!(a2.body, a.body);
    assert_eq!(app.calls.load(Ordering::SeqCst), 2);
}

async fn expired_key_executes_anew<S: InboundStore + Clone>(store: S) {
    let cfg = default_cfg().ttl(Duration::from_secs(600));
    let app = app(store, cfg, Duration::ZERO, vec![]);
    post_key(&app, "k-exp", "alice", "x").await;
    app.clock.advance(Duration::from_secs(599));
    assert!(post_key(&app, "k-exp", "alice", "x").await.replayed());
    app.clock.advance(Duration::from_secs(2));
    let later = post_key(&app, "k-exp", "alice", "x").await;
    assert_eq!(later.status, StatusCode::CREATED);
    assert!(!later.replayed());
    assert_eq!(later.json()["order"], 2);
    // Past the window, even a different body is a new request.
    app.clock.advance(Duration::from_secs(601));
    let other = post_key(&app, "k-exp", "alice", "different").await;
    assert_eq!(other.status, StatusCode::CREATED);
    assert_eq!(app.calls.load(Ordering::SeqCst), 3);
}

async fn crashed_request_is_retryable_after_lease<S: InboundStore + Clone>(store: S) {
    let app = Arc::new(app(store, default_cfg(), Duration::ZERO, vec![Act::Hang]));
    let first = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { post_key(&app, "k-crash", "alice", "x").await })
    };
    while app.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The request dies mid-handler, leaving its record in flight.
    first.abort();
    let _ = first.await;
    let blocked = post_key(&app, "k-crash", "alice", "x").await;
    assert_eq!(blocked.status, StatusCode::CONFLICT);
    assert_eq!(
        blocked.problem_type(),
        "urn:idem:problem:idempotency-key-in-flight"
    );
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
    app.clock.advance(Duration::from_secs(11));
    let retried = post_key(&app, "k-crash", "alice", "x").await;
    assert_eq!(retried.status, StatusCode::CREATED);
    assert!(!retried.replayed());
    assert_eq!(app.calls.load(Ordering::SeqCst), 2);
    assert!(post_key(&app, "k-crash", "alice", "x").await.replayed());
}

async fn panic_releases_the_record<S: InboundStore + Clone>(store: S) {
    let app = Arc::new(app(store, default_cfg(), Duration::ZERO, vec![Act::Panic]));
    let first = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { post_key(&app, "k-panic", "alice", "x").await })
    };
    assert!(first.await.unwrap_err().is_panic());
    let retried = post_key(&app, "k-panic", "alice", "x").await;
    assert_eq!(retried.status, StatusCode::CREATED);
    assert!(!retried.replayed());
    assert_eq!(app.calls.load(Ordering::SeqCst), 2);
}

async fn server_errors_are_not_stored_client_errors_are<S: InboundStore + Clone>(store: S) {
    let app = app(
        store,
        default_cfg(),
        Duration::ZERO,
        vec![Act::Status(500), Act::Created, Act::Status(409)],
    );
    let a = post_key(&app, "k-5xx", "alice", "x").await;
    assert_eq!(a.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(a.headers["idempotency-key"], "k-5xx");
    let b = post_key(&app, "k-5xx", "alice", "x").await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert!(!b.replayed(), "a 5xx is not replayed; the retry runs");
    let c = post_key(&app, "k-4xx", "alice", "x").await;
    assert_eq!(c.status, StatusCode::CONFLICT);
    let d = post_key(&app, "k-4xx", "alice", "x").await;
    assert_eq!(d.status, StatusCode::CONFLICT);
    assert!(d.replayed(), "a deterministic 4xx is replayed");
    assert_eq!(app.calls.load(Ordering::SeqCst), 3);
}

async fn oversized_answer_is_not_replayed_nor_rerun<S: InboundStore + Clone>(store: S) {
    let cfg = default_cfg().max_response_body(1000);
    let app = app(store, cfg, Duration::ZERO, vec![Act::Big(5000)]);
    let a = post_key(&app, "k-big", "alice", "x").await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.body.len(), 5000, "the first client gets the whole answer");
    let b = post_key(&app, "k-big", "alice", "x").await;
    assert_eq!(b.status, StatusCode::CONFLICT);
    assert_eq!(b.problem_type(), "urn:idem:problem:response-not-replayable");
    assert_eq!(app.calls.load(Ordering::SeqCst), 1);
}

async fn oversized_request_is_refused<S: InboundStore + Clone>(store: S) {
    let cfg = default_cfg().max_request_body(10);
    let app = app(store, cfg, Duration::ZERO, vec![]);
    let a = post_key(&app, "k-req", "alice", "this body is too long").await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(a.problem_type(), "urn:idem:problem:request-body-too-large");
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);
}

async fn malformed_headers_get_400<S: InboundStore + Clone>(store: S) {
    let app = app(store, default_cfg(), Duration::ZERO, vec![]);
    let long = vec![b'k'; 256];
    let cases: Vec<(Option<&[u8]>, &str)> = vec![
        (None, "urn:idem:problem:idempotency-key-missing"),
        (Some(b""), "urn:idem:problem:idempotency-key-malformed"),
        (Some(b"\"\""), "urn:idem:problem:idempotency-key-malformed"),
        (Some(&long), "urn:idem:problem:idempotency-key-malformed"),
        (
            Some(b"caf\xe9"),
            "urn:idem:problem:idempotency-key-malformed",
        ),
        (Some(b"a key"), "urn:idem:problem:idempotency-key-malformed"),
        (
            Some(b"\"open"),
            "urn:idem:problem:idempotency-key-malformed",
        ),
        (
            Some(b"\"a\\b\""),
            "urn:idem:problem:idempotency-key-malformed",
        ),
    ];
    for (key, kind) in cases {
        let a = send(&app.router, request(key, "alice", "x")).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{key:?}");
        assert_eq!(a.problem_type(), kind, "{key:?}");
        assert_eq!(a.json()["status"], 400);
    }
    let mut twice = request(Some(b"a"), "alice", "x");
    twice
        .headers_mut()
        .append("idempotency-key", HeaderValue::from_static("b"));
    assert_eq!(
        send(&app.router, twice).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(app.calls.load(Ordering::SeqCst), 0);
    // The quoted form of a valid key is accepted and echoed bare.
    let ok = send(&app.router, request(Some(b"\"q-1\""), "alice", "x")).await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(ok.headers["idempotency-key"], "q-1");
    assert!(post_key(&app, "q-1", "alice", "x").await.replayed());
}

async fn missing_key_policies<S: InboundStore + Clone>(store: S) {
    let optional = app(
        store.clone(),
        EndpointConfig::builder("optional").missing_key(MissingKey::Optional),
        Duration::ZERO,
        vec![],
    );
    for _ in 0..2 {
        let a = send(&optional.router, request(None, "alice", "x")).await;
        assert_eq!(a.status, StatusCode::CREATED);
        assert!(!a.headers.contains_key("idempotency-key"));
    }
    assert_eq!(optional.calls.load(Ordering::SeqCst), 2, "unprotected");
    let generate = app(
        store,
        EndpointConfig::builder("generate").missing_key(MissingKey::Generate),
        Duration::ZERO,
        vec![],
    );
    let a = send(&generate.router, request(None, "alice", "x")).await;
    let key = ClientKey::parse(&a.headers["idempotency-key"])
        .unwrap()
        .as_str()
        .to_owned();
    assert_eq!(key.len(), 36, "a UUID");
    assert!(post_key(&generate, &key, "alice", "x").await.replayed());
    assert_eq!(generate.calls.load(Ordering::SeqCst), 1);
}

async fn lease_fencing_refuses_a_late_completion<S: InboundStore + Clone>(store: S) {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let scope = Scope {
        actor: "alice".into(),
        endpoint: "fence".into(),
        key: ClientKey::new("k-fence").unwrap(),
    };
    let fp = Fingerprint::builder().method("POST").body(b"x").finish();
    let req = BeginRequest {
        scope: &scope,
        fingerprint: &fp,
        ttl: HOUR,
        lease_for: Duration::from_secs(1),
    };
    let Begin::Started(a) = store.begin(&req, t0).await.unwrap() else {
        panic!("first begin starts")
    };
    assert!(matches!(
        store.begin(&req, t0).await.unwrap(),
        Begin::Existing(r) if r.state == RecordState::InFlight
    ));
    let later = t0 + Duration::from_secs(2);
    let Begin::Started(b) = store.begin(&req, later).await.unwrap() else {
        panic!("an expired lease is taken over")
    };
    assert!(b.took_over);
    let answer = |body: &'static str| StoredResponse {
        status: StatusCode::CREATED,
        headers: HeaderMap::new(),
        body: Bytes::from_static(body.as_bytes()),
        replayable: true,
    };
    assert!(!store.complete(&a, &answer("late"), later).await.unwrap());
    assert!(!store.release(&a).await.unwrap());
    assert!(store.complete(&b, &answer("owner"), later).await.unwrap());
    let record = store.get(&scope).await.unwrap().unwrap();
    assert_eq!(record.state, RecordState::Completed);
    assert_eq!(record.response.unwrap().body, "owner");
    // A different fingerprint never takes over a dead request's record.
    let other = Fingerprint::builder().method("POST").body(b"y").finish();
    let scope2 = Scope {
        key: ClientKey::new("k-fence-2").unwrap(),
        ..scope.clone()
    };
    let r2 = BeginRequest {
        scope: &scope2,
        ..req.clone()
    };
    assert!(matches!(
        store.begin(&r2, t0).await.unwrap(),
        Begin::Started(_)
    ));
    let r3 = BeginRequest {
        fingerprint: &other,
        ..r2
    };
    assert!(matches!(
        store.begin(&r3, later).await.unwrap(),
        Begin::Existing(_)
    ));
}

async fn sweeper_removes_old_rows_and_keeps_recent<S: InboundStore + Clone>(store: S) {
    let app = app(store.clone(), default_cfg(), Duration::ZERO, vec![]);
    for k in ["old-1", "old-2", "old-3"] {
        post_key(&app, k, "alice", "x").await;
    }
    app.clock.advance(Duration::from_secs(8 * 24 * 3600));
    post_key(&app, "new-1", "alice", "x").await;
    let sweeper = Sweeper::new(store.clone())
        .clock(Arc::new(app.clock.clone()))
        .batch_size(2)
        .build()
        .unwrap();
    let report = sweeper.run_once().await.unwrap();
    assert_eq!(report.deleted, 3);
    assert_eq!(report.batches, 2);
    let scope = |k: &str| Scope {
        actor: "alice".into(),
        endpoint: "create-order".into(),
        key: ClientKey::new(k).unwrap(),
    };
    for k in ["old-1", "old-2", "old-3"] {
        assert!(store.get(&scope(k)).await.unwrap().is_none(), "{k} swept");
    }
    assert!(
        store.get(&scope("new-1")).await.unwrap().is_some(),
        "recent kept"
    );
    let runs = store.sweep_runs(10).await.unwrap();
    assert_eq!(runs.len(), 1, "one audit row per run");
    assert_eq!(runs[0].deleted, 3);
    assert_eq!(runs[0].batches, 2);
    // A second run finds nothing and still writes its row.
    assert_eq!(sweeper.run_once().await.unwrap().deleted, 0);
    assert_eq!(store.sweep_runs(10).await.unwrap().len(), 2);
    // A replay of the recent key still works after the sweep.
    assert!(post_key(&app, "new-1", "alice", "x").await.replayed());
}

async fn store_outage_gives_503_without_running<S, F, Fut>(store: S, break_store: F)
where
    S: InboundStore + Clone,
    F: FnOnce(S) -> Fut,
    Fut: Future<Output = ()>,
{
    let app = app(store.clone(), default_cfg(), Duration::ZERO, vec![]);
    break_store(store).await;
    let a = post_key(&app, "k-down", "alice", "x").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        a.problem_type(),
        "urn:idem:problem:idempotency-store-unavailable"
    );
    assert_eq!(a.headers["idempotency-key"], "k-down");
    assert_eq!(app.calls.load(Ordering::SeqCst), 0, "the handler never ran");
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (store, _dir) = idem::testing::sqlite_store().await;
                    super::$name(store).await;
                }
            )*

            #[tokio::test]
            async fn store_outage_gives_503() {
                let (store, _dir) = idem::testing::sqlite_store().await;
                super::store_outage_gives_503_without_running(store, |s| async move {
                    s.pool().close().await
                })
                .await;
            }
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(store) = idem::testing::pg_store(stringify!($name)).await else {
                        return;
                    };
                    super::$name(store).await;
                }
            )*

            #[tokio::test]
            async fn store_outage_gives_503() {
                let Some(store) = idem::testing::pg_store("store_outage").await else {
                    return;
                };
                super::store_outage_gives_503_without_running(store, |s| async move {
                    s.pool().close().await
                })
                .await;
            }
        }
    };
}

suite!(
    duplicate_post_replays_identically,
    hundred_concurrent_posts_one_side_effect,
    concurrent_posts_wait_and_replay,
    conflicting_body_gets_409,
    conflicting_body_gets_422_when_configured,
    race_loser_fingerprint_is_checked,
    other_user_gets_fresh_execution,
    expired_key_executes_anew,
    crashed_request_is_retryable_after_lease,
    panic_releases_the_record,
    server_errors_are_not_stored_client_errors_are,
    oversized_answer_is_not_replayed_nor_rerun,
    oversized_request_is_refused,
    malformed_headers_get_400,
    missing_key_policies,
    lease_fencing_refuses_a_late_completion,
    sweeper_removes_old_rows_and_keeps_recent,
);
