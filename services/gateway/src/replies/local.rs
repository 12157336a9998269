//! The users with sockets on this gateway: each user's sockets (their
//! outboxes), whether their reply queue is ready, what this gateway knows
//! of their other gateways, and the token that stops their consumer. No
//! broker here: this is the table the consumers deliver through.

use super::outbound::{OutboundReply, Outbox};
use protocol::UserId;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// The local users. Every lock is brief and never held across an await.
#[derive(Debug, Default)]
pub struct LocalUsers {
    users: Mutex<HashMap<UserId, LocalUser>>,
    next_socket: AtomicU64,
}

/// The sockets one user has on this gateway, and their consumer.
#[derive(Debug)]
struct LocalUser {
    sockets: HashMap<u64, Outbox>,
    /// Cancels this user's consumer.
    consumer: CancellationToken,
    /// How the user's reply consumer is doing.
    health: watch::Receiver<ReplyHealth>,
    /// What this gateway knows of the user's other gateways.
    peers: Arc<Peers>,
}

/// How a user's reply consumer is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyHealth {
    /// Being set up: the first time, or after the connection came back.
    SettingUp,
    /// Declared, bound and consumed: replies flow; messages may be sent.
    Consuming,
    /// Its set-up or its consumer failed while the broker connection is up
    /// (the queue's node is down, say): replies cannot flow, and messages
    /// are refused until it heals.
    Failing,
}

/// What one gateway knows of a user's sockets on other gateways.
#[derive(Debug, Default)]
pub struct Peers {
    /// The user has sockets on other gateways too, so chunks this gateway
    /// receives as their home are relayed.
    pub elsewhere: AtomicBool,
    /// This gateway's relay queue is bound to the user's id (it receives
    /// the home's relayed copies).
    pub bound: AtomicBool,
}

impl Peers {
    pub fn elsewhere(&self) -> bool {
        self.elsewhere.load(Ordering::Relaxed)
    }

    pub fn bound(&self) -> bool {
        self.bound.load(Ordering::Relaxed)
    }

    /// Whether this gateway takes part in relaying for the user, so the
    /// other gateways must hear when it leaves.
    pub fn involved(&self) -> bool {
        self.elsewhere() || self.bound()
    }
}

/// A socket just registered.
#[derive(Debug)]
pub struct Registered {
    /// Its number among the user's sockets.
    pub socket: u64,
    /// How the user's reply consumer is doing.
    pub health: watch::Receiver<ReplyHealth>,
    /// Set when this is the user's first socket here: their consumer must
    /// be started with these.
    pub first: Option<FirstSocket>,
}

/// What a user's new consumer is started with.
#[derive(Debug)]
pub struct FirstSocket {
    /// Fires when the user's last socket here goes.
    pub stop: CancellationToken,
    /// How the consumer is doing, told to the user's sockets.
    pub health: watch::Sender<ReplyHealth>,
    pub peers: Arc<Peers>,
}

impl LocalUsers {
    /// Adds a socket of `user` that takes its frames through `outbox`.
    pub fn register(&self, user: &UserId, outbox: Outbox) -> Registered {
        let socket = self.next_socket.fetch_add(1, Ordering::Relaxed);
        let mut users = self.users.lock().expect("users lock");
        let registered = match users.entry(user.clone()) {
            Entry::Occupied(mut entry) => {
                let local = entry.get_mut();
                local.sockets.insert(socket, outbox);
                Registered {
                    socket,
                    health: local.health.clone(),
                    first: None,
                }
            }
            Entry::Vacant(entry) => {
                let stop = CancellationToken::new();
                let (tell, health) = watch::channel(ReplyHealth::SettingUp);
                let peers = Arc::new(Peers::default());
                entry.insert(LocalUser {
                    sockets: HashMap::from([(socket, outbox)]),
                    consumer: stop.clone(),
                    health: health.clone(),
                    peers: peers.clone(),
                });
                Registered {
                    socket,
                    health,
                    first: Some(FirstSocket {
                        stop,
                        health: tell,
                        peers,
                    }),
                }
            }
        };
        gauge_users(users.len());
        registered
    }

    /// Removes socket `socket` of `user`; the user's last socket stops
    /// their consumer.
    pub fn unregister(&self, user: &UserId, socket: u64) {
        let mut users = self.users.lock().expect("users lock");
        if let Some(local) = users.get_mut(user)
            && local.sockets.remove(&socket).is_some()
            && local.sockets.is_empty()
        {
            local.consumer.cancel();
            users.remove(user);
            gauge_users(users.len());
        }
    }

