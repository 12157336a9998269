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
//! A chunk is acked to RabbitMQ only once a client has acknowledged it: each
//! [`OutboundReply`] carries a shared receipt that acks on the first client
//! ack and requeues the chunk if every copy is dropped unacknowledged (socket
//! closed, cut loose, gateway stopping), so the user's next socket gets it.

use axum::extract::ws::Utf8Bytes;
use broker::lapin::Acker;
use broker::lapin::message::Delivery;
use broker::lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use broker::topology::{self, ReplyQueueShape};
use broker::{Broker, BrokerError, Session};
use futures_util::StreamExt;
use protocol::amqp::{self, ReplyChunk};
use protocol::ws::{ReplyFrame, ServerFrame};
use protocol::{ReplyId, UserId};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

/// Outbound reply chunks for one socket.
pub type Outbox = mpsc::Sender<OutboundReply>;

/// A reply chunk on its way to a socket: the serialized frame, the chunk it
/// is, and the receipt that settles its AMQP delivery.
#[derive(Debug, Clone)]
pub struct OutboundReply {
    pub frame: Utf8Bytes,
    /// What the client names in its `ack`.
    pub chunk: (ReplyId, u32),
    receipt: Arc<Receipt>,
}

impl OutboundReply {
    /// Call when a client acknowledged the chunk: acks the delivery (the
    /// first call does; later ones, from other sockets, do nothing).
    pub fn acknowledged(&self) {
        self.receipt.settle(true);
    }
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
}

/// The sockets one user has on this gateway, and their consumer.
#[derive(Debug)]
struct LocalUser {
    sockets: HashMap<u64, Outbox>,
    /// Cancels this user's consumer.
    consumer: CancellationToken,
    /// Becomes true once the user's reply queue is declared and bound.
    queue_ready: watch::Receiver<bool>,
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
    pub fn new(broker: Broker, shape: ReplyQueueShape, prefetch: u16) -> Self {
        Self {
            inner: Arc::new(Inner {
                broker,
                shape,
                prefetch,
                users: Mutex::new(HashMap::new()),
                next_socket: AtomicU64::new(1),
                tasks: TaskTracker::new(),
                shard_hasher: RandomState::new(),
            }),
        }
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
                entry.insert(LocalUser {
                    sockets: HashMap::from([(socket, outbox)]),
                    consumer: consumer.clone(),
                    queue_ready: queue_ready.clone(),
                });
                let router = self.clone();
                let user = user.clone();
                self.inner
                    .tasks
                    .spawn(async move { router.consume(user, consumer, ready_tx).await });
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

    /// Users with at least one socket on this gateway.
    pub fn online_users(&self) -> usize {
        self.inner.users.lock().expect("users lock").len()
    }

    /// Waits for every consumer to finish after the last sockets are gone.
    pub async fn drain(&self) {
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
    async fn consume(self, user: UserId, cancel: CancellationToken, ready: watch::Sender<bool>) {
        let broker = self.inner.broker.clone();
        let what = format!("replies of {user}");
        broker::consumer::run_consumer(&broker, &cancel, &what, |session| {
            self.consume_session(&user, session, &cancel, &ready)
        })
        .await;
    }

    async fn consume_session(
        &self,
        user: &UserId,
        session: Session,
        cancel: &CancellationToken,
        ready: &watch::Sender<bool>,
    ) -> Result<(), BrokerError> {
        let shard = self.inner.shard_hasher.hash_one(user) as usize;
        let channel = session.consumer_channel(shard).await?;
        let names = self.inner.broker.names();
        let setup_limit =
            std::time::Duration::from_millis(self.inner.broker.settings().connect_timeout_ms);
        let setup = async {
            let queue =
                topology::declare_reply_queue(&channel, names, user, self.inner.shape).await?;
            // The queue is durable: once declared it outlives reconnects, so
            // readiness only ever goes from false to true.
            ready.send_replace(true);
            let label = format!("gateway-{user}");
            let (tag, consumer) =
                broker::consumer::start(&channel, &queue, &label, self.inner.prefetch).await?;
            Ok((queue, tag, consumer))
        };
        let (queue, tag, mut deliveries) =
            broker::consumer::bounded_setup(&channel, setup_limit, setup).await?;
        debug!(user_id = %user, queue, "consuming replies");
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    broker::consumer::cancel_and_requeue(&channel, &tag, deliveries).await;
                    debug!(user_id = %user, "stopped consuming replies");
                    return Ok(());
                }
                next = deliveries.next() => match next {
                    Some(Ok(delivery)) => self.dispatch(user, delivery).await?,
                    Some(Err(e)) => return Err(e.into()),
                    None => return Err(BrokerError::ConsumerEnded),
                }
            }
        }
    }

    /// Hands one delivery to the user's sockets. Its receipt acks it once a
    /// socket has written it and requeues it if none does; an unreadable or
    /// misrouted delivery is rejected at once.
    async fn dispatch(&self, user: &UserId, delivery: Delivery) -> Result<(), BrokerError> {
        let chunk = match amqp::decode::<ReplyChunk>(&delivery.data) {
            Ok(chunk) if chunk.user_id == *user => chunk,
            Ok(chunk) => {
                error!(
                    queue_owner = %user,
                    reply_owner = %chunk.user_id,
                    "reply in another user's queue; dropped, never delivered"
                );
                delivery
                    .reject(BasicRejectOptions { requeue: false })
                    .await?;
                return Ok(());
            }
            Err(e) => {
                error!(user_id = %user, error = %e, "unreadable reply; dropped");
                delivery
                    .reject(BasicRejectOptions { requeue: false })
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
        let frame = ServerFrame::Reply(ReplyFrame {
            id: chunk.id,
            in_reply_to: chunk.in_reply_to,
            seq: chunk.seq,
            text: chunk.text,
            r#final: chunk.r#final,
            error: chunk.error,
        });
        let reply = OutboundReply {
            frame: Utf8Bytes::from(frame.to_json()),
            chunk: (chunk.id, chunk.seq),
            receipt: Arc::new(Receipt {
                acker: delivery.acker,
                settled: AtomicBool::new(false),
            }),
        };
        if self.deliver(user, &reply) == 0 {
            // Dropping the only copy requeues it for the user's next socket.
            info!(user_id = %user, "no local socket for a reply; requeued");
        }
        Ok(())
    }
}
