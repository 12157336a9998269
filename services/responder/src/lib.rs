//! The responder: a stand-in for a model worker. It consumes `chat_queue` and
//! streams a mocked answer to each requester's reply queue. Any number of
//! replicas can run side by side; RabbitMQ spreads requests over them.
//!
//! - [`settings`] — configuration.
//! - [`engine`] — the pluggable reply engine: [`mock`] (the mocked answer
//!   and its chunking) or [`openai`] (an OpenAI-compatible streaming
//!   chat-completions server).
//! - `worker`: the consumer and the per-request handler (ack after the final
//!   chunk is confirmed).
//! - `cancellations`: stop generating — cancels broadcast on `chat_control`.
//! - `dead_letters`: tells users whose requests were dead-lettered.
//!
//! [`Responder::build`] then [`Responder::run_until_stopped`] is the whole
//! life of the service; [`Responder::spawn`] runs it in the background.

mod cancellations;
mod dead_letters;
pub mod engine;
pub mod mock;
pub mod openai;
pub mod settings;
mod worker;

pub use settings::Settings;
pub use worker::Counters;

use anyhow::Context;
use broker::Broker;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use worker::Worker;

/// A built responder, not yet running.
#[derive(Debug)]
pub struct Responder {
    worker: Arc<Worker>,
    health: Option<TcpListener>,
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
        let worker = Arc::new(Worker {
            settings,
            broker,
            counters: watch::channel(Counters::default()).0,
            tasks: TaskTracker::new(),
            abandon: CancellationToken::new(),
            instance: format!("rs-{}", &protocol::MessageId::new_random().to_string()[..8]),
            cancellations: Default::default(),
            cancels_ready: Default::default(),
            engine,
        });
        Ok(Self { worker, health })
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
        let Self { worker, health } = self;
        let stop = CancellationToken::new();
        let health_task = health.map(|listener| {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, "responder health endpoints: /healthz, /readyz");
            }
            let ready = worker.clone();
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
        let consumer = tokio::spawn(worker::consume(worker.clone(), stop.clone()));
        let dead_letters = tokio::spawn(dead_letters::consume(worker.clone(), stop.clone()));
        let cancels = tokio::spawn(cancellations::consume(worker.clone(), stop.clone()));
        RunningResponder {
            worker,
            stop,
            consumer,
            dead_letters,
            cancels,
            health: health_task,
        }
    }
}

/// A responder running in the background.
#[derive(Debug)]
pub struct RunningResponder {
    worker: Arc<Worker>,
    stop: CancellationToken,
    consumer: JoinHandle<()>,
    dead_letters: JoinHandle<()>,
    cancels: JoinHandle<()>,
    health: Option<JoinHandle<()>>,
}

impl RunningResponder {
    /// A live view of what this responder has done.
    pub fn counters(&self) -> watch::Receiver<Counters> {
        self.worker.counters.subscribe()
    }

    /// Connected to RabbitMQ and listening for cancels.
    pub fn is_ready(&self) -> bool {
        self.worker.is_ready()
    }

    /// The responder's RabbitMQ connection (for fault injection in tests).
    pub fn broker(&self) -> &Broker {
        &self.worker.broker
    }

    /// Graceful stop: no new requests; in-flight answers get the grace period
    /// to finish; whatever is left unacked returns to `chat_queue`.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.consumer.await;
        let _ = self.dead_letters.await;
        let _ = self.cancels.await;
        let tasks = &self.worker.tasks;
        tasks.close();
        let grace = Duration::from_millis(self.worker.settings.worker.shutdown_grace_ms);
        if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
            warn!(
                in_flight = tasks.len(),
                "grace period over; abandoning answers in flight (they will be redelivered)"
            );
            self.worker.abandon.cancel();
            tasks.wait().await;
        }
        self.worker.broker.close().await;
        if let Some(health) = self.health {
            let _ = health.await;
        }
        info!("responder stopped");
    }

    /// Stops at once, as a crash would: answers in flight are abandoned
    /// unacked and the connection is closed, so RabbitMQ redelivers them.
    pub async fn kill(self) {
        self.worker.abandon.cancel();
        self.stop.cancel();
        self.worker.tasks.close();
        self.worker.tasks.wait().await;
        let _ = self.consumer.await;
        let _ = self.dead_letters.await;
        let _ = self.cancels.await;
        self.worker.broker.close().await;
        if let Some(health) = self.health {
            let _ = health.await;
        }
    }
}
