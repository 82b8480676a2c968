//! Stand-in for an idem adapter in `idem_lint`'s ui tests.
//!
//! The lint judges call sites, not dependency graphs: a worker that calls a function of an
//! adapter crate is not flagged, whatever that function does inside. This crate plays the
//! adapter's part without pulling idem's database stack into the lint's test build.

/// Posts a charge the way an adapter would (through reqwest), returning the HTTP status.
///
/// # Errors
///
/// Returns the transport error's text when the request fails.
pub async fn create_charge(base_url: &str, amount: u64) -> Result<u16, String> {
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{base_url}/v1/charges"))
        .header("Idempotency-Key", "demo_charges_1_v1")
        .body(format!("amount={amount}"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    Ok(response.status().as_u16())
}
