//! The request consumer: takes requests from `chat_queue` (manual acks, up
//! to `prefetch` at once), has each answered ([`Answer`]) and acks a request
//! only after its final chunk is confirmed. Every path ends in exactly one
//! ack, reject or nothing (the channel is gone, and RabbitMQ requeues).

use crate::answer::{Answer, AnswerError, Finished, Notice};
use crate::cancellations::Cancellations;
use crate::coalescer::Gathering;
use crate::counters::Tally;
use crate::engine::Engine;
use crate::settings::{StreamSettings, WorkerSettings};
use broker::consumer::{Serve, Served};
use broker::lapin::message::Delivery;
use broker::lapin::options::{BasicAckOptions, BasicRejectOptions};
use broker::{Broker, Session, properties};
use protocol::amqp::{self, ChatRequest};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, debug, error, info, info_span, warn};

/// Attempts at streaming one answer before the request is handed back to the
/// queue. Retrying here, rather than requeueing at once, keeps a passing
/// broker hiccup (a node restarting, a quorum queue electing its leader)
/// from using up the request's delivery limit. Each retry is a new attempt
/// with a higher number, and clients show only the newest
/// (docs/protocol.md §3), so a model that writes something else the second
/// time garbles nothing. The waits between them double from 200 ms: 6.2 s
/// in all.
const ANSWER_ATTEMPTS: u32 = 6;

/// Answers requests.
#[derive(Debug)]
pub struct Requests {
    broker: Broker,
    /// What writes the answers.
    engine: Engine,
    /// Answers being generated here, so a cancel can stop them.
    cancellations: Arc<Cancellations>,
    tally: Tally,
    /// Requests answered at once (the consumer's prefetch).
    prefetch: u16,
    /// When an answer that has not started streaming is told `processing`.
    processing_after: Duration,
    /// How pieces are gathered into chunks.
    gathering: Gathering,
    /// Each request is answered on a task here, so shutdown can wait.
    tasks: TaskTracker,
    /// Fires when in-flight answers must be abandoned (grace period over, or
    /// a kill): handlers stop without acking, so RabbitMQ redelivers.
    abandon: CancellationToken,
}

impl Requests {
    pub fn new(
        broker: Broker,
        engine: Engine,
        cancellations: Arc<Cancellations>,
        tally: Tally,
        settings: &WorkerSettings,
        stream: &StreamSettings,
        prefetch: u16,
    ) -> Self {
        Self {
            broker,
            engine,
            cancellations,
            tally,
            prefetch,
            processing_after: Duration::from_millis(settings.processing_status_after_ms),
            gathering: Gathering {
                flush: Duration::from_millis(stream.flush_ms),
                max_bytes: stream.max_chunk_bytes.max(1),
            },
            tasks: TaskTracker::new(),
            abandon: CancellationToken::new(),
        }
    }

    /// Waits for the answers in flight, at most `grace`; then abandons
    /// the rest (they are redelivered) and waits for them to let go.
    pub async fn finish(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            warn!(
                in_flight = self.tasks.len(),
                "grace period over; abandoning answers in flight (they will be redelivered)"
            );
            self.abandon.cancel();
        }
        self.tasks.wait().await;
    }

    /// Abandons every answer in flight at once, as a crash would, and waits
    /// for them to let go.
    pub async fn abandon(&self) {
        self.abandon.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

impl Serve for Requests {
    const WHAT: &'static str = "requests";

    async fn serve(self: Arc<Self>, session: Session, stop: &CancellationToken) -> Served {
        let queue = self.broker.names().chat_queue();
        info!(queue, prefetch = self.prefetch, "consuming requests");
        // Up to `prefetch` requests are answered at once, each on a task that
        // keeps the channel open until its ack is sent.
        let serve = |delivery, channel| {
            let requests = self.clone();
            let session = session.clone();
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = requests.abandon.cancelled() => debug!("answer abandoned; RabbitMQ will redeliver the request"),
                    _ = requests.handle(&session, delivery) => {}
                }
                drop(channel);
            });
            std::future::ready(())
        };
        broker::consumer::serve_queue(&session, &queue, "responder", self.prefetch, stop, serve)
            .await
    }
}

