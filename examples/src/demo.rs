//! The main demo: a worker charges, texts, replies and posts through idem's
//! adapters while the simulated providers misbehave, is killed with SIGKILL
//! in the middle of a charge, is restarted, and finishes the batch.
//!
//! Two processes take part:
//!
//! * the **parent** ([`run_scenario`]) runs the four simulated providers
//!   in-process (`idem-testkit`), queues faults on them,
//!   starts the worker, kills it partway, starts it again, and at the end
//!   reads every count from the simulated providers themselves;
//! * the **worker** ([`run_worker`]) is the same binary started with
//!   `--worker`: ordinary worker code that knows nothing about the faults.
//!
//! The counts in the final table come from the providers (what arrived on the
//! wire, what was really created), never from the worker's own bookkeeping.
//! The ledger state comes from the SQLite file both processes share.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use idem::executor::RetrySettings;
use idem::ledger::SqliteStore;
use idem::{Executor, IdempotencyKey, LedgerStore, OperationState};
use idem_gbp::{GbpClient, ReviewName, StaticToken};
use idem_meta::{MetaClient, PageId, PagePost, ReconcileOptions};
use idem_stripe::{Amount, CreatePaymentIntent, Currency, StripeClient};
use idem_testkit::{FakeGbp, FakeMeta, FakeStripe, FakeTwilio, Fault};
use idem_twilio::{CreateMessage, Credentials, TwilioClient};

/// The shop all demo keys belong to.
pub const SHOP: &str = "joes-bikes";
const PAGE: &str = "104000000000001";
const ACCOUNT: &str = "1000000000000000001";
const LOCATION: &str = "2000000000000000002";
const FROM: &str = "+15005550006";
/// How long a lost response is held back by a simulated provider: far longer
/// than the worker's attempt timeout, so the worker sees a timeout after
/// the provider acted.
const LOST: Duration = Duration::from_secs(8);

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Charge a card (Stripe PaymentIntent).
    Charge,
    /// Text a customer (Twilio SMS).
    Text,
    /// Reply to a review (Google Business Profile).
    Reply,
    /// Publish a Page post (Meta).
    Post,
}

impl Kind {
    fn provider(self) -> &'static str {
        match self {
            Self::Charge => "stripe",
            Self::Text => "twilio",
            Self::Reply => "gbp",
            Self::Post => "meta",
        }
    }
}

/// One job of the batch.
#[derive(Debug, Clone)]
pub struct Job {
    /// Its name in the table.
    pub name: &'static str,
    /// What it does.
    pub kind: Kind,
    /// Its idempotency key, derived from the local record it belongs to.
    pub key: IdempotencyKey,
    /// Unique content (amount, text, review id) that identifies its requests
    /// at the simulated provider.
    pub content: String,
    /// What the simulated provider does to it, in words.
    pub trouble: &'static str,
}

fn job(
    name: &'static str,
    kind: Kind,
    table: &str,
    row: &str,
    content: String,
    trouble: &'static str,
) -> Job {
    Job {
        name,
        kind,
        key: IdempotencyKey::new(SHOP, table, row, 1).expect("demo keys are valid"),
        content,
        trouble,
    }
}

/// The batch, in the order the worker works it. The charge that is in
/// flight when the worker is killed is the fifth job.
pub fn jobs() -> Vec<Job> {
    vec![
        job(
            "charge #1041",
            Kind::Charge,
            "transactions",
            "1041",
            "2599".into(),
            "two 500s, then OK",
        ),
        job(
            "text #77",
            Kind::Text,
            "service_ticket_messages",
            "77",
            "Your bike is ready for pickup (#77)".into(),
            "429 Retry-After 1 s",
        ),
        job(
            "reply r-9001",
            Kind::Reply,
            "review_replies",
            "9001",
            "r-9001".into(),
            "503 UNAVAILABLE",
        ),
        job(
            "post #12",
            Kind::Post,
            "social_posts",
            "12",
            "Open late on Friday! (#12)".into(),
            "throttled, code 4",
        ),
        job(
            "charge #1042",
            Kind::Charge,
            "transactions",
            "1042",
            "4200".into(),
            "response lost; worker killed mid-flight",
        ),
        job(
            "text #78",
            Kind::Text,
            "service_ticket_messages",
            "78",
            "Your bike is ready for pickup (#78)".into(),
            "response lost (timeout)",
        ),
        job(
            "reply r-9002",
            Kind::Reply,
            "review_replies",
            "9002",
            "r-9002".into(),
            "response lost (timeout)",
        ),
        job(
            "post #13",
            Kind::Post,
            "social_posts",
            "13",
            "Spring tune-ups are 20% off (#13)".into(),
            "response lost (timeout)",
        ),
    ]
}

