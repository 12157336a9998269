use broker::AmqpSettings;
use platform::telemetry::LogSettings;
use serde::Deserialize;

/// Built-in defaults; also the reference for every key.
pub const DEFAULTS: &str = include_str!("../config/default.toml");

/// All responder settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub log: LogSettings,
    pub health: HealthSettings,
    pub worker: WorkerSettings,
    pub mock: MockSettings,
}

impl Settings {
    /// Defaults, then `SWITCHBOARD_CONFIG`, `AMQP_URL` and `SWITCHBOARD_*`.
    pub fn load() -> Result<Self, platform::settings::ConfigError> {
        platform::settings::load(DEFAULTS, &[])
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HealthSettings {
    /// `host:port` for `/healthz` and `/readyz`; empty disables them.
    pub listen: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WorkerSettings {
    /// AMQP prefetch on `chat_queue`, and so the number of requests answered
    /// at once.
    pub prefetch: u16,
    /// How long in-flight answers may run on after shutdown begins.
    pub shutdown_grace_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MockSettings {
    /// The answer; `{text}` becomes the user's message.
    pub template: String,
    /// Words per chunk.
    pub words_per_chunk: usize,
    /// Pause before each chunk.
    pub chunk_delay_ms: u64,
    /// A message containing this fails on every attempt (empty: never).
    pub fail_marker: String,
}
