//! Signs and verifies webhooks with idem, for `.ci/webhooks_crosscheck.sh`,
//! which checks the results against the official `standardwebhooks` and
//! `stripe` Python libraries.
//!
//! Reads `{"cases": [...]}` on stdin, each case
//! `{"scheme": "standard"|"stripe", "secret", "id", "timestamp", "body", "signature"?}`,
//! and writes one JSON line:
//!
//! * `webhook_sign sign`: the cases with `signature` set by idem (the
//!   `webhook-signature` header, or the whole `Stripe-Signature` header);
//! * `webhook_sign verify`: `{"results": [true, false, ...]}`, whether idem
//!   accepts each case's signature (5 min tolerance around the current time).

use std::io::Read as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use idem::webhook::signature::{self, WebhookSecret};
use serde_json::Value;

fn main() -> ExitCode {
    match run() {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("webhook_sign: {e}");
            ExitCode::from(2)
        }
    }
}

fn field<'a>(case: &'a Value, name: &str) -> Result<&'a Value, String> {
    case.get(name)
        .ok_or_else(|| format!("a case has no {name:?}"))
}

fn text<'a>(case: &'a Value, name: &str) -> Result<&'a str, String> {
    field(case, name)?
        .as_str()
        .ok_or_else(|| format!("{name:?} is not a string"))
}

fn run() -> Result<String, String> {
    let mode = std::env::args()
        .nth(1)
        .ok_or("usage: webhook_sign sign|verify < cases.json")?;
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| e.to_string())?;
    let mut doc: Value = serde_json::from_str(&input).map_err(|e| e.to_string())?;
    let cases = doc
        .get_mut("cases")
        .and_then(Value::as_array_mut)
        .ok_or("no \"cases\" array")?;
    let tolerance = Duration::from_secs(300);
    let mut results = Vec::new();
    for case in cases.iter_mut() {
        let scheme = text(case, "scheme")?.to_owned();
        let secret = text(case, "secret")?.to_owned();
        let body = text(case, "body")?.to_owned();
        let ts = field(case, "timestamp")?
            .as_u64()
            .ok_or("\"timestamp\" is not a number")?;
        let at = UNIX_EPOCH + Duration::from_secs(ts);
        match (mode.as_str(), scheme.as_str()) {
            ("sign", "standard") => {
                let key = WebhookSecret::parse(&secret).map_err(|e| e.to_string())?;
                let id = text(case, "id")?.to_owned();
                case["signature"] =
                    signature::standard_sign(&[key], &id, at, body.as_bytes()).into();
            }
            ("sign", "stripe") => {
                case["signature"] = signature::stripe_sign(&[&secret], at, body.as_bytes()).into();
            }
            ("verify", "standard") => {
                let key = WebhookSecret::parse(&secret).map_err(|e| e.to_string())?;
                let ok = signature::standard_verify(
                    &[key],
                    text(case, "id")?,
                    &ts.to_string(),
                    text(case, "signature")?,
                    body.as_bytes(),
                    SystemTime::now(),
                    tolerance,
                )
                .is_ok();
                results.push(ok);
            }
            ("verify", "stripe") => {
                let ok = signature::stripe_verify(
                    &[&secret],
                    text(case, "signature")?,
                    body.as_bytes(),
                    SystemTime::now(),
                    tolerance,
                )
                .is_ok();
                results.push(ok);
            }
            (m, s) => return Err(format!("unknown mode {m:?} or scheme {s:?}")),
        }
    }
    if mode == "verify" {
        Ok(serde_json::json!({ "results": results }).to_string())
    } else {
        Ok(doc.to_string())
    }
}
