//! One run: sessions, sockets, users sending on schedule, histograms.

use crate::Plan;
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use protocol::MessageId;
use protocol::answer::{Arrival, ShownAnswer};
use protocol::ws::{ClientFrame, ServerFrame};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

/// How long to wait for answers still outstanding when the run ends.
pub(crate) const DRAIN: Duration = Duration::from_secs(10);

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) answered: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    /// `reply` frames received (repeats included).
    pub(crate) chunks: AtomicU64,
    /// `message_status` frames received.
    pub(crate) statuses: AtomicU64,
    /// Answers a newer attempt replaced while they streamed.
    pub(crate) restarts: AtomicU64,
    /// `error` frames by code.
    pub(crate) error_codes: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    /// Messages that may still be sent (the run's `--messages` bound).
    pub(crate) budget: AtomicU64,
}

impl Counters {
    pub(crate) fn take_one(&self) -> bool {
        self.budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
            .is_ok()
    }
}

/// Latency percentiles, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p90_ms: ms(h.value_at_quantile(0.9)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub label: String,
    pub mode: String,
    pub users: usize,
    pub seconds: f64,
    pub sent: u64,
    pub answered: u64,
    pub incomplete: u64,
    pub errors: u64,
    /// Sockets that dropped and were opened again (with the same token, so
    /// the user's outstanding replies follow them).
    pub reconnects: u64,
    /// `error` frames received, by code.
    #[serde(default)]
    pub error_codes: std::collections::BTreeMap<String, u64>,
    pub answers_per_second: f64,
    /// `reply` frames per answered message.
    #[serde(default)]
    pub chunks_per_answer: f64,
    /// Messages through RabbitMQ per answered message — the request, its
    /// chunks and any `processing` status — each published, delivered and
    /// acknowledged once.
    #[serde(default)]
    pub broker_messages_per_answer: f64,
    /// Answers restarted by a newer attempt while they streamed.
    #[serde(default)]
    pub restarts: u64,
    pub first_chunk: Percentiles,
    pub final_chunk: Percentiles,
    /// Send → final chunk over the whole distribution, as
    /// `[percentile, milliseconds]` pairs, for `scripts/plot-latency`.
    pub final_chunk_distribution: Vec<[f64; 2]>,
    /// Open loop: how late the generator itself sent each message after
    /// its intended time (counted in the latencies above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lateness: Option<Percentiles>,
}

impl Report {
    pub fn print(&self) {
        println!();
        println!(
            "{} — {}, {} users, {:.1} s",
            self.label, self.mode, self.users, self.seconds
        );
        println!(
            "sent {}  answered {}  incomplete {}  errors {}  reconnects {}  → {:.0} answers/s",
            self.sent,
            self.answered,
            self.incomplete,
            self.errors,
            self.reconnects,
            self.answers_per_second
        );
        println!(
            "{:.2} chunks per answer, {:.2} broker messages per answer, {} restarted",
            self.chunks_per_answer, self.broker_messages_per_answer, self.restarts
        );
        if !self.error_codes.is_empty() {
            println!("errors by code: {:?}", self.error_codes);
        }
        println!(
            "{:<22}{:>9}{:>9}{:>9}{:>10}{:>10}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max"
        );
        for (name, p) in [
            ("send → first chunk", &self.first_chunk),
            ("send → final chunk", &self.final_chunk),
        ] {
            println!(
                "{name:<22}{:>9.2}{:>9.2}{:>9.2}{:>10.2}{:>10.2}",
                p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            );
        }
        if let Some(p) = &self.send_lateness {
            println!(
                "{:<22}{:>9.2}{:>9.2}{:>9.2}{:>10.2}{:>10.2}",
                "(sent late by)", p.p50_ms, p.p90_ms, p.p99_ms, p.p999_ms, p.max_ms
            );
        }
    }
}

/// The histogram's percentile distribution, `[percentile, ms]`, denser
/// towards the tail (five steps per halving of the distance to 100 %).
pub(crate) fn distribution(h: &Histogram<u64>) -> Vec<[f64; 2]> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(5)
        .map(|v| {
            [
                v.quantile_iterated_to() * 100.0,
                v.value_iterated_to() as f64 / 1000.0,
            ]
        })
        .collect()
}

