//! REST ingress: `POST /api/messages` sends a message through the same path
//! as a socket's `send` (same validation, same codes, same confirmed
//! publish to `chat_queue`) and answers `202` once RabbitMQ has confirmed
//! it; the answer streams to the user's sockets as usual, or waits in their
//! reply queue for their next one. `POST /api/messages/{id}/cancel` is the
//! socket's `cancel`. `GET /api/openapi.json` describes the HTTP API.

use super::body::body_refusal;
use super::context::{HttpContext, MessageLimits};
use super::error::ApiError;
use super::extract::Authenticated;
use crate::messages::{Messages, Via};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::amqp::MessageStatus;
use protocol::ws::{FrameLimits, Message};
use protocol::{ErrorCode, MessageId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The OpenAPI document of the HTTP API (`docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../../docs/openapi.json");

/// `202` for `POST /api/messages`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Queued {
    pub id: MessageId,
    pub trace_id: String,
}

/// `202` for `POST /api/messages/{id}/cancel`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Cancelling {
    pub id: MessageId,
    pub status: MessageStatus,
}

pub fn router(limits: MessageLimits) -> Router<HttpContext> {
    Router::new()
        .route(
            "/api/messages",
            post(send).layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        )
        .route("/api/messages/{id}/cancel", post(cancel))
        .route("/api/openapi.json", get(openapi))
}

/// `POST /api/messages` with `{"text": "…", "id": "<uuid, optional>"}`.
/// Resending with the same `id` is safe (the answer is shown once).
async fn send(
    State(messages): State<Messages>,
    State(limits): State<MessageLimits>,
    Authenticated(verified): Authenticated,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    let body = body.map_err(body_refusal)?;
    let message = decode_message(&body, &limits.frames)?;
    let id = message.id;
    let accepted = messages
        .send(verified.user, message, Via::Rest)
        .await
        .map_err(|code| ApiError::from(code).about(id))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Queued {
            id,
            trace_id: accepted.trace_id,
        }),
    ))
}

/// The body of `POST /api/messages`, validated exactly as a socket's `send`
/// frame is (it is one, without `type`; a missing `id` is chosen here).
fn decode_message(body: &[u8], limits: &FrameLimits) -> Result<Message, ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(ErrorCode::InvalidJson, format!("not valid JSON: {e}")))?;
    let Value::Object(fields) = value else {
        return Err(ApiError::new(
            ErrorCode::InvalidFrame,
            "the body must be a JSON object",
        ));
    };
    Ok(Message::from_fields(
        &fields,
        limits,
        Some(MessageId::new_random()),
    )?)
}

/// `POST /api/messages/{id}/cancel`: the socket's `cancel`.
async fn cancel(
    State(messages): State<Messages>,
    Authenticated(verified): Authenticated,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Cancelling>), ApiError> {
    let id = MessageId::parse(&id)
        .map_err(|_| ApiError::new(ErrorCode::InvalidId, "`id` must be a UUID"))?;
    messages
        .cancel(&verified.user, id)
        .await
        .map_err(|code| ApiError::from(code).about(id))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Cancelling {
            id,
            status: MessageStatus::Cancelling,
        }),
    ))
}

/// `GET /api/openapi.json`.
async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}
