//! The answers this gateway knows of, as read from the completions stream:
//! each one's owner, its chunks in the order they were written, who reads
//! it now, and when it last showed a sign of life. No I/O: the feed writes
//! into it, readers read from it, and a sweep bounds it in time and bytes.

use protocol::amqp::ReplyChunk;
use protocol::{MessageId, UserId};
use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Who reads an answer now. One reader at a time: a newer one ends the
/// older.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadBy {
    /// A reader on this gateway, by its number.
    Here(u64),
    /// A reader on another gateway.
    Elsewhere,
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    pub user: UserId,
    /// Every chunk read for it, in stream order (attempts and repeats
    /// included: the reader sorts them out).
    pub chunks: Vec<Arc<ReplyChunk>>,
    bytes: usize,
    /// A final chunk was read (of some attempt).
    pub ended: bool,
    pub reader: Option<ReadBy>,
    /// When a reader last began reading it, here or elsewhere.
    pub attached: Option<Instant>,
    /// When it last changed.
    touched: Instant,
    /// Told of every change, and of its removal (the sender drops).
    changed: watch::Sender<()>,
}

impl Answer {
    fn new(user: UserId, now: Instant) -> Self {
        Self {
            user,
            chunks: Vec::new(),
            bytes: 0,
            ended: false,
            reader: None,
            attached: None,
            touched: now,
            changed: watch::channel(()).0,
        }
    }

    /// A receiver that wakes at the next change or at the answer's removal.
    pub fn watch(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    fn touch(&mut self, now: Instant) {
        self.touched = now;
        self.changed.send_replace(());
    }
}

/// How long answers are kept.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// An answer that ended, nobody reading it, is kept this long after
    /// its last chunk for a resume.
    pub after_end: Duration,
    /// An answer with no sign of life for this long is gone (its
    /// responders went and it was never re-answered).
    pub idle: Duration,
    /// All answers' chunks together, in bytes; beyond it the ones idle
    /// longest go first (those being read here last).
    pub max_bytes: usize,
}

/// Every answer known, and how many readers each user has here.
#[derive(Debug, Default)]
pub struct Table {
    answers: HashMap<MessageId, Answer>,
    bytes: usize,
    readers: HashMap<UserId, usize>,
}

/// Why a reader may not begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not known, or not this user's (the same answer: nobody learns that
    /// someone else's id exists).
    Unknown,
    /// The user has as many readers here as a user may.
    TooMany,
}

impl Refused {
    pub fn code(self) -> protocol::ErrorCode {
        match self {
            Self::Unknown => protocol::ErrorCode::NotFound,
            Self::TooMany => protocol::ErrorCode::TooManyStreams,
        }
    }
}

impl Table {
    pub fn get(&self, id: &MessageId) -> Option<&Answer> {
        self.answers.get(id)
    }