pub(crate) fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds")
}

/// A message sent and not yet answered.
struct Pending {
    /// When it was due to be sent.
    due: Instant,
    answer: ShownAnswer,
}

struct UserResult {
    first: Histogram<u64>,
    last: Histogram<u64>,
    /// Open loop: how late each message left after its intended time.
    late: Histogram<u64>,
    incomplete: u64,
}

pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    let http = reqwest::Client::new();
    let mut sockets = Vec::with_capacity(plan.users);
    for n in 0..plan.users {
        let gateway = &plan.gateways[n % plan.gateways.len()];
        let token = guest_token(&http, gateway).await?;
        // Like a browser: no Nagle delay on small frames.
        let (mut ws, _) =
            tokio_tungstenite::connect_async_with_config(socket_url(gateway, &token), None, true)
                .await?;
        // The welcome frame.
        ws.next().await.context("no welcome")??;
        sockets.push((socket_url(gateway, &token), ws));
    }
    let counters = Arc::new(Counters {
        budget: AtomicU64::new(plan.max_messages),
        ..Counters::default()
    });
    let t0 = Instant::now() + Duration::from_millis(200);
    let deadline = t0 + plan.duration;
    // Open loop: one pacer thread tells each user when its next message is
    // due (the runtime's timers fire on millisecond ticks, up to a
    // millisecond late, and that lateness would count as latency).
    let mut schedules: Vec<Option<mpsc::UnboundedReceiver<Instant>>> = Vec::new();
    let mut pacer = None;
    if let Some(rate) = plan.rate {
        let (dues, receivers): (Vec<_>, Vec<_>) = (0..sockets.len())
            .map(|_| mpsc::unbounded_channel())
            .unzip();
        schedules.extend(receivers.into_iter().map(Some));
        pacer = Some(std::thread::spawn(move || pace(dues, rate, t0, deadline)));
    } else {
        schedules.resize_with(sockets.len(), || None);
    }
    let mut users = Vec::new();
    for ((url, ws), schedule) in sockets.into_iter().zip(schedules) {
        let plan = plan.clone();
        let counters = counters.clone();
        users.push(tokio::spawn(async move {
            user(url, ws, schedule, &plan, &counters, t0, deadline).await
        }));
    }
    let progress = tokio::spawn(progress(counters.clone(), t0, deadline + DRAIN));
    let mut first = histogram();
    let mut last = histogram();
    let mut late = histogram();
    let mut incomplete = 0;
    for user in users {
        let result = user.await?;
        first.add(&result.first)?;
        last.add(&result.last)?;
        late.add(&result.late)?;
        incomplete += result.incomplete;
    }
    progress.abort();
    if let Some(pacer) = pacer {
        let _ = pacer.join();
    }
    let seconds = plan.duration.as_secs_f64();
    let answered = counters.answered.load(Ordering::Relaxed);
    let per_answer = |n: u64| n as f64 / answered.max(1) as f64;
    let chunks = counters.chunks.load(Ordering::Relaxed);
    let statuses = counters.statuses.load(Ordering::Relaxed);
    Ok(Report {
        label: plan.label.clone(),
        mode: match plan.rate {
            Some(rate) => format!("open loop at {rate} msg/s"),
            None => format!("closed loop, {} in flight per user", plan.in_flight),
        },
        users: plan.users,
        seconds,
        sent: counters.sent.load(Ordering::Relaxed),
        answered,
        incomplete,
        errors: counters.errors.load(Ordering::Relaxed),
        reconnects: counters.reconnects.load(Ordering::Relaxed),
        error_codes: counters.error_codes.lock().expect("codes").clone(),
        answers_per_second: last.len() as f64 / seconds,
        chunks_per_answer: per_answer(chunks),
        broker_messages_per_answer: per_answer(answered + chunks + statuses),
        restarts: counters.restarts.load(Ordering::Relaxed),
        first_chunk: Percentiles::of(&first),
        final_chunk: Percentiles::of(&last),
        final_chunk_distribution: distribution(&last),
        send_lateness: plan.rate.map(|_| Percentiles::of(&late)),
    })
}

