//! A user's messages: sending one — a socket's `send`, `POST
//! /api/messages`, a room message and its `@assistant` question all take
//! this one path — cancelling one, and the record of which messages are
//! being answered (what `cancel` checks).
//!
//! It must not know how a message arrived (socket or HTTP) nor how its
//! answer travels back (that is [`crate::replies`]).

use crate::replies::{AnswerWatcher, ReplyQueues};
use crate::rooms::{Posted, Rooms};
use broker::{Broker, properties};
use protocol::amqp::{self, CancelRequest, ChatRequest, ModelOptions, Turn};
use protocol::trace::TraceParent;
use protocol::{ErrorCode, MessageId, RoomId, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// Messages per user recorded as being answered; a cancel of any beyond
/// gets `nothing_to_cancel`.
const MAX_PER_USER: usize = 1024;
/// A message with no sign of its answer for this long is forgotten (a reply
/// queue is gone after 30 minutes without a consumer, and its answer too).
const FORGET_AFTER: Duration = Duration::from_secs(30 * 60);
/// Recorded messages between two sweeps of the forgotten ones.
const SWEEP_EVERY: u64 = 4096;

/// A message as a client sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// Chosen by the client; the message's identity from then on.
    pub id: MessageId,
    pub text: String,
    /// The conversation's recent turns, for the model.
    pub context: Vec<Turn>,
    /// Sent to this room instead of to the assistant.
    pub room: Option<RoomId>,
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

/// The cap that keeps one user's backlog from delaying everyone else's.
#[derive(Debug, Clone, Copy)]
pub struct Fairness {
    pub max_pending_per_user: usize,
    pub pending_window: Duration,
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

    /// Sends `message` for `user`. `Ok` means RabbitMQ has confirmed it
    /// (and a room message is stored): it will be answered, or delivered to
    /// the room's members. Every failure is a stable code.
    pub async fn send(
        &self,
        user: &UserId,
        message: Outgoing,
        trace: &TraceParent,
    ) -> Result<(), ErrorCode> {
        let Outgoing {
            id,
            text,
            context,
            room,
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

    /// Sends `message` for `user` with its answer going to a queue of its
    /// own (an OpenAI-API request: docs/protocol.md §9), declared first;
    /// `model` carries the client's wishes for the model.
    pub async fn send_own(
        &self,
        user: &UserId,
        message: Outgoing,
        model: ModelOptions,
        trace: &TraceParent,
    ) -> Result<(), ErrorCode> {
        self.inner.queues.declare_own(&message.id).await?;
        let request =
            ChatRequest::new(message.id, user.clone(), message.text, properties::now_ms())
                .with_context(message.context)
                .to_own_queue(model);
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

/// The messages being answered, as far as this gateway knows: accepted
/// here, or seen streaming through it, and no final chunk yet. Bounded per
/// user, and in time.
#[derive(Debug, Default)]
pub struct InProgress {
    users: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    /// Per user: each message and when it last showed a sign of life.
    messages: HashMap<UserId, HashMap<MessageId, Instant>>,
    /// Messages recorded since the last sweep.
    since_sweep: u64,
}

/// Whether a message may go to the responders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admitted {
    /// Recorded as waiting from now on.
    New,
    /// Waiting already (sent again with the same id).
    Again,
    /// Its user has as many waiting as a user may.
    Refused,
}

impl InProgress {
    /// Records message `id` of `user` as waiting, if the user has fewer than
    /// the cap waiting (counting those with a sign of life within the
    /// window).
    fn admit(&self, user: &UserId, id: MessageId, fairness: Fairness) -> Admitted {
        let mut record = self.users.lock().expect("in-progress lock");
        let messages = record.messages.entry(user.clone()).or_default();
        if let Some(at) = messages.get_mut(&id) {
            *at = Instant::now();
            return Admitted::Again;
        }
        let waiting = messages
            .values()
            .filter(|at| at.elapsed() < fairness.pending_window)
            .count();
        if waiting >= fairness.max_pending_per_user {
            return Admitted::Refused;
        }
        drop(record);
        self.begin(user, id);
        Admitted::New
    }

    fn begin(&self, user: &UserId, id: MessageId) {
        let mut record = self.users.lock().expect("in-progress lock");
        record.since_sweep += 1;
        if record.since_sweep >= SWEEP_EVERY {
            record.since_sweep = 0;
            record.messages.retain(|_, messages| {
                messages.retain(|_, at| at.elapsed() < FORGET_AFTER);
                !messages.is_empty()
            });
        }
        let messages = record.messages.entry(user.clone()).or_default();
        if messages.len() < MAX_PER_USER || messages.contains_key(&id) {
            messages.insert(id, Instant::now());
        }
    }

    fn contains(&self, user: &UserId, id: MessageId) -> bool {
        let record = self.users.lock().expect("in-progress lock");
        record
            .messages
            .get(user)
            .and_then(|messages| messages.get(&id))
            .is_some_and(|at| at.elapsed() < FORGET_AFTER)
    }

    fn finish(&self, user: &UserId, id: MessageId) {
        let mut record = self.users.lock().expect("in-progress lock");
        if let Some(messages) = record.messages.get_mut(user) {
            messages.remove(&id);
            if messages.is_empty() {
                record.messages.remove(user);
            }
        }
    }
}

impl AnswerWatcher for InProgress {
    fn chunk_seen(&self, user: &UserId, message: MessageId, last: bool) {
        if last {
            self.finish(user, message);
        } else {
            self.begin(user, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    #[test]
    fn a_message_is_in_progress_from_acceptance_or_its_first_chunk_to_its_last() {
        let record = InProgress::default();
        let (sent, seen) = (MessageId::new_random(), MessageId::new_random());
        record.begin(&alice(), sent);
        record.chunk_seen(&alice(), seen, false);
        assert!(record.contains(&alice(), sent) && record.contains(&alice(), seen));
        assert!(!record.contains(&UserId::parse("bob").unwrap(), sent));
        record.chunk_seen(&alice(), sent, true);
        assert!(!record.contains(&alice(), sent));
        assert!(record.contains(&alice(), seen));
    }

    #[test]
    fn one_user_may_have_only_so_many_messages_waiting() {
        let record = InProgress::default();
        let fairness = Fairness {
            max_pending_per_user: 2,
            pending_window: Duration::from_secs(60),
        };
        let (a, b, c) = (
            MessageId::new_random(),
            MessageId::new_random(),
            MessageId::new_random(),
        );
        assert_eq!(record.admit(&alice(), a, fairness), Admitted::New);
        assert_eq!(record.admit(&alice(), b, fairness), Admitted::New);
        assert_eq!(record.admit(&alice(), c, fairness), Admitted::Refused);
        assert_eq!(
            record.admit(&alice(), a, fairness),
            Admitted::Again,
            "a resend"
        );
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(
            record.admit(&bob, c, fairness),
            Admitted::New,
            "others go on"
        );
        record.chunk_seen(&alice(), a, true);
        assert_eq!(
            record.admit(&alice(), c, fairness),
            Admitted::New,
            "a was answered"
        );
        // Messages without a sign of life for the window stop counting.
        let short = Fairness {
            pending_window: Duration::ZERO,
            ..fairness
        };
        assert_eq!(
            record.admit(&alice(), MessageId::new_random(), short),
            Admitted::New
        );
    }

    #[test]
    fn the_record_is_bounded_per_user() {
        let record = InProgress::default();
        let ids: Vec<_> = (0..MAX_PER_USER + 5)
            .map(|_| MessageId::new_random())
            .collect();
        for id in &ids {
            record.begin(&alice(), *id);
        }
        assert!(record.contains(&alice(), ids[0]));
        assert!(!record.contains(&alice(), ids[MAX_PER_USER]));
    }
}
