//! Dead-lettered requests: a request that could not be read, or failed on
//! every attempt up to `chat_queue`'s delivery limit, is dead-lettered by
//! RabbitMQ. A copy stays in `chat_queue.dead` for operators; this consumer
//! takes the copy in `chat_queue.dead.notify`, logs why, and sends the user a
//! final `request_failed` reply instead of leaving them waiting — once:
//! a user's full queue that refuses the notice is final for it, and other
//! failures are retried with a growing pause, a bounded number of times.

use crate::counters::Tally;
use broker::consumer::{Serve, Served};
use broker::lapin::message::Delivery;
use broker::lapin::options::{BasicAckOptions, BasicNackOptions};
use broker::{Broker, PublishError, Session, properties};
use protocol::amqp::{self, ChatRequest, ReplyChunk, ReplyError};
use protocol::topology::{Destination, Names};
use protocol::trace::TraceParent;
use protocol::{ErrorCode, MessageId, UserId};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// The consumer of `chat_queue.dead.notify`.
#[derive(Debug)]
pub struct DeadLetters {
    broker: Broker,
    tally: Tally,
    /// Notices a full queue refused, for a log line per so many.
    refusals_logged: AtomicU64,
}

/// A notice that could not be published is tried again at most this often.
const MAX_TRIES: u32 = 8;
/// The pause before the first retry, doubled before each next, at most
/// [`MAX_PAUSE`].
const RETRY_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(5);
/// Refusals by full queues between two log lines.
const REFUSALS_PER_LINE: u64 = 1000;

impl DeadLetters {
    pub fn new(broker: Broker, tally: Tally) -> Self {
        Self {
            broker,
            tally,
            refusals_logged: AtomicU64::new(0),
        }
    }
}

impl Serve for DeadLetters {
    const WHAT: &'static str = "dead letters";

    async fn serve(self: Arc<Self>, session: Session, stop: &CancellationToken) -> Served {
        let queue = self.broker.names().dead_letter_notify_queue();
        let notify_each = |delivery, _channel| self.notify(&session, delivery);
        broker::consumer::serve_queue(&session, &queue, "dead-letters", 16, stop, notify_each).await
    }
}

/// Whose request it was, its id and where its answer goes (its asker's
/// queue, or the completions stream for an OpenAI-API request): from the
/// body if it is readable, else from the properties every request carries
/// (and then to the user's queue).
fn owner(names: &Names, delivery: &Delivery) -> Option<(UserId, MessageId, Destination)> {
    if let Ok(mut request) = amqp::decode::<ChatRequest>(&delivery.data) {
        // Its asker, not its room.
        request.room_id = None;
        let to = names.answer_destination(&request);
        return Some((request.user_id, request.id, to));
    }
    let user = UserId::parse(properties::user_header(&delivery.properties)?).ok()?;
    let id = MessageId::parse(delivery.properties.message_id().as_ref()?.as_str()).ok()?;
    let request = ChatRequest::new(id, user.clone(), String::new(), 0);
    Some((user, id, names.answer_destination(&request)))
}

impl DeadLetters {
    async fn notify(&self, session: &Session, delivery: Delivery) {
        let reason = properties::first_death_reason(&delivery.properties)
            .unwrap_or("unknown")
            .to_owned();
        metrics::counter!("switchboard_responder_dead_letters_total", "reason" => reason.clone())
            .increment(1);
        let Some((user, id, to)) = owner(self.broker.names(), &delivery) else {
            error!(%reason, "dead-lettered request with no known owner; kept in the dead-letter queue");
            self.settle(&delivery).await;
            return;
        };
        error!(user_id = %user, message_id = %id, %reason, "request dead-lettered; telling its user");
        let message = match reason.as_str() {
            "delivery_limit" => "Your message could not be answered: it failed on every attempt.",
            _ => "Your message could not be answered: it could not be processed.",
        };
        let chunk = ReplyChunk::failure(
            user.clone(),
            id,
            ReplyError {
                code: ErrorCode::RequestFailed,
                message: message.into(),
            },
        );
        let published = session
            .publisher()
            .publish(
                &to.exchange,
                &to.routing_key,
                &amqp::encode(&chunk),
                properties::reply_chunk(
                    &chunk,
                    &properties::traceparent(&delivery.properties)
                        .unwrap_or_else(TraceParent::new_root)
                        .child(),
                ),
            )
            .await;
        match published {
            Ok(()) => {}
            Err(PublishError::Unroutable { .. }) => {
                warn!(user_id = %user, "the user's reply queue is gone; nobody to tell")
            }
            // The user's queue is full and refuses it: final for the
            // notice (the dead letter stays in chat_queue.dead). Retrying
            // would loop as fast as the broker answers, for as long as
            // the queue stays full — which other users can make it.
            Err(PublishError::Nacked) => {
                metrics::counter!("switchboard_responder_dead_letter_notices_refused_total")
                    .increment(1);
                if self.refusals_logged.fetch_add(1, Ordering::Relaxed) % REFUSALS_PER_LINE == 0 {
                    warn!(user_id = %user, "the user's reply queue is full and refused the notice of a dead-lettered request; it stays in chat_queue.dead (logged once per {REFUSALS_PER_LINE})");
                }
            }
            Err(e) => {
                // Try again, after a pause that grows with the tries, up
                // to a bound; the copy in chat_queue.dead stays either way.
                let tries = properties::delivery_count(&delivery.properties).max(0) as u32;
                if tries >= MAX_TRIES {
                    warn!(error = %e, tries, "could not tell the user; giving up (the dead letter stays in chat_queue.dead)");
                    self.settle(&delivery).await;
                    return;
                }
                let pause = RETRY_PAUSE.saturating_mul(1 << tries.min(6)).min(MAX_PAUSE);
                warn!(error = %e, tries, retry_in = ?pause, "could not tell the user; retrying");
                tokio::time::sleep(pause).await;
                let requeue = BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                };
                let _ = delivery.nack(requeue).await;
                return;
            }
        }
        self.settle(&delivery).await;
    }

    async fn settle(&self, delivery: &Delivery) {
        if let Ok(true) = delivery.ack(BasicAckOptions::default()).await {
            self.tally.add(|c| c.dead_letters_notified += 1);
        }
    }
}
