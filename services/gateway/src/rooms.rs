//! Rooms: conversations shared by several users.
//!
//! A room is kept in the gateway's database ([`crate::store`]): its members
//! and its messages, each with the room's sequence number, so every member
//! sees one order and everything survives restarts. Delivery needs no
//! second mechanism: each member's reply queue is bound to the responses
//! exchange with the room's key `room.<id>` (on joining, and again whenever
//! the member's consumer is set up, since an expired queue loses its
//! bindings), and a message sent to the room is published once with that
//! key. Members offline get it from their queue when they come back (within
//! its lifetime; after that, from the history). A message starting with
//! `@assistant` is also a question to the assistant
//! ([`Posted::AlsoToAssistant`]), answered to the room's key: every member
//! sees it stream.
//!
//! Invitations are signed tokens (the per-room tokens of the NestJS design),
//! not rows: whoever holds one may join until it expires.
//!
//! This module checks membership and keeps the database and the queues'
//! bindings in step; it knows nothing of HTTP or sockets.

mod errors;
mod membership;

use crate::auth::Tokens;
use crate::replies::ReplyQueues;
use crate::store::{RoomSummary, Store, StoredMessage};
use broker::lapin::BasicProperties;
use broker::{Broker, PublishError, properties};
use errors::store_error;
use membership::Membership;
use protocol::amqp::{self, ReceiptState, Role, RoomMessage, RoomReceipt, Turn};
use protocol::topology::Names;
use protocol::trace::TraceParent;
use protocol::{ErrorCode, MessageId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

/// A message to the room that starts with this is also a question to the
/// assistant, answered to the whole room.
pub const ASSISTANT_MENTION: &str = "@assistant";
/// Earlier room messages the assistant sees as context.
const ASSISTANT_CONTEXT: u64 = 10;

/// A room and how to invite others to it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomCreated {
    pub id: RoomId,
    pub name: String,
    pub invite_token: String,
}

/// A member of a room.
#[derive(Debug, Serialize, Deserialize)]
pub struct Member {
    pub user_id: UserId,
    /// Has a socket open now (their reply queue has a consumer).
    pub online: bool,
}

/// A room as its members see it.
#[derive(Debug, Serialize, Deserialize)]
pub struct RoomDetails {
    pub id: RoomId,
    pub name: String,
    pub members: Vec<Member>,
    pub invite_token: String,
}

/// What became of a message posted to a room.
#[derive(Debug)]
pub enum Posted {
    /// Stored and published to the members.
    ToMembers,
    /// That, and it asks the assistant: send it on with this context (the
    /// room's last messages).
    AlsoToAssistant { context: Vec<Turn> },
}

/// The rooms of this gateway; off when no database is configured. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Rooms {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    /// Rooms, members, messages.
    store: Arc<Store>,
    /// Publishes room messages and receipts.
    broker: Broker,
    /// Binds members' reply queues to their rooms.
    queues: ReplyQueues,
    /// Signs and checks invitations.
    tokens: Arc<Tokens>,
    /// How long an invitation stays valid.
    invite_ttl: Duration,
    /// Rooms one user may belong to.
    max_rooms: usize,
    /// One user's joining and leaving of one room, one at a time: the
    /// binding follows the membership in the order they were stored (a
    /// join and a leave racing could otherwise store "left" and bind
    /// "joined", a hidden listener).
    membership: Membership,
}

impl Rooms {
    /// Rooms turned off on purpose: every call answers `rooms_disabled`.
    pub fn off() -> Self {
        Self { inner: None }
    }

