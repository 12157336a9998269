//! The reference: the same two broker hops without WebSockets or
//! Switchboard code. A client publishes persistent requests with confirms to
//! a quorum queue; a worker (its own connection) consumes them with manual
//! acks and publishes each reply persistently, with confirm and mandatory,
//! to the requesting user's durable queue, then acks; the client consumes
//! the reply. Plus the time RabbitMQ needs to declare, bind and consume many
//! per-user queues.

use crate::run::{Percentiles, Report};
use anyhow::Context;
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::Mutex;
use tokio::time::Instant;

fn args(entries: &[(&str, AMQPValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in entries {
        table.insert(ShortString::from(*k), v.clone());
    }
    table
}

/// Round trips with `users` × `in_flight` outstanding for `duration`.
pub async fn round_trips(
    url: &str,
    users: usize,
    in_flight: usize,
    duration: Duration,
) -> anyhow::Result<Report> {
    let prefix = format!(
        "baseline-{}",
        protocol::MessageId::new_random()
            .to_string()
            .split('-')
            .next()
            .unwrap_or("x")
    );
    let client = Connection::connect(url, ConnectionProperties::default())
        .await
        .context("connect")?;
    let worker = Connection::connect(url, ConnectionProperties::default()).await?;
    let setup = client.create_channel().await?;
    let requests = format!("{prefix}.requests");
    setup
        .queue_declare(
            requests.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args(&[("x-queue-type", AMQPValue::LongString("quorum".into()))]),
        )
        .await?;
    let reply_queues: Vec<String> = (0..users).map(|u| format!("{prefix}.reply.{u}")).collect();
    for queue in &reply_queues {
        setup
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
    }

    // The worker: manual acks, reply with confirm + mandatory, then ack.
    let worker_in = worker.create_channel().await?;
    worker_in.basic_qos(500, BasicQosOptions::default()).await?;
    let worker_out = worker.create_channel().await?;
    worker_out.confirm_select(Default::default()).await?;
    let mut incoming = worker_in
        .basic_consume(
            requests.as_str().into(),
            "worker".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let worker_task = tokio::spawn(async move {
        while let Some(Ok(delivery)) = incoming.next().await {
            let out = worker_out.clone();
            tokio::spawn(async move {
                let reply_to = delivery.properties.reply_to().clone().unwrap_or_default();
                let confirm = out
                    .basic_publish(
                        "".into(),
                        reply_to,
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &delivery.data,
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await;
                if let Ok(confirm) = confirm {
                    let _ = confirm.await;
                }
                let _ = delivery.ack(BasicAckOptions::default()).await;
            });
        }
    });

    // The client: per user, `in_flight` outstanding; measure publish → reply.
    let publisher = client.create_channel().await?;
    publisher.confirm_select(Default::default()).await?;
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        600_000_000,
        3,
    )?));
    let answered = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let mut tasks = Vec::new();
    for queue in reply_queues.clone() {
        let channel = client.create_channel().await?;
        let mut replies = channel
            .basic_consume(
                queue.as_str().into(),
                "client".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let publisher = publisher.clone();
        let requests = requests.clone();
        let histogram = histogram.clone();
        let (answered, sent) = (answered.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            let mut started: HashMap<u64, Instant> = HashMap::new();
            let mut next_id = 0u64;
            let publish = |id: u64| {
                let publisher = publisher.clone();
                let requests = requests.clone();
                let queue = queue.clone();
                async move {
                    let confirm = publisher
                        .basic_publish(
                            "".into(),
                            requests.as_str().into(),
                            BasicPublishOptions::default(),
                            &id.to_be_bytes(),
                            BasicProperties::default()
                                .with_delivery_mode(2)
                                .with_reply_to(queue.as_str().into()),
                        )
                        .await;
                    if let Ok(confirm) = confirm {
                        let _ = confirm.await;
                    }
                }
            };
            for _ in 0..in_flight {
                started.insert(next_id, Instant::now());
                publish(next_id).await;
                sent.fetch_add(1, Ordering::Relaxed);
                next_id += 1;
            }
            while let Ok(Some(Ok(reply))) =
                tokio::time::timeout_at(deadline + Duration::from_secs(10), replies.next()).await
            {
                let _ = reply.ack(BasicAckOptions::default()).await;
                let id = u64::from_be_bytes(reply.data[..8].try_into().unwrap_or_default());
                if let Some(at) = started.remove(&id) {
                    let _ = histogram
                        .lock()
                        .await
                        .record((at.elapsed().as_micros() as u64).max(1));
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                if Instant::now() < deadline {
                    started.insert(next_id, Instant::now());
                    publish(next_id).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    next_id += 1;
                } else if started.is_empty() {
                    break;
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    worker_task.abort();
    for queue in reply_queues.iter().chain([&requests]) {
        let _ = setup
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    let histogram = histogram.lock().await;
    let latency = Percentiles::of(&histogram);
    let seconds = duration.as_secs_f64();
    Ok(Report {
        label: format!("baseline-{users}x{in_flight}"),
        mode: format!("plain lapin, {in_flight} in flight per user"),
        users,
        seconds,
        sent: sent.load(Ordering::Relaxed),
        answered: answered.load(Ordering::Relaxed),
        incomplete: 0,
        errors: 0,
        reconnects: 0,
        error_codes: Default::default(),
        answers_per_second: answered.load(Ordering::Relaxed) as f64 / seconds,
        // One request and one reply per round trip.
        chunks_per_answer: 1.0,
        broker_messages_per_answer: 2.0,
        restarts: 0,
        first_chunk: Percentiles::of(&histogram),
        final_chunk: latency,
        final_chunk_distribution: crate::run::distribution(&histogram),
        send_lateness: None,
    })
}

/// Seconds RabbitMQ needs to declare, bind and consume `count` per-user
/// queues (durable, x-expires, single active consumer), spread over 8
/// channels as the gateway does.
pub async fn declare_queues(
    url: &str,
    count: usize,
) -> anyhow::Result<(f64, Option<crate::machine::PerThing>)> {
    let prefix = format!(
        "baseline-q-{}",
        protocol::MessageId::new_random()
            .to_string()
            .split('-')
            .next()
            .unwrap_or("x")
    );
    let connection = Connection::connect(url, ConnectionProperties::default()).await?;
    let setup = connection.create_channel().await?;
    let exchange = format!("{prefix}.responses");
    setup
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Direct,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let memory_before = crate::machine::BrokerMemory::read();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for shard in 0..8 {
        let channel = connection.create_channel().await?;
        let exchange = exchange.clone();
        let prefix = prefix.clone();
        tasks.push(tokio::spawn(async move {
            let mut consumers = Vec::new();
            for n in (shard..count).step_by(8) {
                let queue = format!("{prefix}.{n}");
                channel
                    .queue_declare(
                        queue.as_str().into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        args(&[
                            ("x-expires", AMQPValue::LongLongInt(60_000)),
                            ("x-single-active-consumer", AMQPValue::Boolean(true)),
                        ]),
                    )
                    .await?;
                channel
                    .queue_bind(
                        queue.as_str().into(),
                        exchange.as_str().into(),
                        queue.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                consumers.push(
                    channel
                        .basic_consume(
                            queue.as_str().into(),
                            format!("c{n}").as_str().into(),
                            BasicConsumeOptions::default(),
                            FieldTable::default(),
                        )
                        .await?,
                );
            }
            Ok::<_, lapin::Error>((channel, consumers))
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.push(task.await??);
    }
    let seconds = started.elapsed().as_secs_f64();
    // Held as long as `loadgen idle` holds its users before reading.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let per_queue = memory_before
        .zip(crate::machine::BrokerMemory::read())
        .map(|(before, after)| after.per(&before, count));
    // Deleted now rather than left to expire: 10,000 queues expiring a
    // minute later would load the broker during whatever is measured next.
    let mut deletes = Vec::new();
    for (shard, (channel, consumers)) in all.into_iter().enumerate() {
        let prefix = prefix.clone();
        deletes.push(tokio::spawn(async move {
            drop(consumers);
            for n in (shard..count).step_by(8) {
                let queue = format!("{prefix}.{n}");
                channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await?;
            }
            Ok::<_, lapin::Error>(())
        }));
    }
    for delete in deletes {
        delete.await??;
    }
    let _ = connection.close(200, "done".into()).await;
    let cleanup = Connection::connect(url, ConnectionProperties::default()).await?;
    let _ = cleanup
        .create_channel()
        .await?
        .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
        .await;
    Ok((seconds, per_queue))
}
