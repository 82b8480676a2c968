//! Tests against the simulated provider: its side-effect counter, kept by the
//! fake and not by the client, shows what really happened at "Google".

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use idem::{ManualClock, OperationState};
use idem_gbp::{Error, GbpClient, Reconciliation, StaticToken};
use idem_testkit::{FakeGbp, Fault};
use serde_json::json;

#[tokio::test]
async fn reply_after_server_error_is_applied_once() {
    let fake = FakeGbp::start().await;
    fake.inject(Fault::ServerError);
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_review_replies_1_v1");
    let done = gbp.update_reply(&k, &review(), "Thank you!").await.unwrap();
    assert_eq!(done.reply.comment, "Thank you!");
    assert!(done.reply.update_time.is_some());
    assert_eq!(fake.write_requests(), 2);
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(
        fake.reply("111", "222", "rev-1").as_deref(),
        Some("Thank you!")
    );
    // Replaying makes no request.
    gbp.update_reply(&k, &review(), "Thank you!").await.unwrap();
    assert_eq!(fake.write_requests(), 2);
}

#[tokio::test]
async fn reply_whose_answer_was_lost_is_resent_and_still_one_reply() {
    let fake = FakeGbp::start().await;
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_millis(800),
    });
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_review_replies_2_v1");
    gbp.update_reply(&k, &review(), "Thanks").await.unwrap();
    // Both PUTs were applied (an upsert), and one reply exists.
    assert_eq!(fake.write_requests(), 2);
    assert_eq!(fake.reply("111", "222", "rev-1").as_deref(), Some("Thanks"));
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Succeeded
    );
}

#[tokio::test]
async fn lost_local_post_is_created_once_and_found_across_pages() {
    let clock = ManualClock::starting_now();
    let fake = FakeGbp::start_with_clock(clock.clone()).await;
    fake.set_max_page_size(2);
    // Older posts, one of them with identical content, created an hour ago.
    let an_hour_ago = "2000-01-01T00:00:00Z";
    for summary in [
        "Old news",
        post().summary.as_deref().unwrap_or_default(),
        "More",
    ] {
        fake.seed_post(
            "111",
            "222",
            json!({"summary": summary, "languageCode": "en-US", "topicType": "STANDARD", "createTime": an_hour_ago}),
        );
    }
    fake.inject(Fault::LoseResponse {
        delay: Duration::from_millis(800),
    });
    let setup = sqlite_executor(Some(clock.clone())).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_posts_1_v1");

    let err = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    assert_eq!(fake.write_requests(), 1);
    assert_eq!(fake.side_effects(), 1, "Google did create it");

    let verdict = gbp
        .reconcile_local_post(&k, &location(), &post())
        .await
        .unwrap();
    let Reconciliation::Found(found) = verdict else {
        panic!("expected Found, got {verdict:?}");
    };
    assert_eq!(
        found.post.name.as_deref(),
        Some("accounts/111/locations/222/localPosts/4")
    );
    assert_eq!(fake.read_requests(), 2, "4 posts in pages of 2");
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Succeeded
    );

    let replay = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert!(replay.from_ledger());
    assert_eq!(fake.write_requests(), 1);
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.posts("111", "222").len(), 4);
}

#[tokio::test]
async fn deadline_exceeded_after_the_post_was_made_reconciles_to_found() {
    let fake = FakeGbp::start().await;
    fake.inject(Fault::ServerErrorAfterEffect);
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_posts_2_v1");
    let err = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap_err();
    assert!(err.is_unknown(), "{err}");
    let verdict = gbp
        .reconcile_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert!(matches!(verdict, Reconciliation::Found(_)), "{verdict:?}");
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.write_requests(), 1);
}

