//! Process plumbing every Switchboard service shares, set up once per process:
//!
//! - [`cli`] — `--help` and `--version`.
//! - [`settings`] — layered configuration (built-in defaults, an optional file,
//!   environment variables).
//! - [`telemetry`] — the `tracing` subscriber (env filter; text or JSON).
//! - [`shutdown`] — one future for Ctrl-C and SIGTERM.
//! - [`health`] — `/healthz` and `/readyz` handlers.
//! - [`metrics`] — the Prometheus recorder and `/metrics`.
//!
//! Nothing here knows about chat, WebSockets or RabbitMQ.

pub mod cli;
pub mod health;
pub mod metrics;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