/// Where the worker finds the simulated providers and the ledger. Passed
/// to the worker process through environment variables.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The SQLite ledger file.
    pub ledger: PathBuf,
    /// Stripe base URL.
    pub stripe: String,
    /// Twilio base URL.
    pub twilio: String,
    /// Google Business Profile base URL.
    pub gbp: String,
    /// Meta Graph base URL.
    pub meta: String,
}

const ENV: [&str; 5] = [
    "IDEM_DEMO_LEDGER",
    "IDEM_DEMO_STRIPE",
    "IDEM_DEMO_TWILIO",
    "IDEM_DEMO_GBP",
    "IDEM_DEMO_META",
];

impl Endpoints {
    /// Reads the endpoints from the environment (worker side).
    ///
    /// # Errors
    ///
    /// Names the missing variable.
    pub fn from_env() -> Result<Self, String> {
        let get = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
        Ok(Self {
            ledger: PathBuf::from(get(ENV[0])?),
            stripe: get(ENV[1])?,
            twilio: get(ENV[2])?,
            gbp: get(ENV[3])?,
            meta: get(ENV[4])?,
        })
    }

    fn vars(&self) -> [(&'static str, String); 5] {
        [
            (ENV[0], self.ledger.display().to_string()),
            (ENV[1], self.stripe.clone()),
            (ENV[2], self.twilio.clone()),
            (ENV[3], self.gbp.clone()),
            (ENV[4], self.meta.clone()),
        ]
    }
}

/// Short timeouts so the demo runs in seconds: one attempt may take 1.5 s,
/// one claim 4 s; the lease is 4 + 1.5 + 1 s.
fn demo_retry() -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(4)
        .with_backoff(Duration::from_millis(100), Duration::from_millis(400))
        .with_attempt_timeout(Duration::from_millis(1500))
        .with_total_timeout(Duration::from_secs(4))
}

struct Clients {
    store: SqliteStore,
    stripe: StripeClient,
    twilio: TwilioClient,
    gbp: GbpClient,
    meta: MetaClient,
}

async fn clients(ep: &Endpoints) -> Result<Clients, String> {
    let store = SqliteStore::open(&ep.ledger)
        .await
        .map_err(|e| e.to_string())?;
    let executor = Executor::builder(store.clone())
        .lease_margin(Duration::from_secs(1))
        .build();
    let stripe = StripeClient::builder(executor.clone(), "sk_test_demo")
        .base_url(ep.stripe.clone())
        .retry(demo_retry())
        .build()
        .map_err(|e| e.to_string())?;
    let twilio = TwilioClient::builder(
        executor.clone(),
        Credentials::auth_token(FakeTwilio::ACCOUNT_SID, "demo-auth-token"),
    )
    .base_url(ep.twilio.clone())
    .retry(demo_retry())
    .build()
    .map_err(|e| e.to_string())?;
    let gbp = GbpClient::builder(executor.clone(), StaticToken::new("demo-oauth-token"))
        .base_url(ep.gbp.clone())
        .retry(demo_retry())
        .build()
        .map_err(|e| e.to_string())?;
    let meta = MetaClient::builder(executor, "demo-page-token")
        .base_url(ep.meta.clone())
        .retry(demo_retry())
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Clients {
        store,
        stripe,
        twilio,
        gbp,
        meta,
    })
}

/// How one attempt at a job ended, as the worker sees it.
enum Step {
    Done(String),
    /// Try again later (another worker holds it, or it was not processed).
    Later(String),
    /// Sent, outcome unknown: reconcile with the provider.
    Unknown(String),
    /// Needs an operator.
    Stuck(String),
}

fn step<E: std::fmt::Display>(
    r: Result<String, E>,
    retryable: impl Fn(&E) -> bool,
    unknown: impl Fn(&E) -> bool,
) -> Step {
    match r {
        Ok(s) => Step::Done(s),
        Err(e) if unknown(&e) => Step::Unknown(e.to_string()),
        Err(e) if retryable(&e) => Step::Later(e.to_string()),
        Err(e) => Step::Stuck(e.to_string()),
    }
}

