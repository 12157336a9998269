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

/// Memory of the local RabbitMQ node, in bytes.
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
    /// Reads it with `rabbitmqctl` / `rabbitmq-diagnostics` (after a garbage
    /// collection, so the figures are what is held, not what is garbage).
    pub fn read() -> Option<Self> {
        let _ = Command::new("rabbitmqctl")
            .args([
                "-q",
                "eval",
                "[erlang:garbage_collect(P) || P <- erlang:processes()], ok.",
            ])
            .output();
        let total = Command::new("rabbitmqctl")
            .args(["-q", "eval", "erlang:memory(total)."])
            .output()
            .ok()?;
        let total: u64 = String::from_utf8_lossy(&total.stdout).trim().parse().ok()?;
        let breakdown = Command::new("rabbitmq-diagnostics")
            .args([
                "-q",
                "memory_breakdown",
                "--unit",
                "bytes",
                "--formatter",
                "json",
            ])
            .output()
            .ok()?;
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
