//! Rooms: conversations shared by several users.
//!
//! A room is stored in PostgreSQL ([`store`]): its members and its messages,
//! each with the room's sequence number, so every member sees one order and
//! everything survives restarts. Delivery needs no second mechanism: each
//! member's reply queue is bound to the responses exchange with the room's
//! key `room.<id>` (on joining, and again whenever the member's consumer is
//! set up, since an expired queue loses its bindings), and a message sent to
//! the room is published once with that key. Members offline get it from
//! their queue when they come back (within its lifetime; after that, from
//! `GET /api/rooms/{id}/messages`). A message starting with `@assistant`
//! also goes to `chat_queue`, and the responder's answer is published to the
//! room's key: every member sees it stream.
//!
//! Invitations are signed tokens (the per-room tokens of the NestJS design),
//! not rows: whoever holds one may join until it expires.

pub mod store;

use crate::AppState;
use crate::http::{ApiError, authenticate};
use crate::ingress;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use broker::{PublishError, properties, topology};
use protocol::amqp::{self, ReceiptState, Role, RoomMessage, RoomReceipt, Turn};
use protocol::topology::Names;
use protocol::trace::TraceParent;
use protocol::{ErrorCode, MessageId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
pub use store::{RoomSummary, Store, StoreError, StoredMessage};
use tracing::{debug, warn};

/// A message to the room that starts with this is also a question to the
/// assistant, answered to the whole room.
pub const ASSISTANT_MENTION: &str = "@assistant";
/// Earlier room messages the assistant sees as context.
const ASSISTANT_CONTEXT: u64 = 10;
/// Longest room name, in characters.
const MAX_NAME_CHARS: usize = 100;
/// Most messages one history request returns.
const MAX_HISTORY: u32 = 500;

fn store_error(error: StoreError) -> ErrorCode {
    match error {
        StoreError::NoSuchRoom => ErrorCode::NotAMember,
        other => {
            warn!(error = %other, "rooms database failed");
            ErrorCode::RoomsUnavailable
        }
    }
}

fn refused(code: ErrorCode) -> ApiError {
    ApiError::Message(code, ingress::describe(code).into(), None)
}

fn rooms_store(state: &AppState) -> Result<&Store, ErrorCode> {
    state.rooms.as_deref().ok_or(ErrorCode::RoomsUnavailable)
}

/// Routes the room into `user`'s reply queue (declared first if need be).
async fn bind(state: &AppState, user: &UserId, room: RoomId, bound: bool) -> Result<(), ErrorCode> {
    let limit = state.settings.amqp.publish_timeout();
    if bound && !state.replies.ensure_reply_queue(user, limit).await {
        return Err(ErrorCode::BrokerUnavailable);
    }
    let session = state.broker.current().ok_or(ErrorCode::BrokerUnavailable)?;
    let names = state.broker.names();
    let work = async {
        let channel = session.open_channel().await?;
        let done = topology::bind_room(&channel, names, user, &room, bound).await;
        let _ = channel.close(200, "bound".into()).await;
        done
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            warn!(user_id = %user, room_id = %room, error = %e, "room binding failed");
            Err(ErrorCode::BrokerUnavailable)
        }
        Err(_) => Err(ErrorCode::BrokerUnavailable),
    }
}

