//! The console in a real browser: Debian's Chromium driven through WebDriver
//! (chromedriver, started here), on SQLite and PostgreSQL. The operator
//! signs in, filters, opens an `unknown` operation, reconciles it, retries a
//! `failed` one through its confirmation page, and finds both in the audit
//! log; screenshots are saved along the way.
//!
//! These tests are `#[ignore]`d so that `cargo test --workspace` needs no
//! browser; `.ci/browser.sh` installs Chromium and runs them with
//! `--ignored`. Without chromedriver they skip loudly, except under CI, where
//! they fail.
//!
//! `CHROMEDRIVER` and `CHROMIUM` name the programs when they are not on
//! `PATH` / in `/usr/bin`. Screenshots go to `IDEM_SCREENSHOT_DIR` (default: a folder in the system's
//! temporary directory), one subfolder per database.

mod support;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fantoccini::{Client, ClientBuilder, Locator};
use idem::OperationState;
use idem_console::Role;
use idem_console::login::{SingleOperator, app};
use support::*;

const USER: &str = "olga";
const PASSWORD: &str = "correct horse battery";

fn find_chromedriver() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMEDRIVER") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("chromedriver"))
        .find(|p| p.is_file())
}

fn find_chromium() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// chromedriver and Chromium, or `None` after a loud SKIP (never under CI).
fn browser_or_skip(test: &str) -> Option<(PathBuf, PathBuf)> {
    match (find_chromedriver(), find_chromium()) {
        (Some(driver), Some(chromium)) => Some((driver, chromium)),
        missing => {
            assert!(
                !idem::testing::in_ci(),
                "CI is set but chromedriver/chromium are missing ({missing:?}): \
                 .ci/browser.sh installs Debian's chromium and chromium-driver"
            );
            // Straight to the process's stderr, past the test harness's
            // capture: a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "\n!!!!! SKIPPED browser test `{test}`: chromedriver or chromium not found \
                 ({missing:?}).\n!!!!! apt-get install chromium chromium-driver, or run .ci/browser.sh.\n"
            );
            None
        }
    }
}

struct Driver {
    child: tokio::process::Child,
    url: String,
}

async fn start_driver(driver: &Path) -> Driver {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = tokio::process::Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start chromedriver");
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start on {url}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Driver { child, url }
}

