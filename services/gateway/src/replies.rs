//! Reply routing: each user with at least one socket on this gateway has one
//! consumer on their reply queue, shared by their local sockets. Every reply
//! chunk goes to all of that user's local sockets.
//!
//! A socket registers with [`ReplyRouter::subscribe`] and holds the returned
//! [`Subscription`]; dropping the last subscription of a user cancels their
//! consumer (the queue itself stays until its `x-expires`). A socket whose
//! outbound buffer is full is cut loose (its channel closes) instead of
//! holding up the others.
//!
//! One user, several gateways: the user's reply queue has a single active
//! consumer, so only one gateway (the "home") receives their chunks. Each
//! gateway has one relay queue of its own on `chat_relay`; the home
//! re-publishes every chunk there while the user also has sockets
//! elsewhere, and the gateways that know of each other for a user bind
//! their relay queues to the user's id. A gateway learns of the others from
//! the reply queue's consumer count — at declaration, and once more after
//! its own consumer is on (so two gateways setting up at the same moment
//! cannot both miss each other: the second to consume counts two) — and
//! from the `joined` / `left` announcements gateways that know of others
//! send on the shared presence key. A user on one gateway costs no relay
//! work at all. A relayed chunk is a best-effort extra (no redelivery); the
//! durable path through the home stays as it is.
//!
//! A chunk is acked to RabbitMQ only once a client has acknowledged it: each
//! [`OutboundReply`] carries a shared receipt that acks on the first client
//! ack and requeues the chunk if every copy is dropped unacknowledged (socket
//! closed, cut loose, gateway stopping), so the user's next socket gets it.

use axum::extract::ws::Utf8Bytes;
use broker::lapin::message::Delivery;
use broker::lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicRejectOptions,
};
use broker::lapin::types::FieldTable;
use broker::lapin::{Acker, Channel};
use broker::topology::{self, ReplyQueueShape};
use broker::{Broker, BrokerError, Session};
use futures_util::StreamExt;
use protocol::amqp::{self, ReplyChunk, RoomMessage, RoomReceipt, StatusEvent};
use protocol::topology::Names;
use protocol::ws::{ReplyFrame, ServerFrame};
use protocol::{MessageId, ReplyId, RoomId, UserId};
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Reply queues set up at once (declare, bind, consume); more wait their turn.
const CONCURRENT_SETUPS: usize = 16;

/// Messages per user tracked as being answered (for `cancel`); beyond this
/// a cancel of the newest ones gets `nothing_to_cancel`.
const MAX_TRACKED_ANSWERS: usize = 1024;

/// Users remembered as having a reply queue (for REST messages) before the
/// stale ones are forgotten.
const MAX_REMEMBERED_QUEUES: usize = 100_000;

/// Outbound reply chunks for one socket.
pub type Outbox = mpsc::Sender<OutboundReply>;

/// A reply chunk on its way to a socket: the serialized frame, the chunk it
/// is, and the receipt that settles its AMQP delivery. A pointer to what the
/// user's sockets share, so an idle socket's queue of them stays small.
#[derive(Debug, Clone)]
pub struct OutboundReply(Arc<Outbound>);

#[derive(Debug)]
struct Outbound {
    frame: Utf8Bytes,
    /// `None` for a frame the client does not acknowledge (a status).
    chunk: Option<(ReplyId, u32)>,
    /// For a room message: its room and number.
    room: Option<(RoomId, u64)>,
    /// `None` for a relayed copy: nothing to settle.
    receipt: Option<Arc<Receipt>>,
}

impl OutboundReply {
    fn new(chunk: ReplyChunk, receipt: Option<Arc<Receipt>>) -> Self {
        let key = (chunk.id, chunk.seq);
        let frame = ServerFrame::Reply(ReplyFrame {
            id: chunk.id,
            in_reply_to: chunk.in_reply_to,
            seq: chunk.seq,
            text: chunk.text,
            r#final: chunk.r#final,
            error: chunk.error,
            cancelled: chunk.cancelled,
            room_id: chunk.room_id,
        });
        Self::of(&frame, Some(key), receipt)
    }

    /// The serialized `frame`, acknowledged as `chunk` (if at all),
    /// settled by `receipt` (if any).
    fn of(
        frame: &ServerFrame,
        chunk: Option<(ReplyId, u32)>,
        receipt: Option<Arc<Receipt>>,
    ) -> Self {
        Self(Arc::new(Self::outbound(frame, chunk, receipt)))
    }

