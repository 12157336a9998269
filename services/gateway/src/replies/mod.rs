//! Reply routing: each user with at least one socket on this gateway has one
//! consumer on their reply queue, shared by their local sockets. Every frame
//! in it goes to all of that user's local sockets.
//!
//! - `router`: sockets subscribe ([`ReplyRouter::subscribe`]) and hold a
//!   [`Subscription`]; a user's first socket starts their consumer.
//! - `local`: the table of local users, their sockets and peers (no broker).
//! - `consumer`: one user's consumer — declare, bind, consume, dispatch.
//! - `inbound`: what a delivery is, decoded once.
//! - `outbound`: frames on their way to sockets, and the receipts that ack a
//!   chunk only once a client has it.
//! - `relay`: one user on several gateways.
//! - `queues`: [`ReplyQueues`] — declaring, binding rooms, counting consumers.
//! - `presence`: members of a user's rooms told when the user comes and goes.
//! - `context`: what these parts share.
//!
//! It knows nothing of how a message was sent, nor of HTTP.

mod consumer;
mod context;
mod inbound;
mod local;
mod outbound;
mod presence;
mod queues;
mod relay;
mod router;

pub use context::ReplySetup;
pub use local::ReplyHealth;
pub use outbound::AnswerWatcher;
pub use outbound::{OutboundReply, Outbox, Receipt, Settlement};
pub use queues::ReplyQueues;
pub use router::{ReplyRouter, Subscription};