#[tokio::test]
async fn unprocessed_post_is_sent_again_only_after_reconcile_says_not_found() {
    let clock = ManualClock::starting_now();
    let fake = FakeGbp::start_with_clock(clock.clone()).await;
    fake.inject(Fault::ServerError);
    let setup = sqlite_executor(Some(clock.clone())).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_posts_3_v1");

    assert!(
        gbp.create_local_post(&k, &location(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert_eq!(fake.side_effects(), 0);
    // The job is retried: no resend while the outcome is unknown.
    assert!(
        gbp.create_local_post(&k, &location(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert_eq!(fake.write_requests(), 1);

    assert!(matches!(
        gbp.reconcile_local_post(&k, &location(), &post())
            .await
            .unwrap(),
        Reconciliation::TooEarly { .. }
    ));
    clock.advance(Duration::from_secs(11 * 60));
    assert!(matches!(
        gbp.reconcile_local_post(&k, &location(), &post())
            .await
            .unwrap(),
        Reconciliation::NotFound
    ));
    gbp.create_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert_eq!(fake.write_requests(), 2);
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.posts("111", "222").len(), 1);
}

#[tokio::test]
async fn rate_limited_post_is_resent_and_created_once() {
    let fake = FakeGbp::start().await;
    fake.inject(Fault::RateLimited {
        retry_after_secs: 1,
    });
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_posts_4_v1");
    gbp.create_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert_eq!(fake.write_requests(), 2);
    assert_eq!(fake.side_effects(), 1);
}

#[tokio::test]
async fn rate_limit_longer_than_allowed_leaves_the_post_pending() {
    let fake = FakeGbp::start().await;
    fake.inject(Fault::RateLimited {
        retry_after_secs: 60,
    });
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_posts_5_v1");
    let err = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap_err();
    let Error::NotSent { retry_after, .. } = &err else {
        panic!("expected NotSent, got {err}");
    };
    assert_eq!(*retry_after, Some(Duration::from_secs(60)));
    assert!(err.is_retryable());
    assert_eq!(
        row(&setup.executor, &k).await.state,
        OperationState::Pending
    );
    gbp.create_local_post(&k, &location(), &post())
        .await
        .unwrap();
    assert_eq!(fake.side_effects(), 1);
}

#[tokio::test]
async fn stale_token_is_refreshed_once_against_the_fake() {
    let fake = FakeGbp::start().await;
    fake.require_token("fresh");
    let setup = sqlite_executor(None).await;
    let tokens = Arc::new(CountingToken::new("stale", "fresh"));
    let gbp = GbpClient::builder_shared(setup.executor.clone(), tokens.clone())
        .base_url(fake.base_url())
        .retry(fast_retry())
        .build()
        .unwrap();
    gbp.create_local_post(&key("shop_posts_6_v1"), &location(), &post())
        .await
        .unwrap();
    gbp.update_reply(&key("shop_review_replies_6_v1"), &review(), "Thanks")
        .await
        .unwrap();
    assert_eq!(tokens.refreshes(), 1);
    assert_eq!(fake.write_requests(), 3);
    assert_eq!(fake.side_effects(), 2);
}

#[tokio::test]
async fn deleting_twice_is_one_deletion() {
    let fake = FakeGbp::start().await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    gbp.update_reply(&key("shop_review_replies_7_v1"), &review(), "Hi")
        .await
        .unwrap();
    let first = gbp
        .delete_reply(&key("shop_reply_deletions_7_v1"), &review())
        .await
        .unwrap();
    assert!(!first.already_absent);
    let second = gbp
        .delete_reply(&key("shop_reply_deletions_8_v1"), &review())
        .await
        .unwrap();
    assert!(second.already_absent);
    assert_eq!(fake.side_effects(), 2, "one reply written, one deleted");
    assert_eq!(fake.reply("111", "222", "rev-1"), None);
}

#[tokio::test]
async fn concurrent_workers_on_one_key_post_once() {
    let fake = FakeGbp::start().await;
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_posts_9_v1");
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let gbp = gbp.clone();
        let k = k.clone();
        tasks.push(tokio::spawn(async move {
            gbp.create_local_post(&k, &location(), &post()).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(e) => assert!(e.is_retryable(), "only in-flight refusals expected: {e}"),
        }
    }
    assert!(ok >= 1);
    assert_eq!(fake.side_effects(), 1);
    assert_eq!(fake.write_requests(), 1);
}

#[tokio::test]
async fn invalid_argument_fault_ends_failed() {
    let fake = FakeGbp::start().await;
    fake.inject(FakeGbp::invalid_argument());
    let setup = sqlite_executor(None).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_posts_10_v1");
    let err = gbp
        .create_local_post(&k, &location(), &post())
        .await
        .unwrap_err();
    assert_eq!(
        err.wire_error().map(|e| e.status.as_str()),
        Some("INVALID_ARGUMENT")
    );
    assert_eq!(fake.write_requests(), 1);
    assert_eq!(fake.side_effects(), 0);
    assert_eq!(row(&setup.executor, &k).await.state, OperationState::Failed);
}

#[tokio::test]
async fn a_resend_that_fails_again_starts_a_new_settle_period() {
    let clock = ManualClock::starting_now();
    let fake = FakeGbp::start_with_clock(clock.clone()).await;
    fake.inject(Fault::ServerError);
    fake.inject(Fault::ServerError);
    let setup = sqlite_executor(Some(clock.clone())).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    let k = key("shop_posts_11_v1");
    assert!(
        gbp.create_local_post(&k, &location(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert!(matches!(
        gbp.reconcile_local_post(&k, &location(), &post())
            .await
            .unwrap(),
        Reconciliation::TooEarly { .. }
    ));
    clock.advance(Duration::from_secs(11 * 60));
    assert!(matches!(
        gbp.reconcile_local_post(&k, &location(), &post())
            .await
            .unwrap(),
        Reconciliation::NotFound
    ));
    // The resend fails the same way: the new unknown outcome gets its own
    // settle time, not the one that already ran out.
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
    assert!(
        matches!(verdict, Reconciliation::TooEarly { wait } if wait > Duration::from_secs(599)),
        "{verdict:?}"
    );
    assert_eq!(fake.write_requests(), 2);
    assert_eq!(fake.side_effects(), 0);
}