/// The open loop's clock, on a thread of its own: message `m` of the run is
/// due at `t0 + m / rate`, from user `m mod users` (so each user sends
/// every `users / rate` seconds). Sleeping on the OS timer wakes within
/// tens of microseconds of the due time.
fn pace(users: Vec<mpsc::UnboundedSender<Instant>>, rate: f64, t0: Instant, deadline: Instant) {
    let (t0, deadline) = (t0.into_std(), deadline.into_std());
    for m in 0u64.. {
        let due = t0 + Duration::from_secs_f64(m as f64 / rate);
        if due >= deadline {
            break;
        }
        if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
            std::thread::sleep(wait);
        }
        // A user that gave up (its socket is gone) no longer listens.
        let _ = users[(m % users.len() as u64) as usize].send(Instant::from_std(due));
    }
}

/// A guest identity's token from `POST /api/session`.
pub(crate) async fn guest_token(http: &reqwest::Client, gateway: &str) -> anyhow::Result<String> {
    let session: serde_json::Value = http
        .post(format!("{gateway}/api/session"))
        .send()
        .await
        .with_context(|| format!("POST {gateway}/api/session"))?
        .error_for_status()?
        .json()
        .await?;
    Ok(session["token"].as_str().context("no token")?.to_owned())
}

/// The gateway's WebSocket address with `token`.
pub(crate) fn socket_url(gateway: &str, token: &str) -> String {
    format!("{}/ws?token={token}", gateway.replacen("http", "ws", 1))
}

pub(crate) async fn progress(counters: Arc<Counters>, t0: Instant, until: Instant) {
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    let mut answered_before = 0;
    while tick.tick().await < until {
        let answered = counters.answered.load(Ordering::Relaxed);
        eprintln!(
            "[loadgen] t={:>3.0}s sent {} answered {} errors {} — {} answers/s",
            t0.elapsed().as_secs_f64(),
            counters.sent.load(Ordering::Relaxed),
            answered,
            counters.errors.load(Ordering::Relaxed),
            answered - answered_before
        );
        answered_before = answered;
    }
}

pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Times a socket may drop and be opened again before its user gives up.
const MAX_RECONNECTS: u32 = 5;

/// A socket's write half, fed through a queue so reading never waits on it.
struct Outbound {
    queue: mpsc::Sender<Message>,
    writer: tokio::task::JoinHandle<()>,
}

impl Outbound {
    fn new(sink: futures_util::stream::SplitSink<Socket, Message>) -> Self {
        let (queue, mut outbox) = mpsc::channel::<Message>(4096);
        let mut sink = sink;
        let writer = tokio::spawn(async move {
            while let Some(message) = outbox.recv().await {
                if sink.send(message).await.is_err() {
                    break;
                }
            }
        });
        Self { queue, writer }
    }

    fn send(&self, frame: &ClientFrame) -> bool {
        self.queue.try_send(Message::text(frame.to_json())).is_ok()
    }

    async fn close(self) {
        drop(self.queue);
        let _ = self.writer.await;
    }
}

/// Opens the socket again after a drop and waits for its `welcome`.
async fn reconnect(url: &str) -> Option<Socket> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .ok()?;
    matches!(ws.next().await, Some(Ok(Message::Text(_)))).then_some(ws)
}

