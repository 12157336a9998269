//! A user's messages: sending one — a socket's `send`, `POST
//! /api/messages`, a room message and its `@assistant` question all take
//! this one path — cancelling one, and the record of which messages are
//! being answered (what `cancel` checks).
//!
//! It must not know how a message arrived (socket or HTTP) nor how its
//! answer travels back (that is [`crate::replies`]).

mod in_progress;

use in_progress::Admitted;
pub use in_progress::{Fairness, InProgress};

use crate::replies::ReplyQueues;
use crate::rooms::{Posted, Rooms};
use broker::{Broker, properties};
use protocol::amqp::{self, ApiCall, CancelRequest, ChatRequest};
use protocol::trace::TraceParent;
use protocol::ws::Message;
use protocol::{ErrorCode, MessageId, UserId};
use std::future::Future;
use std::sync::Arc;
use tracing::{Instrument, Span, debug, info_span, warn};

/// Which way a message came in, for its trace and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Socket,
    Rest,
    OpenAi,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Rest => "rest",
            Self::OpenAi => "openai",
        }
    }
}

/// A message RabbitMQ has confirmed: it will be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The trace that follows it through the services (32 hex digits).
    pub trace_id: String,
}

/// Sends and cancels messages. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Messages {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Publishes requests to `chat_queue` and cancels to `chat_control`.
    broker: Broker,
    /// A message is published only once its user's reply queue exists: the
    /// answer would be unroutable, and lost, otherwise.
    queues: ReplyQueues,
    /// Where room messages are stored and published.
    rooms: Rooms,
    /// What is being answered.
    in_progress: Arc<InProgress>,
    /// How many of one user's messages may wait to be answered at once, and
    /// for how long one counts without a sign of life.
    fairness: Fairness,
}

impl Messages {
    pub fn new(
        broker: Broker,
        queues: ReplyQueues,
        rooms: Rooms,
        in_progress: Arc<InProgress>,
        fairness: Fairness,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                broker,
                queues,
                rooms,
                in_progress,
                fairness,
            }),
        }
    }

    /// Sends `message` for `user`, in a trace of its own (one per message,
    /// from here through the responder and back). `Ok` means RabbitMQ has
    /// confirmed it (and a room message is stored): it will be answered,
    /// or delivered to the room's members. Every failure is a stable code.
    pub fn send(
        &self,
        user: UserId,
        message: Message,
        via: Via,
    ) -> impl Future<Output = Result<Accepted, ErrorCode>> + Send + 'static {
        let (span, trace) = begin(&user, message.id, via);
        let messages = self.clone();
        async move {
            messages.publish(&user, message, &trace).await?;
            Ok(accepted(&trace))
        }
        .instrument(span)
    }

    /// Sends OpenAI-API request `id` of `user` — `call`, what the client
    /// asked of the model, and `text`, its last message's text — with its
    /// answer going to the completions stream (docs/protocol.md §9).
    /// Nothing is declared for it.
    pub fn send_api(
        &self,
        user: UserId,
        id: MessageId,
        text: String,
        call: ApiCall,
    ) -> impl Future<Output = Result<Accepted, ErrorCode>> + Send + 'static {
        let (span, trace) = begin(&user, id, Via::OpenAi);
        let messages = self.clone();
        async move {
            let request = ChatRequest::new(id, user, text, properties::now_ms()).for_api(call);
            messages.submit(request, &trace).await?;
            Ok(accepted(&trace))
        }
        .instrument(span)
    }

    async fn publish(
        &self,
        user: &UserId,
        message: Message,
        trace: &TraceParent,
    ) -> Result<(), ErrorCode> {
        let Message {
            id,
            text,
            context,
            room_id: room,
        } = message;
        if !self.inner.queues.ensure(user).await {
            return Err(ErrorCode::BrokerUnavailable);
        }
        let context = match room {
            None => context,
            Some(room) => match self.inner.rooms.post(user, room, id, &text, trace).await? {
                Posted::ToMembers => return Ok(()),
                Posted::AlsoToAssistant { context } => context,
            },
        };
        let request =
            ChatRequest::new(id, user.clone(), text, properties::now_ms()).with_context(context);
        let request = match room {
            Some(room) => request.in_room(room),
            None => request,
        };
        self.submit(request, trace).await
    }

    /// The answer to message `id` of `user` is over (read from its own
    /// queue, which no consumer of the user's watches).
    pub fn answered(&self, user: &UserId, id: MessageId) {
        self.inner.in_progress.finish(user, id);
    }

    /// Publishes `request` persistently to `chat_queue` and waits for
    /// RabbitMQ's confirm — unless its user has as many messages waiting as
    /// a user may (`too_many_pending`).
    async fn submit(&self, request: ChatRequest, trace: &TraceParent) -> Result<(), ErrorCode> {
        let (user, id) = (&request.user_id, request.id);
        let broker = &self.inner.broker;
        let session = broker.current().ok_or(ErrorCode::BrokerUnavailable)?;
        let fairness = self.inner.fairness;
        let admitted = self.inner.in_progress.admit(user, id, fairness);
        if admitted == Admitted::Refused {
            metrics::counter!("switchboard_gateway_pending_refused_total").increment(1);
            return Err(ErrorCode::TooManyPending);
        }
        session
            .publisher()
            .publish(
                "",
                &broker.names().chat_queue(),
                &amqp::encode(&request),
                properties::chat_request(id, user, trace),
            )
            .await
            .map_err(|e| {
                warn!(user_id = %user, message_id = %id, error = %e, "publish failed");
                if admitted == Admitted::New {
                    self.inner.in_progress.finish(user, id);
                }
                e.code()
            })?;
        metrics::counter!("switchboard_gateway_messages_published_total").increment(1);
        Ok(())
    }

    /// Asks the responders to stop answering message `id` of `user`. A
    /// message this gateway does not know to be in progress (answered
    /// already, never sent, someone else's) gets `nothing_to_cancel`, which
    /// is harmless.
    pub async fn cancel(&self, user: &UserId, id: MessageId) -> Result<(), ErrorCode> {
        if !self.inner.in_progress.contains(user, id) {
            return Err(ErrorCode::NothingToCancel);
        }
        self.stop(user, id).await
    }

    /// [`Messages::cancel`] of a message known to be `user`'s by other
    /// means (an OpenAI-API answer, whose owner its chunks name, read on
    /// whichever gateway).
    pub async fn stop(&self, user: &UserId, id: MessageId) -> Result<(), ErrorCode> {
        let broker = &self.inner.broker;
        let session = broker.current().ok_or(ErrorCode::BrokerUnavailable)?;
        let request = CancelRequest::new(user.clone(), id);
        let trace = TraceParent::new_root();
        session
            .publisher()
            .publish_best_effort(
                &broker.names().control_exchange(),
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
}

/// A message's own span and trace (one per message, from here through the
/// responder and back).
fn begin(user: &UserId, id: MessageId, via: Via) -> (Span, TraceParent) {
    let span = info_span!(
        "request",
        trace_id = tracing::field::Empty,
        user_id = %user,
        message_id = %id,
        via = via.as_str(),
    );
    let trace = platform::telemetry::start_trace(&span);
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    (span, trace)
}

/// What a confirmed send says.
fn accepted(trace: &TraceParent) -> Accepted {
    debug!("message queued");
    Accepted {
        trace_id: trace.trace_id().to_string(),
    }
}
