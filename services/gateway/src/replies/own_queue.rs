//! One request's own reply queue: the answer to an OpenAI-API request
//! (`POST /v1/chat/completions`) goes to `chat_responses.req.<id>`, not to
//! the user's queue, so an HTTP stream and the user's sockets never take
//! each other's chunks, and a stream that breaks can be resumed from the
//! queue — by this gateway or any other.
//!
//! Chunks are acknowledged only when the reader says how far its client
//! got ([`OwnQueue::settle_through`]) or when the answer is over
//! ([`OwnQueue::finish`], which deletes the queue): a reader that goes away
//! closes its channel, and RabbitMQ puts back everything unacknowledged
//! for the next reader.

use super::context::Context;
use super::inbound::Inbound;
use super::queues::ReplyQueues;
use broker::{BrokerError, topology};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicQosOptions, QueueDeleteOptions};
use lapin::{Channel, Consumer};
use protocol::amqp::ReplyChunk;
use protocol::{ErrorCode, MessageId, UserId};
use tracing::debug;

/// The whole answer: nothing is acknowledged before its end, so a reader
/// must be able to hold all of it (reply queues hold at most 10,000).
const PREFETCH: u16 = 10_000;

/// A reader of one request's queue, for the user who asked.
#[derive(Debug)]
pub struct OwnQueue {
    channel: Channel,
    consumer: Consumer,
    name: String,
    user: UserId,
    /// The last delivery handed out.
    last_tag: Option<u64>,
}

impl ReplyQueues {
    /// Declares and binds request `id`'s own queue, within the publish
    /// timeout: its answer must have somewhere to go before it is asked.
    pub async fn declare_own(&self, id: &MessageId) -> Result<(), ErrorCode> {
        let context = self.context();
        let session = context
            .broker
            .current()
            .ok_or(ErrorCode::BrokerUnavailable)?;
        let limit = context.broker.settings().publish_timeout();
        let names = context.broker.names();
        let declare = async |channel: &_| {
            topology::declare_request_queue(channel, names, id, context.shape).await
        };
        session
            .with_channel(limit, declare)
            .await
            .map(|_| ())
            .map_err(|e| {
                debug!(message_id = %id, error = %e, "request queue not declared");
                ErrorCode::BrokerUnavailable
            })
    }

    /// Starts reading request `id`'s queue for `user`. `not_found` when it
    /// does not exist (never asked, or its answer was read to the end).
    pub async fn read_own(&self, user: &UserId, id: &MessageId) -> Result<OwnQueue, ErrorCode> {
        let context = self.context();
        let session = context
            .broker
            .current()
            .ok_or(ErrorCode::BrokerUnavailable)?;
        OwnQueue::open(context, &session, user, id)
            .await
            .map_err(|e| match e.refusal() {
                Some((404, _)) => ErrorCode::NotFound,
                _ => ErrorCode::BrokerUnavailable,
            })
    }
}

impl ReplyQueues {
    /// How many read request `id`'s queue now; `None` once it is gone (its
    /// answer was read to the end, or it expired).
    pub async fn own_readers(&self, id: &MessageId) -> Option<u32> {
        let context = self.context();
        let session = context.broker.current()?;
        let queue = context.broker.names().request_queue(id);
        let count = async |channel: &_| topology::consumer_count(channel, &queue).await;
        session
            .with_channel(context.setup_limit(), count)
            .await
            .ok()
    }
}

impl OwnQueue {
    async fn open(
        context: &Context,
        session: &broker::Session,
        user: &UserId,
        id: &MessageId,
    ) -> Result<Self, BrokerError> {
        let name = context.broker.names().request_queue(id);
        let limit = context.setup_limit();
        let channel = session.open_channel().await?;
        let qos = channel.basic_qos(PREFETCH, BasicQosOptions::default());
        tokio::time::timeout(limit, qos)
            .await
            .map_err(|_| BrokerError::Timeout(limit))??;
        let label = format!("gateway-request-{id}");
        let (_tag, consumer) =
            broker::consumer::consume_bounded(&channel, &name, &label, limit).await?;
        Ok(Self {
            channel,
            consumer,
            name,
            user: user.clone(),
            last_tag: None,
        })
    }

    /// The next chunk of the answer, or the reason there is none: the
    /// connection went (`broker_unavailable`), or the queue holds another
    /// user's answer (`not_found`: its id is not theirs to read; the chunk
    /// goes back untouched). Anything else in the queue (a `processing`
    /// status, an unreadable body) is passed over.
    pub async fn next(&mut self) -> Result<ReplyChunk, ErrorCode> {
        loop {
            let delivery: Delivery = match self.consumer.next().await {
                Some(Ok(delivery)) => delivery,
                _ => return Err(ErrorCode::BrokerUnavailable),
            };
            let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
            match Inbound::decode(&self.user, kind, &delivery.data) {
                Inbound::Chunk(chunk) => {
                    self.last_tag = Some(delivery.delivery_tag);
                    return Ok(chunk);
                }
                Inbound::Refused(_) if is_foreign(&delivery, &self.user) => {
                    let back = BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    };
                    let _ = delivery.nack(back).await;
                    return Err(ErrorCode::NotFound);
                }
                _ => self.last_tag = Some(delivery.delivery_tag),
            }
        }
    }

    /// The client has everything handed out so far: acknowledged, so a
    /// resume starts after it.
    pub async fn settle_through(&self) {
        if let Some(tag) = self.last_tag {
            let all = BasicAckOptions { multiple: true };
            if let Err(e) = self.channel.basic_ack(tag, all).await {
                debug!(queue = self.name, error = %e, "could not acknowledge the answer's chunks");
            }
        }
    }

    /// The client went before the end: nothing acknowledged, the channel
    /// closed, so every chunk is back in the queue for a resume.
    pub async fn abandon(self) {
        let _ = self.channel.close(200, "client gone".into()).await;
    }

    /// The answer is over and its client has it: everything acknowledged,
    /// the queue deleted (nobody will read it again), the channel closed.
    pub async fn finish(self) {
        self.settle_through().await;
        let deleted = self
            .channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await;
        if let Err(e) = deleted {
            debug!(queue = self.name, error = %e, "could not delete a request's queue; it expires");
        }
        let _ = self.channel.close(200, "answered".into()).await;
    }
}

/// Whether `delivery` is a chunk of another user's answer.
fn is_foreign(delivery: &Delivery, user: &UserId) -> bool {
    protocol::amqp::decode::<ReplyChunk>(&delivery.data).is_ok_and(|c| c.user_id != *user)
}
