//! Names of every RabbitMQ object Switchboard uses. All of them sit under a
//! configurable prefix (empty by default) so that several deployments or test
//! runs can share one broker without colliding.

use crate::amqp::ChatRequest;
use crate::{MessageId, RoomId, UserId};

/// Durable quorum queue of [`ChatRequest`](crate::amqp::ChatRequest)s.
pub const CHAT_QUEUE: &str = "chat_queue";
/// Durable direct exchange that routes reply chunks by user id.
pub const RESPONSES_EXCHANGE: &str = "chat_responses";
/// Direct exchange (key: user id) through which the gateway holding a
/// user's reply queue relays chunks to the user's sockets on other gateways.
pub const RELAY_EXCHANGE: &str = "chat_relay";
/// Routing key on `chat_relay` of the gateways' `joined` / `left`
/// announcements (body: the user id). Every gateway's relay queue is bound
/// with it; it can never be a user id.
pub const RELAY_PRESENCE_KEY: &str = "~presence";

/// Fanout exchange on which gateways broadcast
/// [`CancelRequest`](crate::amqp::CancelRequest)s to every responder.
pub const CONTROL_EXCHANGE: &str = "chat_control";

/// Fanout exchange that receives requests `chat_queue` gives up on.
pub const DEAD_LETTER_EXCHANGE: &str = "chat_dead_letter";
/// Durable queue holding dead-lettered requests for an operator to inspect.
pub const DEAD_LETTER_QUEUE: &str = "chat_queue.dead";
/// Durable queue getting a copy of every dead-lettered request, consumed by
/// responders to tell its user that it failed.
pub const DEAD_LETTER_NOTIFY_QUEUE: &str = "chat_queue.dead.notify";

/// The names for one deployment (one prefix).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn prefixed(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn chat_queue(&self) -> String {
        self.prefixed(CHAT_QUEUE)
    }

    pub fn responses_exchange(&self) -> String {
        self.prefixed(RESPONSES_EXCHANGE)
    }

    pub fn relay_exchange(&self) -> String {
        self.prefixed(RELAY_EXCHANGE)
    }

    /// `chat_relay.<instance>`: one gateway process's relay queue.
    pub fn relay_queue(&self, instance: &str) -> String {
        format!("{}{RELAY_EXCHANGE}.{instance}", self.prefix)
    }

    pub fn control_exchange(&self) -> String {
        self.prefixed(CONTROL_EXCHANGE)
    }

    /// `chat_control.<instance>`: one responder process's control queue.
    pub fn control_queue(&self, instance: &str) -> String {
        format!("{}{CONTROL_EXCHANGE}.{instance}", self.prefix)
    }

    pub fn dead_letter_exchange(&self) -> String {
        self.prefixed(DEAD_LETTER_EXCHANGE)
    }

    pub fn dead_letter_queue(&self) -> String {
        self.prefixed(DEAD_LETTER_QUEUE)
    }

    pub fn dead_letter_notify_queue(&self) -> String {
        self.prefixed(DEAD_LETTER_NOTIFY_QUEUE)
    }

    /// `chat_responses.<user_id>`: the user's durable reply queue.
    pub fn reply_queue(&self, user: &UserId) -> String {
        format!("{}{RESPONSES_EXCHANGE}.{user}", self.prefix)
    }

    /// Routing key that sends a reply to `user`'s queue through the responses
    /// exchange. The exchange is already prefixed, so the key is the bare id.
    pub fn reply_routing_key(user: &UserId) -> &str {
        user.as_str()
    }

    /// The queue of one HTTP request's answer (`POST /v1/chat/completions`),
    /// bound to the responses exchange with [`Names::request_routing_key`]:
    /// `chat_responses.req.<message id>` (user ids have no dot: never a
    /// user's queue).
    pub fn request_queue(&self, id: &MessageId) -> String {
        format!("{}{RESPONSES_EXCHANGE}.req.{id}", self.prefix)
    }

    /// Routing key of the answer to request `id` when it has its own queue.
    pub fn request_routing_key(id: &MessageId) -> String {
        format!("req.{id}")
    }

    /// Where the chunks (and statuses) answering `request` are published on
    /// the responses exchange: its own queue's key, its room's, or its
    /// user's.
    pub fn answer_routing_key(request: &ChatRequest) -> String {
        if request.own_queue {
            Self::request_routing_key(&request.id)
        } else if let Some(room) = &request.room_id {
            Self::room_routing_key(room)
        } else {
            Self::reply_routing_key(&request.user_id).to_owned()
        }
    }

    /// Where a status of `request` (`processing`) goes: to its asker only —
    /// its own queue, or the user's, never a room's.
    pub fn status_routing_key(request: &ChatRequest) -> String {
        if request.own_queue {
            Self::request_routing_key(&request.id)
        } else {
            Self::reply_routing_key(&request.user_id).to_owned()
        }
    }

    /// The queue that reads the answer to `request` for its asker: its own
    /// queue, or the user's. Once it is gone, nobody is left to read.
    pub fn answer_queue(&self, request: &ChatRequest) -> String {
        if request.own_queue {
            self.request_queue(&request.id)
        } else {
            self.reply_queue(&request.user_id)
        }
    }

    /// Routing key of `room`'s messages and answers on the responses
    /// exchange: `room.<room id>`. Every member's reply queue is bound with
    /// it. (User ids have no dot, so it never names a user.)
    pub fn room_routing_key(room: &RoomId) -> String {
        format!("room.{room}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_are_the_documented_ones() {
        let names = Names::default();
        let alice = UserId::parse("alice").unwrap();
        assert_eq!(names.chat_queue(), "chat_queue");
        assert_eq!(names.responses_exchange(), "chat_responses");
        assert_eq!(names.reply_queue(&alice), "chat_responses.alice");
        assert_eq!(Names::reply_routing_key(&alice), "alice");
        assert_eq!(names.dead_letter_queue(), "chat_queue.dead");
    }

    #[test]
    fn prefix_applies_to_every_name() {
        let names = Names::new("t1.");
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(names.chat_queue(), "t1.chat_queue");
        assert_eq!(names.responses_exchange(), "t1.chat_responses");
        assert_eq!(names.dead_letter_exchange(), "t1.chat_dead_letter");
        assert_eq!(names.reply_queue(&bob), "t1.chat_responses.bob");
    }
}
