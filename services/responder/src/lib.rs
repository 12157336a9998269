//! The responder: a stand-in for a model worker. It consumes `chat_queue` and
//! streams each answer to its requester's reply queue. Any number of
//! replicas can run side by side; RabbitMQ spreads requests over them.
//!
//! - [`settings`] — configuration.
//! - [`engine`] — who writes the answers: the mock, or an OpenAI-compatible
//!   streaming chat-completions server, behind one contract.
//! - `requests`: the `chat_queue` consumer; a request is acked only after
//!   its final chunk is confirmed. `answer`: one attempt at an answer,
//!   its pieces gathered into chunks by `coalescer`.
//! - `cancellations`: stop generating — cancels broadcast on `chat_control`.
//! - `dead_letters`: tells users whose requests were dead-lettered.
//! - `counters`: what the responder has done.
//!
//! [`Responder::build`] then [`Responder::run_until_stopped`] is the whole
//! life of the service; [`Responder::spawn`] runs it in the background.

mod answer;
mod cancellations;
mod coalescer;
mod counters;
mod dead_letters;
pub mod engine;
mod requests;
pub mod settings;

pub use counters::Counters;
pub use settings::Settings;

use anyhow::Context;
use broker::Broker;
use broker::consumer::keep_consuming;
use cancellations::{CancelListener, Cancellations};
use counters::Tally;
use dead_letters::DeadLetters;
use requests::Requests;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// A built responder, not yet running.
#[derive(Debug)]
pub struct Responder {
    parts: Parts,
    health: Option<TcpListener>,
}

/// The responder's parts, as [`Responder::build`] wires them.
#[derive(Debug)]
struct Parts {
    broker: Broker,
    requests: Arc<Requests>,
    dead_letters: Arc<DeadLetters>,
    cancels: Arc<CancelListener>,
    tally: Tally,
    /// How long answers in flight may finish after a stop.
    grace: Duration,
}

impl Parts {
    /// Connected to RabbitMQ and listening for cancels.
    fn is_ready(&self) -> bool {
        self.broker.is_connected() && self.cancels.is_listening()
    }
}

impl Responder {
    /// Binds the health endpoint and starts connecting to RabbitMQ (in the
    /// background: an unreachable broker is retried, not fatal).
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // Before anything records.
        platform::metrics::install();
        let health = match settings.health.listen.trim() {
            "" => None,
            addr => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on health.listen = {addr}"))?,
            ),
        };
        let engine = engine::Engine::from_settings(&settings).context("invalid engine settings")?;
        info!(engine = engine.name(), "reply engine");
        let broker = Broker::start(settings.amqp.clone(), "switchboard-responder");
        let tally = Tally::default();
        let cancellations = Arc::new(Cancellations::default());
        let worker = &settings.worker;
        let parts = Parts {
            requests: Arc::new(Requests::new(
                broker.clone(),
                engine,
                cancellations.clone(),
                tally.clone(),
                worker,
                &settings.stream,
                worker.prefetch_for(settings.engine.kind),
            )),
            dead_letters: Arc::new(DeadLetters::new(broker.clone(), tally.clone())),
            cancels: Arc::new(CancelListener::new(cancellations, broker.clone())),
            grace: Duration::from_millis(worker.shutdown_grace_ms),
            broker,
            tally,
        };
        Ok(Self { parts, health })
    }

    /// Where `/healthz` and `/readyz` answer, if enabled.
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Runs until `shutdown` resolves, then stops taking requests, lets
    /// in-flight answers finish within the grace period and disconnects.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let running = self.spawn();
        shutdown.await;
        running.stop().await;
        Ok(())
    }

    /// Starts the responder in the background.
    pub fn spawn(self) -> RunningResponder {
        let Self { parts, health } = self;
        let parts = Arc::new(parts);
        let stop = CancellationToken::new();
        let health_task = health.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "responder health endpoints: /healthz, /readyz");
            }
            let ready = parts.clone();
            let app = platform::health::router(Arc::new(move || ready.is_ready()))
                .merge(platform::metrics::router(platform::metrics::install()));
            let stop = stop.clone();
            tokio::spawn(async move {
                let serve = axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await });
                if let Err(e) = serve.await {
                    warn!(error = %e, "health endpoint failed");
                }
            })
        });
        let consumers = vec![
            keep_consuming(&parts.broker, parts.requests.clone(), &stop),
            keep_consuming(&parts.broker, parts.dead_letters.clone(), &stop),
            keep_consuming(&parts.broker, parts.cancels.clone(), &stop),
        ];
        RunningResponder {
            parts,
            stop,
            consumers,
            health: health_task,
        }
    }
}

/// A responder running in the background.
#[derive(Debug)]
pub struct RunningResponder {
    parts: Arc<Parts>,
    stop: CancellationToken,
    consumers: Vec<JoinHandle<()>>,
    health: Option<JoinHandle<()>>,
}

impl RunningResponder {
    /// A live view of what this responder has done.
    pub fn counters(&self) -> watch::Receiver<Counters> {
        self.parts.tally.watch()
    }

    /// Connected to RabbitMQ and listening for cancels.
    pub fn is_ready(&self) -> bool {
        self.parts.is_ready()
    }

    /// The responder's RabbitMQ connection (for fault injection in tests).
    pub fn broker(&self) -> &Broker {
        &self.parts.broker
    }

    /// Graceful stop: no new requests; in-flight answers get the grace period
    /// to finish; whatever is left unacked returns to `chat_queue`.
    pub async fn stop(self) {
        self.stop.cancel();
        for consumer in self.consumers {
            let _ = consumer.await;
        }
        self.parts.requests.finish(self.parts.grace).await;
        self.parts.broker.close().await;
        if let Some(health) = self.health {
            let _ = health.await;
        }
        info!("responder stopped");
    }

    /// Stops at once, as a crash would: answers in flight are abandoned
    /// unacked and the connection is closed, so RabbitMQ redelivers them.
    pub async fn kill(self) {
        self.stop.cancel();
        self.parts.requests.abandon().await;
        for consumer in self.consumers {
            let _ = consumer.await;
        }
        self.parts.broker.close().await;
        if let Some(health) = self.health {
            let _ = health.await;
        }
    }
}