    pub fn new(
        store: Arc<Store>,
        broker: Broker,
        queues: ReplyQueues,
        tokens: Arc<Tokens>,
        invite_ttl: Duration,
        max_rooms: usize,
    ) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                store,
                broker,
                queues,
                tokens,
                invite_ttl,
                max_rooms,
                membership: Membership::new(),
            })),
        }
    }

    fn on(&self) -> Result<&Inner, ErrorCode> {
        self.inner.as_deref().ok_or(ErrorCode::RoomsDisabled)
    }

    /// A new room named `name` (validated by the caller), with `user` as
    /// its first member.
    pub async fn create(&self, user: &UserId, name: &str) -> Result<RoomCreated, ErrorCode> {
        let rooms = self.on()?;
        membership::room_for_one_more(&rooms.store, user, None, rooms.max_rooms).await?;
        let id = rooms.store.create(name, user).await.map_err(store_error)?;
        rooms.bind(user, id, true).await?;
        Ok(RoomCreated {
            id,
            name: name.to_owned(),
            invite_token: rooms.invite(id)?,
        })
    }

    /// The rooms `user` belongs to.
    pub async fn list(&self, user: &UserId) -> Result<Vec<RoomSummary>, ErrorCode> {
        self.on()?.store.rooms_of(user).await.map_err(store_error)
    }

    /// Makes `user` a member of the room `invitation` is for.
    pub async fn join(&self, user: &UserId, invitation: &str) -> Result<RoomSummary, ErrorCode> {
        let rooms = self.on()?;
        let room = rooms
            .tokens
            .verify_room_invite(invitation)
            .map_err(|_| ErrorCode::InvalidRoomToken)?;
        let turn = rooms.membership.of(user, room).await;
        membership::room_for_one_more(&rooms.store, user, Some(room), rooms.max_rooms).await?;
        let summary = rooms.store.join(room, user).await.map_err(store_error)?;
        rooms.bind(user, room, true).await?;
        drop(turn);
        rooms.queues.announce(user, room, true).await;
        Ok(summary)
    }

    /// `user` leaves `room`: its messages stop reaching them.
    pub async fn leave(&self, user: &UserId, room: RoomId) -> Result<(), ErrorCode> {
        let rooms = self.on()?;
        let turn = rooms.membership.of(user, room).await;
        if !rooms.store.leave(room, user).await.map_err(store_error)? {
            return Err(ErrorCode::NotAMember);
        }
        // The queue may be gone already (expired): nothing left to unbind then.
        let _ = rooms.bind(user, room, false).await;
        drop(turn);
        rooms.queues.announce(user, room, false).await;
        Ok(())
    }

    /// Members (with who is online) and a fresh invitation; members only.
    pub async fn details(&self, user: &UserId, room: RoomId) -> Result<RoomDetails, ErrorCode> {
        let rooms = self.on()?;
        let (name, members) = rooms.store.room(room).await.map_err(store_error)?;
        if !members.contains(user) {
            return Err(ErrorCode::NotAMember);
        }
        let mut listed = Vec::with_capacity(members.len());
        for member in members {
            let online = rooms.queues.is_online(&member).await;
            listed.push(Member {
                user_id: member,
                online,
            });
        }
        Ok(RoomDetails {
            id: room,
            name,
            members: listed,
            invite_token: rooms.invite(room)?,
        })
    }

    /// Stored messages after `after`, oldest first, at most `limit`;
    /// members only.
    pub async fn history(
        &self,
        user: &UserId,
        room: RoomId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, ErrorCode> {
        let rooms = self.on()?;
        rooms.member(user, room).await?;
        rooms
            .store
            .history(room, after, limit)
            .await
            .map_err(store_error)
    }

    /// Posts message `id` of `user` to `room`: stored with the room's next
    /// number, published once to every member's queue. `Ok` means stored
    /// and confirmed.
    pub async fn post(
        &self,
        user: &UserId,
        room: RoomId,
        id: MessageId,
        text: &str,
        trace: &TraceParent,
    ) -> Result<Posted, ErrorCode> {
        let rooms = self.on()?;
        rooms.member(user, room).await?;
        let sent_at_ms = properties::now_ms();
        let stored = rooms
            .store
            .append(room, id, user, text, sent_at_ms)
            .await
            .map_err(store_error)?;
        let seq = stored.seq;
        let message = RoomMessage {
            v: amqp::SCHEMA_VERSION,
            room_id: room,
            seq,
            id,
            user_id: user.clone(),
            text: stored.text,
            sent_at_ms,
        };
        let properties = properties::room_message(&message, trace);
        match rooms
            .to_room(room, &amqp::encode(&message), properties, true)
            .await
        {
            // No member has a queue right now: it is stored; they read it
            // later. Refused (nack): some member's queue is full — the
            // others have it, and that member reads it from the history;
            // one member must not break the room for everyone.
            Ok(()) | Err(PublishError::Unroutable { .. } | PublishError::Nacked) => {}
            Err(e) => {
                warn!(room_id = %room, error = %e, "room message not published");
                return Err(e.code());
            }
        }
        metrics::counter!("switchboard_gateway_room_messages_total").increment(1);
        debug!(room_id = %room, seq, "room message sent");
        if !message.text.trim_start().starts_with(ASSISTANT_MENTION) {
            return Ok(Posted::ToMembers);
        }
        let earlier = rooms
            .store
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
        Ok(Posted::AlsoToAssistant { context })
    }

    /// Tells the room that `user` has message `seq` (`delivered`). Best
    /// effort: receipts are advisory.
    pub async fn delivered(&self, user: &UserId, room: RoomId, seq: u64) {
        if let Ok(rooms) = self.on() {
            rooms
                .receipt(user, room, seq, ReceiptState::Delivered)
                .await;
        }
    }

    /// A member saw `room` up to `seq`: the room hears it was read.
    pub async fn read(&self, user: &UserId, room: RoomId, seq: u64) -> Result<(), ErrorCode> {
        let rooms = self.on()?;
        rooms.member(user, room).await?;
        rooms.receipt(user, room, seq, ReceiptState::Read).await;
        Ok(())
    }
}

