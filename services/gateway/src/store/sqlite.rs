//! Rooms in SQLite: a file beside one gateway, with nothing to install, so
//! rooms work on the default path (`cargo run`). One connection, used on a
//! blocking thread; transactions are `IMMEDIATE`, so sequence numbers are
//! handed out one at a time. Several gateways need PostgreSQL instead (each
//! would have its own file).

use super::model::{Appended, RoomSummary, StoreError, StoredMessage};
use protocol::{MessageId, RoomId, UserId};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA foreign_keys = ON;
CREATE TABLE IF NOT EXISTS switchboard_rooms (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS switchboard_room_members (
    room_id TEXT NOT NULL REFERENCES switchboard_rooms (id) ON DELETE CASCADE,
    user_id TEXT NOT NULL,
    joined_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX IF NOT EXISTS switchboard_room_members_user ON switchboard_room_members (user_id);
CREATE TABLE IF NOT EXISTS switchboard_room_messages (
    room_id TEXT NOT NULL REFERENCES switchboard_rooms (id) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    text TEXT NOT NULL,
    sent_at_ms INTEGER NOT NULL,
    PRIMARY KEY (room_id, seq),
    UNIQUE (room_id, id)
);
";

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The rooms database in a SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    connection: Arc<Mutex<Connection>>,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating it and its folder if need be) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|e| {
                StoreError::Sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
            })?;
        }
        let connection = Connection::open(path)?;
        connection.busy_timeout(Duration::from_secs(5))?;
        connection.execute_batch(SCHEMA)?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
            path: path.canonicalize().unwrap_or_else(|_| path.to_path_buf()),
        })
    }

    /// The file, for the log.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` on the connection, on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let connection = self.connection.clone();
        tokio::task::spawn_blocking(move || {
            let mut connection = connection.lock().unwrap_or_else(|e| e.into_inner());
            work(&mut connection)
        })
        .await?
    }

    pub async fn create(&self, name: &str, creator: &UserId) -> Result<RoomId, StoreError> {
        let (name, creator) = (name.to_owned(), creator.as_str().to_owned());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let id = RoomId::new_random();
            let now = now_ms();
            tx.execute(
                "INSERT INTO switchboard_rooms (id, name, created_by, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
                params![id.to_string(), name, creator, now],
            )?;
            tx.execute(
                "INSERT INTO switchboard_room_members (room_id, user_id, joined_at_ms) VALUES (?1, ?2, ?3)",
                params![id.to_string(), creator, now],
            )?;
            tx.commit()?;
            Ok(id)
        })
        .await
    }

    pub async fn join(&self, room: RoomId, user: &UserId) -> Result<RoomSummary, StoreError> {
        let user = user.as_str().to_owned();
        self.with(move |c| {
            let name = room_name(c, room)?;
            c.execute(
                "INSERT OR IGNORE INTO switchboard_room_members (room_id, user_id, joined_at_ms) VALUES (?1, ?2, ?3)",
                params![room.to_string(), user, now_ms()],
            )?;
            Ok(RoomSummary { id: room, name })
        })
        .await
    }

    pub async fn leave(&self, room: RoomId, user: &UserId) -> Result<bool, StoreError> {
        let user = user.as_str().to_owned();
        self.with(move |c| {
            Ok(c.execute(
                "DELETE FROM switchboard_room_members WHERE room_id = ?1 AND user_id = ?2",
                params![room.to_string(), user],
            )? > 0)
        })
        .await
    }

    pub async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StoreError> {
        let user = user.as_str().to_owned();
        self.with(move |c| {
            Ok(c.query_row(
                "SELECT 1 FROM switchboard_room_members WHERE room_id = ?1 AND user_id = ?2",
                params![room.to_string(), user],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
        .await
    }

    pub async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomSummary>, StoreError> {
        let user = user.as_str().to_owned();
        self.with(move |c| {
            let mut query = c.prepare_cached(
                "SELECT r.id, r.name FROM switchboard_rooms r \
                 JOIN switchboard_room_members m ON m.room_id = r.id \
                 WHERE m.user_id = ?1 ORDER BY m.joined_at_ms, m.rowid",
            )?;
            let rows = query.query_map(params![user], |row| {
                Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
            })?;
            rows.map(|row| {
                let (id, name) = row?;
                Ok(RoomSummary {
                    id: RoomId::parse(&id)?,
                    name,
                })
            })
            .collect()
        })
        .await
    }

    pub async fn room(&self, room: RoomId) -> Result<(String, Vec<UserId>), StoreError> {
        self.with(move |c| {
            let name = room_name(c, room)?;
            let mut query = c.prepare_cached(
                "SELECT user_id FROM switchboard_room_members WHERE room_id = ?1 ORDER BY joined_at_ms, rowid",
            )?;
            let members = query
                .query_map(params![room.to_string()], |row| row.get::<_, String>(0))?
                .map(|user| Ok(UserId::parse(user?)?))
                .collect::<Result<_, StoreError>>()?;
            Ok((name, members))
        })
        .await
    }

    pub async fn append(
        &self,
        room: RoomId,
        id: MessageId,
        user: &UserId,
        text: &str,
        sent_at_ms: u64,
    ) -> Result<Appended, StoreError> {
        let (user, text) = (user.as_str().to_owned(), text.to_owned());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existing = tx
                .query_row(
                    "SELECT seq, user_id, text FROM switchboard_room_messages WHERE room_id = ?1 AND id = ?2",
                    params![room.to_string(), id.to_string()],
                    |row| Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get::<_, String>(2)?)),
                )
                .optional()?;
            if let Some((seq, sender, first_text)) = existing {
                // A resend keeps its number and its first text; an id is
                // its sender's, and nobody else's.
                if sender != user {
                    return Err(StoreError::IdTaken);
                }
                return Ok(Appended { seq: seq as u64, text: first_text });
            }
            let seq: i64 = tx
                .query_row(
                    "UPDATE switchboard_rooms SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq",
                    params![room.to_string()],
                    |row| row.get(0),
                )
                .optional()?
                .ok_or(StoreError::NoSuchRoom)?;
            tx.execute(
                "INSERT INTO switchboard_room_messages (room_id, seq, id, user_id, text, sent_at_ms) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![room.to_string(), seq, id.to_string(), user, text, sent_at_ms as i64],
            )?;
            tx.commit()?;
            Ok(Appended { seq: seq as u64, text })
        })
        .await
    }

    pub async fn history(
        &self,
        room: RoomId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        self.with(move |c| {
            let mut query = c.prepare_cached(
                "SELECT seq, id, user_id, text, sent_at_ms FROM switchboard_room_messages \
                 WHERE room_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = query.query_map(
                params![room.to_string(), after as i64, i64::from(limit)],
                |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, i64>(4)?,
                    ))
                },
            )?;
            rows.map(|row| {
                let (seq, id, from, text, sent_at_ms) = row?;
                Ok(StoredMessage {
                    seq: seq as u64,
                    id: MessageId::parse(&id)?,
                    from: UserId::parse(from)?,
                    text,
                    sent_at_ms: sent_at_ms as u64,
                })
            })
            .collect()
        })
        .await
    }
}

fn room_name(c: &Connection, room: RoomId) -> Result<String, StoreError> {
    c.query_row(
        "SELECT name FROM switchboard_rooms WHERE id = ?1",
        params![room.to_string()],
        |row| row.get(0),
    )
    .optional()?
    .ok_or(StoreError::NoSuchRoom)
}
