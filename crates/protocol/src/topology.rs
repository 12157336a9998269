//! Names of every RabbitMQ object Switchboard uses. All of them sit under a
//! configurable prefix (empty by default) so that several deployments or test
//! runs can share one broker without colliding.

use crate::amqp::ChatRequest;
use crate::{RoomId, UserId};

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

/// Stream (a RabbitMQ stream: an append-only log every gateway reads) of
/// the OpenAI API's answers and the gateways' notes about them.
pub const COMPLETIONS_STREAM: &str = "chat_completions";

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

/// Where a message is published: an exchange and a routing key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub exchange: String,
    pub routing_key: String,
}

impl Destination {
    /// Straight into queue (or stream) `queue`.
    fn default_exchange(queue: String) -> Self {
        Self {
            exchange: String::new(),
            routing_key: queue,
        }
    }

    fn responses(names: &Names, routing_key: String) -> Self {
        Self {
            exchange: names.responses_exchange(),
            routing_key,
        }
    }
}

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

    /// `chat_completions`: the stream of the OpenAI API's answers.
    pub fn completions_stream(&self) -> String {
        self.prefixed(COMPLETIONS_STREAM)
    }

    /// Where the chunks answering `request` are published: the completions
    /// stream (through the default exchange) for an OpenAI-API request,
    /// else the responses exchange with its room's key or its user's.
    pub fn answer_destination(&self, request: &ChatRequest) -> Destination {
        if request.to_stream {
            Destination::default_exchange(self.completions_stream())
        } else if let Some(room) = &request.room_id {
            Destination::responses(self, Self::room_routing_key(room))
        } else {
            Destination::responses(self, Self::reply_routing_key(&request.user_id).to_owned())
        }
    }

    /// Where a status of `request` (`processing`) goes: to its asker only,
    /// never a room's; `None` for an OpenAI-API request (its clients have
    /// no use for it).
    pub fn status_destination(&self, request: &ChatRequest) -> Option<Destination> {
        (!request.to_stream).then(|| {
            Destination::responses(self, Self::reply_routing_key(&request.user_id).to_owned())
        })
    }

    /// The queue that reads the answer to `request` for its asker: the
    /// completions stream, or the user's queue. Once it is gone, nobody is
    /// left to read.
    pub fn answer_queue(&self, request: &ChatRequest) -> String {
        if request.to_stream {
            self.completions_stream()
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
