use serde::Deserialize;
use std::time::Duration;

/// How to reach RabbitMQ and how patient to be with it. Shared by every
/// service; the `[amqp]` section of each service's settings.
#[derive(Debug, Clone, Deserialize)]
pub struct AmqpSettings {
    /// `amqp://user:password@host:port/vhost`, or several separated by
    /// commas (the nodes of a cluster). `AMQP_URL` overrides it. Never logged
    /// with its password.
    pub url: String,
    /// The nodes of a cluster, one URL each; when set, they are used instead
    /// of `url`. A service connects to the first that answers and fails over
    /// to the others, in order.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Prefix for every exchange and queue name (empty in production; unique
    /// per test so test runs can share a broker).
    pub prefix: String,
    /// AMQP heartbeat in seconds: a dead connection is noticed within about
    /// twice this.
    pub heartbeat_secs: u16,
    /// Bound on the TCP connect plus AMQP handshake.
    pub connect_timeout_ms: u64,
    /// Bound on one publish, from writing the frame to receiving the confirm.
    pub publish_timeout_ms: u64,
    /// First delay before reconnecting after a failure; doubles up to the max.
    pub reconnect_initial_ms: u64,
    pub reconnect_max_ms: u64,
    /// Deliveries of one request before `chat_queue` dead-letters it
    /// (quorum-queue `x-delivery-limit`). Part of the queue's identity:
    /// changing it needs the queue to be re-created.
    pub delivery_limit: u32,
    /// Requests `chat_queue` holds at most; beyond, publishes are refused
    /// (`publish_rejected`, retryable). Part of the queue's identity.
    #[serde(default = "default_chat_queue_max_length")]
    pub chat_queue_max_length: u32,
    /// Dead-lettered requests kept for operators in `chat_queue.dead` (the
    /// oldest dropped beyond it). Part of the queue's identity.
    #[serde(default = "default_dead_letter_max_length")]
    pub dead_letter_max_length: u32,
    /// Channels the gateway spreads its per-user consumers over (a channel
    /// error ends only the consumers on it, and RabbitMQ caps channels per
    /// connection). The responder's consumer has a channel of its own.
    #[serde(default = "default_consumer_channels")]
    pub consumer_channels: usize,
}

fn default_consumer_channels() -> usize {
    8
}

fn default_chat_queue_max_length() -> u32 {
    100_000
}

fn default_dead_letter_max_length() -> u32 {
    10_000
}

impl AmqpSettings {
    /// Settings for a broker at `url` with every other knob at its default.
    pub fn with_url(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            urls: Vec::new(),
            prefix: String::new(),
            heartbeat_secs: 10,
            connect_timeout_ms: 5_000,
            publish_timeout_ms: 5_000,
            reconnect_initial_ms: 200,
            reconnect_max_ms: 5_000,
            delivery_limit: 5,
            chat_queue_max_length: default_chat_queue_max_length(),
            dead_letter_max_length: default_dead_letter_max_length(),
            consumer_channels: 8,
        }
    }

    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// Every broker address, in the order they are tried: `urls` when set,
    /// else the comma-separated `url`.
    pub fn endpoints(&self) -> Vec<String> {
        let listed = if self.urls.is_empty() {
            self.url.split(',').map(str::to_owned).collect()
        } else {
            self.urls.clone()
        };
        listed
            .into_iter()
            .map(|url| url.trim().to_owned())
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// Every address with any password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        self.endpoints()
            .iter()
            .map(|url| redact(url))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// `host:port` of a broker URL, to say which node a service is on.
pub fn node_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    host.to_owned()
}

fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn several_urls_are_tried_in_order_and_urls_wins_over_url() {
        let mut settings = super::AmqpSettings::with_url("amqp://a:1/%2f, amqp://u:p@b:2/%2f,");
        assert_eq!(
            settings.endpoints(),
            ["amqp://a:1/%2f", "amqp://u:p@b:2/%2f"]
        );
        assert_eq!(
            settings.redacted_url(),
            "amqp://a:1/%2f,amqp://u:***@b:2/%2f"
        );
        settings.urls = vec!["amqp://c:3".into()];
        assert_eq!(settings.endpoints(), ["amqp://c:3"]);
        assert_eq!(super::node_of("amqp://u:p@b:2/%2f"), "b:2");
        assert_eq!(super::node_of("amqp://c:3"), "c:3");
    }

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://rabbit:5672"), "amqp://rabbit:5672");
        assert_eq!(redact("not a url"), "not a url");
    }
}
