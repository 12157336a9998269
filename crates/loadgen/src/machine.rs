//! Readings of the machine under test: a process's resident memory and the
//! local RabbitMQ node's memory. Both are best effort: `None` when the
//! process or the broker's command-line tools are not there.

use serde::Serialize;
use std::process::Command;

/// Resident set size of process `pid`, in bytes (Linux `/proc`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Memory of RabbitMQ, in bytes: the local node, or the sum over the
/// nodes named in `LOADGEN_BROKER_NODES` (a cluster), asked through the
/// commands in `LOADGEN_BROKER_CTL` / `LOADGEN_BROKER_DIAGNOSTICS` (default
/// `rabbitmqctl` / `rabbitmq-diagnostics`; the cluster script offers
/// `scripts/rabbitmq-cluster ctl` and `… diagnostics`).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct BrokerMemory {
    /// Everything the Erlang VM has allocated (`erlang:memory(total)`).
    pub total: u64,
    /// Of that, queue processes (`queue_procs` + `quorum_queue_procs`).
    pub queues: u64,
    /// Of that, connections and channels (`connection_*`).
    pub connections: u64,
}

impl BrokerMemory {
    /// Reads it (after a garbage collection, so the figures are what is
    /// held, not what is garbage).
    pub fn read() -> Option<Self> {
        let nodes: Vec<String> = std::env::var("LOADGEN_BROKER_NODES")
            .unwrap_or_default()
            .split(',')
            .map(|n| n.trim().to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        if nodes.is_empty() {
            return Self::read_node(None);
        }
        let mut sum = Self {
            total: 0,
            queues: 0,
            connections: 0,
        };
        for node in &nodes {
            let one = Self::read_node(Some(node))?;
            sum.total += one.total;
            sum.queues += one.queues;
            sum.connections += one.connections;
        }
        Some(sum)
    }

    fn read_node(node: Option<&str>) -> Option<Self> {
        let tool = |var: &str, default: &str, args: &[&str]| {
            let command = std::env::var(var).unwrap_or_else(|_| default.to_owned());
            let mut words = command.split_whitespace();
            let mut run = Command::new(words.next()?);
            run.args(words);
            if let Some(node) = node {
                run.args(["-n", node]);
            }
            run.args(args).output().ok()
        };
        let ctl = |args: &[&str]| tool("LOADGEN_BROKER_CTL", "rabbitmqctl", args);
        let _ = ctl(&[
            "-q",
            "eval",
            "[erlang:garbage_collect(P) || P <- erlang:processes()], ok.",
        ]);
        let total = ctl(&["-q", "eval", "erlang:memory(total)."])?;
        let total: u64 = String::from_utf8_lossy(&total.stdout).trim().parse().ok()?;
        let breakdown = tool(
            "LOADGEN_BROKER_DIAGNOSTICS",
            "rabbitmq-diagnostics",
            &[
                "-q",
                "memory_breakdown",
                "--unit",
                "bytes",
                "--formatter",
                "json",
            ],
        )?;
        let breakdown: serde_json::Value = serde_json::from_slice(&breakdown.stdout).ok()?;
        let bytes = |keys: &[&str]| -> u64 {
            keys.iter()
                .filter_map(|k| breakdown[*k]["bytes"].as_u64())
                .sum()
        };
        Some(Self {
            total,
            queues: bytes(&["queue_procs", "quorum_queue_procs"]),
            connections: bytes(&[
                "connection_readers",
                "connection_writers",
                "connection_channels",
                "connection_other",
            ]),
        })
    }

    /// Growth from `before` to `self`, per `count` things, in bytes.
    pub fn per(&self, before: &Self, count: usize) -> PerThing {
        let per = |after: u64, before: u64| after.saturating_sub(before) / count.max(1) as u64;
        PerThing {
            total: per(self.total, before.total),
            queues: per(self.queues, before.queues),
            connections: per(self.connections, before.connections),
        }
    }
}

/// Broker memory growth per user or queue, in bytes.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PerThing {
    pub total: u64,
    pub queues: u64,
    pub connections: u64,
}
