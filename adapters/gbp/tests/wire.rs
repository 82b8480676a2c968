//! Wire-level tests against the mock server, with `.expect(n)` on every mock: a test
//! fails when Google would have been called more (or less) often than it
//! should.

mod common;

use std::time::{Duration, Instant};

use common::*;
use idem::executor::Source;
use idem::{ManualClock, OperationState};
use idem_gbp::{AdapterError, Error, LocalPost, Reconciliation, StaticToken};
use idem_testkit::Reply;
use idem_testkit::mock::matchers::{
    body_json, header, method, path, query_param, query_param_is_missing,
};
use idem_testkit::mock::{Mock, MockServer};
use serde_json::json;

const REPLY_PATH: &str = "/v4/accounts/111/locations/222/reviews/rev-1/reply";
const POSTS_PATH: &str = "/v4/accounts/111/locations/222/localPosts";

fn google_error(code: u16, status: &str) -> Reply {
    Reply::new(code).set_body_json(json!({
        "error": {"code": code, "message": "from the mock", "status": status}
    }))
}

fn created_post(id: u32, create_time: &str) -> serde_json::Value {
    json!({
        "name": format!("accounts/111/locations/222/localPosts/{id}"),
        "languageCode": "en-US",
        "summary": "Spring tune-ups are 20% off this week.",
        "topicType": "STANDARD",
        "state": "LIVE",
        "createTime": create_time,
    })
}

#[tokio::test]
async fn reply_retried_after_503_lands_with_the_same_key_and_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .and(header("authorization", "Bearer tok"))
        .and(body_json(json!({"comment": "Thanks!"})))
        .respond_with(google_error(503, "UNAVAILABLE"))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .and(body_json(json!({"comment": "Thanks!"})))
        .respond_with(
            Reply::new(200)
                .set_body_json(json!({"comment": "Thanks!", "updateTime": "2024-05-01T10:00:00Z"})),
        )
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        StaticToken::new("tok"),
    );
    let k = key("joes-bikes_review_replies_42_v1");

    let done = gbp.update_reply(&k, &review(), "Thanks!").await.unwrap();
    assert_eq!(done.key, k);
    assert_eq!(done.reply.comment, "Thanks!");
    assert_eq!(
        done.reply.update_time.as_deref(),
        Some("2024-05-01T10:00:00Z")
    );
    assert_eq!(done.source, Source::Wire { attempts: 2 });

    let op = row(&setup.executor, &k).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.key, k);
    assert_eq!(
        op.claims, 1,
        "both attempts ran under one claim of the same key"
    );
    assert_eq!(op.provider, "gbp");
    assert_eq!(op.operation, "reviews.updateReply");
    assert_eq!(op.response_status, Some(200));
}

#[tokio::test]
async fn replayed_job_whose_ledger_says_succeeded_makes_no_call() {
    let first = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .respond_with(Reply::new(200).set_body_json(json!({"comment": "Thanks!"})))
        .expect(1)
        .mount(&first)
        .await;
    let setup = sqlite_executor(None).await;
    let k = key("joes-bikes_review_replies_43_v1");
    let gbp = client(
        setup.executor.clone(),
        &first.uri(),
        StaticToken::new("tok"),
    );
    gbp.update_reply(&k, &review(), "Thanks!").await.unwrap();

    // The job runs again in another worker (new executor over the same
    // ledger), against a server that must not be called at all.
    let second = MockServer::start().await;
    Mock::given(idem_testkit::mock::matchers::any())
        .respond_with(Reply::new(500))
        .expect(0)
        .mount(&second)
        .await;
    let tokens = CountingToken::new("tok", "tok2");
    let tokens = std::sync::Arc::new(tokens);
    let replay = idem_gbp::GbpClient::builder_shared(reopen(&setup).await, tokens.clone())
        .base_url(second.uri())
        .retry(fast_retry())
        .build()
        .unwrap();
    let again = replay.update_reply(&k, &review(), "Thanks!").await.unwrap();
    assert!(again.from_ledger());
    assert_eq!(again.reply.comment, "Thanks!");
    assert_eq!(
        tokens.tokens.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "not even a token is fetched for a replay"
    );

    // Same for a local post.
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .respond_with(Reply::new(200).set_body_json(created_post(1, "2024-05-01T10:00:00Z")))
        .expect(1)
        .mount(&first)
        .await;
    let kp = key("joes-bikes_posts_43_v1");
    let created = gbp
        .create_local_post(&kp, &location(), &post())
        .await
        .unwrap();
    let replayed = replay
        .create_local_post(&kp, &location(), &post())
        .await
        .unwrap();
    assert!(replayed.from_ledger());
    assert_eq!(replayed.post.name, created.post.name);
}

