//! `idem::inbound::openapi`: the fragments match what the wrapper serves,
//! and (feature `utoipa`) the utoipa types carry the same parts.

use http::StatusCode;
use idem::inbound::{EndpointConfig, MismatchStatus, ProblemKind, openapi};
use serde_json::json;

#[test]
fn fragments_follow_the_configuration_and_problem_kinds() {
    let default = EndpointConfig::builder("e").build().unwrap();
    let r = openapi::responses(&default);
    for status in ["400", "401", "409", "413", "503"] {
        assert!(r[status].is_object(), "{status}");
        assert!(r[status]["content"]["application/problem+json"].is_object());
    }
    assert!(r.get("422").is_none(), "409 by default");
    assert!(r["409"]["headers"]["Retry-After"].is_object());
    assert!(r["503"]["headers"]["Retry-After"].is_object());
    assert!(r["400"]["headers"].get("Retry-After").is_none());
    let draft = EndpointConfig::builder("e")
        .on_mismatch(MismatchStatus::UnprocessableContent)
        .shared_anonymous_scope()
        .build()
        .unwrap();
    let r = openapi::responses(&draft);
    assert!(r["422"].is_object());
    assert!(
        r.get("401").is_none(),
        "no 401 when anonymous callers share a scope"
    );
    // Every problem type the wrapper can serve is named in the document.
    let text = openapi::responses(&default).to_string() + &openapi::responses(&draft).to_string();
    for kind in ProblemKind::all() {
        assert!(text.contains(kind.type_uri()), "{}", kind.type_uri());
        let status = kind.status();
        assert!(status.is_client_error() || status == StatusCode::SERVICE_UNAVAILABLE);
    }
    let key = &openapi::components()["parameters"]["Idempotency-Key"];
    assert_eq!(
        key["schema"]["maxLength"],
        idem::inbound::MAX_CLIENT_KEY_LEN
    );
    assert_eq!(key["schema"]["pattern"], openapi::KEY_PATTERN);
}

#[test]
fn document_operation_keeps_the_apps_own_entries() {
    let config = EndpointConfig::builder("e").build().unwrap();
    let mut op = json!({
        "parameters": [ { "name": "x", "in": "query" } ],
        "responses": {
            "201": { "description": "made" },
            "400": { "description": "mine" }
        }
    });
    openapi::document_operation(&mut op, &config);
    assert_eq!(
        op["parameters"][0]["$ref"],
        "#/components/parameters/Idempotency-Key"
    );
    assert_eq!(op["parameters"][1]["name"], "x");
    assert_eq!(op["responses"]["400"]["description"], "mine");
    assert!(op["responses"]["201"]["headers"]["Idempotent-Replayed"].is_object());
    assert!(op["responses"]["409"].is_object());
}

#[cfg(feature = "utoipa")]
#[test]
fn utoipa_types_carry_the_same_parts() {
    use utoipa::openapi::path::{OperationBuilder, PathItem};
    use utoipa::openapi::{HttpMethod, OpenApiBuilder, PathsBuilder};

    let config = EndpointConfig::builder("e").build().unwrap();
    let mut doc = OpenApiBuilder::new()
        .paths(PathsBuilder::new().path(
            "/orders",
            PathItem::new(HttpMethod::Post, OperationBuilder::new().build()),
        ))
        .build();
    openapi::utoipa::document_operation(&mut doc, "/orders", http::Method::POST, &config);
    let v = serde_json::to_value(&doc).unwrap();
    let op = &v["paths"]["/orders"]["post"];
    assert_eq!(op["parameters"][0]["name"], "Idempotency-Key");
    assert_eq!(op["parameters"][0]["schema"]["maxLength"], 255);
    for status in ["400", "401", "409", "413", "503"] {
        assert!(op["responses"][status].is_object(), "{status}");
    }
    assert!(op["responses"]["409"]["headers"]["Retry-After"].is_object());
    assert_eq!(v["components"]["schemas"]["Problem"]["required"][0], "type");
}
