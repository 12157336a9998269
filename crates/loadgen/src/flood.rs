//! `loadgen flood`: how much one hostile user can delay another (#20).
//!
//! A victim asks one question at a time over its socket and times each
//! answer (send → final chunk): first alone, then while one flooder — one
//! token — sends with everything the limits allow: `--sockets` sockets
//! sending as fast as they can (their `error` frames ignored, a socket the
//! gateway closes opened again) and `--rest` loops posting to
//! `/api/messages` (a `429` waits its `Retry-After`). Prints the victim's
//! p50/p99/max in both phases and what the flooder got through.
//!
//! ```text
//! loadgen flood --gateway http://127.0.0.1:5055 --seconds 15 --sockets 8 --rest 16
//! ```

use crate::run::{Socket, guest_token, histogram, socket_url};
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use protocol::MessageId;
use protocol::answer::ShownAnswer;
use protocol::ws::{ClientFrame, ServerFrame};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// What to run.
#[derive(Debug, Clone)]
pub struct FloodPlan {
    pub gateway: String,
    /// Length of each phase (alone, then flooded).
    pub seconds: Duration,
    /// The flooder's sockets…
    pub sockets: usize,
    /// …and REST loops.
    pub rest: usize,
    pub out: Option<String>,
}

impl FloodPlan {
    pub fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let mut plan = Self {
            gateway: String::new(),
            seconds: Duration::from_secs(15),
            sockets: 8,
            rest: 16,
            out: None,
        };
        let mut allow_remote = false;
        while let Some(arg) = args.next() {
            let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--gateway" => plan.gateway = value()?.trim_end_matches('/').to_owned(),
                "--seconds" => plan.seconds = Duration::from_secs_f64(value()?.parse()?),
                "--sockets" => plan.sockets = value()?.parse()?,
                "--rest" => plan.rest = value()?.parse()?,
                "--out" => plan.out = Some(value()?),
                "--allow-remote" => allow_remote = true,
                other => anyhow::bail!(
                    "unknown argument {other}; usage: loadgen flood --gateway URL [--seconds S] \
                     [--sockets N] [--rest N] [--out FILE.json] [--allow-remote]"
                ),
            }
        }
        anyhow::ensure!(!plan.gateway.is_empty(), "loadgen flood needs --gateway");
        anyhow::ensure!(
            plan.seconds <= Duration::from_secs(600),
            "--seconds at most 600"
        );
        crate::check_loopback(&plan.gateway, allow_remote)?;
        Ok(plan)
    }
}

/// The victim's answers in one phase, in milliseconds.
#[derive(Debug, Serialize)]
pub struct Phase {
    pub answers: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Phase {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            answers: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
        }
    }
}

/// What the run found.
#[derive(Debug, Serialize)]
pub struct FloodReport {
    pub alone: Phase,
    pub flooded: Phase,
    /// The flooder's messages confirmed (`accepted` / `202`)…
    pub flooder_accepted: u64,
    /// …and refused, by code (or HTTP status).
    pub flooder_refused: BTreeMap<String, u64>,
    pub flooder_reconnects: u64,
}

impl FloodReport {
    pub fn print(&self) {
        let row = |name: &str, p: &Phase| {
            println!(
                "{name:<8} {:>6} answers  p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
                p.answers, p.p50_ms, p.p99_ms, p.max_ms
            )
        };
        row("alone", &self.alone);
        row("flooded", &self.flooded);
        println!(
            "victim p99 flooded / alone: {:.2}",
            self.flooded.p99_ms / self.alone.p99_ms.max(f64::MIN_POSITIVE)
        );
        println!(
            "flooder: {} accepted, refused {:?}, {} sockets reopened",
            self.flooder_accepted, self.flooder_refused, self.flooder_reconnects
        );
    }
}

#[derive(Debug, Default)]
struct FlooderTally {
    accepted: u64,
    refused: BTreeMap<String, u64>,
    reconnects: u64,
}

pub async fn run(plan: &FloodPlan) -> anyhow::Result<FloodReport> {
    let http = reqwest::Client::new();
    let victim_token = guest_token(&http, &plan.gateway).await?;
    let (mut victim, _) =
        tokio_tungstenite::connect_async(socket_url(&plan.gateway, &victim_token))
            .await
            .context("the victim's socket")?;
    victim.next().await; // welcome
    eprintln!("[flood] the victim alone for {:?}", plan.seconds);
    let alone = ask_repeatedly(&mut victim, plan.seconds).await?;
    let flooder_token = guest_token(&http, &plan.gateway).await?;
    let tally = Arc::new(Mutex::new(FlooderTally::default()));
    let stop = Instant::now() + plan.seconds + Duration::from_secs(1);
    let mut flooders = Vec::new();
    for _ in 0..plan.sockets {
        let url = socket_url(&plan.gateway, &flooder_token);
        flooders.push(tokio::spawn(flood_socket(url, tally.clone(), stop)));
    }
    for _ in 0..plan.rest {
        let (http, gateway, token) = (http.clone(), plan.gateway.clone(), flooder_token.clone());
        flooders.push(tokio::spawn(flood_rest(
            http,
            gateway,
            token,
            tally.clone(),
            stop,
        )));
    }
    // Let the flood reach its stride first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    eprintln!(
        "[flood] the victim for {:?} while one user floods ({} sockets, {} REST loops)",
        plan.seconds, plan.sockets, plan.rest
    );
    let flooded = ask_repeatedly(&mut victim, plan.seconds).await?;
    for flooder in flooders {
        let _ = flooder.await;
    }
    let tally = std::mem::take(&mut *tally.lock().expect("tally"));
    Ok(FloodReport {
        alone: Phase::of(&alone),
        flooded: Phase::of(&flooded),
        flooder_accepted: tally.accepted,
        flooder_refused: tally.refused,
        flooder_reconnects: tally.reconnects,
    })
}

