//! The escape hatch: `MetaClient::post` (a keyed raw write), `PagePost::extra`
//! and `PagePost::call_to_action`.

mod common;

use common::*;
use idem::adapter::Answer;
use idem_meta::{Error, PageId, PagePost};
use idem_testkit::Reply;
use idem_testkit::mock::matchers::{method, path};
use idem_testkit::mock::{Mock, MockServer};

fn form_of(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

#[tokio::test]
async fn raw_post_is_keyed_recorded_and_replayed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/{}/123/photos",
            idem_meta::DEFAULT_API_VERSION
        )))
        .respond_with(
            Reply::new(200).set_body_json(serde_json::json!({"id": "555", "post_id": "123_555"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let s = setup().await;
    let meta = s.client(&server.uri());
    let k = key("joes-bikes_photos_1_v1");
    let params = [
        ("url", "https://example.com/a.jpg"),
        ("caption", "New bikes"),
    ];
    let first: Answer<serde_json::Value> = meta.post(&k, "123/photos", &params).await.unwrap();
    assert_eq!(first.value["post_id"], "123_555");
    let again: Answer<serde_json::Value> = meta.post(&k, "123/photos", &params).await.unwrap();
    assert!(again.from_ledger());
    let err = meta
        .post::<serde_json::Value>(&k, "123/photos", &[("caption", "other")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyReused { .. }), "{err}");
    let err = meta
        .post::<serde_json::Value>(&key("joes-bikes_photos_2_v1"), "../../x", &params)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InvalidRequest { .. }), "{err}");
    assert!(
        s.store
            .get(&key("joes-bikes_photos_2_v1"))
            .await
            .unwrap()
            .is_none()
    );
    server.verify().await;
}

#[tokio::test]
async fn call_to_action_and_extras_are_sent_and_never_override() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/{}/123/feed",
            idem_meta::DEFAULT_API_VERSION
        )))
        .respond_with(Reply::new(200).set_body_json(serde_json::json!({"id": "123_9"})))
        .expect(1)
        .mount(&server)
        .await;
    let s = setup().await;
    let meta = s.client(&server.uri());
    let page = PageId::new("123");
    let link: idem::executor::Url = "https://shop.example/bikes".parse().unwrap();
    let post = PagePost::message("Spring sale")
        .link(link.clone())
        .call_to_action("SHOP_NOW", &link);
    meta.publish_page_post(&key("joes-bikes_posts_1_v1"), &page, &post)
        .await
        .unwrap();
    let form = form_of(&server.received_requests().await[0].body);
    let cta = form
        .iter()
        .find(|(k, _)| k == "call_to_action")
        .map(|(_, v)| v.clone());
    let cta: serde_json::Value = serde_json::from_str(&cta.expect("call_to_action sent")).unwrap();
    assert_eq!(cta["type"], "SHOP_NOW");
    assert_eq!(cta["value"]["link"], "https://shop.example/bikes");

    let k2 = key("joes-bikes_posts_2_v1");
    let hostile = PagePost::message("x").extra("message", "overridden");
    let err = meta
        .publish_page_post(&k2, &page, &hostile)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Adapter(idem_meta::AdapterError::InvalidInput(_))
        ),
        "{err}"
    );
    assert!(s.store.get(&k2).await.unwrap().is_none());
    server.verify().await;
}
