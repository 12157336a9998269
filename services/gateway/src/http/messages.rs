//! REST ingress: `POST /api/messages` sends a message through the same
//! pipeline as a socket's `send` (same validation, same codes, same
//! confirmed publish to `chat_queue`) and answers `202` once RabbitMQ has
//! confirmed it; the answer streams to the user's sockets as usual, or
//! waits in their reply queue for their next one. `POST
//! /api/messages/{id}/cancel` is the socket's `cancel`. `GET
//! /api/openapi.json` describes the HTTP API.

use crate::AppState;
use crate::http::{ApiError, authenticate};
use crate::ingress;
use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use protocol::amqp::{MessageStatus, Turn};
use protocol::ws::{ClientFrame, FrameLimits};
use protocol::{ErrorCode, MessageId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use tracing::{Instrument, debug, info_span};

/// The OpenAPI document of the HTTP API (`docs/openapi.json`).
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

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

/// `POST /api/messages` with `{"text": "…", "id": "<uuid, optional>"}`.
/// Resending with the same `id` is safe (the answer is shown once).
pub async fn send_message(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Queued>), ApiError> {
    let verified = authenticate(&state, &headers, None)?;
    let body = body.map_err(|_| {
        ApiError::Message(
            ErrorCode::TextTooLong,
            format!(
                "the request body is larger than {} bytes",
                state.settings.websocket.max_message_bytes
            ),
            None,
        )
    })?;
    let limits = FrameLimits {
        max_text_chars: state.settings.websocket.max_text_chars,
    };
    let (id, text, context, room) = decode_message(&body, &limits)?;
    let user = verified.user;
    let span = info_span!("request", trace_id = tracing::field::Empty, user_id = %user, message_id = %id, via = "rest");
    let trace = platform::telemetry::start_trace(&span);
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    async {
        let limit = state.settings.amqp.publish_timeout();
        if !state.replies.ensure_reply_queue(&user, limit).await {
            let code = ErrorCode::BrokerUnavailable;
            return Err(ApiError::Message(
                code,
                ingress::describe(code).into(),
                Some(id),
            ));
        }
        let refused = |code| ApiError::Message(code, ingress::describe(code).into(), Some(id));
        match room {
            Some(room) => crate::rooms::send(&state, &user, room, id, text, &trace)
                .await
                .map_err(refused)?,
            None => {
                ingress::submit(&state.broker, &user, id, text, context, None, &trace)
                    .await
                    .map_err(refused)?;
                state.replies.expect_answer(&user, id);
            }
        }
        debug!("message queued");
        Ok((
            StatusCode::ACCEPTED,
            Json(Queued {
                id,
                trace_id: trace.trace_id().to_string(),
            }),
        ))
    }
    .instrument(span)
    .await
}

/// The body of `POST /api/messages`, validated exactly as a socket's `send`
/// frame is (it is one, without `type`; a missing `id` is chosen here).
fn decode_message(
    body: &[u8],
    limits: &FrameLimits,
) -> Result<(MessageId, String, Vec<Turn>, Option<RoomId>), ApiError> {
    let invalid = |code: ErrorCode, message: String| ApiError::Message(code, message, None);
    let mut value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(ErrorCode::InvalidJson, format!("not valid JSON: {e}")))?;
    let Value::Object(fields) = &mut value else {
        return Err(invalid(
            ErrorCode::InvalidFrame,
            "the body must be a JSON object".into(),
        ));
    };
    fields.insert("type".into(), Value::String("send".into()));
    fields
        .entry("id")
        .or_insert_with(|| Value::String(MessageId::new_random().to_string()));
    match ClientFrame::decode(&value.to_string(), limits) {
        Ok(ClientFrame::Send {
            id,
            text,
            context,
            room_id,
        }) => Ok((id, text, context, room_id)),
        Ok(_) => Err(invalid(ErrorCode::InvalidFrame, "not a message".into())),
        Err(e) => Err(ApiError::Message(e.code, e.message, e.id)),
    }
}

/// `POST /api/messages/{id}/cancel`: the socket's `cancel`.
pub async fn cancel_message(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Cancelling>), ApiError> {
    let verified = authenticate(&state, &headers, None)?;
    let id = MessageId::parse(&id)
        .map_err(|_| ApiError::Message(ErrorCode::InvalidId, "`id` must be a UUID".into(), None))?;
    match ingress::cancel(&state, &verified.user, id).await {
        Ok(()) => Ok((
            StatusCode::ACCEPTED,
            Json(Cancelling {
                id,
                status: MessageStatus::Cancelling,
            }),
        )),
        Err(code) => Err(ApiError::Message(
            code,
            ingress::describe(code).into(),
            Some(id),
        )),
    }
}

/// `GET /api/openapi.json`.
pub async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

/// A message this long is never accepted: the body limit for the endpoint.
pub fn body_limit(state: &AppState) -> usize {
    state.settings.websocket.max_message_bytes
}
