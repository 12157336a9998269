//! Rooms over HTTP: create, list, join, details, leave, history. The
//! requests are checked here; what they do is [`crate::rooms`].

use super::body::{JsonBody, QueryParams};
use super::context::HttpContext;
use super::error::ApiError;
use super::extract::Authenticated;
use crate::rooms::{RoomCreated, RoomDetails, Rooms};
use crate::store::{RoomSummary, StoredMessage};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use protocol::{ErrorCode, RoomId};
use serde::{Deserialize, Serialize};

/// Longest room name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// Most messages one history request returns.
const MAX_HISTORY: u32 = 500;

#[derive(Debug, Deserialize)]
pub struct CreateRoom {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoomList {
    pub rooms: Vec<RoomSummary>,
}

#[derive(Debug, Deserialize)]
pub struct JoinRoom {
    pub invite_token: String,
}

#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    #[serde(default)]
    pub after: u64,
    pub limit: Option<u32>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct History {
    pub messages: Vec<StoredMessage>,
}

pub fn router() -> Router<HttpContext> {
    Router::new()
        .route("/api/rooms", get(list).post(create))
        .route("/api/rooms/join", post(join))
        .route("/api/rooms/{id}", get(details))
        .route("/api/rooms/{id}/leave", post(leave))
        .route("/api/rooms/{id}/messages", get(history))
}

fn room_id(raw: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(raw)
        .map_err(|_| ApiError::new(ErrorCode::InvalidId, "the room id must be a UUID"))
}

/// Whether `c` shows: not white space, nor a zero-width or direction mark
/// (a name of those only would be an invisible room).
fn visible(c: char) -> bool {
    !c.is_whitespace()
        && !matches!(c, '\u{00AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `POST /api/rooms {"name"}`: a new room, with its creator as member.
async fn create(
    State(rooms): State<Rooms>,
    Authenticated(verified): Authenticated,
    JsonBody(body): JsonBody<CreateRoom>,
) -> Result<(StatusCode, Json<RoomCreated>), ApiError> {
    let name = body.name.trim();
    if !name.chars().any(visible) || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::new(
            ErrorCode::InvalidFrame,
            format!("a room needs a name of 1 to {MAX_NAME_CHARS} characters"),
        ));
    }
    if !protocol::ws::text_allowed(name) {
        return Err(ErrorCode::InvalidText.into());
    }
    let created = rooms.create(&verified.user, name).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /api/rooms`: the caller's rooms.
async fn list(
    State(rooms): State<Rooms>,
    Authenticated(verified): Authenticated,
) -> Result<Json<RoomList>, ApiError> {
    let rooms = rooms.list(&verified.user).await?;
    Ok(Json(RoomList { rooms }))
}

/// `POST /api/rooms/join {"invite_token"}`.
async fn join(
    State(rooms): State<Rooms>,
    Authenticated(verified): Authenticated,
    JsonBody(body): JsonBody<JoinRoom>,
) -> Result<Json<RoomSummary>, ApiError> {
    Ok(Json(rooms.join(&verified.user, &body.invite_token).await?))
}

/// `POST /api/rooms/{id}/leave`.
async fn leave(
    State(rooms): State<Rooms>,
    Authenticated(verified): Authenticated,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    rooms.leave(&verified.user, room_id(&room)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/rooms/{id}`: members (with who is online) and an invitation.
async fn details(
    State(rooms): State<Rooms>,
    Authenticated(verified): Authenticated,
    Path(room): Path<String>,
) -> Result<Json<RoomDetails>, ApiError> {
    Ok(Json(rooms.details(&verified.user, room_id(&room)?).await?))
}

/// `GET /api/rooms/{id}/messages?after=<seq>&limit=<n>`: stored messages.
async fn history(
    State(rooms): State<Rooms>,
    Authenticated(verified): Authenticated,
    Path(room): Path<String>,
    QueryParams(query): QueryParams<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_HISTORY).contains(&limit) {
        return Err(ApiError::new(
            ErrorCode::InvalidQuery,
            format!("`limit` must be 1 to {MAX_HISTORY}"),
        ));
    }
    let messages = rooms
        .history(&verified.user, room_id(&room)?, query.after, limit)
        .await?;
    Ok(Json(History { messages }))
}
