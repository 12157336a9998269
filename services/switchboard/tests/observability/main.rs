//! Metrics and traces, checked after a real round trip. A binary of its own:
//! metrics are process-wide, and here no other test adds to them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

#[path = "../pipeline/stack.rs"]
#[allow(dead_code)]
mod stack;

use stack::{Mock, TestStack, wait_counters};
use std::io::Write;
use std::sync::{Mutex, OnceLock};

/// Every log line of the process, as JSON.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter("info,gateway=debug,responder=debug")
            .with_writer(|| Capture)
            .init();
    });
}

fn log_lines() -> Vec<serde_json::Value> {
    let logs = LOGS.lock().unwrap();
    String::from_utf8_lossy(&logs)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Sum of every sample of `name` whose labels contain `labels`.
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            metric == name && rest.contains(labels)
        })
        .map(|(_, value)| value.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn a_round_trip_moves_the_metrics_and_one_trace_crosses_rabbitmq() {
    capture_logs();
    let stack = TestStack::start(0, Mock::default()).await;
    let mut settings = stack.responder_settings(Mock::default());
    settings.health.listen = "127.0.0.1:0".into();
    // A `processing` status before the answer, however fast it starts.
    settings.worker.processing_status_after_ms = 0;
    let responder = responder::Responder::build(settings).await.unwrap();
    let responder_addr = responder.health_addr().unwrap();
    let responder = responder.spawn();
    testkit::wait_until("the responder is connected", || responder.is_ready()).await;
    let mut counters = responder.counters();

    let scrape = |addr: std::net::SocketAddr| async move {
        let response = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let (_, mut client) = stack.client().await;
    let before = scrape(stack.addr()).await;

    let id = client.send_message("measure me").await.unwrap();
    let trace_id = match client.next_frame().await.unwrap() {
        protocol::ws::ServerFrame::Accepted { id: got, trace_id } if got == id => trace_id.unwrap(),
        other => panic!("expected accepted, got {other:?}"),
    };
    let chunks = client.collect_reply(id).await.unwrap().len() as f64;
    // The last ack reaches the gateway before this pong does.
    assert!(client.frames_before_pong().await.unwrap().is_empty());
    wait_counters(&mut counters, "the request is acked", |c| c.answered == 1).await;
    let after = scrape(stack.addr()).await;
    let moved =
        |name: &str, labels: &str| metric(&after, name, labels) - metric(&before, name, labels);

    assert_eq!(
        moved("switchboard_gateway_messages_published_total", ""),
        1.0
    );
    assert_eq!(
        moved(
            "switchboard_gateway_frames_received_total",
            r#"type="send""#
        ),
        1.0
    );
    assert_eq!(
        moved("switchboard_gateway_frames_received_total", r#"type="ack""#),
        chunks
    );
    assert_eq!(
        moved(
            "switchboard_gateway_frames_received_total",
            r#"type="ping""#
        ),
        1.0
    );
    assert_eq!(
        moved(
            "switchboard_gateway_frames_sent_total",
            r#"type="accepted""#
        ),
        1.0
    );
    assert_eq!(
        moved("switchboard_gateway_frames_sent_total", r#"type="reply""#),
        chunks
    );
    assert_eq!(
        moved(
            "switchboard_gateway_frames_sent_total",
            r#"type="message_status""#
        ),
        1.0,
        "one `processing` status"
    );
    assert_eq!(
        moved("switchboard_gateway_reply_chunks_consumed_total", ""),
        chunks
    );
    assert_eq!(
        moved("switchboard_request_first_chunk_seconds_count", ""),
        1.0
    );
    assert_eq!(
        moved("switchboard_request_final_chunk_seconds_count", ""),
        1.0
    );
    // The gateway's request and the responder's chunks, all confirmed.
    assert_eq!(
        moved("switchboard_amqp_publish_confirm_seconds_count", ""),
        1.0 + chunks
    );
    assert_eq!(
        moved(
            "switchboard_responder_requests_total",
            r#"outcome="answered""#
        ),
        1.0
    );
    assert_eq!(moved("switchboard_responder_answer_seconds_count", ""), 1.0);
    assert_eq!(metric(&after, "switchboard_gateway_sockets_open", ""), 1.0);
    assert_eq!(metric(&after, "switchboard_gateway_users_online", ""), 1.0);
    assert_eq!(
        metric(
            &after,
            "switchboard_broker_connected",
            "switchboard-gateway"
        ),
        1.0
    );
    // The responder serves the same registry on its health port.
    assert!(
        scrape(responder_addr)
            .await
            .contains("switchboard_responder_requests_total")
    );

    // One trace: started by the gateway, continued by the responder, and
    // linked from the reply chunks' delivery.
    let lines = log_lines();
    let with_trace = |target: &str, message: &str| {
        lines.iter().any(|l| {
            l["target"].as_str().is_some_and(|t| t.starts_with(target))
                && l["fields"]["message"] == message
                && (l["span"]["trace_id"] == trace_id.as_str()
                    || l["fields"]["trace_id"] == trace_id.as_str())
        })
    };
    assert!(
        with_trace("gateway", "message queued"),
        "the gateway logged the trace"
    );
    assert!(
        with_trace("responder", "answered"),
        "the responder's log line carries the gateway's trace id"
    );
    assert!(
        with_trace("gateway", "reply chunk for local sockets"),
        "the reply links back"
    );
    responder.stop().await;
}
