//! The AMQP properties every Switchboard message carries.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use protocol::UserId;
use protocol::amqp::{
    CANCEL_TYPE, CHAT_REQUEST_TYPE, COMPLETION_NOTE_TYPE, CONTENT_TYPE, REPLY_CHUNK_TYPE,
    ROOM_MESSAGE_TYPE, ROOM_PRESENCE_TYPE, ROOM_RECEIPT_TYPE, STATUS_TYPE, USER_ID_HEADER,
};
use protocol::trace::{TRACEPARENT_HEADER, TraceParent};
use std::time::{SystemTime, UNIX_EPOCH};

/// AMQP `delivery_mode` 2: written to disk, survives a broker restart.
const PERSISTENT: u8 = 2;
/// AMQP `delivery_mode` 1: kept in memory only.
const TRANSIENT: u8 = 1;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The properties every body carries (persistent; the transient ones
/// override the delivery mode).
fn json_properties(
    message_id: String,
    kind: &str,
    user: &UserId,
    trace: &TraceParent,
) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(USER_ID_HEADER),
        AMQPValue::LongString(user.as_str().into()),
    );
    headers.insert(
        ShortString::from(TRACEPARENT_HEADER),
        AMQPValue::LongString(trace.to_string().into()),
    );
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
        .with_message_id(message_id.into())
        .with_type(kind.into())
        .with_timestamp(now_ms() / 1000)
        .with_headers(headers)
}

/// Properties of a chat request: `message_id` is the client's message id,
/// `traceparent` the trace the gateway started for it.
pub fn chat_request(
    message_id: protocol::MessageId,
    user: &UserId,
    trace: &TraceParent,
) -> BasicProperties {
    json_properties(message_id.to_string(), CHAT_REQUEST_TYPE, user, trace)
}

/// Properties of a reply chunk: `message_id` is `<reply id>:<seq>`, and
/// `correlation_id` the request it answers.
pub fn reply_chunk(chunk: &protocol::amqp::ReplyChunk, trace: &TraceParent) -> BasicProperties {
    json_properties(
        format!("{}:{}", chunk.id, chunk.seq),
        REPLY_CHUNK_TYPE,
        &chunk.user_id,
        trace,
    )
    .with_correlation_id(chunk.in_reply_to.to_string().into())
}

/// Properties of a status event: transient (advisory; the final chunk is
/// what counts), `correlation_id` the message it is about.
pub fn status_event(event: &protocol::amqp::StatusEvent, trace: &TraceParent) -> BasicProperties {
    json_properties(
        format!("{}:{:?}", event.message_id, event.status),
        STATUS_TYPE,
        &event.user_id,
        trace,
    )
    .with_delivery_mode(TRANSIENT)
    .with_correlation_id(event.message_id.to_string().into())
}

/// Properties of a cancel broadcast: transient (a cancel that finds no
/// responder has nothing to stop).
pub fn cancel(request: &protocol::amqp::CancelRequest, trace: &TraceParent) -> BasicProperties {
    json_properties(
        request.message_id.to_string(),
        CANCEL_TYPE,
        &request.user_id,
        trace,
    )
    .with_delivery_mode(TRANSIENT)
}

/// Properties of a room message: persistent like a chunk (members offline
/// get it from their queue), `message_id` `<room>:<seq>`.
pub fn room_message(message: &protocol::amqp::RoomMessage, trace: &TraceParent) -> BasicProperties {
    json_properties(
        format!("{}:{}", message.room_id, message.seq),
        ROOM_MESSAGE_TYPE,
        &message.user_id,
        trace,
    )
}

/// Properties of a room receipt: transient (advisory).
pub fn room_receipt(receipt: &protocol::amqp::RoomReceipt, trace: &TraceParent) -> BasicProperties {
    json_properties(
        format!("{}:{}:{}", receipt.room_id, receipt.user_id, receipt.seq),
        ROOM_RECEIPT_TYPE,
        &receipt.user_id,
        trace,
    )
    .with_delivery_mode(TRANSIENT)
}

/// Properties of a [`protocol::amqp::RoomPresence`]: transient, like a
/// receipt — advisory, and stale by the time a broker restart is over.
pub fn room_presence(presence: &protocol::amqp::RoomPresence) -> BasicProperties {
    json_properties(
        format!("{}:{}:presence", presence.room_id, presence.user_id),
        ROOM_PRESENCE_TYPE,
        &presence.user_id,
        &TraceParent::new_root(),
    )
    .with_delivery_mode(TRANSIENT)
}

/// Properties of a [`protocol::amqp::CompletionNote`]: persistent (the
/// stream keeps it for gateways that start later).
pub fn completion_note() -> BasicProperties {
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_delivery_mode(PERSISTENT)
        .with_type(COMPLETION_NOTE_TYPE.into())
        .with_timestamp(now_ms() / 1000)
}

fn string_header<'a>(properties: &'a BasicProperties, name: &str) -> Option<&'a str> {
    match properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

/// Why RabbitMQ dead-lettered a message (`x-first-death-reason`:
/// `rejected`, `delivery_limit`, …).
pub fn first_death_reason(properties: &BasicProperties) -> Option<&str> {
    string_header(properties, "x-first-death-reason")
}

/// How often RabbitMQ delivered this message before (quorum queues set
/// `x-delivery-count` on redeliveries); 0 on a first delivery.
pub fn delivery_count(properties: &BasicProperties) -> i64 {
    let count = properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => i64::from(n),
        Some(AMQPValue::ShortInt(n)) => i64::from(n),
        Some(AMQPValue::LongUInt(n)) => i64::from(n),
        _ => 0,
    }
}

/// Header naming the gateway instance that relayed a message.
pub const RELAYED_BY_HEADER: &str = "x-relayed-by";
/// Header marking a relay control message (`joined` / `left`).
pub const RELAY_CONTROL_HEADER: &str = "x-relay-control";

/// Properties of a relayed chunk (`control: None`) or a relay control
/// message, sent by gateway `instance`. Transient: relays are extras.
pub fn relay(instance: &str, control: Option<&str>) -> BasicProperties {
    let mut headers = FieldTable::default();
    headers.insert(
        ShortString::from(RELAYED_BY_HEADER),
        AMQPValue::LongString(instance.into()),
    );
    if let Some(control) = control {
        headers.insert(
            ShortString::from(RELAY_CONTROL_HEADER),
            AMQPValue::LongString(control.into()),
        );
    }
    BasicProperties::default()
        .with_content_type(CONTENT_TYPE.into())
        .with_headers(headers)
}

/// Who relayed a delivery, and its control word if it is one.
pub fn relay_info(properties: &BasicProperties) -> (Option<&str>, Option<&str>) {
    (
        string_header(properties, RELAYED_BY_HEADER),
        string_header(properties, RELAY_CONTROL_HEADER),
    )
}

/// The user a delivery claims to belong to (from its header), if any.
pub fn user_header(properties: &BasicProperties) -> Option<&str> {
    string_header(properties, USER_ID_HEADER)
}

/// The trace a delivery belongs to, if it carries a valid `traceparent`.
pub fn traceparent(properties: &BasicProperties) -> Option<TraceParent> {
    TraceParent::parse(string_header(properties, TRACEPARENT_HEADER)?)
}
