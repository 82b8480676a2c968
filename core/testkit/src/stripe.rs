//! A simulated Stripe with Stripe's idempotency rules, for tests, demos and
//! chaos runs.
//!
//! What it models:
//!
//! * `Idempotency-Key` on POSTs: the first executed answer (2xx, a 402 card
//!   error, or a [`Fault::Recorded`] 500) is stored and replayed for the
//!   same key and the same parameters with `Idempotent-Replayed: true`; the
//!   same key with other parameters or on another endpoint answers 400
//!   `idempotency_error`; the same key while the first request is still
//!   processing ([`Fault::SlowProcessing`]) answers 409
//!   `idempotency_key_in_use`. Validation errors are not stored.
//!   [`FakeStripe::expire_keys`] forgets keys as Stripe does once they are
//!   24 h old.
//! * Objects: PaymentIntents (create, confirm, capture, retrieve, search),
//!   Refunds (create, list by `payment_intent`/`charge`), Customers (create,
//!   search), Charges (create, search). Search understands
//!   `metadata['k']:'v'`; [`FakeStripe::set_search_lag`] hides objects from
//!   search as Stripe's indexing delay can.
//! * Captures: `final_capture=false` keeps the intent `requires_capture`
//!   with the rest capturable; `amount_received` adds up over captures, and
//!   the intent's charge (its `latest_charge`, readable by id) tracks
//!   `amount_captured`.
//! * Versions: PaymentIntent create answers 400 `parameter_unknown` to
//!   `payment_method_types` on `Stripe-Version` `2026-10-28.endive` and
//!   later, and to `allowed_payment_method_types` before `2026-08-26.dahlia`.
//! * Test payment methods: `pm_card_chargeDeclined` (and the source
//!   `tok_chargeDeclined`) are declined with 402 `card_error`.
//! * Faults for the next write requests ([`Fault`]): [`Fault::ServerError`]
//!   is Stripe's 500 `api_error`, [`Fault::RateLimited`] its 429
//!   `rate_limit`; [`FakeStripe::lock_timeout`] and
//!   [`FakeStripe::should_not_retry`] make its 409 `lock_timeout` and its
//!   stored 500 with `Stripe-Should-Retry: false`.
//!
//! [`Fake::side_effects`] counts writes that really took effect (objects
//! created, intents confirmed or captured).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use idem_testkit::{FakeStripe, Fault};
//! let stripe = FakeStripe::start().await;
//! stripe.inject(Fault::ServerError);
//! stripe.inject(FakeStripe::lock_timeout());
//! assert_eq!(stripe.side_effects(), 0);
//! assert!(stripe.base_url().starts_with("http://"));
//! # }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::fake::{Context, Fake, Fault, Simulator};
use crate::http::{Reply, Request};

/// The simulated Stripe: a [`Fake`] serving [`Stripe`].
pub type FakeStripe = Fake<Stripe>;

/// An answer kept under an idempotency key.
#[derive(Debug)]
struct Stored {
    endpoint: String,
    params: Vec<(String, String)>,
    reply: Reply,
    ready_at: Instant,
}

/// The state of the simulated Stripe (see [`FakeStripe`]).
#[derive(Debug, Default)]
pub struct Stripe {
    seq: u64,
    request_id: String,
    keys: HashMap<String, Stored>,
    objects: BTreeMap<String, Value>,
    order: Vec<String>,
    search_lag: bool,
}

impl Stripe {
    fn id(&mut self, prefix: &str) -> String {
        self.seq += 1;
        format!("{prefix}_idemfake{:010}", self.seq)
    }

    fn insert(&mut self, object: Value, cx: &mut Context) -> Value {
        if let Some(id) = object.get("id").and_then(Value::as_str) {
            self.order.push(id.to_owned());
            self.objects.insert(id.to_owned(), object.clone());
        }
        cx.side_effect();
        object
    }

