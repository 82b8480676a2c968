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
//! for real authentication); records are scoped per user, so one user's key
//! never returns another user's answer.
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

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use idem::inbound::{
    Actor, ConfigError, EndpointConfig, IdempotencyLayer, InFlightPolicy, InboundStore,
};
use serde_json::{Value, json};

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

/// The three endpoint configurations.
///
/// # Errors
///
/// Never with these values; [`ConfigError`] if they are edited out of range.
pub fn endpoints() -> Result<[EndpointConfig; 3], ConfigError> {
    Ok([
        EndpointConfig::builder("create-order").build()?,
        EndpointConfig::builder("create-api-key")
            .ttl(Duration::from_secs(5 * 60))
            .build()?,
        EndpointConfig::builder("create-deployment")
            .in_flight(InFlightPolicy::Wait(Duration::from_secs(2)))
            .build()?,
    ])
}

fn actor(parts: &axum::http::request::Parts) -> Option<Actor> {
    let auth = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    auth.strip_prefix("Bearer ")
        .map(|user| Actor::new(user.trim()))
}

/// The application: the three protected routes, `GET /stats` and
/// `GET /openapi.json`.
///
/// # Errors
///
/// [`ConfigError`] from [`endpoints`].
pub fn app<S: InboundStore>(store: S, counters: Arc<Counters>) -> Result<Router, ConfigError> {
    let store = Arc::new(store);
    let [orders, api_keys, deployments] = endpoints()?;
    let protect = |config| IdempotencyLayer::shared(Arc::clone(&store), config).actor_from(actor);
    Ok(Router::new()
        .route("/orders", post(create_order).layer(protect(orders)))
        .route("/api-keys", post(create_api_key).layer(protect(api_keys)))
        .route(
            "/deployments",
            post(create_deployment).layer(protect(deployments)),
        )
        .route("/stats", get(stats))
        .route("/openapi.json", get(|| async { Json(openapi()) }))
        .with_state(counters))
}

async fn create_order(
    State(c): State<Arc<Counters>>,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    let id = c.orders.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/orders/{id}"))],
        Json(json!({ "id": id, "item": body.get("item") })),
    )
}

async fn create_api_key(State(c): State<Arc<Counters>>) -> impl IntoResponse {
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
    Json(body): Json<Value>,
) -> impl IntoResponse {
    // Deployments take a moment: a double-click waits for this answer.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let id = c.deployments.fetch_add(1, Ordering::SeqCst) + 1;
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, format!("/deployments/{id}"))],
        Json(json!({ "id": id, "service": body.get("service"), "state": "starting" })),
    )
}

async fn stats(State(c): State<Arc<Counters>>) -> Json<Value> {
    Json(json!({
        "orders": c.orders.load(Ordering::SeqCst),
        "api_keys": c.api_keys.load(Ordering::SeqCst),
        "deployments": c.deployments.load(Ordering::SeqCst),
    }))
}

