//! The job list shared by the worker binary and the suites that check its
//! work: job `i` charges a card through Stripe (even `i`) or texts a customer
//! through Twilio (odd `i`), each under its own key, and the fakes can count
//! each job's side effects.

use std::time::Duration;

use idem::executor::RetrySettings;
use idem::{Executor, IdempotencyKey};
use idem_stripe::{Amount, CreateCharge, Currency, StripeClient};
use idem_testkit::FakeTwilio;
use idem_twilio::{CreateMessage, Credentials, TwilioClient};

/// The secret key the worker gives the fake Stripe.
pub const STRIPE_SECRET: &str = "sk_test_idem_tests";
/// The customer number jobs text.
pub const TO: &str = "+15558675310";
/// The number jobs text from.
pub const FROM: &str = "+15017122661";

/// Which provider a job writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `charges.create` at Stripe (native key).
    Charge,
    /// `messages.create` at Twilio (local only).
    Text,
}

/// One job of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Its index in the list.
    pub index: usize,
    /// The provider.
    pub kind: Kind,
    /// Its idempotency key, `<shop>_jobs_<index>_v1`.
    pub key: IdempotencyKey,
}

impl Job {
    /// Job `index` of the list for `shop` (a key slug: lowercase letters,
    /// digits, `-`).
    ///
    /// # Panics
    ///
    /// When `shop` is not a valid key slug.
    pub fn new(shop: &str, index: usize) -> Self {
        let kind = if index % 2 == 0 {
            Kind::Charge
        } else {
            Kind::Text
        };
        let key = format!("{shop}_jobs_{index}_v1")
            .parse()
            .expect("job keys are valid");
        Self { index, kind, key }
    }

    /// The text body of a [`Kind::Text`] job: unique per key, so the fake's
    /// messages can be counted per job.
    pub fn text_body(&self) -> String {
        format!("job {}", self.key)
    }

    /// The charge of a [`Kind::Charge`] job.
    pub fn charge(&self) -> CreateCharge {
        let amount = 100 + u64::try_from(self.index % 1000).unwrap_or(0);
        let mut charge = CreateCharge::new(Amount::minor(amount), Currency::usd());
        charge.source = Some("tok_visa".into());
        charge
    }

    /// The message of a [`Kind::Text`] job.
    pub fn message(&self) -> CreateMessage {
        CreateMessage::from_number(TO, FROM, self.text_body())
    }
}

/// Short retry bounds for loopback fakes: `attempt` per attempt, 4 attempts,
/// 5–25 ms backoff, `Retry-After` honoured up to 1 s.
pub fn fast_retry(attempt: Duration) -> RetrySettings {
    RetrySettings::default()
        .with_max_attempts(4)
        .with_backoff(Duration::from_millis(5), Duration::from_millis(25))
        .with_attempt_timeout(attempt)
        .with_total_timeout(attempt * 4 + Duration::from_millis(200))
        .with_max_retry_after(Duration::from_secs(1))
}

/// A Stripe client on `executor` pointed at `base_url`.
///
/// # Panics
///
/// When the URL is invalid.
pub fn stripe(executor: Executor, base_url: &str, retry: RetrySettings) -> StripeClient {
    StripeClient::builder(executor, STRIPE_SECRET)
        .base_url(base_url)
        .retry(retry)
        .build()
        .expect("a valid Stripe client configuration")
}

/// A Twilio client on `executor` pointed at `base_url`, for the fake's
/// account.
///
/// # Panics
///
/// When the URL is invalid.
pub fn twilio(executor: Executor, base_url: &str, retry: RetrySettings) -> TwilioClient {
    TwilioClient::builder(
        executor,
        Credentials::auth_token(FakeTwilio::ACCOUNT_SID, "fake-auth-token"),
    )
    .base_url(base_url)
    .retry(retry)
    .lookup_retry(retry)
    .build()
    .expect("a valid Twilio client configuration")
}

/// How one run of a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The provider accepted it (now or earlier).
    Succeeded,
    /// Its outcome is unknown; the error named this key.
    Unknown,
    /// The provider rejected it; the error named this key.
    Failed,
    /// Worth running again later with the same key (not sent, in flight, or
    /// for Stripe an unknown outcome the key still covers).
    Again(String),
}

/// Runs `job` once.
///
/// # Errors
///
/// A description when the adapter answered something no job should see (a
/// key reused, a ledger error, an error that does not name the key).
pub async fn run(
    job: &Job,
    stripe: &StripeClient,
    twilio: &TwilioClient,
) -> Result<Outcome, String> {
    match job.kind {
        Kind::Charge => match stripe.charges().create(&job.key, &job.charge()).await {
            Ok(_) => Ok(Outcome::Succeeded),
            Err(e) => {
                if e.key() != Some(&job.key) {
                    return Err(format!("{}: error does not name the key: {e}", job.key));
                }
                if e.is_unknown() || e.is_retryable() {
                    // Stripe dedupes the key: an unknown outcome is resent.
                    Ok(Outcome::Again(e.to_string()))
                } else {
                    Err(format!("{}: unexpected Stripe error: {e}", job.key))
                }
            }
        },
        Kind::Text => match twilio.messages().create(&job.key, &job.message()).await {
            Ok(_) => Ok(Outcome::Succeeded),
            Err(e) => {
                if e.key() != Some(&job.key) {
                    return Err(format!("{}: error does not name the key: {e}", job.key));
                }
                if !e.to_string().contains(job.key.as_str()) {
                    return Err(format!(
                        "{}: error text does not show the key: {e}",
                        job.key
                    ));
                }
                if e.is_unknown() {
                    Ok(Outcome::Unknown)
                } else if e.is_retryable() {
                    Ok(Outcome::Again(e.to_string()))
                } else if matches!(e, idem_twilio::Error::Rejected { .. }) {
                    Ok(Outcome::Failed)
                } else {
                    Err(format!("{}: unexpected Twilio error: {e}", job.key))
                }
            }
        },
    }
}
