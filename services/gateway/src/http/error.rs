//! The HTTP API's one error type. An error is a stable code
//! (docs/protocol.md §3) — which fixes its HTTP status
//! ([`ErrorCode::http_status`]) and its usual text
//! ([`ErrorCode::describe`]) — the text itself when there is more to say,
//! and the message concerned, if any. A socket's `error` frame carries the
//! same code and text. Internal causes are logged, never sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use protocol::ws::FrameError;
use protocol::{ErrorCode, MessageId};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::fmt::Display;
use std::time::Duration;
use tracing::error;

/// A refused request.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    id: Option<MessageId>,
    /// When to try again (`Retry-After`), for a refusal that passes.
    retry_after: Option<Duration>,
}

/// The body of every HTTP error: the same `code`s as the socket's `error`
/// frames (docs/protocol.md §3).
#[derive(Serialize, Deserialize, Debug)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// The message concerned, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<MessageId>,
    /// Whether sending the same request again may succeed.
    pub retryable: bool,
}

impl ApiError {
    /// `code` with a text of its own.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            id: None,
            retry_after: None,
        }
    }

    /// Tells the client when to try again.
    pub fn retry_after(mut self, wait: Duration) -> Self {
        self.retry_after = Some(wait);
        self
    }

    /// When the client was told to try again, if it was.
    pub fn wait(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The error concerns message `id`.
    pub fn about(mut self, id: MessageId) -> Self {
        self.id = Some(id);
        self
    }

    /// A fault of ours: `cause` goes to the log, the client learns nothing
    /// more than `internal`.
    pub fn internal(what: &str, cause: impl Display) -> Self {
        error!(error = %cause, "{what}");
        ErrorCode::Internal.into()
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What a person reads.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<ErrorCode> for ApiError {
    fn from(code: ErrorCode) -> Self {
        Self::new(code, code.describe())
    }
}

impl From<FrameError> for ApiError {
    fn from(e: FrameError) -> Self {
        Self {
            code: e.code,
            message: e.message.into(),
            id: e.id,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = self.code;
        metrics::counter!("switchboard_gateway_errors_total", "code" => code.as_str()).increment(1);
        let status =
            StatusCode::from_u16(code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = ErrorBody {
            code,
            message: self.message.into_owned(),
            id: self.id,
            retryable: code.is_retryable(),
        };
        let mut response = (status, Json(body)).into_response();
        set_retry_after(&mut response, self.retry_after);
        response
    }
}

/// `Retry-After` in whole seconds (at least one), when there is a wait.
pub fn set_retry_after(response: &mut Response, wait: Option<Duration>) {
    if let Some(wait) = wait {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(axum::http::header::RETRY_AFTER, seconds.max(1).into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_and_text_come_from_the_code() {
        let response = ApiError::from(ErrorCode::NothingToCancel).into_response();
        assert_eq!(response.status(), StatusCode::CONFLICT);
        let response = ApiError::new(ErrorCode::TooManySockets, "x").into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        for code in ErrorCode::ALL {
            assert!(StatusCode::from_u16(code.http_status()).is_ok(), "{code}");
            assert!(!code.describe().is_empty(), "{code}");
        }
    }
}
