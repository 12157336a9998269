use broker::AmqpSettings;
use broker::topology::QueueKind;
use platform::telemetry::LogSettings;
use serde::Deserialize;

/// Built-in defaults; also the reference for every key.
pub const DEFAULTS: &str = include_str!("../config/default.toml");
/// The responder's keys are known too: one environment (a compose file, a
/// Kubernetes ConfigMap) may configure both services.
const RESPONDER_DEFAULTS: &str = include_str!("../../responder/config/default.toml");

/// The development secret shipped in the defaults; using it is warned about.
pub const DEV_JWT_SECRET: &str = "switchboard-dev-secret-change-me";

/// All gateway settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub amqp: AmqpSettings,
    pub log: LogSettings,
    pub http: HttpSettings,
    pub auth: AuthSettings,
    pub websocket: WebSocketSettings,
    pub reply_queue: ReplyQueueSettings,
    pub rate_limit: RateLimitSettings,
    pub messages: MessagesSettings,
    pub rooms: RoomsSettings,
    pub openai_api: OpenAiApiSettings,
}

/// The OpenAI-compatible API (`/v1`).
#[derive(Debug, Clone, Deserialize)]
pub struct OpenAiApiSettings {
    /// What `GET /v1/models` lists, each `id` (the responder's own model)
    /// or `id=upstream` (the model the responder asks for); the first is
    /// the one of requests that name none. Any other is `model_not_found`.
    pub models: Vec<String>,
    /// The largest `POST /v1/chat/completions` body taken (images inline).
    pub max_body_bytes: usize,
    /// Messages in one request at most.
    pub max_messages: usize,
    /// Bytes of one image's URL (a `data:` URL holds the image) at most.
    pub max_image_bytes: usize,
    /// Request fields beyond OpenAI's passed on as they are (a model
    /// server's own, e.g. `top_k`); any other unknown field is refused.
    pub extra_fields: Vec<String>,
    /// How long an answer whose stream broke goes on for its client to
    /// resume it; then, with nobody reading, it is cancelled. An answer
    /// that ended is kept as long for a resume.
    pub resume_window_ms: u64,
    /// How far back a gateway that starts reads the completions stream:
    /// answers begun earlier cannot be resumed on it.
    pub catch_up_ms: u64,
    /// The most memory (bytes of chunks) this gateway keeps answers in;
    /// beyond it the ones idle longest are forgotten first.
    pub max_answer_bytes: usize,
    /// Streams, whole completions and resumes of one user open on this
    /// gateway at once; one more gets `too_many_streams`.
    pub max_streams_per_user: usize,
}

/// Fairness between users.
#[derive(Debug, Clone, Deserialize)]
pub struct MessagesSettings {
    /// Messages of one user waiting to be answered through this gateway;
    /// one more gets `too_many_pending`.
    pub max_pending_per_user: usize,
    /// A message stops counting as waiting this long after its last sign
    /// of life (its answer may stream through another gateway).
    pub pending_window_ms: u64,
}

