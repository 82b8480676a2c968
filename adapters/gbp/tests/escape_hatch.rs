//! The escape hatch: `GbpClient::post`, a keyed raw write for what the
//! typed API lacks. Raw writes are local-only whatever the method.

mod common;

use std::time::Duration;

use common::*;
use idem::adapter::Answer;
use idem_gbp::Error;
use idem_testkit::Reply;
use idem_testkit::mock::matchers::{header, method, path};
use idem_testkit::mock::{Mock, MockServer};

const MEDIA: &str = "v4/accounts/1/locations/2/media";

#[tokio::test]
async fn raw_post_is_keyed_authorized_recorded_and_replayed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!("/{MEDIA}")))
        .and(header("authorization", "Bearer tok-1"))
        .respond_with(
            Reply::new(200)
                .set_body_json(serde_json::json!({"name": "accounts/1/locations/2/media/9"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        CountingToken::new("tok-1", "tok-2"),
    );
    let k = key("joes-bikes_media_1_v1");
    let body =
        serde_json::json!({"mediaFormat": "PHOTO", "sourceUrl": "https://example.com/a.jpg"});
    let first: Answer<serde_json::Value> = gbp
        .post(&k, http::Method::POST, MEDIA, &body)
        .await
        .unwrap();
    assert_eq!(first.value["name"], "accounts/1/locations/2/media/9");
    let again: Answer<serde_json::Value> = gbp
        .post(&k, http::Method::POST, MEDIA, &body)
        .await
        .unwrap();
    assert!(again.from_ledger());
    let err = gbp
        .post::<serde_json::Value>(
            &k,
            http::Method::POST,
            MEDIA,
            &serde_json::json!({"other": 1}),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyReused { .. }), "{err}");
    let err = gbp
        .post::<serde_json::Value>(
            &key("joes-bikes_media_2_v1"),
            http::Method::POST,
            "//evil.example/x",
            &body,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    server.verify().await;
}

#[tokio::test]
async fn a_raw_patch_that_may_have_landed_is_not_resent() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(
            Reply::new(200)
                .set_body_json(serde_json::json!({}))
                .set_delay(Duration::from_secs(3)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        CountingToken::new("tok-1", "tok-2"),
    );
    let k = key("joes-bikes_locations_1_v1");
    let body = serde_json::json!({"title": "Joe's Bikes"});
    for _ in 0..2 {
        let err = gbp
            .post::<serde_json::Value>(
                &k,
                http::Method::PATCH,
                "v1/locations/2?updateMask=title",
                &body,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::OutcomeUnknown {
                    resend_safe_until: None,
                    ..
                }
            ),
            "{err}"
        );
    }
    server.verify().await;
}

#[test]
fn raw_hosts_are_the_manifests_hosts() {
    // The lint reads `[package.metadata.idem] hosts`; raw writes use
    // GOOGLE_HOSTS. They must not drift apart.
    let manifest = include_str!("../Cargo.toml");
    let table = manifest
        .split("[package.metadata.idem]")
        .nth(1)
        .and_then(|t| t.split("hosts = [").nth(1))
        .and_then(|t| t.split(']').next())
        .expect("the metadata table lists hosts");
    let listed: Vec<&str> = table
        .split(',')
        .map(|h| h.trim().trim_matches('"'))
        .filter(|h| !h.is_empty())
        .collect();
    assert_eq!(listed, idem_gbp::GOOGLE_HOSTS);
}

#[tokio::test]
async fn an_absolute_raw_url_must_be_on_a_google_host() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .respond_with(Reply::new(200).set_body_json(serde_json::json!({})))
        .expect(0)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        CountingToken::new("tok-1", "tok-2"),
    );
    let body = serde_json::json!({"title": "Joe's Bikes"});
    for hostile in [
        "https://evil.example/v1/locations/2",
        "https://mybusiness.googleapis.com.evil.example/v1/locations/2",
        "http://mybusinessbusinessinformation.googleapis.com/v1/locations/2",
        "https://user@mybusinessbusinessinformation.googleapis.com/v1/locations/2",
        "https://mybusinessbusinessinformation.googleapis.com:444/v1/locations/2",
    ] {
        let err = gbp
            .post::<serde_json::Value>(
                &key("joes-bikes_locations_9_v1"),
                http::Method::PATCH,
                hostile,
                &body,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::InvalidRequest { .. }),
            "{hostile}: {err}"
        );
    }
    assert!(
        setup
            .executor
            .store()
            .get(&key("joes-bikes_locations_9_v1"))
            .await
            .unwrap()
            .is_none()
    );
    server.verify().await;
}
