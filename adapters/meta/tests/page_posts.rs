//! Page posts against the mock server (with `.expect(n)`) and the fake.

mod common;

use std::time::{Duration, Instant};

use common::{LOST, Script, key, meta_error, setup, setup_pg};
use idem::OperationState;
use idem::executor::Source;
use idem_meta::{AdapterError, Error, PageId, PagePost, ReconcileOptions, Reconciled};
use idem_testkit::Reply;
use idem_testkit::mock::matchers::{header, method, path, query_param};
use idem_testkit::mock::{Mock, MockServer};
use idem_testkit::{FakeMeta, Fault};

fn page() -> PageId {
    PageId::new("1122334455")
}

fn post() -> PagePost {
    PagePost::message("Open late on Friday!")
}

#[tokio::test]
async fn a_succeeded_post_is_not_reposted_on_a_retried_job() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v25.0/1122334455/feed"))
        .and(header("authorization", "Bearer EAAtestpagetoken"))
        .respond_with(Reply::new(200).set_body_string(r#"{"id":"1122334455_777"}"#))
        .expect(1)
        .mount(&server)
        .await;
    let meta = s.client(&server.uri());
    let k = key("joes-bikes_social_posts_1_v1");
    let first = meta.publish_page_post(&k, &page(), &post()).await.unwrap();
    assert_eq!(first.id.as_str(), "1122334455_777");
    assert_eq!(first.source, Source::Wire { attempts: 1 });
    for _ in 0..3 {
        let again = meta.publish_page_post(&k, &page(), &post()).await.unwrap();
        assert_eq!(again.id, first.id);
        assert_eq!(again.source, Source::Ledger);
    }
    let seen = server.received_requests().await;
    assert!(
        seen.iter().all(|r| r.url.query().is_none()),
        "no token in the query string"
    );
    let body = String::from_utf8_lossy(&seen[0].body).into_owned();
    assert_eq!(body, "message=Open+late+on+Friday%21");
}

#[tokio::test]
async fn a_lost_response_ends_unknown_is_not_reposted_and_reconcile_finds_it() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v25.0/1122334455/feed"))
        .respond_with(
            Reply::new(200)
                .set_body_string(r#"{"id":"1122334455_42"}"#)
                .set_delay(LOST),
        )
        .expect(1)
        .mount(&server)
        .await;
    let created = idem_meta_time_now();
    Mock::given(method("GET"))
        .and(path("/v25.0/1122334455/published_posts"))
        .and(query_param("fields", "id,message,created_time"))
        .respond_with(Reply::new(200).set_body_json(serde_json::json!({
            "data": [
                { "id": "1122334455_41", "message": "Something else", "created_time": created },
                { "id": "1122334455_42", "message": "Open late on Friday!", "created_time": created },
            ]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let meta = s.client(&server.uri());
    let k = key("joes-bikes_social_posts_2_v1");
    for _ in 0..3 {
        let err = meta
            .publish_page_post(&k, &page(), &post())
            .await
            .unwrap_err();
        assert!(err.is_unknown(), "{err}");
        assert!(err.to_string().contains(k.as_str()), "names the key: {err}");
    }
    assert_eq!(s.state(&k).await, OperationState::Unknown);
    let found = meta
        .reconcile_page_post(&k, &page(), &post(), ReconcileOptions::default())
        .await
        .unwrap();
    assert_eq!(
        found,
        Reconciled::Found {
            id: idem_meta::PostId::new("1122334455_42"),
            matches: 1
        }
    );
    assert_eq!(s.state(&k).await, OperationState::Succeeded);
    let replay = meta.publish_page_post(&k, &page(), &post()).await.unwrap();
    assert_eq!(replay.id.as_str(), "1122334455_42");
    assert_eq!(replay.source, Source::Ledger);
}

fn idem_meta_time_now() -> String {
    // Graph form, `+0000`, a few seconds after "now" so it is inside the window.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days (valid for 1970..2100, enough for a test).
    let (mut y, mut d) = (1970u64, days);
    loop {
        let len = if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 {
            366
        } else {
            365
        };
        if d < len {
            break;
        }
        d -= len;
        y += 1;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let months = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut m = 0;
    while d >= months[m] {
        d -= months[m];
        m += 1;
    }
    format!(
        "{y:04}-{:02}-{:02}T{:02}:{:02}:{:02}+0000",
        m + 1,
        d + 1,
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[tokio::test]
async fn the_fake_counts_one_post_for_a_lost_response_and_reconcile_settles_it() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.inject(Fault::LoseResponse { delay: LOST });
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_3_v1");
    for _ in 0..3 {
        assert!(
            meta.publish_page_post(&k, &page(), &post())
                .await
                .unwrap_err()
                .is_unknown()
        );
    }
    assert_eq!(fake.write_requests(), 1, "never resent");
    assert_eq!(fake.side_effects(), 1);
    let Reconciled::Found { id, .. } = meta
        .reconcile_page_post(&k, &page(), &post(), ReconcileOptions::default())
        .await
        .unwrap()
    else {
        panic!("the post exists at the fake")
    };
    assert_eq!(id.as_str(), fake.posts()[0].id);
    assert_eq!(
        meta.publish_page_post(&k, &page(), &post())
            .await
            .unwrap()
            .source,
        Source::Ledger
    );
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.write_requests(), 1);
}

#[tokio::test]
async fn a_code_4_throttle_with_no_effect_is_retried_after_backoff() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v25.0/1122334455/feed"))
        .respond_with(Script::new(vec![
            meta_error(
                400,
                r#"{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","is_transient":true,"code":4,"fbtrace_id":"A1"}}"#,
            ),
            Reply::new(200).set_body_string(r#"{"id":"1122334455_5"}"#),
        ]))
        .expect(2)
        .mount(&server)
        .await;
    let meta = s.client(&server.uri());
    let k = key("joes-bikes_social_posts_4_v1");
    let started = Instant::now();
    let created = meta.publish_page_post(&k, &page(), &post()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(20),
        "waited out the backoff"
    );
    assert_eq!(created.source, Source::Wire { attempts: 2 });
    assert_eq!(created.id.as_str(), "1122334455_5");
}

#[tokio::test]
async fn a_long_throttle_goes_back_to_pending_and_the_next_run_posts_once() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    // Meta says "come back in 5 minutes": longer than the claim may wait.
    fake.inject(Fault::RateLimited {
        retry_after_secs: 300,
    });
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_5_v1");
    let err = meta
        .publish_page_post(&k, &page(), &post())
        .await
        .unwrap_err();
    match &err {
        Error::NotSent { retry_after, .. } => {
            assert_eq!(*retry_after, Some(Duration::from_secs(300)))
        }
        other => panic!("{other}"),
    }
    assert!(err.is_retryable());
    assert_eq!(s.state(&k).await, OperationState::Pending);
    assert_eq!(fake.side_effects(), 0);
    // Meta's estimated_time_to_regain_access holds the next write back.
    let held = meta
        .publish_page_post(&k, &page(), &post())
        .await
        .unwrap_err();
    assert!(
        matches!(held, Error::Adapter(AdapterError::Throttled { .. })),
        "{held}"
    );
    assert_eq!(fake.write_requests(), 1, "held back before sending");
    assert_eq!(
        meta.last_usage().unwrap().regain_access_after(),
        Some(Duration::from_secs(300))
    );
}

#[tokio::test]
async fn an_oauth_exception_190_ends_failed() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(meta_error(
            400,
            r#"{"error":{"message":"Error validating access token: Session has expired","type":"OAuthException","code":190,"error_subcode":463,"fbtrace_id":"B2"}}"#,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let meta = s.client(&server.uri());
    let k = key("joes-bikes_social_posts_6_v1");
    let err = meta
        .publish_page_post(&k, &page(), &post())
        .await
        .unwrap_err();
    let e = err.wire_error().expect("Meta's error object");
    assert_eq!((e.code, e.error_subcode), (190, Some(463)));
    assert!(e.is_auth());
    assert!(!err.is_retryable());
    assert!(matches!(
        err,
        Error::Rejected {
            from_ledger: false,
            ..
        }
    ));
    assert_eq!(s.state(&k).await, OperationState::Failed);
    let again = meta
        .publish_page_post(&k, &page(), &post())
        .await
        .unwrap_err();
    assert!(
        matches!(
            again,
            Error::Rejected {
                from_ledger: true,
                ..
            }
        ),
        "{again}"
    );
}

#[tokio::test]
async fn an_operator_bump_posts_once_more_with_the_v2_key() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v25.0/1122334455/feed"))
        .respond_with(Script::new(vec![
            // v1: Meta's transient code 2, effect unknown: never resent.
            meta_error(500, r#"{"error":{"message":"An unexpected error has occurred","code":2,"is_transient":true}}"#),
            Reply::new(200).set_body_string(r#"{"id":"1122334455_8"}"#),
        ]))
        .expect(2)
        .mount(&server)
        .await;
    let meta = s.client(&server.uri());
    let v1 = key("joes-bikes_social_posts_7_v1");
    assert!(
        meta.publish_page_post(&v1, &page(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    let v2 = meta.bump(&v1, false).await.unwrap();
    assert_eq!(v2.as_str(), "joes-bikes_social_posts_7_v2");
    let old = meta
        .publish_page_post(&v1, &page(), &post())
        .await
        .unwrap_err();
    assert!(
        matches!(&old, Error::Superseded { by, .. } if by == &v2),
        "{old}"
    );
    let created = meta.publish_page_post(&v2, &page(), &post()).await.unwrap();
    assert_eq!(created.id.as_str(), "1122334455_8");
    assert_eq!(
        meta.publish_page_post(&v2, &page(), &post())
            .await
            .unwrap()
            .source,
        Source::Ledger
    );
}

#[tokio::test]
async fn reconcile_not_found_stays_unknown_until_the_grace_period_allows_a_resend() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.inject(Fault::StallWithoutEffect { delay: LOST });
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_8_v1");
    assert!(
        meta.publish_page_post(&k, &page(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    let grace = ReconcileOptions::default().not_applied_after(Duration::from_secs(900));
    let before = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!(
        meta.reconcile_page_post(&k, &page(), &post(), grace)
            .await
            .unwrap(),
        Reconciled::NotFound,
        "too early to call it not applied"
    );
    let after = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!(after.state, OperationState::Unknown);
    assert_eq!(
        after, before,
        "a lookup with no verdict leaves the row as it was"
    );
    s.clock.advance(Duration::from_secs(1200));
    assert_eq!(
        meta.reconcile_page_post(&k, &page(), &post(), grace)
            .await
            .unwrap(),
        Reconciled::MarkedNotApplied
    );
    let op = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!(op.state, OperationState::Pending);
    assert_eq!(op.claims, before.claims, "only the verdict changed the row");
    meta.publish_page_post(&k, &page(), &post()).await.unwrap();
    assert_eq!(fake.side_effects(), 1, "posted exactly once");
    assert_eq!(fake.write_requests(), 2);
}

#[tokio::test]
async fn high_usage_holds_writes_back_before_the_limit() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    fake.set_app_usage(Some(95));
    let meta = idem_meta::MetaClient::builder(s.exec.clone(), "EAAtestpagetoken")
        .base_url(fake.base_url())
        .retry(common::fast())
        .high_usage_pause(Duration::from_secs(60))
        .max_usage_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    meta.publish_page_post(&key("joes-bikes_social_posts_9_v1"), &page(), &post())
        .await
        .unwrap();
    assert_eq!(meta.last_usage().unwrap().max_percent(), 95.0);
    let k = key("joes-bikes_social_posts_10_v1");
    let err = meta
        .publish_page_post(&k, &page(), &PagePost::message("Second post"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Adapter(AdapterError::Throttled { percent: 95, .. })
        ),
        "{err}"
    );
    assert!(err.is_retryable());
    assert_eq!(fake.write_requests(), 1, "the second write never left");
    assert_eq!(s.state(&k).await, OperationState::Pending);
}

#[tokio::test]
async fn scheduled_posts_send_the_documented_fields() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v24.0/1122334455/feed"))
        .respond_with(Reply::new(200).set_body_string(r#"{"id":"1122334455_9"}"#))
        .expect(1)
        .mount(&server)
        .await;
    let meta = idem_meta::MetaClient::builder(s.exec.clone(), "tok")
        .base_url(server.uri())
        .api_version("v24.0")
        .retry(common::fast())
        .build()
        .unwrap();
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_900_000_000);
    let post = PagePost::message("Sale!")
        .link("https://joes.bike/sale".parse().unwrap())
        .scheduled_at(when);
    meta.publish_page_post(&key("joes-bikes_social_posts_11_v1"), &page(), &post)
        .await
        .unwrap();
    let body = String::from_utf8_lossy(&server.received_requests().await[0].body).into_owned();
    assert_eq!(
        body,
        "message=Sale%21&link=https%3A%2F%2Fjoes.bike%2Fsale&published=false&scheduled_publish_time=1900000000"
    );
    assert!(
        idem_meta::MetaClient::builder(s.exec.clone(), "tok")
            .api_version("25")
            .build()
            .is_err()
    );
    assert!(
        idem_meta::MetaClient::builder(s.exec.clone(), "")
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn lost_response_and_reconcile_on_postgres() {
    let Some(s) = setup_pg("meta lost response and reconcile").await else {
        return;
    };
    let fake = FakeMeta::start().await;
    fake.inject(Fault::LoseResponse { delay: LOST });
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_12_v1");
    assert!(
        meta.publish_page_post(&k, &page(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert!(
        meta.publish_page_post(&k, &page(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert!(matches!(
        meta.reconcile_page_post(&k, &page(), &post(), ReconcileOptions::default())
            .await
            .unwrap(),
        Reconciled::Found { .. }
    ));
    assert_eq!(
        meta.publish_page_post(&k, &page(), &post())
            .await
            .unwrap()
            .source,
        Source::Ledger
    );
    assert_eq!((fake.write_requests(), fake.side_effects()), (1, 1));
}
