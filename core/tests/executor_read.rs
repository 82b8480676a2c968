//! `Executor::read`: unrecorded GET/HEAD lookups against wiremock fakes.

// Core's own test of the executor's middleware hook: it implements a
// reqwest-middleware `Middleware`, which names reqwest's request type. The
// adapter-only rule is for worker code, so it is lifted for this file.
#![allow(unknown_lints, http_call_outside_adapter)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::{Extensions, Method, StatusCode};
use idem::executor::{
    Classifier, Effect, RetrySettings, StatusClassifier, TransportKind, Url, Verdict,
    default_status_verdict,
};
use idem::ledger::{ListFilter, SqliteStore};
use idem::{Executor, LedgerStore, OutboundRequest, Provider, ReadError, SafetyClass};
use reqwest_middleware::{Middleware, Next};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn fast() -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(4)
        .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
        .with_attempt_timeout(Duration::from_millis(300))
        .with_total_timeout(Duration::from_secs(5))
}

/// Local only: its writes are never resent after a possible effect. Reads
/// must be retried anyway.
fn local() -> Provider {
    Provider::new("local", SafetyClass::LocalOnly, StatusClassifier).with_retry(fast())
}

struct Setup {
    exec: Executor,
    store: SqliteStore,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (store, dir) = idem::testing::sqlite_store().await;
    let exec = Executor::builder(store.clone()).build();
    Setup {
        exec,
        store,
        _dir: dir,
    }
}

async fn rows(store: &SqliteStore) -> usize {
    store.list(&ListFilter::default()).await.unwrap().len()
}

fn url(base: &str, rest: &str) -> Url {
    format!("{base}{rest}").parse().unwrap()
}

/// Answers from a script, one entry per call; the last entry repeats.
struct Script(Vec<ResponseTemplate>, AtomicUsize);

impl Script {
    fn new(steps: Vec<ResponseTemplate>) -> Self {
        Self(steps, AtomicUsize::new(0))
    }
}

impl Respond for Script {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = self.1.fetch_add(1, Ordering::SeqCst);
        self.0[n.min(self.0.len() - 1)].clone()
    }
}

#[tokio::test]
async fn get_is_retried_after_503_then_answers_200_without_a_ledger_row() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/things/search"))
        .and(query_param("query", "k"))
        .respond_with(Script::new(vec![
            ResponseTemplate::new(503),
            ResponseTemplate::new(200).set_body_string("{\"data\":[1]}"),
        ]))
        .expect(2)
        .mount(&server)
        .await;
    let answer = s
        .exec
        .read(
            &local(),
            OutboundRequest::get(url(&server.uri(), "/v1/things/search?query=k")),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.attempts, 2);
    assert_eq!(answer.verdict, Verdict::Success);
    assert_eq!(&answer.body[..], b"{\"data\":[1]}");
    let parsed: serde_json::Value = answer.json().unwrap();
    assert_eq!(parsed["data"][0], 1);
    assert_eq!(rows(&s.store).await, 0, "a read leaves no ledger row");
}

#[tokio::test]
async fn writes_are_refused_before_anything_is_sent() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let target = url(&server.uri(), "/v1/charges");
    for request in [
        OutboundRequest::post(target.clone()).form([("amount", "500")]),
        OutboundRequest::put(target.clone()),
        OutboundRequest::delete(target.clone()),
        OutboundRequest::new(Method::PATCH, target.clone()),
        OutboundRequest::new(Method::OPTIONS, target.clone()),
    ] {
        let shown = request.method().clone();
        let err = s.exec.read(&local(), request).await.unwrap_err();
        assert!(err.is_unsafe_method(), "{shown}: {err}");
        assert!(!err.is_retryable());
        assert!(
            matches!(&err, ReadError::UnsafeMethod { method, provider } if *method == shown && provider == "local"),
            "{err:?}"
        );
        assert!(!err.to_string().contains(&server.uri()), "{err}");
    }
    assert!(server.received_requests().await.unwrap().is_empty());
    assert_eq!(rows(&s.store).await, 0);
}

#[tokio::test]
async fn head_is_a_read() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("HEAD"))
        .and(path("/v1/things/1"))
        .respond_with(ResponseTemplate::new(204).insert_header("x-found", "yes"))
        .expect(1)
        .mount(&server)
        .await;
    let answer = s
        .exec
        .read(
            &local(),
            OutboundRequest::new(Method::HEAD, url(&server.uri(), "/v1/things/1")),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::NO_CONTENT);
    assert_eq!(answer.headers["x-found"], "yes");
    assert_eq!(rows(&s.store).await, 0);
}