    pub fn len(&self) -> usize {
        self.answers.len()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Answer `id` of `user` exists from now on (asked here, or noted by
    /// another gateway). A known id of another user is left alone.
    pub fn open(&mut self, id: MessageId, user: &UserId, now: Instant) {
        self.answers
            .entry(id)
            .or_insert_with(|| Answer::new(user.clone(), now));
    }

    /// A chunk read from the stream (`bytes`: its body's size).
    pub fn add(&mut self, chunk: ReplyChunk, bytes: usize, now: Instant) {
        let answer = self
            .answers
            .entry(chunk.in_reply_to)
            .or_insert_with(|| Answer::new(chunk.user_id.clone(), now));
        if answer.user != chunk.user_id {
            return;
        }
        answer.ended |= chunk.r#final;
        answer.bytes += bytes;
        self.bytes += bytes;
        answer.chunks.push(Arc::new(chunk));
        answer.touch(now);
    }

    /// Reader `number` of `user` on this gateway begins reading `id`:
    /// whoever read it before stops. At most `max_per_user` readers of one
    /// user at a time.
    pub fn attach(
        &mut self,
        id: &MessageId,
        user: &UserId,
        number: u64,
        max_per_user: usize,
        now: Instant,
    ) -> Result<watch::Receiver<()>, Refused> {
        let Some(answer) = self.answers.get_mut(id).filter(|a| a.user == *user) else {
            return Err(Refused::Unknown);
        };
        let count = self.readers.entry(user.clone()).or_default();
        if *count >= max_per_user {
            return Err(Refused::TooMany);
        }
        *count += 1;
        answer.reader = Some(ReadBy::Here(number));
        answer.attached = Some(now);
        answer.touch(now);
        Ok(answer.watch())
    }

    /// A reader on another gateway began reading `id`.
    pub fn read_elsewhere(&mut self, id: MessageId, user: &UserId, now: Instant) {
        self.open(id, user, now);
        if let Some(answer) = self.answers.get_mut(&id).filter(|a| a.user == *user) {
            answer.reader = Some(ReadBy::Elsewhere);
            answer.attached = Some(now);
            answer.touch(now);
        }
    }

    /// Reader `number` of `user` stopped reading `id` (it ended, was taken
    /// over, or its client went).
    pub fn detach(&mut self, id: &MessageId, user: &UserId, number: u64, now: Instant) {
        if let Slot::Occupied(mut count) = self.readers.entry(user.clone()) {
            *count.get_mut() -= 1;
            if *count.get() == 0 {
                count.remove();
            }
        }
        if let Some(answer) = self.answers.get_mut(id)
            && answer.reader == Some(ReadBy::Here(number))
        {
            answer.reader = None;
            answer.touched = now;
        }
    }

    /// Answer `id` reached its client whole: forgotten.
    pub fn delivered(&mut self, id: &MessageId, user: &UserId) {
        if self.answers.get(id).is_some_and(|a| a.user == *user) {
            self.remove(id);
        }
    }

    /// Whether `id` is still being answered with nobody reading it, and
    /// nobody began reading it since `since`.
    pub fn unattended_since(&self, id: &MessageId, since: Instant) -> bool {
        self.answers.get(id).is_some_and(|a| {
            !a.ended && a.reader.is_none() && a.attached.is_none_or(|at| at <= since)
        })
    }

    /// Forgets what `keep` no longer keeps; returns how many went.
    pub fn sweep(&mut self, keep: Keep, now: Instant) -> usize {
        let expired: Vec<MessageId> = self
            .answers
            .iter()
            .filter(|(_, a)| {
                let idle = now.saturating_duration_since(a.touched);
                (a.ended && a.reader.is_none() && idle >= keep.after_end) || idle >= keep.idle
            })
            .map(|(id, _)| *id)
            .collect();
        let mut gone = expired.len();
        for id in &expired {
            self.remove(id);
        }
        if self.bytes > keep.max_bytes {
            let mut by_age: Vec<(bool, Instant, MessageId)> = self
                .answers
                .iter()
                .map(|(id, a)| (matches!(a.reader, Some(ReadBy::Here(_))), a.touched, *id))
                .collect();
            by_age.sort_unstable();
            for (_, _, id) in by_age {
                if self.bytes <= keep.max_bytes {
                    break;
                }
                self.remove(&id);
                gone += 1;
            }
        }
        gone
    }

    fn remove(&mut self, id: &MessageId) {
        if let Some(answer) = self.answers.remove(id) {
            self.bytes -= answer.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::amqp::ChatRequest;

    fn user(name: &str) -> UserId {
        UserId::parse(name).unwrap()
    }

    fn chunk(id: MessageId, owner: &UserId, seq: u32, last: bool) -> ReplyChunk {
        let request = ChatRequest::new(id, owner.clone(), "q".into(), 0);
        ReplyChunk::answering(&request, seq, "x".into(), last)
    }

    const KEEP: Keep = Keep {
        after_end: Duration::from_secs(30),
        idle: Duration::from_secs(600),
        max_bytes: 1000,
    };

    #[test]
    fn only_its_user_reads_an_answer_and_a_user_has_few_readers() {
        let (alice, eve) = (user("alice"), user("eve"));
        let now = Instant::now();
        let mut table = Table::default();
        let id = MessageId::new_random();
        table.open(id, &alice, now);
        assert_eq!(
            table.attach(&id, &eve, 1, 4, now).err(),
            Some(Refused::Unknown)
        );
        let unknown = MessageId::new_random();
        assert_eq!(
            table.attach(&unknown, &alice, 1, 4, now).err(),
            Some(Refused::Unknown)
        );
        assert!(table.attach(&id, &alice, 1, 2, now).is_ok());
        assert!(table.attach(&id, &alice, 2, 2, now).is_ok());
        assert_eq!(
            table.attach(&id, &alice, 3, 2, now).err(),
            Some(Refused::TooMany)
        );
        table.detach(&id, &alice, 1, now);
        assert!(
            table.attach(&id, &alice, 3, 2, now).is_ok(),
            "one went: room for one"
        );
        // A chunk of another user's with a known id changes nothing.
        table.add(chunk(id, &eve, 0, true), 10, now);
        assert!(table.get(&id).unwrap().chunks.is_empty());
    }

    #[test]
    fn the_newest_reader_reads_and_the_older_is_told() {
        let alice = user("alice");
        let now = Instant::now();
        let mut table = Table::default();
        let id = MessageId::new_random();
        table.add(chunk(id, &alice, 0, false), 10, now);
        let mut first = table.attach(&id, &alice, 1, 4, now).unwrap();
        first.mark_unchanged();
        table.attach(&id, &alice, 2, 4, now).unwrap();
        assert!(first.has_changed().unwrap(), "the first reader wakes");
        assert_eq!(table.get(&id).unwrap().reader, Some(ReadBy::Here(2)));
        table.read_elsewhere(id, &alice, now);
        assert_eq!(table.get(&id).unwrap().reader, Some(ReadBy::Elsewhere));
        // The first reader leaving does not unseat the current one.
        table.detach(&id, &alice, 1, now);
        assert_eq!(table.get(&id).unwrap().reader, Some(ReadBy::Elsewhere));
    }

    #[test]
    fn an_abandoned_answer_is_unattended_until_someone_reads_it() {
        let alice = user("alice");
        let start = Instant::now();
        let mut table = Table::default();
        let id = MessageId::new_random();
        table.add(chunk(id, &alice, 0, false), 10, start);
        table.attach(&id, &alice, 1, 4, start).unwrap();
        assert!(!table.unattended_since(&id, start), "being read");
        let left = start + Duration::from_secs(1);
        table.detach(&id, &alice, 1, left);
        assert!(table.unattended_since(&id, left));
        table.read_elsewhere(id, &alice, left + Duration::from_secs(5));
        assert!(!table.unattended_since(&id, left), "resumed elsewhere");
        let mut ended = Table::default();
        ended.add(chunk(id, &alice, 0, true), 10, start);
        assert!(
            !ended.unattended_since(&id, start),
            "nothing left to cancel"
        );
    }

    #[test]
    fn answers_are_kept_in_time_and_in_bytes_and_forgotten_once_delivered() {
        let alice = user("alice");
        let start = Instant::now();
        let mut table = Table::default();
        let (done, going, read) = (
            MessageId::new_random(),
            MessageId::new_random(),
            MessageId::new_random(),
        );
        table.add(chunk(done, &alice, 0, true), 100, start);
        table.add(chunk(going, &alice, 0, false), 100, start);
        table.add(chunk(read, &alice, 0, true), 100, start);
        table.attach(&read, &alice, 1, 4, start).unwrap();
        assert_eq!(table.sweep(KEEP, start + Duration::from_secs(29)), 0);
        assert_eq!(table.sweep(KEEP, start + Duration::from_secs(31)), 1);
        assert!(
            table.get(&done).is_none(),
            "ended and unread: gone after the window"
        );
        assert!(table.get(&going).is_some() && table.get(&read).is_some());
        assert_eq!(
            table.sweep(KEEP, start + Duration::from_secs(601)),
            2,
            "idle"
        );
        assert_eq!(table.bytes(), 0);

        let mut full = Table::default();
        let ids: Vec<MessageId> = (0..12).map(|_| MessageId::new_random()).collect();
        for (i, id) in ids.iter().enumerate() {
            full.add(
                chunk(*id, &alice, 0, false),
                100,
                start + Duration::from_millis(i as u64),
            );
        }
        full.attach(&ids[0], &alice, 1, 4, start).unwrap();
        assert_eq!(full.sweep(KEEP, start + Duration::from_secs(1)), 2);
        assert!(full.bytes() <= KEEP.max_bytes);
        assert!(full.get(&ids[0]).is_some(), "the one being read here stays");
        assert!(
            full.get(&ids[1]).is_none() && full.get(&ids[2]).is_none(),
            "the oldest go"
        );

        full.delivered(&ids[5], &user("eve"));
        assert!(
            full.get(&ids[5]).is_some(),
            "only its user's delivery counts"
        );
        full.delivered(&ids[5], &alice);
        assert!(full.get(&ids[5]).is_none());
    }
}