impl Inner {
    async fn member(&self, user: &UserId, room: RoomId) -> Result<(), ErrorCode> {
        match self.store.is_member(room, user).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ErrorCode::NotAMember),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Routes the room into `user`'s reply queue (declared first if need
    /// be), or stops.
    async fn bind(&self, user: &UserId, room: RoomId, bound: bool) -> Result<(), ErrorCode> {
        if bound && !self.queues.ensure(user).await {
            return Err(ErrorCode::BrokerUnavailable);
        }
        self.queues.bind_room(user, room, bound).await
    }

    fn invite(&self, room: RoomId) -> Result<String, ErrorCode> {
        self.tokens
            .issue_room_invite(room, self.invite_ttl)
            .map_err(|e| {
                warn!(error = %e, "cannot issue a room invitation");
                ErrorCode::Internal
            })
    }

    /// Tells the room that `user` has (or has read) message `seq`. Best
    /// effort: receipts are advisory.
    async fn receipt(&self, user: &UserId, room: RoomId, seq: u64, state: ReceiptState) {
        let receipt = RoomReceipt {
            v: amqp::SCHEMA_VERSION,
            room_id: room,
            user_id: user.clone(),
            seq,
            state,
        };
        let properties = properties::room_receipt(&receipt, &TraceParent::new_root());
        let body = amqp::encode(&receipt);
        if let Err(e) = self.to_room(room, &body, properties, false).await {
            debug!(room_id = %room, error = %e, "receipt not published");
        }
    }

    /// Publishes `body` once to `room`'s key, so to every member's queue:
    /// persistent and confirmed, or (advisory) best effort.
    async fn to_room(
        &self,
        room: RoomId,
        body: &[u8],
        properties: BasicProperties,
        confirmed: bool,
    ) -> Result<(), PublishError> {
        let session = self.broker.current().ok_or(PublishError::Disconnected)?;
        let publisher = session.publisher();
        let exchange = self.broker.names().responses_exchange();
        let key = Names::room_routing_key(&room);
        if confirmed {
            publisher.publish(&exchange, &key, body, properties).await
        } else {
            publisher
                .publish_best_effort(&exchange, &key, body, properties)
                .await
        }
    }
}
