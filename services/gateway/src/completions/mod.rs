//! The OpenAI API's answers (docs/protocol.md §9): responders write their
//! chunks into one RabbitMQ stream, `chat_completions`, and every gateway
//! reads the whole stream with one consumer ([`feed`]) into a [`Table`] in
//! memory, from which the HTTP streams, whole completions and resumes read
//! — on whichever gateway the client comes back to. Nothing is declared,
//! bound or consumed per request: the broker holds one stream, whatever
//! the traffic.
//!
//! The gateways tell each other what the stream alone cannot say, in
//! notes written to it beside the chunks ([`Note`]): that an answer was
//! asked (so a resume elsewhere finds it before its first chunk), who
//! reads it now (one reader at a time; an answer being read is not
//! cancelled as abandoned), that it reached its client whole (every
//! gateway forgets it), and marks a gateway writes to know it has read
//! everything written before.
//!
//! It must not know HTTP (that is `http::openai`) nor how a request is
//! sent (that is [`crate::messages`]).

mod feed;
mod notes;
mod shared;
mod table;

use broker::Broker;
use protocol::amqp::{Completion, Note, ReplyChunk};
use protocol::{ErrorCode, MessageId, UserId};
use shared::{Noted, Shared};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use table::{ReadBy, Refused};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

pub use shared::CompletionSettings;
pub use table::Keep;

/// How often answers past their keeping are swept away.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The answers this gateway knows of. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Completions {
    shared: Arc<Shared>,
    /// The gatherer's end, until [`Completions::spawn`] starts it.
    notes: Arc<Mutex<Option<mpsc::Receiver<Noted>>>>,
}

/// How a reader's reading ended before the answer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// A newer reader (a resume, here or on another gateway) reads it now.
    TakenOver,
    /// It is no longer kept.
    Expired,
}

impl Ended {
    pub fn code(self) -> ErrorCode {
        match self {
            Self::TakenOver => ErrorCode::StreamTakenOver,
            Self::Expired => ErrorCode::AnswerExpired,
        }
    }
}

