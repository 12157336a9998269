//! The request consumer: takes requests from `chat_queue` (manual acks, up to
//! `prefetch` at once), streams each answer to the user's reply queue with
//! confirms, and acks a request only after its final chunk is confirmed.

use crate::cancellations::Cancellations;
use crate::engine::{Engine, EngineError};
use crate::mock;
use crate::settings::Settings;
use broker::lapin::message::Delivery;
use broker::lapin::options::{BasicAckOptions, BasicRejectOptions};
use broker::{Broker, BrokerError, PublishError, Session, properties};
use futures_util::StreamExt;
use protocol::ErrorCode;
use protocol::amqp::{self, ChatRequest, MessageStatus, ReplyChunk, ReplyError, StatusEvent};
use protocol::topology::Names;
use protocol::trace::TraceParent;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// What the responder has done, for tests and operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests answered in full and acked.
    pub answered: u64,
    /// Requests that could not be read and were dead-lettered.
    pub rejected: u64,
    /// Answers that failed and were handed back to the queue (each counts
    /// towards the request's delivery limit).
    pub failed: u64,
    /// Dead-lettered requests whose user was told (or had no queue left).
    pub dead_letters_notified: u64,
    /// Answers stopped by a `cancel` (included in `answered`: the request
    /// got its final chunk and was acked).
    pub cancelled: u64,
    /// Answers the model failed (included in `answered`: the user got a
    /// final chunk with `model_failed`, and the request was acked).
    pub model_failures: u64,
}