impl Requests {
    /// Answers one request.
    async fn handle(&self, session: &Session, delivery: Delivery) {
        let request = match amqp::decode::<ChatRequest>(&delivery.data) {
            Ok(request) => request,
            Err(e) => return self.reject_unreadable(delivery, &e).await,
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
            let answer = Answer {
                session,
                names: self.broker.names(),
                engine: &self.engine,
                request: &request,
                trace: &trace,
                gathering: self.gathering,
            };
            let mut notice = Notice::Due(started + self.processing_after);
            let answering = self.cancellations.begin(&request.user_id, request.id);
            let mut tries = 1;
            let outcome = loop {
                let attempt = protocol::answer::attempt_begun_now();
                match answer.stream(attempt, &answering.token, &mut notice).await {
                    Ok(finished) => break Ok(finished),
                    Err(e @ AnswerError::Publish(_))
                        if tries < ANSWER_ATTEMPTS && session.is_live() =>
                    {
                        let delay = Duration::from_millis(200 << (tries - 1));
                        if tries == 1 {
                            warn!(error = %e, attempt, retry_in = ?delay, "answer failed; retrying");
                        } else {
                            debug!(error = %e, attempt, retry_in = ?delay, "answer failed again; retrying");
                        }
                        tokio::time::sleep(delay).await;
                        tries += 1;
                    }
                    Err(e) => break Err(e),
                }
            };
            match outcome {
                Ok(finished) => match delivery.ack(BasicAckOptions::default()).await {
                    Ok(true) => {
                        let outcome = finished.outcome();
                        metrics::counter!("switchboard_responder_requests_total", "outcome" => outcome).increment(1);
                        metrics::histogram!("switchboard_responder_answer_seconds").record(started.elapsed().as_secs_f64());
                        self.tally.add(|c| {
                            c.answered += 1;
                            c.cancelled += u64::from(finished == Finished::Cancelled);
                            c.model_failures += u64::from(finished == Finished::ModelFailed);
                        });
                        debug!(outcome, "answered");
                    }
                    // The channel is gone; the request comes back and is answered
                    // again, as a later attempt.
                    Ok(false) => warn!("could not ack the answered request: its channel is closed"),
                    Err(e) => warn!(error = %e, "could not ack the answered request"),
                },
                Err(e) => self.hand_back(&delivery, &e).await,
            }
        }
        .instrument(span)
        .await
    }

    /// Back to the queue. A reject counts towards the request's delivery
    /// limit on every broker version (a nack may not), so a request that
    /// always fails ends up dead-lettered and its user is told, instead of
    /// looping forever.
    async fn hand_back(&self, delivery: &Delivery, error: &AnswerError) {
        warn!(
            error = %error,
            deliveries = properties::delivery_count(&delivery.properties) + 1,
            "answer failed; handing the request back"
        );
        self.reject(delivery, true).await;
    }

    /// A request that cannot be read is dead-lettered at once.
    async fn reject_unreadable(&self, delivery: Delivery, error: &impl std::fmt::Display) {
        error!(
            error = %error,
            message_id = ?delivery.properties.message_id(),
            user_id = ?properties::user_header(&delivery.properties),
            "unreadable request; dead-lettering it"
        );
        self.reject(&delivery, false).await;
    }

    /// Rejects `delivery`: back to `chat_queue` (`requeue`: the answer
    /// failed) or dead-lettered (it is unreadable), and counts it.
    async fn reject(&self, delivery: &Delivery, requeue: bool) {
        let outcome = if requeue { "failed" } else { "rejected" };
        match delivery.reject(BasicRejectOptions { requeue }).await {
            Ok(true) => {
                metrics::counter!("switchboard_responder_requests_total", "outcome" => outcome)
                    .increment(1);
                self.tally.add(|c| match requeue {
                    true => c.failed += 1,
                    false => c.rejected += 1,
                });
            }
            Ok(false) => warn!(
                outcome,
                "could not reject the request: its channel is closed"
            ),
            Err(e) => warn!(outcome, error = %e, "could not reject the request"),
        }
    }
}
