//! `loadgen`: many users, each a real WebSocket client like the web page
//! (guest session, `send`, `ack` for every chunk), against one or more
//! gateways. Latency is measured from each message's *intended* send time,
//! so a slow system cannot hide its queueing (no coordinated omission).
//!
//! ```text
//! loadgen --gateway http://127.0.0.1:5055 --users 100 --rate 1000 --seconds 20
//! loadgen --gateway http://127.0.0.1:5055 --users 100 --in-flight 5 --seconds 20
//! ```
//! `loadgen idle --gateway URL --users 10000` measures idle capacity: a
//! connect storm, then the sockets' cost (see `idle.rs`).
//! `loadgen flood --gateway URL` measures how much one user flooding with
//! everything the limits allow delays another (see `flood.rs`).
//! `loadgen baseline <amqp url> <users> <in flight> <seconds> [queues]` runs
//! the reference instead: the same two broker hops in plain lapin (skipped
//! with 0 users), and the time to declare, bind and consume `queues`
//! per-user queues (`docs/bench/baseline-queues-<queues>.json`).
//!
//! `--sse` drives the OpenAI-compatible API instead: streamed completions
//! read as Server-Sent Events, closed loop (see `sse.rs`).
//!
//! Open loop (`--rate`, messages per second over all users) or closed loop
//! (`--in-flight`, messages each user keeps outstanding). Every run is
//! bounded by `--seconds` and `--messages`; the targets must be loopback
//! addresses unless `--allow-remote` says otherwise.

mod baseline;
mod flood;
mod idle;
mod machine;
mod run;
mod sse;

use anyhow::{Context, bail};
use std::time::Duration;

/// What to run, from the command line.
#[derive(Debug, Clone)]
pub struct Plan {
    pub gateways: Vec<String>,
    pub users: usize,
    /// Open loop: messages per second over all users.
    pub rate: Option<f64>,
    /// Closed loop: messages each user keeps outstanding.
    pub in_flight: usize,
    pub duration: Duration,
    pub max_messages: u64,
    pub text: String,
    pub out: Option<String>,
    pub label: String,
    /// Through the OpenAI API's streams instead of WebSockets.
    pub sse: bool,
}

fn usage() -> &'static str {
    "usage: loadgen --gateway URL [--gateway URL …] [--users N] (--rate MSGS_PER_S | --in-flight K) \
     [--seconds S] [--messages M] [--text TEXT] [--out FILE.json] [--label NAME] [--sse] [--allow-remote]"
}

fn parse() -> anyhow::Result<Plan> {
    let mut plan = Plan {
        gateways: Vec::new(),
        users: 10,
        rate: None,
        in_flight: 0,
        duration: Duration::from_secs(10),
        max_messages: 1_000_000,
        text: "How are you?".into(),
        out: None,
        label: "run".into(),
        sse: false,
    };
    let mut allow_remote = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .with_context(|| format!("{arg} needs a value\n{}", usage()))
        };
        match arg.as_str() {
            "--gateway" => plan
                .gateways
                .push(value()?.trim_end_matches('/').to_owned()),
            "--users" => plan.users = value()?.parse()?,
            "--rate" => plan.rate = Some(value()?.parse()?),
            "--in-flight" => plan.in_flight = value()?.parse()?,
            "--seconds" => plan.duration = Duration::from_secs_f64(value()?.parse()?),
            "--messages" => plan.max_messages = value()?.parse()?,
            "--text" => plan.text = value()?,
            "--out" => plan.out = Some(value()?),
            "--label" => plan.label = value()?,
            "--allow-remote" => allow_remote = true,
            "--sse" => plan.sse = true,
            "-h" | "--help" => {
                println!("{}", usage());
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{}", usage()),
        }
    }
    if plan.gateways.is_empty() {
        bail!("at least one --gateway\n{}", usage());
    }
    if plan.rate.is_none() == (plan.in_flight == 0) {
        bail!(
            "choose --rate (open loop) or --in-flight (closed loop)\n{}",
            usage()
        );
    }
    if plan.users == 0 || plan.duration > Duration::from_secs(3600) {
        bail!("--users must be at least 1 and --seconds at most 3600");
    }
    for gateway in &plan.gateways {
        check_loopback(gateway, allow_remote)?;
    }
    Ok(plan)
}

/// Refuses a non-loopback target unless `allow_remote`.
pub(crate) fn check_loopback(gateway: &str, allow_remote: bool) -> anyhow::Result<()> {
    let host = gateway
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default();
    let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    if !loopback && !allow_remote {
        bail!(
            "{gateway} is not a loopback address; pass --allow-remote to load a remote system you own"
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `loadgen baseline <amqp url> <users> <in flight> <seconds> [queues]`:
    // the plain-lapin reference (none with 0 users), and the queue set-up
    // time.
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("baseline") {
        let url = argv.get(2).context("baseline needs an AMQP URL")?;
        let number =
            |i: usize, default: usize| argv.get(i).and_then(|v| v.parse().ok()).unwrap_or(default);
        std::fs::create_dir_all("docs/bench")?;
        // No users: the queue set-up time alone.
        if number(3, 100) > 0 {
            let report = baseline::round_trips(
                url,
                number(3, 100),
                number(4, 5),
                Duration::from_secs(number(5, 15) as u64),
            )
            .await?;
            report.print();
            let out = format!(
                "docs/bench/baseline-{}x{}.json",
                number(3, 100),
                number(4, 5)
            );
            std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
            println!("results written to {out}");
        }
        let queues = number(6, 0);
        if queues > 0 {
            let (seconds, per_queue) = baseline::declare_queues(url, queues).await?;
            println!(
                "declare + bind + consume {queues} per-user queues: {seconds:.2} s ({:.0}/s)",
                queues as f64 / seconds
            );
            if let Some(per) = per_queue {
                println!(
                    "RabbitMQ per queue with its consumer: {:.1} KiB in all ({:.1} KiB queue processes)",
                    per.total as f64 / 1024.0,
                    per.queues as f64 / 1024.0
                );
            }
            let out = format!("docs/bench/baseline-queues-{queues}.json");
            let report = serde_json::json!({
                "label": format!("baseline-queues-{queues}"),
                "queues": queues,
                "seconds": seconds,
                "broker_per_queue": per_queue,
            });
            std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
            println!("results written to {out}");
        }
        return Ok(());
    }
    if argv.get(1).map(String::as_str) == Some("flood") {
        let plan = flood::FloodPlan::parse(std::env::args().skip(2))?;
        let report = flood::run(&plan).await?;
        report.print();
        return write(&report, plan.out.as_deref());
    }
    if argv.get(1).map(String::as_str) == Some("idle") {
        let plan = idle::IdlePlan::parse(std::env::args().skip(2))?;
        let report = idle::run(&plan).await?;
        report.print();
        return write(&report, plan.out.as_deref());
    }
    let plan = parse()?;
    let report = if plan.sse {
        sse::run(&plan).await?
    } else {
        run::run(&plan).await?
    };
    report.print();
    write(&report, plan.out.as_deref())
}

/// Writes `report` as JSON to `out`, if given.
fn write(report: &impl serde::Serialize, out: Option<&str>) -> anyhow::Result<()> {
    if let Some(out) = out {
        std::fs::write(out, serde_json::to_string_pretty(report)?)?;
        println!("results written to {out}");
    }
    Ok(())
}