    fn of_kind(&self, kind: &str) -> Vec<Value> {
        self.order
            .iter()
            .filter_map(|id| self.objects.get(id))
            .filter(|o| o.get("object").and_then(Value::as_str) == Some(kind))
            .cloned()
            .collect()
    }

    fn store(&mut self, request: &Request, reply: &Reply, ready_at: Instant) {
        if let Some(key) = request.header("idempotency-key") {
            let mut params = request.form();
            params.sort();
            self.keys.insert(
                key.to_owned(),
                Stored {
                    endpoint: format!("POST {}", request.path()),
                    params,
                    reply: reply.clone(),
                    ready_at,
                },
            );
        }
    }
}

impl FakeStripe {
    /// Starts a fake on a free local port.
    pub async fn start() -> Self {
        Fake::serve(Stripe::default()).await
    }

    /// The `Idempotency-Key` of every write request, in order.
    pub fn keys_on_wire(&self) -> Vec<String> {
        self.writes()
            .iter()
            .filter_map(|r| r.header("idempotency-key").map(str::to_owned))
            .collect()
    }

    /// While on, search finds nothing (Stripe's search can lag writes by
    /// about a minute).
    pub fn set_search_lag(&self, lagging: bool) {
        self.with(|s| s.search_lag = lagging);
    }

    /// Forgets every idempotency key, as Stripe does once a key is 24 h old.
    pub fn expire_keys(&self) {
        self.with(|s| s.keys.clear());
    }

    /// All PaymentIntents, oldest first.
    pub fn payment_intents(&self) -> Vec<Value> {
        self.with(|s| s.of_kind("payment_intent"))
    }

    /// All Refunds, oldest first.
    pub fn refunds(&self) -> Vec<Value> {
        self.with(|s| s.of_kind("refund"))
    }

    /// All Customers, oldest first.
    pub fn customers(&self) -> Vec<Value> {
        self.with(|s| s.of_kind("customer"))
    }

    /// All Charges created with `POST /v1/charges`, oldest first.
    pub fn charges(&self) -> Vec<Value> {
        self.with(|s| s.of_kind("charge"))
    }

    /// An object by id.
    pub fn object(&self, id: &str) -> Option<Value> {
        self.with(|s| s.objects.get(id).cloned())
    }

    /// Stripe's 409 `lock_timeout` (another request holds the object);
    /// nothing is done.
    pub fn lock_timeout() -> Fault {
        Fault::Reply(Reply::json(
            409,
            error(
                "invalid_request_error",
                Some("lock_timeout"),
                "This object cannot be accessed right now because another API request or Stripe process is currently accessing it.",
                None,
            ),
        ))
    }

    /// A 500 with `Stripe-Should-Retry: false`, stored under the key like an
    /// executed request; nothing visible done.
    pub fn should_not_retry() -> Fault {
        Fault::Recorded(Reply::json(500, api_error()).insert_header("stripe-should-retry", "false"))
    }
}

fn api_error() -> Value {
    error("api_error", None, "An unknown error occurred", None)
}

fn error(kind: &str, code: Option<&str>, message: &str, param: Option<&str>) -> Value {
    let mut e = json!({ "type": kind, "message": message });
    if let Some(c) = code {
        e["code"] = json!(c);
        e["doc_url"] = json!(format!("https://docs.stripe.com/error-codes/{c}"));
    }
    if let Some(p) = param {
        e["param"] = json!(p);
    }
    json!({ "error": e })
}

struct Answer {
    status: u16,
    body: Value,
    /// Whether the request was executed (answers stored under the key).
    executed: bool,
}

impl Answer {
    fn reply(&self) -> Reply {
        Reply::json(self.status, &self.body)
    }

    fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            executed: true,
        }
    }

    fn invalid(status: u16, body: Value) -> Self {
        Self {
            status,
            body,
            executed: false,
        }
    }
}

