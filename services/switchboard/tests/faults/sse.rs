//! OpenAI-API streams under faults: users that read completions as
//! Server-Sent Events and, when a stream breaks, resume it
//! (`GET /v1/chat/completions/{id}/stream` with `Last-Event-ID`) — on the
//! restarted gateway — while the gateway or a responder is SIGKILLed.
//! Every request must end answered with exactly its text (nothing lost,
//! nothing twice), or told why (`answer_restarted` after a responder died
//! mid-stream: text cannot be taken back); none may hang.

use crate::processes::{Service, Stack, TEMPLATE};
use crate::scenarios::ONE_AT_A_TIME;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use testkit::Cleanup;

const USERS: usize = 4;
const REQUESTS: usize = 15;
/// How long one request may take, resumes included.
const PER_REQUEST: Duration = Duration::from_secs(60);

/// How one request ended.
#[derive(Debug, Default)]
pub struct Tally {
    answered: AtomicUsize,
    told: AtomicUsize,
    wrong: AtomicUsize,
    lost: AtomicUsize,
    resumes: AtomicUsize,
    /// Streams open now (their response began, their end not yet read).
    open: AtomicUsize,
    /// Counts up when the clients are to cut every stream they read (and
    /// resume it): a fault that breaks no connection by itself.
    cut: tokio::sync::watch::Sender<u64>,
}

impl Tally {
    /// Every client cuts the stream it reads now, and resumes it.
    pub fn cut_streams(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    pub fn streams_open(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    pub fn resumed(&self) -> usize {
        self.resumes.load(Ordering::SeqCst)
    }
}

/// Where the users are and how they come back.
pub struct Setup<'a> {
    /// The broker as the gateways are given it, and each gateway's own
    /// (on a cluster: on other nodes).
    pub url: &'a str,
    pub gateway_urls: Vec<Option<String>>,
    pub responder_url: &'a str,
}

impl Setup<'_> {
    /// One gateway, one responder, on `url`.
    fn single(url: &str) -> Setup<'_> {
        Setup {
            url,
            gateway_urls: vec![None],
            responder_url: url,
        }
    }
}

/// Reads a stream's events into `text`, remembering the last event id;
/// `Ok(Some(error code))` for an error event, `Ok(None)` at `[DONE]`,
/// `Err` when the stream broke first.
async fn read(
    response: reqwest::Response,
    text: &mut String,
    last_id: &mut Option<String>,
    tally: &Tally,
) -> Result<Option<String>, ()> {
    let mut body = response.bytes_stream();
    let mut raw = String::new();
    let mut error = None;
    let mut cut = tally.cut.subscribe();
    cut.mark_unchanged();
    loop {
        let bytes = tokio::select! {
            bytes = body.next() => bytes,
            _ = cut.changed() => return Err(()),
        };
        let Some(bytes) = bytes else { break };
        let Ok(bytes) = bytes else { return Err(()) };
        raw.push_str(&String::from_utf8_lossy(&bytes));
        while let Some(end) = raw.find("\n\n") {
            let block: String = raw.drain(..end + 2).collect();
            let mut data = String::new();
            for line in block.lines() {
                if let Some(id) = line.strip_prefix("id:") {
                    *last_id = Some(id.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push_str(d.trim_start());
                }
            }
            if data == "[DONE]" {
                return Ok(error);
            }
            if let Ok(event) = serde_json::from_str::<Value>(&data) {
                if let Some(code) = event["error"]["code"].as_str() {
                    error = Some(code.to_owned());
                } else if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
                    text.push_str(piece);
                }
            }
        }
    }
    Err(())
}

/// One request, to its end: posted to the first gateway, read, resumed as
/// often as it breaks — on the last gateway (another, when there are two).
async fn ask(addrs: &[SocketAddr], token: &str, question: &str, tally: &Tally) {
    asked(addrs, token, question, tally).await;
    tally.open.fetch_sub(1, Ordering::SeqCst);
}

