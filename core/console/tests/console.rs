//! The console over plain HTTP, on SQLite and PostgreSQL: who may come in,
//! CSRF on every action, the listing's filters, the timeline's privacy, the
//! actions and their audit rows.

mod support;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use idem::OperationState;
use idem_console::{Console, Principal, Role};
use support::*;

/// The "app's authentication" for these tests: `x-test-user: name:role:session`.
fn hook(req: &http::request::Parts) -> Option<Principal> {
    let v = req.headers.get("x-test-user")?.to_str().ok()?;
    let mut it = v.split(':');
    let (name, role, session) = (it.next()?, it.next()?, it.next()?);
    let role = match role {
        "operator" => Role::Operator,
        "viewer" => Role::Viewer,
        _ => return None,
    };
    Some(Principal::new(name, role, session))
}

const ALICE: (&str, &str) = ("x-test-user", "alice:operator:s1");

async fn start(db: &Db) -> std::net::SocketAddr {
    let ledger = db.ledger.clone().with_reconciler(Arc::new(FindsEverything {
        store: db.store.clone(),
        provider: "twilio",
    }));
    serve(Console::new(ledger, hook).router()).await
}

async fn token(addr: std::net::SocketAddr, who: (&str, &str)) -> String {
    let r = http(addr, "GET", "/api/csrf", &[who], "").await;
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["token"].as_str().unwrap().to_owned()
}

async fn state(db: &Db, k: &str) -> OperationState {
    db.store.get(&key(k)).await.unwrap().unwrap().state
}

async fn refusals(backend: Backend) {
    let Some(db) = open(backend, "console_refusals").await else {
        return;
    };
    seed(&*db.store, SystemTime::now()).await;
    let addr = start(&db).await;
    let retry = format!("/api/operations/{FAILED}/retry");
    let form_retry = format!("/ops/{FAILED}/retry");

    // Nobody signed in: every page and endpoint is refused.
    for (method, path) in [
        ("GET", "/".to_owned()),
        ("GET", format!("/ops/{FAILED}")),
        ("GET", "/inbound".to_owned()),
        ("GET", "/audit".to_owned()),
        ("GET", "/api/operations".to_owned()),
        ("GET", "/api/csrf".to_owned()),
        ("POST", retry.clone()),
        ("POST", form_retry.clone()),
    ] {
        let r = http(addr, method, &path, &[], "").await;
        assert_eq!(
            r.status, 401,
            "{method} {path} without authentication: {r:?}"
        );
        assert!(!r.body.contains("joes-bikes"), "{r:?}");
    }
    // A hook that says "nobody" for a malformed identity refuses too.
    let r = http(addr, "GET", "/", &[("x-test-user", "alice:root:s1")], "").await;
    assert_eq!(r.status, 401);

    // Signed in, but no CSRF token, a wrong one, or another session's.
    let t1 = token(addr, ALICE).await;
    let t2 = token(addr, ("x-test-user", "alice:operator:s2")).await;
    assert_ne!(t1, t2, "tokens are per session");
    let json = ("content-type", "application/json");
    let form = ("content-type", "application/x-www-form-urlencoded");
    for (headers, body, what) in [
        (vec![ALICE, json], "{}".to_owned(), "JSON without a token"),
        (
            vec![ALICE, json, ("x-csrf-token", "00ff")],
            "{}".to_owned(),
            "a wrong token",
        ),
        (
            vec![ALICE, json, ("x-csrf-token", t2.as_str())],
            "{}".to_owned(),
            "another session's token",
        ),
    ] {
        let r = http(addr, "POST", &retry, &headers, &body).await;
        assert_eq!(r.status, 403, "{what}: {r:?}");
    }
    for (body, what) in [
        (format!("confirm={FAILED}"), "a form without a token"),
        (
            format!("confirm={FAILED}&csrf=nope"),
            "a form with a wrong token",
        ),
        (
            format!("confirm={FAILED}&csrf={t2}"),
            "a form with another session's token",
        ),
    ] {
        let r = http(addr, "POST", &form_retry, &[ALICE, form], &body).await;
        assert_eq!(r.status, 403, "{what}: {r:?}");
    }
    let r = http(
        addr,
        "POST",
        &format!("/api/operations/{UNKNOWN}/reconcile"),
        &[ALICE],
        "",
    )
    .await;
    assert_eq!(r.status, 403, "reconcile without a token: {r:?}");
    assert_eq!(
        state(&db, FAILED).await,
        OperationState::Failed,
        "nothing changed"
    );
    assert_eq!(
        state(&db, UNKNOWN).await,
        OperationState::Unknown,
        "nothing changed"
    );

    // A viewer may look but not act, even with a valid token.
    let viewer = ("x-test-user", "victor:viewer:s9");
    assert_eq!(http(addr, "GET", "/", &[viewer], "").await.status, 200);
    let tv = token(addr, viewer).await;
    let r = http(
        addr,
        "POST",
        &retry,
        &[viewer, json, ("x-csrf-token", tv.as_str())],
        "{}",
    )
    .await;
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(state(&db, FAILED).await, OperationState::Failed);
    let page = http(addr, "GET", &format!("/ops/{UNKNOWN}"), &[viewer], "").await;
    assert!(
        !page.body.contains("id=\"reconcile\""),
        "no action buttons for a viewer"
    );

    // The right token works, in the header and in the form.
    let r = http(
        addr,
        "POST",
        &retry,
        &[ALICE, json, ("x-csrf-token", t1.as_str())],
        "{}",
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["next"], "joes-bikes_transactions_1_v2");
    let r = http(
        addr,
        "POST",
        &format!("/ops/{OLD_FAILED}/retry"),
        &[ALICE, form],
        &format!("csrf={t1}&confirm={OLD_FAILED}"),
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        r.body.contains("joes-bikes_transactions_7_v2"),
        "{}",
        r.body
    );

    // The audit shows who did what.
    let audit = http(addr, "GET", "/api/audit", &[ALICE], "").await.json();
    let rows = audit.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{audit}");
    assert_eq!(rows[1]["actor"], "alice");
    assert_eq!(rows[1]["state_before"], "failed");
    assert_eq!(rows[1]["state_after"], "superseded");
}

