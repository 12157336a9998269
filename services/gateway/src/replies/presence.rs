//! Presence in rooms, pushed: when a user comes online (their reply queue
//! gets its first consumer: a socket somewhere), goes offline (the last
//! one goes), joins or leaves a room, every member of the room is told
//! through the room's key — one advisory, transient message per room,
//! into every member's queue, whichever gateway holds their sockets.

use super::context::Context;
use broker::{PublishError, properties};
use protocol::amqp::{self, RoomPresence};
use protocol::topology::Names;
use protocol::{RoomId, UserId};
use tracing::debug;

/// Tells `rooms` that `user` is (still) a member or not, online or not.
/// Best effort: presence is advisory, and a member who misses it sees the
/// right list the next time they open the room.
pub async fn announce(
    context: &Context,
    user: &UserId,
    rooms: impl IntoIterator<Item = RoomId>,
    member: bool,
    online: bool,
) {
    for room in rooms {
        let presence = RoomPresence {
            v: amqp::SCHEMA_VERSION,
            room_id: room,
            user_id: user.clone(),
            member,
            online,
        };
        if let Err(e) = publish(context, &presence).await {
            debug!(room_id = %room, user_id = %user, error = %e, "presence not published");
        }
    }
}

async fn publish(context: &Context, presence: &RoomPresence) -> Result<(), PublishError> {
    let session = context.broker.current().ok_or(PublishError::Disconnected)?;
    let exchange = context.broker.names().responses_exchange();
    let key = Names::room_routing_key(&presence.room_id);
    session
        .publisher()
        .publish_best_effort(
            &exchange,
            &key,
            &amqp::encode(presence),
            properties::room_presence(presence),
        )
        .await
}

/// The rooms `user` belongs to, for an announcement; none when rooms are
/// off or the store cannot say.
pub async fn rooms_of(context: &Context, user: &UserId) -> Vec<RoomId> {
    let Some(store) = &context.store else {
        return Vec::new();
    };
    match store.rooms_of(user).await {
        Ok(rooms) => rooms.into_iter().map(|room| room.id).collect(),
        Err(e) => {
            debug!(user_id = %user, error = %e, "rooms unknown; presence not announced");
            Vec::new()
        }
    }
}