#[tokio::test]
async fn local_post_with_lost_response_is_sent_once_ends_unknown_and_reconcile_marks_it_succeeded()
{
    let server = MockServer::start().await;
    // Google creates the post, but the answer arrives after the client's
    // 300 ms attempt timeout.
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .respond_with(
            Reply::new(200)
                .set_body_json(created_post(7, "2999-01-01T00:00:00Z"))
                .set_delay(Duration::from_millis(1500)),
        )
        .expect(1)
        .mount(&server)
        .await;
    // Two pages; an identical post from long ago on page 1 must not match.
    Mock::given(method("GET"))
        .and(path(POSTS_PATH))
        .and(query_param("pageSize", "100"))
        .and(query_param_is_missing("pageToken"))
        .respond_with(Reply::new(200).set_body_json(json!({
            "localPosts": [created_post(1, "2020-01-01T00:00:00Z"),
                           {"name": "accounts/111/locations/222/localPosts/2", "summary": "Other", "topicType": "STANDARD"}],
            "nextPageToken": "page-2"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(POSTS_PATH))
        .and(query_param("pageToken", "page-2"))
        .respond_with(Reply::new(200).set_body_json(json!({
            "localPosts": [created_post(7, "2999-01-01T00:00:00Z")]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        StaticToken::new("tok"),
    );
    let k = key("joes-bikes_posts_7_v1");

    let err = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert!(!err.is_retryable(), "a local post is never resent blindly");
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Unknown
    );

    // Running the job again does not resend.
    let again = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap_err();
    assert!(again.is_unknown());

    let verdict = gbp
        .reconcile_local_post(&k, &location(), &post())
        .await
        .unwrap();
    let Reconciliation::Found(found) = verdict else {
        panic!("expected Found, got {verdict:?}");
    };
    assert_eq!(found.source, Source::Reconciled);
    assert_eq!(
        found.post.name.as_deref(),
        Some("accounts/111/locations/222/localPosts/7")
    );
    let op = row(&setup.executor, &k).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.claims, 1, "listing the posts claimed nothing");
    assert!(
        op.note
            .unwrap_or_default()
            .contains("found by reconciliation")
    );

    // From now on the job is answered from the ledger.
    let replay = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert!(replay.from_ledger());
    assert_eq!(replay.post.name, found.post.name);
}

#[tokio::test]
async fn expired_token_is_refreshed_once_and_the_reply_lands() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .and(header("authorization", "Bearer stale"))
        .respond_with(google_error(401, "UNAUTHENTICATED"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .and(header("authorization", "Bearer fresh"))
        .respond_with(Reply::new(200).set_body_json(json!({"comment": "Thanks!"})))
        .expect(1)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let tokens = std::sync::Arc::new(CountingToken::new("stale", "fresh"));
    let gbp = idem_gbp::GbpClient::builder_shared(setup.executor.clone(), tokens.clone())
        .base_url(server.uri())
        .retry(fast_retry())
        .build()
        .unwrap();
    let k = key("joes-bikes_review_replies_44_v1");
    let done = gbp.update_reply(&k, &review(), "Thanks!").await.unwrap();
    assert_eq!(done.source, Source::Wire { attempts: 2 });
    assert_eq!(tokens.refreshes(), 1);
    let op = row(&setup.executor, &k).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.claims, 1);
}

#[tokio::test]
async fn expired_token_on_a_local_post_is_refreshed_once_and_posted_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .and(header("authorization", "Bearer stale"))
        .respond_with(google_error(401, "UNAUTHENTICATED"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .and(header("authorization", "Bearer fresh"))
        .respond_with(Reply::new(200).set_body_json(created_post(3, "2024-05-01T10:00:00Z")))
        .expect(1)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let tokens = std::sync::Arc::new(CountingToken::new("stale", "fresh"));
    let gbp = idem_gbp::GbpClient::builder_shared(setup.executor.clone(), tokens.clone())
        .base_url(server.uri())
        .retry(fast_retry())
        .build()
        .unwrap();
    let k = key("joes-bikes_posts_44_v1");
    gbp.create_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Succeeded
    );
}

#[tokio::test]
async fn token_refused_after_refresh_leaves_the_row_pending() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .respond_with(google_error(401, "UNAUTHENTICATED"))
        .expect(2)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let tokens = std::sync::Arc::new(CountingToken::new("stale", "also-bad"));
    let gbp = idem_gbp::GbpClient::builder_shared(setup.executor.clone(), tokens.clone())
        .base_url(server.uri())
        .retry(fast_retry())
        .build()
        .unwrap();
    let k = key("joes-bikes_review_replies_45_v1");
    let err = gbp
        .update_reply(&k, &review(), "Thanks!")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Adapter(AdapterError::Unauthenticated { .. })),
        "{err}"
    );
    assert_eq!(tokens.refreshes(), 1, "exactly one refresh");
    let op = row(&setup.executor, &k).await;
    assert_eq!(op.state, OperationState::Pending, "a 401 had no effect");

    // A static token cannot be refreshed: Token error, row pending.
    let k2 = key("joes-bikes_review_replies_46_v1");
    let server2 = MockServer::start().await;
    Mock::given(method("PUT"))
        .respond_with(google_error(401, "UNAUTHENTICATED"))
        .expect(1)
        .mount(&server2)
        .await;
    let gbp2 = client(
        setup.executor.clone(),
        &server2.uri(),
        StaticToken::new("dead"),
    );
    let err = gbp2
        .update_reply(&k2, &review(), "Thanks!")
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Adapter(AdapterError::Token { .. })),
        "{err}"
    );
    assert!(!err.is_retryable());
    assert_eq!(
        row(&setup.executor, &k2).await.state,
        OperationState::Pending
    );
}