impl Settings {
    /// Defaults, then `SWITCHBOARD_CONFIG`, `AMQP_URL` and `SWITCHBOARD_*`.
    pub fn load() -> Result<Self, platform::settings::ConfigError> {
        platform::settings::load(
            DEFAULTS,
            &[RESPONDER_DEFAULTS],
            &[
                "http.allowed_origins",
                "amqp.urls",
                "openai_api.models",
                "openai_api.extra_fields",
            ],
        )
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    /// `host:port` to serve on.
    pub listen: String,
    /// Directory of the built web UI, served at `/`.
    pub web_dir: String,
    /// Extra origins whose pages may open the WebSocket (the gateway's own
    /// origin always may).
    pub allowed_origins: Vec<String>,
    /// Time a client has to send its first byte, and its request headers.
    pub handshake_timeout_ms: u64,
    /// Time a request body has to arrive whole, from its headers.
    pub request_timeout_ms: u64,
    /// Connections open at once (sockets and HTTP), kept below the
    /// process's open-file limit.
    pub max_connections: usize,
    /// Whether a proxy in front sets `X-Forwarded-For` and
    /// `X-Forwarded-Proto` (and strips what clients send): only then are
    /// they believed, for the client's address and the page's scheme.
    pub trust_forwarded_headers: bool,
    /// Connections the kernel holds for the gateway to accept (capped by
    /// `net.core.somaxconn`).
    pub accept_backlog: u32,
}

#[derive(Clone, Deserialize)]
pub struct AuthSettings {
    /// HS256 signing secret, shared by every replica. Never logged.
    pub jwt_secret: String,
    /// Token issuer (`iss`), set on issued tokens and required on verified
    /// ones; empty: not checked.
    pub issuer: String,
    /// Token audience (`aud`), likewise; empty: not checked.
    pub audience: String,
    /// Whether `POST /api/session` issues guest identities.
    pub guest_sessions: bool,
    /// Lifetime of guest tokens.
    pub guest_token_ttl_secs: u64,
}

impl std::fmt::Debug for AuthSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthSettings")
            .field("jwt_secret", &"***")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("guest_sessions", &self.guest_sessions)
            .field("guest_token_ttl_secs", &self.guest_token_ttl_secs)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct WebSocketSettings {
    /// Longest accepted message text, in characters.
    pub max_text_chars: usize,
    /// Largest accepted WebSocket message, in bytes.
    pub max_message_bytes: usize,
    /// Frames queued per socket before it is dropped as too slow.
    pub outbound_buffer: usize,
    /// Unconfirmed sends per socket before reading pauses.
    pub max_in_flight: usize,
    /// Bound on writing one frame to a socket; a client that does not read
    /// for this long is disconnected.
    pub send_timeout_ms: u64,
    /// Open sockets per user on this gateway.
    pub max_sockets_per_user: usize,
    /// Open sockets on this gateway.
    pub max_sockets: usize,
    /// Interval of WebSocket pings from the gateway.
    pub ping_interval_ms: u64,
    /// Silence after which a socket is closed as dead.
    pub idle_timeout_ms: u64,
}

/// Per-socket token bucket over client frames.
#[derive(Debug, Clone, Deserialize)]
pub struct RateLimitSettings {
    pub burst: u32,
    pub per_second: u32,
    /// Refused frames in a row before the socket is closed.
    pub abuse_threshold: u32,
    /// HTTP API requests of one user (every authenticated call), at once…
    pub api_burst: u32,
    /// …and per second after that.
    pub api_per_second: u32,
    /// Guest sessions (`POST /api/session`) from one client address, at
    /// once…
    pub guest_burst: u32,
    /// …and per minute after that.
    pub guest_per_minute: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ReplyQueueSettings {
    /// `auto` (quorum when `amqp.url` names several nodes, else classic),
    /// `classic` or `quorum` (replicated over a cluster).
    pub kind: ReplyQueueKind,
    /// `x-expires` of reply queues.
    pub expires_ms: u64,
    /// Prefetch of each per-user consumer.
    pub prefetch: u16,
    /// Most chunks a reply queue holds (`x-max-length`, overflow refused).
    pub max_length: u32,
}

/// Which kind of queue users' reply queues are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplyQueueKind {
    /// Quorum when the broker is given as several nodes (a cluster), else
    /// classic.
    Auto,
    Classic,
    Quorum,
}

impl ReplyQueueKind {
    /// The kind to declare, given the broker's addresses.
    pub fn resolve(self, amqp: &AmqpSettings) -> QueueKind {
        match self {
            Self::Classic => QueueKind::Classic,
            Self::Quorum => QueueKind::Quorum,
            Self::Auto if amqp.endpoints().len() > 1 => QueueKind::Quorum,
            Self::Auto => QueueKind::Classic,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct RoomsSettings {
    /// Where rooms, members and messages are kept: `sqlite:<path>` (one
    /// gateway) or `postgres://user:password@host:port/database` (shared by
    /// several); empty turns rooms off.
    pub database_url: String,
    /// Database connections this gateway keeps at most.
    pub max_connections: usize,
    /// Lifetime of room invitations.
    pub invite_ttl_secs: u64,
    /// Rooms one user may belong to; one more (created or joined) is
    /// `409 too_many_rooms`.
    pub max_rooms_per_user: usize,
}