async fn attempt(c: &Clients, job: &Job) -> Step {
    match job.kind {
        Kind::Charge => {
            let cents: u64 = job.content.parse().unwrap_or(100);
            let params = CreatePaymentIntent::new(Amount::minor(cents), Currency::usd());
            let r = c.stripe.payment_intents().create(&job.key, &params).await;
            step(
                r.map(|pi| pi.object.id.to_string()),
                |e| e.is_retryable(),
                |_| false,
            )
        }
        Kind::Text => {
            let msg = CreateMessage::from_number("+15558675310", FROM, job.content.clone());
            let r = c.twilio.messages().create(&job.key, &msg).await;
            step(
                r.map(|s| s.message.sid.to_string()),
                |e| e.is_retryable(),
                |e| matches!(e, idem_twilio::Error::OutcomeUnknown { .. }),
            )
        }
        Kind::Reply => {
            let review = match ReviewName::new(ACCOUNT, LOCATION, job.content.clone()) {
                Ok(r) => r,
                Err(e) => return Step::Stuck(e.to_string()),
            };
            let r = c
                .gbp
                .update_reply(&job.key, &review, "Thanks for riding with us!")
                .await;
            step(
                r.map(|_| "reply set".to_owned()),
                |e| e.is_retryable(),
                |_| false,
            )
        }
        Kind::Post => {
            let post = PagePost::message(job.content.clone());
            let r = c
                .meta
                .publish_page_post(&job.key, &PageId::new(PAGE), &post)
                .await;
            step(
                r.map(|p| p.id.to_string()),
                |e| e.is_retryable(),
                |e| e.is_unknown(),
            )
        }
    }
}

async fn reconcile(c: &Clients, job: &Job) -> Step {
    match job.kind {
        Kind::Text => {
            let msg = CreateMessage::from_number("+15558675310", FROM, job.content.clone());
            match c.twilio.messages().reconcile(&job.key, &msg).await {
                Ok(idem_twilio::Reconciled::Found(sent)) => {
                    Step::Done(format!("reconciled: {}", sent.message.sid))
                }
                Ok(other) => Step::Stuck(format!("reconcile: {other:?}")),
                Err(e) => Step::Stuck(e.to_string()),
            }
        }
        Kind::Post => {
            let post = PagePost::message(job.content.clone());
            match c
                .meta
                .reconcile_page_post(
                    &job.key,
                    &PageId::new(PAGE),
                    &post,
                    ReconcileOptions::default(),
                )
                .await
            {
                Ok(idem_meta::Reconciled::Found { id, .. }) => {
                    Step::Done(format!("reconciled: {id}"))
                }
                Ok(other) => Step::Stuck(format!("reconcile: {other:?}")),
                Err(e) => Step::Stuck(e.to_string()),
            }
        }
        _ => Step::Stuck("no reconciliation for this kind".into()),
    }
}

/// The worker: works the batch once, in order, the way a job runner would.
/// A job that another worker holds, or that was not processed, is retried
/// after a pause (bounded); an unknown outcome is reconciled with the
/// provider; anything else is left for an operator.
///
/// # Errors
///
/// When the ledger cannot be opened.
pub async fn run_worker(ep: &Endpoints) -> Result<(), String> {
    let c = clients(ep).await?;
    for job in jobs() {
        let started = Instant::now();
        let mut said = false;
        let outcome = loop {
            match attempt(&c, &job).await {
                Step::Later(why) if started.elapsed() < Duration::from_secs(30) => {
                    if !said {
                        println!("worker: {} waits: {why}", job.name);
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Step::Unknown(why) => {
                    println!("worker: {} unknown ({why}); reconciling", job.name);
                    break reconcile(&c, &job).await;
                }
                other => break other,
            }
        };
        match outcome {
            Step::Done(what) => println!("worker: {} done: {what}", job.name),
            Step::Later(why) | Step::Unknown(why) | Step::Stuck(why) => {
                println!("worker: {} left for an operator: {why}", job.name);
            }
        }
    }
    let _ = c.store;
    Ok(())
}

/// One row of the final table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The job.
    pub job: Job,
    /// Write requests for this job that reached the simulated provider.
    pub writes_on_wire: usize,
    /// Side effects the simulated provider holds for this job (charges,
    /// messages, replies, posts).
    pub side_effects: usize,
    /// The ledger's final state.
    pub state: Option<OperationState>,
    /// The ledger's claim count.
    pub claims: u32,
}

/// What the scenario produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// One row per job.
    pub rows: Vec<Row>,
    /// How the first worker ended (killed) and how long the run took.
    pub notes: Vec<String>,
}