#[tokio::test]
async fn invalid_argument_ends_failed_without_retry() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .respond_with(google_error(400, "INVALID_ARGUMENT"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .respond_with(google_error(400, "INVALID_ARGUMENT"))
        .expect(1)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        StaticToken::new("tok"),
    );

    let k = key("joes-bikes_review_replies_47_v1");
    let err = gbp
        .update_reply(&k, &review(), "Thanks!")
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(http::StatusCode::BAD_REQUEST));
    assert_eq!(err.wire_error().unwrap().status, "INVALID_ARGUMENT");
    assert!(!err.is_retryable());
    assert!(matches!(
        err,
        Error::Rejected {
            from_ledger: false,
            ..
        }
    ));
    assert_eq!(row(&setup.executor, &k).await.state, OperationState::Failed);
    // The job runs again: the stored rejection, no request.
    let again = gbp
        .update_reply(&k, &review(), "Thanks!")
        .await
        .unwrap_err();
    assert!(matches!(
        again,
        Error::Rejected {
            from_ledger: true,
            ..
        }
    ));

    let kp = key("joes-bikes_posts_47_v1");
    let err = gbp
        .create_local_post(&kp, &location(), &post())
        .await
        .unwrap_err();
    assert_eq!(err.wire_error().unwrap().status, "INVALID_ARGUMENT");
    assert_eq!(
        row(&setup.executor, &kp).await.state,
        OperationState::Failed
    );
}

#[tokio::test]
async fn overlong_comment_is_refused_before_anything_is_recorded() {
    let server = MockServer::start().await;
    Mock::given(idem_testkit::mock::matchers::any())
        .respond_with(Reply::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        StaticToken::new("tok"),
    );
    let k = key("joes-bikes_review_replies_48_v1");
    // 4,097 bytes in 2,049 characters: the limit is in bytes.
    let comment = format!("{}a", "é".repeat(2048));
    assert_eq!(comment.len(), 4097);
    let err = gbp.update_reply(&k, &review(), &comment).await.unwrap_err();
    assert!(matches!(
        err,
        Error::Adapter(AdapterError::CommentTooLong {
            len: 4097,
            max: 4096
        })
    ));
    assert!(setup.executor.store().get(&k).await.unwrap().is_none());
}

