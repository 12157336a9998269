//! `cargo run`: the whole stack in one process — a gateway and a responder,
//! the same library code as the separate services, talking only through
//! RabbitMQ (at `AMQP_URL`). Open http://localhost:5055.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    platform::cli::parse(
        "switchboard",
        env!("CARGO_PKG_VERSION"),
        "The whole Switchboard stack in one process: a gateway and a responder, talking only through RabbitMQ.",
    );
    let gateway_settings = gateway::Settings::load().context("invalid gateway settings")?;
    let mut responder_settings =
        responder::Settings::load().context("invalid responder settings")?;
    // One process, one health endpoint: the gateway's /readyz.
    responder_settings.health.listen.clear();
    platform::telemetry::init(&gateway_settings.log, "switchboard");

    let gateway = gateway::Gateway::build(gateway_settings).await?.spawn();
    let responder = responder::Responder::build(responder_settings)
        .await?
        .spawn();
    let shutdown = platform::shutdown::signal();
    tokio::pin!(shutdown);
    // Up once RabbitMQ answers; until then the broker's own line says why not.
    let mut link = gateway.broker().link();
    tokio::select! {
        _ = &mut shutdown => {}
        _ = link.wait_for(|connected| *connected) => {
            tracing::info!("Switchboard is up: open http://{}/", gateway.addr());
            (&mut shutdown).await;
        }
    }
    // Sockets first, so no new work arrives; then the responder drains.
    let stopped = gateway.stop().await;
    responder.stop().await;
    platform::telemetry::shutdown();
    stopped
}
