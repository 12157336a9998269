//! Dead-lettered requests: a request that could not be read, or failed on
//! every attempt up to `chat_queue`'s delivery limit, is dead-lettered by
//! RabbitMQ. A copy stays in `chat_queue.dead` for operators; this consumer
//! takes the copy in `chat_queue.dead.notify`, logs why, and sends the user a
//! final `request_failed` reply instead of leaving them waiting.

use crate::worker::{Counters, Worker};
use broker::lapin::message::Delivery;
use broker::lapin::options::{BasicAckOptions, BasicNackOptions};
use broker::lapin::types::AMQPValue;
use broker::{BrokerError, PublishError, Session, properties};
use protocol::amqp::{self, ChatRequest, ReplyChunk, ReplyError};
use protocol::topology::Names;
use protocol::trace::TraceParent;
use protocol::{ErrorCode, MessageId, UserId};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Consumes dead letters until `stop` fires.
pub(crate) async fn consume(worker: Arc<Worker>, stop: CancellationToken) {
    let broker = worker.broker.clone();
    broker::consumer::run_consumer(&broker, &stop, "dead letters", |session| {
        consume_session(&worker, session, &stop)
    })
    .await;
}

async fn consume_session(
    worker: &Arc<Worker>,
    session: Session,
    stop: &CancellationToken,
) -> Result<(), BrokerError> {
    let queue = worker.broker.names().dead_letter_notify_queue();
    let limit = Duration::from_millis(worker.settings.amqp.connect_timeout_ms);
    let notify_each = |delivery, _channel| notify(worker, &session, delivery);
    broker::consumer::serve_queue(
        &session,
        &queue,
        "dead-letters",
        16,
        limit,
        stop,
        notify_each,
    )
    .await
}

/// Why RabbitMQ dead-lettered the message (`x-first-death-reason`).
fn death_reason(delivery: &Delivery) -> String {
    let reason = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-first-death-reason").cloned());
    match reason {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        _ => "unknown".into(),
    }
}

/// Whose request it was and its id: from the body if it is readable, else
/// from the properties every request carries.
fn owner(delivery: &Delivery) -> Option<(UserId, MessageId)> {
    if let Ok(request) = amqp::decode::<ChatRequest>(&delivery.data) {
        return Some((request.user_id, request.id));
    }
    let user = UserId::parse(properties::user_header(&delivery.properties)?).ok()?;
    let id = MessageId::parse(delivery.properties.message_id().as_ref()?.as_str()).ok()?;
    Some((user, id))
}

async fn notify(worker: &Worker, session: &Session, delivery: Delivery) {
    let reason = death_reason(&delivery);
    metrics::counter!("switchboard_responder_dead_letters_total", "reason" => reason.clone())
        .increment(1);
    let Some((user, id)) = owner(&delivery) else {
        error!(%reason, "dead-lettered request with no known owner; kept in the dead-letter queue");
        settle(worker, &delivery).await;
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
            &worker.broker.names().responses_exchange(),
            Names::reply_routing_key(&user),
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
        Err(e) => {
            // Try again later; the copy in chat_queue.dead stays either way.
            warn!(error = %e, "could not tell the user; retrying");
            let requeue = BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            };
            let _ = delivery.nack(requeue).await;
            return;
        }
    }
    settle(worker, &delivery).await;
}

async fn settle(worker: &Worker, delivery: &Delivery) {
    if let Ok(true) = delivery.ack(BasicAckOptions::default()).await {
        worker
            .counters
            .send_modify(|c: &mut Counters| c.dead_letters_notified += 1);
    }
}
