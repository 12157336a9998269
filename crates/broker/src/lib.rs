//! RabbitMQ plumbing shared by the gateway and the responder.
//!
//! - [`Broker`] — a supervisor that owns *the* AMQP connection of a process,
//!   reconnects with backoff, re-declares topology, and hands out [`Session`]s
//!   (one per successful connection, numbered by `generation`). Consumers watch
//!   for a new session to re-create themselves after a loss.
//! - [`Publisher`] — publishing with confirms and `mandatory`, where every wait
//!   is bounded by a timeout (lapin can otherwise hang on a closing connection).
//! - [`topology`] — idempotent declarations of every exchange and queue.
//! - [`properties`] — the AMQP properties every Switchboard message carries.
//!
//! This crate knows the names and shapes of the messages (from `protocol`) but
//! no service logic: it never decides what to publish or how to handle a delivery.

mod connection;
pub mod consumer;
mod error;
pub mod properties;
mod publisher;
mod settings;
pub mod topology;

pub use connection::{Broker, Session};
pub use error::{BrokerError, PublishError};
pub use lapin;
pub use publisher::{PendingConfirm, Publisher};
pub use settings::AmqpSettings;
