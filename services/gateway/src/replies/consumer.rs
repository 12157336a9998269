//! One user's consumer: for as long as the user has a socket here, their
//! reply queue is declared, bound (to their id and their rooms) and
//! consumed, again after every channel error and reconnect. Each delivery
//! is decoded once ([`Inbound`]) and handed to the user's sockets.

use super::context::Context;
use super::inbound::Inbound;
use super::local::{FirstSocket, Peers, ReplyHealth};
use super::outbound::{OutboundReply, Receipt};
use super::presence;
use super::relay;
use broker::lapin::Channel;
use broker::lapin::message::Delivery;
use broker::lapin::options::{BasicAckOptions, BasicRejectOptions};
use broker::topology::QueueKind;
use broker::{BrokerError, Session, topology};
use protocol::UserId;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

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

/// Tells the user's sockets how their consumer is doing, and counts the
/// consumers failing now (the gateway is not ready while any is).
struct HealthReport<'a> {
    tell: watch::Sender<ReplyHealth>,
    failing: &'a AtomicUsize,
}

impl HealthReport<'_> {
    fn set(&self, health: ReplyHealth) {
        let was = self.tell.send_replace(health);
        match (was == ReplyHealth::Failing, health == ReplyHealth::Failing) {
            (false, true) => {
                self.failing.fetch_add(1, Ordering::Relaxed);
            }
            (true, false) => {
                self.failing.fetch_sub(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// After a failure: failing while the connection is up (the queue
    /// itself is the trouble), else waiting for the next connection.
    fn failed(&self, session: &Session) {
        self.set(if session.is_live() {
            ReplyHealth::Failing
        } else {
            ReplyHealth::SettingUp
        });
    }
}

impl Drop for HealthReport<'_> {
    fn drop(&mut self) {
        self.set(ReplyHealth::SettingUp);
    }
}

/// The life of one user's consumer: (re)subscribes after channel errors and
/// on every broker session until the user's last socket here goes.
pub async fn run(context: Arc<Context>, user: UserId, first: FirstSocket) {
    let FirstSocket {
        stop,
        health,
        peers,
    } = first;
    let health = HealthReport {
        tell: health,
        failing: &context.failing,
    };
    let what = format!("replies of {user}");
    let (context, user, stop, health, peers) = (&context, &user, &stop, &health, &peers);
    broker::consumer::run_consumer(&context.broker, stop, &what, |session| async move {
        let served = consume_session(context, user, &session, stop, health, peers).await;
        if served.is_err() {
            health.failed(&session);
        }
        served
    })
    .await;
}

async fn consume_session(
    context: &Context,
    user: &UserId,
    session: &Session,
    stop: &tokio_util::sync::CancellationToken,
    health: &HealthReport<'_>,
    peers: &Peers,
) -> Result<(), BrokerError> {
    let shard = context.shard_hasher.hash_one(user) as usize;
    let channel = Box::pin(session.consumer_channel(shard, context.prefetch)).await?;
    let names = context.broker.names();
    // Boxed: set-up is short, the consumer lives long; the task must not
    // carry set-up's state for as long as the user stays connected.
    let setup = Box::pin(async {
        let mut member_of = Vec::new();
        let _turn = context.setups.acquire().await;
        let limit = context.setup_limit();
        // Declarations and bindings on a set-up channel: one RabbitMQ
        // refuses, or one that times out, closes no consumer's channel.
        let (queue, setup) = declare(context, session, shard, user).await?;
        // An expired queue lost its room bindings: bind them again.
        if let Some(store) = &context.store {
            let rooms = store.rooms_of(user).await.unwrap_or_else(|e| {
                warn!(user_id = %user, error = %e, "could not read the user's rooms; their room messages wait for the next set-up");
                Vec::new()
            });
            let bind = async {
                for room in &rooms {
                    topology::bind_room(&setup, names, user, &room.id, true).await?;
                }
                // A member who left a room while this set-up ran must not
                // stay bound to it: read again, unbind what is gone.
                if let Ok(now) = store.rooms_of(user).await {
                    for room in rooms.iter().filter(|r| !now.contains(r)) {
                        topology::bind_room(&setup, names, user, &room.id, false).await?;
                    }
                    return Ok(now);
                }
                Ok(rooms)
            };
            let now = broker::consumer::bounded_setup(&setup, limit, bind).await?;
            member_of = now.into_iter().map(|room| room.id).collect();
        }
        let label = format!("gateway-{user}");
        let (tag, consumer) =
            broker::consumer::consume_bounded(&channel, &queue.name, &label, limit).await?;
        // Consumers other than this gateway's are other gateways with
        // sockets of the user. Counted before consuming, and again after
        // when there were none: of two gateways consuming at the same
        // moment, the second counts the first.
        let meet = async {
            let others =
                queue.consumers > 0 || topology::consumer_count(&setup, &queue.name).await? > 1;
            if others {
                relay::meet_peers(context, &setup, session, user, peers).await
            } else {
                // A set-up after a lost channel starts from what the count
                // says, not from what an earlier set-up knew.
                peers.elsewhere.store(false, Ordering::Relaxed);
                Ok(())
            }
        };
        if let Err(e) = broker::consumer::bounded_setup(&setup, limit, meet).await {
            // Not left consuming with nobody reading: its deliveries go back.
            broker::consumer::cancel_and_requeue(&channel, &tag, consumer).await;
            return Err(e);
        }
        Ok::<_, BrokerError>((queue.name, tag, consumer, member_of))
    });
    let (queue, tag, mut deliveries, member_of) = setup.await?;
    health.set(ReplyHealth::Consuming);
    let _consuming = ConsumingGauge::up();
    debug!(user_id = %user, queue, "consuming replies");
    // Presence (a database read, a publish) is boxed like set-up: inline,
    // its state would size every idle user's task.
    if !peers.elsewhere.load(Ordering::Relaxed) {
        // Online now (on another gateway already: the rooms know).
        Box::pin(presence::announce(context, user, member_of, true, true)).await;
    }
    // Each delivery runs boxed: its future is large, and inline it would
    // size every idle user's task.
    broker::consumer::deliver_until(&mut deliveries, stop, |delivery| {
        Box::pin(dispatch(context, user, session, peers, delivery))
    })
    .await?;
    let stopping = async {
        broker::consumer::cancel_and_requeue(&channel, &tag, deliveries).await;
        relay::leave(context, &channel, session, user, peers).await;
        debug!(user_id = %user, "stopped consuming replies");
        if !peers.elsewhere.load(Ordering::Relaxed) {
            let rooms = presence::rooms_of(context, user).await;
            presence::announce(context, user, rooms, true, false).await;
        }
    };
    Box::pin(stopping).await;
    Ok(())
}

/// Hands one delivery to the user's sockets. A chunk or room message is
/// settled by its receipt: acked once a client has it, requeued if none
/// does. An advisory frame (status, receipt) is settled at once — a user
/// with no socket right now does not need it later. Anything unreadable or
/// misrouted is rejected at once.
async fn dispatch(
    context: &Context,
    user: &UserId,
    session: &Session,
    peers: &Peers,
    delivery: Delivery,
) -> Result<(), BrokerError> {
    let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
    let inbound = Inbound::decode(user, kind, &delivery.data);
    if let Inbound::Chunk(chunk) = &inbound {
        observe(user, chunk, &delivery);
    }
    let acker = &delivery.acker;
    let settle = || Some(Receipt::amqp(acker.clone()));
    let (frame, advisory) = match OutboundReply::for_sockets(
        inbound,
        user,
        context.watcher.as_ref(),
        settle,
    ) {
        Ok(mapped) => mapped,
        Err(what) => {
            error!(user_id = %user, "{what} in the user's reply queue; dropped, never delivered");
            let reject = delivery.reject(BasicRejectOptions { requeue: false });
            return settle_now(context, reject).await;
        }
    };
    relay::copy(context, session, user, peers, &delivery).await;
    let delivered = context.local.deliver(user, &frame);
    if advisory {
        return settle_now(context, delivery.ack(BasicAckOptions::default())).await;
    }
    if delivered == 0 {
        // Dropping the only copy requeues it for the user's next socket.
        info!(user_id = %user, "no local socket for a reply; requeued");
    }
    Ok(())
}

/// Declares `user`'s reply queue (and binds it to the user's key) on the
/// shard's set-up channel. A queue of the other kind that is there already
/// (the setting changed since it was declared) is kept as it is, until it
/// expires: RabbitMQ cannot change a queue's kind.
async fn declare(
    context: &Context,
    session: &Session,
    shard: usize,
    user: &UserId,
) -> Result<(topology::ReplyQueue, Channel), BrokerError> {
    let names = context.broker.names();
    let mut shape = context.shape;
    loop {
        let channel = session.setup_channel(shard).await?;
        let declared = topology::declare_reply_queue(&channel, names, user, shape);
        match broker::consumer::bounded_setup(&channel, context.setup_limit(), declared).await {
            Ok(queue) => return Ok((queue, channel)),
            Err(e) => match QueueKind::of_existing(&e) {
                Some(kind) if kind != shape.kind => {
                    if !context.other_kind_seen.swap(true, Ordering::Relaxed) {
                        info!(
                            configured = ?context.shape.kind,
                            found = ?kind,
                            "reply queues of the other kind exist (reply_queue.kind changed); each is used as it is until it expires"
                        );
                    }
                    shape.kind = kind;
                }
                _ => return Err(e),
            },
        }
    }
}

/// Metrics and trace for a chunk on its way out.
fn observe(user: &UserId, chunk: &protocol::amqp::ReplyChunk, delivery: &Delivery) {
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
}

/// Settles a delivery from the consumer loop itself, time-boxed: an ack on
/// a connection that died under it may never complete, and a loop stuck
/// there would never notice the loss and never resubscribe.
async fn settle_now(
    context: &Context,
    settle: impl Future<Output = Result<bool, lapin::Error>>,
) -> Result<(), BrokerError> {
    let limit = context.setup_limit();
    match tokio::time::timeout(limit, settle).await {
        Ok(settled) => settled.map(drop).map_err(BrokerError::from),
        Err(_) => Err(BrokerError::Timeout(limit)),
    }
}
