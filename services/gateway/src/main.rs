//! `cargo run -p gateway`: one gateway replica.

use anyhow::Context;
use gateway::{Gateway, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::cli::parse(
        "gateway",
        env!("CARGO_PKG_VERSION"),
        "One Switchboard gateway: the chat page, the HTTP API and WebSockets, over RabbitMQ.",
    );
    let settings = Settings::load().context("invalid gateway settings")?;
    platform::telemetry::init(&settings.log, "switchboard-gateway");
    let stopped = Gateway::build(settings)
        .await?
        .run_until_stopped(platform::shutdown::signal())
        .await;
    platform::telemetry::shutdown();
    stopped
}