    /// Queues `reply` on every socket of `user`; returns how many took it.
    /// A socket whose buffer is full is cut loose (its outbox closes and it
    /// ends with 4000) instead of holding up the others; if that leaves
    /// none, the user's consumer stops.
    pub fn deliver(&self, user: &UserId, reply: &OutboundReply) -> usize {
        let mut users = self.users.lock().expect("users lock");
        let Some(local) = users.get_mut(user) else {
            return 0;
        };
        let mut delivered = 0;
        local.sockets.retain(|socket, outbox| match outbox.try_send(reply.clone()) {
            Ok(()) => {
                delivered += 1;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                warn!(user_id = %user, socket, "socket too slow to read its replies; disconnecting it");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
        if local.sockets.is_empty() {
            local.consumer.cancel();
            users.remove(user);
            gauge_users(users.len());
        }
        delivered
    }

    /// What this gateway knows of `user`'s other gateways, if `user` is here.
    pub fn peers(&self, user: &UserId) -> Option<Arc<Peers>> {
        let users = self.users.lock().expect("users lock");
        users.get(user).map(|local| local.peers.clone())
    }

    /// How `user`'s reply consumer is doing, if `user` is here.
    pub fn health(&self, user: &UserId) -> Option<watch::Receiver<ReplyHealth>> {
        let users = self.users.lock().expect("users lock");
        users.get(user).map(|local| local.health.clone())
    }

    /// Whether `user` has a socket here.
    pub fn contains(&self, user: &UserId) -> bool {
        self.users.lock().expect("users lock").contains_key(user)
    }

    /// Users with at least one socket here.
    pub fn len(&self) -> usize {
        self.users.lock().expect("users lock").len()
    }

    /// The users this gateway's relay queue is bound to.
    pub fn relay_bound(&self) -> Vec<UserId> {
        let users = self.users.lock().expect("users lock");
        users
            .iter()
            .filter(|(_, local)| local.peers.bound())
            .map(|(user, _)| user.clone())
            .collect()
    }
}

fn gauge_users(count: usize) {
    metrics::gauge!("switchboard_gateway_users_online").set(count as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::MessageId;
    use protocol::amqp::{MessageStatus, StatusEvent};

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    fn frame() -> OutboundReply {
        let event = StatusEvent::new(alice(), MessageId::new_random(), MessageStatus::Processing);
        OutboundReply::status(&event)
    }

    #[test]
    fn the_first_socket_starts_the_consumer_and_the_last_one_stops_it() {
        let users = LocalUsers::default();
        let (tx1, _rx1) = mpsc::channel(4);
        let (tx2, _rx2) = mpsc::channel(4);
        let first = users.register(&alice(), tx1);
        let stop = first.first.expect("first socket").stop;
        let second = users.register(&alice(), tx2);
        assert!(second.first.is_none());
        users.unregister(&alice(), first.socket);
        assert!(!stop.is_cancelled() && users.contains(&alice()));
        users.unregister(&alice(), second.socket);
        assert!(stop.is_cancelled() && !users.contains(&alice()));
    }

    #[test]
    fn every_socket_of_the_user_gets_the_frame_and_only_theirs() {
        let users = LocalUsers::default();
        let (tx1, mut rx1) = mpsc::channel(4);
        let (tx2, mut rx2) = mpsc::channel(4);
        let (tx3, mut rx3) = mpsc::channel(4);
        users.register(&alice(), tx1);
        users.register(&alice(), tx2);
        users.register(&UserId::parse("bob").unwrap(), tx3);
        assert_eq!(users.deliver(&alice(), &frame()), 2);
        assert!(rx1.try_recv().is_ok() && rx2.try_recv().is_ok());
        assert!(rx3.try_recv().is_err());
        assert_eq!(users.deliver(&UserId::parse("carol").unwrap(), &frame()), 0);
    }

    #[test]
    fn a_socket_that_cannot_keep_up_is_cut_loose_and_the_others_go_on() {
        let users = LocalUsers::default();
        let (slow, mut slow_rx) = mpsc::channel(1);
        let (fast, fast_rx) = mpsc::channel(8);
        let stop = users.register(&alice(), slow).first.unwrap().stop;
        users.register(&alice(), fast);
        assert_eq!(users.deliver(&alice(), &frame()), 2);
        assert_eq!(users.deliver(&alice(), &frame()), 1, "the slow one is full");
        assert!(slow_rx.try_recv().is_ok());
        assert!(
            matches!(
                slow_rx.try_recv(),
                Err(mpsc::error::TryRecvError::Disconnected)
            ),
            "cut loose: its outbox is closed"
        );
        assert_eq!(users.deliver(&alice(), &frame()), 1);
        assert_eq!(fast_rx.len(), 3);
        assert!(!stop.is_cancelled());
    }

    #[test]
    fn losing_the_last_socket_to_a_full_buffer_stops_the_consumer() {
        let users = LocalUsers::default();
        let (slow, _slow_rx) = mpsc::channel(1);
        let stop = users.register(&alice(), slow).first.unwrap().stop;
        users.deliver(&alice(), &frame());
        assert_eq!(users.deliver(&alice(), &frame()), 0);
        assert!(stop.is_cancelled() && !users.contains(&alice()));
    }
}
