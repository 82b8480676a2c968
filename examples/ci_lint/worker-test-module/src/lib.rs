//! CI fixture: worker code that is clean, and a test module that charges a card with reqwest.
//!
//! Test code is held to the same rule (a test that charges a real card twice is the same bug).
//! `cargo clippy` and `cargo dylint` without `--all-targets` never compile `#[cfg(test)]` code,
//! so `.ci/lint.sh` runs both with `--all-targets` and expects them, and the dependency gate
//! (dev-dependencies count), to reject this crate.

/// The amount of a service ticket, in cents.
pub fn ticket_amount(hours: u32) -> u64 {
    u64::from(hours) * 4500
}

#[cfg(test)]
mod tests {
    async fn charge_in_a_test() -> Result<u16, reqwest::Error> {
        let response = reqwest::Client::new()
            .post("https://api.stripe.com/v1/payment_intents")
            .body("amount=2000&currency=usd")
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    #[test]
    fn amount() {
        assert_eq!(super::ticket_amount(2), 9000);
        drop(charge_in_a_test());
    }
}
