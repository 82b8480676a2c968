//! Inbound metrics and the per-request tracing event, on SQLite and
//! PostgreSQL.
//!
//! Each test runs on a current-thread runtime inside
//! `metrics::with_local_recorder` (a `DebuggingRecorder`) and
//! `tracing::subscriber::with_default` (a capturing layer plus a `fmt` layer
//! writing to a buffer). Both are thread-local, and a current-thread runtime
//! polls every task on the calling thread, so everything the wrapper records
//! lands here and nothing from other tests does.
//!
//! `Snapshotter::snapshot` swaps every value to zero, so each snapshot reads
//! what changed since the previous one.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use idem::inbound::{EndpointConfig, InboundStore, metric, with_idempotency};
use metrics_util::MetricKind;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};

/// In the request body only; must never reach a log line.
const REQUEST_SECRET: &str = "card=4242-4242-SECRET-REQUEST-BODY";
/// In the response body only; must never reach a log line.
const RESPONSE_SECRET: &str = "SECRET-RESPONSE-BODY-9f3e";
const ENDPOINT: &str = "metered-order";

// ---- capture ----------------------------------------------------------------

#[derive(Debug, Clone)]
struct Captured {
    target: String,
    fields: BTreeMap<String, String>,
}

/// Records every event's and span's fields, whatever the target or level.
#[derive(Clone, Default)]
struct Capture {
    events: Arc<Mutex<Vec<Captured>>>,
    span_text: Arc<Mutex<String>>,
}

#[derive(Default)]
struct Fields(BTreeMap<String, String>);

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.events.lock().unwrap().push(Captured {
            target: event.metadata().target().to_owned(),
            fields: fields.0,
        });
    }
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        self.span_text
            .lock()
            .unwrap()
            .push_str(&format!("{:?}", fields.0));
    }
    fn on_record(
        &self,
        _id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: Context<'_, S>,
    ) {
        let mut fields = Fields::default();
        values.record(&mut fields);
        self.span_text
            .lock()
            .unwrap()
            .push_str(&format!("{:?}", fields.0));
    }
}

impl Capture {
    /// The wrapper's per-request events, in order.
    fn requests(&self) -> Vec<BTreeMap<String, String>> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| {
                e.target == "idem::inbound"
                    && e.fields.get("message").map(String::as_str) == Some("idempotent request")
            })
            .map(|e| e.fields.clone())
            .collect()
    }
}

/// The `fmt` layer's output, as an operator would read it.
#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Observed {
    snapshotter: Snapshotter,
    capture: Capture,
    log: Buffer,
}

/// Runs `scenario` on a current-thread runtime with the recorder and the
/// subscriber scoped to it.
fn observed<F, Fut>(scenario: F)
where
    F: FnOnce(Snapshotter, Capture) -> Fut,
    Fut: Future<Output = bool>,
{
    let recorder = DebuggingRecorder::new();
    let obs = Observed {
        snapshotter: recorder.snapshotter(),
        capture: Capture::default(),
        log: Buffer::default(),
    };
    let log = obs.log.clone();
    let subscriber = tracing_subscriber::registry()
        .with(obs.capture.clone())
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(move || log.clone()),
        );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (snap, capture) = (obs.snapshotter.clone(), obs.capture.clone());
    let ran = tracing::subscriber::with_default(subscriber, || {
        metrics::with_local_recorder(&recorder, || rt.block_on(scenario(snap, capture)))
    });
    if !ran {
        return; // PostgreSQL unreachable outside CI: skipped loudly.
    }
    // Never the body, in any event or span field, from any target, nor in the
    // rendered log.
    let events = obs.capture.events.lock().unwrap();
    assert!(!events.is_empty(), "the subscriber saw the requests");
    for e in events.iter() {
        for (name, value) in &e.fields {
            for secret in [REQUEST_SECRET, RESPONSE_SECRET] {
                assert!(
                    !value.contains(secret),
                    "event {} field {name} leaks a body: {value}",
                    e.target
                );
            }
        }
    }
    let spans = obs.capture.span_text.lock().unwrap();
    let rendered = String::from_utf8(obs.log.0.lock().unwrap().clone()).unwrap();
    assert!(
        rendered.contains("idempotent request"),
        "the fmt layer rendered the per-request event"
    );
    for secret in [REQUEST_SECRET, RESPONSE_SECRET] {
        assert!(!spans.contains(secret), "a span field leaks a body");
        assert!(!rendered.contains(secret), "the log leaks a body");
    }
}

// ---- metrics ------------------------------------------------------------------

struct Metrics(Vec<(MetricKind, String, BTreeMap<String, String>, DebugValue)>);

