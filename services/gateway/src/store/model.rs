//! What the rooms store keeps and how it fails, whichever database keeps it.

use protocol::{MessageId, RoomId, UserId};

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database's worker thread is gone (it panicked).
    #[error("database worker: {0}")]
    Worker(#[from] tokio::task::JoinError),
    #[error("no such room")]
    NoSuchRoom,
    /// Another member already sent a message with this id in this room.
    #[error("the message id belongs to another member's message")]
    IdTaken,
    #[error("a stored id is invalid: {0}")]
    Corrupt(#[from] protocol::IdError),
}

/// A room as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomSummary {
    pub id: RoomId,
    pub name: String,
}

/// A message as stored: its number, and its text (the first one sent with
/// its id, should it come again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub seq: u64,
    pub text: String,
}

/// A stored room message.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredMessage {
    pub seq: u64,
    pub id: MessageId,
    pub from: UserId,
    pub text: String,
    pub sent_at_ms: u64,
}
