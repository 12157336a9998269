//! `cargo run -p gateway`: one gateway replica.

use anyhow::Context;
use gateway::{Gateway, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::load().context("invalid gateway settings")?;
    platform::telemetry::init(&settings.log);
    Gateway::build(settings)
        .await?
        .run_until_stopped(platform::shutdown::signal())
        .await
}
