//! Rooms in PostgreSQL: the store several gateways share. They agree on
//! one order per room through a row lock on the room, which hands out its
//! sequence numbers.

use super::model::{Appended, RoomSummary, StoreError, StoredMessage};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use protocol::{MessageId, RoomId, UserId};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Created on first use; under an advisory lock, because concurrent
/// `CREATE TABLE IF NOT EXISTS` from several gateways can collide.
const SCHEMA: &str = "
BEGIN;
SELECT pg_advisory_xact_lock(7270117);
CREATE TABLE IF NOT EXISTS switchboard_rooms (
    id uuid PRIMARY KEY,
    name text NOT NULL,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_seq bigint NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS switchboard_room_members (
    room_id uuid NOT NULL REFERENCES switchboard_rooms (id) ON DELETE CASCADE,
    user_id text NOT NULL,
    joined_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX IF NOT EXISTS switchboard_room_members_user ON switchboard_room_members (user_id);
CREATE TABLE IF NOT EXISTS switchboard_room_messages (
    room_id uuid NOT NULL REFERENCES switchboard_rooms (id) ON DELETE CASCADE,
    seq bigint NOT NULL,
    id uuid NOT NULL,
    user_id text NOT NULL,
    text text NOT NULL,
    sent_at_ms bigint NOT NULL,
    PRIMARY KEY (room_id, seq),
    UNIQUE (room_id, id)
);
COMMIT;
";

async fn room_name(client: &deadpool_postgres::Client, room: RoomId) -> Result<String, StoreError> {
    Ok(client
        .query_opt(
            "SELECT name FROM switchboard_rooms WHERE id = $1",
            &[&room.as_uuid()],
        )
        .await?
        .ok_or(StoreError::NoSuchRoom)?
        .get(0))
}

/// The rooms database in PostgreSQL.
pub struct PgStore {
    pool: Pool,
    migrated: OnceCell<()>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").finish_non_exhaustive()
    }
}

impl PgStore {
    /// A pool for `url` (`postgres://user@host:port/db`). Connects lazily:
    /// a database that is down at start only makes room requests fail.
    pub fn new(url: &str, max_connections: usize) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = url.parse()?;
        config.connect_timeout(Duration::from_secs(5));
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(max_connections)
            .wait_timeout(Some(Duration::from_secs(5)))
            .create_timeout(Some(Duration::from_secs(5)))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .expect("a pool with a runtime and timeouts builds");
        Ok(Self {
            pool,
            migrated: OnceCell::new(),
        })
    }

    /// A connection, with the schema in place (created on first use).
    async fn client(&self) -> Result<deadpool_postgres::Client, StoreError> {
        let client = self.pool.get().await?;
        self.migrated
            .get_or_try_init(|| async {
                if let Err(e) = client.batch_execute(SCHEMA).await {
                    // Leave the pooled connection usable.
                    let _ = client.batch_execute("ROLLBACK").await;
                    return Err(e.into());
                }
                Ok::<_, StoreError>(())
            })
            .await?;
        Ok(client)
    }

    /// A new room with `creator` as its first member.
    pub async fn create(&self, name: &str, creator: &UserId) -> Result<RoomId, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let id = RoomId::new_random();
        tx.execute(
            "INSERT INTO switchboard_rooms (id, name, created_by) VALUES ($1, $2, $3)",
            &[&id.as_uuid(), &name, &creator.as_str()],
        )
        .await?;
        tx.execute(
            "INSERT INTO switchboard_room_members (room_id, user_id) VALUES ($1, $2)",
            &[&id.as_uuid(), &creator.as_str()],
        )
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Makes `user` a member (again: joining twice is harmless).
    pub async fn join(&self, room: RoomId, user: &UserId) -> Result<RoomSummary, StoreError> {
        let client = self.client().await?;
        let name = room_name(&client, room).await?;
        client
            .execute(
                "INSERT INTO switchboard_room_members (room_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&room.as_uuid(), &user.as_str()],
            )
            .await?;
        Ok(RoomSummary { id: room, name })
    }

    /// Ends `user`'s membership; whether they were a member.
    pub async fn leave(&self, room: RoomId, user: &UserId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let removed = client
            .execute(
                "DELETE FROM switchboard_room_members WHERE room_id = $1 AND user_id = $2",
                &[&room.as_uuid(), &user.as_str()],
            )
            .await?;
        Ok(removed > 0)
    }

    pub async fn is_member(&self, room: RoomId, user: &UserId) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_opt(
                "SELECT 1 FROM switchboard_room_members WHERE room_id = $1 AND user_id = $2",
                &[&room.as_uuid(), &user.as_str()],
            )
            .await?
            .is_some())
    }

    /// The rooms `user` belongs to, oldest membership first.
    pub async fn rooms_of(&self, user: &UserId) -> Result<Vec<RoomSummary>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT r.id, r.name FROM switchboard_rooms r \
                 JOIN switchboard_room_members m ON m.room_id = r.id \
                 WHERE m.user_id = $1 ORDER BY m.joined_at, r.id",
                &[&user.as_str()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| RoomSummary {
                id: RoomId::from(row.get::<_, Uuid>(0)),
                name: row.get(1),
            })
            .collect())
    }

    /// A room's name and members (in joining order).
    pub async fn room(&self, room: RoomId) -> Result<(String, Vec<UserId>), StoreError> {
        let client = self.client().await?;
        let name = room_name(&client, room).await?;
        let members = client
            .query(
                "SELECT user_id FROM switchboard_room_members WHERE room_id = $1 ORDER BY joined_at, user_id",
                &[&room.as_uuid()],
            )
            .await?
            .iter()
            .map(|row| UserId::parse(row.get::<_, String>(0)))
            .collect::<Result<_, _>>()?;
        Ok((name, members))
    }

    /// Stores a message and gives it the room's next sequence number; the
    /// same message (same id) sent again keeps its number.
    pub async fn append(
        &self,
        room: RoomId,
        id: MessageId,
        user: &UserId,
        text: &str,
        sent_at_ms: u64,
    ) -> Result<Appended, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row lock orders concurrent senders of one room.
        let seq: i64 = tx
            .query_opt(
                "UPDATE switchboard_rooms SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq",
                &[&room.as_uuid()],
            )
            .await?
            .ok_or(StoreError::NoSuchRoom)?
            .get(0);
        if let Some(existing) = tx
            .query_opt(
                "SELECT seq, user_id, text FROM switchboard_room_messages WHERE room_id = $1 AND id = $2",
                &[&room.as_uuid(), &id.as_uuid()],
            )
            .await?
        {
            tx.rollback().await?;
            // A resend keeps its number and its first text; an id is its
            // sender's, and nobody else's.
            if existing.get::<_, &str>(1) != user.as_str() {
                return Err(StoreError::IdTaken);
            }
            return Ok(Appended {
                seq: existing.get::<_, i64>(0) as u64,
                text: existing.get(2),
            });
        }
        tx.execute(
            "INSERT INTO switchboard_room_messages (room_id, seq, id, user_id, text, sent_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &room.as_uuid(),
                &seq,
                &id.as_uuid(),
                &user.as_str(),
                &text,
                &(sent_at_ms as i64),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Appended {
            seq: seq as u64,
            text: text.to_owned(),
        })
    }

    /// Messages after `after`, oldest first, at most `limit`.
    pub async fn history(
        &self,
        room: RoomId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let client = self.client().await?;
        client
            .query(
                "SELECT seq, id, user_id, text, sent_at_ms FROM switchboard_room_messages \
                 WHERE room_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&room.as_uuid(), &(after as i64), &i64::from(limit)],
            )
            .await?
            .iter()
            .map(|row| {
                Ok(StoredMessage {
                    seq: row.get::<_, i64>(0) as u64,
                    id: MessageId::from(row.get::<_, Uuid>(1)),
                    from: UserId::parse(row.get::<_, String>(2))?,
                    text: row.get(3),
                    sent_at_ms: row.get::<_, i64>(4) as u64,
                })
            })
            .collect()
    }
}