/// One question at a time for `span`: send → final chunk, acking chunks.
async fn ask_repeatedly(socket: &mut Socket, span: Duration) -> anyhow::Result<Histogram<u64>> {
    let mut latencies = histogram();
    let until = Instant::now() + span;
    while Instant::now() < until {
        let id = MessageId::new_random();
        let send = ClientFrame::Send(protocol::ws::Message {
            id,
            text: "How are you?".into(),
            context: Vec::new(),
            room_id: None,
        });
        let sent = Instant::now();
        socket.send(Message::text(send.to_json())).await?;
        let mut answer = ShownAnswer::default();
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(120), socket.next())
                .await
                .context("the victim waited two minutes for an answer")?
                .context("the victim's socket closed")??;
            let Message::Text(text) = frame else { continue };
            match serde_json::from_str::<ServerFrame>(&text)? {
                ServerFrame::Reply(chunk) => {
                    let ack = ClientFrame::Ack {
                        id: chunk.id,
                        seq: chunk.seq,
                    };
                    socket.send(Message::text(ack.to_json())).await?;
                    if chunk.in_reply_to != id {
                        continue;
                    }
                    answer.add(&chunk);
                    if answer.is_complete() {
                        let us = sent.elapsed().as_micros() as u64;
                        latencies.record(us.max(1))?;
                        break;
                    }
                }
                ServerFrame::Error { code, .. } => anyhow::bail!("the victim was refused: {code}"),
                _ => {}
            }
        }
    }
    Ok(latencies)
}

/// One of the flooder's sockets: sends without pause, reopens when closed.
async fn flood_socket(url: String, tally: Arc<Mutex<FlooderTally>>, stop: Instant) {
    let mut first = true;
    while Instant::now() < stop {
        let Ok((socket, _)) = tokio_tungstenite::connect_async(url.as_str()).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !first {
            tally.lock().expect("tally").reconnects += 1;
        }
        first = false;
        let (mut sink, mut stream) = socket.split();
        let sending = async {
            while Instant::now() < stop {
                let send = ClientFrame::Send(protocol::ws::Message {
                    id: MessageId::new_random(),
                    text: "flood".into(),
                    context: Vec::new(),
                    room_id: None,
                });
                if sink.send(Message::text(send.to_json())).await.is_err() {
                    return;
                }
                tokio::task::yield_now().await;
            }
        };
        let reading = async {
            while let Some(Ok(frame)) = stream.next().await {
                let Message::Text(text) = frame else { continue };
                let Ok(frame) = serde_json::from_str::<ServerFrame>(&text) else {
                    continue;
                };
                let mut tally = tally.lock().expect("tally");
                match frame {
                    ServerFrame::Accepted { .. } => tally.accepted += 1,
                    ServerFrame::Error { code, .. } => {
                        *tally.refused.entry(code.to_string()).or_default() += 1;
                    }
                    _ => {}
                }
            }
        };
        tokio::select! {
            () = sending => {}
            () = reading => {}
            () = tokio::time::sleep_until(stop) => {}
        }
    }
}

/// One of the flooder's REST loops: posts without pause, honouring
/// `Retry-After` only.
async fn flood_rest(
    http: reqwest::Client,
    gateway: String,
    token: String,
    tally: Arc<Mutex<FlooderTally>>,
    stop: Instant,
) {
    while Instant::now() < stop {
        let posted = http
            .post(format!("{gateway}/api/messages"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"text": "flood"}))
            .send()
            .await;
        let Ok(response) = posted else { continue };
        let status = response.status();
        let wait = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        {
            let mut tally = tally.lock().expect("tally");
            if status.as_u16() == 202 {
                tally.accepted += 1;
            } else {
                let code = body["code"].as_str().unwrap_or(status.as_str()).to_owned();
                *tally.refused.entry(code).or_default() += 1;
            }
        }
        if let Some(seconds) = wait {
            tokio::time::sleep(Duration::from_secs(seconds).min(stop - Instant::now())).await;
        }
    }
}