async fn asked(addrs: &[SocketAddr], token: &str, question: &str, tally: &Tally) {
    let (addr, resume_at) = (addrs[0], addrs[addrs.len() - 1]);
    let http = reqwest::Client::new();
    let body = json!({"stream": true, "messages": [{"role": "user", "content": question}]});
    let deadline = tokio::time::Instant::now() + PER_REQUEST;
    // Posted (a refused connection means nothing was sent: post again).
    let (mut response, completion) = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "could not post {question}"
        );
        let posted = http
            .post(format!("http://{addr}/v1/chat/completions"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await;
        match posted {
            Ok(r) if r.status() == 200 => {
                let id = r.headers()["x-completion-id"].to_str().unwrap().to_owned();
                tally.open.fetch_add(1, Ordering::SeqCst);
                break (r, id);
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let (mut text, mut last_id) = (String::new(), None);
    loop {
        match read(response, &mut text, &mut last_id, tally).await {
            Ok(None) if text == TEMPLATE.replace("{text}", question) => {
                tally.answered.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(None) => {
                println!("[sse] WRONG {question}: {text:?}");
                tally.wrong.fetch_add(1, Ordering::SeqCst);
                return;
            }
            Ok(Some(code)) => {
                // Told; what came before is a prefix of the answer, never a splice.
                if code != "answer_restarted"
                    || !TEMPLATE.replace("{text}", question).starts_with(&text)
                {
                    println!("[sse] WRONG {question}: {code} after {text:?}");
                    tally.wrong.fetch_add(1, Ordering::SeqCst);
                } else {
                    tally.told.fetch_add(1, Ordering::SeqCst);
                }
                return;
            }
            Err(()) => {}
        }
        // Broken: resume where it stopped, once the gateway is back.
        response = loop {
            if tokio::time::Instant::now() > deadline {
                println!("[sse] LOST {question} after {text:?}");
                tally.lost.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let mut resume = http
                .get(format!(
                    "http://{resume_at}/v1/chat/completions/{completion}/stream"
                ))
                .bearer_auth(token);
            if let Some(id) = &last_id {
                resume = resume.header("Last-Event-ID", id);
            }
            match resume.send().await {
                Ok(r) if r.status() == 200 => break r,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        };
        tally.resumes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Users asking one question after another while `strike` hits once a
/// third of the requests have ended.
pub async fn under_fault(
    name: &str,
    setup: Setup<'_>,
    strike: impl AsyncFnOnce(&Stack, &mut Vec<Service>, &mut Vec<Service>, &Tally),
) -> Tally {
    platform::telemetry::init_for_tests();
    let prefix = testkit::unique_prefix();
    let cleanup = Cleanup::new(setup.url, &prefix);
    let mut stack = Stack::new(name, setup.url, &prefix, setup.gateway_urls.len());
    stack.gateway_urls = setup.gateway_urls;
    stack.responder_url = setup.responder_url.to_owned();
    stack.words_per_chunk = 1;
    stack.chunk_delay_ms = 20;
    let mut gateways = Vec::new();
    for n in 0..stack.addrs.len() {
        gateways.push(stack.gateway(n));
        stack.gateway_ready(n).await;
    }
    let mut responders = vec![stack.responder()];
    let addr = stack.addrs[0];
    let addrs = stack.addrs.clone();
    let tally = Arc::new(Tally::default());
    let mut users = Vec::new();
    for user in 0..USERS {
        let guest = testkit::guest_session(addr).await.unwrap();
        cleanup.track_user(&guest.user_id);
        let (tally, addrs) = (tally.clone(), addrs.clone());
        users.push(tokio::spawn(async move {
            // Out of step, so that a fault finds streams at every stage.
            tokio::time::sleep(Duration::from_millis(70 * user as u64)).await;
            for n in 0..REQUESTS {
                ask(
                    &addrs,
                    &guest.token,
                    &format!("user {user} question {n}"),
                    &tally,
                )
                .await;
            }
        }));
    }
    let ended = |t: &Tally| {
        t.answered.load(Ordering::SeqCst)
            + t.told.load(Ordering::SeqCst)
            + t.wrong.load(Ordering::SeqCst)
    };
    testkit::wait_until("a third of the requests ended", || {
        ended(&tally) >= USERS * REQUESTS / 3
    })
    .await;
    // Strike while streams are open, so that it breaks some.
    testkit::wait_until("half the users have a stream open", || {
        tally.open.load(Ordering::SeqCst) >= USERS / 2
    })
    .await;
    strike(&stack, &mut gateways, &mut responders, &tally).await;
    for user in users {
        tokio::time::timeout(PER_REQUEST * REQUESTS as u32, user)
            .await
            .unwrap()
            .unwrap();
    }
    drop(gateways);
    drop(responders);
    drop(cleanup);
    Arc::try_unwrap(tally).unwrap()
}

pub fn assert_kept(scenario: &str, t: &Tally) {
    let (answered, told, wrong, lost, resumes) = (
        t.answered.load(Ordering::SeqCst),
        t.told.load(Ordering::SeqCst),
        t.wrong.load(Ordering::SeqCst),
        t.lost.load(Ordering::SeqCst),
        t.resumes.load(Ordering::SeqCst),
    );
    println!(
        "[sse] {scenario}: requests {} answered {answered} told (answer_restarted) {told} WRONG {wrong} LOST {lost} | resumes {resumes}",
        USERS * REQUESTS
    );
    assert_eq!(
        (wrong, lost),
        (0, 0),
        "{scenario}: nothing wrong, nothing lost"
    );
    assert_eq!(
        answered + told,
        USERS * REQUESTS,
        "{scenario}: every request ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_resume_on_another_gateway_after_a_gateway_sigkill() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let url = testkit::amqp_url().await;
    let two = Setup {
        gateway_urls: vec![None, None],
        ..Setup::single(&url)
    };
    let tally = under_fault(
        "sse-gateway-kill",
        two,
        async |stack: &Stack, gateways: &mut Vec<Service>, _: &mut Vec<Service>, _: &Tally| {
            // The gateway streaming every answer dies; its clients resume
            // on the other one, then post to it again once it is back.
            gateways.remove(0).kill();
            gateways.insert(0, stack.gateway(0));
            stack.gateway_ready(0).await;
        },
    )
    .await;
    assert!(
        tally.resumes.load(Ordering::SeqCst) > 0,
        "some streams broke and were resumed"
    );
    assert_eq!(
        tally.told.load(Ordering::SeqCst),
        0,
        "the same attempt goes on: nothing restarted"
    );
    assert_kept(
        "gateway SIGKILL, SSE clients resume on the other gateway",
        &tally,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_clients_are_told_when_a_responder_dies_mid_stream() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let url = testkit::amqp_url().await;
    let tally = under_fault(
        "sse-responder-kill",
        Setup::single(&url),
        async |stack: &Stack, _: &mut Vec<Service>, responders: &mut Vec<Service>, _: &Tally| {
            responders.pop().unwrap().kill();
            responders.push(stack.responder());
        },
    )
    .await;
    assert_kept("responder SIGKILL mid-stream, SSE clients", &tally);
}