    fn outbound(
        frame: &ServerFrame,
        chunk: Option<(ReplyId, u32)>,
        receipt: Option<Arc<Receipt>>,
    ) -> Outbound {
        Outbound {
            frame: Utf8Bytes::from(frame.to_json()),
            chunk,
            room: None,
            receipt,
        }
    }

    /// A room message: acknowledged like a chunk, by its id and the room's
    /// `seq` (numbers beyond `u32` are not expected of one room).
    fn room_message(message: RoomMessage, receipt: Option<Arc<Receipt>>) -> Self {
        let key = (
            ReplyId::from(message.id),
            u32::try_from(message.seq).unwrap_or(u32::MAX),
        );
        let room = (message.room_id, message.seq);
        let frame = ServerFrame::RoomMessage {
            room_id: message.room_id,
            seq: message.seq,
            id: message.id,
            from: message.user_id,
            text: message.text,
        };
        Self(Arc::new(Outbound {
            room: Some(room),
            ..Self::outbound(&frame, Some(key), receipt)
        }))
    }

    /// A `room_receipt` frame: not acknowledged, nothing to settle.
    fn receipt(receipt: RoomReceipt) -> Self {
        let frame = ServerFrame::RoomReceipt {
            room_id: receipt.room_id,
            user_id: receipt.user_id,
            seq: receipt.seq,
            state: receipt.state,
        };
        Self::of(&frame, None, None)
    }

    /// The room message this is, if one: its room and number.
    pub fn room(&self) -> Option<(RoomId, u64)> {
        self.0.room
    }

    /// A `message_status` frame: not acknowledged, nothing to settle.
    fn status(event: &StatusEvent) -> Self {
        let frame = ServerFrame::MessageStatus {
            id: event.message_id,
            status: event.status,
        };
        Self::of(&frame, None, None)
    }

    /// The `reply` frame to write.
    pub fn frame(&self) -> &Utf8Bytes {
        &self.0.frame
    }

    /// What the client names in its `ack`; `None` when it sends none.
    pub fn chunk(&self) -> Option<(ReplyId, u32)> {
        self.0.chunk
    }

    /// Call when a client acknowledged the chunk: acks the delivery (the
    /// first call does; later ones, from other sockets, do nothing).
    pub fn acknowledged(&self) {
        if let Some(receipt) = &self.0.receipt {
            receipt.settle(true);
        }
    }
}

/// An advisory delivery — a status event (for its owner only) or a room
/// receipt — as the frame to deliver (`Some(None)`: unreadable or not the
/// user's, dropped with a log line); `None` for anything else.
fn advisory(user: &UserId, delivery: &Delivery) -> Option<Option<OutboundReply>> {
    let properties = &delivery.properties;
    if broker::properties::is_status_event(properties) {
        return Some(match amqp::decode::<StatusEvent>(&delivery.data) {
            Ok(event) if event.user_id == *user => Some(OutboundReply::status(&event)),
            _ => {
                error!(user_id = %user, "status event unreadable or of another user; dropped");
                None
            }
        });
    }
    if broker::properties::is_room_receipt(properties) {
        return Some(
            amqp::decode::<RoomReceipt>(&delivery.data)
                .ok()
                .map(OutboundReply::receipt),
        );
    }
    None
}

/// Settles one delivery exactly once: ack when a client acknowledged it,
/// requeue when dropped without. (Acking a delivery twice would close the
/// channel.)
#[derive(Debug)]
struct Receipt {
    acker: Acker,
    settled: AtomicBool,
}

impl Receipt {
    fn settle(&self, written: bool) {
        if self.settled.swap(true, Ordering::AcqRel) {
            return;
        }
        // Settling must not block the socket; without a runtime (process
        // exit) the closing channel requeues the delivery anyway.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let acker = self.acker.clone();
        runtime.spawn(async move {
            let settled = if written {
                acker.ack(BasicAckOptions::default()).await
            } else {
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                acker.nack(requeue).await
            };
            if let Err(e) = settled {
                debug!(error = %e, "could not settle a reply delivery; its channel requeues it");
            }
        });
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        self.settle(false);
    }
}

/// Counts users whose reply consumer is running (queue declared, bound and
/// consumed) in `switchboard_gateway_reply_consumers`, for as long as it lives.
struct ConsumingGauge;

impl ConsumingGauge {
    fn up() -> Self {
        metrics::gauge!("switchboard_gateway_reply_consumers").increment(1.0);
        Self
    }
}

impl Drop for ConsumingGauge {
    fn drop(&mut self) {
        metrics::gauge!("switchboard_gateway_reply_consumers").decrement(1.0);
    }
}

