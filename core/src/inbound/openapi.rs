//! The idempotency parts of an OpenAPI 3.1 document, from the same source as
//! the answers the wrapper serves: the `Idempotency-Key` parameter, the
//! response headers (`Idempotency-Key`, `Idempotency-Key-Expires`,
//! `Idempotent-Replayed`, `Retry-After`), the RFC 9457 problem schema whose
//! `type` values are those of [`ProblemKind`], and the refusals of one
//! endpoint (400, 401, 409, 413, 422 when configured, 503).
//!
//! The fragments are JSON values with `$ref`s into `#/components`; put
//! [`components`] there and call [`document_operation`] on each protected
//! operation. With the `utoipa` feature, [`utoipa`] gives the
//! same fragments as utoipa types.
//!
//! ```
//! use idem::inbound::{EndpointConfig, openapi};
//! use serde_json::json;
//!
//! let config = EndpointConfig::builder("create-order").build()?;
//! let mut op = json!({ "responses": { "201": { "description": "Created" } } });
//! openapi::document_operation(&mut op, &config);
//! assert_eq!(op["parameters"][0]["$ref"], "#/components/parameters/Idempotency-Key");
//! assert!(op["responses"]["401"].is_object() && op["responses"]["409"].is_object());
//! let components = openapi::components();
//! assert_eq!(components["parameters"]["Idempotency-Key"]["schema"]["maxLength"], 255);
//! # Ok::<(), idem::inbound::ConfigError>(())
//! ```

use http::StatusCode;
use serde_json::{Map, Value, json};

use super::header::MAX_CLIENT_KEY_LEN;
use super::{EndpointConfig, PROBLEM_JSON, ProblemKind};

/// The `Idempotency-Key` header's pattern: the bare form (visible ASCII, not
/// starting with a quote). The quoted form is described, not patterned.
pub const KEY_PATTERN: &str = "^[!#-~][!-~]*$";

/// The name of the problem schema in `#/components/schemas`.
pub const PROBLEM_SCHEMA: &str = "Problem";

fn header_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/headers/{name}") })
}

/// The `Idempotency-Key` request header parameter object.
pub fn key_parameter() -> Value {
    json!({
        "name": "Idempotency-Key",
        "in": "header",
        "required": true,
        "description": format!(
            "A client-chosen key, 1 to {MAX_CLIENT_KEY_LEN} visible ASCII characters (a UUID is a \
             good choice). Sent bare, or as an RFC 8941 sf-string (`\"...\"` with `\\\"` and `\\\\` \
             escapes, whose parameters such as `;x=1` are ignored). Send the same key when you \
             retry the same request, a new key for a new request. Keys are scoped to the caller \
             and the endpoint."
        ),
        "schema": {
            "type": "string",
            "minLength": 1,
            "maxLength": MAX_CLIENT_KEY_LEN,
            "pattern": KEY_PATTERN
        },
        "example": "8e03978e-40d5-43e8-bc93-6894a57f9324"
    })
}

/// The response header objects, by name.
pub fn headers() -> Value {
    json!({
        "Idempotency-Key": {
            "description": "The request's key, echoed as an RFC 8941 item: bare when it is an sf-token, otherwise an sf-string.",
            "schema": { "type": "string" }
        },
        "Idempotency-Key-Expires": {
            "description": "When the key's replay window ends (HTTP date). After it, the same key starts a new request.",
            "schema": { "type": "string" }
        },
        "Idempotent-Replayed": {
            "description": "`true` when this is the stored answer of an earlier request with this key.",
            "schema": { "type": "string", "enum": ["true"] }
        },
        "Retry-After": {
            "description": "Seconds to wait before retrying with the same key: on an in-flight conflict, the first request's lease time left (rounded up); on 503, 1.",
            "schema": { "type": "integer", "minimum": 1 }
        }
    })
}

/// The RFC 9457 problem schema. `type` lists the wrapper's own problem
/// types as examples; an application may add its own.
pub fn problem_schema() -> Value {
    let types: Vec<&str> = ProblemKind::all()
        .iter()
        .map(ProblemKind::type_uri)
        .collect();
    json!({
        "type": "object",
        "description": "RFC 9457 problem details.",
        "required": ["type", "title", "status"],
        "properties": {
            "type": { "type": "string", "format": "uri", "examples": types },
            "title": { "type": "string" },
            "status": { "type": "integer", "minimum": 100, "maximum": 599 },
            "detail": { "type": "string" },
            "idempotency_key": { "type": "string" },
            "idempotency_key_expires": { "type": "string", "format": "date-time" },
            "retry_after": { "type": "integer", "minimum": 1 }
        }
    })
}

/// A problem+json response object with `description`; `retry_after` adds
/// the `Retry-After` header.
pub fn problem_response(description: &str, retry_after: bool) -> Value {
    let mut headers = Map::new();
    headers.insert("Idempotency-Key".into(), header_ref("Idempotency-Key"));
    if retry_after {
        headers.insert("Retry-After".into(), header_ref("Retry-After"));
    }
    json!({
        "description": description,
        "headers": headers,
        "content": { PROBLEM_JSON: {
            "schema": { "$ref": format!("#/components/schemas/{PROBLEM_SCHEMA}") } } }
    })
}

fn kinds_with(status: StatusCode, config: &EndpointConfig) -> Vec<ProblemKind> {
    ProblemKind::all()
        .into_iter()
        .filter(|k| match k {
            ProblemKind::KeyReused { status } => *status == config.mismatch.status(),
            ProblemKind::ActorMissing => !config.anonymous,
            _ => true,
        })
        .filter(|k| k.status() == status)
        .collect()
}

