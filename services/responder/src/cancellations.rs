//! Stop generating: gateways broadcast a [`CancelRequest`] on `chat_control`
//! to every responder (each has an exclusive queue bound to it). The one
//! answering that message stops within a chunk and ends the answer with a
//! final chunk marked `cancelled`; the others remember the cancel for a while,
//! so a request still waiting in `chat_queue` is answered with a cancelled
//! final chunk at once when it is picked up, instead of being generated.

use broker::consumer::{Serve, Served};
use broker::lapin::options::BasicConsumeOptions;
use broker::lapin::types::FieldTable;
use broker::{Broker, Session};
use protocol::amqp::{self, CancelRequest};
use protocol::{MessageId, UserId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Cancels remembered for requests not (yet) being answered here.
const REMEMBERED: usize = 10_000;
/// …for this long: longer than a request normally waits in `chat_queue`.
const REMEMBER_FOR: Duration = Duration::from_secs(600);

type Key = (UserId, MessageId);

/// What is being answered here, and what was cancelled before it started.
#[derive(Debug, Default)]
pub struct Cancellations {
    running: Mutex<HashMap<Key, CancellationToken>>,
    recent: Mutex<Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    keys: HashMap<Key, Instant>,
    order: VecDeque<(Key, Instant)>,
}

impl Recent {
    fn remember(&mut self, key: Key) {
        let now = Instant::now();
        self.keys.insert(key.clone(), now);
        self.order.push_back((key, now));
        while self.order.len() > REMEMBERED
            || self
                .order
                .front()
                .is_some_and(|(_, at)| at.elapsed() > REMEMBER_FOR)
        {
            if let Some((key, at)) = self.order.pop_front()
                && self.keys.get(&key) == Some(&at)
            {
                self.keys.remove(&key);
            }
        }
    }

    fn take(&mut self, key: &Key) -> bool {
        self.keys
            .remove(key)
            .is_some_and(|at| at.elapsed() <= REMEMBER_FOR)
    }
}

/// One answer being generated; dropping it forgets it.
#[derive(Debug)]
pub struct Answering<'a> {
    registry: &'a Cancellations,
    key: Key,
    pub token: CancellationToken,
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.registry
            .running
            .lock()
            .expect("cancellations lock")
            .remove(&self.key);
    }
}

impl Cancellations {
    /// Registers an answer about to be generated. Its token is already
    /// cancelled if a cancel for it came first.
    pub fn begin(&self, user: &UserId, id: MessageId) -> Answering<'_> {
        let key = (user.clone(), id);
        let token = CancellationToken::new();
        self.running
            .lock()
            .expect("cancellations lock")
            .insert(key.clone(), token.clone());
        // After registering: a cancel arriving in between finds one or the other.
        if self.recent.lock().expect("cancellations lock").take(&key) {
            token.cancel();
        }
        Answering {
            registry: self,
            key,
            token,
        }
    }

    /// Stops the answer to `id` of `user` if it is being generated here, or
    /// remembers the cancel for when it is picked up.
    pub fn cancel(&self, user: &UserId, id: MessageId) {
        let key = (user.clone(), id);
        if let Some(token) = self.running.lock().expect("cancellations lock").get(&key) {
            token.cancel();
            return;
        }
        self.recent
            .lock()
            .expect("cancellations lock")
            .remember(key);
    }
}

/// This responder's control queue, consumed for the process's life: every
/// cancel is passed to the registry. Whether it is consumed right now is
/// part of the responder's readiness (a responder deaf to cancels would
/// answer in full what users stopped).
#[derive(Debug)]
pub struct CancelListener {
    registry: Arc<Cancellations>,
    broker: Broker,
    /// This process, on `chat_control`.
    instance: String,
    /// Whether the control queue is consumed now.
    listening: AtomicBool,
}

impl CancelListener {
    pub fn new(registry: Arc<Cancellations>, broker: Broker) -> Self {
        Self {
            registry,
            broker,
            instance: format!("rs-{}", &MessageId::new_random().to_string()[..8]),
            listening: AtomicBool::new(false),
        }
    }

    /// Whether cancels reach this responder now.
    pub fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }
}

impl Serve for CancelListener {
    const WHAT: &'static str = "cancels";

    async fn serve(self: Arc<Self>, session: Session, stop: &CancellationToken) -> Served {
        let channel = session.open_channel().await?;
        let names = self.broker.names();
        let limit = session.setup_timeout();
        let setup = async {
            let queue =
                broker::topology::declare_control_queue(&channel, names, &self.instance).await?;
            let options = BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            };
            Ok(channel
                .basic_consume(
                    queue.as_str().into(),
                    "cancels".into(),
                    options,
                    FieldTable::default(),
                )
                .await?)
        };
        let mut deliveries = broker::consumer::bounded_setup(&channel, limit, setup).await?;
        let _listening = Listening::on(&self.listening);
        broker::consumer::deliver_until(&mut deliveries, stop, |delivery| {
            match amqp::decode::<CancelRequest>(&delivery.data) {
                Ok(cancel) => {
                    debug!(user_id = %cancel.user_id, message_id = %cancel.message_id, "cancel");
                    self.registry.cancel(&cancel.user_id, cancel.message_id);
                }
                Err(e) => warn!(error = %e, "unreadable cancel; ignored"),
            }
            std::future::ready(Ok(()))
        })
        .await
    }
}

/// Marks the control queue as consumed for as long as it lives.
struct Listening<'a>(&'a AtomicBool);

impl<'a> Listening<'a> {
    fn on(flag: &'a AtomicBool) -> Self {
        flag.store(true, Ordering::Release);
        Self(flag)
    }
}

impl Drop for Listening<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> UserId {
        UserId::parse("alice").unwrap()
    }

    #[test]
    fn a_cancel_stops_a_running_answer_and_only_that_one() {
        let registry = Cancellations::default();
        let (a, b) = (MessageId::new_random(), MessageId::new_random());
        let first = registry.begin(&user(), a);
        let second = registry.begin(&user(), b);
        registry.cancel(&user(), a);
        assert!(first.token.is_cancelled());
        assert!(!second.token.is_cancelled());
    }

    #[test]
    fn a_cancel_before_the_answer_starts_is_remembered_once() {
        let registry = Cancellations::default();
        let id = MessageId::new_random();
        registry.cancel(&user(), id);
        assert!(registry.begin(&user(), id).token.is_cancelled());
        // Used up: a redelivery of the same request is not cancelled again.
        assert!(!registry.begin(&user(), id).token.is_cancelled());
    }

    #[test]
    fn another_users_cancel_does_not_stop_an_answer() {
        let registry = Cancellations::default();
        let id = MessageId::new_random();
        let answering = registry.begin(&user(), id);
        registry.cancel(&UserId::parse("mallory").unwrap(), id);
        assert!(!answering.token.is_cancelled());
    }

    #[test]
    fn remembered_cancels_are_bounded() {
        let mut recent = Recent::default();
        for _ in 0..REMEMBERED + 10 {
            recent.remember((user(), MessageId::new_random()));
        }
        assert_eq!(recent.keys.len(), REMEMBERED);
        assert_eq!(recent.order.len(), REMEMBERED);
    }
}
