//! Identifiers. Each is a newtype so a user id can never be passed where a
//! message id is expected, and so validation happens once, at the edge.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Longest user id accepted. It becomes part of a queue name (limit 255 bytes)
/// and of a routing key, so it is kept well below that.
pub const USER_ID_MAX_LEN: usize = 64;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("user id must be 1 to {USER_ID_MAX_LEN} characters long")]
    UserIdLength,
    #[error("user id may contain only ASCII letters, digits, '-' and '_'")]
    UserIdCharset,
    #[error("id must be a UUID")]
    NotAUuid,
}

/// A user's identity, as carried in the `sub` claim of a verified token.
///
/// Only ASCII letters, digits, `-` and `_` are allowed: the id is embedded in
/// the user's reply queue name and used as a routing key, so it must never
/// contain `.`, `#`, `*` or anything a broker or a log could misread.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct UserId(String);

impl UserId {
    pub fn parse(raw: impl Into<String>) -> Result<Self, IdError> {
        let raw = raw.into();
        if raw.is_empty() || raw.len() > USER_ID_MAX_LEN {
            return Err(IdError::UserIdLength);
        }
        if !raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(IdError::UserIdCharset);
        }
        Ok(Self(raw))
    }

    /// A fresh id for a guest session: `g-` followed by a random UUID in hex.
    pub fn new_guest() -> Self {
        Self(format!("g-{}", Uuid::new_v4().simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for UserId {
    type Error = IdError;
    fn try_from(raw: String) -> Result<Self, IdError> {
        Self::parse(raw)
    }
}

impl From<UserId> for String {
    fn from(id: UserId) -> String {
        id.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A UUID newtype: random, parsed, shown and (de)serialized as the UUID.
macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            pub fn new_random() -> Self {
                Self(Uuid::new_v4())
            }

            pub fn parse(raw: &str) -> Result<Self, IdError> {
                Uuid::try_parse(raw)
                    .map(Self)
                    .map_err(|_| IdError::NotAUuid)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

uuid_id!(
    /// The id a client gives each message it sends (a UUID it chooses). It is the
    /// message's identity end to end: the AMQP `message_id`, the `accepted` frame's
    /// `id` and every reply chunk's `in_reply_to`.
    MessageId
);

uuid_id!(
    /// A room: a conversation shared by several users.
    RoomId
);

/// Namespace for deriving reply ids (UUIDv5). Changing it changes every reply
/// id, so it is fixed forever.
const REPLY_NAMESPACE: Uuid = Uuid::from_u128(0x5b1c_7e0a_3f7d_4c55_9a4e_2f1d_8c6b_a901);

/// The id of the answer to one message. It is *derived* from the requesting
/// user and the message id, never random, so that a request processed twice
/// (redelivered after a responder crash) produces a reply with the same id and
/// the same `seq` numbers, which clients use to drop repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ReplyId(Uuid);

impl ReplyId {
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        Uuid::try_parse(raw)
            .map(Self)
            .map_err(|_| IdError::NotAUuid)
    }

    pub fn for_request(user: &UserId, request: MessageId) -> Self {
        let mut name = Vec::with_capacity(user.as_str().len() + 17);
        name.extend_from_slice(user.as_str().as_bytes());
        name.push(b'/');
        name.extend_from_slice(request.as_uuid().as_bytes());
        Self(Uuid::new_v5(&REPLY_NAMESPACE, &name))
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<MessageId> for ReplyId {
    /// A room message is acknowledged by its own id (its `seq` is the
    /// room's), through the same `ack` frame as a reply chunk.
    fn from(id: MessageId) -> Self {
        Self(id.as_uuid())
    }
}

impl fmt::Display for ReplyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_id_accepts_the_documented_charset() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("g-0123456789abcdef0123456789abcdef").is_ok());
        assert!(UserId::parse("A_b-9").is_ok());
        assert!(UserId::parse("x".repeat(USER_ID_MAX_LEN)).is_ok());
    }

    #[test]
    fn user_id_rejects_what_could_escape_a_queue_name_or_routing_key() {
        assert_eq!(UserId::parse(""), Err(IdError::UserIdLength));
        assert_eq!(
            UserId::parse("x".repeat(USER_ID_MAX_LEN + 1)),
            Err(IdError::UserIdLength)
        );
        for bad in ["a.b", "a#", "*", "a b", "ä", "a/b", "a\0"] {
            assert_eq!(UserId::parse(bad), Err(IdError::UserIdCharset), "{bad:?}");
        }
    }

    #[test]
    fn guest_ids_are_valid_and_distinct() {
        let a = UserId::new_guest();
        let b = UserId::new_guest();
        assert_ne!(a, b);
        assert_eq!(UserId::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn reply_id_is_a_pure_function_of_user_and_request() {
        let alice = UserId::parse("alice").unwrap();
        let bob = UserId::parse("bob").unwrap();
        let m = MessageId::new_random();
        assert_eq!(
            ReplyId::for_request(&alice, m),
            ReplyId::for_request(&alice, m)
        );
        assert_ne!(
            ReplyId::for_request(&alice, m),
            ReplyId::for_request(&bob, m)
        );
        assert_ne!(
            ReplyId::for_request(&alice, m),
            ReplyId::for_request(&alice, MessageId::new_random())
        );
    }
}
