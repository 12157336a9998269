//! `cargo run -p gateway`: one gateway replica.

use anyhow::Context;
use gateway::{Gateway, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("invalid gateway settings")?;
    platform::telemetry::init(&settings.log, "switchboard-gateway");
    let stopped = Gateway::build(settings)
        .await?
        .run_until_stopped(platform::shutdown::signal())
        .await;
    platform::telemetry::shutdown();
    stopped
}
