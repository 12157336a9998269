//! Users' reply queues as such, apart from consuming them: making sure one
//! exists before a message of its user is published, binding rooms to it,
//! and whether anyone consumes it.

use super::context::Context;
use super::local::ReplyHealth;
use super::presence;
use broker::topology;
use protocol::{ErrorCode, RoomId, UserId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tracing::warn;

/// Users remembered as having a reply queue before the stale ones are
/// forgotten.
const MAX_REMEMBERED: usize = 100_000;

/// Declares and inspects reply queues. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReplyQueues {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    context: Arc<Context>,
    /// Users whose reply queue this gateway declared without a socket (a
    /// REST message), and when.
    declared: Mutex<HashMap<UserId, Instant>>,
}

impl ReplyQueues {
    pub(super) fn new(context: Arc<Context>) -> Self {
        Self {
            inner: Arc::new(Inner {
                context,
                declared: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Makes sure `user`'s reply queue exists (declared and bound), within
    /// the publish timeout: a message must not be published before that,
    /// or its answer would find no queue and be dropped by RabbitMQ. With a
    /// socket here, that is its consumer's set-up; without (REST), one
    /// declare on a channel of its own, skipped when done recently.
    pub async fn ensure(&self, user: &UserId) -> bool {
        let context = &self.inner.context;
        let limit = context.broker.settings().publish_timeout();
        if let Some(mut health) = context.local.health(user) {
            // Failing: refused at once, so the client holds its message
            // until the consumer heals (its sockets hear `status: down`).
            let settled = health.wait_for(|h| *h != ReplyHealth::SettingUp);
            return matches!(
                tokio::time::timeout(limit, settled).await,
                Ok(Ok(health)) if *health == ReplyHealth::Consuming
            );
        }
        let fresh = std::time::Duration::from_millis(context.shape.expires_ms / 2);
        let remembered = self
            .inner
            .declared
            .lock()
            .expect("declared lock")
            .get(user)
            .copied();
        if remembered.is_some_and(|at| at.elapsed() < fresh) {
            return true;
        }
        let Some(session) = context.broker.current() else {
            return false;
        };
        let names = context.broker.names();
        let declare = async |channel: &_| {
            topology::declare_reply_queue(channel, names, user, context.shape).await
        };
        match session.with_channel(limit, declare).await {
            Ok(_) => {
                let mut declared = self.inner.declared.lock().expect("declared lock");
                if declared.len() >= MAX_REMEMBERED {
                    declared.retain(|_, at| at.elapsed() < fresh);
                }
                declared.insert(user.clone(), Instant::now());
                true
            }
            Err(e) => {
                warn!(user_id = %user, error = %e, "could not declare a reply queue");
                false
            }
        }
    }

    /// Routes `room`'s messages into `user`'s queue (which must exist), or
    /// stops.
    pub async fn bind_room(
        &self,
        user: &UserId,
        room: RoomId,
        bound: bool,
    ) -> Result<(), ErrorCode> {
        let context = &self.inner.context;
        let session = context
            .broker
            .current()
            .ok_or(ErrorCode::BrokerUnavailable)?;
        let names = context.broker.names();
        let limit = context.broker.settings().publish_timeout();
        let bind =
            async |channel: &_| topology::bind_room(channel, names, user, &room, bound).await;
        session.with_channel(limit, bind).await.map_err(|e| {
            warn!(user_id = %user, room_id = %room, error = %e, "room binding failed");
            ErrorCode::BrokerUnavailable
        })
    }

    /// Whether `user` has a socket open somewhere: here, or on any gateway
    /// (their reply queue has a consumer).
    pub async fn is_online(&self, user: &UserId) -> bool {
        let context = &self.inner.context;
        if context.local.contains(user) {
            return true;
        }
        let Some(session) = context.broker.current() else {
            return false;
        };
        let queue = context.broker.names().reply_queue(user);
        // A queue that does not exist closes the channel: offline.
        let count = async |channel: &_| topology::consumer_count(channel, &queue).await;
        matches!(session.with_channel(context.setup_limit(), count).await, Ok(n) if n > 0)
    }

    /// Tells `room`'s members that `user` joined it (with whether they are
    /// online) or, not `member`, left it. Best effort (advisory).
    pub async fn announce(&self, user: &UserId, room: RoomId, member: bool) {
        let online = member && self.is_online(user).await;
        presence::announce(&self.inner.context, user, [room], member, online).await;
    }
}