/// Routes reply chunks from per-user queues to local sockets. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReplyRouter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    broker: Broker,
    shape: ReplyQueueShape,
    prefetch: u16,
    users: Mutex<HashMap<UserId, LocalUser>>,
    next_socket: AtomicU64,
    /// Consumer tasks, so shutdown can wait for them to cancel cleanly.
    tasks: TaskTracker,
    /// Spreads users over consumer channels.
    shard_hasher: RandomState,
    /// This gateway process, on `chat_relay`.
    instance: String,
    /// Stops the relay consumer at shutdown.
    relay_stop: CancellationToken,
    /// The broker session (generation) on which the relay queue was last
    /// declared, so users' consumers need not declare it again each.
    relay_declared: AtomicU64,
    /// Reply queues being set up at once.
    setups: tokio::sync::Semaphore,
    /// Users whose reply queue was declared for a REST message, and when.
    declared: Mutex<HashMap<UserId, std::time::Instant>>,
    /// The rooms database: a user's rooms are bound to their queue at set-up.
    rooms: Option<Arc<crate::rooms::Store>>,
}

/// The sockets one user has on this gateway, and their consumer.
#[derive(Debug)]
struct LocalUser {
    sockets: HashMap<u64, Outbox>,
    /// Cancels this user's consumer.
    consumer: CancellationToken,
    /// Becomes true once the user's reply queue is declared and bound.
    queue_ready: watch::Receiver<bool>,
    /// What this gateway knows of the user's other gateways.
    peers: Arc<Peers>,
    /// Messages being answered, as far as this gateway knows: accepted
    /// here, or seen streaming, and no final chunk yet. What `cancel` checks.
    answering: HashSet<MessageId>,
}

/// What one gateway knows of a user's sockets on other gateways.
#[derive(Debug, Default)]
struct Peers {
    /// The user has sockets on other gateways too, so chunks this gateway
    /// receives as their home are relayed.
    elsewhere: AtomicBool,
    /// This gateway's relay queue is bound to the user's id (it receives
    /// the home's relayed copies).
    bound: AtomicBool,
}

impl Peers {
    fn elsewhere(&self) -> bool {
        self.elsewhere.load(Ordering::Relaxed)
    }

    /// Whether this gateway takes part in relaying for the user, so the
    /// other gateways must hear when it leaves.
    fn involved(&self) -> bool {
        self.elsewhere() || self.bound.load(Ordering::Relaxed)
    }
}

/// A socket's registration; dropping it unregisters the socket.
#[derive(Debug)]
pub struct Subscription {
    router: ReplyRouter,
    user: UserId,
    socket: u64,
    queue_ready: watch::Receiver<bool>,
}

impl Subscription {
    /// Waits until the user's reply queue exists (declared and bound), at
    /// most `limit`. A message must not be published before that: its answer
    /// would find no queue and be dropped by RabbitMQ.
    pub async fn reply_queue_ready(&self, limit: std::time::Duration) -> bool {
        let mut ready = self.queue_ready.clone();
        matches!(
            tokio::time::timeout(limit, ready.wait_for(|r| *r)).await,
            Ok(Ok(_))
        )
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.router.unregister(&self.user, self.socket);
    }
}

impl ReplyRouter {
    /// Starts the router (and its relay consumer: call within a runtime).
    pub fn new(
        broker: Broker,
        shape: ReplyQueueShape,
        prefetch: u16,
        rooms: Option<Arc<crate::rooms::Store>>,
    ) -> Self {
        let router = Self {
            inner: Arc::new(Inner {
                broker,
                shape,
                prefetch,
                users: Mutex::new(HashMap::new()),
                next_socket: AtomicU64::new(1),
                tasks: TaskTracker::new(),
                shard_hasher: RandomState::new(),
                instance: format!("gw-{}", &MessageId::new_random().to_string()[..8]),
                relay_stop: CancellationToken::new(),
                relay_declared: AtomicU64::new(u64::MAX),
                setups: tokio::sync::Semaphore::new(CONCURRENT_SETUPS),
                declared: Mutex::new(HashMap::new()),
                rooms,
            }),
        };
        let relays = router.clone();
        router
            .inner
            .tasks
            .spawn(async move { relays.consume_relays().await });
        router
    }