fn form_get<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn form_map(form: &[(String, String)], name: &str) -> serde_json::Map<String, Value> {
    let prefix = format!("{name}[");
    form.iter()
        .filter_map(|(k, v)| {
            let inner = k.strip_prefix(&prefix)?.strip_suffix(']')?;
            Some((inner.to_owned(), json!(v)))
        })
        .collect()
}

fn form_list(form: &[(String, String)], name: &str) -> Vec<Value> {
    let mut items: Vec<(usize, Value)> = form_map(form, name)
        .into_iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, v)))
        .collect();
    items.sort_by_key(|(i, _)| *i);
    items.into_iter().map(|(_, v)| v).collect()
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn missing(param: &str) -> Answer {
    Answer::invalid(
        400,
        error(
            "invalid_request_error",
            Some("parameter_missing"),
            &format!("Missing required param: {param}."),
            Some(param),
        ),
    )
}

fn no_such(kind: &str, id: &str, param: &str) -> Answer {
    Answer::invalid(
        404,
        error(
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such {kind}: '{id}'"),
            Some(param),
        ),
    )
}

fn declined(pi: Option<&str>) -> Answer {
    let mut e = error(
        "card_error",
        Some("card_declined"),
        "Your card was declined.",
        None,
    );
    e["error"]["decline_code"] = json!("generic_decline");
    if let Some(id) = pi {
        e["error"]["payment_intent"] = json!({ "id": id, "object": "payment_intent" });
    }
    Answer {
        status: 402,
        body: e,
        executed: true,
    }
}

/// The required `amount` and `currency` of a create.
fn amount_and_currency(form: &[(String, String)]) -> Result<(u64, &str), Answer> {
    let amount = amount(form, "amount")?.ok_or_else(|| missing("amount"))?;
    let currency = form_get(form, "currency").ok_or_else(|| missing("currency"))?;
    Ok((amount, currency))
}

fn amount(form: &[(String, String)], name: &str) -> Result<Option<u64>, Answer> {
    match form_get(form, name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            Answer::invalid(
                400,
                error(
                    "invalid_request_error",
                    Some("parameter_invalid_integer"),
                    &format!("Invalid integer: {v}"),
                    Some(name),
                ),
            )
        }),
    }
}

/// `payment_method_types` is gone from PaymentIntent create in
/// `2026-10-28.endive`; `allowed_payment_method_types` exists from
/// `2026-08-26.dahlia`. Stripe answers 400 `parameter_unknown` to a
/// parameter its version does not have. Without `Stripe-Version` the fake,
/// like an account pinned to an older default, accepts both.
fn unknown_on_version(form: &[(String, String)], version: Option<&str>) -> Option<Answer> {
    let date = version.map(|v| v.split('.').next().unwrap_or(v))?;
    let unknown = |param: &str| {
        Answer::invalid(
            400,
            error(
                "invalid_request_error",
                Some("parameter_unknown"),
                &format!("Received unknown parameter: {param}"),
                Some(param),
            ),
        )
    };
    let has = |name: &str| form.iter().any(|(k, _)| k.starts_with(&format!("{name}[")));
    if date >= "2026-10-28" && has("payment_method_types") {
        return Some(unknown("payment_method_types"));
    }
    if date < "2026-08-26" && has("allowed_payment_method_types") {
        return Some(unknown("allowed_payment_method_types"));
    }
    None
}

fn unexpected_state(pi: &Value, action: &str) -> Answer {
    let status = pi["status"].as_str().unwrap_or("unknown");
    Answer::invalid(
        400,
        error(
            "invalid_request_error",
            Some("payment_intent_unexpected_state"),
            &format!("This PaymentIntent's status is {status}; it cannot be {action}."),
            None,
        ),
    )
}

