//! One user's joining and leaving of one room, one at a time.

use super::errors::store_error;
use crate::store::Store;
use protocol::{ErrorCode, RoomId, UserId};

/// Locks striped by (user, room): bounded, whatever the number of rooms.
pub struct Membership {
    stripes: Vec<tokio::sync::Mutex<()>>,
    hasher: std::hash::RandomState,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Membership")
    }
}

impl Membership {
    pub fn new() -> Self {
        Self {
            stripes: (0..64).map(|_| tokio::sync::Mutex::new(())).collect(),
            hasher: std::hash::RandomState::new(),
        }
    }

    pub async fn of(&self, user: &UserId, room: RoomId) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::BuildHasher;
        let stripe = self.hasher.hash_one((user, room)) as usize % self.stripes.len();
        self.stripes[stripe].lock().await
    }
}

/// `too_many_rooms` when `user` belongs to `max` rooms already (joining
/// one they are in is always fine).
pub async fn room_for_one_more(
    store: &Store,
    user: &UserId,
    joining: Option<RoomId>,
    max: usize,
) -> Result<(), ErrorCode> {
    let theirs = store.rooms_of(user).await.map_err(store_error)?;
    let again = joining.is_some_and(|room| theirs.iter().any(|r| r.id == room));
    if !again && theirs.len() >= max {
        return Err(ErrorCode::TooManyRooms);
    }
    Ok(())
}
