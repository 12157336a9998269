//! One user's joining and leaving of one room, one at a time.

use protocol::{RoomId, UserId};

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