impl Stripe {
    fn execute(
        &mut self,
        path: &str,
        form: &[(String, String)],
        version: Option<&str>,
        cx: &mut Context,
    ) -> Answer {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["v1", "payment_intents"] => {
                if let Some(unknown) = unknown_on_version(form, version) {
                    return unknown;
                }
                self.create_payment_intent(form, cx)
            }
            ["v1", "payment_intents", id, "confirm"] => self.confirm(id, form, cx),
            ["v1", "payment_intents", id, "capture"] => self.capture(id, form, cx),
            ["v1", "refunds"] => self.create_refund(form, cx),
            ["v1", "customers"] => self.create_customer(form, cx),
            ["v1", "charges"] => self.create_charge(form, cx),
            _ => Answer::invalid(
                404,
                error(
                    "invalid_request_error",
                    None,
                    &format!("Unrecognized request URL (POST: {path})."),
                    None,
                ),
            ),
        }
    }

    fn create_payment_intent(&mut self, form: &[(String, String)], cx: &mut Context) -> Answer {
        let (amount, currency) = match amount_and_currency(form) {
            Ok(both) => both,
            Err(e) => return e,
        };
        let id = self.id("pi");
        let pm = form_get(form, "payment_method");
        let manual = form_get(form, "capture_method") == Some("manual");
        let mut types = form_list(form, "payment_method_types");
        if types.is_empty() {
            types = form_list(form, "allowed_payment_method_types");
        }
        if types.is_empty() {
            types = vec![json!("card")];
        }
        let mut pi = json!({
            "id": id,
            "object": "payment_intent",
            "amount": amount,
            "amount_capturable": 0,
            "amount_received": 0,
            "capture_method": if manual { "manual" } else { "automatic" },
            "client_secret": format!("{id}_secret_fake"),
            "confirmation_method": "automatic",
            "created": now_secs(),
            "currency": currency.to_ascii_lowercase(),
            "customer": form_get(form, "customer"),
            "description": form_get(form, "description"),
            "latest_charge": null,
            "livemode": false,
            "metadata": form_map(form, "metadata"),
            "payment_method": pm,
            "payment_method_types": types,
            "receipt_email": form_get(form, "receipt_email"),
            "status": if pm.is_some() { "requires_confirmation" } else { "requires_payment_method" },
        });
        if form_get(form, "confirm") == Some("true") {
            if pm == Some("pm_card_chargeDeclined") {
                pi["status"] = json!("requires_payment_method");
                pi["last_payment_error"] = json!({"type": "card_error", "code": "card_declined"});
                self.insert(pi, cx);
                return declined(Some(&id));
            }
            if pm.is_none() {
                return Answer::invalid(
                    400,
                    error(
                        "invalid_request_error",
                        Some("payment_intent_unexpected_state"),
                        "You cannot confirm this PaymentIntent because it's missing a payment method.",
                        None,
                    ),
                );
            }
            self.settle_confirm(&mut pi, manual);
        }
        Answer::ok(self.insert(pi, cx))
    }

    fn settle_confirm(&mut self, pi: &mut Value, manual: bool) {
        let amount = pi["amount"].as_u64().unwrap_or(0);
        let charge = self.id("ch");
        pi["latest_charge"] = json!(charge);
        if manual {
            pi["status"] = json!("requires_capture");
            pi["amount_capturable"] = json!(amount);
        } else {
            pi["status"] = json!("succeeded");
            pi["amount_received"] = json!(amount);
        }
        // The intent's charge, as Stripe creates it on confirmation. It is
        // reachable by id (refunds by charge, `latest_charge`) but is not a
        // separate side effect: the confirm is.
        let captured = if manual { 0 } else { amount };
        let charge_object = json!({
            "id": charge,
            "object": "charge",
            "amount": amount,
            "amount_captured": captured,
            "amount_refunded": 0,
            "captured": !manual,
            "created": now_secs(),
            "currency": pi["currency"].clone(),
            "customer": pi["customer"].clone(),
            "livemode": false,
            "metadata": pi["metadata"].clone(),
            "paid": true,
            "payment_intent": pi["id"].clone(),
            "status": "succeeded",
        });
        self.objects.insert(charge, charge_object);
    }

    fn confirm(&mut self, id: &str, form: &[(String, String)], cx: &mut Context) -> Answer {
        let Some(mut pi) = self.objects.get(id).cloned() else {
            return no_such("payment_intent", id, "intent");
        };
        let status = pi["status"].as_str().unwrap_or_default().to_owned();
        if status != "requires_confirmation" && status != "requires_payment_method" {
            return unexpected_state(&pi, "confirmed");
        }
        if let Some(pm) = form_get(form, "payment_method") {
            pi["payment_method"] = json!(pm);
        }
        if let Some(cm) = form_get(form, "capture_method") {
            pi["capture_method"] = json!(cm);
        }
        let pm = pi["payment_method"].as_str().map(str::to_owned);
        match pm.as_deref() {
            None => {
                return Answer::invalid(
                    400,
                    error(
                        "invalid_request_error",
                        Some("payment_intent_unexpected_state"),
                        "You cannot confirm this PaymentIntent because it's missing a payment method.",
                        None,
                    ),
                );
            }
            Some("pm_card_chargeDeclined") => {
                pi["status"] = json!("requires_payment_method");
                self.objects.insert(id.to_owned(), pi);
                return declined(Some(id));
            }
            Some(_) => {}
        }
        let manual = pi["capture_method"].as_str() == Some("manual");
        self.settle_confirm(&mut pi, manual);
        self.objects.insert(id.to_owned(), pi.clone());
        cx.side_effect();
        Answer::ok(pi)
    }

    fn capture(&mut self, id: &str, form: &[(String, String)], cx: &mut Context) -> Answer {
        let Some(mut pi) = self.objects.get(id).cloned() else {
            return no_such("payment_intent", id, "intent");
        };
        if pi["status"].as_str() != Some("requires_capture") {
            return unexpected_state(&pi, "captured");
        }
        let capturable = pi["amount_capturable"].as_u64().unwrap_or(0);
        let to_capture = match amount(form, "amount_to_capture") {
            Ok(a) => a.unwrap_or(capturable),
            Err(e) => return e,
        };
        if to_capture > capturable {
            return Answer::invalid(
                400,
                error(
                    "invalid_request_error",
                    Some("amount_too_large"),
                    "The amount to capture exceeds the capturable amount.",
                    Some("amount_to_capture"),
                ),
            );
        }
        // `final_capture=false` (multicapture): the intent stays
        // `requires_capture` with the rest still capturable. Otherwise the
        // rest is released and the intent succeeds. Either way what was
        // received so far adds up.
        let final_capture = form_get(form, "final_capture") != Some("false");
        let received = pi["amount_received"].as_u64().unwrap_or(0) + to_capture;
        pi["amount_received"] = json!(received);
        if final_capture {
            pi["status"] = json!("succeeded");
            pi["amount_capturable"] = json!(0);
        } else {
            pi["amount_capturable"] = json!(capturable - to_capture);
        }
        if let Some(charge) = pi["latest_charge"].as_str().map(str::to_owned) {
            if let Some(ch) = self.objects.get_mut(&charge) {
                ch["amount_captured"] = json!(received);
                ch["captured"] = json!(true);
            }
        }
        let meta = form_map(form, "metadata");
        if let Some(m) = pi["metadata"].as_object_mut() {
            m.extend(meta);
        }
        self.objects.insert(id.to_owned(), pi.clone());
        cx.side_effect();
        Answer::ok(pi)
    }

    fn create_refund(&mut self, form: &[(String, String)], cx: &mut Context) -> Answer {
        let (target, param) = match (form_get(form, "payment_intent"), form_get(form, "charge")) {
            (Some(pi), _) => (pi.to_owned(), "payment_intent"),
            (None, Some(ch)) => (ch.to_owned(), "charge"),
            (None, None) => {
                return Answer::invalid(
                    400,
                    error(
                        "invalid_request_error",
                        Some("parameter_missing"),
                        "One of the following params should be provided for this request: payment_intent or charge.",
                        None,
                    ),
                );
            }
        };
        let Some(paid) = self.objects.get(&target).cloned() else {
            return no_such(param, &target, param);
        };
        let received = if param == "payment_intent" {
            paid["amount_received"].as_u64().unwrap_or(0)
        } else {
            paid["amount_captured"].as_u64().unwrap_or(0)
        };
        let already: u64 = self
            .of_kind("refund")
            .iter()
            .filter(|r| r[param].as_str() == Some(target.as_str()))
            .filter_map(|r| r["amount"].as_u64())
            .sum();
        let amount = match amount(form, "amount") {
            Ok(a) => a.unwrap_or(received.saturating_sub(already)),
            Err(e) => return e,
        };
        if amount == 0 || already + amount > received {
            return Answer::invalid(
                400,
                error(
                    "invalid_request_error",
                    Some("charge_already_refunded"),
                    "The amount to refund exceeds what remains to be refunded.",
                    Some("amount"),
                ),
            );
        }
        let id = self.id("re");
        let refund = json!({
            "id": id,
            "object": "refund",
            "amount": amount,
            "charge": if param == "charge" { json!(target) } else { paid["latest_charge"].clone() },
            "created": now_secs(),
            "currency": paid["currency"].clone(),
            "metadata": form_map(form, "metadata"),
            "payment_intent": if param == "payment_intent" { json!(target) } else { Value::Null },
            "reason": form_get(form, "reason"),
            "status": "succeeded",
        });
        Answer::ok(self.insert(refund, cx))
    }

    fn create_customer(&mut self, form: &[(String, String)], cx: &mut Context) -> Answer {
        let id = self.id("cus");
        let customer = json!({
            "id": id,
            "object": "customer",
            "balance": 0,
            "created": now_secs(),
            "description": form_get(form, "description"),
            "email": form_get(form, "email"),
            "livemode": false,
            "metadata": form_map(form, "metadata"),
            "name": form_get(form, "name"),
            "phone": form_get(form, "phone"),
        });
        Answer::ok(self.insert(customer, cx))
    }

    fn create_charge(&mut self, form: &[(String, String)], cx: &mut Context) -> Answer {
        let (amount, currency) = match amount_and_currency(form) {
            Ok(both) => both,
            Err(e) => return e,
        };
        if form_get(form, "source").is_none() && form_get(form, "customer").is_none() {
            return missing("source");
        }
        if form_get(form, "source") == Some("tok_chargeDeclined") {
            return declined(None);
        }
        let capture = form_get(form, "capture") != Some("false");
        let id = self.id("ch");
        let charge = json!({
            "id": id,
            "object": "charge",
            "amount": amount,
            "amount_captured": if capture { amount } else { 0 },
            "amount_refunded": 0,
            "captured": capture,
            "created": now_secs(),
            "currency": currency.to_ascii_lowercase(),
            "customer": form_get(form, "customer"),
            "description": form_get(form, "description"),
            "livemode": false,
            "metadata": form_map(form, "metadata"),
            "paid": true,
            "payment_intent": null,
            "status": "succeeded",
        });
        Answer::ok(self.insert(charge, cx))
    }

    fn read(&self, path: &str, query: &[(String, String)]) -> Answer {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            [
                "v1",
                collection @ ("payment_intents" | "customers" | "charges"),
                "search",
            ] => {
                let kind = collection.trim_end_matches('s');
                let Some(q) = form_get(query, "query") else {
                    return missing("query");
                };
                let Some((mk, mv)) = parse_metadata_query(q) else {
                    return Answer::invalid(
                        400,
                        error(
                            "invalid_request_error",
                            None,
                            "The query is not supported by the fake (only metadata['k']:'v').",
                            Some("query"),
                        ),
                    );
                };
                let data: Vec<Value> = if self.search_lag {
                    Vec::new()
                } else {
                    self.of_kind(kind)
                        .into_iter()
                        .filter(|o| o["metadata"][&mk].as_str() == Some(mv.as_str()))
                        .collect()
                };
                Answer::ok(json!({
                    "object": "search_result",
                    "url": format!("/v1/{collection}/search"),
                    "has_more": false,
                    "next_page": null,
                    "data": data,
                }))
            }
            ["v1", "refunds"] => {
                let data: Vec<Value> = self
                    .of_kind("refund")
                    .into_iter()
                    .rev()
                    .filter(|r| {
                        ["payment_intent", "charge"].iter().all(|p| {
                            form_get(query, p).is_none_or(|want| r[*p].as_str() == Some(want))
                        })
                    })
                    .collect();
                Answer::ok(json!({
                    "object": "list",
                    "url": "/v1/refunds",
                    "has_more": false,
                    "data": data,
                }))
            }
            ["v1", "payment_intents", id] => match self.objects.get(*id) {
                Some(pi) => Answer::ok(pi.clone()),
                None => no_such("payment_intent", id, "intent"),
            },
            _ => Answer::invalid(
                404,
                error(
                    "invalid_request_error",
                    None,
                    &format!("Unrecognized request URL (GET: {path})."),
                    None,
                ),
            ),
        }
    }
}

