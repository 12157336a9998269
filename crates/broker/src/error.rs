use std::time::Duration;

/// Failures of connecting and declaring.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("invalid AMQP URL: {0}")]
    Url(String),
    #[error("RabbitMQ did not answer within {0:?}")]
    Timeout(Duration),
    /// A consumer's delivery stream ended without being cancelled by us:
    /// the channel or connection is gone.
    #[error("the consumer's delivery stream ended")]
    ConsumerEnded,
}

impl BrokerError {
    /// The code and text RabbitMQ closed a channel or connection with (404
    /// NOT_FOUND, 406 PRECONDITION_FAILED, …), if this is such a refusal.
    pub fn refusal(&self) -> Option<(u16, &str)> {
        match self {
            Self::Amqp(e) => match e.kind() {
                lapin::ErrorKind::ProtocolError(amqp) => {
                    Some((amqp.get_id(), amqp.get_message().as_str()))
                }
                _ => None,
            },
            _ => None,
        }
    }
}

/// Why a publish did not end with a positive confirm.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// No confirm (or not even the write) within the publish timeout. The
    /// message may or may not have been taken.
    #[error("no publisher confirm within {0:?}")]
    Timeout(Duration),
    /// RabbitMQ answered with a negative confirm.
    #[error("RabbitMQ refused the message (nack)")]
    Nacked,
    /// `mandatory` and no queue is bound for the routing key.
    #[error("no queue for routing key {routing_key:?} ({reply_text})")]
    Unroutable {
        routing_key: String,
        reply_text: String,
    },
    /// The channel or connection failed under the publish.
    #[error("AMQP error while publishing: {0}")]
    Amqp(#[from] lapin::Error),
    /// There is no connection to RabbitMQ right now.
    #[error("not connected to RabbitMQ")]
    Disconnected,
}

impl PublishError {
    /// What a client is told when its message could not be published: all
    /// retryable. A timeout may have queued it anyway, so the client sends
    /// the same id again.
    pub fn code(&self) -> protocol::ErrorCode {
        use protocol::ErrorCode;
        match self {
            Self::Timeout(_) => ErrorCode::PublishTimeout,
            Self::Nacked | Self::Unroutable { .. } => ErrorCode::PublishRejected,
            Self::Amqp(_) | Self::Disconnected => ErrorCode::BrokerUnavailable,
        }
    }
}