/// Sends message `id` to `room` for `user` (a socket's `send` with a
/// `room_id`, or the REST one): stored with the room's next number,
/// published once to every member's queue, and passed to the assistant when
/// it starts with `@assistant`. `Ok` means it is stored and confirmed.
pub async fn send(
    state: &AppState,
    user: &UserId,
    room: RoomId,
    id: MessageId,
    text: String,
    trace: &TraceParent,
) -> Result<(), ErrorCode> {
    let store = rooms_store(state)?;
    if !store.is_member(room, user).await.map_err(store_error)? {
        return Err(ErrorCode::NotAMember);
    }
    let sent_at_ms = properties::now_ms();
    let seq = store
        .append(room, id, user, &text, sent_at_ms)
        .await
        .map_err(store_error)?;
    let message = RoomMessage {
        v: amqp::SCHEMA_VERSION,
        room_id: room,
        seq,
        id,
        user_id: user.clone(),
        text: text.clone(),
        sent_at_ms,
    };
    let session = state.broker.current().ok_or(ErrorCode::BrokerUnavailable)?;
    let published = session
        .publisher()
        .publish(
            &state.broker.names().responses_exchange(),
            &Names::room_routing_key(&room),
            &amqp::encode(&message),
            properties::room_message(&message, trace),
        )
        .await;
    match published {
        // No member has a queue right now: it is stored; they read it later.
        Ok(()) | Err(PublishError::Unroutable { .. }) => {}
        Err(e) => {
            warn!(room_id = %room, error = %e, "room message not published");
            return Err(match e {
                PublishError::Timeout(_) => ErrorCode::PublishTimeout,
                PublishError::Nacked => ErrorCode::PublishRejected,
                _ => ErrorCode::BrokerUnavailable,
            });
        }
    }
    metrics::counter!("switchboard_gateway_room_messages_total").increment(1);
    debug!(room_id = %room, seq, "room message sent");
    if text.trim_start().starts_with(ASSISTANT_MENTION) {
        let earlier = store
            .history(
                room,
                seq.saturating_sub(ASSISTANT_CONTEXT + 1),
                ASSISTANT_CONTEXT as u32,
            )
            .await
            .unwrap_or_default();
        let context = earlier
            .into_iter()
            .filter(|m| m.seq < seq)
            .map(|m| Turn {
                role: Role::User,
                text: format!("{}: {}", m.from, m.text),
            })
            .collect();
        ingress::submit(&state.broker, user, id, text, context, Some(room), trace).await?;
        state.replies.expect_answer(user, id);
    }
    Ok(())
}

/// Tells the room that `user` has message `seq` (`delivered`) or has read
/// up to it (`read`). Best effort: receipts are advisory.
pub async fn receipt(state: &AppState, user: &UserId, room: RoomId, seq: u64, how: ReceiptState) {
    let Some(session) = state.broker.current() else {
        return;
    };
    let receipt = RoomReceipt {
        v: amqp::SCHEMA_VERSION,
        room_id: room,
        user_id: user.clone(),
        seq,
        state: how,
    };
    let trace = TraceParent::new_root();
    let published = session
        .publisher()
        .publish_best_effort(
            &state.broker.names().responses_exchange(),
            &Names::room_routing_key(&room),
            &amqp::encode(&receipt),
            properties::room_receipt(&receipt, &trace),
        )
        .await;
    if let Err(e) = published {
        debug!(room_id = %room, error = %e, "receipt not published");
    }
}

/// A socket's `read`: a member saw the room up to `seq`.
pub async fn read(
    state: &AppState,
    user: &UserId,
    room: RoomId,
    seq: u64,
) -> Result<(), ErrorCode> {
    let store = rooms_store(state)?;
    if !store.is_member(room, user).await.map_err(store_error)? {
        return Err(ErrorCode::NotAMember);
    }
    receipt(state, user, room, seq, ReceiptState::Read).await;
    Ok(())
}

/// Rebinds every room of `user` to their reply queue (called whenever the
/// queue is set up: an expired queue lost its bindings). Best effort.
pub async fn rooms_to_bind(store: &Store, user: &UserId) -> Vec<RoomId> {
    match store.rooms_of(user).await {
        Ok(rooms) => rooms.into_iter().map(|r| r.id).collect(),
        Err(e) => {
            warn!(user_id = %user, error = %e, "could not read the user's rooms; their room messages wait for the next set-up");
            Vec::new()
        }
    }
}

// --- HTTP

#[derive(Debug, Deserialize)]
pub struct CreateRoom {
    pub name: String,
}

/// A room and how to invite others to it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomCreated {
    pub id: RoomId,
    pub name: String,
    pub invite_token: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoomList {
    pub rooms: Vec<RoomSummary>,
}

