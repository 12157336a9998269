//! One run: sessions, sockets, users sending on schedule, histograms.

use crate::Plan;
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use protocol::MessageId;
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
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    answered: AtomicU64,
    errors: AtomicU64,
    /// Messages that may still be sent (the run's `--messages` bound).
    budget: AtomicU64,
}

impl Counters {
    fn take_one(&self) -> bool {
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
    /// Always 0 for now: a user whose socket drops stops (counted as an
    /// error) instead of reconnecting.
    pub reconnects: u64,
    pub answers_per_second: f64,
    pub first_chunk: Percentiles,
    pub final_chunk: Percentiles,
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
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("static bounds")
}

struct UserResult {
    first: Histogram<u64>,
    last: Histogram<u64>,
    incomplete: u64,
}

pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    let http = reqwest::Client::new();
    let mut sockets = Vec::with_capacity(plan.users);
    for n in 0..plan.users {
        let gateway = &plan.gateways[n % plan.gateways.len()];
        let session: serde_json::Value = http
            .post(format!("{gateway}/api/session"))
            .send()
            .await
            .with_context(|| format!("POST {gateway}/api/session"))?
            .error_for_status()?
            .json()
            .await?;
        let token = session["token"].as_str().context("no token")?.to_owned();
        let ws_url = format!("{}/ws?token={token}", gateway.replacen("http", "ws", 1));
        // Like a browser: no Nagle delay on small frames.
        let (mut ws, _) = tokio_tungstenite::connect_async_with_config(ws_url, None, true).await?;
        // The welcome frame.
        ws.next().await.context("no welcome")??;
        sockets.push(ws);
    }
    let counters = Arc::new(Counters {
        budget: AtomicU64::new(plan.max_messages),
        ..Counters::default()
    });
    let t0 = Instant::now() + Duration::from_millis(200);
    let deadline = t0 + plan.duration;
    let mut users = Vec::new();
    for (n, ws) in sockets.into_iter().enumerate() {
        let plan = plan.clone();
        let counters = counters.clone();
        users.push(tokio::spawn(async move {
            user(n, ws, &plan, &counters, t0, deadline).await
        }));
    }
    let progress = tokio::spawn(progress(counters.clone(), t0, deadline + DRAIN));
    let mut first = histogram();
    let mut last = histogram();
    let mut incomplete = 0;
    for user in users {
        let result = user.await?;
        first.add(&result.first)?;
        last.add(&result.last)?;
        incomplete += result.incomplete;
    }
    progress.abort();
    let seconds = plan.duration.as_secs_f64();
    let answered = counters.answered.load(Ordering::Relaxed);
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
        reconnects: 0,
        answers_per_second: last.len() as f64 / seconds,
        first_chunk: Percentiles::of(&first),
        final_chunk: Percentiles::of(&last),
    })
}

async fn progress(counters: Arc<Counters>, t0: Instant, until: Instant) {
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

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One user: sends on its schedule (open loop) or keeps `in_flight`
/// outstanding (closed loop), acks every chunk, and times each message from
/// its intended send time to its first and final chunk.
async fn user(
    n: usize,
    ws: Socket,
    plan: &Plan,
    counters: &Counters,
    t0: Instant,
    deadline: Instant,
) -> UserResult {
    let (mut sink, mut stream) = ws.split();
    let (out, mut outbox) = mpsc::channel::<Message>(4096);
    let writer = tokio::spawn(async move {
        while let Some(message) = outbox.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    let mut first = histogram();
    let mut last = histogram();
    // Intended send time, and whether the first chunk was seen.
    let mut pending: HashMap<MessageId, (Instant, bool)> = HashMap::new();
    // Open loop: this user's k-th message is due at t0 + (n + k·users) / rate.
    let interval = plan
        .rate
        .map(|rate| Duration::from_secs_f64(plan.users as f64 / rate));
    let mut next_due = t0
        + plan.rate.map_or(Duration::ZERO, |rate| {
            Duration::from_secs_f64(n as f64 / rate)
        });
    let send = |due: Instant, pending: &mut HashMap<MessageId, (Instant, bool)>| {
        let id = MessageId::new_random();
        pending.insert(id, (due, false));
        counters.sent.fetch_add(1, Ordering::Relaxed);
        let frame = ClientFrame::Send {
            id,
            text: plan.text.clone(),
        };
        out.try_send(Message::text(frame.to_json())).is_ok()
    };
    if interval.is_none() {
        sleep_until(t0).await;
        for _ in 0..plan.in_flight {
            if counters.take_one() {
                send(Instant::now(), &mut pending);
            }
        }
    }
    let hard_stop = deadline + DRAIN;
    loop {
        let sending = interval.is_some() && next_due < deadline;
        if !sending && (pending.is_empty() || Instant::now() >= hard_stop) {
            break;
        }
        tokio::select! {
            _ = sleep_until(next_due), if sending => {
                if counters.take_one() {
                    send(next_due, &mut pending);
                }
                next_due += interval.unwrap_or_default();
            }
            _ = sleep_until(hard_stop) => break,
            frame = stream.next() => {
                let Some(Ok(Message::Text(text))) = frame else {
                    if matches!(frame, None | Some(Err(_))) {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    continue;
                };
                let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) else { continue };
                match frame {
                    ServerFrame::Reply(chunk) => {
                        let ack = ClientFrame::Ack { id: chunk.id, seq: chunk.seq };
                        let _ = out.try_send(Message::text(ack.to_json()));
                        let Some((due, seen_first)) = pending.get_mut(&chunk.in_reply_to) else { continue };
                        let waited = due.elapsed().as_micros() as u64;
                        if !*seen_first {
                            *seen_first = true;
                            let _ = first.record(waited.max(1));
                        }
                        if chunk.r#final {
                            pending.remove(&chunk.in_reply_to);
                            let _ = last.record(waited.max(1));
                            counters.answered.fetch_add(1, Ordering::Relaxed);
                            if interval.is_none() && Instant::now() < deadline && counters.take_one() {
                                send(Instant::now(), &mut pending);
                            }
                        }
                    }
                    ServerFrame::Error { id, .. } => {
                        counters.errors.fetch_add(1, Ordering::Relaxed);
                        if let Some(id) = id {
                            pending.remove(&id);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    drop(out);
    let _ = writer.await;
    UserResult {
        first,
        last,
        incomplete: pending.len() as u64,
    }
}