#[tokio::test]
async fn local_post_rate_limited_is_resent_after_retry_info_delay() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .respond_with(Reply::new(429).set_body_json(json!({"error": {
            "code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.4s"}]
        }})))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .respond_with(Reply::new(200).set_body_json(created_post(5, "2024-05-01T10:00:00Z")))
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        StaticToken::new("tok"),
    );
    let k = key("joes-bikes_posts_49_v1");
    let started = Instant::now();
    let created = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "RetryInfo delay honoured"
    );
    assert_eq!(created.source, Source::Wire { attempts: 2 });
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Succeeded
    );
}

#[tokio::test]
async fn local_post_503_and_504_end_unknown_without_a_resend() {
    for (i, (code, status)) in [
        (503, "UNAVAILABLE"),
        (504, "DEADLINE_EXCEEDED"),
        (500, "INTERNAL"),
    ]
    .into_iter()
    .enumerate()
    {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(POSTS_PATH))
            .respond_with(google_error(code, status))
            .expect(1)
            .mount(&server)
            .await;
        let setup = sqlite_executor(None).await;
        let gbp = client(
            setup.executor.clone(),
            &server.uri(),
            StaticToken::new("tok"),
        );
        let k = key(&format!("joes-bikes_posts_50{i}_v1"));
        let err = gbp
            .create_local_post(&k, &location(), &post())
            .await
            .unwrap_err();
        assert!(err.is_unknown(), "{status}: {err}");
        assert_eq!(
            row(&setup.executor, &k).await.state,
            OperationState::Unknown
        );
    }
}

#[tokio::test]
async fn reply_unknown_after_exhausted_retries_is_resent_by_the_next_run() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .respond_with(google_error(503, "UNAVAILABLE"))
        .up_to_n_times(3)
        .expect(3)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .respond_with(Reply::new(200).set_body_json(json!({"comment": "Thanks!"})))
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        StaticToken::new("tok"),
    );
    let k = key("joes-bikes_review_replies_51_v1");
    let err = gbp
        .update_reply(&k, &review(), "Thanks!")
        .await
        .unwrap_err();
    assert!(err.is_unknown());
    assert!(err.is_retryable(), "an upsert may be resent");
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Unknown
    );
    let done = gbp.update_reply(&k, &review(), "Thanks!").await.unwrap();
    assert_eq!(done.source, Source::Wire { attempts: 1 });
    let op = row(&setup.executor, &k).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.claims, 2, "same key, second claim");
}

#[tokio::test]
async fn delete_reply_counts_404_as_already_gone_even_after_a_lost_answer() {
    let server = MockServer::start().await;
    // First DELETE is applied but its answer is lost; the resend finds the
    // reply gone.
    Mock::given(method("DELETE"))
        .and(path(REPLY_PATH))
        .respond_with(
            Reply::new(200)
                .set_body_json(json!({}))
                .set_delay(Duration::from_millis(1000)),
        )
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path(REPLY_PATH))
        .respond_with(google_error(404, "NOT_FOUND"))
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        StaticToken::new("tok"),
    );
    let k = key("joes-bikes_reply_deletions_52_v1");
    let done = gbp.delete_reply(&k, &review()).await.unwrap();
    assert!(done.already_absent);
    assert_eq!(done.source, Source::Wire { attempts: 2 });
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Succeeded
    );
    let again = gbp.delete_reply(&k, &review()).await.unwrap();
    assert!(again.from_ledger() && again.already_absent);
}

#[tokio::test]
async fn reconcile_waits_then_finds_nothing_and_the_same_key_is_sent_again() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .respond_with(google_error(503, "UNAVAILABLE"))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .respond_with(Reply::new(200).set_body_json(created_post(9, "2024-05-01T10:00:00Z")))
        .expect(1)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(POSTS_PATH))
        .respond_with(Reply::new(200).set_body_json(json!({})))
        .expect(3)
        .mount(&server)
        .await;
    let clock = ManualClock::starting_now();
    let setup = sqlite_executor(Some(clock.clone())).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        StaticToken::new("tok"),
    );
    let k = key("joes-bikes_posts_53_v1");
    assert!(
        gbp.create_local_post(&k, &location(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );

    let unknown = row(&setup.executor, &k).await;
    let early = gbp
        .reconcile_local_post(&k, &location(), &post())
        .await
        .unwrap();
    // The ledger stores milliseconds, so the wait is 600 s less a fraction.
    assert!(
        matches!(early, Reconciliation::TooEarly { wait } if wait > Duration::from_secs(599) && wait <= Duration::from_secs(600)),
        "{early:?}"
    );
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Unknown
    );

    // A reconciler polling again later keeps counting from the outcome, not
    // from its own previous look.
    clock.advance(Duration::from_secs(300));
    let still_early = gbp
        .reconcile_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert!(
        matches!(still_early, Reconciliation::TooEarly { wait } if wait > Duration::from_secs(299) && wait <= Duration::from_secs(300)),
        "{still_early:?}"
    );
    // Neither look changed the row: no claim, no checkpoint, no new time.
    assert_eq!(row(&setup.executor, &k).await, unknown);
    clock.advance(Duration::from_secs(301));
    let late = gbp
        .reconcile_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert!(matches!(late, Reconciliation::NotFound), "{late:?}");
    let op = row(&setup.executor, &k).await;
    assert_eq!(op.state, OperationState::Pending);
    assert_eq!(op.claims, 1, "only the verdict changed the row");

    let created = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert_eq!(created.source, Source::Wire { attempts: 1 });
    let op = row(&setup.executor, &k).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.claims, 2, "the first send and the resend");
}

