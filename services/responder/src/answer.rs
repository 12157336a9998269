//! Writing one attempt at an answer: the pieces the engine writes are
//! gathered into reply chunks (`coalescer`), each published as it is due
//! (persistent, confirmed, `mandatory`) to the user's queue — or, for a
//! room, the room's key — with the confirms kept in flight and all waited
//! for at the end. Every chunk carries the attempt's number, so a client
//! shows one attempt whole. It also tells the user `processing` when the
//! first chunk is late.

use crate::coalescer::{Coalescer, Gathering};
use crate::engine::{Engine, EngineError, Piece};
use broker::{PendingConfirm, PublishError, Session, properties};
use futures_util::StreamExt;
use protocol::amqp::{self, ChatRequest, MessageStatus, ReplyChunk, ReplyError, StatusEvent};
use protocol::topology::{Destination, Names};
use protocol::trace::TraceParent;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Why an answer could not be given.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// Publishing failed; usually passing (broker busy, connection hiccup).
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The model can never answer this request.
    #[error(transparent)]
    Unanswerable(EngineError),
}

/// How an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Answered,
    /// Stopped by a `cancel`: its last chunk is a final one marked so.
    Cancelled,
    /// The model failed or was cut off: its last chunk is a final one with
    /// `model_failed`.
    ModelFailed,
}

impl Finished {
    /// For metrics and logs.
    pub fn outcome(self) -> &'static str {
        match self {
            Self::Answered => "answered",
            Self::Cancelled => "cancelled",
            Self::ModelFailed => "model_failed",
        }
    }
}

/// The `processing` status of one request: told once, and only when the
/// answer's first chunk has not gone out by the time it is due. An answer
/// that starts streaming sooner says as much by itself; an extra message
/// through the broker for each cost about a fifth of the pipeline's
/// throughput (docs/performance.md).
#[derive(Debug, Clone, Copy)]
pub enum Notice {
    /// Not told yet; tell at this instant unless the first chunk goes first.
    Due(Instant),
    /// Told, or no longer needed (a chunk went out).
    Settled,
}

/// One answer being written.
#[derive(Debug)]
pub struct Answer<'a> {
    pub session: &'a Session,
    pub names: &'a Names,
    pub engine: &'a Engine,
    pub request: &'a ChatRequest,
    pub trace: &'a TraceParent,
    /// How pieces are gathered into chunks.
    pub gathering: Gathering,
}

/// What the loop of [`Answer::stream`] waits for.
enum Event {
    Cancelled,
    /// What is gathered is due.
    Flush,
    Piece(Option<Result<Piece, EngineError>>),
}