#[tokio::test]
async fn refusals_sqlite() {
    refusals(Backend::Sqlite).await;
}

#[tokio::test]
async fn refusals_postgres() {
    refusals(Backend::Postgres).await;
}

fn keys(v: &serde_json::Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["key"].as_str().unwrap().to_owned())
        .collect()
}

async fn listing(backend: Backend) {
    let Some(db) = open(backend, "console_listing").await else {
        return;
    };
    seed(&*db.store, SystemTime::now()).await;
    let addr = start(&db).await;
    let list = |q: &'static str| async move {
        let r = http(addr, "GET", &format!("/api/operations{q}"), &[ALICE], "").await;
        assert_eq!(r.status, 200, "{q}: {r:?}");
        let mut k = keys(&r.json());
        k.sort();
        k
    };
    let mut all = vec![
        FAILED,
        UNKNOWN,
        OTHER_SHOP_UNKNOWN,
        STALE_SENDING,
        OLD_FAILED,
    ];
    all.sort();
    assert_eq!(
        list("").await,
        all,
        "failed, unknown, expired sending; not succeeded nor a live lease"
    );
    assert_eq!(list("?provider=twilio").await, vec![UNKNOWN]);
    assert_eq!(list("?state=unknown").await, {
        let mut v = vec![UNKNOWN, OTHER_SHOP_UNKNOWN];
        v.sort();
        v
    });
    assert_eq!(list("?state=sending").await, vec![STALE_SENDING]);
    assert_eq!(list("?shop=ann-cycles").await, vec![OTHER_SHOP_UNKNOWN]);
    assert_eq!(list("?age=2d").await, vec![OLD_FAILED]);
    assert_eq!(
        list("?state=failed&provider=stripe&shop=joes-bikes&age=30m").await,
        {
            let mut v = vec![FAILED, OLD_FAILED];
            v.sort();
            v
        }
    );
    assert_eq!(list("?state=succeeded").await, vec![SUCCEEDED]);

    // Pages: 5 rows, 2 per page.
    let mut seen = Vec::new();
    for page in 1..=3 {
        let r = http(
            addr,
            "GET",
            &format!("/api/operations?per_page=2&page={page}"),
            &[ALICE],
            "",
        )
        .await
        .json();
        assert_eq!(r["has_next"], page < 3, "page {page}: {r}");
        seen.extend(keys(&r));
    }
    seen.sort();
    assert_eq!(seen, all, "every row on exactly one page");

    // Bad filters are a 400, not a crash.
    for q in ["?state=nope", "?age=soon", "?shop=Bad_Shop"] {
        let r = http(addr, "GET", &format!("/api/operations{q}"), &[ALICE], "").await;
        assert_eq!(r.status, 400, "{q}: {r:?}");
        let r = http(addr, "GET", &format!("/{q}"), &[ALICE], "").await;
        assert_eq!(r.status, 400, "page {q}: {r:?}");
    }

    // The HTML listing filters the same way and links to each operation.
    let page = http(addr, "GET", "/?provider=twilio", &[ALICE], "").await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!("href=\"/ops/{UNKNOWN}\"")),
        "{}",
        page.body
    );
    assert!(!page.body.contains(FAILED));
}

