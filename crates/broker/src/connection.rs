//! The supervised connection. One [`Broker`] per process owns one AMQP
//! connection at a time; when it fails, the supervisor drops the current
//! [`Session`], waits with exponential backoff and builds a new one. Code that
//! consumes watches for the next session and re-creates its consumers there.

use crate::publisher::Publisher;
use crate::{AmqpSettings, BrokerError, topology};
use futures_util::Stream;
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::uri::AMQPUri;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use protocol::topology::Names;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

/// A session must stay up this long before reconnect backoff starts over;
/// a connection that keeps dying right after it is made backs off further.
const STABLE_SESSION: Duration = Duration::from_secs(30);

type Events = Pin<Box<dyn Stream<Item = Event> + Send>>;

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
    /// Whether there is a current session: what link watchers see.
    up: watch::Sender<bool>,
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
    /// Channels consumers are spread over, opened on first use and reopened
    /// when a channel-level error closed them.
    consumer_channels: Vec<tokio::sync::Mutex<Option<Channel>>>,
    /// Channels consumers' set-ups declare and bind on, spread the same way:
    /// a refused declaration closes one of these, never a channel consumers
    /// receive on.
    setup_channels: Vec<tokio::sync::Mutex<Option<Channel>>>,
    /// Cancelled when a user of the session saw it fail (e.g. a consumer
    /// stream ended), so the supervisor rebuilds the connection.
    failed: CancellationToken,
    /// Bound on opening a channel (and setting its prefetch): an RPC on a
    /// connection that dies under it may never be answered.
    setup_timeout: Duration,
}

impl Session {
    pub fn generation(&self) -> u64 {
        self.inner.generation
    }

    pub fn publisher(&self) -> &Publisher {
        &self.inner.publisher
    }

    /// The consumer channel for `shard` (taken modulo the channel count).
    /// Consumers of one shard share a channel and its fate; a closed one is
    /// replaced by a new one. `prefetch` (per consumer) is set when the
    /// channel is created; callers of one session pass the same value.
    pub async fn consumer_channel(
        &self,
        shard: usize,
        prefetch: u16,
    ) -> Result<Channel, BrokerError> {
        self.pooled(&self.inner.consumer_channels, shard, Some(prefetch))
            .await
    }

    /// The channel for `shard`'s set-ups (declarations, bindings, counts):
    /// kept apart from the consumer channels, so a declaration RabbitMQ
    /// refuses (a queue of another kind, one that is gone) closes no
    /// consumer's channel.
    pub async fn setup_channel(&self, shard: usize) -> Result<Channel, BrokerError> {
        self.pooled(&self.inner.setup_channels, shard, None).await
    }

    async fn pooled(
        &self,
        slots: &[tokio::sync::Mutex<Option<Channel>>],
        shard: usize,
        prefetch: Option<u16>,
    ) -> Result<Channel, BrokerError> {
        let mut slot = slots[shard % slots.len()].lock().await;
        if let Some(channel) = slot.as_ref().filter(|c| c.status().connected()) {
            return Ok(channel.clone());
        }
        let open = async {
            let channel = self.inner.connection.create_channel().await?;
            // Per consumer (global = false): applies to every consumer started
            // on this channel from now on, so it is set once, not per consumer.
            if let Some(prefetch) = prefetch {
                channel
                    .basic_qos(prefetch, lapin::options::BasicQosOptions::default())
                    .await?;
            }
            Ok::<_, BrokerError>(channel)
        };
        // Held under the slot's lock: a hang here would hold every user of
        // the shard, so it is time-boxed like every other wait.
        let limit = self.inner.setup_timeout;
        let channel = timeout(limit, open)
            .await
            .map_err(|_| BrokerError::Timeout(limit))??;
        *slot = Some(channel.clone());
        Ok(channel)
    }

    /// Bound on each set-up step with the broker (`amqp.connect_timeout_ms`).
    pub fn setup_timeout(&self) -> Duration {
        self.inner.setup_timeout
    }

    /// Whether the connection is up and nobody reported it broken.
    pub fn is_live(&self) -> bool {
        !self.inner.failed.is_cancelled() && self.inner.connection.status().connected()
    }

    /// A new channel of its own, for work that must not share a fate.
    pub async fn open_channel(&self) -> Result<Channel, BrokerError> {
        let limit = self.inner.setup_timeout;
        Ok(timeout(limit, self.inner.connection.create_channel())
            .await
            .map_err(|_| BrokerError::Timeout(limit))??)
    }