#[tokio::test]
async fn reconcile_refuses_other_content_and_reports_ambiguity() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .respond_with(google_error(503, "UNAVAILABLE"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(POSTS_PATH))
        .respond_with(Reply::new(200).set_body_json(json!({
            "localPosts": [created_post(1, "2999-01-01T00:00:00Z"), created_post(2, "2999-01-01T00:00:01Z")]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &server.uri(),
        StaticToken::new("tok"),
    );
    let k = key("joes-bikes_posts_54_v1");
    assert!(
        gbp.create_local_post(&k, &location(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );

    let other = LocalPost::standard("en-US", "Something else");
    let err = gbp
        .reconcile_local_post(&k, &location(), &other)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::KeyReused { .. }), "{err}");

    let verdict = gbp
        .reconcile_local_post(&k, &location(), &post())
        .await
        .unwrap();
    let Reconciliation::Ambiguous { candidates } = verdict else {
        panic!("expected Ambiguous, got {verdict:?}");
    };
    assert_eq!(candidates.len(), 2);
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Unknown
    );
}

#[tokio::test]
async fn lost_local_post_reconciles_on_postgres_too() {
    let Some(store) = idem::testing::pg_store("gbp lost local post").await else {
        return;
    };
    let executor = idem::Executor::builder(store).build();
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(POSTS_PATH))
        .respond_with(
            Reply::new(200)
                .set_body_json(created_post(8, "2999-01-01T00:00:00Z"))
                .set_delay(Duration::from_millis(1000)),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path(POSTS_PATH))
        .respond_with(Reply::new(200).set_body_json(json!({
            "localPosts": [created_post(8, "2999-01-01T00:00:00Z")]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let gbp = client(executor.clone(), &server.uri(), StaticToken::new("tok"));
    let k = key("joes-bikes_posts_55_v1");
    assert!(
        gbp.create_local_post(&k, &location(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    let verdict = gbp
        .reconcile_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert!(matches!(verdict, Reconciliation::Found(_)), "{verdict:?}");
    let op = row(&executor, &k).await;
    assert_eq!(op.state, OperationState::Succeeded);
    assert_eq!(op.claims, 1, "listing the posts claimed nothing");
}

#[tokio::test]
async fn refused_token_after_a_possibly_applied_attempt_leaves_the_reply_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .respond_with(google_error(503, "UNAVAILABLE"))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path(REPLY_PATH))
        .respond_with(google_error(401, "UNAUTHENTICATED"))
        .expect(2)
        .with_priority(2)
        .mount(&server)
        .await;
    let setup = sqlite_executor(None).await;
    let tokens = std::sync::Arc::new(CountingToken::new("stale", "also-bad"));
    let gbp = idem_gbp::GbpClient::builder_shared(setup.executor.clone(), tokens.clone())
        .base_url(server.uri())
        .retry(fast_retry())
        .build()
        .unwrap();
    let k = key("joes-bikes_review_replies_56_v1");
    let err = gbp
        .update_reply(&k, &review(), "Thanks!")
        .await
        .unwrap_err();
    // The 503 may have been applied: the row is unknown, not pending; an
    // upsert is still safe to resend.
    assert!(
        matches!(
            err,
            Error::OutcomeUnknown {
                resend_safe_until: Some(_),
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Unknown
    );
}
