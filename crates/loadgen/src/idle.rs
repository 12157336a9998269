//! Idle capacity: many users connect at once (a connect storm) and then sit
//! there. Measures how long each socket waits for its `welcome`, how long
//! until every user's reply queue is declared, bound and consumed (the
//! gateway's `switchboard_gateway_reply_consumers`), and what the sockets
//! cost: gateway RSS per socket and RabbitMQ memory per user.
//!
//! ```text
//! loadgen idle --gateway http://127.0.0.1:5055 --users 10000 [--concurrency 200]
//!              [--hold 5] [--gateway-pid PID] [--out FILE.json] [--label NAME]
//! ```

use crate::machine::{BrokerMemory, PerThing, rss_bytes};
use crate::run::{Percentiles, histogram};
use anyhow::{Context, bail};
use futures_util::StreamExt;
use serde::Serialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// Longest the whole storm, and then the queue set-up, may take.
const STORM_LIMIT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone)]
pub struct IdlePlan {
    pub gateway: String,
    pub users: usize,
    pub concurrency: usize,
    pub hold: Duration,
    pub gateway_pid: Option<u32>,
    pub out: Option<String>,
    pub label: String,
}

impl IdlePlan {
    pub fn parse(args: impl Iterator<Item = String>) -> anyhow::Result<Self> {
        let usage = "usage: loadgen idle --gateway URL --users N [--concurrency C] [--hold SECONDS] \
                     [--gateway-pid PID] [--out FILE.json] [--label NAME] [--allow-remote]";
        let mut plan = Self {
            gateway: String::new(),
            users: 1000,
            concurrency: 200,
            hold: Duration::from_secs(5),
            gateway_pid: None,
            out: None,
            label: "idle".into(),
        };
        let mut allow_remote = false;
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            let mut value = || {
                args.next()
                    .with_context(|| format!("{arg} needs a value\n{usage}"))
            };
            match arg.as_str() {
                "--gateway" => plan.gateway = value()?.trim_end_matches('/').to_owned(),
                "--users" => plan.users = value()?.parse()?,
                "--concurrency" => plan.concurrency = value()?.parse()?,
                "--hold" => plan.hold = Duration::from_secs_f64(value()?.parse()?),
                "--gateway-pid" => plan.gateway_pid = Some(value()?.parse()?),
                "--out" => plan.out = Some(value()?),
                "--label" => plan.label = value()?,
                "--allow-remote" => allow_remote = true,
                other => bail!("unknown argument {other}\n{usage}"),
            }
        }
        if plan.gateway.is_empty() {
            bail!("--gateway is required\n{usage}");
        }
        if plan.users == 0 || plan.users > 100_000 || plan.concurrency == 0 {
            bail!("--users must be 1..=100000 and --concurrency at least 1");
        }
        if plan.hold > Duration::from_secs(3600) {
            bail!("--hold is at most 3600 seconds");
        }
        crate::check_loopback(&plan.gateway, allow_remote)?;
        Ok(plan)
    }
}

/// What an idle run measured.
#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub label: String,
    pub users: usize,
    pub concurrency: usize,
    /// From the first connect to the last `welcome`.
    pub connect_seconds: f64,
    /// From the first connect until every user's reply consumer runs.
    pub queues_ready_seconds: f64,
    /// Connect (TCP + upgrade) → `welcome`, per socket, during the storm.
    pub welcome: Percentiles,
    pub failed: usize,
    /// Sockets closed by the gateway while held idle.
    pub dropped_while_idle: usize,
    pub gateway_rss_before: Option<u64>,
    pub gateway_rss_after: Option<u64>,
    pub gateway_rss_per_socket: Option<u64>,
    pub broker_before: Option<BrokerMemory>,
    pub broker_after: Option<BrokerMemory>,
    pub broker_per_user: Option<PerThing>,
}

impl IdleReport {
    pub fn print(&self) {
        println!();
        println!(
            "{} — {} idle users, {} connecting at once",
            self.label, self.users, self.concurrency
        );
        println!(
            "all welcomed in {:.2} s; every reply queue consuming after {:.2} s; {} failed, {} dropped while idle",
            self.connect_seconds, self.queues_ready_seconds, self.failed, self.dropped_while_idle
        );
        let w = &self.welcome;
        println!(
            "connect → welcome: p50 {:.2} ms  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            w.p50_ms, w.p90_ms, w.p99_ms, w.p999_ms, w.max_ms
        );
        if let (Some(before), Some(after), Some(per)) = (
            self.gateway_rss_before,
            self.gateway_rss_after,
            self.gateway_rss_per_socket,
        ) {
            println!(
                "gateway RSS {:.1} MiB → {:.1} MiB: {:.1} KiB per socket",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                per as f64 / 1024.0
            );
        }
        if let Some(per) = self.broker_per_user {
            println!(
                "RabbitMQ per user: {:.1} KiB in all ({:.1} KiB queue processes, {:.1} KiB connections/channels)",
                per.total as f64 / 1024.0,
                per.queues as f64 / 1024.0,
                per.connections as f64 / 1024.0
            );
        }
    }
}