async fn connect(driver: &Driver, chromium: &Path, profile: &tempfile::TempDir) -> Client {
    let args = [
        "--headless".to_owned(),
        "--no-sandbox".to_owned(),
        "--disable-gpu".to_owned(),
        "--disable-quic".to_owned(),
        "--no-first-run".to_owned(),
        "--disable-background-networking".to_owned(),
        "--disable-component-update".to_owned(),
        "--disable-sync".to_owned(),
        "--disable-dev-shm-usage".to_owned(),
        "--window-size=1280,900".to_owned(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({ "binary": chromium, "args": args }),
    );
    let mut last = None;
    for _ in 0..3 {
        match ClientBuilder::native()
            .capabilities(caps.clone())
            .connect(&driver.url)
            .await
        {
            Ok(c) => return c,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    panic!("cannot start a Chromium session: {last:?}");
}

fn shots_dir(backend: Backend) -> PathBuf {
    let base = std::env::var_os("IDEM_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("idem-console-screenshots"));
    let dir = base.join(match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(c: &Client, dir: &Path, name: &str) {
    let png = c.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "{name}: not a PNG");
    let path = dir.join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn text(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Waits until the page's query string holds `part` (the form was submitted).
async fn wait_query(c: &Client, part: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !c
        .current_url()
        .await
        .unwrap()
        .query()
        .is_some_and(|q| q.contains(part))
    {
        assert!(Instant::now() < deadline, "the page never showed {part:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(backend: Backend, test: &str) {
    let Some((driver, chromium)) = browser_or_skip(test) else {
        return;
    };
    let Some(db) = open(backend, test).await else {
        return;
    };
    seed(&*db.store, SystemTime::now()).await;
    let ledger = db.ledger.clone().with_reconciler(Arc::new(FindsEverything {
        store: db.store.clone(),
        provider: "twilio",
    }));
    let account = SingleOperator::new(USER, PASSWORD, Role::Operator).unwrap();
    let addr = serve(app(ledger, account)).await;
    let base = format!("http://{addr}");
    let dir = shots_dir(backend);

    let mut drv = start_driver(&driver).await;
    let profile = tempfile::tempdir().unwrap();
    let c = connect(&drv, &chromium, &profile).await;
    c.set_window_size(1280, 900).await.unwrap();

    // Not signed in: the console sends the browser to the login page.
    c.goto(&format!("{base}/")).await.unwrap();
    assert!(c.current_url().await.unwrap().path().ends_with("/login"));
    shot(&c, &dir, "01-login").await;
    c.find(Locator::Id("name"))
        .await
        .unwrap()
        .send_keys(USER)
        .await
        .unwrap();
    c.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    click(&c, "#sign-in").await;
    c.wait()
        .for_element(Locator::Css("table#operations"))
        .await
        .unwrap();
    let listing = text(&c, "table#operations").await;
    assert!(
        listing.contains(FAILED) && listing.contains(UNKNOWN) && listing.contains(STALE_SENDING),
        "{listing}"
    );
    assert!(
        !listing.contains(SUCCEEDED) && !listing.contains(LIVE_SENDING),
        "{listing}"
    );
    assert!(text(&c, "header").await.contains(USER));
    shot(&c, &dir, "02-attention").await;

    // Filter by provider.
    c.find(Locator::Id("f-provider"))
        .await
        .unwrap()
        .send_keys("twilio")
        .await
        .unwrap();
    click(&c, "#apply-filter").await;
    wait_query(&c, "provider=twilio").await;
    let listing = text(&c, "table#operations").await;
    assert!(
        listing.contains(UNKNOWN) && !listing.contains(FAILED),
        "{listing}"
    );
    shot(&c, &dir, "03-filtered").await;

    // Open the unknown operation and reconcile it.
    click(&c, &format!("a[href=\"/ops/{UNKNOWN}\"]")).await;
    c.wait()
        .for_element(Locator::Css("table#timeline"))
        .await
        .unwrap();
    assert!(text(&c, "dl").await.contains("unknown"));
    assert!(
        text(&c, "table#timeline")
            .await
            .contains("timed out after sending")
    );
    shot(&c, &dir, "04-timeline-unknown").await;
    click(&c, "#reconcile").await;
    let verdict = c
        .wait()
        .for_element(Locator::Id("verdict"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(verdict.contains("Applied"), "{verdict}");
    assert_eq!(
        db.store.get(&key(UNKNOWN)).await.unwrap().unwrap().state,
        OperationState::Succeeded
    );
    shot(&c, &dir, "05-reconciled").await;

    // Filter to failed stripe charges, open one, retry it with confirmation.
    c.goto(&format!("{base}/")).await.unwrap();
    c.find(Locator::Id("f-state"))
        .await
        .unwrap()
        .select_by_value("failed")
        .await
        .unwrap();
    c.find(Locator::Id("f-shop"))
        .await
        .unwrap()
        .send_keys("joes-bikes")
        .await
        .unwrap();
    click(&c, "#apply-filter").await;
    wait_query(&c, "state=failed").await;
    let listing = text(&c, "table#operations").await;
    assert!(
        listing.contains(FAILED) && !listing.contains(STALE_SENDING),
        "{listing}"
    );
    click(&c, &format!("a[href=\"/ops/{FAILED}\"]")).await;
    c.wait()
        .for_element(Locator::Css("table#timeline"))
        .await
        .unwrap();
    let details = text(&c, "dl").await;
    assert!(
        details.contains("ch_declined") && !details.contains(BODY_SECRET),
        "{details}"
    );
    click(&c, "#retry").await;
    c.wait()
        .for_element(Locator::Id("confirm-retry"))
        .await
        .unwrap();
    shot(&c, &dir, "06-retry-confirm").await;
    assert_eq!(
        db.store.get(&key(FAILED)).await.unwrap().unwrap().state,
        OperationState::Failed,
        "opening the confirmation changes nothing"
    );
    click(&c, "#confirm-retry").await;
    let next = c
        .wait()
        .for_element(Locator::Id("next-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(next, "joes-bikes_transactions_1_v2");
    assert_eq!(
        db.store.get(&key(FAILED)).await.unwrap().unwrap().state,
        OperationState::Superseded
    );
    shot(&c, &dir, "07-retried").await;

    // The audit log shows both actions, by the signed-in operator.
    c.goto(&format!("{base}/audit")).await.unwrap();
    let rows = c
        .find_all(Locator::Css("table#audit tbody tr"))
        .await
        .unwrap();
    let mut lines = Vec::new();
    for r in rows {
        lines.push(r.text().await.unwrap());
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].contains("retry")
            && lines[0].contains(FAILED)
            && lines[0].contains("failed")
            && lines[0].contains("superseded")
            && lines[0].contains(USER),
        "{lines:?}"
    );
    assert!(
        lines[1].contains("reconcile")
            && lines[1].contains(UNKNOWN)
            && lines[1].contains("applied"),
        "{lines:?}"
    );
    shot(&c, &dir, "08-audit").await;

    // An unknown operation's retry asks for the key and offers Reconcile.
    c.goto(&format!("{base}/ops/{OTHER_SHOP_UNKNOWN}/retry"))
        .await
        .unwrap();
    let warning = text(&c, ".warning").await;
    assert!(warning.contains("may already have happened"), "{warning}");
    c.find(Locator::Id("confirm"))
        .await
        .unwrap()
        .send_keys("not the key")
        .await
        .unwrap();
    click(&c, "#confirm-retry").await;
    let error = c
        .wait()
        .for_element(Locator::Css(".error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(error.contains("confirmation required"), "{error}");
    assert_eq!(
        db.store
            .get(&key(OTHER_SHOP_UNKNOWN))
            .await
            .unwrap()
            .unwrap()
            .state,
        OperationState::Unknown
    );
    shot(&c, &dir, "09-unknown-needs-typed-key").await;

    c.close().await.unwrap();
    let _ = drv.child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: run by .ci/browser.sh"]
async fn browser_sqlite() {
    run(Backend::Sqlite, "browser_sqlite").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium: run by .ci/browser.sh"]
async fn browser_postgres() {
    run(Backend::Postgres, "browser_postgres").await;
}