impl Report {
    /// The table the demo prints.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<13} {:<7} {:<46} {:<40} {:>5} {:>7}  {:<10} {:>6}",
            "job",
            "via",
            "idempotency key",
            "injected trouble",
            "wire",
            "effects",
            "ledger",
            "claims"
        );
        let _ = writeln!(out, "{}", "-".repeat(146));
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{:<13} {:<7} {:<46} {:<40} {:>5} {:>7}  {:<10} {:>6}",
                r.job.name,
                r.job.kind.provider(),
                r.job.key.as_str(),
                r.job.trouble,
                r.writes_on_wire,
                r.side_effects,
                r.state.map_or("missing", OperationState::as_str),
                r.claims
            );
        }
        let _ = writeln!(
            out,
            "\nwire = write requests the simulated provider received for the job; effects = what the provider\n\
             actually holds for it (charges, texts, replies, posts). Both are counted by the simulated providers."
        );
        out
    }

    /// Whether every job has exactly one side effect and succeeded.
    pub fn all_exactly_once(&self) -> bool {
        self.rows
            .iter()
            .all(|r| r.side_effects == 1 && r.state == Some(OperationState::Succeeded))
    }
}

struct Fakes {
    stripe: FakeStripe,
    twilio: FakeTwilio,
    gbp: FakeGbp,
    meta: FakeMeta,
}

async fn start_fakes() -> Fakes {
    let fakes = Fakes {
        stripe: FakeStripe::start().await,
        twilio: FakeTwilio::start().await,
        gbp: FakeGbp::start().await,
        meta: FakeMeta::start().await,
    };
    // Faults apply to each provider's write requests in arrival order. The
    // first job of each provider gets its trouble now; the second job's lost
    // response is queued by `second_wave` once the first job is through.
    fakes.stripe.inject(Fault::ServerError);
    fakes.stripe.inject(Fault::ServerError);
    fakes.twilio.inject(Fault::RateLimited {
        retry_after_secs: 1,
    });
    fakes.gbp.inject(Fault::ServerError);
    fakes.meta.inject(FakeMeta::throttle(4));
    fakes
}

/// Queues each provider's second fault (a lost response) as soon as its
/// first job's writes are through: the first job of each kind takes exactly
/// two writes here (fault, then success), except Stripe's three.
async fn second_wave(fakes: &Fakes, armed: &mut [bool; 4]) {
    if !armed[0] && fakes.stripe.write_requests() >= 3 {
        fakes.stripe.inject(Fault::LoseResponse { delay: LOST });
        armed[0] = true;
    }
    if !armed[1] && fakes.twilio.write_requests() >= 2 {
        fakes.twilio.inject(Fault::LoseResponse { delay: LOST });
        armed[1] = true;
    }
    if !armed[2] && fakes.gbp.write_requests() >= 2 {
        fakes.gbp.inject(Fault::LoseResponse { delay: LOST });
        armed[2] = true;
    }
    if !armed[3] && fakes.meta.write_requests() >= 2 {
        fakes.meta.inject(Fault::LoseResponse { delay: LOST });
        armed[3] = true;
    }
}