    /// Registers a socket of `user`; starts the user's consumer if this is
    /// their first socket here.
    pub fn subscribe(&self, user: &UserId, outbox: Outbox) -> Subscription {
        let socket = self.inner.next_socket.fetch_add(1, Ordering::Relaxed);
        let mut users = self.inner.users.lock().expect("users lock");
        let queue_ready = match users.entry(user.clone()) {
            Entry::Occupied(mut entry) => {
                let local = entry.get_mut();
                local.sockets.insert(socket, outbox);
                local.queue_ready.clone()
            }
            Entry::Vacant(entry) => {
                let consumer = CancellationToken::new();
                let (ready_tx, queue_ready) = watch::channel(false);
                let peers = Arc::new(Peers::default());
                entry.insert(LocalUser {
                    sockets: HashMap::from([(socket, outbox)]),
                    consumer: consumer.clone(),
                    queue_ready: queue_ready.clone(),
                    peers: peers.clone(),
                    answering: HashSet::new(),
                });
                let router = self.clone();
                let user = user.clone();
                self.inner
                    .tasks
                    .spawn(async move { router.consume(user, consumer, ready_tx, peers).await });
                queue_ready
            }
        };
        metrics::gauge!("switchboard_gateway_users_online").set(users.len() as f64);
        Subscription {
            router: self.clone(),
            user: user.clone(),
            socket,
            queue_ready,
        }
    }

    /// Whether this gateway knows `user` has sockets on other gateways too
    /// (and so relays their chunks when it is the user's home).
    pub fn relays(&self, user: &UserId) -> bool {
        let users = self.inner.users.lock().expect("users lock");
        users.get(user).is_some_and(|local| local.peers.elsewhere())
    }

    /// Makes sure `user`'s reply queue exists (declared and bound) before a
    /// message of theirs is published without a socket (REST): an answer
    /// with no queue to go to would be lost. Cheap when the user has a
    /// socket here or was seen recently; else one declare on a channel of
    /// its own, within `limit`.
    pub async fn ensure_reply_queue(&self, user: &UserId, limit: std::time::Duration) -> bool {
        let fresh = std::time::Duration::from_millis(self.inner.shape.expires_ms / 2);
        {
            let users = self.inner.users.lock().expect("users lock");
            if users
                .get(user)
                .is_some_and(|local| *local.queue_ready.borrow())
            {
                return true;
            }
        }
        if self
            .inner
            .declared
            .lock()
            .expect("declared lock")
            .get(user)
            .is_some_and(|at| at.elapsed() < fresh)
        {
            return true;
        }
        let Some(session) = self.inner.broker.current() else {
            return false;
        };
        let declare = async {
            let channel = session.open_channel().await?;
            let declared = topology::declare_reply_queue(
                &channel,
                self.inner.broker.names(),
                user,
                self.inner.shape,
            )
            .await;
            let _ = channel.close(200, "declared".into()).await;
            declared
        };
        match tokio::time::timeout(limit, declare).await {
            Ok(Ok(_)) => {
                let mut declared = self.inner.declared.lock().expect("declared lock");
                if declared.len() >= MAX_REMEMBERED_QUEUES {
                    declared.retain(|_, at| at.elapsed() < fresh);
                }
                declared.insert(user.clone(), std::time::Instant::now());
                true
            }
            Ok(Err(e)) => {
                warn!(user_id = %user, error = %e, "could not declare a reply queue");
                false
            }
            Err(_) => false,
        }
    }

    /// Whether `user` has a socket open somewhere: here, or on any gateway
    /// (their reply queue has a consumer).
    pub async fn is_online(&self, user: &UserId) -> bool {
        if self
            .inner
            .users
            .lock()
            .expect("users lock")
            .contains_key(user)
        {
            return true;
        }
        let Some(session) = self.inner.broker.current() else {
            return false;
        };
        let queue = self.inner.broker.names().reply_queue(user);
        let count = async {
            let channel = session.open_channel().await?;
            // A queue that does not exist closes the channel: offline.
            let count = topology::consumer_count(&channel, &queue).await;
            let _ = channel.close(200, "counted".into()).await;
            count
        };
        let limit =
            std::time::Duration::from_millis(self.inner.broker.settings().connect_timeout_ms);
        matches!(tokio::time::timeout(limit, count).await, Ok(Ok(n)) if n > 0)
    }

    /// Notes that message `id` of `user` was accepted and awaits its answer.
    pub fn expect_answer(&self, user: &UserId, id: MessageId) {
        self.track(user, id, false);
    }

    /// Whether message `id` of `user` is being answered, as far as this
    /// gateway knows (accepted here or seen streaming, not yet final).
    pub fn is_answering(&self, user: &UserId, id: MessageId) -> bool {
        let users = self.inner.users.lock().expect("users lock");
        users
            .get(user)
            .is_some_and(|local| local.answering.contains(&id))
    }

    fn track(&self, user: &UserId, id: MessageId, finished: bool) {
        let mut users = self.inner.users.lock().expect("users lock");
        let Some(local) = users.get_mut(user) else {
            return;
        };
        if finished {
            local.answering.remove(&id);
        } else if local.answering.len() < MAX_TRACKED_ANSWERS {
            local.answering.insert(id);
        }
    }

