//! What the parts of reply routing share: the broker, the shape of reply
//! queues, the table of local users, this gateway's relay identity, and
//! who is told of answers streaming by.

use super::local::LocalUsers;
use super::outbound::AnswerWatcher;
use crate::store::Store;
use broker::Broker;
use broker::topology::ReplyQueueShape;
use protocol::MessageId;
use std::hash::RandomState;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Reply queues set up at once (declare, bind, consume); more wait their turn.
const CONCURRENT_SETUPS: usize = 16;

/// Shared by the router, the consumers, the relay and queue declaration.
#[derive(Debug)]
pub struct Context {
    pub broker: Broker,
    /// How every reply queue is declared.
    pub shape: ReplyQueueShape,
    /// Prefetch of each per-user consumer.
    pub prefetch: u16,
    /// Users with sockets here.
    pub local: LocalUsers,
    /// A user's rooms are bound to their queue at every set-up (an expired
    /// queue lost its bindings); `None` when rooms are off.
    pub store: Option<Arc<Store>>,
    /// Told of answers streaming by.
    pub watcher: Arc<dyn AnswerWatcher>,
    /// This gateway process, on `chat_relay`.
    pub instance: String,
    /// The broker session (generation) on which the relay queue was last
    /// declared, so users' consumers need not declare it again each.
    pub relay_declared: AtomicU64,
    /// Reply queues being set up at once: a connect storm sets them up a
    /// bounded number at a time, so the connection's buffers do not balloon
    /// with thousands of queued set-up frames.
    pub setups: Semaphore,
    /// Spreads users over consumer channels.
    pub shard_hasher: RandomState,
    /// Consumer tasks, so shutdown can wait for them to cancel cleanly.
    pub tasks: TaskTracker,
    /// Stops the relay consumer at shutdown.
    pub relay_stop: CancellationToken,
    /// Users whose consumer is failing now while the connection is up.
    pub failing: AtomicUsize,
    /// Whether a reply queue of the other kind was met (said once).
    pub other_kind_seen: AtomicBool,
}

/// What reply routing is started with.
#[derive(Debug)]
pub struct ReplySetup {
    pub broker: Broker,
    /// How every reply queue is declared.
    pub shape: ReplyQueueShape,
    /// Prefetch of each per-user consumer.
    pub prefetch: u16,
    /// The rooms database, to bind users' rooms; `None` when rooms are off.
    pub store: Option<Arc<Store>>,
    /// Told of answers streaming by.
    pub watcher: Arc<dyn AnswerWatcher>,
}

impl Context {
    pub fn new(setup: ReplySetup) -> Self {
        let ReplySetup {
            broker,
            shape,
            prefetch,
            store,
            watcher,
        } = setup;
        Self {
            broker,
            shape,
            prefetch,
            local: LocalUsers::default(),
            store,
            watcher,
            instance: format!("gw-{}", &MessageId::new_random().to_string()[..8]),
            relay_declared: AtomicU64::new(u64::MAX),
            setups: Semaphore::new(CONCURRENT_SETUPS),
            shard_hasher: RandomState::new(),
            tasks: TaskTracker::new(),
            relay_stop: CancellationToken::new(),
            failing: AtomicUsize::new(0),
            other_kind_seen: AtomicBool::new(false),
        }
    }

    /// Bound on any one set-up step with the broker.
    pub fn setup_limit(&self) -> Duration {
        Duration::from_millis(self.broker.settings().connect_timeout_ms)
    }
}