impl Completions {
    pub fn new(broker: Broker, gateway: String, settings: CompletionSettings) -> Self {
        let (notes, gathered) = mpsc::channel(notes::QUEUE);
        Self {
            notes: Arc::new(Mutex::new(Some(gathered))),
            shared: Arc::new(Shared {
                notes,
                notes_channel: tokio::sync::Mutex::new(None),
                broker,
                settings,
                gateway,
                table: Mutex::default(),
                readers: AtomicU64::new(0),
                marks_written: AtomicU64::new(0),
                marks_read: watch::channel(0).0,
                syncing: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Starts reading the stream, and the sweep, until `stop` fires.
    pub fn spawn(&self, stop: &CancellationToken) {
        tokio::spawn(feed::run(self.shared.clone(), stop.clone()));
        let gathered = self.notes.lock().ok().and_then(|mut n| n.take());
        if let Some(gathered) = gathered {
            tokio::spawn(notes::gather(self.shared.clone(), gathered, stop.clone()));
        }
        let (shared, stop) = (self.shared.clone(), stop.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(SWEEP_EVERY);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = every.tick() => {}
                }
                let mut table = shared.table();
                let gone = table.sweep(shared.settings.keep, Instant::now());
                if gone > 0 {
                    debug!(
                        gone,
                        kept = table.len(),
                        "answers past their keeping forgotten"
                    );
                    metrics::counter!("switchboard_gateway_completions_expired_total")
                        .increment(gone as u64);
                }
                metrics::gauge!("switchboard_gateway_completions_kept").set(table.len() as f64);
                metrics::gauge!("switchboard_gateway_completions_bytes").set(table.bytes() as f64);
            }
        });
    }

    /// Completion `id` of `user` is being asked here: it exists from now on,
    /// read by the reader returned. Its request is sent next, and the
    /// other gateways told ([`Reader::announce`]).
    pub fn begin(&self, user: &UserId, id: MessageId) -> Result<Reader, ErrorCode> {
        self.shared.table().open(id, user, Instant::now());
        self.attach(user, id, false).map_err(|refused| {
            self.shared.table().delivered(&id, user);
            refused.code()
        })
    }

    /// Begins reading completion `id` for `user`; whoever read it before
    /// stops. A completion this gateway does not know yet is looked for
    /// until the gateway has read everything written to the stream before
    /// now, and again once a note gathered elsewhere just before would be
    /// written: `not_found` then, as for another user's.
    pub async fn read(&self, user: &UserId, id: MessageId) -> Result<Reader, ErrorCode> {
        // Read up to now, and once more after the notes asked elsewhere
        // just before could have been gathered and written.
        for wait in [None, Some(notes::LATEST)] {
            match self.attach(user, id, true) {
                Err(Refused::Unknown) => {
                    if let Some(wait) = wait {
                        tokio::time::sleep(wait).await;
                    }
                    self.shared.sync().await?;
                }
                attached => return attached.map_err(Refused::code),
            }
        }
        self.attach(user, id, true).map_err(Refused::code)
    }

    /// A reader of `id` for `user`; `announce`: the other gateways are
    /// told, so that their readers of it stop.
    fn attach(&self, user: &UserId, id: MessageId, announce: bool) -> Result<Reader, Refused> {
        let shared = &self.shared;
        let number = shared.readers.fetch_add(1, Ordering::Relaxed) + 1;
        let max = shared.settings.max_readers_per_user;
        let changed = shared
            .table()
            .attach(&id, user, number, max, Instant::now())?;
        if announce {
            let note = Note::Reading {
                id,
                user_id: user.clone(),
                gateway: shared.gateway.clone(),
                reader: number,
            };
            let writer = shared.clone();
            tokio::spawn(async move { writer.write(note, false).await });
        }
        Ok(Reader {
            shared: shared.clone(),
            id,
            user: user.clone(),
            number,
            next: 0,
            changed,
        })
    }

    /// How many answers are kept now.
    pub fn kept(&self) -> usize {
        self.shared.table().len()
    }

    /// Whether completion `id` is still being answered with nobody having
    /// read it since `since` — on this gateway or, as its notes say, any
    /// other.
    pub fn unattended_since(&self, id: &MessageId, since: Instant) -> bool {
        self.shared.table().unattended_since(id, since)
    }
}

/// One reader of one completion, on this gateway.
#[derive(Debug)]
pub struct Reader {
    shared: Arc<Shared>,
    id: MessageId,
    user: UserId,
    number: u64,
    /// The next chunk to hand out.
    next: usize,
    changed: watch::Receiver<()>,
}

impl Reader {
    /// The next chunk of the answer, in stream order — from its first, so
    /// a resume sees everything and picks what comes after what its client
    /// had — or why there is none.
    pub async fn next(&mut self) -> Result<Arc<ReplyChunk>, Ended> {
        loop {
            {
                let table = self.shared.table();
                let Some(answer) = table.get(&self.id) else {
                    return Err(Ended::Expired);
                };
                if answer.reader != Some(ReadBy::Here(self.number)) {
                    return Err(Ended::TakenOver);
                }
                if let Some(chunk) = answer.chunks.get(self.next) {
                    self.next += 1;
                    return Ok(chunk.clone());
                }
                self.changed.mark_unchanged();
            }
            // Err: the answer was removed (its sender dropped).
            if self.changed.changed().await.is_err() {
                return Err(Ended::Expired);
            }
        }
    }

    /// Tells the other gateways that this completion exists, so a resume
    /// there finds it before its first chunk (gathered with others into
    /// one note, a few milliseconds later; advisory: its chunks say whose
    /// it is too).
    pub fn announce(&self) {
        self.shared.note(Noted::Opened(self.completion()));
    }

    fn completion(&self) -> Completion {
        Completion {
            id: self.id,
            user_id: self.user.clone(),
        }
    }

    /// Its request was never sent: forgotten, here and (it was announced)
    /// elsewhere.
    pub fn forget(self) {
        self.delivered();
    }

    /// Its client has the whole answer: every gateway forgets it (a resume
    /// gets `not_found`).
    pub fn delivered(self) {
        self.shared.table().delivered(&self.id, &self.user);
        self.shared.note(Noted::Delivered(self.completion()));
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        let now = Instant::now();
        self.shared
            .table()
            .detach(&self.id, &self.user, self.number, now);
    }
}
