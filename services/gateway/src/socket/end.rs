//! How a socket's loop ends, and what that is called in metrics.

use protocol::CloseCode;

/// Why the loop ended, and so how the socket is closed.
pub enum End {
    /// The client closed or vanished; nothing more to send.
    ClientGone,
    /// Close with this code and reason.
    Close(CloseCode, &'static str),
}

/// The `reason` label of `switchboard_gateway_sockets_closed_total`.
pub fn close_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Normal => "normal",
        CloseCode::GoingAway => "going_away",
        CloseCode::ProtocolError => "protocol_error",
        CloseCode::InvalidPayload => "invalid_payload",
        CloseCode::PolicyViolation => "rate_limit_abuse",
        CloseCode::MessageTooBig => "message_too_big",
        CloseCode::SlowConsumer => "slow_consumer",
        CloseCode::TokenExpired => "token_expired",
        CloseCode::IdleTimeout => "idle",
    }
}

/// How to end after a failed read: a too-big message gets 1009, invalid
/// UTF-8 gets 1007, a broken WebSocket protocol 1002; anything else means
/// the connection is gone.
pub fn read_failure(error: &axum::Error) -> End {
    use tokio_tungstenite::tungstenite::Error;
    let cause = std::error::Error::source(error).and_then(|e| e.downcast_ref::<Error>());
    match cause {
        Some(Error::Capacity(_)) => End::Close(CloseCode::MessageTooBig, "message too big"),
        Some(Error::Utf8(_)) => {
            End::Close(CloseCode::InvalidPayload, "text frame is not valid UTF-8")
        }
        Some(Error::Protocol(_)) => {
            End::Close(CloseCode::ProtocolError, "WebSocket protocol violation")
        }
        _ => End::ClientGone,
    }
}
