//! Issue 13, adapter side: "not applied" needs positive proof. A Page post
//! listing that was cut short proves nothing about the posts not listed; and
//! reconciliation from the key alone ([`idem::reconcile::Reconcile`]) uses
//! what the row records (the Instagram container), or says "undetermined".

mod common;

use std::time::Duration;

use common::{LOST, Setup, key, setup, setup_pg};
use idem::OperationState;
use idem::reconcile::{Reconcile, ReconcileError, ReconcileVerdict};
use idem_meta::{IgMedia, IgUserId, PageId, PagePost, ReconcileOptions, Reconciled};
use idem_testkit::{FakeMeta, Fault};

fn page() -> PageId {
    PageId::new("1122334455")
}

fn post() -> PagePost {
    PagePost::message("Open late on Friday!")
}

fn ig() -> IgUserId {
    IgUserId::new("17841400000000000")
}

fn media() -> IgMedia {
    IgMedia::image("https://joes.bike/img/friday.jpg".parse().unwrap())
        .caption("Open late on Friday!")
}

fn grace() -> ReconcileOptions {
    ReconcileOptions::default().not_applied_after(Duration::from_secs(900))
}

/// The lost post is older than the 100 newest: it is on the second page.
async fn a_lost_post_beyond_the_first_page_is_found(s: Setup) {
    let fake = FakeMeta::start().await;
    fake.inject(Fault::LoseResponse { delay: LOST });
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_81_v1");
    assert!(
        meta.publish_page_post(&k, &page(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    for n in 0..150 {
        fake.seed_post(page().as_str(), &format!("Other news #{n}"));
    }
    s.clock.advance(Duration::from_secs(1200));
    match meta
        .reconcile_page_post(&k, &page(), &post(), grace())
        .await
        .unwrap()
    {
        Reconciled::Found { id, matches } => {
            assert_eq!(matches, 1);
            assert_eq!(id.as_str(), fake.posts()[0].id);
        }
        other => panic!("expected Found, got {other:?}"),
    }
    assert_eq!(s.state(&k).await, OperationState::Succeeded);
    assert_eq!(fake.side_effects(), 1, "posted once");
    assert_eq!(fake.write_requests(), 1);
}

#[tokio::test]
async fn a_lost_post_beyond_the_first_page_is_found_sqlite() {
    a_lost_post_beyond_the_first_page_is_found(setup().await).await;
}

#[tokio::test]
async fn a_lost_post_beyond_the_first_page_is_found_postgres() {
    let Some(s) = setup_pg("meta post beyond page one").await else {
        return;
    };
    a_lost_post_beyond_the_first_page_is_found(s).await;
}

/// More posts in the window than the lookup reads: not finding ours is not
/// proof, even after the grace period.
async fn a_cut_short_listing_is_not_proof_of_absence(s: Setup) {
    let fake = FakeMeta::start().await;
    fake.inject(Fault::LoseResponse { delay: LOST });
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_82_v1");
    assert!(
        meta.publish_page_post(&k, &page(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    for n in 0..(idem_meta::RECONCILE_MAX_PAGES * 100) {
        fake.seed_post(page().as_str(), &format!("Other news #{n}"));
    }
    s.clock.advance(Duration::from_secs(1200));
    let before = s.store.get(&k).await.unwrap().unwrap();
    assert_eq!(
        meta.reconcile_page_post(&k, &page(), &post(), grace())
            .await
            .unwrap(),
        Reconciled::NotFound
    );
    assert_eq!(s.store.get(&k).await.unwrap().unwrap(), before);
    assert!(
        meta.publish_page_post(&k, &page(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert_eq!(fake.side_effects(), 1, "not posted again");
}

#[tokio::test]
async fn a_cut_short_listing_is_not_proof_of_absence_sqlite() {
    a_cut_short_listing_is_not_proof_of_absence(setup().await).await;
}

#[tokio::test]
async fn a_cut_short_listing_is_not_proof_of_absence_postgres() {
    let Some(s) = setup_pg("meta cut short listing").await else {
        return;
    };
    a_cut_short_listing_is_not_proof_of_absence(s).await;
}

// ----- Reconcile (from the key alone) ------------------------------------

async fn instagram_from_the_recorded_container(s: Setup) {
    let fake = FakeMeta::start().await;
    let meta = s.client(&fake.base_url());
    assert_eq!(Reconcile::provider(&meta), "meta");

    // Published, answer lost: Applied.
    let published = key("joes-bikes_social_ig_83_v1");
    fake.inject(Fault::Pass);
    fake.inject(Fault::LoseResponse { delay: LOST });
    assert!(
        meta.publish_instagram(&published, &ig(), &media())
            .await
            .unwrap_err()
            .is_unknown()
    );
    match Reconcile::reconcile(&meta, &published).await.unwrap() {
        ReconcileVerdict::Applied { .. } => {}
        other => panic!("expected Applied, got {other:?}"),
    }
    assert_eq!(s.state(&published).await, OperationState::Succeeded);

    // Container ready, publish never happened: NotApplied, and the next run
    // publishes that same container, once.
    let ready = key("joes-bikes_social_ig_84_v1");
    fake.inject(Fault::Pass);
    fake.inject(Fault::StallWithoutEffect { delay: LOST });
    assert!(
        meta.publish_instagram(&ready, &ig(), &media())
            .await
            .unwrap_err()
            .is_unknown()
    );
    assert_eq!((fake.containers_created(), fake.media_published()), (2, 1));
    match Reconcile::reconcile(&meta, &ready).await.unwrap() {
        ReconcileVerdict::NotApplied { note } => assert!(note.contains("FINISHED"), "{note}"),
        other => panic!("expected NotApplied, got {other:?}"),
    }
    assert_eq!(s.state(&ready).await, OperationState::Pending);
    meta.publish_instagram(&ready, &ig(), &media())
        .await
        .unwrap();
    assert_eq!(
        (fake.containers_created(), fake.media_published()),
        (2, 2),
        "the recorded container was published; no new one"
    );

    // Container creation itself lost: nothing recorded to look up.
    let blind = key("joes-bikes_social_ig_85_v1");
    fake.inject(Fault::LoseResponse { delay: LOST });
    assert!(
        meta.publish_instagram(&blind, &ig(), &media())
            .await
            .unwrap_err()
            .is_unknown()
    );
    let before = s.store.get(&blind).await.unwrap().unwrap();
    assert!(matches!(
        Reconcile::reconcile(&meta, &blind).await.unwrap(),
        ReconcileVerdict::Undetermined { .. }
    ));
    assert_eq!(s.store.get(&blind).await.unwrap().unwrap(), before);
}

#[tokio::test]
async fn reconcile_trait_uses_the_recorded_instagram_container_sqlite() {
    instagram_from_the_recorded_container(setup().await).await;
}

#[tokio::test]
async fn reconcile_trait_uses_the_recorded_instagram_container_postgres() {
    let Some(s) = setup_pg("meta reconcile trait ig").await else {
        return;
    };
    instagram_from_the_recorded_container(s).await;
}

#[tokio::test]
async fn reconcile_trait_cannot_look_a_page_post_up_from_the_key_alone() {
    let s = setup().await;
    let fake = FakeMeta::start().await;
    let meta = s.client(&fake.base_url());
    let k = key("joes-bikes_social_posts_86_v1");
    fake.inject(Fault::LoseResponse { delay: LOST });
    assert!(
        meta.publish_page_post(&k, &page(), &post())
            .await
            .unwrap_err()
            .is_unknown()
    );
    let reads = fake.read_requests();
    let before = s.store.get(&k).await.unwrap().unwrap();
    match Reconcile::reconcile(&meta, &k).await.unwrap() {
        ReconcileVerdict::Undetermined { note } => {
            assert!(note.contains("reconcile_page_post"), "{note}");
        }
        other => panic!("expected Undetermined, got {other:?}"),
    }
    assert_eq!(s.store.get(&k).await.unwrap().unwrap(), before);
    assert_eq!(fake.read_requests(), reads);

    // Once settled, Applied with the post id.
    meta.reconcile_page_post(&k, &page(), &post(), ReconcileOptions::default())
        .await
        .unwrap();
    match Reconcile::reconcile(&meta, &k).await.unwrap() {
        ReconcileVerdict::Applied { provider_id, .. } => {
            assert_eq!(provider_id.as_deref(), Some(fake.posts()[0].id.as_str()));
        }
        other => panic!("expected Applied, got {other:?}"),
    }
    assert!(matches!(
        Reconcile::reconcile(&meta, &key("joes-bikes_social_posts_87_v1")).await,
        Err(ReconcileError::NotReconcilable { .. })
    ));
}
