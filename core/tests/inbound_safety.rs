//! Inbound safety through axum's `oneshot`, on SQLite and PostgreSQL: no
//! actor means 401 (never a shared scope), rejections made before the
//! handler ran are not stored, a wrong method does not use up a key, the
//! fingerprint (raw or canonical JSON), the key echo, and the lease
//! heartbeat with an honest `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request as AxumRequest};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use idem::inbound::{
    Actor, BodyFingerprint, ClientKey, EndpointConfig, EndpointConfigBuilder, IdempotencyLayer,
    InboundStore, Rejection, with_idempotency,
};
use serde_json::{Value, json};
use tower::ServiceExt;

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
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    fn problem_type(&self) -> String {
        assert_eq!(self.headers["content-type"], "application/problem+json");
        self.json()["type"].as_str().unwrap().to_owned()
    }
    fn retry_after(&self) -> u64 {
        self.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
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

/// `user` is sent as `x-user` when given.
fn req(
    method: Method,
    key: &[u8],
    user: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> Request<Body> {
    let mut b = Request::builder().method(method).uri("/orders").header(
        "idempotency-key",
        http::HeaderValue::from_bytes(key).unwrap(),
    );
    if let Some(u) = user {
        b = b.header("x-user", u);
    }
    for (n, v) in headers {
        b = b.header(*n, *v);
    }
    b.body(Body::from(body.to_owned())).unwrap()
}

const JSON: (&str, &str) = ("content-type", "application/json");

fn layer<S: InboundStore>(store: S, cfg: EndpointConfigBuilder) -> IdempotencyLayer<S> {
    IdempotencyLayer::new(store, cfg.build().unwrap())
        .actor_from(|parts| parts.headers.get("x-user")?.to_str().ok().map(Actor::new))
}

/// A JSON extractor whose rejections are marked [`Rejection`].
struct MarkedJson;

impl<S: Send + Sync> FromRequest<S> for MarkedJson {
    type Rejection = Response;

    async fn from_request(req: AxumRequest, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<Value>::from_request(req, state).await {
            Ok(Json(_)) => Ok(Self),
            Err(e) => {
                let e: JsonRejection = e;
                Err((Extension(Rejection), e).into_response())
            }
        }
    }
}

/// `POST /orders` that takes JSON (axum's own extractor) and counts its
/// runs, behind `route_layer`.
fn json_app<S: InboundStore>(store: S, cfg: EndpointConfigBuilder) -> (Router, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let handler = move |Json(body): Json<Value>| {
        let c = Arc::clone(&c);
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            (StatusCode::CREATED, Json(json!({ "n": n, "body": body })))
        }
    };
    let router = Router::new().route("/orders", post(handler).route_layer(layer(store, cfg)));
    (router, calls)
}

// ---- 1. no actor, no shared scope ------------------------------------------

async fn no_actor_is_refused_never_shared<S: InboundStore + Clone>(store: S) {
    let (app, calls) = json_app(store.clone(), EndpointConfig::builder("orders"));
    let a = send(
        &app,
        req(Method::POST, b"k1", Some("alice"), &[JSON], r#"{"x":1}"#),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    for user in [None, Some("")] {
        let b = send(&app, req(Method::POST, b"k1", user, &[JSON], r#"{"x":1}"#)).await;
        assert_eq!(b.status, StatusCode::UNAUTHORIZED, "{user:?}");
        assert_eq!(b.problem_type(), "urn:idem:problem:actor-missing");
        assert!(
            !b.body.windows(2).any(|w| w == b"\"n"),
            "never alice's answer"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Two anonymous callers: refused too, so neither gets the other's answer.
    let c = send(&app, req(Method::POST, b"anon", None, &[JSON], "{}")).await;
    assert_eq!(c.status, StatusCode::UNAUTHORIZED);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler never ran");

    // The 401 carries the configured challenge.
    let (app, _) = json_app(
        store.clone(),
        EndpointConfig::builder("orders-challenge")
            .www_authenticate(http::HeaderValue::from_static("Bearer")),
    );
    let d = send(&app, req(Method::POST, b"k1", None, &[JSON], "{}")).await;
    assert_eq!(d.status, StatusCode::UNAUTHORIZED);
    assert_eq!(d.headers["www-authenticate"], "Bearer");

    // `with_idempotency` without an actor extension: also 401.
    let config = EndpointConfig::builder("fn").build().unwrap();
    let r = with_idempotency(
        &store,
        &config,
        Request::post("/x")
            .header("idempotency-key", "k1")
            .body(Full::new(Bytes::new()))
            .unwrap(),
        |_req: Request<Bytes>| async { http::Response::new(Full::new(Bytes::new())) },
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // An endpoint that opts into the shared anonymous scope shares it, as
    // documented.
    let (app, calls) = json_app(
        store,
        EndpointConfig::builder("public").shared_anonymous_scope(),
    );
    let e = send(&app, req(Method::POST, b"k1", None, &[JSON], "{}")).await;
    let f = send(&app, req(Method::POST, b"k1", None, &[JSON], "{}")).await;
    assert_eq!(e.status, StatusCode::CREATED);
    assert!(f.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---- 2. content type in the fingerprint; rejections not stored ------------

async fn rejections_before_the_handler_are_not_stored<S: InboundStore + Clone>(store: S) {
    let (app, calls) = json_app(store.clone(), EndpointConfig::builder("orders"));
    let body = r#"{"item":"bike"}"#;
    // No Content-Type: axum's Json refuses with 415 before the handler.
    let a = send(&app, req(Method::POST, b"k2", Some("alice"), &[], body)).await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // The client fixes the header and retries with the same key and body.
    let b = send(&app, req(Method::POST, b"k2", Some("alice"), &[JSON], body)).await;
    assert_eq!(b.status, StatusCode::CREATED, "{b:?}");
    assert!(!b.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Another media type or encoding with the same key is another request.
    let charset = ("content-type", "application/json; charset=utf-8");
    let encoding = ("content-encoding", "identity");
    for other in [&[charset][..], &[JSON, encoding]] {
        let c = send(&app, req(Method::POST, b"k2", Some("alice"), other, body)).await;
        assert_eq!(c.status, StatusCode::CONFLICT, "{other:?}");
        assert_eq!(c.problem_type(), "urn:idem:problem:idempotency-key-reused");
    }

    // A rejection marked by the route (a JSON syntax error here) is not
    // stored either: the corrected retry runs.
    let calls2 = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&calls2);
    let handler = move |_: MarkedJson| {
        let c2 = Arc::clone(&c2);
        async move {
            c2.fetch_add(1, Ordering::SeqCst);
            StatusCode::CREATED
        }
    };
    let marked = Router::new().route(
        "/orders",
        post(handler).route_layer(layer(store.clone(), EndpointConfig::builder("marked"))),
    );
    let d = send(
        &marked,
        req(Method::POST, b"k3", Some("alice"), &[JSON], "{"),
    )
    .await;
    assert_eq!(d.status, StatusCode::BAD_REQUEST);
    let e = send(
        &marked,
        req(Method::POST, b"k3", Some("alice"), &[JSON], "{"),
    )
    .await;
    assert!(!e.replayed(), "a marked rejection is not replayed");
    assert_eq!(calls2.load(Ordering::SeqCst), 0);

    // Storing rejections is a setting.
    let (app, _) = json_app(
        store,
        EndpointConfig::builder("orders-store-rejections").store_rejections(true),
    );
    let f = send(&app, req(Method::POST, b"k4", Some("alice"), &[], body)).await;
    assert_eq!(f.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let g = send(&app, req(Method::POST, b"k4", Some("alice"), &[], body)).await;
    assert_eq!(g.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(g.replayed());
}

// ---- 3. a wrong method does not burn the key -------------------------------

async fn wrong_method_does_not_burn_the_key<S: InboundStore + Clone>(store: S) {
    let (app, calls) = json_app(store.clone(), EndpointConfig::builder("orders"));
    for m in [
        Method::PUT,
        Method::DELETE,
        Method::from_bytes(b"QUERY").unwrap(),
    ] {
        let a = send(&app, req(m.clone(), b"k5", Some("alice"), &[JSON], "{}")).await;
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{m}");
    }
    let b = send(&app, req(Method::POST, b"k5", Some("alice"), &[JSON], "{}")).await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert!(!b.replayed());

    // Even applied with `layer` (wrapping the 405 fallback), an unprotected
    // method passes through and the key stays free.
    let wrapped = Router::new().route(
        "/orders",
        post(|| async { StatusCode::CREATED })
            .put(|| async { StatusCode::OK })
            .layer(layer(store.clone(), EndpointConfig::builder("wrapped"))),
    );
    for _ in 0..2 {
        let c = send(&wrapped, req(Method::PATCH, b"k6", Some("alice"), &[], "")).await;
        assert_eq!(c.status, StatusCode::METHOD_NOT_ALLOWED);
        let d = send(&wrapped, req(Method::PUT, b"k6", Some("alice"), &[], "")).await;
        assert_eq!(d.status, StatusCode::OK);
        assert!(!d.replayed(), "PUT is not protected by default");
    }
    let e = send(&wrapped, req(Method::POST, b"k6", Some("alice"), &[], "")).await;
    assert_eq!(e.status, StatusCode::CREATED);
    assert!(!e.replayed());
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // Protecting PUT is a setting.
    let put = Router::new().route(
        "/orders",
        axum::routing::put(|| async { StatusCode::OK }).route_layer(layer(
            store,
            EndpointConfig::builder("put").methods([Method::PUT]),
        )),
    );
    send(&put, req(Method::PUT, b"k7", Some("alice"), &[], "")).await;
    let f = send(&put, req(Method::PUT, b"k7", Some("alice"), &[], "")).await;
    assert!(f.replayed());
}

// ---- 5. raw or canonical JSON ----------------------------------------------

async fn fingerprint_raw_or_canonical_json<S: InboundStore + Clone>(store: S) {
    let first = r#"{"item":"bike","qty":1}"#;
    let same_json = [
        "{\"qty\":1,\"item\":\"bike\"}",
        "{ \"item\": \"bike\", \"qty\": 1.0 }\n",
    ];
    let (raw, _) = json_app(store.clone(), EndpointConfig::builder("raw"));
    assert_eq!(
        send(
            &raw,
            req(Method::POST, b"k8", Some("alice"), &[JSON], first)
        )
        .await
        .status,
        StatusCode::CREATED
    );
    for body in same_json {
        let a = send(&raw, req(Method::POST, b"k8", Some("alice"), &[JSON], body)).await;
        assert_eq!(a.status, StatusCode::CONFLICT, "raw bytes differ: {body}");
    }
    let (jcs, calls) = json_app(
        store,
        EndpointConfig::builder("jcs").body_fingerprint(BodyFingerprint::CanonicalJson),
    );
    let b = send(
        &jcs,
        req(Method::POST, b"k8", Some("alice"), &[JSON], first),
    )
    .await;
    assert_eq!(b.status, StatusCode::CREATED);
    for body in same_json {
        let c = send(&jcs, req(Method::POST, b"k8", Some("alice"), &[JSON], body)).await;
        assert!(c.replayed(), "canonically equal: {body}");
        assert_eq!(c.body, b.body);
    }
    let d = send(
        &jcs,
        req(
            Method::POST,
            b"k8",
            Some("alice"),
            &[JSON],
            r#"{"item":"car","qty":1}"#,
        ),
    )
    .await;
    assert_eq!(d.status, StatusCode::CONFLICT);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

// ---- 6. the key echo and sf parameters -------------------------------------

async fn key_echo_is_valid_and_parameters_ignored<S: InboundStore + Clone>(store: S) {
    let (app, calls) = json_app(store, EndpointConfig::builder("echo"));
    let a = send(
        &app,
        req(Method::POST, br#""a\"b""#, Some("alice"), &[JSON], "{}"),
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert_eq!(a.headers["idempotency-key"], r#""a\"b""#);
    assert_eq!(
        ClientKey::parse(&a.headers["idempotency-key"])
            .unwrap()
            .as_str(),
        "a\"b"
    );
    let b = send(
        &app,
        req(Method::POST, br#""k";x=1;y"#, Some("alice"), &[JSON], "{}"),
    )
    .await;
    assert_eq!(b.status, StatusCode::CREATED);
    assert_eq!(b.headers["idempotency-key"], "k");
    let c = send(&app, req(Method::POST, b"k", Some("alice"), &[JSON], "{}")).await;
    assert!(c.replayed(), "the same key without parameters");
    let d = send(
        &app,
        req(Method::POST, b"8e03978e", Some("alice"), &[JSON], "{}"),
    )
    .await;
    assert_eq!(
        d.headers["idempotency-key"], "\"8e03978e\"",
        "not a token: quoted"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

// ---- 7. heartbeat and Retry-After ------------------------------------------

/// A handler that sleeps `run` before answering, counting its starts.
fn slow_app<S: InboundStore>(
    store: S,
    cfg: EndpointConfigBuilder,
    run: Duration,
) -> (Router, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let handler = move || {
        let c = Arc::clone(&c);
        async move {
            let n = c.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 {
                tokio::time::sleep(run).await;
            }
            (StatusCode::CREATED, Json(json!({ "n": n })))
        }
    };
    let router = Router::new().route("/orders", post(handler).route_layer(layer(store, cfg)));
    (router, calls)
}

/// Waits until the handler has started `n` times.
async fn started(calls: &AtomicUsize, n: usize) {
    for _ in 0..500 {
        if calls.load(Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the handler did not start");
}

fn short_lease(name: &str) -> EndpointConfigBuilder {
    EndpointConfig::builder(name.to_owned())
        .lease(Duration::from_secs(1))
        .heartbeat(Duration::from_millis(200))
}

async fn long_handler_keeps_its_key<S: InboundStore + Clone>(store: S) {
    // The handler runs three leases long.
    let (app, calls) = slow_app(store, short_lease("long"), Duration::from_secs(3));
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, req(Method::POST, b"k9", Some("alice"), &[], "")).await }
    });
    started(&calls, 1).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let dup = send(&app, req(Method::POST, b"k9", Some("alice"), &[], "")).await;
        assert_eq!(dup.status, StatusCode::CONFLICT, "{dup:?}");
        assert_eq!(
            dup.problem_type(),
            "urn:idem:problem:idempotency-key-in-flight"
        );
        assert_eq!(
            dup.retry_after(),
            1,
            "the lease left, rounded up: at most 1 s"
        );
    }
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let again = send(&app, req(Method::POST, b"k9", Some("alice"), &[], "")).await;
    assert!(again.replayed());
    assert_eq!(again.body, first.body);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "never taken over");
}

async fn crashed_holder_frees_the_key_within_the_lease<S: InboundStore + Clone>(store: S) {
    let (app, calls) = slow_app(store, short_lease("crash"), Duration::from_secs(3600));
    let holder = tokio::spawn({
        let app = app.clone();
        async move { send(&app, req(Method::POST, b"k10", Some("alice"), &[], "")).await }
    });
    started(&calls, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The holder dies: its future is dropped, its heartbeat stops, nothing
    // is written.
    holder.abort();
    let _ = holder.await;
    let dup = send(&app, req(Method::POST, b"k10", Some("alice"), &[], "")).await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    assert!(dup.retry_after() <= 1);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let retry = send(&app, req(Method::POST, b"k10", Some("alice"), &[], "")).await;
    assert_eq!(retry.status, StatusCode::CREATED, "{retry:?}");
    assert_eq!(retry.json()["n"], 2);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

async fn retry_after_is_the_lease_left<S: InboundStore + Clone>(store: S) {
    let cfg = EndpointConfig::builder("ra")
        .lease(Duration::from_secs(4))
        .heartbeat(Duration::from_secs(1));
    let (app, calls) = slow_app(store, cfg, Duration::from_secs(2));
    let first = tokio::spawn({
        let app = app.clone();
        async move { send(&app, req(Method::POST, b"k11", Some("alice"), &[], "")).await }
    });
    started(&calls, 1).await;
    let dup = send(&app, req(Method::POST, b"k11", Some("alice"), &[], "")).await;
    let ra = dup.retry_after();
    assert!((1..=4).contains(&ra), "{ra}");
    assert_eq!(dup.json()["retry_after"], ra);
    assert_eq!(first.await.unwrap().status, StatusCode::CREATED);
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
        }
    };
}

suite!(
    no_actor_is_refused_never_shared,
    rejections_before_the_handler_are_not_stored,
    wrong_method_does_not_burn_the_key,
    fingerprint_raw_or_canonical_json,
    key_echo_is_valid_and_parameters_ignored,
    long_handler_keeps_its_key,
    crashed_holder_frees_the_key_within_the_lease,
    retry_after_is_the_lease_left,
);