fn form_value(body: &[u8], name: &str) -> Vec<String> {
    url::form_urlencoded::parse(body)
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

async fn measure(fakes: &Fakes, store: &SqliteStore, jobs: Vec<Job>) -> Vec<Row> {
    let stripe_keys = fakes.stripe.keys_on_wire();
    let twilio_writes = fakes.twilio.writes();
    let gbp_writes = fakes.gbp.writes();
    let meta_writes = fakes.meta.writes();
    let mut rows = Vec::new();
    for job in jobs {
        let (writes_on_wire, side_effects) = match job.kind {
            Kind::Charge => (
                stripe_keys
                    .iter()
                    .filter(|k| *k == job.key.as_str())
                    .count(),
                fakes
                    .stripe
                    .payment_intents()
                    .iter()
                    .filter(|pi| pi["metadata"]["idem_key"] == job.key.as_str())
                    .count(),
            ),
            Kind::Text => (
                twilio_writes
                    .iter()
                    .filter(|r| form_value(&r.body, "Body").contains(&job.content))
                    .count(),
                fakes
                    .twilio
                    .messages()
                    .iter()
                    .filter(|m| m.body.as_deref() == Some(job.content.as_str()))
                    .count(),
            ),
            Kind::Reply => (
                gbp_writes
                    .iter()
                    .filter(|r| {
                        r.url
                            .path()
                            .ends_with(&format!("/reviews/{}/reply", job.content))
                    })
                    .count(),
                usize::from(fakes.gbp.reply(ACCOUNT, LOCATION, &job.content).is_some()),
            ),
            Kind::Post => (
                meta_writes
                    .iter()
                    .filter(|r| form_value(&r.body, "message").contains(&job.content))
                    .count(),
                fakes
                    .meta
                    .posts()
                    .iter()
                    .filter(|p| p.message.as_deref() == Some(job.content.as_str()))
                    .count(),
            ),
        };
        let op = store.get(&job.key).await.ok().flatten();
        rows.push(Row {
            writes_on_wire,
            side_effects,
            state: op.as_ref().map(|o| o.state),
            claims: op.map_or(0, |o| o.claims),
            job,
        });
    }
    rows
}

/// Runs the whole scenario: providers up, worker started, killed with
/// SIGKILL while a charge is in flight at Stripe, restarted, batch finished,
/// counts read from the providers. `worker_exe` is the `worker` binary;
/// `dir` holds the ledger file.
///
/// # Errors
///
/// When the worker cannot be started or never reaches the kill point.
pub async fn run_scenario(worker_exe: &Path, dir: &Path) -> Result<Report, String> {
    let started = Instant::now();
    let fakes = start_fakes().await;
    let ep = Endpoints {
        ledger: dir.join("demo-ledger.db"),
        stripe: fakes.stripe.base_url(),
        twilio: fakes.twilio.base_url(),
        gbp: fakes.gbp.base_url(),
        meta: fakes.meta.base_url(),
    };
    let store = SqliteStore::open(&ep.ledger)
        .await
        .map_err(|e| e.to_string())?;
    let mut notes = Vec::new();

    let spawn = |round: u32| {
        let mut cmd = tokio::process::Command::new(worker_exe);
        cmd.arg("--worker")
            .envs(ep.vars())
            .env("IDEM_DEMO_ROUND", round.to_string())
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd.spawn()
            .map_err(|e| format!("cannot start the worker: {e}"))
    };

    // Round 1: kill the worker while the fifth job's charge is in flight:
    // the fourth write Stripe sees is that charge, whose response is lost.
    let mut first = spawn(1)?;
    let mut armed = [false; 4];
    let deadline = Instant::now() + Duration::from_secs(60);
    while fakes.stripe.write_requests() < 4 {
        second_wave(&fakes, &mut armed).await;
        if Instant::now() > deadline {
            let _ = first.start_kill();
            return Err("the worker never reached the kill point".into());
        }
        if let Ok(Some(status)) = first.try_wait() {
            return Err(format!("the worker exited early: {status}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.start_kill().map_err(|e| e.to_string())?;
    let status = first.wait().await.map_err(|e| e.to_string())?;
    let in_flight = store
        .get(&jobs()[4].key)
        .await
        .ok()
        .flatten()
        .map(|o| o.state);
    notes.push(format!(
        "worker 1 killed with SIGKILL ({status}) while {} was {} at Stripe",
        jobs()[4].name,
        in_flight.map_or("not recorded", OperationState::as_str)
    ));

    // Round 2: a fresh worker process over the same ledger finishes the batch.
    let mut second = spawn(2)?;
    let status = loop {
        second_wave(&fakes, &mut armed).await;
        if let Some(status) = second.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline + Duration::from_secs(120) {
            let _ = second.start_kill();
            return Err("the restarted worker did not finish in time".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    notes.push(format!("worker 2 finished the batch ({status})"));
    notes.push(format!(
        "total run time {:.1} s",
        started.elapsed().as_secs_f64()
    ));

    let rows = measure(&fakes, &store, jobs()).await;
    Ok(Report { rows, notes })
}
