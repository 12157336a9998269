//! `cargo run -p responder`: one responder replica. Run as many as you like.

use anyhow::Context;
use responder::{Responder, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::cli::parse(
        "responder",
        env!("CARGO_PKG_VERSION"),
        "One Switchboard responder: answers the messages in chat_queue, streaming through RabbitMQ. Run as many as you like.",
    );
    let settings = Settings::load().context("invalid responder settings")?;
    platform::telemetry::init(&settings.log, "switchboard-responder");
    let stopped = Responder::build(settings)
        .await?
        .run_until_stopped(platform::shutdown::signal())
        .await;
    platform::telemetry::shutdown();
    stopped
}