#[tokio::test]
async fn transport_failure_is_typed_and_names_no_url() {
    let s = setup().await;
    // A port nobody listens on: every attempt fails to connect.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let secret = "token=s3cr3t";
    let err = s
        .exec
        .read(
            &local(),
            OutboundRequest::get(url(
                &format!("http://127.0.0.1:{port}"),
                &format!("/v1/x?{secret}"),
            )),
        )
        .await
        .unwrap_err();
    match &err {
        ReadError::Transport {
            provider,
            attempts,
            error,
        } => {
            assert_eq!(provider, "local");
            assert_eq!(error.kind, TransportKind::Connect);
            assert_eq!(
                *attempts, 4,
                "a connect failure is retried up to max_attempts"
            );
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert!(err.is_retryable());
    assert!(!err.is_timeout());
    assert_eq!(err.transport().unwrap().kind, TransportKind::Connect);
    let shown = err.to_string();
    assert!(!shown.contains(secret), "{shown}");
    assert!(!shown.contains(&port.to_string()), "{shown}");
    assert!(!shown.contains("http://"), "{shown}");
    assert_eq!(rows(&s.store).await, 0);
}

#[tokio::test]
async fn timeouts_are_retried_even_for_a_local_only_provider() {
    let s = setup().await;
    let server = MockServer::start().await;
    // A write to this provider would end `unknown` after the first timeout;
    // a read is resent until the attempts run out.
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(2)))
        .expect(3)
        .mount(&server)
        .await;
    let provider = Provider::new("local", SafetyClass::LocalOnly, StatusClassifier).with_retry(
        fast()
            .with_max_attempts(3)
            .with_attempt_timeout(Duration::from_millis(150)),
    );
    let err = s
        .exec
        .read(
            &provider,
            OutboundRequest::get(url(&server.uri(), "/v1/slow")),
        )
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(
        matches!(err, ReadError::Transport { attempts: 3, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_404_is_an_answer_and_is_not_retried() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(404).set_body_string("{\"error\":\"no such thing\"}"))
        .expect(1)
        .mount(&server)
        .await;
    let answer = s
        .exec
        .read(
            &local(),
            OutboundRequest::get(url(&server.uri(), "/v1/things/9")),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert!(!answer.is_success());
    assert_eq!(answer.verdict, Verdict::Rejected);
    assert_eq!(answer.attempts, 1);
    assert_eq!(&answer.body[..], b"{\"error\":\"no such thing\"}");
}

#[tokio::test]
async fn retries_stop_at_max_attempts_and_return_the_last_answer() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502).set_body_string("bad gateway"))
        .expect(4)
        .mount(&server)
        .await;
    let answer = s
        .exec
        .read(&local(), OutboundRequest::get(url(&server.uri(), "/v1/x")))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.attempts, 4);
    assert_eq!(answer.verdict, Verdict::Transient(Effect::Possible));
}

#[tokio::test]
async fn retry_after_is_honoured_and_bounded() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/throttled"))
        .respond_with(Script::new(vec![
            ResponseTemplate::new(429).insert_header("retry-after", "1"),
            ResponseTemplate::new(200),
        ]))
        .expect(2)
        .mount(&server)
        .await;
    let started = Instant::now();
    let answer = s
        .exec
        .read(
            &local(),
            OutboundRequest::get(url(&server.uri(), "/v1/throttled")),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "waited {:?}",
        started.elapsed()
    );

    // A wait longer than the provider's bound ends the read with the 429.
    Mock::given(method("GET"))
        .and(path("/v1/closed"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "3600"))
        .expect(1)
        .mount(&server)
        .await;
    let answer = s
        .exec
        .read(
            &local(),
            OutboundRequest::get(url(&server.uri(), "/v1/closed")),
        )
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.retry_after, Some(Duration::from_secs(3600)));
    assert_eq!(answer.attempts, 1);
}

/// A provider whose own signal says "do not retry" on a 500.
#[derive(Debug)]
struct NoRetryHeader;

impl Classifier for NoRetryHeader {
    fn classify(&self, status: StatusCode, headers: &http::HeaderMap, _: &[u8]) -> Verdict {
        if headers.get("x-should-retry").is_some_and(|v| v == "false") {
            Verdict::Ambiguous
        } else {
            default_status_verdict(status)
        }
    }
}

#[tokio::test]
async fn the_providers_classifier_decides_what_is_transient() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500).insert_header("x-should-retry", "false"))
        .expect(1)
        .mount(&server)
        .await;
    let provider = Provider::new(
        "native",
        SafetyClass::NativeKey {
            retention: Duration::from_secs(24 * 3600),
        },
        NoRetryHeader,
    )
    .with_retry(fast());
    let answer = s
        .exec
        .read(&provider, OutboundRequest::get(url(&server.uri(), "/v1/x")))
        .await
        .unwrap();
    assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(answer.verdict, Verdict::Ambiguous);
    assert_eq!(answer.attempts, 1);
}

/// Counts the attempts it sees.
#[derive(Debug, Clone, Default)]
struct CountAttempts(Arc<AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for CountAttempts {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        next.run(req, extensions).await
    }
}

#[tokio::test]
async fn reads_run_through_the_executors_middleware() {
    let (store, _dir) = idem::testing::sqlite_store().await;
    let counter = CountAttempts::default();
    let exec = Executor::builder(store.clone())
        .with(counter.clone())
        .build();
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(Script::new(vec![
            ResponseTemplate::new(500),
            ResponseTemplate::new(500),
            ResponseTemplate::new(200),
        ]))
        .expect(3)
        .mount(&server)
        .await;
    let answer = exec
        .read(&local(), OutboundRequest::get(url(&server.uri(), "/v1/x")))
        .await
        .unwrap();
    assert_eq!(answer.attempts, 3);
    assert_eq!(counter.0.load(Ordering::SeqCst), 3, "once per attempt");
    assert_eq!(rows(&store).await, 0);
}

#[tokio::test]
async fn an_invalid_request_is_refused_without_sending() {
    let s = setup().await;
    let server = MockServer::start().await;
    Mock::given(wiremock::matchers::any())
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&server)
        .await;
    let err = s
        .exec
        .read(
            &local(),
            OutboundRequest::get(url(&server.uri(), "/v1/x")).header("Bad Name", "v"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ReadError::InvalidRequest { .. }), "{err:?}");
}
