//! Users that behave like the web page (reconnect, re-send unaccepted
//! messages with the same ids, acknowledge chunks, show each answer by the
//! attempt rule — one attempt whole, each chunk once), and the
//! classification of what they saw.

use crate::processes::TEMPLATE;
use protocol::answer::{Arrival, ShownAnswer};
use protocol::ws::{ClientFrame, ServerFrame};
use protocol::{MessageId, ReplyId};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use testkit::{ChatClient, Guest};
use tokio::time::Instant;

/// How a user behaves in a scenario.
#[derive(Clone)]
pub struct Behaviour {
    pub messages: usize,
    /// Pause between new messages.
    pub pace: Duration,
    /// Every this-many frames (on average) the user's socket drops.
    pub drop_one_in: Option<u64>,
    /// Every this-many messages is a poison request.
    pub poison_one_in: Option<usize>,
    /// Whether an answer shown for a message is right: `(message text,
    /// answer text)`. The mock's template by default.
    pub right_answer: RightAnswer,
}

/// Judges an answer shown for a message: `(message text, answer text)`.
pub type RightAnswer = Arc<dyn Fn(&str, &str) -> bool + Send + Sync>;

/// The mock's answer to `text`.
pub fn the_template(text: &str, shown: &str) -> bool {
    shown == TEMPLATE.replace("{text}", text)
}

/// What one message became.
#[derive(Debug, Default)]
struct Seen {
    accepted: bool,
    /// The answer as the page shows it.
    answer: ShownAnswer,
    reply_ids: HashSet<ReplyId>,
    /// The highest seq seen so far, by attempt.
    highest: HashMap<u64, u32>,
    /// Every chunk as it came: (attempt, seq, text, what became of it), to
    /// explain a wrong answer.
    log: Vec<(u64, u32, String, Arrival)>,
    /// Last time it was sent, to re-send after a retryable refusal.
    sent_at: Option<Instant>,
    /// When the user first sent it, and when its answer was complete.
    released_at: Option<Instant>,
    resolved_at: Option<Instant>,
}

impl Seen {
    fn resolved(&self) -> bool {
        self.answer.is_complete()
    }
}

/// Counts over a scenario, in Jepsen's spirit.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tally {
    pub requests: usize,
    pub accepted: usize,
    pub answered: usize,
    pub failed_and_told: usize,
    pub lost: usize,
    pub chunks_shown_once: usize,
    pub wire_repeats_dropped: usize,
    /// Chunks of an older attempt than the one shown, not shown.
    pub stale_dropped: usize,
    /// Answers a newer attempt replaced while they streamed.
    pub restarted: usize,
    pub chunks_missing: usize,
    pub shown_twice: usize,
    pub wrong_answers: usize,
    /// Chunks that arrived after a later chunk of the same answer.
    pub out_of_order: usize,
    pub reconnects: usize,
    /// Every answered message: when its answer was complete, and how long
    /// after it was first sent.
    pub completions: Vec<(Instant, Duration)>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        self.requests += other.requests;
        self.accepted += other.accepted;
        self.answered += other.answered;
        self.failed_and_told += other.failed_and_told;
        self.lost += other.lost;
        self.chunks_shown_once += other.chunks_shown_once;
        self.wire_repeats_dropped += other.wire_repeats_dropped;
        self.stale_dropped += other.stale_dropped;
        self.restarted += other.restarted;
        self.chunks_missing += other.chunks_missing;
        self.shown_twice += other.shown_twice;
        self.wrong_answers += other.wrong_answers;
        self.out_of_order += other.out_of_order;
        self.reconnects += other.reconnects;
        self.completions.extend(other.completions);
    }

    /// The longest time after `from` during which no answer completed: how
    /// long the service took to recover from a fault struck then.
    pub fn longest_stall_after(&self, from: Instant) -> Duration {
        let mut done: Vec<Instant> = self.completions.iter().map(|(at, _)| *at).collect();
        done.sort();
        let mut last = from;
        let mut longest = Duration::ZERO;
        for at in done.into_iter().filter(|at| *at >= from) {
            longest = longest.max(at - last);
            last = at;
        }
        longest
    }

    /// The `q`-quantile (0..1) of send → complete answer, over answers
    /// completed at or after `from`.
    pub fn latency_quantile(&self, from: Instant, q: f64) -> Duration {
        let mut latencies: Vec<Duration> = self
            .completions
            .iter()
            .filter(|(at, _)| *at >= from)
            .map(|(_, latency)| *latency)
            .collect();
        latencies.sort();
        let Some(last) = latencies.len().checked_sub(1) else {
            return Duration::ZERO;
        };
        latencies[((last as f64) * q).round() as usize]
    }

    pub fn print(&self, scenario: &str) {
        println!(
            "[faults] {scenario}: requests {} accepted {} answered {} failed+told {} LOST {} | \
             chunks shown once {} repeats dropped {} stale dropped {} restarted {} MISSING {} SHOWN TWICE {} WRONG ANSWERS {} out of order {} | reconnects {}",
            self.requests,
            self.accepted,
            self.answered,
            self.failed_and_told,
            self.lost,
            self.chunks_shown_once,
            self.wire_repeats_dropped,
            self.stale_dropped,
            self.restarted,
            self.chunks_missing,
            self.shown_twice,
            self.wrong_answers,
            self.out_of_order,
            self.reconnects
        );
    }
}

