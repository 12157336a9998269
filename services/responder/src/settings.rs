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
    pub engine: EngineSettings,
    pub mock: MockSettings,
    pub openai: OpenAiSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EngineSettings {
    /// Which engine answers: `mock` or `openai`.
    pub kind: EngineKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Mock,
    Openai,
}

/// An OpenAI-compatible chat-completions server.
#[derive(Debug, Clone, Deserialize)]
pub struct OpenAiSettings {
    /// Up to and including `/v1`, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub model: String,
    /// Sent as `Authorization: Bearer`; empty: none.
    pub api_key: String,
    /// First message of every conversation; empty: none.
    pub system_prompt: String,
    /// `max_tokens` of each answer; 0: the server's default.
    pub max_tokens: u32,
    /// Bound on connecting and on the first piece of the answer.
    pub first_token_timeout_ms: u64,
    /// Bound on each pause between pieces.
    pub idle_timeout_ms: u64,
}

impl Settings {
    /// Defaults, then `SWITCHBOARD_CONFIG`, `AMQP_URL` and `SWITCHBOARD_*`.
    pub fn load() -> Result<Self, platform::settings::ConfigError> {
        platform::settings::load(DEFAULTS, &["amqp.urls"])
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
    /// The user is told `processing` when an answer's first chunk has not
    /// gone out this long after the request was picked up; 0: always, first.
    pub processing_status_after_ms: u64,
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