impl Metrics {
    fn take(s: &Snapshotter) -> Self {
        Self(
            s.snapshot()
                .into_vec()
                .into_iter()
                .map(|(ck, _, _, value)| {
                    let labels = ck
                        .key()
                        .labels()
                        .map(|l| (l.key().to_owned(), l.value().to_owned()))
                        .collect();
                    (ck.kind(), ck.key().name().to_owned(), labels, value)
                })
                .collect(),
        )
    }

    fn matching<'a>(
        &'a self,
        kind: MetricKind,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a DebugValue> + 'a {
        self.0
            .iter()
            .filter(move |(k, n, l, _)| {
                *k == kind
                    && n == name
                    && labels
                        .iter()
                        .all(|(lk, lv)| l.get(*lk).map(String::as_str) == Some(*lv))
            })
            .map(|(_, _, _, v)| v)
    }

    /// The sum of the counters named `name` whose labels include `labels`.
    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.matching(MetricKind::Counter, name, labels)
            .map(|v| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .sum()
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut values = self.matching(MetricKind::Gauge, name, labels);
        let v = values.next().map(|v| match v {
            DebugValue::Gauge(g) => g.0,
            other => panic!("{name} is not a gauge: {other:?}"),
        });
        assert!(values.next().is_none(), "one {name} series per endpoint");
        v
    }

    fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.matching(MetricKind::Histogram, name, labels)
            .flat_map(|v| match v {
                DebugValue::Histogram(xs) => xs.iter().map(|x| x.0).collect::<Vec<_>>(),
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .collect()
    }

    /// One request ended with `outcome`: counted once, timed once.
    fn assert_one_request(&self, outcome: &str) {
        let labels = [("endpoint", ENDPOINT), ("outcome", outcome)];
        assert_eq!(
            self.counter(metric::REQUEST_COUNT, &labels),
            1,
            "{outcome} counted"
        );
        assert_eq!(
            self.counter(metric::REQUEST_COUNT, &[]),
            1,
            "and nothing else counted"
        );
        let durations = self.histogram(metric::REQUEST_DURATION, &labels);
        assert_eq!(durations.len(), 1, "{outcome} timed once");
        assert!(durations[0] >= 0.0 && durations[0].is_finite());
        assert_eq!(self.histogram(metric::REQUEST_DURATION, &[]).len(), 1);
    }
}

// ---- the scenario ---------------------------------------------------------------

struct Answer {
    status: StatusCode,
    replayed: bool,
    body: Bytes,
}

/// A handler that may stop at a gate: it signals `entered`, then waits for
/// `open`.
#[derive(Default)]
struct Gate {
    entered: Notify,
    open: Notify,
}

