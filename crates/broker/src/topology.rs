//! Idempotent declarations. Each service declares what it uses at start and
//! after every reconnect; redeclaring with the same arguments is a no-op.

use crate::{AmqpSettings, BrokerError};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};
use protocol::topology::Names;
use protocol::{RoomId, UserId};
use tracing::warn;

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

fn table(entries: impl IntoIterator<Item = (&'static str, AMQPValue)>) -> FieldTable {
    let mut table = FieldTable::default();
    for (key, value) in entries {
        table.insert(ShortString::from(key), value);
    }
    table
}

/// The shared objects: the exchanges, the request queue and its
/// dead-letter queues. A queue that exists with other arguments (declared
/// by an earlier version, before its bounds) is used as it is, with a
/// warning: RabbitMQ refuses to change a queue's arguments, and a service
/// that would not start is worse than one that runs unbounded until an
/// operator deletes the queue while it is empty.
pub async fn declare_shared(
    connection: &Connection,
    names: &Names,
    settings: &AmqpSettings,
) -> Result<(), BrokerError> {
    let channel = connection.create_channel().await?;
    let exchanges = [
        (names.responses_exchange(), ExchangeKind::Direct),
        (names.relay_exchange(), ExchangeKind::Direct),
        (names.dead_letter_exchange(), ExchangeKind::Fanout),
        (names.control_exchange(), ExchangeKind::Fanout),
    ];
    for (exchange, kind) in exchanges {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                kind,
                durable_exchange(),
                FieldTable::default(),
            )
            .await?;
    }
    let _ = channel.close(200, "declared".into()).await;
    // Every dead-lettered request is kept for operators (the oldest go
    // first beyond the bound), and a copy goes to the responders to tell
    // its user.
    for queue in [names.dead_letter_queue(), names.dead_letter_notify_queue()] {
        let arguments = table([
            ("x-queue-type", AMQPValue::LongString("quorum".into())),
            (
                "x-max-length",
                AMQPValue::LongLongInt(i64::from(settings.dead_letter_max_length)),
            ),
        ]);
        declare_bounded(connection, &queue, arguments).await?;
        let channel = connection.create_channel().await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                names.dead_letter_exchange().into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let _ = channel.close(200, "bound".into()).await;
    }
    // Beyond its bound, chat_queue refuses new requests (the gateway says
    // `publish_rejected`, retryable) rather than drop old ones.
    let arguments = table([
        ("x-queue-type", AMQPValue::LongString("quorum".into())),
        (
            "x-dead-letter-exchange",
            AMQPValue::LongString(names.dead_letter_exchange().into()),
        ),
        (
            "x-delivery-limit",
            AMQPValue::LongLongInt(i64::from(settings.delivery_limit)),
        ),
        (
            "x-max-length",
            AMQPValue::LongLongInt(i64::from(settings.chat_queue_max_length)),
        ),
        ("x-overflow", AMQPValue::LongString("reject-publish".into())),
    ]);
    declare_bounded(connection, &names.chat_queue(), arguments).await?;
    declare_completions_stream(connection, names).await
}

/// How long the completions stream keeps what was written to it: longer
/// than any answer streams and than a gateway reads back when it starts
/// (docs/protocol.md §9).
pub const COMPLETIONS_MAX_AGE: &str = "1h";
/// The most the completions stream holds on disk (per node on a cluster);
/// beyond it its oldest segments go, whatever their age.
pub const COMPLETIONS_MAX_BYTES: i64 = 2_000_000_000;
/// A stream drops whole segments: small ones keep what it holds close to
/// its bounds.
const COMPLETIONS_SEGMENT_BYTES: i64 = 50_000_000;

/// Declares the completions stream: the OpenAI API's answers, written by
/// the responders and read by every gateway. One object, whatever the
/// number of requests; replicated on a cluster; bounded by age and size.
async fn declare_completions_stream(
    connection: &Connection,
    names: &Names,
) -> Result<(), BrokerError> {
    let arguments = table([
        ("x-queue-type", AMQPValue::LongString("stream".into())),
        (
            "x-max-age",
            AMQPValue::LongString(COMPLETIONS_MAX_AGE.into()),
        ),
        (
            "x-max-length-bytes",
            AMQPValue::LongLongInt(COMPLETIONS_MAX_BYTES),
        ),
        (
            "x-stream-max-segment-size-bytes",
            AMQPValue::LongLongInt(COMPLETIONS_SEGMENT_BYTES),
        ),
    ]);
    declare_bounded(connection, &names.completions_stream(), arguments).await
}

/// Declares durable `queue` with `arguments`; when it exists with others,
/// keeps it as it is (passively declared) and says so.
async fn declare_bounded(
    connection: &Connection,
    queue: &str,
    arguments: FieldTable,
) -> Result<(), BrokerError> {
    let channel = connection.create_channel().await?;
    let declared = channel
        .queue_declare(queue.into(), durable_queue(), arguments)
        .await;
    match declared.map_err(BrokerError::from) {
        Ok(_) => {
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(e) if matches!(e.refusal(), Some((406, _))) => {
            warn!(
                queue,
                refusal = e.refusal().map(|(_, text)| text.to_owned()),
                "the queue exists with other arguments (an earlier version's): used as it is; \
                 delete it while it is empty to get the current ones (docs/protocol.md §6)"
            );
            let channel = connection.create_channel().await?;
            let passive = QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            };
            channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await?;
            let _ = channel.close(200, "declared".into()).await;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Which kind of queue a user's reply queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// One copy, on the node that declared it: unreachable while that node
    /// is down.
    Classic,
    /// Replicated over the cluster (Raft); a majority of nodes keeps it.
    Quorum,
}

impl QueueKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Classic => "classic",
            Self::Quorum => "quorum",
        }
    }
}