/// One user: sends when `schedule` says (open loop) or keeps `in_flight`
/// outstanding (closed loop), acks every chunk, and times each message from
/// its intended send time to its first and final chunk. A dropped socket is
/// opened again (its unacknowledged chunks come back on the new one); a
/// message sent into a dying socket may be lost and then counts as
/// incomplete.
async fn user(
    url: String,
    ws: Socket,
    mut schedule: Option<mpsc::UnboundedReceiver<Instant>>,
    plan: &Plan,
    counters: &Counters,
    t0: Instant,
    deadline: Instant,
) -> UserResult {
    let (sink, mut stream) = ws.split();
    let mut out = Outbound::new(sink);
    let mut first = histogram();
    let mut last = histogram();
    let mut late = histogram();
    let mut pending: HashMap<MessageId, Pending> = HashMap::new();
    let send = |out: &Outbound, due: Instant, pending: &mut HashMap<MessageId, Pending>| {
        let id = MessageId::new_random();
        pending.insert(
            id,
            Pending {
                due,
                answer: ShownAnswer::default(),
            },
        );
        counters.sent.fetch_add(1, Ordering::Relaxed);
        out.send(&ClientFrame::Send(protocol::ws::Message {
            id,
            text: plan.text.clone(),
            context: Vec::new(),
            room_id: None,
        }))
    };
    if schedule.is_none() {
        sleep_until(t0).await;
        for _ in 0..plan.in_flight {
            if counters.take_one() {
                send(&out, Instant::now(), &mut pending);
            }
        }
    }
    let hard_stop = deadline + DRAIN;
    let mut reconnects = 0;
    loop {
        let sending = schedule.is_some();
        if !sending && (pending.is_empty() || Instant::now() >= hard_stop) {
            break;
        }
        tokio::select! {
            due = async { schedule.as_mut()?.recv().await }, if sending => match due {
                Some(due) => {
                    if counters.take_one() {
                        let _ = late.record((due.elapsed().as_micros() as u64).max(1));
                        send(&out, due, &mut pending);
                    }
                }
                // The schedule is over.
                None => schedule = None,
            },
            _ = sleep_until(hard_stop) => break,
            frame = stream.next() => {
                let text = match frame {
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                    None | Some(Err(_)) => {
                        // Dropped: open it again, or give up on this user.
                        let again = if reconnects < MAX_RECONNECTS { reconnect(&url).await } else { None };
                        let Some(ws) = again else {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        };
                        reconnects += 1;
                        counters.reconnects.fetch_add(1, Ordering::Relaxed);
                        let (sink, rest) = ws.split();
                        std::mem::replace(&mut out, Outbound::new(sink)).close().await;
                        stream = rest;
                        continue;
                    }
                };
                let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) else { continue };
                match frame {
                    ServerFrame::Reply(chunk) => {
                        out.send(&ClientFrame::Ack { id: chunk.id, seq: chunk.seq });
                        counters.chunks.fetch_add(1, Ordering::Relaxed);
                        let Some(p) = pending.get_mut(&chunk.in_reply_to) else { continue };
                        let waited = p.due.elapsed().as_micros() as u64;
                        if p.answer.chunks() == 0 && p.answer.error().is_none() {
                            let _ = first.record(waited.max(1));
                        }
                        if p.answer.add(&chunk) == Arrival::Restarted {
                            counters.restarts.fetch_add(1, Ordering::Relaxed);
                        }
                        if p.answer.is_complete() {
                            pending.remove(&chunk.in_reply_to);
                            let _ = last.record(waited.max(1));
                            counters.answered.fetch_add(1, Ordering::Relaxed);
                            if plan.rate.is_none() && Instant::now() < deadline && counters.take_one() {
                                send(&out, Instant::now(), &mut pending);
                            }
                        }
                    }
                    ServerFrame::MessageStatus { .. } => {
                        counters.statuses.fetch_add(1, Ordering::Relaxed);
                    }
                    ServerFrame::Error { id, code, .. } => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        *counters.error_codes.lock().expect("codes").entry(code.as_str().to_owned()).or_default() += 1;
                        if let Some(id) = id {
                            pending.remove(&id);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    out.close().await;
    UserResult {
        first,
        last,
        late,
        incomplete: pending.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pacer_deals_the_schedule_round_robin_and_stops_at_the_deadline() {
        // 1,000 msg/s over three users for 10 ms: messages 0..10, user
        // m mod 3 sends message m, due at t0 + m ms.
        let (senders, mut receivers): (Vec<_>, Vec<_>) =
            (0..3).map(|_| mpsc::unbounded_channel()).unzip();
        let t0 = Instant::now();
        pace(senders, 1000.0, t0, t0 + Duration::from_millis(10));
        let ms = |user: &mut mpsc::UnboundedReceiver<Instant>| {
            std::iter::from_fn(|| user.try_recv().ok())
                .map(|due| (due - t0).as_millis())
                .collect::<Vec<_>>()
        };
        assert_eq!(ms(&mut receivers[0]), vec![0, 3, 6, 9]);
        assert_eq!(ms(&mut receivers[1]), vec![1, 4, 7]);
        assert_eq!(ms(&mut receivers[2]), vec![2, 5, 8]);
    }
}
