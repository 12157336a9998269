//! What the `switchboard` binary says when it starts and stops, run as a
//! process and read from its log: "up" only once RabbitMQ answers, one line
//! (not one per try, nor one per service) while it does not, and a clean
//! stop with no warning and no error.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(20);

/// The binary, with its log lines (stdout and stderr) on a channel.
struct Running {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(env: &[(&str, String)]) -> Self {
        // A built page of its own, so the log does not depend on whether
        // `web/` was built before the tests ran (it is not on a clean clone).
        let web_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("start_stop_web");
        std::fs::create_dir_all(&web_dir).unwrap();
        std::fs::write(
            web_dir.join("index.html"),
            "<!doctype html><title>t</title>",
        )
        .unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
        command
            .env("SWITCHBOARD_HTTP__LISTEN", "127.0.0.1:0")
            .env("SWITCHBOARD_ROOMS__DATABASE_URL", "")
            .env("SWITCHBOARD_HTTP__WEB_DIR", &web_dir)
            .env(
                "SWITCHBOARD_AUTH__JWT_SECRET",
                "a-test-secret-that-is-long-enough-0123456789",
            )
            .env("SWITCHBOARD_LOG__FORMAT", "text")
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("the switchboard binary starts");
        let (tx, lines) = mpsc::unbounded_channel();
        forward(child.stdout.take().unwrap(), tx.clone());
        forward(child.stderr.take().unwrap(), tx);
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads the log until a line contains `text`; fails after [`WAIT`].
    async fn until(&mut self, text: &str) -> String {
        let found = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.recv().await {
                self.seen.push(line.clone());
                if line.contains(text) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no log line with {text:?}; seen:\n{}", self.seen.join("\n")),
        }
    }

    /// SIGTERM, then the rest of the log until the process is gone.
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().expect("still running") as i32;
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("stops within the wait")
            .unwrap();
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(2), self.lines.recv()).await
        {
            self.seen.push(line);
        }
        assert!(
            exit.success(),
            "exit {exit:?}; log:\n{}",
            self.seen.join("\n")
        );
        self.seen
    }
}

/// Sends each line of `pipe` to `tx`.
fn forward(pipe: impl AsyncRead + Unpin + Send + 'static, tx: mpsc::UnboundedSender<String>) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
}

fn at_level<'a>(log: &'a [String], level: &str) -> Vec<&'a String> {
    let level = format!(" {level} ");
    log.iter().filter(|line| line.contains(&level)).collect()
}

#[tokio::test]
async fn an_unreachable_broker_is_said_once_and_up_is_not_claimed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("amqp://guest:guest@{}/%2f", closed.local_addr().unwrap());
    drop(closed);
    let mut running = Running::start(&[
        ("AMQP_URL", url),
        // The quiet connection's line shows both have tried.
        (
            "SWITCHBOARD_LOG__LEVEL",
            "info,broker::connection=debug".into(),
        ),
    ]);
    running.until("said once for the process").await;
    let log = running.stop().await;
    let warnings = at_level(&log, "WARN");
    assert_eq!(warnings.len(), 1, "one line for the process: {warnings:#?}");
    assert!(warnings[0].contains("RabbitMQ is not reachable"));
    assert!(at_level(&log, "ERROR").is_empty(), "{log:#?}");
    assert!(
        !log.iter().any(|line| line.contains("Switchboard is up")),
        "never up without a broker: {log:#?}"
    );
}

#[tokio::test]
async fn up_once_the_broker_answers_and_a_clean_stop_says_no_warning_or_error() {
    let url = testkit::amqp_url().await;
    let prefix = testkit::unique_prefix();
    let cleanup = testkit::Cleanup::new(&url, &prefix);
    let mut running = Running::start(&[("AMQP_URL", url), ("SWITCHBOARD_AMQP__PREFIX", prefix)]);
    let listening = running.until("gateway listening: http://").await;
    let addr = listening
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("an address")
        .parse()
        .expect("host:port");
    running.until("Switchboard is up").await;
    // A user with a socket open and an answer received, as at any stop.
    let guest = testkit::guest_session(addr).await.unwrap();
    cleanup.track_user(&guest.user_id);
    let mut client = testkit::ChatClient::connect(addr, &guest.token)
        .await
        .unwrap();
    let answer: String = client
        .ask("hello")
        .await
        .unwrap()
        .iter()
        .map(|chunk| chunk.text.as_str())
        .collect();
    assert!(answer.contains("hello"), "{answer}");
    let log = running.stop().await;
    assert!(at_level(&log, "WARN").is_empty(), "{log:#?}");
    assert!(at_level(&log, "ERROR").is_empty(), "{log:#?}");
    drop(client);
}