    /// Users with at least one socket on this gateway.
    pub fn online_users(&self) -> usize {
        self.inner.users.lock().expect("users lock").len()
    }

    /// Waits for every consumer to finish after the last sockets are gone.
    pub async fn drain(&self) {
        self.inner.relay_stop.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }

    fn unregister(&self, user: &UserId, socket: u64) {
        let mut users = self.inner.users.lock().expect("users lock");
        if let Some(local) = users.get_mut(user)
            && local.sockets.remove(&socket).is_some()
            && local.sockets.is_empty()
        {
            local.consumer.cancel();
            users.remove(user);
            metrics::gauge!("switchboard_gateway_users_online").set(users.len() as f64);
        }
    }

    /// Queues `reply` on every socket of `user`; returns how many took it.
    /// Sockets whose buffer is full are dropped from the user; if that leaves
    /// none, the user's consumer is cancelled.
    fn deliver(&self, user: &UserId, reply: &OutboundReply) -> usize {
        let mut users = self.inner.users.lock().expect("users lock");
        let Some(local) = users.get_mut(user) else {
            return 0;
        };
        let mut delivered = 0;
        local.sockets.retain(|socket, outbox| match outbox.try_send(reply.clone()) {
            Ok(()) => {
                delivered += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(user_id = %user, socket, "socket too slow to read its replies; disconnecting it");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if local.sockets.is_empty() {
            local.consumer.cancel();
            users.remove(user);
            metrics::gauge!("switchboard_gateway_users_online").set(users.len() as f64);
        }
        delivered
    }

    /// The life of one user's consumer: (re)subscribe after channel errors
    /// and on every broker session until cancelled.
    async fn consume(
        self,
        user: UserId,
        cancel: CancellationToken,
        ready: watch::Sender<bool>,
        peers: Arc<Peers>,
    ) {
        let broker = self.inner.broker.clone();
        let what = format!("replies of {user}");
        broker::consumer::run_consumer(&broker, &cancel, &what, |session| {
            self.consume_session(&user, session, &cancel, &ready, &peers)
        })
        .await;
    }

    async fn consume_session(
        &self,
        user: &UserId,
        session: Session,
        cancel: &CancellationToken,
        ready: &watch::Sender<bool>,
        peers: &Peers,
    ) -> Result<(), BrokerError> {
        let shard = self.inner.shard_hasher.hash_one(user) as usize;
        let channel = session.consumer_channel(shard, self.inner.prefetch).await?;
        let names = self.inner.broker.names();
        let setup_limit =
            std::time::Duration::from_millis(self.inner.broker.settings().connect_timeout_ms);
        // Boxed: set-up is short, the consumer lives long; the task must not
        // carry set-up's state for as long as the user stays connected.
        let setup = Box::pin(async {
            let queue =
                topology::declare_reply_queue(&channel, names, user, self.inner.shape).await?;
            // An expired queue lost its room bindings: bind them again.
            if let Some(store) = &self.inner.rooms {
                for room in crate::rooms::rooms_to_bind(store, user).await {
                    topology::bind_room(&channel, names, user, &room, true).await?;
                }
            }
            // The queue is durable: once declared it outlives reconnects, so
            // readiness only ever goes from false to true.
            ready.send_replace(true);
            let label = format!("gateway-{user}");
            let (tag, consumer) = broker::consumer::consume(&channel, &queue.name, &label).await?;
            // Consumers other than this gateway's are other gateways with
            // sockets of the user. Counted before consuming, and again after
            // when there were none: of two gateways consuming at the same
            // moment, the second counts the first.
            let others =
                queue.consumers > 0 || topology::consumer_count(&channel, &queue.name).await? > 1;
            if others {
                self.meet_peers(&channel, &session, user, peers).await?;
            } else {
                // A set-up after a lost channel starts from what the count
                // says, not from what an earlier set-up knew.
                peers.elsewhere.store(false, Ordering::Relaxed);
            }
            Ok((queue.name, tag, consumer))
        });
        let (queue, tag, mut deliveries) = {
            // A connect storm sets up queues a bounded number at a time, so
            // the broker connection's buffers do not balloon with thousands
            // of queued set-up frames.
            let _turn = self.inner.setups.acquire().await;
            broker::consumer::bounded_setup(&channel, setup_limit, setup).await?
        };
        let _consuming = ConsumingGauge::up();
        debug!(user_id = %user, queue, "consuming replies");
        loop {
            tokio::select! {
                biased;
                // The stop and each delivery run boxed: their futures are
                // large, and inline they would size every idle user's task.
                _ = cancel.cancelled() => {
                    let stop = async {
                        broker::consumer::cancel_and_requeue(&channel, &tag, deliveries).await;
                        if peers.bound.load(Ordering::Relaxed) {
                            let names = self.inner.broker.names();
                            let unbind = topology::bind_relay(&channel, names, &self.inner.instance, user, false);
                            let _ = tokio::time::timeout(setup_limit, unbind).await;
                        }
                        if peers.involved() {
                            self.announce(&session, user, "left").await;
                        }
                    };
                    Box::pin(stop).await;
                    debug!(user_id = %user, "stopped consuming replies");
                    return Ok(());
                }
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => Box::pin(self.dispatch(user, &session, &peers.elsewhere, delivery)).await?,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(BrokerError::ConsumerEnded),
                }
            }
        }
    }

    /// This gateway found that `user` has sockets on other gateways too:
    /// relay to them when home, receive their home's relays (bind the relay
    /// queue to the user), and tell them, in case one of them counted none.
    async fn meet_peers(
        &self,
        channel: &Channel,
        session: &Session,
        user: &UserId,
        peers: &Peers,
    ) -> Result<(), BrokerError> {
        peers.elsewhere.store(true, Ordering::Relaxed);
        let names = self.inner.broker.names();
        let instance = &self.inner.instance;
        if self.inner.relay_declared.load(Ordering::Acquire) != session.generation() {
            // The relay consumer has not declared it on this connection yet.
            topology::declare_relay_queue(channel, names, instance).await?;
        }
        self.bind_relay_for(channel, user, peers).await?;
        self.announce(session, user, "joined").await;
        Ok(())
    }

    /// Binds this gateway's relay queue to `user`: it receives the copies
    /// the user's home relays.
    async fn bind_relay_for(
        &self,
        channel: &Channel,
        user: &UserId,
        peers: &Peers,
    ) -> Result<(), BrokerError> {
        let names = self.inner.broker.names();
        topology::bind_relay(channel, names, &self.inner.instance, user, true).await?;
        peers.bound.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Tells every other gateway that this one holds sockets of `user`
    /// (`joined`) or no longer does (`left`). Best effort: a gateway that
    /// misses it still counts the queue's consumers when it sets up.
    async fn announce(&self, session: &Session, user: &UserId, word: &str) {
        let published = session
            .publisher()
            .publish_best_effort(
                &self.inner.broker.names().relay_exchange(),
                protocol::topology::RELAY_PRESENCE_KEY,
                user.as_str().as_bytes(),
                broker::properties::relay(&self.inner.instance, Some(word)),
            )
            .await;
        if let Err(e) = published {
            debug!(user_id = %user, error = %e, "could not announce {word}");
        }
    }

    /// The relay queue's consumer: copies of chunks relayed by users' homes,
    /// and other gateways' `joined` / `left`.
    async fn consume_relays(self) {
        let broker = self.inner.broker.clone();
        let stop = self.inner.relay_stop.clone();
        broker::consumer::run_consumer(&broker, &stop, "relays", |session| {
            self.consume_relays_session(session, &stop)
        })
        .await;
    }

    async fn consume_relays_session(
        &self,
        session: Session,
        stop: &CancellationToken,
    ) -> Result<(), BrokerError> {
        let channel = session.open_channel().await?;
        let names = self.inner.broker.names();
        let instance = &self.inner.instance;
        let queue = topology::declare_relay_queue(&channel, names, instance).await?;
        self.inner
            .relay_declared
            .store(session.generation(), Ordering::Release);
        // An exclusive queue dies with its connection: bind again the users
        // it was bound to.
        let users: Vec<UserId> = self
            .inner
            .users
            .lock()
            .expect("users lock")
            .iter()
            .filter(|(_, local)| local.peers.bound.load(Ordering::Relaxed))
            .map(|(user, _)| user.clone())
            .collect();
        for user in &users {
            topology::bind_relay(&channel, names, instance, user, true).await?;
        }
        let options = BasicConsumeOptions {
            no_ack: true,
            ..BasicConsumeOptions::default()
        };
        let mut deliveries = channel
            .basic_consume(
                queue.as_str().into(),
                "relays".into(),
                options,
                FieldTable::default(),
            )
            .await?;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => self.relayed(&session, &channel, delivery).await,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(BrokerError::ConsumerEnded),
                }
            }
        }
    }