#[derive(Debug, Deserialize)]
pub struct JoinRoom {
    pub invite_token: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Member {
    pub user_id: UserId,
    /// Has a socket open now (their reply queue has a consumer).
    pub online: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RoomDetails {
    pub id: RoomId,
    pub name: String,
    pub members: Vec<Member>,
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

fn invite(state: &AppState, room: RoomId) -> Result<String, ApiError> {
    let ttl = Duration::from_secs(state.settings.rooms.invite_ttl_secs);
    state.tokens.issue_room_invite(room, ttl).map_err(|e| {
        warn!(error = %e, "cannot issue a room invitation");
        ApiError::Internal
    })
}

fn parse_room(raw: &str) -> Result<RoomId, ApiError> {
    RoomId::parse(raw).map_err(|_| {
        ApiError::Message(
            ErrorCode::InvalidId,
            "the room id must be a UUID".into(),
            None,
        )
    })
}

/// `POST /api/rooms {"name"}`: a new room, with its creator as member.
pub async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<CreateRoom>,
) -> Result<(StatusCode, Json<RoomCreated>), ApiError> {
    let user = authenticate(&state, &headers, None)?.user;
    let name = body.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        return Err(ApiError::Message(
            ErrorCode::InvalidFrame,
            format!("a room needs a name of 1 to {MAX_NAME_CHARS} characters"),
            None,
        ));
    }
    let store = rooms_store(&state).map_err(refused)?;
    let id = store
        .create(name, &user)
        .await
        .map_err(|e| refused(store_error(e)))?;
    bind(&state, &user, id, true).await.map_err(refused)?;
    Ok((
        StatusCode::CREATED,
        Json(RoomCreated {
            id,
            name: name.to_owned(),
            invite_token: invite(&state, id)?,
        }),
    ))
}

/// `GET /api/rooms`: the caller's rooms.
pub async fn list(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<RoomList>, ApiError> {
    let user = authenticate(&state, &headers, None)?.user;
    let store = rooms_store(&state).map_err(refused)?;
    let rooms = store
        .rooms_of(&user)
        .await
        .map_err(|e| refused(store_error(e)))?;
    Ok(Json(RoomList { rooms }))
}

/// `POST /api/rooms/join {"invite_token"}`.
pub async fn join(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(body): Json<JoinRoom>,
) -> Result<Json<RoomSummary>, ApiError> {
    let user = authenticate(&state, &headers, None)?.user;
    let room = state
        .tokens
        .verify_room_invite(&body.invite_token)
        .map_err(|_| refused(ErrorCode::InvalidRoomToken))?;
    let store = rooms_store(&state).map_err(refused)?;
    let summary = store
        .join(room, &user)
        .await
        .map_err(|e| refused(store_error(e)))?;
    bind(&state, &user, room, true).await.map_err(refused)?;
    Ok(Json(summary))
}

/// `POST /api/rooms/{id}/leave`.
pub async fn leave(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<StatusCode, ApiError> {
    let user = authenticate(&state, &headers, None)?.user;
    let room = parse_room(&room)?;
    let store = rooms_store(&state).map_err(refused)?;
    if !store
        .leave(room, &user)
        .await
        .map_err(|e| refused(store_error(e)))?
    {
        return Err(refused(ErrorCode::NotAMember));
    }
    // The queue may be gone already (expired): nothing left to unbind then.
    let _ = bind(&state, &user, room, false).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/rooms/{id}`: members (with who is online) and an invitation.
pub async fn details(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<RoomDetails>, ApiError> {
    let user = authenticate(&state, &headers, None)?.user;
    let room = parse_room(&room)?;
    let store = rooms_store(&state).map_err(refused)?;
    let (name, members) = store
        .room(room)
        .await
        .map_err(|e| refused(store_error(e)))?;
    if !members.contains(&user) {
        return Err(refused(ErrorCode::NotAMember));
    }
    let mut listed = Vec::with_capacity(members.len());
    for member in members {
        let online = state.replies.is_online(&member).await;
        listed.push(Member {
            user_id: member,
            online,
        });
    }
    Ok(Json(RoomDetails {
        id: room,
        name,
        members: listed,
        invite_token: invite(&state, room)?,
    }))
}

/// `GET /api/rooms/{id}/messages?after=<seq>&limit=<n>`: stored messages.
pub async fn history(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(query): Query<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
    let user = authenticate(&state, &headers, None)?.user;
    let room = parse_room(&room)?;
    let store = rooms_store(&state).map_err(refused)?;
    if !store
        .is_member(room, &user)
        .await
        .map_err(|e| refused(store_error(e)))?
    {
        return Err(refused(ErrorCode::NotAMember));
    }
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_HISTORY);
    let messages = store
        .history(room, query.after, limit)
        .await
        .map_err(|e| refused(store_error(e)))?;
    Ok(Json(History { messages }))
}