/// `metadata['k']:'v'` → (k, v).
fn parse_metadata_query(q: &str) -> Option<(String, String)> {
    let rest = q.trim().strip_prefix("metadata['")?;
    let (k, rest) = rest.split_once("']:'")?;
    let v = rest.strip_suffix('\'')?;
    Some((k.to_owned(), v.to_owned()))
}

impl Simulator for Stripe {
    fn screen(&mut self, req: &Request) -> Option<Reply> {
        self.seq += 1;
        self.request_id = format!("req_fake{:08}", self.seq);
        let authorized = req.header("authorization").is_some_and(|a| {
            a.strip_prefix("Bearer ")
                .is_some_and(|k| k.starts_with("sk_") || k.starts_with("rk_"))
        });
        if !authorized {
            return Some(Reply::json(
                401,
                error(
                    "invalid_request_error",
                    None,
                    "You did not provide a valid API key.",
                    None,
                ),
            ));
        }
        if req.method == http::Method::GET {
            return None;
        }
        if req.method != http::Method::POST {
            return Some(Reply::json(
                405,
                error("invalid_request_error", None, "Method not allowed.", None),
            ));
        }
        // Idempotency: replay, mismatch, or in use.
        let k = req.header("idempotency-key")?;
        if k.len() > 255 {
            return Some(Reply::json(
                400,
                error(
                    "invalid_request_error",
                    None,
                    "Idempotency-Key must be at most 255 characters long.",
                    None,
                ),
            ));
        }
        let stored = self.keys.get(k)?;
        let mut params = req.form();
        params.sort();
        if stored.endpoint != format!("POST {}", req.path()) || stored.params != params {
            let msg = format!(
                "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{k}' if you meant to execute a different request."
            );
            return Some(Reply::json(
                400,
                error("idempotency_error", None, &msg, None),
            ));
        }
        if Instant::now() < stored.ready_at {
            return Some(Reply::json(
                409,
                error(
                    "invalid_request_error",
                    Some("idempotency_key_in_use"),
                    "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please try again later.",
                    None,
                ),
            ));
        }
        Some(
            stored
                .reply
                .clone()
                .insert_header("idempotent-replayed", "true")
                .insert_header("original-request", "req_fake_original"),
        )
    }

