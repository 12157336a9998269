//! Stable error and close codes. Clients branch on these strings and numbers,
//! so a code, once published in `docs/protocol.md`, never changes meaning.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The `code` of an `error` frame (and of an HTTP error body).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The text frame is not valid JSON.
    InvalidJson,
    /// Valid JSON, but not an object with the fields its `type` requires.
    InvalidFrame,
    /// The `type` is not one this server understands.
    UnknownType,
    /// An `id` that is not a UUID.
    InvalidId,
    /// `text` is empty or only white space.
    EmptyText,
    /// `text` is longer than the server's limit.
    TextTooLong,
    /// A binary WebSocket frame; the protocol is JSON text frames only.
    BinaryNotSupported,
    /// RabbitMQ is not reachable right now; resend the same message later.
    BrokerUnavailable,
    /// RabbitMQ refused the message (negative confirm or no route); resend later.
    PublishRejected,
    /// RabbitMQ did not confirm in time; the message may or may not have been
    /// taken. Resend with the same `id`.
    PublishTimeout,
    /// The HTTP request carried no token.
    MissingToken,
    /// The token is malformed, wrongly signed, expired or names an invalid user.
    InvalidToken,
    /// The page's `Origin` may not open a socket here (cross-site WebSocket
    /// hijacking protection).
    OriginNotAllowed,
    /// This deployment issues no guest identities; get a token from its own
    /// login system.
    GuestSessionsDisabled,
    /// The user already has the maximum number of sockets on this gateway.
    TooManySockets,
    /// The gateway has the maximum number of sockets it accepts; try another
    /// (or later).
    GatewayFull,
    /// The socket sends frames faster than its rate limit; slow down.
    RateLimited,
    /// The request could not be answered: it was unreadable, or failed on
    /// every attempt, and was set aside (dead-lettered). Sent as the `error`
    /// of a final reply chunk.
    RequestFailed,
    /// A `cancel` named a message that is not being answered (already
    /// answered, never sent, or sent by another user). Harmless.
    NothingToCancel,
    /// The model behind the responder failed or was cut off; sent as the
    /// `error` of a final reply chunk. Sending the message again may work.
    ModelFailed,
    /// The room does not exist or the user is not one of its members.
    NotAMember,
    /// The room invitation token is malformed, forged or expired.
    InvalidRoomToken,
    /// The rooms database is unreachable right now; try again later.
    RoomsUnavailable,
    /// This deployment has rooms turned off (`rooms.database_url` empty):
    /// asking again will not help.
    RoomsDisabled,
    /// An answer streamed over Server-Sent Events (the OpenAI API) began
    /// again after a responder failed, and what was sent cannot be taken
    /// back: ask again.
    AnswerRestarted,
    /// A text (a message, a room name) holds a character that is never
    /// allowed (NUL, or another control character than tab and newlines).
    InvalidText,
    /// The user has as many messages waiting to be answered as a user may;
    /// send again when one is answered.
    TooManyPending,
    /// A query parameter is missing, malformed or out of range.
    InvalidQuery,
    /// A room message id that another member already used.
    IdTaken,
    /// No such endpoint.
    NotFound,
    /// The endpoint does not take this HTTP method.
    MethodNotAllowed,
    /// The request (its headers or its body) did not arrive in time.
    RequestTimeout,
    /// `GET /ws` without a WebSocket upgrade (or with a broken one).
    NotAWebsocket,
    /// The user has as many OpenAI-API streams open on this gateway as a
    /// user may (`openai_api.max_streams_per_user`); close one first.
    TooManyStreams,
    /// Another request of the same user now reads this completion (a
    /// resume, on this gateway or another): this stream ends, that one
    /// goes on. One reader at a time.
    StreamTakenOver,
    /// The completion is no longer kept (its resume window passed, or the
    /// gateway's memory bound for answers was reached): ask again.
    AnswerExpired,
    /// A field of an OpenAI-API request has the wrong type or range, or is
    /// one this server does not take; the error's `param` names it.
    InvalidParameter,
    /// The OpenAI-API request names a model this server does not offer
    /// (`GET /v1/models` lists those it does).
    ModelNotFound,
    /// The model server refused the request as it is (its context too
    /// long, a tool's schema invalid, …): its reason comes with it. Asking
    /// the same again will not help.
    ModelRefused,
    /// The user belongs to as many rooms as a user may; leave one first.
    TooManyRooms,
    /// An unexpected server fault; details are in the server log only.
    Internal,
}