/// Why an answer could not be given.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AnswerError {
    /// Publishing failed; usually passing (broker busy, connection hiccup).
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The model can never answer this request (the mock's fail marker).
    #[error(transparent)]
    Refused(#[from] mock::ModelFailure),
}

/// Everything a request handler needs.
#[derive(Debug)]
pub(crate) struct Worker {
    pub settings: Settings,
    pub broker: Broker,
    pub counters: watch::Sender<Counters>,
    /// Requests are handled on this tracker so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Fires when in-flight answers must be abandoned (grace period over, or
    /// a kill): handlers stop without acking, so RabbitMQ redelivers.
    pub abandon: CancellationToken,
    /// This process, on `chat_control`.
    pub instance: String,
    /// Answers being generated here, and cancels that came before theirs.
    pub cancellations: Cancellations,
    /// Whether this responder's control queue is consumed (cancels reach it).
    pub cancels_ready: std::sync::atomic::AtomicBool,
    /// What writes the answers.
    pub engine: Engine,
}

impl Worker {
    /// Connected to RabbitMQ and listening for cancels.
    pub fn is_ready(&self) -> bool {
        self.broker.is_connected()
            && self
                .cancels_ready
                .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Consumes until `stop` fires, re-subscribing after channel errors and on
/// every new broker session.
pub(crate) async fn consume(worker: Arc<Worker>, stop: CancellationToken) {
    let broker = worker.broker.clone();
    broker::consumer::run_consumer(&broker, &stop, "requests", |session| {
        consume_session(&worker, session, &stop)
    })
    .await;
}

async fn consume_session(
    worker: &Arc<Worker>,
    session: Session,
    stop: &CancellationToken,
) -> Result<(), BrokerError> {
    let queue = worker.broker.names().chat_queue();
    let setup_limit = Duration::from_millis(worker.settings.amqp.connect_timeout_ms);
    info!(
        queue,
        prefetch = worker.settings.worker.prefetch,
        "consuming requests"
    );
    // Up to `prefetch` requests are answered at once, each on a task that
    // keeps the channel open until its ack is sent.
    let serve = |delivery, channel| {
        let worker = worker.clone();
        let session = session.clone();
        worker.tasks.clone().spawn(async move {
            let abandon = worker.abandon.clone();
            tokio::select! {
                _ = abandon.cancelled() => debug!("answer abandoned; RabbitMQ will redeliver the request"),
                _ = handle(&worker, &session, delivery) => {}
            }
            drop(channel);
        });
        std::future::ready(())
    };
    let prefetch = worker.settings.worker.prefetch;
    broker::consumer::serve_queue(
        &session,
        &queue,
        "responder",
        prefetch,
        setup_limit,
        stop,
        serve,
    )
    .await
}

/// Attempts at streaming one answer before the request is handed back to the
/// queue. Retrying here, rather than requeueing at once, keeps a passing
/// broker hiccup from using up the request's delivery limit; repeating an
/// answer is harmless because its chunks are identical (derived ids).
const ANSWER_ATTEMPTS: u32 = 3;

/// Answers one request. Every path ends in exactly one ack, nack or reject
/// (or none at all when the channel is gone, in which case RabbitMQ requeues).
async fn handle(worker: &Worker, session: &Session, delivery: Delivery) {
    let request = match amqp::decode::<ChatRequest>(&delivery.data) {
        Ok(request) => request,
        Err(e) => {
            error!(
                error = %e,
                message_id = ?delivery.properties.message_id(),
                user_id = ?properties::user_header(&delivery.properties),
                "unreadable request; dead-lettering it"
            );
            match delivery.reject(BasicRejectOptions { requeue: false }).await {
                Ok(true) => {
                    metrics::counter!("switchboard_responder_requests_total", "outcome" => "rejected").increment(1);
                    worker.counters.send_modify(|c| c.rejected += 1);
                }
                Ok(false) => {
                    warn!("could not reject the unreadable request: its channel is closed")
                }
                Err(e) => warn!(error = %e, "could not reject the unreadable request"),
            }
            return;
        }
    };
    let span = info_span!(
        "answer",
        trace_id = tracing::field::Empty,
        user_id = %request.user_id,
        message_id = %request.id,
        redelivered = delivery.redelivered,
    );
    // Continue the gateway's trace (or start one for a message without).
    let trace = match properties::traceparent(&delivery.properties) {
        Some(incoming) => platform::telemetry::continue_trace(&span, &incoming),
        None => platform::telemetry::start_trace(&span),
    };
    span.record("trace_id", tracing::field::display(trace.trace_id()));
    if delivery.redelivered {
        metrics::counter!("switchboard_responder_redeliveries_total").increment(1);
    }
    let started = tokio::time::Instant::now();
    async {
        let after = Duration::from_millis(worker.settings.worker.processing_status_after_ms);
        let mut notice = Notice::Due(started + after);
        let answering = worker.cancellations.begin(&request.user_id, request.id);
        let mut attempt = 1;
        let outcome = loop {
            let answer = stream_answer(worker, session, &request, &trace, &answering.token, &mut notice);
            match answer.await {
                Ok(finished) => break Ok(finished),
                Err(e @ AnswerError::Publish(_))
                    if attempt < ANSWER_ATTEMPTS && session.is_live() =>
                {
                    let delay = Duration::from_millis(200 * u64::from(attempt));
                    warn!(error = %e, attempt, retry_in = ?delay, "answer failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => break Err(e),
            }
        };
        match outcome {
            Ok(finished) => match delivery.ack(BasicAckOptions::default()).await {
                Ok(true) => {
                    let outcome = match finished {
                        Finished::Answered => "answered",
                        Finished::Cancelled => "cancelled",
                        Finished::ModelFailed => "model_failed",
                    };
                    metrics::counter!("switchboard_responder_requests_total", "outcome" => outcome).increment(1);
                    metrics::histogram!("switchboard_responder_answer_seconds").record(started.elapsed().as_secs_f64());
                    worker.counters.send_modify(|c| {
                        c.answered += 1;
                        c.cancelled += u64::from(finished == Finished::Cancelled);
                        c.model_failures += u64::from(finished == Finished::ModelFailed);
                    });
                    debug!(outcome, "answered");
                }
                // The channel is gone; the request comes back and is answered
                // again with the same reply id and seq numbers.
                Ok(false) => warn!("could not ack the answered request: its channel is closed"),
                Err(e) => warn!(error = %e, "could not ack the answered request"),
            },
            Err(e) => {
                // Back to the queue. A reject counts towards the request's
                // delivery limit on every broker version (a nack may not), so
                // a request that always fails ends up dead-lettered and its
                // user is told, instead of looping forever.
                warn!(
                    error = %e,
                    deliveries = delivery_count(&delivery) + 1,
                    "answer failed; handing the request back"
                );
                match delivery.reject(BasicRejectOptions { requeue: true }).await {
                    Ok(true) => {
                        metrics::counter!("switchboard_responder_requests_total", "outcome" => "failed").increment(1);
                        worker.counters.send_modify(|c| c.failed += 1);
                    }
                    Ok(false) => warn!("could not hand the request back: its channel is closed"),
                    Err(e) => warn!(error = %e, "could not hand the request back"),
                }
            }
        }
    }
    .instrument(span)
    .await
}

/// How an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    Answered,
    /// Stopped by a `cancel`: its last chunk is a final one marked so.
    Cancelled,
    /// The model failed or was cut off: its last chunk is a final one with
    /// `model_failed`.
    ModelFailed,
}

/// The `processing` status of one request: told once, and only when the
/// answer's first chunk has not gone out by the time it is due. An answer
/// that starts streaming sooner says as much by itself; an extra message
/// through the broker for each cost about a fifth of the pipeline's
/// throughput (docs/performance.md).
#[derive(Debug, Clone, Copy)]
enum Notice {
    /// Not told yet; tell at this instant unless the first chunk goes first.
    Due(tokio::time::Instant),
    /// Told, or no longer needed (a chunk went out).
    Settled,
}

/// Tells the user a responder is on their message (best effort: the status
/// is advisory, the answer itself is what counts).
async fn tell_processing(
    worker: &Worker,
    session: &Session,
    request: &ChatRequest,
    trace: &TraceParent,
) {
    let event = StatusEvent::new(
        request.user_id.clone(),
        request.id,
        MessageStatus::Processing,
    );
    let published = session
        .publisher()
        .publish_best_effort(
            &worker.broker.names().responses_exchange(),
            Names::reply_routing_key(&request.user_id),
            &amqp::encode(&event),
            properties::status_event(&event, trace),
        )
        .await;
    if let Err(e) = published {
        debug!(error = %e, "could not tell the user their message is being processed");
    }
}

/// Publishes every piece the engine writes as a chunk as it comes, keeping
/// their confirms in flight, then waits for all of them. When `cancel`
/// fires, the chunk due next becomes a final one marked cancelled and the
/// engine's stream is dropped (which stops it). When the model fails, the
/// user gets a final chunk with `model_failed`; a request the model refuses
/// outright goes back to the queue ([`AnswerError::Refused`]). A reply with
/// no queue to go to (the user's queue expired) is dropped with a warning:
/// there is nobody left to read it.
async fn stream_answer(
    worker: &Worker,
    session: &Session,
    request: &ChatRequest,
    trace: &TraceParent,
    cancel: &CancellationToken,
    notice: &mut Notice,
) -> Result<Finished, AnswerError> {
    let exchange = worker.broker.names().responses_exchange();
    // An answer to a room goes to every member's queue through the room's key.
    let routing_key = match &request.room_id {
        Some(room) => Names::room_routing_key(room),
        None => Names::reply_routing_key(&request.user_id).to_owned(),
    };
    let routing_key = routing_key.as_str();
    let mut pieces = worker.engine.answer(request);
    let mut pending = Vec::new();
    let mut seq: u32 = 0;
    let finished = loop {
        let next = tokio::select! {
            biased;
            _ = cancel.cancelled() => None,
            // Before the next piece, so a notice due at once goes first.
            () = notice_due(*notice) => {
                tell_processing(worker, session, request, trace).await;
                *notice = Notice::Settled;
                continue;
            }
            next = pieces.next() => Some(next),
        };
        let (chunk, finished) = match next {
            None => (
                ReplyChunk::cancelled(request, seq),
                Some(Finished::Cancelled),
            ),
            Some(Some(Ok(piece))) => {
                let last = piece.last;
                let chunk = ReplyChunk::answering(request, seq, piece.text, last);
                (chunk, last.then_some(Finished::Answered))
            }
            // The stream ended without a piece marked last.
            Some(None) => (
                ReplyChunk::answering(request, seq, String::new(), true),
                Some(Finished::Answered),
            ),
            Some(Some(Err(EngineError::Refused(refused)))) => return Err(refused.into()),
            Some(Some(Err(EngineError::Failed(why)))) => {
                warn!(engine = worker.engine.name(), reason = %why, "the model failed; telling the user");
                let error = ReplyError {
                    code: ErrorCode::ModelFailed,
                    message: why,
                };
                let chunk = ReplyChunk {
                    request_sent_at_ms: Some(request.sent_at_ms),
                    ..ReplyChunk::failure(request.user_id.clone(), request.id, error)
                };
                (chunk, Some(Finished::ModelFailed))
            }
        };
        let confirm = session
            .publisher()
            .start(
                &exchange,
                routing_key,
                &amqp::encode(&chunk),
                properties::reply_chunk(&chunk, trace),
            )
            .await?;
        pending.push(confirm);
        *notice = Notice::Settled;
        seq += 1;
        if let Some(finished) = finished {
            break finished;
        }
    };
    drop(pieces);
    let mut unroutable = false;
    for confirm in pending {
        match confirm.wait().await {
            Ok(()) => {}
            Err(PublishError::Unroutable { .. }) => unroutable = true,
            Err(e) => return Err(e.into()),
        }
    }
    if unroutable {
        warn!("the user's reply queue does not exist (expired?); answer dropped");
    }
    Ok(finished)
}

/// Fires when `notice` is due; never once it is settled.
async fn notice_due(notice: Notice) {
    match notice {
        // A timer's first poll is pending even when its instant has passed.
        Notice::Due(at) if at <= tokio::time::Instant::now() => {}
        Notice::Due(at) => tokio::time::sleep_until(at).await,
        Notice::Settled => std::future::pending().await,
    }
}

/// How often RabbitMQ delivered this message before (quorum queues set
/// `x-delivery-count` on redeliveries).
pub(crate) fn delivery_count(delivery: &Delivery) -> i64 {
    use broker::lapin::types::AMQPValue;
    let count = delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count").cloned());
    match count {
        Some(AMQPValue::LongLongInt(n)) => n,
        Some(AMQPValue::LongInt(n)) => i64::from(n),
        Some(AMQPValue::ShortInt(n)) => i64::from(n),
        Some(AMQPValue::LongUInt(n)) => i64::from(n),
        _ => 0,
    }
}