#[tokio::test]
async fn listing_sqlite() {
    listing(Backend::Sqlite).await;
}

#[tokio::test]
async fn listing_postgres() {
    listing(Backend::Postgres).await;
}

async fn actions(backend: Backend) {
    let Some(db) = open(backend, "console_actions").await else {
        return;
    };
    seed(&*db.store, SystemTime::now()).await;
    let addr = start(&db).await;
    let t = token(addr, ALICE).await;
    let json = ("content-type", "application/json");
    let csrf = ("x-csrf-token", t.as_str());
    let post = |path: String, body: &'static str| {
        let t = t.clone();
        async move {
            http(
                addr,
                "POST",
                &path,
                &[ALICE, json, ("x-csrf-token", t.as_str())],
                body,
            )
            .await
        }
    };

    // Retrying an unknown row needs the key typed; the refusal carries the warning.
    let r = post(format!("/api/operations/{UNKNOWN}/retry"), "{}").await;
    assert_eq!(r.status, 422, "{r:?}");
    assert_eq!(r.json()["code"], "confirmation_required");
    assert!(
        r.json()["warning"]
            .as_str()
            .unwrap()
            .contains("may already have happened")
    );
    let r = post(
        format!("/api/operations/{UNKNOWN}/retry"),
        r#"{"confirm":"joes-bikes_service_ticket_messages_2_v9"}"#,
    )
    .await;
    assert_eq!(r.status, 422, "a different key is no confirmation: {r:?}");
    assert_eq!(state(&db, UNKNOWN).await, OperationState::Unknown);
    // The confirmation page offers Reconcile first.
    let page = http(addr, "GET", &format!("/ops/{UNKNOWN}/retry"), &[ALICE], "").await;
    assert!(
        page.body.contains("may already have happened") && page.body.contains("Reconcile first"),
        "{}",
        page.body
    );

    // Reconcile it instead: the test lookup finds it.
    let r = post(format!("/api/operations/{UNKNOWN}/reconcile"), "").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["verdict"], "applied");
    assert_eq!(r.json()["after"]["state"], "succeeded");
    assert_eq!(state(&db, UNKNOWN).await, OperationState::Succeeded);

    // No reconciliation registered for stripe: a clear 409, nothing audited.
    let r = post(
        format!("/api/operations/{OTHER_SHOP_UNKNOWN}/reconcile"),
        "",
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (409, Some("no_reconciler")),
        "{r:?}"
    );

    // The typed confirmation lets the other unknown one through.
    let r = post(
        format!("/api/operations/{OTHER_SHOP_UNKNOWN}/retry"),
        r#"{"confirm":"ann-cycles_transactions_3_v1"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["next"], "ann-cycles_transactions_3_v2");

    // A succeeded row needs force (and the typed key).
    let r = post(
        format!("/api/operations/{SUCCEEDED}/retry"),
        r#"{"confirm":"joes-bikes_transactions_4_v1"}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (422, Some("force_required")),
        "{r:?}"
    );
    let r = post(
        format!("/api/operations/{SUCCEEDED}/retry"),
        r#"{"force":true}"#,
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (422, Some("confirmation_required")),
        "{r:?}"
    );
    assert_eq!(state(&db, SUCCEEDED).await, OperationState::Succeeded);
    let r = post(
        format!("/api/operations/{SUCCEEDED}/retry"),
        r#"{"force":true,"confirm":"joes-bikes_transactions_4_v1"}"#,
    )
    .await;
    assert_eq!(r.status, 200, "{r:?}");

    // A sending row needs the typed key too; with it, the live lease is
    // refused by the store, and the refusal is audited.
    let r = post(
        format!("/api/operations/{LIVE_SENDING}/retry"),
        r#"{"confirm":"joes-bikes_social_posts_6_v1"}"#,
    )
    .await;
    assert_eq!(r.status, 409, "{r:?}");
    assert_eq!(state(&db, LIVE_SENDING).await, OperationState::Sending);
    // Unknown keys and bad keys.
    let r = post(
        "/api/operations/joes-bikes_transactions_999_v1/retry".into(),
        "{}",
    )
    .await;
    assert_eq!(r.status, 404, "{r:?}");
    let r = post("/api/operations/Not-A-Key/retry".into(), "{}").await;
    assert_eq!(r.status, 400, "{r:?}");

    let audit = http(addr, "GET", "/api/audit", &[ALICE, csrf], "")
        .await
        .json();
    let got: Vec<(String, String, String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|r| {
            let s = |f: &str| r[f].as_str().unwrap_or("-").to_owned();
            (
                s("action"),
                s("key"),
                format!("{}→{}", s("state_before"), s("state_after")),
                s("outcome"),
            )
        })
        .collect();
    let row = |a: &str, k: &str, t: &str, o: &str| {
        (a.to_owned(), k.to_owned(), t.to_owned(), o.to_owned())
    };
    assert_eq!(
        got,
        vec![
            row("reconcile", UNKNOWN, "unknown→succeeded", "applied"),
            row("retry", OTHER_SHOP_UNKNOWN, "unknown→superseded", "ok"),
            row("retry", SUCCEEDED, "succeeded→superseded", "ok"),
            row("retry", LIVE_SENDING, "sending→sending", "refused"),
        ],
        "{audit}"
    );
    // The operation's page shows its own audit rows.
    let page = http(addr, "GET", &format!("/ops/{UNKNOWN}"), &[ALICE], "").await;
    assert!(
        page.body.contains("found by the test lookup") && page.body.contains("applied"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn actions_sqlite() {
    actions(Backend::Sqlite).await;
}

#[tokio::test]
async fn actions_postgres() {
    actions(Backend::Postgres).await;
}

async fn privacy_and_inbound(backend: Backend) {
    let Some(db) = open(backend, "console_privacy").await else {
        return;
    };
    let now = SystemTime::now();
    seed(&*db.store, now).await;
    let addr = start(&db).await;
    // Timelines show provider ids, never bodies.
    for path in [
        format!("/ops/{SUCCEEDED}"),
        format!("/api/operations/{SUCCEEDED}"),
        format!("/ops/{FAILED}"),
        format!("/api/operations/{FAILED}"),
        "/?state=succeeded".to_owned(),
        "/api/operations?state=succeeded,failed".to_owned(),
    ] {
        let r = http(addr, "GET", &path, &[ALICE], "").await;
        assert_eq!(r.status, 200, "{path}");
        assert!(
            !r.body.contains(BODY_SECRET),
            "{path} leaks the body: {}",
            r.body
        );
    }
    let t = http(
        addr,
        "GET",
        &format!("/api/operations/{SUCCEEDED}"),
        &[ALICE],
        "",
    )
    .await
    .json();
    assert_eq!(t["operation"]["provider_id"], "pi_42");
    assert!(t["operation"]["first_sent_at"].is_string());
    assert_eq!(t["attempts"].as_array().unwrap().len(), 1);
    let page = http(addr, "GET", &format!("/ops/{FAILED}"), &[ALICE], "")
        .await
        .body;
    assert!(
        page.contains("ch_declined")
            && page.contains("card declined")
            && page.contains("first attempt"),
        "{page}"
    );

    // Inbound: one request holds a record right now, one died holding one.
    use idem::inbound::{BeginRequest, ClientKey, InboundStore, Scope};
    let inbound: Box<dyn InboundStore> = match backend {
        Backend::Sqlite => Box::new(idem::ledger::SqliteStore::open(&db.url).await.unwrap()),
        Backend::Postgres => Box::new(idem::ledger::PgStore::connect(&db.url).await.unwrap()),
    };
    for (k, lease, at) in [
        ("live-request-1", Duration::from_secs(600), now),
        (
            "dead-request-2",
            Duration::from_secs(5),
            now - Duration::from_secs(60),
        ),
    ] {
        let scope = Scope {
            actor: "shop-7".into(),
            endpoint: "orders.create".into(),
            key: ClientKey::new(k).unwrap(),
        };
        let fp = idem::Fingerprint::builder().body(k.as_bytes()).finish();
        inbound
            .begin(
                &BeginRequest {
                    scope: &scope,
                    fingerprint: &fp,
                    ttl: Duration::from_secs(3600),
                    lease_for: lease,
                },
                at,
            )
            .await
            .unwrap();
    }
    let r = http(addr, "GET", "/api/inbound", &[ALICE], "").await.json();
    let items = r["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{r}");
    assert_eq!(
        (items[0]["key"].as_str(), items[0]["stuck"].as_bool()),
        (Some("dead-request-2"), Some(true))
    );
    assert_eq!(
        (items[1]["key"].as_str(), items[1]["stuck"].as_bool()),
        (Some("live-request-1"), Some(false))
    );
    let page = http(addr, "GET", "/inbound", &[ALICE], "").await.body;
    assert!(
        page.contains("dead-request-2") && page.contains("stuck") && page.contains("orders.create"),
        "{page}"
    );
}

#[tokio::test]
async fn privacy_and_inbound_sqlite() {
    privacy_and_inbound(Backend::Sqlite).await;
}

#[tokio::test]
async fn privacy_and_inbound_postgres() {
    privacy_and_inbound(Backend::Postgres).await;
}

/// `idem serve`'s own login, over plain HTTP.
#[tokio::test]
async fn serve_login_refuses_strangers() {
    let Some(db) = open(Backend::Sqlite, "serve_login").await else {
        return;
    };
    seed(&*db.store, SystemTime::now()).await;
    let account =
        idem_console::login::SingleOperator::new("olga", "correct horse", Role::Operator).unwrap();
    assert!(idem_console::login::SingleOperator::new("olga", "short", Role::Operator).is_err());
    let addr = serve(idem_console::login::app(db.ledger.clone(), account)).await;
    let html = ("accept", "text/html");
    let r = http(addr, "GET", "/", &[html], "").await;
    assert_eq!(
        r.status, 303,
        "a browser without a session is sent to the login: {r:?}"
    );
    assert_eq!(r.header("location").as_deref(), Some("/login"));
    assert_eq!(
        http(addr, "GET", "/api/operations", &[], "").await.status,
        401
    );
    let form = ("content-type", "application/x-www-form-urlencoded");
    let r = http(
        addr,
        "POST",
        "/login",
        &[form],
        "name=olga&password=wrong+horse",
    )
    .await;
    assert_eq!(r.status, 401);
    assert!(r.header("set-cookie").is_none());
    let r = http(
        addr,
        "GET",
        "/",
        &[("cookie", "idem_console_session=forged")],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "a made-up session is nobody");
    let r = http(
        addr,
        "POST",
        "/login",
        &[form],
        "name=olga&password=correct+horse",
    )
    .await;
    assert_eq!(r.status, 303, "{r:?}");
    let cookie = r.header("set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let r = http(addr, "GET", "/", &[("cookie", &cookie)], "").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains(FAILED) && r.body.contains("olga"));
    // Signed in, but a POST without the token is still refused.
    let r = http(
        addr,
        "POST",
        &format!("/ops/{FAILED}/retry"),
        &[("cookie", &cookie), form],
        &format!("confirm={FAILED}"),
    )
    .await;
    assert_eq!(r.status, 403);
    assert_eq!(state(&db, FAILED).await, OperationState::Failed);
}
