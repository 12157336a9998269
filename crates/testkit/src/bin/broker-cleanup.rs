//! Deletes one test run's exchanges and queues, for test suites outside Rust
//! (the browser end-to-end tests):
//!
//! `AMQP_URL=… broker-cleanup <prefix> [user_id …]`

use protocol::UserId;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let prefix = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: broker-cleanup <prefix> [user_id …]"))?;
    anyhow::ensure!(
        !prefix.is_empty(),
        "refusing to clean up the unprefixed production names"
    );
    let url = std::env::var("AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
    let cleanup = testkit::Cleanup::new(&url, &prefix);
    for user in args {
        cleanup.track_user(&UserId::parse(user)?);
    }
    drop(cleanup);
    Ok(())
}