/// The responses the wrapper itself serves for `config`, by status code:
/// each lists the problem types it may carry.
pub fn responses(config: &EndpointConfig) -> Value {
    let mut out = Map::new();
    for status in [400u16, 401, 409, 413, 422, 503] {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let kinds = kinds_with(status, config);
        if kinds.is_empty() {
            continue;
        }
        let list: Vec<String> = kinds
            .iter()
            .map(|k| format!("`{}` ({})", k.type_uri(), k.title()))
            .collect();
        let mut description = format!("Answered by the idempotency layer: {}.", list.join("; "));
        if status == StatusCode::UNAUTHORIZED {
            description.push_str(" Records are kept per caller, so a request that does not say who is calling is refused.");
        }
        let retry_after = kinds.iter().any(|k| {
            matches!(
                k,
                ProblemKind::InFlight { .. } | ProblemKind::StoreUnavailable
            )
        });
        out.insert(
            status.as_str().to_owned(),
            problem_response(&description, retry_after),
        );
    }
    Value::Object(out)
}

/// The headers of a protected success answer (each `$ref`s into
/// `#/components/headers`).
pub fn success_headers() -> Value {
    json!({
        "Idempotency-Key": header_ref("Idempotency-Key"),
        "Idempotency-Key-Expires": header_ref("Idempotency-Key-Expires"),
        "Idempotent-Replayed": header_ref("Idempotent-Replayed")
    })
}

/// The `components` entries the other fragments refer to: `parameters`,
/// `headers` and `schemas`.
pub fn components() -> Value {
    json!({
        "parameters": { "Idempotency-Key": key_parameter() },
        "headers": headers(),
        "schemas": { PROBLEM_SCHEMA: problem_schema() }
    })
}

/// Adds the idempotency parts to one operation object of an endpoint
/// protected with `config`: the key parameter first, the wrapper's
/// refusals (an existing entry for a status is kept), and the idempotency
/// headers on every 2xx answer.
pub fn document_operation(operation: &mut Value, config: &EndpointConfig) {
    let Some(op) = operation.as_object_mut() else {
        return;
    };
    let params = op
        .entry("parameters")
        .or_insert_with(|| Value::Array(Vec::new()));
    if let Some(list) = params.as_array_mut() {
        list.insert(
            0,
            json!({ "$ref": "#/components/parameters/Idempotency-Key" }),
        );
    }
    let answers = op
        .entry("responses")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(answers) = answers.as_object_mut() else {
        return;
    };
    for (status, response) in answers.iter_mut() {
        if status.starts_with('2')
            && let Some(r) = response.as_object_mut()
        {
            let headers = r
                .entry("headers")
                .or_insert_with(|| Value::Object(Map::new()));
            if let (Some(h), Value::Object(add)) = (headers.as_object_mut(), success_headers()) {
                for (name, value) in add {
                    h.entry(name).or_insert(value);
                }
            }
        }
    }
    if let Value::Object(add) = responses(config) {
        for (status, value) in add {
            answers.entry(status).or_insert(value);
        }
    }
}

/// The same fragments as utoipa types (feature `utoipa`), built from the
/// JSON above so the two never drift apart.
#[cfg(feature = "utoipa")]
pub mod utoipa {
    use std::collections::BTreeMap;

    use ::utoipa::openapi::path::{Operation, Parameter};
    use ::utoipa::openapi::{OpenApi, RefOr, Response, Schema};

    use super::super::EndpointConfig;

    fn from<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Option<T> {
        serde_json::from_value(value).ok()
    }

    /// The `Idempotency-Key` parameter, inline (utoipa's components hold no
    /// parameters).
    pub fn key_parameter() -> Option<Parameter> {
        from(super::key_parameter())
    }

    /// The problem schema.
    pub fn problem_schema() -> Option<RefOr<Schema>> {
        from(super::problem_schema())
    }

    /// The wrapper's refusals for `config`, by status code, with their
    /// headers inline.
    pub fn responses(config: &EndpointConfig) -> BTreeMap<String, RefOr<Response>> {
        from(inline_headers(super::responses(config))).unwrap_or_default()
    }

    fn inline_headers(mut value: serde_json::Value) -> serde_json::Value {
        let headers = super::headers();
        if let Some(map) = value.as_object_mut() {
            for response in map.values_mut() {
                if let Some(h) = response.get_mut("headers").and_then(|h| h.as_object_mut()) {
                    for (name, v) in h.iter_mut() {
                        if let Some(def) = headers.get(name) {
                            *v = def.clone();
                        }
                    }
                }
            }
        }
        value
    }

    /// Documents one operation of a utoipa document as protected by
    /// `config`: the key parameter, the refusals, and the problem schema in
    /// the components.
    pub fn document_operation(
        doc: &mut OpenApi,
        path: &str,
        method: http::Method,
        config: &EndpointConfig,
    ) {
        let components = doc.components.get_or_insert_with(Default::default);
        if let Some(schema) = problem_schema() {
            components
                .schemas
                .entry(super::PROBLEM_SCHEMA.to_owned())
                .or_insert(schema);
        }
        let Some(item) = doc.paths.paths.get_mut(path) else {
            return;
        };
        let op: Option<&mut Operation> = match method {
            http::Method::POST => item.post.as_mut(),
            http::Method::PUT => item.put.as_mut(),
            http::Method::PATCH => item.patch.as_mut(),
            http::Method::DELETE => item.delete.as_mut(),
            _ => None,
        };
        let Some(op) = op else {
            return;
        };
        if let Some(p) = key_parameter() {
            op.parameters.get_or_insert_with(Vec::new).insert(0, p);
        }
        for (status, response) in responses(config) {
            op.responses.responses.entry(status).or_insert(response);
        }
    }
}
