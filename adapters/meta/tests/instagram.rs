//! Instagram two-step publishing against the mock server (with `.expect(n)`) and
//! the fake.

mod common;

use common::{LOST, Script, key, setup};
use idem::OperationState;
use idem::executor::Source;
use idem_meta::{AdapterError, ContainerStatus, Error, IgMedia, IgUserId};
use idem_testkit::Reply;
use idem_testkit::mock::matchers::{body_string, method, path};
use idem_testkit::mock::{Mock, MockServer};
use idem_testkit::{FakeMeta, Fault};

fn ig() -> IgUserId {
    IgUserId::new("17841400000000000")
}

fn media() -> IgMedia {
    IgMedia::image("https://joes.bike/img/friday.jpg".parse().unwrap())
        .caption("Open late on Friday!")
}

fn status(code: &str) -> Reply {
    Reply::new(200).set_body_json(serde_json::json!({ "id": "17890001", "status_code": code }))
}

#[tokio::test]
async fn a_publish_whose_step_two_timed_out_reuses_the_recorded_container() {
    let s = setup().await;
    let server = MockServer::start().await;
    // One container...
    Mock::given(method("POST"))
        .and(path("/v25.0/17841400000000000/media"))
        .and(body_string(
            "image_url=https%3A%2F%2Fjoes.bike%2Fimg%2Ffriday.jpg&caption=Open+late+on+Friday%21",
        ))
        .respond_with(Reply::new(200).set_body_string(r#"{"id":"17890001"}"#))
        .expect(1)
        .mount(&server)
        .await;
    // ...published once; Meta acts but the answer is lost.
    Mock::given(method("POST"))
        .and(path("/v25.0/17841400000000000/media_publish"))
        .and(body_string("creation_id=17890001"))
        .respond_with(
            Reply::new(200)
                .set_body_string(r#"{"id":"17900042"}"#)
                .set_delay(LOST),
        )
        .expect(1)
        .mount(&server)
        .await;
    // Ready before the publish; published when the retry looks.
    Mock::given(method("GET"))
        .and(path("/v25.0/17890001"))
        .respond_with(Script::new(vec![status("FINISHED"), status("PUBLISHED")]))
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v25.0/17841400000000000/media"))
        .respond_with(Reply::new(200).set_body_json(serde_json::json!({
            "data": [
                { "id": "17900042", "caption": "Open late on Friday!", "timestamp": "2099-01-01T00:00:00+0000" },
                { "id": "17900001", "caption": "An older post", "timestamp": "2020-01-01T00:00:00+0000" },
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let meta = s.client(&server.uri());
    let k = key("joes-bikes_social_posts_20_v1");
    let err = meta
        .publish_instagram(&k, &ig(), &media())
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    let op = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!(
        op.checkpoint.as_deref(),
        Some("17890001"),
        "container recorded in the same row"
    );
    assert_eq!(op.state, OperationState::Unknown);

    let published = meta.publish_instagram(&k, &ig(), &media()).await.unwrap();
    assert_eq!(published.container_id.as_str(), "17890001");
    assert_eq!(
        published.media_id.as_ref().map(|m| m.as_str()),
        Some("17900042")
    );
    assert_eq!(published.source, Source::Reconciled);
    let op = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.claims, 1, "the status and media reads claimed nothing");

    let replay = meta.publish_instagram(&k, &ig(), &media()).await.unwrap();
    assert_eq!(replay.source, Source::Ledger);
    assert_eq!(replay.media_id, published.media_id);
}

#[tokio::test]
async fn a_step_two_timeout_with_no_effect_publishes_the_same_container_once() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.inject(Fault::Pass); // step one goes through
    fake.inject(Fault::StallWithoutEffect { delay: LOST }); // step two times out, nothing done
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_21_v1");
    assert!(
        meta.publish_instagram(&k, &ig(), &media())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert_eq!((fake.containers_created(), fake.media_published()), (1, 0));

    let published = meta.publish_instagram(&k, &ig(), &media()).await.unwrap();
    assert!(published.media_id.is_some());
    assert_eq!(
        fake.containers_created(),
        1,
        "the recorded container was reused"
    );
    assert_eq!(fake.media_published(), 1);
    assert_eq!(fake.write_requests(), 3, "create, stalled publish, publish");
    assert_eq!(
        meta.publish_instagram(&k, &ig(), &media())
            .await
            .unwrap()
            .source,
        Source::Ledger
    );
    assert_eq!(fake.write_requests(), 3);
}

#[tokio::test]
async fn a_lost_publish_answer_is_found_published_and_not_published_again() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.inject(Fault::Pass);
    fake.inject(Fault::LoseResponse { delay: LOST });
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_22_v1");
    assert!(
        meta.publish_instagram(&k, &ig(), &media())
            .await
            .unwrap_err()
            .is_unknown()
    );
    let published = meta.publish_instagram(&k, &ig(), &media()).await.unwrap();
    assert_eq!(published.source, Source::Reconciled);
    assert!(published.media_id.is_some(), "matched by caption");
    assert_eq!(
        (
            fake.containers_created(),
            fake.media_published(),
            fake.write_requests()
        ),
        (1, 1, 2)
    );
}

#[tokio::test]
async fn an_unknown_container_creation_is_a_genuine_unknown() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.inject(Fault::LoseResponse { delay: LOST });
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_23_v1");
    assert!(
        meta.publish_instagram(&k, &ig(), &media())
            .await
            .unwrap_err()
            .is_unknown()
    );
    let err = meta
        .publish_instagram(&k, &ig(), &media())
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert!(err.to_string().contains("container"), "{err}");
    assert_eq!(fake.containers_created(), 1, "no second container");
    assert_eq!(fake.media_published(), 0);
    assert_eq!(s.store.get(&k).await.unwrap().unwrap().checkpoint, None);
}

#[tokio::test]
async fn an_expired_container_asks_for_a_bump_and_the_bump_publishes_once() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.inject(Fault::Pass);
    fake.inject(Fault::StallWithoutEffect { delay: LOST });
    let meta = s.client(&fake.base_url());
    let v1 = key("joes-bikes_social_posts_24_v1");
    assert!(
        meta.publish_instagram(&v1, &ig(), &media())
            .await
            .unwrap_err()
            .is_unknown()
    );
    fake.expire_containers();
    let err = meta
        .publish_instagram(&v1, &ig(), &media())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Adapter(AdapterError::ContainerFailed {
                status: ContainerStatus::Expired,
                ..
            })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("Bump"), "{err}");
    let v2 = meta.bump(&v1, false).await.unwrap();
    meta.publish_instagram(&v2, &ig(), &media()).await.unwrap();
    assert_eq!((fake.containers_created(), fake.media_published()), (2, 1));
}

#[tokio::test]
async fn a_container_still_processing_is_waited_for() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.set_container_processing(3);
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_25_v1");
    let reel =
        IgMedia::reel("https://joes.bike/v/friday.mp4".parse().unwrap()).caption("Friday reel");
    let published = meta.publish_instagram(&k, &ig(), &reel).await.unwrap();
    assert_eq!(published.source, Source::Wire { attempts: 1 });
    assert_eq!((fake.containers_created(), fake.media_published()), (1, 1));
    assert!(fake.read_requests() >= 4, "polled the container status");
}

#[tokio::test]
async fn a_container_that_is_never_ready_leaves_the_row_pending_with_its_container() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.set_container_processing(10_000);
    let meta = idem_meta::MetaClient::builder(s.exec.clone(), "tok")
        .base_url(fake.base_url())
        .retry(common::fast())
        .container_wait(
            std::time::Duration::from_millis(100),
            std::time::Duration::from_millis(20),
        )
        .build()
        .unwrap();
    let k = key("joes-bikes_social_posts_26_v1");
    let err = meta
        .publish_instagram(&k, &ig(), &media())
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Adapter(AdapterError::ContainerNotReady { .. })),
        "{err}"
    );
    assert!(err.is_retryable());
    let op = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Pending);
    assert!(op.checkpoint.is_some());
    // Meta finishes processing; the next run reuses the container.
    fake.finish_containers();
    let published = meta.publish_instagram(&k, &ig(), &media()).await.unwrap();
    assert!(published.media_id.is_some());
    assert_eq!((fake.containers_created(), fake.media_published()), (1, 1));
}

#[tokio::test]
async fn a_container_in_error_ends_failed_and_replays_as_container_failed() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.fail_new_containers(true);
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_27_v1");
    let err = meta
        .publish_instagram(&k, &ig(), &media())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Adapter(AdapterError::ContainerFailed {
                status: ContainerStatus::Error,
                ..
            })
        ),
        "{err}"
    );
    assert_eq!(s.state(&k).await, OperationState::Failed);
    let replay = meta
        .publish_instagram(&k, &ig(), &media())
        .await
        .unwrap_err();
    assert!(
        matches!(
            &replay,
            Error::Adapter(AdapterError::ContainerFailed {
                status: ContainerStatus::Error,
                ..
            })
        ),
        "{replay}"
    );
    assert_eq!(
        (
            fake.containers_created(),
            fake.media_published(),
            fake.write_requests()
        ),
        (1, 0, 1)
    );
}
