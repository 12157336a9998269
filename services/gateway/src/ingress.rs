//! The way into the pipeline: turn a user's message into a confirmed
//! `chat_queue` publish. Every failure becomes a stable client-facing code.

use crate::AppState;
use broker::{Broker, PublishError, properties};
use protocol::amqp::{self, CancelRequest, ChatRequest, Turn};
use protocol::trace::TraceParent;
use protocol::{ErrorCode, MessageId, RoomId, UserId};
use tracing::warn;

/// Publishes the message persistently to `chat_queue` and waits for
/// RabbitMQ's confirm. `Ok` means it will be answered.
///
/// The caller must know that the user's reply queue exists (a socket waits
/// for its [`Subscription`](crate::replies::Subscription) to be ready): an
/// answer published before the queue is bound is unroutable and lost.
pub async fn submit(
    broker: &Broker,
    user: &UserId,
    id: MessageId,
    text: String,
    context: Vec<Turn>,
    room: Option<RoomId>,
    trace: &TraceParent,
) -> Result<(), ErrorCode> {
    let Some(session) = broker.current() else {
        return Err(ErrorCode::BrokerUnavailable);
    };
    let request =
        ChatRequest::new(id, user.clone(), text, properties::now_ms()).with_context(context);
    let request = match room {
        Some(room) => request.in_room(room),
        None => request,
    };
    let published = session
        .publisher()
        .publish(
            "",
            &broker.names().chat_queue(),
            &amqp::encode(&request),
            properties::chat_request(id, user, trace),
        )
        .await;
    if published.is_ok() {
        metrics::counter!("switchboard_gateway_messages_published_total").increment(1);
    }
    published.map_err(|e| {
        warn!(user_id = %user, message_id = %id, error = %e, "publish failed");
        match e {
            PublishError::Timeout(_) => ErrorCode::PublishTimeout,
            PublishError::Nacked | PublishError::Unroutable { .. } => ErrorCode::PublishRejected,
            PublishError::Amqp(_) => ErrorCode::BrokerUnavailable,
        }
    })
}

/// Asks the responders to stop answering message `id` of `user` (a
/// socket's `cancel`, or the REST cancel). A message this gateway does not
/// know to be in progress (answered already, never sent, someone else's)
/// gets `nothing_to_cancel`, which is harmless.
pub async fn cancel(state: &AppState, user: &UserId, id: MessageId) -> Result<(), ErrorCode> {
    if !state.replies.is_answering(user, id) {
        return Err(ErrorCode::NothingToCancel);
    }
    let session = state.broker.current().ok_or(ErrorCode::BrokerUnavailable)?;
    let request = CancelRequest::new(user.clone(), id);
    let trace = TraceParent::new_root();
    session
        .publisher()
        .publish_best_effort(
            &state.broker.names().control_exchange(),
            "",
            &amqp::encode(&request),
            properties::cancel(&request, &trace),
        )
        .await
        .map_err(|e| {
            warn!(user_id = %user, message_id = %id, error = %e, "cancel not published");
            ErrorCode::BrokerUnavailable
        })?;
    metrics::counter!("switchboard_gateway_cancels_total").increment(1);
    Ok(())
}

/// The human text for a refused message, cancel or room request (one
/// place for the socket's `error` frames and the HTTP error bodies).
pub fn describe(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::BrokerUnavailable => "the message broker is unreachable; send again later",
        ErrorCode::PublishRejected => "the message broker refused the message; send again later",
        ErrorCode::PublishTimeout => {
            "the message broker did not confirm in time; send again with the same id"
        }
        ErrorCode::NothingToCancel => {
            "that message is not being answered (already answered, or unknown)"
        }
        ErrorCode::NotAMember => "no such room, or you are not one of its members",
        ErrorCode::InvalidRoomToken => "the invitation is invalid or expired; ask for a new one",
        ErrorCode::RoomsUnavailable => "rooms are unavailable right now; try again later",
        _ => "the message could not be queued",
    }
}