/// The OpenAPI 3.1 document served at `/openapi.json`.
pub fn openapi() -> Value {
    let problem = |description: &str| {
        json!({
            "description": description,
            "headers": { "Idempotency-Key": { "$ref": "#/components/headers/Idempotency-Key" } },
            "content": { "application/problem+json": {
                "schema": { "$ref": "#/components/schemas/Problem" } } }
        })
    };
    let operation = |summary: &str, created: &str, request: Value, ok: &str| {
        json!({
            "summary": summary,
            "parameters": [
                { "$ref": "#/components/parameters/Idempotency-Key" },
                { "$ref": "#/components/parameters/Prefer" }
            ],
            "requestBody": { "required": true, "content": { "application/json": { "schema": request } } },
            "responses": {
                ok: {
                    "description": format!("{created}. A retry with the same key and body gets this same answer with `Idempotent-Replayed: true`."),
                    "headers": {
                        "Idempotency-Key": { "$ref": "#/components/headers/Idempotency-Key" },
                        "Idempotency-Key-Expires": { "$ref": "#/components/headers/Idempotency-Key-Expires" },
                        "Idempotent-Replayed": { "$ref": "#/components/headers/Idempotent-Replayed" },
                        "Location": { "schema": { "type": "string" } }
                    },
                    "content": { "application/json": { "schema": { "type": "object" } } }
                },
                "400": { "$ref": "#/components/responses/KeyInvalid" },
                "409": { "$ref": "#/components/responses/KeyConflict" },
                "413": { "$ref": "#/components/responses/TooLarge" },
                "422": { "$ref": "#/components/responses/KeyReused" },
                "503": { "$ref": "#/components/responses/StoreUnavailable" }
            }
        })
    };
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "idem inbound example",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every POST requires an Idempotency-Key header. Send the same key when you retry the same request; send a new key for a new request. Keys are scoped to the authenticated user and endpoint."
        },
        "security": [ { "bearer": [] } ],
        "paths": {
            "/orders": { "post": operation("Create an order", "Order created", json!({ "type": "object", "properties": { "item": { "type": "string" } } }), "201") },
            "/api-keys": { "post": operation("Create an API key", "Key created; replayed for 5 minutes", json!({ "type": "object" }), "201") },
            "/deployments": { "post": operation("Create a deployment", "Deployment accepted; a concurrent duplicate waits up to 2 s for this answer", json!({ "type": "object", "properties": { "service": { "type": "string" } } }), "202") }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "parameters": {
                "Idempotency-Key": {
                    "name": "Idempotency-Key", "in": "header", "required": true,
                    "description": "A client-chosen key, 1 to 255 visible ASCII characters (a UUID is a good choice), sent bare or as a quoted Structured Field string (RFC 8941). Answers are replayed for the endpoint's replay window (24 h; 5 min for /api-keys).",
                    "schema": { "type": "string", "minLength": 1, "maxLength": 257 },
                    "example": "8e03978e-40d5-43e8-bc93-6894a57f9324"
                },
                "Prefer": {
                    "name": "Prefer", "in": "header", "required": false,
                    "description": "`wait=N` (RFC 7240): on endpoints that wait for an in-flight duplicate, wait at most N seconds (capped by the server's bound).",
                    "schema": { "type": "string" }, "example": "wait=1"
                }
            },
            "headers": {
                "Idempotency-Key": { "description": "The request's key, echoed.", "schema": { "type": "string" } },
                "Idempotency-Key-Expires": { "description": "When the key's replay window ends (HTTP date). After it, the same key starts a new request.", "schema": { "type": "string" } },
                "Idempotent-Replayed": { "description": "`true` when this is the stored answer of an earlier request.", "schema": { "type": "string", "enum": ["true"] } }
            },
            "responses": {
                "KeyInvalid": problem("The Idempotency-Key header is missing, empty, longer than 255 characters, not visible ASCII, malformed as a quoted string, or repeated."),
                "KeyConflict": problem("The key was already used with a different body (type urn:idem:problem:idempotency-key-reused), or the first request with it is still running (type urn:idem:problem:idempotency-key-in-flight, with Retry-After), or its answer was too large to store (urn:idem:problem:response-not-replayable)."),
                "KeyReused": problem("Servers configured for the IETF draft's semantics answer a reused key with 422 instead of 409."),
                "TooLarge": problem("The request body is over the size that can be protected."),
                "StoreUnavailable": problem("The idempotency store is unavailable; the request was not run. Retry later with the same key.")
            },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details.",
                    "required": ["type", "title", "status"],
                    "properties": {
                        "type": { "type": "string", "format": "uri" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "idempotency_key": { "type": "string" },
                        "idempotency_key_expires": { "type": "string", "format": "date-time" },
                        "retry_after": { "type": "integer" }
                    }
                }
            }
        }
    })
}