pub async fn run(plan: &IdlePlan) -> anyhow::Result<IdleReport> {
    let http = reqwest::Client::new();
    let gateway = plan.gateway.clone();
    // Tokens first: a returning browser has its token already.
    let mut tokens = Vec::with_capacity(plan.users);
    let mut sessions = futures_util::stream::iter(0..plan.users)
        .map(|_| {
            let http = http.clone();
            let gateway = gateway.clone();
            async move { crate::run::guest_token(&http, &gateway).await }
        })
        .buffer_unordered(plan.concurrency);
    while let Some(token) = sessions.next().await {
        tokens.push(token?);
    }
    drop(sessions);
    let rss_before = plan.gateway_pid.and_then(rss_bytes);
    let broker_before = BrokerMemory::read();
    let consumers_before = reply_consumers(&http, &gateway).await.unwrap_or(0.0);

    eprintln!("[loadgen] connecting {} users…", plan.users);
    let (stop_tx, stop) = watch::channel(false);
    let dropped = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(plan.concurrency));
    let started = Instant::now();
    let welcomed = Arc::new(AtomicUsize::new(0));
    let progress = tokio::spawn(progress(
        http.clone(),
        gateway.clone(),
        started,
        consumers_before,
        welcomed.clone(),
    ));
    let mut connects = Vec::with_capacity(plan.users);
    for token in tokens {
        let gate = gate.clone();
        let url = crate::run::socket_url(&gateway, &token);
        let stop = stop.clone();
        let dropped = dropped.clone();
        let welcomed = welcomed.clone();
        connects.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.ok()?;
            let began = Instant::now();
            let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
                .await
                .ok()?;
            ws.next().await?.ok()?;
            let waited = began.elapsed();
            welcomed.fetch_add(1, Ordering::Relaxed);
            drop(permit);
            // Hold the socket: read (which answers the gateway's pings)
            // until told to stop.
            tokio::spawn(hold(ws, stop, dropped));
            Some(waited)
        }));
    }
    let mut welcome = histogram();
    let mut failed = 0;
    for connect in connects {
        match connect.await? {
            Some(waited) => {
                let _ = welcome.record((waited.as_micros() as u64).max(1));
            }
            None => failed += 1,
        }
    }
    let connect_seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "[loadgen] {} welcomed in {connect_seconds:.2} s; waiting for their reply queues…",
        welcome.len()
    );
    let want = consumers_before + welcome.len() as f64;
    let mut polls = tokio::time::interval(Duration::from_millis(50));
    loop {
        polls.tick().await;
        if reply_consumers(&http, &gateway).await.unwrap_or(0.0) >= want {
            break;
        }
        if started.elapsed() > STORM_LIMIT {
            bail!("reply queues still not consuming after {STORM_LIMIT:?}");
        }
    }
    let queues_ready_seconds = started.elapsed().as_secs_f64();
    progress.abort();
    eprintln!("[loadgen] every reply queue consuming after {queues_ready_seconds:.2} s; holding…");
    tokio::time::sleep(plan.hold).await;
    let rss_after = plan.gateway_pid.and_then(rss_bytes);
    let broker_after = BrokerMemory::read();
    let _ = stop_tx.send(true);
    let connected = welcome.len() as usize;
    Ok(IdleReport {
        label: plan.label.clone(),
        users: plan.users,
        concurrency: plan.concurrency,
        connect_seconds,
        queues_ready_seconds,
        welcome: Percentiles::of(&welcome),
        failed,
        dropped_while_idle: dropped.load(Ordering::Relaxed),
        gateway_rss_before: rss_before,
        gateway_rss_after: rss_after,
        gateway_rss_per_socket: rss_before
            .zip(rss_after)
            .map(|(b, a)| a.saturating_sub(b) / connected.max(1) as u64),
        broker_before,
        broker_after,
        broker_per_user: broker_before
            .zip(broker_after)
            .map(|(b, a)| a.per(&b, connected)),
    })
}

async fn hold(
    mut ws: crate::run::Socket,
    mut stop: watch::Receiver<bool>,
    dropped: Arc<AtomicUsize>,
) {
    loop {
        tokio::select! {
            _ = async { stop.wait_for(|s| *s).await.is_ok() } => {
                let _ = ws.close(None).await;
                return;
            }
            frame = ws.next() => if matches!(frame, None | Some(Err(_))) {
                dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// Live progress of the storm, once a second: sockets welcomed and reply
/// queues consuming so far.
async fn progress(
    http: reqwest::Client,
    gateway: String,
    started: Instant,
    consumers_before: f64,
    welcomed: Arc<AtomicUsize>,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let consuming = reply_consumers(&http, &gateway).await.unwrap_or(0.0) - consumers_before;
        eprintln!(
            "[loadgen] {:5.1} s: {} welcomed, {consuming:.0} reply queues consuming",
            started.elapsed().as_secs_f64(),
            welcomed.load(Ordering::Relaxed),
        );
    }
}

/// The gateway's `switchboard_gateway_reply_consumers`, from `/metrics`.
async fn reply_consumers(http: &reqwest::Client, gateway: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("{gateway}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|line| line.strip_prefix("switchboard_gateway_reply_consumers "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0))
}