    fn handle(&mut self, req: &Request, cx: &mut Context) -> Reply {
        let path = req.path().to_owned();
        if req.method == http::Method::GET {
            return self.read(&path, &req.query_pairs()).reply();
        }
        let now = Instant::now();
        let answer = self.execute(&path, &req.form(), req.header("stripe-version"), cx);
        let reply = answer.reply();
        if answer.executed {
            let busy_until = now + cx.in_progress_for().unwrap_or(Duration::ZERO);
            self.store(req, &reply, busy_until);
        }
        reply
    }

    fn server_error(&self, _: &Request, _: bool) -> Reply {
        Reply::json(500, api_error())
    }

    fn rate_limited(&self, _: &Request, retry_after_secs: u64) -> Reply {
        Reply::json(
            429,
            error(
                "invalid_request_error",
                Some("rate_limit"),
                "Too many requests hit the API too quickly.",
                None,
            ),
        )
        .insert_header("retry-after", retry_after_secs.to_string())
    }

    fn record(&mut self, req: &Request, reply: &Reply) {
        self.store(req, reply, Instant::now());
    }

    fn decorate(&self, reply: Reply) -> Reply {
        reply.insert_header("request-id", self.request_id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn payment_intent_parameters_follow_the_version() {
        let mut st = Stripe::default();
        let base = [("amount", "1099"), ("currency", "usd")];
        let with = |extra: (&str, &str)| {
            let mut f = pairs(&base);
            f.extend(pairs(&[extra]));
            f
        };
        let old = with(("payment_method_types[0]", "card"));
        let new = with(("allowed_payment_method_types[0]", "card"));
        let path = "/v1/payment_intents";
        let status = |st: &mut Stripe, f: &[(String, String)], v: Option<&str>| {
            st.execute(path, f, v, &mut Context::default()).status
        };
        assert_eq!(status(&mut st, &old, Some("2026-10-28.endive")), 400);
        assert_eq!(status(&mut st, &new, Some("2026-10-28.endive")), 200);
        assert_eq!(status(&mut st, &old, Some("2026-08-26.dahlia")), 200);
        assert_eq!(status(&mut st, &new, Some("2026-08-26.dahlia")), 200);
        assert_eq!(status(&mut st, &new, Some("2025-03-31.basil")), 400);
        assert_eq!(status(&mut st, &old, None), 200);
        assert_eq!(st.of_kind("payment_intent").len(), 4);
    }

    #[test]
    fn partial_captures_add_up_and_keep_the_intent_capturable() {
        let mut st = Stripe::default();
        let mut cx = Context::default();
        let f = pairs(&[
            ("amount", "1000"),
            ("currency", "usd"),
            ("payment_method", "pm_card_visa"),
            ("capture_method", "manual"),
            ("confirm", "true"),
        ]);
        let pi = st.execute("/v1/payment_intents", &f, None, &mut cx).body;
        let id = pi["id"].as_str().unwrap().to_owned();
        let capture = format!("/v1/payment_intents/{id}/capture");
        let part = pairs(&[("amount_to_capture", "300"), ("final_capture", "false")]);
        let a = st.execute(&capture, &part, None, &mut cx).body;
        assert_eq!(a["status"], "requires_capture");
        assert_eq!(a["amount_received"], 300);
        assert_eq!(a["amount_capturable"], 700);
        let b = st
            .execute(
                &capture,
                &pairs(&[("amount_to_capture", "200")]),
                None,
                &mut cx,
            )
            .body;
        assert_eq!(b["status"], "succeeded");
        assert_eq!(b["amount_received"], 500);
        assert_eq!(b["amount_capturable"], 0);
        let charge = &st.objects[b["latest_charge"].as_str().unwrap()];
        assert_eq!(charge["amount_captured"], 500);
        assert_eq!(charge["payment_intent"], json!(id));
        assert_eq!(cx.side_effects(), 3, "create+confirm, two captures");
        assert!(
            st.of_kind("charge").is_empty(),
            "an intent's charge is not a charges.create"
        );
    }

    #[test]
    fn metadata_query() {
        assert_eq!(
            parse_metadata_query("metadata['idem_key']:'a_b_c_v1'"),
            Some(("idem_key".into(), "a_b_c_v1".into()))
        );
        assert_eq!(parse_metadata_query("amount>100"), None);
    }
}