    async fn relayed(&self, session: &Session, channel: &Channel, delivery: Delivery) {
        let (from, control) = broker::properties::relay_info(&delivery.properties);
        if from == Some(self.inner.instance.as_str()) {
            return; // our own, routed back because we hold sockets too
        }
        // Announcements name the user in the body, relayed copies in the key.
        let user = match control {
            Some(_) => std::str::from_utf8(&delivery.data)
                .ok()
                .and_then(|user| UserId::parse(user).ok()),
            None => UserId::parse(delivery.routing_key.as_str()).ok(),
        };
        let Some(user) = user else {
            return;
        };
        let peers = {
            let users = self.inner.users.lock().expect("users lock");
            match users.get(&user) {
                Some(local) => local.peers.clone(),
                None => return, // not a user of ours: nothing to do
            }
        };
        let relay_flag = &peers.elsewhere;
        let limit =
            std::time::Duration::from_millis(self.inner.broker.settings().connect_timeout_ms);
        let advisory_frame = control
            .is_none()
            .then(|| advisory(&user, &delivery))
            .flatten();
        match control {
            Some("joined") => {
                // Relay to the newcomer when home, and take the home's relays
                // should the newcomer become it.
                relay_flag.store(true, Ordering::Relaxed);
                if !peers.bound.load(Ordering::Relaxed) {
                    let bind = self.bind_relay_for(channel, &user, &peers);
                    if !matches!(tokio::time::timeout(limit, bind).await, Ok(Ok(()))) {
                        warn!(user_id = %user, "could not bind the relay queue to a user");
                    }
                }
            }
            Some("left") => {
                // Still anyone else? Our own consumer counts as one.
                let queue = self.inner.broker.names().reply_queue(&user);
                let count = async {
                    let channel = session.open_channel().await?;
                    let count = topology::consumer_count(&channel, &queue).await;
                    let _ = channel.close(200, "counted".into()).await;
                    count
                };
                if let Ok(Ok(count)) = tokio::time::timeout(limit, count).await {
                    relay_flag.store(count > 1, Ordering::Relaxed);
                }
            }
            Some(_) => {}
            None if advisory_frame.is_some() => {
                if let Some(Some(frame)) = &advisory_frame {
                    self.deliver(&user, frame);
                }
            }
            None if broker::properties::is_room_message(&delivery.properties) => {
                match amqp::decode::<RoomMessage>(&delivery.data) {
                    Ok(message) => {
                        self.deliver(&user, &OutboundReply::room_message(message, None));
                    }
                    Err(_) => error!(user_id = %user, "relayed room message unreadable; dropped"),
                }
            }
            None => {
                let Ok(chunk) = amqp::decode::<ReplyChunk>(&delivery.data) else {
                    return;
                };
                if chunk.user_id != user && chunk.room_id.is_none() {
                    error!(user_id = %user, "relayed chunk of another user; dropped");
                    return;
                }
                if chunk.user_id == user {
                    self.track(&user, chunk.in_reply_to, chunk.r#final);
                }
                self.deliver(&user, &OutboundReply::new(chunk, None));
            }
        }
    }

    /// Hands one delivery to the user's sockets. Its receipt acks it once a
    /// socket has written it and requeues it if none does; an unreadable or
    /// misrouted delivery is rejected at once.
    async fn dispatch(
        &self,
        user: &UserId,
        session: &Session,
        relay: &AtomicBool,
        delivery: Delivery,
    ) -> Result<(), BrokerError> {
        if let Some(advisory) = advisory(user, &delivery) {
            return self
                .dispatch_advisory(user, session, relay, delivery, advisory)
                .await;
        }
        if broker::properties::is_room_message(&delivery.properties) {
            return self.dispatch_room(user, session, relay, delivery).await;
        }
        let chunk = match amqp::decode::<ReplyChunk>(&delivery.data) {
            // A room's answers reach every member's queue through the
            // room's binding, which only gateways make, for members.
            Ok(chunk) if chunk.user_id == *user || chunk.room_id.is_some() => chunk,
            Ok(chunk) => {
                error!(
                    queue_owner = %user,
                    reply_owner = %chunk.user_id,
                    "reply in another user's queue; dropped, never delivered"
                );
                self.settle_now(delivery.reject(BasicRejectOptions { requeue: false }))
                    .await?;
                return Ok(());
            }
            Err(e) => {
                error!(user_id = %user, error = %e, "unreadable reply; dropped");
                self.settle_now(delivery.reject(BasicRejectOptions { requeue: false }))
                    .await?;
                return Ok(());
            }
        };
        metrics::counter!("switchboard_gateway_reply_chunks_consumed_total").increment(1);
        if delivery.redelivered {
            metrics::counter!("switchboard_gateway_redeliveries_total").increment(1);
        } else if let Some(sent_at) = chunk.request_sent_at_ms {
            // First sight of a chunk: how long since the user sent the message.
            let latency = broker::properties::now_ms().saturating_sub(sent_at) as f64 / 1000.0;
            if chunk.seq == 0 {
                metrics::histogram!("switchboard_request_first_chunk_seconds").record(latency);
            }
            if chunk.r#final {
                metrics::histogram!("switchboard_request_final_chunk_seconds").record(latency);
            }
        }
        if let Some(error) = &chunk.error {
            metrics::counter!("switchboard_gateway_errors_total", "code" => error.code.as_str())
                .increment(1);
        }
        let trace = broker::properties::traceparent(&delivery.properties);
        debug!(
            user_id = %user,
            message_id = %chunk.in_reply_to,
            seq = chunk.seq,
            trace_id = trace.map(|t| t.trace_id().to_string()).unwrap_or_default(),
            "reply chunk for local sockets"
        );
        self.relay_copy(user, session, relay, &delivery).await;
        if chunk.user_id == *user {
            self.track(user, chunk.in_reply_to, chunk.r#final);
        }
        let receipt = Arc::new(Receipt {
            acker: delivery.acker,
            settled: AtomicBool::new(false),
        });
        let reply = OutboundReply::new(chunk, Some(receipt));
        if self.deliver(user, &reply) == 0 {
            // Dropping the only copy requeues it for the user's next socket.
            info!(user_id = %user, "no local socket for a reply; requeued");
        }
        Ok(())
    }

    /// A room message: delivered and settled like a chunk (acked once a
    /// client has it, requeued for the member's next socket if not).
    async fn dispatch_room(
        &self,
        user: &UserId,
        session: &Session,
        relay: &AtomicBool,
        delivery: Delivery,
    ) -> Result<(), BrokerError> {
        let message = match amqp::decode::<RoomMessage>(&delivery.data) {
            Ok(message) => message,
            Err(e) => {
                error!(user_id = %user, error = %e, "unreadable room message; dropped");
                self.settle_now(delivery.reject(BasicRejectOptions { requeue: false }))
                    .await?;
                return Ok(());
            }
        };
        self.relay_copy(user, session, relay, &delivery).await;
        let receipt = Arc::new(Receipt {
            acker: delivery.acker,
            settled: AtomicBool::new(false),
        });
        if self.deliver(user, &OutboundReply::room_message(message, Some(receipt))) == 0 {
            info!(user_id = %user, "no local socket for a room message; requeued");
        }
        Ok(())
    }

    /// Settles a delivery from the consumer loop itself, time-boxed: an ack
    /// on a connection that died under it may never complete, and a loop
    /// stuck there would never notice the loss and never resubscribe.
    async fn settle_now(
        &self,
        settle: impl Future<Output = Result<bool, lapin::Error>>,
    ) -> Result<(), BrokerError> {
        let limit =
            std::time::Duration::from_millis(self.inner.broker.settings().connect_timeout_ms);
        match tokio::time::timeout(limit, settle).await {
            Ok(settled) => settled.map(drop).map_err(BrokerError::from),
            Err(_) => Err(BrokerError::Timeout(limit)),
        }
    }

    /// A status event or room receipt: advisory, so settled at once (a
    /// user with no socket right now does not need it later — the answer or
    /// the message it is about is what counts).
    async fn dispatch_advisory(
        &self,
        user: &UserId,
        session: &Session,
        relay: &AtomicBool,
        delivery: Delivery,
        frame: Option<OutboundReply>,
    ) -> Result<(), BrokerError> {
        if let Some(frame) = frame {
            self.relay_copy(user, session, relay, &delivery).await;
            self.deliver(user, &frame);
        }
        self.settle_now(delivery.ack(BasicAckOptions::default()))
            .await?;
        Ok(())
    }

    /// When the user has sockets on other gateways too, they get a copy
    /// (best effort) through the relay exchange.
    async fn relay_copy(
        &self,
        user: &UserId,
        session: &Session,
        relay: &AtomicBool,
        delivery: &Delivery,
    ) {
        if !relay.load(Ordering::Relaxed) {
            return;
        }
        let mut properties = broker::properties::relay(&self.inner.instance, None);
        if let Some(kind) = delivery.properties.kind() {
            properties = properties.with_type(kind.clone());
        }
        let published = session
            .publisher()
            .publish_best_effort(
                &self.inner.broker.names().relay_exchange(),
                Names::reply_routing_key(user),
                &delivery.data,
                properties,
            )
            .await;
        if let Err(e) = published {
            warn!(user_id = %user, error = %e, "could not relay to the user's other gateways");
        }
    }
}
