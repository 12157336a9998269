//! The gateway's database, where rooms live. Rooms, their members and their
//! messages must outlive every process and every RabbitMQ queue (a member's
//! reply queue expires after 30 minutes offline, and its bindings with it).
//! RabbitMQ carries the messages; the database remembers.
//!
//! Two stores, chosen by `rooms.database_url`: PostgreSQL
//! (`postgres://…`), which several gateways share, and SQLite
//! (`sqlite:path`), a file beside a single gateway — the default, so rooms
//! work with nothing to install.

mod model;
mod postgres;
mod sqlite;
#[cfg(test)]
mod tests;

pub use model::{Appended, RoomSummary, StoreError, StoredMessage};
use postgres::PgStore;
use protocol::{MessageId, RoomId, UserId};
use sqlite::SqliteStore;
use std::path::Path;

/// The rooms database.
#[derive(Debug)]
pub enum Store {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Calls the same method on whichever store this is.
macro_rules! on_store {
    ($self:ident.$method:ident($($arg:expr),*)) => {
        match $self {
            Store::Postgres(store) => store.$method($($arg),*).await,
            Store::Sqlite(store) => store.$method($($arg),*).await,
        }
    };
}

impl Store {
    /// The store `url` names: `postgres://…` or `postgresql://…` (a pool of
    /// at most `max_connections`, connecting lazily: a database that is down
    /// at start only makes room requests fail), or `sqlite:<path>` (the file
    /// is created, with its folder, at once).
    pub fn open(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        if let Some(path) = url.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            return Ok(Self::Sqlite(SqliteStore::open(Path::new(path))?));
        }
        Ok(Self::Postgres(PgStore::new(url, max_connections)?))
    }

    /// What keeps the rooms, for the log (never a password).
    pub fn describe(&self) -> String {
        match self {
            Self::Postgres(_) => "PostgreSQL (rooms.database_url)".into(),
            Self::Sqlite(store) => format!("SQLite at {}", store.path().display()),
        }
    }

    /// Whether several gateways can share this store.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }

    /// A new room with `creator` as its first member.
    pub async fn create(&self, name: &str, creator: &UserId) -> Result<RoomId, StoreError> {
        on_store!(self.create(name, creator))
    }

    /// Makes `user` a member (again: joining twice is harmless).
    pub async fn join(&self, room: RoomId, user: &UserId) -> Result<RoomSummary, StoreError> {
        on_store!(self.join(room, user))
    }

    /// Ends `user`'s membership; whether they were a member.
    pub async fn leave(&self, room: RoomId, user: &UserId) -> Result<bool, StoreError> {
        on_store!(self.leave(room, user))
    }

    pub async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StoreError> {
        on_store!(self.is_member(room, user))
    }

    /// The rooms `user` belongs to, oldest membership first.
    pub async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomSummary>, StoreError> {
        on_store!(self.rooms_of(user))
    }

    /// A room's name and members (in joining order).
    pub async fn room(&self, room: RoomId) -> Result<(String, Vec<UserId>), StoreError> {
        on_store!(self.room(room))
    }

    /// Stores a message and gives it the room's next sequence number; the
    /// same message (same id) sent again keeps its number and first text.
    pub async fn append(
        &self,
        room: RoomId,
        id: MessageId,
        user: &UserId,
        text: &str,
        sent_at_ms: u64,
    ) -> Result<Appended, StoreError> {
        on_store!(self.append(room, id, user, text, sent_at_ms))
    }

    /// Messages after `after`, oldest first, at most `limit`.
    pub async fn history(
        &self,
        room: RoomId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        on_store!(self.history(room, after, limit))
    }
}
