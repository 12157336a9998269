use broker::AmqpSettings;
use platform::telemetry::LogSettings;
use serde::Deserialize;

/// Built-in defaults; also the reference for every key.
pub const DEFAULTS: &str = include_str!("../config/default.toml");
/// The gateway's keys are known too: one environment (a compose file, a
/// Kubernetes ConfigMap) may configure both services.
const GATEWAY_DEFAULTS: &str = include_str!("../../gateway/config/default.toml");

/// All responder settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub log: LogSettings,
    pub health: HealthSettings,
    pub worker: WorkerSettings,
    pub stream: StreamSettings,
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
    /// `max_tokens` of each answer, and the most an OpenAI-API client may
    /// ask for (a larger `max_tokens` is clamped to it); 0: the server's
    /// default, and no bound.
    pub max_tokens: u32,
    /// Parameters fixed by the operator, over whatever a client sets: a
    /// JSON object (`{"temperature": 0.2, "model": "cheap"}`); empty: none.
    pub pinned: String,
    /// Bound on connecting and on the first piece of the answer.
    pub first_token_timeout_ms: u64,
    /// Bound on each pause between pieces.
    pub idle_timeout_ms: u64,
    /// PEM file of certificates trusted besides the system's (a private
    /// CA); empty: the system's only.
    pub ca_file: String,
}

impl Settings {
    /// Defaults, then `SWITCHBOARD_CONFIG`, `AMQP_URL` and `SWITCHBOARD_*`.
    pub fn load() -> Result<Self, platform::settings::ConfigError> {
        platform::settings::load(DEFAULTS, &[GATEWAY_DEFAULTS], &["amqp.urls"])
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
    /// at once; 0: the engine's own ([`WorkerSettings::prefetch_for`]).
    pub prefetch: u16,
    /// How long in-flight answers may run on after shutdown begins.
    pub shutdown_grace_ms: u64,
    /// The user is told `processing` when an answer's first chunk has not
    /// gone out this long after the request was picked up; 0: always, first.
    pub processing_status_after_ms: u64,
}

impl WorkerSettings {
    /// Requests answered at once by `engine`: `prefetch` when set, else the
    /// engine's own. A model server answers as many streams at once as it
    /// batches (tens, on one GPU), and requests beyond that are better left
    /// in `chat_queue` for another replica: 64. The mock's answers cost
    /// nothing but their broker round trips, so it keeps as many in flight
    /// as a plain AMQP worker would (the reference's 500): with 64 the
    /// confirm round trip, not the broker, capped its throughput
    /// (docs/performance.md).
    pub fn prefetch_for(&self, engine: EngineKind) -> u16 {
        match (self.prefetch, engine) {
            (0, EngineKind::Mock) => 500,
            (0, EngineKind::Openai) => 64,
            (set, _) => set,
        }
    }
}

/// How an engine's pieces are gathered into reply chunks.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamSettings {
    /// After a chunk went out, pieces are gathered this long into the next
    /// one; 0: every piece is a chunk of its own.
    pub flush_ms: u64,
    /// A chunk goes out at once when its text reaches this many bytes.
    pub max_chunk_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MockSettings {
    /// The answer; `{text}` becomes the user's message.
    pub template: String,
    /// Words per piece (the pieces are gathered into chunks, `stream`).
    pub words_per_chunk: usize,
    /// Pause before each piece.
    pub chunk_delay_ms: u64,
    /// A message containing this fails on every attempt (empty: never).
    pub fail_marker: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn worker(prefetch: u16) -> WorkerSettings {
        WorkerSettings {
            prefetch,
            shutdown_grace_ms: 0,
            processing_status_after_ms: 0,
        }
    }

    #[test]
    fn prefetch_is_the_engines_own_unless_set() {
        assert_eq!(worker(0).prefetch_for(EngineKind::Mock), 500);
        assert_eq!(worker(0).prefetch_for(EngineKind::Openai), 64);
        assert_eq!(worker(8).prefetch_for(EngineKind::Mock), 8);
        assert_eq!(worker(8).prefetch_for(EngineKind::Openai), 8);
    }
}