    /// Does `work` on a channel of its own, closed afterwards, all within
    /// `limit`: for short jobs (a declaration, a binding, a count) whose
    /// failure must not close a channel others use.
    pub async fn with_channel<T>(
        &self,
        limit: Duration,
        work: impl AsyncFnOnce(&Channel) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let run = async {
            let channel = self.open_channel().await?;
            let done = work(&channel).await;
            let _ = channel.close(200, "done".into()).await;
            done
        };
        timeout(limit, run)
            .await
            .map_err(|_| BrokerError::Timeout(limit))?
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

    /// Closes the connection at once, as a crash would from the broker's point
    /// of view: unacked deliveries go back to their queues.
    async fn close(&self, code: u16, text: &str) {
        let closing = self.inner.connection.close(code, text.into());
        if let Ok(Err(e)) = timeout(Duration::from_secs(2), closing).await {
            // A channel still closing makes lapin refuse; the connection is
            // dropped all the same (unacked deliveries are requeued).
            debug!(error = %e, "closing the AMQP connection cleanly failed; dropped");
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
            up: watch::channel(false).0,
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
            .filter(|s| s.is_live())
            .cloned()
    }

    pub fn is_connected(&self) -> bool {
        self.current().is_some()
    }

    /// Whether the broker is connected, watched: changes when the link is
    /// lost or made again.
    pub fn link(&self) -> watch::Receiver<bool> {
        self.inner.up.subscribe()
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
                .filter(|s| s.is_live() && Some(s.generation()) != after)
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

impl Inner {
    fn set_current(&self, session: Option<Session>) {
        let up = session.is_some();
        self.current.send_replace(session);
        self.up
            .send_if_modified(|was| std::mem::replace(was, up) != up);
    }
}

/// How often the supervisor says again that RabbitMQ is still unreachable.
const UNREACHABLE_REMINDER: Duration = Duration::from_secs(60);

async fn supervise(inner: Arc<Inner>, connection_name: String) {
    let settings = &inner.settings;
    let endpoints = settings.endpoints();
    let mut generation = 0;
    let mut failures: u32 = 0;
    // The node tried next; after a loss, the next one in the list.
    let mut cursor = 0;
    // Nodes tried since the last session: a whole round failed means wait.
    let mut tried = 0;
    let mut unreachable = Unreachable::default();
    loop {
        if inner.stop.is_cancelled() || endpoints.is_empty() {
            if endpoints.is_empty() {
                error!(connection = %connection_name, "amqp.url names no broker");
            }
            break;
        }
        let url = &endpoints[cursor % endpoints.len()];
        let node = crate::settings::node_of(url);
        let connect = connect(
            settings,
            url,
            &inner.names,
            &connection_name,
            generation + 1,
        );
        let outcome = tokio::select! {
            _ = inner.stop.cancelled() => break,
            outcome = connect => outcome,
        };
        let (session, events) = match outcome {
            Ok(connected) => connected,
            Err(e) => {
                cursor += 1;
                tried += 1;
                if tried < endpoints.len() {
                    info!(connection = %connection_name, %node, error = %e, "a RabbitMQ node did not answer; trying the next");
                    continue;
                }
                tried = 0;
                failures = failures.saturating_add(1);
                let delay = backoff(settings, failures);
                unreachable.report(settings, &connection_name, &e, failures);
                tokio::select! {
                    _ = inner.stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        generation = session.generation();
        tried = 0;
        unreachable.ended(&connection_name);
        if generation > 1 || failures > 0 {
            info!(connection = %connection_name, generation, %node, "reconnected to RabbitMQ");
        } else {
            info!(connection = %connection_name, %node, "connected to RabbitMQ");
        }
        if generation > 1 {
            metrics::counter!("switchboard_broker_reconnects_total", "connection" => connection_name.clone())
                .increment(1);
        }
        metrics::gauge!("switchboard_broker_connected", "connection" => connection_name.clone())
            .set(1.0);
        metrics::gauge!("switchboard_broker_node", "connection" => connection_name.clone(), "node" => node.clone()).set(1.0);
        let connected_at = tokio::time::Instant::now();
        inner.set_current(Some(session.clone()));
        let lost = wait_for_loss(&session, events);
        tokio::select! {
            _ = inner.stop.cancelled() => {
                inner.set_current(None);
                session.close(200, "shutting down").await;
                break;
            }
            reason = lost => {
                warn!(connection = %connection_name, generation, %node, %reason, "lost the RabbitMQ connection");
                session.inner.failed.cancel();
                inner.set_current(None);
                metrics::gauge!("switchboard_broker_connected", "connection" => connection_name.clone())
                    .set(0.0);
                metrics::gauge!("switchboard_broker_node", "connection" => connection_name.clone(), "node" => node)
                    .set(0.0);
                session.close(320, "reconnecting").await;
            }
        }
        failures = if connected_at.elapsed() >= STABLE_SESSION {
            0
        } else {
            failures.saturating_add(1)
        };
        // The node may be gone: a cluster's next node first.
        cursor += 1;
        // After a loss, give the broker a moment (jittered, so replicas do not
        // return in step); longer if sessions keep dying.
        let delay = backoff(settings, failures.max(1));
        tokio::select! {
            _ = inner.stop.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    inner.set_current(None);
}

/// What has been said about RabbitMQ being unreachable: one line when it
/// starts, a reminder a minute, one line when it ends — not a line per try,
/// and one voice per process (two services in one process share a broker).
#[derive(Debug, Default)]
struct Unreachable {
    /// When the first round of tries failed, and when it was last said.
    since: Option<(tokio::time::Instant, tokio::time::Instant)>,
    /// This connection speaks for the process; another one is quiet.
    loud: bool,
}

impl Unreachable {
    fn report(
        &mut self,
        settings: &AmqpSettings,
        connection: &str,
        error: &BrokerError,
        attempts: u32,
    ) {
        let now = tokio::time::Instant::now();
        match self.since {
            None => {
                self.since = Some((now, now));
                self.loud = !UNREACHABLE_EXPLAINED.swap(true, Ordering::Relaxed);
                if !self.loud {
                    debug!(connection, error = %error, "RabbitMQ is not reachable (said once for the process)");
                    return;
                }
                warn!(
                    connection,
                    url = %settings.redacted_url(),
                    error = %error,
                    "RabbitMQ is not reachable; retrying every {:?} at most, and saying so once a minute. \
                     Start one (`rabbitmq-server -detached`, or `docker compose up rabbitmq`) or set AMQP_URL.",
                    Duration::from_millis(settings.reconnect_max_ms),
                );
            }
            Some((first, said))
                if self.loud && now.duration_since(said) >= UNREACHABLE_REMINDER =>
            {
                self.since = Some((first, now));
                warn!(
                    connection,
                    attempts,
                    for_secs = now.duration_since(first).as_secs(),
                    error = %error,
                    "RabbitMQ is still not reachable"
                );
            }
            Some(_) => debug!(connection, attempts, error = %error, "RabbitMQ still not reachable"),
        }
    }

    fn ended(&mut self, connection: &str) {
        if let Some((first, _)) = self.since.take() {
            if self.loud {
                UNREACHABLE_EXPLAINED.store(false, Ordering::Relaxed);
            }
            info!(
                connection,
                after_secs = first.elapsed().as_secs(),
                "RabbitMQ is reachable again"
            );
        }
    }
}

/// Exponential backoff with ±25 % jitter, so replicas do not reconnect in step.
pub(crate) fn backoff(settings: &AmqpSettings, failures: u32) -> Duration {
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
    url: &str,
    names: &Names,
    connection_name: &str,
    generation: u64,
) -> Result<(Session, Events), BrokerError> {
    let mut uri: AMQPUri = url.parse().map_err(BrokerError::Url)?;
    // Heartbeats are how a silently dead connection is noticed: never off.
    if uri.query.heartbeat.unwrap_or(0) == 0 {
        uri.query.heartbeat = Some(settings.heartbeat_secs.max(1));
    }
    uri.query
        .connection_timeout
        .get_or_insert(settings.connect_timeout_ms);
    let properties = ConnectionProperties::default().with_connection_name(connection_name.into());
    let limit = Duration::from_millis(settings.connect_timeout_ms);
    let connection = timeout(limit, Connection::connect_uri(uri, properties))
        .await
        .map_err(|_| BrokerError::Timeout(limit))??;
    // Listen before anything else: lapin drops events nobody listens to.
    let events: Events = Box::pin(connection.events_listener());

    let setup = async {
        topology::declare_shared(&connection, names, settings).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok::<_, BrokerError>(channel)
    };
    let publish_channel = timeout(limit, setup)
        .await
        .map_err(|_| BrokerError::Timeout(limit))??;

    let session = Session {
        inner: Arc::new(SessionInner {
            generation,
            publisher: Publisher::new(publish_channel, settings.publish_timeout()),
            consumer_channels: (0..settings.consumer_channels.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            setup_channels: (0..settings.consumer_channels.max(1))
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            connection,
            failed: CancellationToken::new(),
            setup_timeout: Duration::from_millis(settings.connect_timeout_ms),
        }),
    };
    Ok((session, events))
}

/// Resolves when the connection is lost or a user of the session marked it
/// failed. Channel-level errors are reported on the same event stream; they
/// end only their channel, so they are logged, not treated as a loss (lapin
/// marks the connection as errored before it emits a connection error).
async fn wait_for_loss(session: &Session, mut events: Events) -> String {
    let failed = session.inner.failed.clone();
    loop {
        tokio::select! {
            _ = failed.cancelled() => return "the session was reported broken".into(),
            event = events.next() => match event {
                Some(Event::Error(e)) if !session.inner.connection.status().connected() => {
                    return e.to_string();
                }
                Some(Event::Error(e)) => warn!(error = %e, "a channel was closed by an error"),
                Some(_) => {}
                None => return "connection event stream ended".into(),
            }
        }
    }
}
