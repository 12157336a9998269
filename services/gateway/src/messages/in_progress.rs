//! Which of a user's messages are being answered, as far as this gateway
//! knows: what `cancel` checks and what the per-user cap counts.

use crate::replies::AnswerWatcher;
use protocol::{MessageId, UserId};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Messages per user recorded as being answered; a cancel of any beyond
/// gets `nothing_to_cancel`.
const MAX_PER_USER: usize = 1024;
/// A message with no sign of its answer for this long is forgotten (a reply
/// queue is gone after 30 minutes without a consumer, and its answer too).
const FORGET_AFTER: Duration = Duration::from_secs(30 * 60);
/// Recorded messages between two sweeps of the forgotten ones.
const SWEEP_EVERY: u64 = 4096;

/// The cap that keeps one user's backlog from delaying everyone else's.
#[derive(Debug, Clone, Copy)]
pub struct Fairness {
    pub max_pending_per_user: usize,
    pub pending_window: Duration,
}

/// The messages being answered, as far as this gateway knows: accepted
/// here, or seen streaming through it, and no final chunk yet. Bounded per
/// user, and in time.
#[derive(Debug, Default)]
pub struct InProgress {
    users: Mutex<Record>,
}

#[derive(Debug, Default)]
struct Record {
    /// Per user: each message and when it last showed a sign of life.
    messages: HashMap<UserId, HashMap<MessageId, Instant>>,
    /// Messages recorded since the last sweep.
    since_sweep: u64,
}

/// Whether a message may go to the responders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admitted {
    /// Recorded as waiting from now on.
    New,
    /// Waiting already (sent again with the same id).
    Again,
    /// Its user has as many waiting as a user may.
    Refused,
}

impl InProgress {
    /// Records message `id` of `user` as waiting, if the user has fewer than
    /// the cap waiting (counting those with a sign of life within the
    /// window).
    pub(super) fn admit(&self, user: &UserId, id: MessageId, fairness: Fairness) -> Admitted {
        let mut record = self.users.lock().expect("in-progress lock");
        let messages = record.messages.entry(user.clone()).or_default();
        if let Some(at) = messages.get_mut(&id) {
            *at = Instant::now();
            return Admitted::Again;
        }
        let waiting = messages
            .values()
            .filter(|at| at.elapsed() < fairness.pending_window)
            .count();
        if waiting >= fairness.max_pending_per_user {
            return Admitted::Refused;
        }
        drop(record);
        self.begin(user, id);
        Admitted::New
    }

    pub(super) fn begin(&self, user: &UserId, id: MessageId) {
        let mut record = self.users.lock().expect("in-progress lock");
        record.since_sweep += 1;
        if record.since_sweep >= SWEEP_EVERY {
            record.since_sweep = 0;
            record.messages.retain(|_, messages| {
                messages.retain(|_, at| at.elapsed() < FORGET_AFTER);
                !messages.is_empty()
            });
        }
        let messages = record.messages.entry(user.clone()).or_default();
        if messages.len() < MAX_PER_USER || messages.contains_key(&id) {
            messages.insert(id, Instant::now());
        }
    }

    pub(super) fn contains(&self, user: &UserId, id: MessageId) -> bool {
        let record = self.users.lock().expect("in-progress lock");
        record
            .messages
            .get(user)
            .and_then(|messages| messages.get(&id))
            .is_some_and(|at| at.elapsed() < FORGET_AFTER)
    }

    pub(super) fn finish(&self, user: &UserId, id: MessageId) {
        let mut record = self.users.lock().expect("in-progress lock");
        if let Some(messages) = record.messages.get_mut(user) {
            messages.remove(&id);
            if messages.is_empty() {
                record.messages.remove(user);
            }
        }
    }
}

impl AnswerWatcher for InProgress {
    fn chunk_seen(&self, user: &UserId, message: MessageId, last: bool) {
        if last {
            self.finish(user, message);
        } else {
            self.begin(user, message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> UserId {
        UserId::parse("alice").unwrap()
    }

    #[test]
    fn a_message_is_in_progress_from_acceptance_or_its_first_chunk_to_its_last() {
        let record = InProgress::default();
        let (sent, seen) = (MessageId::new_random(), MessageId::new_random());
        record.begin(&alice(), sent);
        record.chunk_seen(&alice(), seen, false);
        assert!(record.contains(&alice(), sent) && record.contains(&alice(), seen));
        assert!(!record.contains(&UserId::parse("bob").unwrap(), sent));
        record.chunk_seen(&alice(), sent, true);
        assert!(!record.contains(&alice(), sent));
        assert!(record.contains(&alice(), seen));
    }

    #[test]
    fn one_user_may_have_only_so_many_messages_waiting() {
        let record = InProgress::default();
        let fairness = Fairness {
            max_pending_per_user: 2,
            pending_window: Duration::from_secs(60),
        };
        let (a, b, c) = (
            MessageId::new_random(),
            MessageId::new_random(),
            MessageId::new_random(),
        );
        assert_eq!(record.admit(&alice(), a, fairness), Admitted::New);
        assert_eq!(record.admit(&alice(), b, fairness), Admitted::New);
        assert_eq!(record.admit(&alice(), c, fairness), Admitted::Refused);
        assert_eq!(
            record.admit(&alice(), a, fairness),
            Admitted::Again,
            "a resend"
        );
        let bob = UserId::parse("bob").unwrap();
        assert_eq!(
            record.admit(&bob, c, fairness),
            Admitted::New,
            "others go on"
        );
        record.chunk_seen(&alice(), a, true);
        assert_eq!(
            record.admit(&alice(), c, fairness),
            Admitted::New,
            "a was answered"
        );
        // Messages without a sign of life for the window stop counting.
        let short = Fairness {
            pending_window: Duration::ZERO,
            ..fairness
        };
        assert_eq!(
            record.admit(&alice(), MessageId::new_random(), short),
            Admitted::New
        );
    }

    #[test]
    fn the_record_is_bounded_per_user() {
        let record = InProgress::default();
        let ids: Vec<_> = (0..MAX_PER_USER + 5)
            .map(|_| MessageId::new_random())
            .collect();
        for id in &ids {
            record.begin(&alice(), *id);
        }
        assert!(record.contains(&alice(), ids[0]));
        assert!(!record.contains(&alice(), ids[MAX_PER_USER]));
    }
}
