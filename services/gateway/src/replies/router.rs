//! The router: sockets subscribe to their user's replies here, and the
//! first socket of a user starts the user's consumer.

use super::consumer;
use super::context::{Context, ReplySetup};
use super::local::ReplyHealth;
use super::outbound::Outbox;
use super::queues::ReplyQueues;
use super::relay;
use protocol::UserId;
use std::sync::Arc;
use tokio::sync::watch;

/// Routes reply frames from per-user queues to local sockets. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ReplyRouter {
    context: Arc<Context>,
}

/// A socket's registration; dropping it unregisters the socket (the user's
/// last one stops their consumer; the queue itself stays until its
/// `x-expires`).
#[derive(Debug)]
pub struct Subscription {
    context: Arc<Context>,
    user: UserId,
    socket: u64,
    /// How the user's reply consumer is doing.
    pub health: watch::Receiver<ReplyHealth>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.context.local.unregister(&self.user, self.socket);
    }
}

impl ReplyRouter {
    /// Starts the router and its relay consumer (call within a runtime).
    pub fn start(setup: ReplySetup) -> Self {
        let context = Arc::new(Context::new(setup));
        context.tasks.spawn(relay::consume(context.clone()));
        Self { context }
    }

    /// Registers a socket of `user` whose frames go to `outbox`; starts the
    /// user's consumer if this is their first socket here.
    pub fn subscribe(&self, user: &UserId, outbox: Outbox) -> Subscription {
        let registered = self.context.local.register(user, outbox);
        if let Some(first) = registered.first {
            let run = consumer::run(self.context.clone(), user.clone(), first);
            self.context.tasks.spawn(run);
        }
        Subscription {
            context: self.context.clone(),
            user: user.clone(),
            socket: registered.socket,
            health: registered.health,
        }
    }

    /// Reply queues as such: declaring, binding, counting.
    pub fn queues(&self) -> ReplyQueues {
        ReplyQueues::new(self.context.clone())
    }

    /// Users with at least one socket on this gateway.
    pub fn online_users(&self) -> usize {
        self.context.local.len()
    }

    /// Whether this gateway knows `user` has sockets on other gateways too
    /// (and so relays their chunks when it is the user's home).
    pub fn relays(&self, user: &UserId) -> bool {
        self.context
            .local
            .peers(user)
            .is_some_and(|peers| peers.elsewhere())
    }

    /// Whether every user's consumer here works (none is failing while the
    /// broker connection is up).
    pub fn all_consuming(&self) -> bool {
        self.context
            .failing
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
    }

    /// Waits for every consumer to finish after the last sockets are gone.
    pub async fn drain(&self) {
        self.context.relay_stop.cancel();
        self.context.tasks.close();
        self.context.tasks.wait().await;
    }
}
