//! The same worker going through an adapter crate: nothing is flagged.

async fn charge_through_adapter() -> Result<u16, String> {
    demo_adapter::create_charge("https://api.stripe.com", 2000).await
}

fn main() {
    let _ = charge_through_adapter();
}