/// A tiny deterministic generator (xorshift) for random socket drops.
struct Dice(u64);

impl Dice {
    fn roll(&mut self, one_in: u64) -> bool {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % one_in == 0
    }
}

/// Runs `users` users against `addr` until every message is resolved or the
/// deadline passes; `resolved` counts resolved messages as they happen, so a
/// scenario can strike mid-run.
pub async fn run_users(
    addrs: Vec<SocketAddr>,
    guests: Vec<Guest>,
    behaviour: Behaviour,
    resolved: Arc<AtomicUsize>,
    deadline: Duration,
) -> Tally {
    let deadline = Instant::now() + deadline;
    let mut tasks = Vec::new();
    for (n, guest) in guests.into_iter().enumerate() {
        let behaviour = behaviour.clone();
        let resolved = resolved.clone();
        let addrs = addrs.clone();
        tasks.push(tokio::spawn(async move {
            run_user(addrs, n, guest, behaviour, resolved, deadline).await
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.add(task.await.unwrap());
    }
    tally
}

async fn run_user(
    addrs: Vec<SocketAddr>,
    n: usize,
    guest: Guest,
    behaviour: Behaviour,
    resolved_total: Arc<AtomicUsize>,
    deadline: Instant,
) -> Tally {
    let mut dice = Dice(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
    let mut gateway = n % addrs.len();
    let mut out_of_order = 0;
    let mut messages: Vec<(MessageId, String)> = Vec::new();
    let mut seen: HashMap<MessageId, Seen> = HashMap::new();
    let mut wire_repeats = 0;
    let mut stale = 0;
    let mut reconnects = 0;
    let mut released = 0;
    let mut resolved = HashSet::new();
    let mut connected_before = false;
    let mut pace = tokio::time::interval(behaviour.pace);

    'connection: while Instant::now() < deadline && resolved.len() < behaviour.messages {
        let Ok(mut client) = ChatClient::connect(addrs[gateway], &guest.token).await else {
            // The gateway is away: another one, shortly, as a load balancer
            // and the page's backoff would.
            gateway = (gateway + 1) % addrs.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if connected_before {
            reconnects += 1;
        }
        connected_before = true;
        // Everything released but not accepted goes again, same ids.
        for (id, text) in &messages {
            let s = seen.get_mut(id).unwrap();
            if !s.accepted && !s.resolved() {
                s.sent_at = Some(Instant::now());
                if client.send_text(&send(*id, text)).await.is_err() {
                    continue 'connection;
                }
            }
        }
        loop {
            if Instant::now() >= deadline || resolved.len() >= behaviour.messages {
                break 'connection;
            }
            tokio::select! {
                _ = pace.tick() => {
                    if released < behaviour.messages {
                        released += 1;
                        let poison = behaviour.poison_one_in.is_some_and(|n| released % n == 0);
                        // Unique across users: a model's answers are told apart by it.
                        let text = if poison {
                            format!("user {n} message {released} {}", crate::processes::POISON)
                        } else {
                            format!("user {n} message {released}")
                        };
                        let id = MessageId::new_random();
                        messages.push((id, text.clone()));
                        let now = Some(Instant::now());
                        seen.insert(id, Seen { sent_at: now, released_at: now, ..Seen::default() });
                        if client.send_text(&send(id, &text)).await.is_err() {
                            continue 'connection;
                        }
                    }
                    // Re-send what was refused as retryable a while ago.
                    for (id, text) in &messages {
                        let s = seen.get_mut(id).unwrap();
                        if !s.accepted && !s.resolved() && s.sent_at.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                            s.sent_at = Some(Instant::now());
                            if client.send_text(&send(*id, text)).await.is_err() {
                                continue 'connection;
                            }
                        }
                    }
                }
                frame = tokio::time::timeout(Duration::from_secs(5), client.next_frame()) => {
                    let Ok(Ok(frame)) = frame else { continue 'connection };
                    match frame {
                        ServerFrame::Accepted { id, .. } => {
                            if let Some(s) = seen.get_mut(&id) {
                                s.accepted = true;
                            }
                        }
                        ServerFrame::Reply(chunk) => {
                            let Some(s) = seen.get_mut(&chunk.in_reply_to) else { continue };
                            // A reply proves the message was taken.
                            s.accepted = true;
                            s.reply_ids.insert(chunk.id);
                            let arrival = s.answer.add(&chunk);
                            s.log.push((chunk.attempt, chunk.seq, chunk.text.clone(), arrival));
                            match arrival {
                                Arrival::Repeat => wire_repeats += 1,
                                Arrival::Stale => stale += 1,
                                Arrival::Shown | Arrival::Restarted => {
                                    let highest = s.highest.entry(chunk.attempt).or_default();
                                    if *highest > chunk.seq {
                                        out_of_order += 1;
                                    }
                                    *highest = (*highest).max(chunk.seq);
                                }
                                Arrival::AfterEnd | Arrival::Failed => {}
                            }
                            if s.resolved() && resolved.insert(chunk.in_reply_to) {
                                s.resolved_at = Some(Instant::now());
                                resolved_total.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        ServerFrame::Error { id: Some(id), retryable: true, .. } => {
                            if let Some(s) = seen.get_mut(&id) {
                                s.sent_at = Some(Instant::now());
                            }
                        }
                        ServerFrame::Error { code, message, .. } => panic!("unexpected error {code}: {message}"),
                        ServerFrame::Status { .. } | ServerFrame::MessageStatus { .. } | ServerFrame::RoomMessage { .. } | ServerFrame::RoomReceipt { .. } | ServerFrame::RoomPresence { .. } | ServerFrame::Pong | ServerFrame::Welcome { .. } => {}
                    }
                    if behaviour.drop_one_in.is_some_and(|n| dice.roll(n)) {
                        drop(client);
                        continue 'connection;
                    }
                }
            }
        }
    }

    let mut tally = Tally {
        requests: messages.len(),
        wire_repeats_dropped: wire_repeats,
        stale_dropped: stale,
        out_of_order,
        reconnects,
        ..Tally::default()
    };
    for (id, text) in &messages {
        let s = &seen[id];
        tally.accepted += usize::from(s.accepted);
        tally.restarted += s.answer.restarts() as usize;
        if s.answer.error().is_some() {
            tally.failed_and_told += 1;
        } else if s.resolved() {
            tally.answered += 1;
            if let (Some(released), Some(resolved)) = (s.released_at, s.resolved_at) {
                tally.completions.push((resolved, resolved - released));
            }
            if !(behaviour.right_answer)(text, &s.answer.text()) {
                tally.wrong_answers += 1;
                println!(
                    "[faults] WRONG ANSWER to {text:?}: shown {:?}; chunks as they came (attempt, seq, text, fate): {:?}",
                    s.answer.text(),
                    s.log
                );
            }
        } else {
            tally.lost += 1;
            tally.chunks_missing += s.answer.missing();
        }
        tally.chunks_shown_once += s.answer.chunks();
        // Two reply ids for one message would put the answer on screen twice.
        tally.shown_twice += s.reply_ids.len().saturating_sub(1);
    }
    tally
}

fn send(id: MessageId, text: &str) -> String {
    ClientFrame::Send(protocol::ws::Message {
        id,
        text: text.to_owned(),
        context: Vec::new(),
        room_id: None,
    })
    .to_json()
}
