//! One user, several gateways. The user's reply queue has a single active
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
//! work at all. A relayed copy is a best-effort extra (no redelivery); the
//! durable path through the home stays as it is.

use super::context::Context;
use super::inbound::Inbound;
use super::local::Peers;
use super::outbound::OutboundReply;
use broker::lapin::message::Delivery;
use broker::lapin::options::BasicConsumeOptions;
use broker::lapin::types::FieldTable;
use broker::lapin::{BasicProperties, Channel};
use broker::{BrokerError, Session, topology};
use protocol::UserId;
use protocol::topology::Names;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tracing::{debug, error, warn};

/// An announcement on the presence key.
const JOINED: &str = "joined";
const LEFT: &str = "left";

/// This gateway found that `user` has sockets on other gateways too: relay
/// to them when home, receive their home's relays (bind the relay queue to
/// the user), and tell them, in case one of them counted none.
pub async fn meet_peers(
    context: &Context,
    channel: &Channel,
    session: &Session,
    user: &UserId,
    peers: &Peers,
) -> Result<(), BrokerError> {
    peers.elsewhere.store(true, Ordering::Relaxed);
    if context.relay_declared.load(Ordering::Acquire) != session.generation() {
        // The relay consumer has not declared it on this connection yet.
        topology::declare_relay_queue(channel, context.broker.names(), &context.instance).await?;
    }
    bind_for(context, channel, user, peers).await?;
    announce(context, session, user, JOINED).await;
    Ok(())
}

/// The user's last socket here is gone: stop receiving their relays and
/// tell the other gateways, if this one took part.
pub async fn leave(
    context: &Context,
    channel: &Channel,
    session: &Session,
    user: &UserId,
    peers: &Peers,
) {
    if peers.bound() {
        let names = context.broker.names();
        let unbind = topology::bind_relay(channel, names, &context.instance, user, false);
        let _ = tokio::time::timeout(context.setup_limit(), unbind).await;
    }
    if peers.involved() {
        announce(context, session, user, LEFT).await;
    }
}

/// Binds this gateway's relay queue to `user`: it receives the copies the
/// user's home relays.
async fn bind_for(
    context: &Context,
    channel: &Channel,
    user: &UserId,
    peers: &Peers,
) -> Result<(), BrokerError> {
    let names = context.broker.names();
    topology::bind_relay(channel, names, &context.instance, user, true).await?;
    peers.bound.store(true, Ordering::Relaxed);
    Ok(())
}

/// Tells every other gateway that this one holds sockets of `user`
/// (`joined`) or no longer does (`left`). Best effort: a gateway that
/// misses it still counts the queue's consumers when it sets up.
async fn announce(context: &Context, session: &Session, user: &UserId, word: &str) {
    let published = session
        .publisher()
        .publish_best_effort(
            &context.broker.names().relay_exchange(),
            protocol::topology::RELAY_PRESENCE_KEY,
            user.as_str().as_bytes(),
            broker::properties::relay(&context.instance, Some(word)),
        )
        .await;
    if let Err(e) = published {
        debug!(user_id = %user, error = %e, "could not announce {word}");
    }
}

/// When the user has sockets on other gateways too, they get a copy (best
/// effort) of what their home received: same body, same type.
pub async fn copy(
    context: &Context,
    session: &Session,
    user: &UserId,
    peers: &Peers,
    delivery: &Delivery,
) {
    if !peers.elsewhere() {
        return;
    }
    let mut properties: BasicProperties = broker::properties::relay(&context.instance, None);
    if let Some(kind) = delivery.properties.kind() {
        properties = properties.with_type(kind.clone());
    }
    let published = session
        .publisher()
        .publish_best_effort(
            &context.broker.names().relay_exchange(),
            Names::reply_routing_key(user),
            &delivery.data,
            properties,
        )
        .await;
    if let Err(e) = published {
        warn!(user_id = %user, error = %e, "could not relay to the user's other gateways");
    }
}

/// The relay queue's consumer, for the gateway's life: copies of chunks
/// relayed by users' homes, and other gateways' `joined` / `left`.
pub async fn consume(context: Arc<Context>) {
    let stop = context.relay_stop.clone();
    broker::consumer::run_consumer(&context.broker, &stop, "relays", |session| {
        consume_session(&context, session)
    })
    .await;
}

async fn consume_session(context: &Context, session: Session) -> Result<(), BrokerError> {
    let channel = session.open_channel().await?;
    let names = context.broker.names();
    let instance = &context.instance;
    let queue = topology::declare_relay_queue(&channel, names, instance).await?;
    context
        .relay_declared
        .store(session.generation(), Ordering::Release);
    // An exclusive queue dies with its connection: bind again the users
    // it was bound to.
    for user in context.local.relay_bound() {
        topology::bind_relay(&channel, names, instance, &user, true).await?;
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
    broker::consumer::deliver_until(&mut deliveries, &context.relay_stop, |delivery| async {
        relayed(context, &session, &channel, delivery).await;
        Ok(())
    })
    .await
}

/// A delivery on the relay queue: an announcement, or a copy for local
/// sockets of a user whose home is elsewhere.
async fn relayed(context: &Context, session: &Session, channel: &Channel, delivery: Delivery) {
    let (from, control) = broker::properties::relay_info(&delivery.properties);
    if from == Some(context.instance.as_str()) {
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
    let Some(peers) = context.local.peers(&user) else {
        return; // not a user of ours: nothing to do
    };
    match control {
        Some(JOINED) => {
            // Relay to the newcomer when home, and take the home's relays
            // should the newcomer become it.
            peers.elsewhere.store(true, Ordering::Relaxed);
            if !peers.bound() {
                let bind = bind_for(context, channel, &user, &peers);
                if !matches!(
                    tokio::time::timeout(context.setup_limit(), bind).await,
                    Ok(Ok(()))
                ) {
                    warn!(user_id = %user, "could not bind the relay queue to a user");
                }
            }
        }
        Some(LEFT) => {
            // Still anyone else? Our own consumer counts as one.
            let queue = context.broker.names().reply_queue(&user);
            let count = async |channel: &_| topology::consumer_count(channel, &queue).await;
            if let Ok(count) = session.with_channel(context.setup_limit(), count).await {
                peers.elsewhere.store(count > 1, Ordering::Relaxed);
            }
        }
        Some(_) => {}
        None => {
            let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
            let inbound = Inbound::decode(&user, kind, &delivery.data);
            let watcher = context.watcher.as_ref();
            let frame = match OutboundReply::for_sockets(inbound, &user, watcher, || None) {
                Ok((frame, _)) => frame,
                Err(what) => {
                    error!(user_id = %user, "relayed {what}; dropped");
                    return;
                }
            };
            context.local.deliver(&user, &frame);
        }
    }
}
