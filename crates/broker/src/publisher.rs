use crate::PublishError;
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Channel};
use lapin::{Confirmation, PublisherConfirm};
use std::time::Duration;
use tokio::time::timeout;

/// A confirm-mode channel for publishing. Cheap to clone; every clone shares
/// the channel, so concurrent publishes are pipelined on one connection.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
    timeout: Duration,
}

/// A publish that has been written to the connection and awaits its confirm.
/// Keeping several of these in flight is what makes a single task fast.
#[must_use = "a publish is only safe once its confirm has been awaited"]
#[derive(Debug)]
pub struct PendingConfirm {
    confirm: PublisherConfirm,
    /// When the publish began, for the confirm-latency histogram.
    started: tokio::time::Instant,
    routing_key: String,
    timeout: Duration,
}

impl Publisher {
    /// `channel` must already be in confirm mode.
    pub fn new(channel: Channel, timeout: Duration) -> Self {
        Self { channel, timeout }
    }

    /// Publishes `body` persistently with `mandatory` and waits for the
    /// confirm: `Ok` means RabbitMQ has taken responsibility for the message.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let started = tokio::time::Instant::now();
        let pending = self.start(exchange, routing_key, body, properties).await?;
        let left = self.timeout.saturating_sub(started.elapsed());
        pending.wait_at_most(left).await
    }

    /// Publishes without `mandatory` and without waiting for the confirm:
    /// for best-effort extras (relays), never for what must not be lost.
    pub async fn publish_best_effort(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), PublishError> {
        let write = self.channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            properties,
        );
        // The confirm (or its absence) is of no interest here.
        drop(
            timeout(self.timeout, write)
                .await
                .map_err(|_| PublishError::Timeout(self.timeout))??,
        );
        Ok(())
    }

    /// Writes the publish and returns without waiting for its confirm.
    pub async fn start(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<PendingConfirm, PublishError> {
        let started = tokio::time::Instant::now();
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let write = self.channel.basic_publish(
            exchange.into(),
            routing_key.into(),
            options,
            body,
            properties,
        );
        let confirm = timeout(self.timeout, write)
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))
            .and_then(|written| written.map_err(PublishError::from))
            .inspect_err(count_failure)?;
        Ok(PendingConfirm {
            confirm,
            started,
            routing_key: routing_key.to_owned(),
            timeout: self.timeout,
        })
    }
}

impl PendingConfirm {
    /// Waits for the confirm, at most the publish timeout.
    pub async fn wait(self) -> Result<(), PublishError> {
        let limit = self.timeout;
        self.wait_at_most(limit).await
    }

    async fn wait_at_most(self, limit: Duration) -> Result<(), PublishError> {
        let Self {
            confirm,
            started,
            routing_key,
            timeout: publish_timeout,
        } = self;
        let confirmed = match timeout(limit, confirm).await {
            Err(_) => Err(PublishError::Timeout(publish_timeout)),
            Ok(Err(e)) => Err(PublishError::from(e)),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(PublishError::Unroutable {
                routing_key,
                reply_text: returned.reply_text.to_string(),
            }),
            Ok(Ok(Confirmation::Nack(_))) => Err(PublishError::Nacked),
            // Only possible on a channel without confirm mode, which a
            // Publisher never has; treat it as unproven rather than safe.
            Ok(Ok(Confirmation::NotRequested)) => Err(PublishError::Nacked),
        };
        match &confirmed {
            Ok(()) => metrics::histogram!("switchboard_amqp_publish_confirm_seconds")
                .record(started.elapsed().as_secs_f64()),
            Err(e) => count_failure(e),
        }
        confirmed
    }
}

fn count_failure(error: &PublishError) {
    let reason = match error {
        PublishError::Timeout(_) => "timeout",
        PublishError::Nacked => "nacked",
        PublishError::Unroutable { .. } => "unroutable",
        PublishError::Amqp(_) | PublishError::Disconnected => "connection",
    };
    metrics::counter!("switchboard_amqp_publish_failures_total", "reason" => reason).increment(1);
}