impl ErrorCode {
    /// Whether sending the same message again (same `id`) may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::BrokerUnavailable
                | Self::PublishRejected
                | Self::PublishTimeout
                | Self::Internal
                | Self::GatewayFull
                | Self::RateLimited
                | Self::ModelFailed
                | Self::RoomsUnavailable
                | Self::AnswerRestarted
                | Self::TooManyPending
                | Self::RequestTimeout
                | Self::TooManyStreams
                | Self::AnswerExpired
        )
    }

    /// The text a person reads with this code, when nothing more specific
    /// is said (frame decoding errors say more). One place for the socket's
    /// `error` frames and the HTTP error bodies.
    pub fn describe(self) -> &'static str {
        match self {
            Self::InvalidJson => "the frame is not valid JSON",
            Self::InvalidFrame => "the frame is not one this server understands",
            Self::UnknownType => "unknown frame type",
            Self::InvalidId => "the id must be a UUID",
            Self::EmptyText => "the message text is empty",
            Self::TextTooLong => "the message text is too long",
            Self::BinaryNotSupported => "binary frames are not supported; send JSON text frames",
            Self::BrokerUnavailable => "the message broker is unreachable; send again later",
            Self::PublishRejected => "the message broker refused the message; send again later",
            Self::PublishTimeout => {
                "the message broker did not confirm in time; send again with the same id"
            }
            Self::MissingToken => {
                "a token is required (Authorization: Bearer, the bearer.<token> subprotocol, or ?token=)"
            }
            Self::InvalidToken => "the token is invalid or expired; get a new one",
            Self::OriginNotAllowed => "this origin may not open a socket here",
            Self::GuestSessionsDisabled => {
                "guest sessions are turned off; sign in through the application"
            }
            Self::TooManySockets => "too many open sockets for this user",
            Self::GatewayFull => "the gateway is full; try again later",
            Self::RateLimited => "too many frames; slow down",
            Self::RequestFailed => "the message could not be answered",
            Self::NothingToCancel => {
                "that message is not being answered (already answered, or unknown)"
            }
            Self::ModelFailed => "the model failed to answer; send the message again",
            Self::NotAMember => "no such room, or you are not one of its members",
            Self::InvalidRoomToken => "the invitation is invalid or expired; ask for a new one",
            Self::RoomsUnavailable => "rooms are unavailable right now; try again later",
            Self::RoomsDisabled => "rooms are turned off on this server",
            Self::AnswerRestarted => "the answer was restarted after a responder failed; ask again",
            Self::InvalidText => {
                "the text holds a character that is not allowed (NUL or a control character)"
            }
            Self::TooManyPending => {
                "too many of your messages are waiting to be answered; send again when one is"
            }
            Self::InvalidQuery => "a query parameter is missing, malformed or out of range",
            Self::IdTaken => "another member already used this message id; choose a new one",
            Self::NotFound => "no such endpoint",
            Self::MethodNotAllowed => "this endpoint does not take that method",
            Self::RequestTimeout => "the request did not arrive in time",
            Self::NotAWebsocket => "this endpoint takes a WebSocket upgrade (version 13)",
            Self::TooManyStreams => "too many open streams for this user; close one first",
            Self::StreamTakenOver => "another request now reads this completion",
            Self::AnswerExpired => "the answer is no longer kept; ask again",
            Self::InvalidParameter => "a field of the request is not valid",
            Self::ModelNotFound => "no such model here",
            Self::ModelRefused => "the model refused the request",
            Self::TooManyRooms => "you are in as many rooms as a user may be; leave one first",
            Self::Internal => "internal error",
        }
    }

    /// The HTTP status that goes with this code on the HTTP API.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::InvalidFrame
            | Self::UnknownType
            | Self::InvalidId
            | Self::EmptyText
            | Self::BinaryNotSupported
            | Self::InvalidText
            | Self::InvalidQuery
            | Self::InvalidParameter
            | Self::ModelRefused => 400,
            Self::MissingToken | Self::InvalidToken => 401,
            Self::OriginNotAllowed | Self::GuestSessionsDisabled | Self::InvalidRoomToken => 403,
            Self::NotAMember | Self::NotFound | Self::RoomsDisabled | Self::ModelNotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::NotAWebsocket => 426,
            Self::NothingToCancel | Self::IdTaken | Self::StreamTakenOver | Self::TooManyRooms => {
                409
            }
            Self::AnswerExpired => 410,
            Self::TextTooLong => 413,
            Self::TooManySockets
            | Self::RateLimited
            | Self::TooManyPending
            | Self::TooManyStreams => 429,
            Self::RequestFailed | Self::Internal => 500,
            Self::ModelFailed | Self::AnswerRestarted => 502,
            Self::BrokerUnavailable
            | Self::PublishRejected
            | Self::GatewayFull
            | Self::RoomsUnavailable => 503,
            Self::PublishTimeout => 504,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidFrame => "invalid_frame",
            Self::UnknownType => "unknown_type",
            Self::InvalidId => "invalid_id",
            Self::EmptyText => "empty_text",
            Self::TextTooLong => "text_too_long",
            Self::BinaryNotSupported => "binary_not_supported",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::PublishRejected => "publish_rejected",
            Self::PublishTimeout => "publish_timeout",
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::OriginNotAllowed => "origin_not_allowed",
            Self::GuestSessionsDisabled => "guest_sessions_disabled",
            Self::TooManySockets => "too_many_sockets",
            Self::GatewayFull => "gateway_full",
            Self::RateLimited => "rate_limited",
            Self::RequestFailed => "request_failed",
            Self::NothingToCancel => "nothing_to_cancel",
            Self::ModelFailed => "model_failed",
            Self::NotAMember => "not_a_member",
            Self::InvalidRoomToken => "invalid_room_token",
            Self::RoomsUnavailable => "rooms_unavailable",
            Self::RoomsDisabled => "rooms_disabled",
            Self::AnswerRestarted => "answer_restarted",
            Self::InvalidText => "invalid_text",
            Self::TooManyPending => "too_many_pending",
            Self::InvalidQuery => "invalid_query",
            Self::IdTaken => "id_taken",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::NotAWebsocket => "not_a_websocket",
            Self::TooManyStreams => "too_many_streams",
            Self::StreamTakenOver => "stream_taken_over",
            Self::AnswerExpired => "answer_expired",
            Self::InvalidParameter => "invalid_parameter",
            Self::ModelNotFound => "model_not_found",
            Self::ModelRefused => "model_refused",
            Self::TooManyRooms => "too_many_rooms",
            Self::Internal => "internal",
        }
    }

    /// Every code, for documentation checks and exhaustive tests.
    pub const ALL: [ErrorCode; 41] = [
        Self::InvalidJson,
        Self::InvalidFrame,
        Self::UnknownType,
        Self::InvalidId,
        Self::EmptyText,
        Self::TextTooLong,
        Self::BinaryNotSupported,
        Self::BrokerUnavailable,
        Self::PublishRejected,
        Self::PublishTimeout,
        Self::MissingToken,
        Self::InvalidToken,
        Self::OriginNotAllowed,
        Self::GuestSessionsDisabled,
        Self::TooManySockets,
        Self::GatewayFull,
        Self::RateLimited,
        Self::RequestFailed,
        Self::NothingToCancel,
        Self::ModelFailed,
        Self::NotAMember,
        Self::InvalidRoomToken,
        Self::RoomsUnavailable,
        Self::RoomsDisabled,
        Self::AnswerRestarted,
        Self::InvalidText,
        Self::TooManyPending,
        Self::InvalidQuery,
        Self::IdTaken,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::NotAWebsocket,
        Self::TooManyStreams,
        Self::StreamTakenOver,
        Self::AnswerExpired,
        Self::InvalidParameter,
        Self::ModelNotFound,
        Self::ModelRefused,
        Self::TooManyRooms,
        Self::Internal,
    ];
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// WebSocket close codes the gateway uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum CloseCode {
    /// 1000: the client asked to close.
    Normal = 1000,
    /// 1001: the gateway is shutting down; reconnect (to any gateway).
    GoingAway = 1001,
    /// 1002: the client broke the WebSocket protocol (an unmasked frame,
    /// reserved bits or opcodes, a bad close code, an oversized control
    /// frame).
    ProtocolError = 1002,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidPayload = 1007,
    /// 1008: the client kept sending after being rate limited.
    PolicyViolation = 1008,
    /// 1009: a WebSocket message was larger than the gateway accepts.
    MessageTooBig = 1009,
    /// 4000: the client read too slowly and its outbound buffer filled up;
    /// reconnect — undelivered replies are still in the reply queue.
    SlowConsumer = 4000,
    /// 4001: the token expired; get a new one before reconnecting.
    TokenExpired = 4001,
    /// 4002: nothing heard from the client (not even a pong) for the idle
    /// timeout; the connection is presumed dead.
    IdleTimeout = 4002,
}

impl CloseCode {
    pub fn code(self) -> u16 {
        self as u16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_matches_the_serialized_form() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
