//! An HTTP API protected by idem's inbound layer: three routes whose side
//! effects must happen once per client key, and an OpenAPI 3.1 document
//! that tells clients how to use `Idempotency-Key`.
//!
//! | route | side effect | replay window | while the first request runs |
//! | --- | --- | --- | --- |
//! | `POST /orders` | creates an order | 24 h | 409 + `Retry-After` |
//! | `POST /api-keys` | mints an API key | 5 min | 409 + `Retry-After` |
//! | `POST /deployments` | starts a deployment | 24 h | waits up to 2 s, then replays |
//!
//! The caller is identified by `Authorization: Bearer <user>` (a stand-in
//! for real authentication; the scheme is matched case-insensitively, as
//! RFC 9110 says); records are scoped per user, so one user's key never
//! returns another user's answer. A request without a usable Bearer
//! identity gets 401, never another caller's answer.
//!
//! Every error the application serves is `application/problem+json`: the
//! layer's own refusals, the JSON extractor's rejections (400 syntax, 415
//! media type, 422 shape; marked [`Rejection`] so they are not stored), and
//! the 404 and 405 fallbacks (405 keeps its `Allow` header). The one
//! exception is below the application: hyper refuses a request whose head
//! it cannot parse (a control character in a header value, for example)
//! with a bare `400 Bad Request` with an empty body and closes the
//! connection, before any router code runs.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! let store = idem::ledger::SqliteStore::open("inbound.db").await?;
//! let app = idem_examples::inbound::app(store, Arc::default())?;
//! # let _ = app; Ok(()) }
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use idem::inbound::{
    Actor, ConfigError, EndpointConfig, IdempotencyLayer, InFlightPolicy, InboundStore,
    PROBLEM_JSON, Rejection, openapi as idem_openapi,
};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

/// Side effects performed, so tests can assert "exactly one".
#[derive(Debug, Default)]
pub struct Counters {
    /// Orders created.
    pub orders: AtomicU64,
    /// API keys minted.
    pub api_keys: AtomicU64,
    /// Deployments started.
    pub deployments: AtomicU64,
}

/// The in-flight lease of every endpoint: renewed every second while a
/// handler runs, so a killed server frees its keys within 3 s.
pub const LEASE: Duration = Duration::from_secs(3);

/// The three endpoint configurations.
///
/// # Errors
///
/// Never with these values; [`ConfigError`] if they are edited out of range.
pub fn endpoints() -> Result<[EndpointConfig; 3], ConfigError> {
    let base = |name: &str| {
        EndpointConfig::builder(name.to_owned())
            .lease(LEASE)
            .heartbeat(Duration::from_secs(1))
            .www_authenticate(HeaderValue::from_static("Bearer"))
    };
    Ok([
        base("create-order").build()?,
        base("create-api-key")
            .ttl(Duration::from_secs(5 * 60))
            .build()?,
        base("create-deployment")
            .in_flight(InFlightPolicy::Wait(Duration::from_secs(2)))
            .build()?,
    ])
}

/// The longest accepted user name.
pub const MAX_USER_LEN: usize = 64;

/// The caller from `Authorization: Bearer <user>`: the scheme in any case
/// (RFC 9110), the user 1 to 64 lowercase letters, digits, `.`, `_` or `-`,
/// starting with a letter or digit. This stand-in has no user database:
/// every user name of that form is a valid identity, and any other
/// credential (another scheme, an empty or malformed user) is invalid and
/// gets 401.
pub fn actor(parts: &axum::http::request::Parts) -> Option<Actor> {
    let auth = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, user) = auth.trim().split_once([' ', '\t'])?;
    let user = user.trim();
    let valid = (1..=MAX_USER_LEN).contains(&user.len())
        && user
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && user.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    (scheme.eq_ignore_ascii_case("bearer") && valid).then(|| Actor::new(user))
}