impl Answer<'_> {
    /// Writes attempt `attempt` at the answer: gathers the engine's pieces
    /// into chunks ([`Coalescer`]) and publishes each as it is due, keeping
    /// their confirms in flight, then waits for all of them. When `cancel`
    /// fires, what is gathered goes out as a final chunk marked cancelled
    /// and the engine's stream is dropped (which stops it). When the model
    /// fails, the user gets a final chunk with `model_failed`; a request
    /// the model can never answer goes back to the queue
    /// ([`AnswerError::Unanswerable`]). A reply with no queue to go to (the
    /// user's queue expired) is dropped with a warning: there is nobody left
    /// to read it.
    pub async fn stream(
        &self,
        attempt: u64,
        cancel: &CancellationToken,
        notice: &mut Notice,
    ) -> Result<Finished, AnswerError> {
        let request = self.request;
        let mut out = Outgoing {
            answer: self,
            // The completions stream (an OpenAI-API client's), its room
            // (every member's queue), or its user's queue.
            to: self.names.answer_destination(request),
            attempt,
            seq: 0,
            pending: Vec::new(),
        };
        let mut pieces = self.engine.answer(request);
        let mut gathered = Coalescer::new(self.gathering);
        let finished = loop {
            let due = gathered.due();
            // Full (or not gathering): out before another piece joins.
            // Otherwise pieces already waiting join first, so the first
            // chunk takes them along without waiting for more.
            let full = due.is_some() && !gathered.has_room();
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => Event::Cancelled,
                // Before the next piece, so a notice due at once goes first.
                () = notice_due(*notice) => {
                    self.tell_processing().await;
                    *notice = Notice::Settled;
                    continue;
                }
                () = until(due), if full => Event::Flush,
                next = pieces.next() => Event::Piece(next),
                () = until(due), if !full => Event::Flush,
            };
            let finished = match event {
                Event::Flush => None,
                Event::Cancelled => Some(Finished::Cancelled),
                Event::Piece(Some(Ok(piece))) => {
                    gathered.push(&piece.text);
                    gathered.push_output(piece.output);
                    if !piece.last {
                        continue;
                    }
                    Some(Finished::Answered)
                }
                // The stream ended without a piece marked last.
                Event::Piece(None) => Some(Finished::Answered),
                Event::Piece(Some(Err(e @ EngineError::Unanswerable(_)))) => {
                    return Err(AnswerError::Unanswerable(e));
                }
                Event::Piece(Some(Err(failure))) => {
                    let (code, why) = (failure.code(), failure.to_string());
                    warn!(engine = self.engine.name(), reason = %why, %code, "the model failed; telling the user");
                    if gathered.due().is_some() {
                        let (text, pieces) = gathered.take(Instant::now());
                        let chunk = ReplyChunk::answering(request, out.seq, text, false)
                            .with_output(gathered.take_output());
                        out.send(chunk, pieces).await?;
                    }
                    let error = ReplyError { code, message: why };
                    let chunk = ReplyChunk {
                        request_sent_at_ms: Some(request.sent_at_ms),
                        ..ReplyChunk::failure(request.user_id.clone(), request.id, error)
                    };
                    out.send(chunk, 0).await?;
                    *notice = Notice::Settled;
                    break Finished::ModelFailed;
                }
            };
            let (text, pieces) = gathered.take(Instant::now());
            let chunk = match finished {
                None => ReplyChunk::answering(request, out.seq, text, false),
                Some(Finished::Cancelled) => ReplyChunk::cancelled(request, out.seq, text),
                Some(_) => ReplyChunk::answering(request, out.seq, text, true),
            }
            .with_output(gathered.take_output());
            out.send(chunk, pieces).await?;
            *notice = Notice::Settled;
            if let Some(finished) = finished {
                break finished;
            }
        };
        drop(pieces);
        self.settle(out.pending).await?;
        Ok(finished)
    }

    /// Waits for the confirms of every chunk published.
    async fn settle(&self, pending: Vec<PendingConfirm>) -> Result<(), AnswerError> {
        let request = self.request;
        let mut unroutable = None;
        for confirm in pending {
            match confirm.wait().await {
                Ok(()) => {}
                Err(e @ PublishError::Unroutable { .. }) => unroutable = Some(e),
                // A room's answer goes to every member's queue; one member's
                // full queue refuses it (nack) while the others have it. One
                // member must not hold up the room: that member misses it.
                Err(PublishError::Nacked) if request.room_id.is_some() => {
                    debug!("a room member's queue refused a chunk (full?); the others have it");
                }
                Err(e) => return Err(e.into()),
            }
        }
        match unroutable {
            None => {}
            // Nobody is in the room right now: the room's history has it.
            Some(_) if request.room_id.is_some() => {}
            Some(_) if self.reply_queue_gone().await => {
                warn!("the queue that reads this answer is gone (expired); answer dropped");
            }
            // The queue exists but could not take it (its node is down, say):
            // that can heal, so the answer is tried again.
            Some(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Whether the queue that reads the answer no longer exists — the
    /// user's expired after 30 minutes without a socket, a request's own
    /// after its client went for good — and nobody is left to read it —
    /// as opposed to existing but being out of reach for now. Asked with a
    /// passive declare; anything but "no queue" counts as not gone.
    async fn reply_queue_gone(&self) -> bool {
        let queue = self.names.answer_queue(self.request);
        let count = async |channel: &_| broker::topology::consumer_count(channel, &queue).await;
        match self
            .session
            .with_channel(self.session.setup_timeout(), count)
            .await
        {
            Err(e) => matches!(e.refusal(), Some((404, text)) if text.contains("no queue")),
            Ok(_) => false,
        }
    }

    /// Tells the user a responder is on their message (best effort: the
    /// status is advisory, the answer itself is what counts).
    async fn tell_processing(&self) {
        let request = self.request;
        let Some(to) = self.names.status_destination(request) else {
            return;
        };
        let event = StatusEvent::new(
            request.user_id.clone(),
            request.id,
            MessageStatus::Processing,
        );
        let published = self
            .session
            .publisher()
            .publish_best_effort(
                &to.exchange,
                &to.routing_key,
                &amqp::encode(&event),
                properties::status_event(&event, self.trace),
            )
            .await;
        if let Err(e) = published {
            debug!(error = %e, "could not tell the user their message is being processed");
        }
    }
}

/// The chunks of one attempt on their way: numbered, published, their
/// confirms kept.
struct Outgoing<'a> {
    answer: &'a Answer<'a>,
    to: Destination,
    attempt: u64,
    /// The seq of the next chunk.
    seq: u32,
    pending: Vec<PendingConfirm>,
}

impl Outgoing<'_> {
    /// Publishes `chunk` (made of `pieces` pieces) as part of this attempt.
    async fn send(&mut self, chunk: ReplyChunk, pieces: u32) -> Result<(), PublishError> {
        let chunk = chunk.in_attempt(self.attempt);
        let answer = self.answer;
        let confirm = answer
            .session
            .publisher()
            .start(
                &self.to.exchange,
                &self.to.routing_key,
                &amqp::encode(&chunk),
                properties::reply_chunk(&chunk, answer.trace),
            )
            .await?;
        self.pending.push(confirm);
        self.seq += 1;
        metrics::counter!("switchboard_responder_chunks_total").increment(1);
        metrics::counter!("switchboard_responder_pieces_total").increment(u64::from(pieces));
        Ok(())
    }
}

/// Fires at `at` (at once when it has passed); never without one.
async fn until(at: Option<Instant>) {
    match at {
        // A timer's first poll is pending even when its instant has passed.
        Some(at) if at <= Instant::now() => {}
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Fires when `notice` is due; never once it is settled.
async fn notice_due(notice: Notice) {
    match notice {
        Notice::Due(at) => until(Some(at)).await,
        Notice::Settled => std::future::pending().await,
    }
}
