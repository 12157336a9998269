//! Test fixtures shared by every integration test:
//!
//! - [`amqp_url`] — a real RabbitMQ — `AMQP_URL` when set, otherwise one started
//!   with testcontainers, otherwise a failure that says exactly what is missing.
//! - [`unique_prefix`] and [`Cleanup`]: each test gets its own exchange and
//!   queue names, removed when it ends, so tests share one broker safely.
//! - [`ChatClient`] — a real WebSocket client speaking the chat protocol;
//!   [`MuteSocket`] — one that never answers (a half-open connection).
//! - [`FakeModel`] — a fake OpenAI-compatible model server streaming SSE.
//! - [`wait_until`] — wait for a condition with a timeout (never a bare sleep).

mod broker_fixture;
mod client;
pub mod fake_model;
mod raw;

pub use broker_fixture::{Cleanup, amqp_url, unique_prefix};
pub use client::{ChatClient, Closed, Guest, guest_session};
pub use fake_model::FakeModel;
pub use raw::MuteSocket;

use std::time::Duration;

/// PostgreSQL for the rooms: `DATABASE_URL`, else the local server's
/// `test` database.
pub fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// How long any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// Polls `condition` every few milliseconds until it holds; fails after
/// [`WAIT`] with `what` in the message.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// [`wait_until`] for a condition that must await (a broker query, say):
/// asks every few milliseconds; fails after [`WAIT`].
pub async fn wait_until_async(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {WAIT:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
