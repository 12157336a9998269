//! The services as real processes.

use std::fs::{File, create_dir_all};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// `target/<profile>/`: where cargo put the service binaries.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/faults-<hash>
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn artifacts() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-artifacts/faults");
    create_dir_all(&dir).unwrap();
    dir
}

/// A service process; killed (SIGKILL) when dropped.
pub struct Service {
    child: Child,
}

impl Service {
    fn spawn(binary: &str, log: &str, env: &[(&str, String)]) -> Self {
        let path = bin_dir().join(binary);
        assert!(
            path.exists(),
            "{} is missing: run `cargo build --workspace --bins` first (scripts/test does)",
            path.display()
        );
        let out = File::options()
            .create(true)
            .append(true)
            .open(artifacts().join(format!("{log}.log")))
            .unwrap();
        let mut command = Command::new(path);
        command
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(
                "RUST_LOG",
                std::env::var("FAULTS_LOG").unwrap_or_else(|_| "info,lapin=warn".into()),
            )
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out));
        Self {
            child: command.spawn().unwrap(),
        }
    }

    /// SIGTERM, as an orchestrator stops a container; waits for the exit.
    pub fn terminate(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }

    /// SIGKILL: no shutdown, no goodbye, as a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stack on one broker prefix: gateways on fixed ports (so clients can
/// reconnect to a restarted one) and any number of responders.
pub struct Stack {
    pub name: String,
    /// The broker, as the gateways are given it.
    pub url: String,
    /// The broker as gateway `n` is given it, where a scenario puts it on
    /// other nodes of a cluster than `url` says.
    pub gateway_urls: Vec<Option<String>>,
    /// The broker, as the responders are given it (the same unless a
    /// scenario puts them on other nodes of a cluster).
    pub responder_url: String,
    pub prefix: String,
    /// One address per gateway.
    pub addrs: Vec<SocketAddr>,
    pub words_per_chunk: usize,
    pub chunk_delay_ms: u64,
    /// An OpenAI-compatible model the responders ask (`openai.base_url`)
    /// instead of the mock.
    pub model_url: Option<String>,
}

pub const POISON: &str = "[[poison]]";
pub const TEMPLATE: &str = "Echo: {text} — and a few more words to stream in chunks.";

impl Stack {
    pub fn new(name: &str, url: &str, prefix: &str, gateways: usize) -> Self {
        // Hold every listener until all ports are chosen, so none repeats.
        let listeners: Vec<TcpListener> = (0..gateways)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        Self {
            name: name.into(),
            url: url.into(),
            gateway_urls: vec![None; gateways],
            responder_url: url.into(),
            prefix: prefix.into(),
            addrs: listeners.iter().map(|l| l.local_addr().unwrap()).collect(),
            words_per_chunk: 2,
            chunk_delay_ms: 5,
            model_url: None,
        }
    }

    fn common(&self, url: &str) -> Vec<(&'static str, String)> {
        vec![
            ("AMQP_URL", url.to_owned()),
            ("SWITCHBOARD_AMQP__PREFIX", self.prefix.clone()),
            ("SWITCHBOARD_AMQP__RECONNECT_INITIAL_MS", "100".into()),
            ("SWITCHBOARD_AMQP__RECONNECT_MAX_MS", "1000".into()),
            ("SWITCHBOARD_AMQP__HEARTBEAT_SECS", "2".into()),
        ]
    }

    /// Starts gateway number `n` on its port.
    pub fn gateway(&self, n: usize) -> Service {
        let url = self.gateway_urls[n].as_ref().unwrap_or(&self.url);
        let mut env = self.common(url);
        env.push(("SWITCHBOARD_HTTP__LISTEN", self.addrs[n].to_string()));
        env.push(("SWITCHBOARD_HTTP__WEB_DIR", "does-not-exist".into()));
        env.push(("SWITCHBOARD_ROOMS__DATABASE_URL", String::new()));
        env.push(("SWITCHBOARD_RATE_LIMIT__BURST", "10000".into()));
        env.push(("SWITCHBOARD_RATE_LIMIT__PER_SECOND", "10000".into()));
        // Every user comes from 127.0.0.1.
        env.push(("SWITCHBOARD_RATE_LIMIT__GUEST_BURST", "10000".into()));
        Service::spawn("gateway", &format!("{}.gateway-{n}", self.name), &env)
    }

    pub fn responder(&self) -> Service {
        let mut env = self.common(&self.responder_url);
        env.push(("SWITCHBOARD_HEALTH__LISTEN", String::new()));
        env.push(("SWITCHBOARD_WORKER__PREFETCH", "8".into()));
        env.push(("SWITCHBOARD_MOCK__TEMPLATE", TEMPLATE.into()));
        env.push((
            "SWITCHBOARD_MOCK__WORDS_PER_CHUNK",
            self.words_per_chunk.to_string(),
        ));
        env.push((
            "SWITCHBOARD_MOCK__CHUNK_DELAY_MS",
            self.chunk_delay_ms.to_string(),
        ));
        env.push(("SWITCHBOARD_MOCK__FAIL_MARKER", POISON.into()));
        if let Some(url) = &self.model_url {
            env.push(("SWITCHBOARD_ENGINE__KIND", "openai".into()));
            env.push(("SWITCHBOARD_OPENAI__BASE_URL", url.clone()));
            env.push(("SWITCHBOARD_OPENAI__MODEL", "fake-random".into()));
        }
        Service::spawn("responder", &format!("{}.responder", self.name), &env)
    }

    /// Waits until gateway `n` answers /readyz.
    pub async fn gateway_ready(&self, n: usize) {
        let url = format!("http://{}/readyz", self.addrs[n]);
        let deadline = tokio::time::Instant::now() + testkit::WAIT;
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status() == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Restarts the RabbitMQ application on this machine (`rabbitmqctl
/// stop_app` + `start_app`): every connection drops, durable queues and
/// persistent messages come back from disk.
pub fn restart_broker() {
    for step in ["stop_app", "start_app"] {
        let status = Command::new("rabbitmqctl")
            .arg(step)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "rabbitmqctl {step} failed");
    }
}
