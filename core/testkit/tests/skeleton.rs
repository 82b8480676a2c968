//! The fake-server skeleton and the mock server, driven by a bare HTTP/1.1
//! client: faults, counters, the request log, resets and scripts.

use std::time::{Duration, Instant};

use idem_testkit::fake::{Context, Fake, Simulator};
use idem_testkit::mock::matchers::{body_json, header, method, path, query_param};
use idem_testkit::mock::{Mock, MockServer, Script};
use idem_testkit::{Fault, Reply, Request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A provider that stores notes: every POST is one side effect.
#[derive(Debug, Default)]
struct Notes(Vec<String>);

impl Simulator for Notes {
    fn screen(&mut self, request: &Request) -> Option<Reply> {
        (request.header("authorization") != Some("Bearer ok")).then(|| Reply::new(401))
    }

    fn handle(&mut self, request: &Request, cx: &mut Context) -> Reply {
        if !request.is_write() {
            return Reply::json(200, serde_json::json!({ "notes": self.0 }));
        }
        self.0.push(request.body_text());
        cx.side_effect();
        Reply::json(201, serde_json::json!({ "id": self.0.len() }))
    }

    fn server_error(&self, _: &Request, after_effect: bool) -> Reply {
        Reply::new(if after_effect { 504 } else { 503 })
    }
}

/// Sends one request on a fresh connection; the whole answer, or `None`
/// when the connection was closed or reset without one.
async fn send(base: &str, method: &str, path: &str, body: &str) -> Option<String> {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer ok\r\n\
         Content-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    match stream.read_to_string(&mut answer).await {
        Ok(_) if answer.starts_with("HTTP/1.1 ") => Some(answer),
        _ => None,
    }
}

fn status(answer: &str) -> u16 {
    answer[9..12].parse().unwrap()
}

#[tokio::test]
async fn fail_times_then_succeeds_and_counts_only_the_effect() {
    let notes = Fake::serve(Notes::default()).await;
    notes.fail_times(2, Fault::ServerError);
    let base = notes.base_url();
    let statuses: Vec<u16> = [
        send(&base, "POST", "/notes", "a").await,
        send(&base, "POST", "/notes", "a").await,
        send(&base, "POST", "/notes", "a").await,
    ]
    .iter()
    .map(|a| status(a.as_deref().unwrap()))
    .collect();
    assert_eq!(statuses, [503, 503, 201]);
    assert_eq!(notes.side_effects(), 1);
    assert_eq!(notes.write_requests(), 3);
    assert_eq!(notes.pending_faults(), 0);
    // Reads take no fault and count apart.
    notes.inject(Fault::ServerError);
    let read = send(&base, "GET", "/notes", "").await.unwrap();
    assert_eq!(status(&read), 200);
    assert_eq!((notes.read_requests(), notes.pending_faults()), (1, 1));
    assert_eq!(notes.writes().len(), 3);
    assert_eq!(notes.reads()[0].path(), "/notes");
}

#[tokio::test]
async fn screened_requests_take_no_fault() {
    let notes = Fake::serve(Notes::default()).await;
    notes.inject(Fault::ServerError);
    let addr = notes.base_url();
    let mut stream = tokio::net::TcpStream::connect(addr.trim_start_matches("http://"))
        .await
        .unwrap();
    stream
        .write_all(
            b"POST /notes HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert_eq!(status(&answer), 401);
    assert_eq!(
        notes.pending_faults(),
        1,
        "the fault waits for a request that gets through"
    );
}

#[tokio::test]
async fn resets_before_and_after_the_effect() {
    let notes = Fake::serve(Notes::default()).await;
    notes.inject(Fault::ResetBeforeEffect);
    notes.inject(Fault::ResetAfterEffect);
    let base = notes.base_url();
    assert_eq!(send(&base, "POST", "/notes", "first").await, None);
    assert_eq!(
        notes.side_effects(),
        0,
        "reset before the provider: nothing done"
    );
    assert_eq!(send(&base, "POST", "/notes", "second").await, None);
    assert_eq!(
        notes.side_effects(),
        1,
        "reset after the provider: done, unanswered"
    );
    assert_eq!(notes.write_requests(), 2);
    assert_eq!(notes.requests()[1].body_text(), "second");
}

#[tokio::test]
async fn lost_answers_stalls_and_replaced_answers() {
    let notes = Fake::serve(Notes::default()).await;
    let delay = Duration::from_millis(300);
    notes.inject(Fault::LoseResponse { delay });
    notes.inject(Fault::StallWithoutEffect { delay });
    notes.inject(Fault::ServerErrorAfterEffect);
    notes.inject(Fault::Reply(Reply::new(409).set_body_string("busy")));
    notes.inject(Fault::RateLimited {
        retry_after_secs: 7,
    });
    let base = notes.base_url();

    let started = Instant::now();
    let lost = send(&base, "POST", "/notes", "a").await.unwrap();
    assert!(started.elapsed() >= delay);
    assert_eq!((status(&lost), notes.side_effects()), (201, 1));

    let started = Instant::now();
    let stalled = send(&base, "POST", "/notes", "b").await.unwrap();
    assert!(started.elapsed() >= delay);
    assert_eq!((status(&stalled), notes.side_effects()), (503, 1));

    let after = send(&base, "POST", "/notes", "c").await.unwrap();
    assert_eq!((status(&after), notes.side_effects()), (504, 2));

    let replaced = send(&base, "POST", "/notes", "d").await.unwrap();
    assert_eq!(status(&replaced), 409);
    assert!(replaced.ends_with("busy"));

    let limited = send(&base, "POST", "/notes", "e").await.unwrap();
    assert_eq!(status(&limited), 429);
    assert!(limited.contains("retry-after: 7"));
    assert_eq!(notes.side_effects(), 2);
}

#[tokio::test]
async fn the_request_log_hides_credentials_in_debug() {
    let notes = Fake::serve(Notes::default()).await;
    send(&notes.base_url(), "POST", "/notes?x=1", "{\"a\":1}")
        .await
        .unwrap();
    let seen = &notes.requests()[0];
    assert_eq!(seen.header("authorization"), Some("Bearer ok"));
    assert_eq!(seen.query("x").as_deref(), Some("1"));
    assert_eq!(seen.json(), Some(serde_json::json!({"a": 1})));
    let shown = format!("{seen:?}");
    assert!(!shown.contains("Bearer"), "{shown}");
}

#[tokio::test]
async fn mocks_match_by_priority_and_limit_and_unmatched_is_404() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/things"))
        .and(header("authorization", "Bearer ok"))
        .and(body_json(serde_json::json!({"n": 1})))
        .respond_with(Reply::new(503))
        .up_to_n_times(1)
        .expect(1)
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/things"))
        .respond_with(Reply::json(200, serde_json::json!({"ok": true})))
        .expect(2)
        .with_priority(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(query_param("page", "2"))
        .respond_with(Script::fail_then(1, Reply::new(500), Reply::new(204)))
        .expect(3)
        .mount(&server)
        .await;
    let base = server.uri();
    let body = "{\"n\": 1}";
    assert_eq!(
        status(&send(&base, "POST", "/things", body).await.unwrap()),
        503
    );
    assert_eq!(
        status(&send(&base, "POST", "/things", body).await.unwrap()),
        200
    );
    assert_eq!(
        status(&send(&base, "POST", "/things", "{}").await.unwrap()),
        200
    );
    assert_eq!(
        status(&send(&base, "GET", "/list?page=2", "").await.unwrap()),
        500
    );
    assert_eq!(
        status(&send(&base, "GET", "/list?page=2", "").await.unwrap()),
        204
    );
    assert_eq!(
        status(&send(&base, "GET", "/list?page=2", "").await.unwrap()),
        204
    );
    assert_eq!(
        status(&send(&base, "GET", "/other", "").await.unwrap()),
        404
    );
    assert_eq!(server.received_requests().await.len(), 7);
    server.verify().await;
}

#[tokio::test]
#[should_panic(expected = "expected 1 request(s), got 0")]
async fn an_unmet_expectation_fails_the_test() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(Reply::new(200))
        .expect(1)
        .mount(&server)
        .await;
    drop(server);
}