/// An `application/problem+json` answer of the application itself.
fn problem(status: StatusCode, kind: &str, title: &str, detail: &str) -> Response {
    let body = json!({
        "type": format!("urn:idem-example:problem:{kind}"),
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
        body.to_string(),
    )
        .into_response()
}

/// axum's `Json`, whose rejections are problem+json and marked
/// [`Rejection`] (the handler did not run, so the layer does not store
/// them and a corrected retry with the same key runs).
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(e) => {
                let (kind, title) = match &e {
                    JsonRejection::MissingJsonContentType(_) => (
                        "unsupported-media-type",
                        "Send the body as application/json",
                    ),
                    JsonRejection::JsonSyntaxError(_) => {
                        ("json-syntax", "The body is not valid JSON")
                    }
                    JsonRejection::JsonDataError(_) => {
                        ("json-shape", "The body does not have the documented shape")
                    }
                    _ => ("body-unreadable", "The body could not be read"),
                };
                let detail = e.body_text();
                let r = problem(e.status(), kind, title, &detail);
                Err((Extension(Rejection), r).into_response())
            }
        }
    }
}

fn some_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// `POST /orders` body.
#[derive(Debug, Deserialize)]
pub struct NewOrder {
    /// What is ordered.
    #[serde(default, deserialize_with = "some_string")]
    pub item: Option<String>,
}

/// `POST /deployments` body.
#[derive(Debug, Deserialize)]
pub struct NewDeployment {
    /// Which service to deploy.
    #[serde(default, deserialize_with = "some_string")]
    pub service: Option<String>,
}

/// The application: the three protected routes, `GET /stats` and
/// `GET /openapi.json`. Each layer is applied with `route_layer`, so a 404
/// or 405 never reaches it, and protects `POST` only.
///
/// # Errors
///
/// [`ConfigError`] from [`endpoints`].
pub fn app<S: InboundStore>(store: S, counters: Arc<Counters>) -> Result<Router, ConfigError> {
    let store = Arc::new(store);
    let doc = Arc::new(openapi()?);
    let [orders, api_keys, deployments] = endpoints()?;
    let protect = |config| IdempotencyLayer::shared(Arc::clone(&store), config).actor_from(actor);
    Ok(Router::new()
        .route("/orders", post(create_order).route_layer(protect(orders)))
        .route(
            "/api-keys",
            post(create_api_key).route_layer(protect(api_keys)),
        )
        .route(
            "/deployments",
            post(create_deployment).route_layer(protect(deployments)),
        )
        .route("/stats", get(stats))
        .route(
            "/openapi.json",
            get(move || {
                let doc = Arc::clone(&doc);
                async move { Json((*doc).clone()) }
            }),
        )
        .fallback(|| async {
            problem(
                StatusCode::NOT_FOUND,
                "not-found",
                "No such resource",
                "See /openapi.json for the routes.",
            )
        })
        .method_not_allowed_fallback(|| async {
            problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "Method not allowed",
                "The Allow header lists the methods of this resource.",
            )
        })
        .with_state(counters))
}

async fn create_order(
    State(c): State<Arc<Counters>>,
    ApiJson(body): ApiJson<NewOrder>,
) -> impl IntoResponse {
    let id = c.orders.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{id}"))],
        Json(json!({ "id": id, "item": body.item })),
    )
}

async fn create_api_key(
    State(c): State<Arc<Counters>>,
    ApiJson(_): ApiJson<Map<String, Value>>,
) -> impl IntoResponse {
    let id = c.api_keys.fetch_add(1, Ordering::SeqCst) + 1;
    // A replay within 5 minutes returns this same key, never a second one.
    let secret = format!("sk_example_{}", uuid::Uuid::new_v4().simple());
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/api-keys/{id}"))],
        Json(json!({ "id": id, "secret": secret })),
    )
}

async fn create_deployment(
    State(c): State<Arc<Counters>>,
    ApiJson(body): ApiJson<NewDeployment>,
) -> impl IntoResponse {
    // Deployments take a moment: a double-click waits for this answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = c.deployments.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/deployments/{id}"))],
        Json(json!({ "id": id, "service": body.service, "state": "starting" })),
    )
}