async fn call<S: InboundStore>(
    store: &S,
    config: &EndpointConfig,
    key: &str,
    body: &str,
    calls: &AtomicUsize,
    gate: Option<&Gate>,
) -> Answer {
    let req = Request::post("/orders")
        .header("idempotency-key", key)
        .extension(idem::inbound::Actor::new("alice"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let r = with_idempotency(store, config, req, |_req: Request<Bytes>| async move {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(g) = gate {
            g.entered.notify_one();
            g.open.notified().await;
        }
        Response::builder()
            .status(StatusCode::CREATED)
            .header("content-type", "text/plain")
            .body(Full::new(Bytes::from(format!(
                "order {n} {RESPONSE_SECRET}"
            ))))
            .unwrap()
    })
    .await;
    let replayed = r.headers().contains_key("idempotent-replayed");
    let status = r.status();
    Answer {
        status,
        replayed,
        body: r.into_body().collect().await.unwrap().to_bytes(),
    }
}

fn assert_event(e: &BTreeMap<String, String>, key: &str, outcome: &str, status: u16) {
    assert_eq!(
        e.get("endpoint").map(String::as_str),
        Some(ENDPOINT),
        "{e:?}"
    );
    assert_eq!(e.get("key").map(String::as_str), Some(key), "{e:?}");
    assert_eq!(e.get("outcome").map(String::as_str), Some(outcome), "{e:?}");
    assert_eq!(e.get("status"), Some(&status.to_string()), "{e:?}");
    let ms = e.get("duration_ms").expect("duration_ms field");
    ms.parse::<u64>().expect("duration_ms is a whole number");
}

async fn scenario<S: InboundStore>(store: S, snap: Snapshotter, capture: Capture) {
    let store = Arc::new(store);
    let config = EndpointConfig::builder(ENDPOINT).build().unwrap();
    let calls = AtomicUsize::new(0);
    // Store setup (migrations) records nothing of the wrapper's.
    let m = Metrics::take(&snap);
    assert_eq!(m.counter(metric::REQUEST_COUNT, &[]), 0);

    // 1. A fresh request runs the handler.
    let a = call(&store, &config, "k-1", REQUEST_SECRET, &calls, None).await;
    assert_eq!(a.status, StatusCode::CREATED);
    assert!(!a.replayed);
    let m = Metrics::take(&snap);
    m.assert_one_request("executed");
    assert_eq!(m.counter(metric::REPLAY_COUNT, &[]), 0);
    assert_eq!(m.counter(metric::CONFLICT_COUNT, &[]), 0);
    assert_eq!(
        m.gauge(metric::INFLIGHT_GAUGE, &[("endpoint", ENDPOINT)]),
        Some(0.0),
        "the gauge went up for the handler and back down"
    );

    // 2. The same request again is replayed.
    let b = call(&store, &config, "k-1", REQUEST_SECRET, &calls, None).await;
    assert!(b.replayed);
    assert_eq!(b.body, a.body);
    let m = Metrics::take(&snap);
    m.assert_one_request("replayed");
    assert_eq!(
        m.counter(metric::REPLAY_COUNT, &[("endpoint", ENDPOINT)]),
        1
    );
    assert_eq!(m.counter(metric::CONFLICT_COUNT, &[]), 0);
    assert_eq!(
        m.gauge(metric::INFLIGHT_GAUGE, &[]).unwrap_or(0.0),
        0.0,
        "no handler ran"
    );

    // 3. The same key with another body is a conflict.
    let c = call(&store, &config, "k-1", "another body", &calls, None).await;
    assert_eq!(c.status, StatusCode::CONFLICT);
    let m = Metrics::take(&snap);
    m.assert_one_request("mismatch");
    assert_eq!(
        m.counter(
            metric::CONFLICT_COUNT,
            &[("endpoint", ENDPOINT), ("reason", "mismatch")]
        ),
        1
    );
    assert_eq!(m.counter(metric::CONFLICT_COUNT, &[]), 1);
    assert_eq!(m.counter(metric::REPLAY_COUNT, &[]), 0);

    // 4. A duplicate of a request still running is an in-flight conflict,
    //    and the gauge shows the running handler.
    let gate = Arc::new(Gate::default());
    let calls = Arc::new(calls);
    let first = {
        let (store, config, calls, gate) = (
            Arc::clone(&store),
            config.clone(),
            Arc::clone(&calls),
            Arc::clone(&gate),
        );
        tokio::spawn(async move {
            call(&store, &config, "k-2", REQUEST_SECRET, &calls, Some(&gate)).await
        })
    };
    gate.entered.notified().await;
    let m = Metrics::take(&snap);
    assert_eq!(
        m.gauge(metric::INFLIGHT_GAUGE, &[("endpoint", ENDPOINT)]),
        Some(1.0),
        "one handler running"
    );
    assert_eq!(
        m.counter(metric::REQUEST_COUNT, &[]),
        0,
        "nothing finished yet"
    );
    let d = call(&store, &config, "k-2", REQUEST_SECRET, &calls, None).await;
    assert_eq!(d.status, StatusCode::CONFLICT);
    let m = Metrics::take(&snap);
    m.assert_one_request("in_flight");
    assert_eq!(
        m.counter(
            metric::CONFLICT_COUNT,
            &[("endpoint", ENDPOINT), ("reason", "in_flight")]
        ),
        1
    );
    gate.open.notify_one();
    let first = first.await.unwrap();
    assert_eq!(first.status, StatusCode::CREATED);
    let m = Metrics::take(&snap);
    m.assert_one_request("executed");
    assert_eq!(
        m.gauge(metric::INFLIGHT_GAUGE, &[("endpoint", ENDPOINT)]),
        Some(-1.0),
        "down by one since the last read (when it was 1): back to zero"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2, "k-1 once, k-2 once");

    // One event per request, with key, endpoint, outcome, status, duration.
    let events = capture.requests();
    assert_eq!(events.len(), 5, "{events:?}");
    assert_event(&events[0], "k-1", "executed", 201);
    assert_event(&events[1], "k-1", "replayed", 201);
    assert_event(&events[2], "k-1", "mismatch", 409);
    assert_event(&events[3], "k-2", "in_flight", 409);
    assert_event(&events[4], "k-2", "executed", 201);
    // (The bodies are checked against every event by `observed`.)
}

#[test]
fn sqlite_metrics_and_request_event() {
    observed(|snap, capture| async move {
        let (store, _dir) = idem::testing::sqlite_store().await;
        scenario(store, snap, capture).await;
        true
    });
}

#[test]
fn postgres_metrics_and_request_event() {
    observed(|snap, capture| async move {
        let Some(store) = idem::testing::pg_store("inbound_metrics").await else {
            return false;
        };
        scenario(store, snap, capture).await;
        true
    });
}