impl QueueKind {
    /// The kind of the queue RabbitMQ refused to redeclare as another kind
    /// (406 PRECONDITION_FAILED on `x-queue-type`: the setting changed since
    /// it was declared), if that is what `error` is.
    pub fn of_existing(error: &BrokerError) -> Option<Self> {
        let (406, text) = error.refusal()? else {
            return None;
        };
        let current = text.split("but current is").nth(1)?;
        if !text.contains("'x-queue-type'") {
            None
        } else if current.contains("'quorum'") {
            Some(Self::Quorum)
        } else {
            // 'classic', or none given: a classic queue.
            Some(Self::Classic)
        }
    }
}

/// How a user's reply queue is shaped.
#[derive(Debug, Clone, Copy)]
pub struct ReplyQueueShape {
    /// Classic or quorum.
    pub kind: QueueKind,
    /// `x-expires`: the queue is deleted after this long without consumers.
    pub expires_ms: u64,
    /// `x-max-length`: chunks the queue holds at most. Beyond that RabbitMQ
    /// refuses new ones (`x-overflow=reject-publish`): the responder's
    /// publish is nacked and the request is retried, then dead-lettered —
    /// never silently dropping what is already queued.
    pub max_length: u32,
}

/// Declares `user`'s durable reply queue and binds it to the responses
/// exchange with the user id as routing key. Single-active-consumer keeps
/// per-user order when several gateways consume the same queue.
pub async fn declare_reply_queue(
    channel: &Channel,
    names: &Names,
    user: &UserId,
    shape: ReplyQueueShape,
) -> Result<ReplyQueue, BrokerError> {
    let queue = names.reply_queue(user);
    declare_answer_queue(channel, names, queue, Names::reply_routing_key(user), shape).await
}

async fn declare_answer_queue(
    channel: &Channel,
    names: &Names,
    queue: String,
    key: &str,
    shape: ReplyQueueShape,
) -> Result<ReplyQueue, BrokerError> {
    let declared = channel
        .queue_declare(
            queue.as_str().into(),
            durable_queue(),
            table([
                (
                    "x-queue-type",
                    AMQPValue::LongString(shape.kind.as_str().into()),
                ),
                (
                    "x-expires",
                    AMQPValue::LongLongInt(i64::try_from(shape.expires_ms).unwrap_or(i64::MAX)),
                ),
                ("x-single-active-consumer", AMQPValue::Boolean(true)),
                (
                    "x-max-length",
                    AMQPValue::LongLongInt(i64::from(shape.max_length)),
                ),
                ("x-overflow", AMQPValue::LongString("reject-publish".into())),
            ]),
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            names.responses_exchange().into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(ReplyQueue {
        name: queue,
        consumers: declared.consumer_count(),
    })
}

/// A declared reply queue.
#[derive(Debug, Clone)]
pub struct ReplyQueue {
    pub name: String,
    /// Consumers at declaration: one per other gateway holding sockets of
    /// the user (this gateway's own consumer comes after).
    pub consumers: u32,
}

/// How many consumers `queue` has now (a passive declare).
pub async fn consumer_count(channel: &Channel, queue: &str) -> Result<u32, BrokerError> {
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), passive, FieldTable::default())
        .await?;
    Ok(declared.consumer_count())
}

/// Declares this gateway process's relay queue: exclusive to its connection
/// (gone with it), bound to the gateways' announcements, and per user while
/// the user has sockets on other gateways too.
pub async fn declare_relay_queue(
    channel: &Channel,
    names: &Names,
    instance: &str,
) -> Result<String, BrokerError> {
    let queue = declare_process_queue(channel, names.relay_queue(instance)).await?;
    set_binding(
        channel,
        &queue,
        &names.relay_exchange(),
        protocol::topology::RELAY_PRESENCE_KEY,
        true,
    )
    .await?;
    Ok(queue)
}

/// Declares a queue of one process: exclusive to its connection and
/// deleted with it (and with its last consumer).
async fn declare_process_queue(channel: &Channel, queue: String) -> Result<String, BrokerError> {
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(queue)
}

/// Declares this responder process's control queue (exclusive to its
/// connection, gone with it) and binds it to `chat_control`.
pub async fn declare_control_queue(
    channel: &Channel,
    names: &Names,
    instance: &str,
) -> Result<String, BrokerError> {
    let queue = declare_process_queue(channel, names.control_queue(instance)).await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            names.control_exchange().as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(queue)
}

/// Routes `user`'s relayed chunks to this gateway's relay queue, or stops.
pub async fn bind_relay(
    channel: &Channel,
    names: &Names,
    instance: &str,
    user: &UserId,
    bound: bool,
) -> Result<(), BrokerError> {
    let queue = names.relay_queue(instance);
    let key = Names::reply_routing_key(user);
    set_binding(channel, &queue, &names.relay_exchange(), key, bound).await
}

/// Routes `room`'s messages and answers into `user`'s reply queue (a
/// member), or stops. The queue must exist.
pub async fn bind_room(
    channel: &Channel,
    names: &Names,
    user: &UserId,
    room: &RoomId,
    bound: bool,
) -> Result<(), BrokerError> {
    let queue = names.reply_queue(user);
    let key = Names::room_routing_key(room);
    set_binding(channel, &queue, &names.responses_exchange(), &key, bound).await
}

async fn set_binding(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    bound: bool,
) -> Result<(), BrokerError> {
    if bound {
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    } else {
        channel
            .queue_unbind(
                queue.into(),
                exchange.into(),
                key.into(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}
