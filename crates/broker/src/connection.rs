//! The supervised connection. One [`Broker`] per process owns one AMQP
//! connection at a time; when it fails, the supervisor drops the current
//! [`Session`], waits with exponential backoff and builds a new one. Code that
//! consumes watches for the next session and re-creates its consumers there.

use crate::publisher::Publisher;
use crate::{AmqpSettings, BrokerError, topology};
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use protocol::topology::Names;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OnceCell, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Whether this process has already explained that RabbitMQ is unreachable
/// (two services in one process should not both print the long hint).
static UNREACHABLE_EXPLAINED: AtomicBool = AtomicBool::new(false);

/// Handle on the process's RabbitMQ connection. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: AmqpSettings,
    names: Names,
    /// The current session, `None` while disconnected.
    current: watch::Sender<Option<Session>>,
    /// Stops the supervisor; owned here, not a child of the service's token,
    /// because the broker must outlive the draining of everything that uses it.
    stop: CancellationToken,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

/// One live connection: its publisher and its consumer channels. A session
/// that has failed stays failed; wait for the next one.
#[derive(Debug, Clone)]
pub struct Session {
    inner: Arc<SessionInner>,
}

#[derive(Debug)]
struct SessionInner {
    /// 1 for the first connection, then one more per reconnect.
    generation: u64,
    connection: Connection,
    publisher: Publisher,
    /// Channels consumers are spread over, opened on first use.
    consumer_channels: Vec<OnceCell<Channel>>,
    /// Cancelled when a user of the session saw it fail (e.g. a consumer
    /// stream ended), so the supervisor rebuilds the connection.
    failed: CancellationToken,
}

impl Session {
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// The consumer channel for `shard` (taken modulo the channel count).
    /// Consumers of one shard share a channel and its fate.
    pub async fn consumer_channel(&self, shard: usize) -> Result<Channel, BrokerError> {
        let slot = &self.inner.consumer_channels[shard % self.inner.consumer_channels.len()];
        let channel = slot
            .get_or_try_init(|| self.inner.connection.create_channel())
            .await?;
        Ok(channel.clone())
    }

    /// A new channel of its own, for work that must not share a fate.
    pub async fn open_channel(&self) -> Result<Channel, BrokerError> {
        Ok(self.inner.connection.create_channel().await?)
    }

    /// Reports that this session is broken (a channel closed under a
    /// consumer, say). The supervisor reconnects; everyone re-subscribes.
    pub fn fail(&self, reason: &str) {
        if !self.inner.failed.is_cancelled() {
            warn!(
                generation = self.inner.generation,
                reason, "AMQP session failed; reconnecting"
            );
            self.inner.failed.cancel();
        }
    }

    pub fn is_failed(&self) -> bool {
        self.inner.failed.is_cancelled()
    }

    /// Closes the connection at once, as a crash would from the broker's point
    /// of view: unacked deliveries go back to their queues.
    async fn close(&self, code: u16, text: &str) {
        let closing = self.inner.connection.close(code, text.into());
        if let Ok(Err(e)) = timeout(Duration::from_secs(2), closing).await {
            warn!(error = %e, "closing the AMQP connection failed");
        }
    }
}

