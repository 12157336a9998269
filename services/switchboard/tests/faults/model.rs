//! Users that behave like the web page (reconnect, re-send unaccepted
//! messages with the same ids, acknowledge chunks, show each (reply id, seq)
//! once), and the classification of what they saw.

use crate::processes::TEMPLATE;
use protocol::ws::{ClientFrame, ServerFrame};
use protocol::{MessageId, ReplyId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use testkit::{ChatClient, Guest};
use tokio::time::Instant;

/// How a user behaves in a scenario.
#[derive(Debug, Clone)]
pub struct Behaviour {
    pub messages: usize,
    /// Pause between new messages.
    pub pace: Duration,
    /// Every this-many frames (on average) the user's socket drops.
    pub drop_one_in: Option<u64>,
    /// Every this-many messages is a poison request.
    pub poison_one_in: Option<usize>,
}

/// What one message became.
#[derive(Debug, Default)]
struct Seen {
    accepted: bool,
    /// Shown chunks by seq, as the page shows them.
    shown: BTreeMap<u32, String>,
    reply_ids: HashSet<ReplyId>,
    final_seq: Option<u32>,
    /// The highest seq shown so far.
    highest_seq: Option<u32>,
    failed: bool,
    /// Last time it was sent, to re-send after a retryable refusal.
    sent_at: Option<Instant>,
    /// When the user first sent it, and when its answer was complete.
    released_at: Option<Instant>,
    resolved_at: Option<Instant>,
}

impl Seen {
    fn resolved(&self) -> bool {
        self.failed
            || self
                .final_seq
                .is_some_and(|f| (0..=f).all(|s| self.shown.contains_key(&s)))
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
             chunks shown once {} repeats dropped {} MISSING {} SHOWN TWICE {} wrong answers {} out of order {} | reconnects {}",
            self.requests,
            self.accepted,
            self.answered,
            self.failed_and_told,
            self.lost,
            self.chunks_shown_once,
            self.wire_repeats_dropped,
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
                        let text = if poison {
                            format!("message {released} {}", crate::processes::POISON)
                        } else {
                            format!("message {released}")
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
                            if chunk.error.is_some() {
                                s.failed = true;
                            } else {
                                match s.shown.entry(chunk.seq) {
                                    std::collections::btree_map::Entry::Occupied(_) => wire_repeats += 1,
                                    std::collections::btree_map::Entry::Vacant(slot) => {
                                        if s.highest_seq.is_some_and(|h| h > chunk.seq) {
                                            out_of_order += 1;
                                        }
                                        s.highest_seq = s.highest_seq.max(Some(chunk.seq));
                                        slot.insert(chunk.text);
                                        if chunk.r#final {
                                            s.final_seq = Some(chunk.seq);
                                        }
                                    }
                                }
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
                        ServerFrame::Status { .. } | ServerFrame::MessageStatus { .. } | ServerFrame::RoomMessage { .. } | ServerFrame::RoomReceipt { .. } | ServerFrame::Pong | ServerFrame::Welcome { .. } => {}
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
        out_of_order,
        reconnects,
        ..Tally::default()
    };
    for (id, text) in &messages {
        let s = &seen[id];
        tally.accepted += usize::from(s.accepted);
        if s.failed {
            tally.failed_and_told += 1;
        } else if s.resolved() {
            tally.answered += 1;
            if let (Some(released), Some(resolved)) = (s.released_at, s.resolved_at) {
                tally.completions.push((resolved, resolved - released));
            }
            let shown: String = s.shown.values().map(String::as_str).collect();
            if shown != TEMPLATE.replace("{text}", text) {
                tally.wrong_answers += 1;
            }
        } else {
            tally.lost += 1;
            if let Some(f) = s.final_seq {
                tally.chunks_missing += (0..=f).filter(|seq| !s.shown.contains_key(seq)).count();
            }
        }
        tally.chunks_shown_once += s.shown.len();
        // Two reply ids for one message would put the answer on screen twice.
        tally.shown_twice += s.reply_ids.len().saturating_sub(1);
    }
    tally
}

fn send(id: MessageId, text: &str) -> String {
    ClientFrame::Send {
        id,
        text: text.to_owned(),
        context: Vec::new(),
        room_id: None,
    }
    .to_json()
}
