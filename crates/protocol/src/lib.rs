//! Switchboard's wire contract: every envelope the browser, the gateway and the
//! responder exchange, and the names of the RabbitMQ objects they meet in.
//!
//! - [`ids`] — validated identifiers (`UserId`, `MessageId`, `ReplyId`).
//! - [`ws`] — WebSocket frames between browser and gateway, with a strict decoder
//!   that turns every bad frame into a stable [`ErrorCode`].
//! - [`message`] — a user's message, validated once for every way in.
//! - [`amqp`] — the versioned JSON bodies that travel through RabbitMQ.
//! - [`topology`] — exchange, queue and routing-key names under a configurable prefix.
//! - [`trace`] — the W3C `traceparent` carried in AMQP headers.
//! - [`answer`] — what a client shows of an answer, from its chunks.
//!
//! This crate does no I/O and owns no policy beyond validation; `docs/protocol.md`
//! documents the same contract for people writing clients.

pub mod amqp;
pub mod answer;
pub mod error;
pub mod ids;
pub mod message;
pub mod output;
pub mod topology;
pub mod trace;
pub mod ws;

pub use error::{CloseCode, ErrorCode};
pub use ids::{IdError, MessageId, ReplyId, RoomId, UserId};

/// For `skip_serializing_if`: a number left out when 0.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}