impl Broker {
    /// Starts the supervisor, which connects in the background and keeps
    /// trying until [`Broker::close`]. `connection_name` shows in RabbitMQ's
    /// management UI.
    pub fn start(settings: AmqpSettings, connection_name: &str) -> Self {
        let (current, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            names: Names::new(settings.prefix.clone()),
            settings,
            current,
            stop: CancellationToken::new(),
            supervisor: Mutex::new(None),
        });
        let handle = tokio::spawn(supervise(inner.clone(), connection_name.to_owned()));
        *inner.supervisor.lock().expect("supervisor lock") = Some(handle);
        Self { inner }
    }

    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    pub fn settings(&self) -> &AmqpSettings {
        &self.inner.settings
    }

    /// The live session, if connected.
    pub fn current(&self) -> Option<Session> {
        self.inner
            .current
            .borrow()
            .as_ref()
            .filter(|s| !s.is_failed())
            .cloned()
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// Waits for a live session whose generation differs from `after` (pass
    /// the generation that just failed, or `None` for any). Returns `None` when
    /// `cancel` fires or the broker is closed.
    pub async fn next_session(
        &self,
        after: Option<u64>,
        cancel: &CancellationToken,
    ) -> Option<Session> {
        let mut rx = self.inner.current.subscribe();
        loop {
            let found = rx
                .borrow_and_update()
                .as_ref()
                .filter(|s| !s.is_failed() && Some(s.generation()) != after)
                .cloned();
            if found.is_some() {
                return found;
            }
            tokio::select! {
                _ = cancel.cancelled() => return None,
                _ = self.inner.stop.cancelled() => return None,
                changed = rx.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// Closes the connection gracefully and stops reconnecting. Unacked
    /// deliveries return to their queues.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let handle = self
            .inner
            .supervisor
            .lock()
            .expect("supervisor lock")
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }

    /// Drops the connection abruptly (test and chaos use): the supervisor
    /// reconnects after its backoff.
    pub async fn kill_connection(&self) {
        if let Some(session) = self.current() {
            session.close(320, "killed").await;
            session.fail("connection killed on purpose");
        }
    }
}

async fn supervise(inner: Arc<Inner>, connection_name: String) {
    let settings = &inner.settings;
    let mut generation = 0;
    let mut failures: u32 = 0;
    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        let connect = connect(settings, &inner.names, &connection_name, generation + 1);
        let outcome = tokio::select! {
            _ = inner.stop.cancelled() => break,
            outcome = connect => outcome,
        };
        match outcome {
            Ok(session) => {
                generation = session.generation();
                UNREACHABLE_EXPLAINED.store(false, Ordering::Relaxed);
                let url = settings.redacted_url();
                if generation > 1 || failures > 0 {
                    info!(connection = %connection_name, generation, %url, "reconnected to RabbitMQ");
                } else {
                    info!(connection = %connection_name, %url, "connected to RabbitMQ");
                }
                failures = 0;
                inner.current.send_replace(Some(session.clone()));
                let lost = wait_for_loss(&session);
                tokio::select! {
                    _ = inner.stop.cancelled() => {
                        inner.current.send_replace(None);
                        session.close(200, "shutting down").await;
                        break;
                    }
                    reason = lost => {
                        warn!(connection = %connection_name, generation, %reason, "lost the RabbitMQ connection");
                        session.inner.failed.cancel();
                        inner.current.send_replace(None);
                        session.close(320, "reconnecting").await;
                    }
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = backoff(settings, failures);
                if failures == 1 && !UNREACHABLE_EXPLAINED.swap(true, Ordering::Relaxed) {
                    error!(
                        url = %settings.redacted_url(),
                        error = %e,
                        "RabbitMQ is not reachable; start one (`rabbitmq-server -detached`, or \
                         `docker compose up rabbitmq`) or set AMQP_URL. Retrying with backoff up to {:?}",
                        Duration::from_millis(settings.reconnect_max_ms),
                    );
                } else {
                    warn!(
                        connection = %connection_name,
                        attempt = failures,
                        error = %e,
                        retry_in = ?delay,
                        "still cannot reach RabbitMQ"
                    );
                }
                tokio::select! {
                    _ = inner.stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        }
        // After a loss, give the broker a moment before the first retry.
        tokio::select! {
            _ = inner.stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_millis(settings.reconnect_initial_ms)) => {}
        }
    }
    inner.current.send_replace(None);
}

/// Exponential backoff with ±25 % jitter, so replicas do not reconnect in step.
fn backoff(settings: &AmqpSettings, failures: u32) -> Duration {
    let exp = settings
        .reconnect_initial_ms
        .saturating_mul(1u64 << failures.saturating_sub(1).min(16));
    let capped = exp.min(settings.reconnect_max_ms).max(1);
    let jitter = (std::process::id() as u64
        ^ protocol::MessageId::new_random().as_uuid().as_u128() as u64)
        % (capped / 2 + 1);
    Duration::from_millis(capped - capped / 4 + jitter)
}

async fn connect(
    settings: &AmqpSettings,
    names: &Names,
    connection_name: &str,
    generation: u64,
) -> Result<Session, BrokerError> {
    let mut uri: AMQPUri = settings.url.parse().map_err(BrokerError::Url)?;
    uri.query.heartbeat.get_or_insert(settings.heartbeat_secs);
    uri.query
        .connection_timeout
        .get_or_insert(settings.connect_timeout_ms);
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let limit = Duration::from_millis(settings.connect_timeout_ms);
    let connection = timeout(limit, Connection::connect_uri(uri, properties))
        .await
        .map_err(|_| BrokerError::Timeout(limit))??;

    let setup = async {
        let declare = connection.create_channel().await?;
        topology::declare_shared(&declare, names, settings).await?;
        let _ = declare.close(200, "declared".into()).await;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok::<_, BrokerError>(channel)
    };
    let publish_channel = timeout(limit, setup)
        .await
        .map_err(|_| BrokerError::Timeout(limit))??;

    Ok(Session {
        inner: Arc::new(SessionInner {
            generation,
            publisher: Publisher::new(publish_channel, settings.publish_timeout()),
            consumer_channels: (0..settings.consumer_channels.max(1))
                .map(|_| OnceCell::new())
                .collect(),
            connection,
            failed: CancellationToken::new(),
        }),
    })
}

/// Resolves when the connection reports an error or a user of the session
/// marked it failed.
async fn wait_for_loss(session: &Session) -> String {
    let mut events = session.inner.connection.events_listener();
    let failed = session.inner.failed.clone();
    loop {
        tokio::select! {
            _ = failed.cancelled() => return "a user of the session reported it failed".into(),
            event = events.next() => match event {
                Some(Event::Error(e)) => return e.to_string(),
                Some(_) => {}
                None => return "connection event stream ended".into(),
            }
        }
    }
}
