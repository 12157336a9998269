//! `loadgen --sse`: the same users and measurements as the WebSocket run,
//! but through the OpenAI-compatible API — each user keeps `--in-flight`
//! streamed completions (`POST /v1/chat/completions`, `stream: true`) going
//! and reads their Server-Sent Events to `[DONE]`. First chunk: the first
//! event with text; final: `[DONE]`; both from the moment the request left.

use crate::Plan;
use crate::run::{
    Counters, DRAIN, Percentiles, Report, distribution, guest_token, histogram, progress,
};
use anyhow::bail;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::time::Instant;

/// One stream's times, in microseconds from its request.
struct Timed {
    first: Option<u64>,
    last: u64,
    events: u64,
}

pub async fn run(plan: &Plan) -> anyhow::Result<Report> {
    if plan.rate.is_some() {
        bail!("--sse runs closed loop: use --in-flight");
    }
    let http = reqwest::Client::builder().tcp_nodelay(true).build()?;
    let mut tokens = Vec::with_capacity(plan.users);
    for n in 0..plan.users {
        let gateway = &plan.gateways[n % plan.gateways.len()];
        tokens.push((gateway.clone(), guest_token(&http, gateway).await?));
    }
    let counters = Arc::new(Counters {
        budget: plan.max_messages.into(),
        ..Counters::default()
    });
    let t0 = Instant::now() + Duration::from_millis(200);
    let deadline = t0 + plan.duration;
    let mut loops = Vec::new();
    for (gateway, token) in tokens {
        for _ in 0..plan.in_flight {
            let (http, counters, text) = (http.clone(), counters.clone(), plan.text.clone());
            let (gateway, token) = (gateway.clone(), token.clone());
            loops.push(tokio::spawn(async move {
                let (mut first, mut last) = (histogram(), histogram());
                tokio::time::sleep_until(t0).await;
                while Instant::now() < deadline && counters.take_one() {
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                    match complete(&http, &gateway, &token, &text, &counters).await {
                        Some(timed) => {
                            counters.answered.fetch_add(1, Ordering::Relaxed);
                            counters.chunks.fetch_add(timed.events, Ordering::Relaxed);
                            if let Some(f) = timed.first {
                                let _ = first.record(f.max(1));
                            }
                            let _ = last.record(timed.last.max(1));
                        }
                        None => {
                            counters.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                (first, last)
            }));
        }
    }
    let progress = tokio::spawn(progress(counters.clone(), t0, deadline + DRAIN));
    let (mut first, mut last) = (histogram(), histogram());
    for one in loops {
        let (f, l) = one.await?;
        first.add(&f)?;
        last.add(&l)?;
    }
    progress.abort();
    let seconds = plan.duration.as_secs_f64();
    let answered = counters.answered.load(Ordering::Relaxed);
    let chunks = counters.chunks.load(Ordering::Relaxed);
    let per_answer = |n: u64| n as f64 / answered.max(1) as f64;
    Ok(Report {
        label: plan.label.clone(),
        mode: format!(
            "closed loop over SSE (OpenAI API), {} in flight per user",
            plan.in_flight
        ),
        users: plan.users,
        seconds,
        sent: counters.sent.load(Ordering::Relaxed),
        answered,
        incomplete: 0,
        errors: counters.errors.load(Ordering::Relaxed),
        reconnects: 0,
        error_codes: counters.error_codes.lock().expect("codes").clone(),
        answers_per_second: last.len() as f64 / seconds,
        chunks_per_answer: per_answer(chunks),
        broker_messages_per_answer: per_answer(answered + chunks),
        restarts: 0,
        first_chunk: Percentiles::of(&first),
        final_chunk: Percentiles::of(&last),
        final_chunk_distribution: distribution(&last),
        send_lateness: None,
    })
}

/// One streamed completion, read to `[DONE]`; `None` if it failed.
async fn complete(
    http: &reqwest::Client,
    gateway: &str,
    token: &str,
    text: &str,
    counters: &Counters,
) -> Option<Timed> {
    let started = Instant::now();
    let body = json!({"stream": true, "messages": [{"role": "user", "content": text}]});
    let response = http
        .post(format!("{gateway}/v1/chat/completions"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .ok()?;
    if !response.status().is_success() {
        let code = response
            .json::<Value>()
            .await
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "http".into());
        *counters
            .error_codes
            .lock()
            .expect("codes")
            .entry(code)
            .or_default() += 1;
        return None;
    }
    let mut stream = response.bytes_stream();
    let (mut raw, mut timed) = (
        String::new(),
        Timed {
            first: None,
            last: 0,
            events: 0,
        },
    );
    while let Some(bytes) = stream.next().await {
        raw.push_str(&String::from_utf8_lossy(&bytes.ok()?));
        while let Some(end) = raw.find("\n\n") {
            let event: String = raw.drain(..end + 2).collect();
            let Some(data) = event.lines().find_map(|l| l.strip_prefix("data: ")) else {
                continue;
            };
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            if data == "[DONE]" {
                timed.last = micros;
                return Some(timed);
            }
            if data.contains("\"error\"") {
                return None;
            }
            timed.events += 1;
            timed.first.get_or_insert(micros);
        }
    }
    None
}
