//! Issue 13, adapter side: "not created" needs positive proof. A listed post
//! this version cannot read could be ours, so it blocks that verdict; and
//! reconciliation from the key alone cannot list anything (the row does not
//! hold the location or the post), so it says "undetermined".

mod common;

use std::time::Duration;

use common::*;
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
use idem::{Executor, ManualClock, OperationState};
use idem_gbp::{Reconciliation, StaticToken};
use idem_testkit::{FakeGbp, Fault};
use serde_json::json;

async fn unreadable_post_blocks_not_found(executor: Executor, clock: ManualClock) {
    let fake = FakeGbp::start_with_clock(clock.clone()).await;
    let gbp = client(executor.clone(), &fake.base_url(), StaticToken::new("tok"));
    let k = key("shop_posts_71_v1");
    fake.inject(Fault::ServerError);
    assert!(
        gbp.create_local_post(&k, &location(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    // A post whose shape this version does not read (here a call to action
    // that is not an object), with no time to exclude it: it could be ours.
    fake.seed_post(
        "111",
        "222",
        json!({
            "topicType": "STANDARD",
            "languageCode": "en-US",
            "summary": post().summary,
            "callToAction": "CALL",
        }),
    );
    clock.advance(Duration::from_secs(11 * 60));
    let before = row(&executor, &k).await;
    match gbp
        .reconcile_local_post(&k, &location(), &post())
        .await
        .unwrap()
    {
        Reconciliation::Ambiguous { candidates } => assert_eq!(candidates.len(), 1),
        other => panic!("expected Ambiguous, got {other:?}"),
    }
    let after = row(&executor, &k).await;
    assert_eq!(after.state, OperationState::Unknown);
    assert_eq!(after.claims, before.claims);
    assert!(
        gbp.create_local_post(&k, &location(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert_eq!(fake.write_requests(), 1, "nothing resent");
}

#[tokio::test]
async fn an_unreadable_listed_post_is_not_proof_of_absence_sqlite() {
    let clock = ManualClock::starting_now();
    let setup = sqlite_executor(Some(clock.clone())).await;
    unreadable_post_blocks_not_found(setup.executor.clone(), clock).await;
}

#[tokio::test]
async fn an_unreadable_listed_post_is_not_proof_of_absence_postgres() {
    let Some(store) = idem::testing::pg_store("gbp unreadable post").await else {
        return;
    };
    let clock = ManualClock::starting_now();
    let executor = Executor::builder(store).clock(clock.clone()).build();
    unreadable_post_blocks_not_found(executor, clock).await;
}

#[tokio::test]
async fn reconcile_trait_answers_from_the_row_or_says_undetermined() {
    let clock = ManualClock::starting_now();
    let setup = sqlite_executor(Some(clock.clone())).await;
    let fake = FakeGbp::start_with_clock(clock.clone()).await;
    let gbp = client(
        setup.executor.clone(),
        &fake.base_url(),
        StaticToken::new("tok"),
    );
    assert_eq!(Reconcile::provider(&gbp), "gbp");

    // Succeeded: Applied, with the post's resource name, from the ledger.
    let done = key("shop_posts_72_v1");
    let created = gbp
        .create_local_post(&done, &location(), &post())
        .await
        .unwrap();
    match Reconcile::reconcile(&gbp, &done).await.unwrap() {
        ReconcileVerdict::Applied { provider_id, .. } => {
            assert_eq!(provider_id, created.post.name);
        }
        other => panic!("expected Applied, got {other:?}"),
    }

    // Unknown: the lookup needs the location and the post, which the row
    // does not hold; nothing is read or changed.
    let k = key("shop_posts_73_v1");
    fake.inject(Fault::ServerError);
    assert!(
        gbp.create_local_post(&k, &location(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    clock.advance(Duration::from_secs(3600));
    let reads = fake.read_requests();
    let before = row(&setup.executor, &k).await;
    match Reconcile::reconcile(&gbp, &k).await.unwrap() {
        ReconcileVerdict::Undetermined { note } => {
            assert!(note.contains("reconcile_local_post"), "{note}");
        }
        other => panic!("expected Undetermined, got {other:?}"),
    }
    assert_eq!(row(&setup.executor, &k).await, before);
    assert_eq!(fake.read_requests(), reads);

    assert!(matches!(
        Reconcile::reconcile(&gbp, &key("shop_posts_74_v1")).await,
        Err(ReconcileError::NotReconcilable { .. })
    ));
}