async fn stats(State(c): State<Arc<Counters>>) -> Json<Value> {
    Json(json!({
        "orders": c.orders.load(Ordering::SeqCst),
        "api_keys": c.api_keys.load(Ordering::SeqCst),
        "deployments": c.deployments.load(Ordering::SeqCst),
    }))
}

/// The OpenAPI 3.1 document served at `/openapi.json`. Its idempotency
/// parts (the key parameter, the headers, the problem schema and the
/// layer's refusals) come from [`idem::inbound::openapi`], for the same
/// [`endpoints`] the routes use.
///
/// # Errors
///
/// [`ConfigError`] from [`endpoints`].
pub fn openapi() -> Result<Value, ConfigError> {
    let [orders, api_keys, deployments] = endpoints()?;
    let app_problem = |description: &str| idem_openapi::problem_response(description, false);
    let operation = |summary: &str,
                     created: &str,
                     request: Value,
                     response: Value,
                     ok: &str,
                     config: &EndpointConfig| {
        let mut op = json!({
            "summary": summary,
            "parameters": [ { "$ref": "#/components/parameters/Prefer" } ],
            "requestBody": { "required": true, "content": { "application/json": { "schema": request } } },
            "responses": {
                ok: {
                    "description": format!("{created}. A retry with the same key and body gets this same answer with `Idempotent-Replayed: true`."),
                    "headers": { "Location": { "schema": { "type": "string" } } },
                    "content": { "application/json": { "schema": response } }
                },
                "415": app_problem("The body is not declared as `application/json` (Content-Type). Not stored: the corrected retry with the same key runs."),
                "422": app_problem("The body is JSON but not of the documented shape. Not stored.")
            }
        });
        idem_openapi::document_operation(&mut op, config);
        if let Some(d) = op["responses"]["400"]["description"].as_str() {
            op["responses"]["400"]["description"] =
                format!("{d} Also: the body is not valid JSON (not stored).").into();
        }
        op["responses"]["401"]["headers"]["WWW-Authenticate"] =
            json!({ "description": "`Bearer`", "schema": { "type": "string" } });
        op
    };
    let mut components = idem_openapi::components();
    components["securitySchemes"] = json!({ "bearer": {
        "type": "http", "scheme": "bearer", "bearerFormat": "user name",
        "description": "A stand-in for real authentication: `Authorization: Bearer <user>`, the scheme in any case, the user 1 to 64 lowercase letters, digits, `.`, `_` or `-`, starting with a letter or digit. Any other credential is refused with 401."
    } });
    components["parameters"]["Prefer"] = json!({
        "name": "Prefer", "in": "header", "required": false,
        "description": "`wait=N` (RFC 7240): on endpoints that wait for an in-flight duplicate, wait at most N seconds (capped by the server's bound).",
        "schema": { "type": "string" }, "example": "wait=1"
    });
    let string = json!({ "type": "string" });
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "idem inbound example",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every POST requires an Idempotency-Key header and a Bearer identity. Send the same key when you retry the same request; send a new key for a new request. Keys are scoped to the authenticated user and endpoint. Bodies are compared byte for byte. Every error is application/problem+json, except hyper's bare 400 for a request head it cannot parse."
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/orders": { "post": operation("Create an order", "Order created",
                json!({ "type": "object", "properties": { "item": string } }),
                json!({ "type": "object", "required": ["id"], "properties": { "id": { "type": "integer" }, "item": { "type": ["string", "null"] } } }),
                "201", &orders) },
            "/api-keys": { "post": operation("Create an API key", "Key created; replayed for 5 minutes",
                json!({ "type": "object" }),
                json!({ "type": "object", "required": ["id", "secret"], "properties": { "id": { "type": "integer" }, "secret": string } }),
                "201", &api_keys) },
            "/deployments": { "post": operation("Create a deployment", "Deployment accepted; a concurrent duplicate waits up to 2 s for this answer",
                json!({ "type": "object", "properties": { "service": string } }),
                json!({ "type": "object", "required": ["id", "state"], "properties": { "id": { "type": "integer" }, "service": { "type": ["string", "null"] }, "state": string } }),
                "202", &deployments) }
        },
        "components": components
    }))
}
