//! What the handle, its readers and the feed share: the table, this
//! gateway's name in the notes, and the marks it reads back.

use super::table::{Keep, Table};
use broker::lapin::options::ConfirmSelectOptions;
use broker::{Broker, Publisher, properties};
use protocol::ErrorCode;
use protocol::amqp::{self, Completion, CompletionNote, Note, ReplyChunk};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// What the answers are kept and read with.
#[derive(Debug, Clone, Copy)]
pub struct CompletionSettings {
    pub keep: Keep,
    /// How far back a gateway that starts reads the stream: answers begun
    /// before are not resumable on it.
    pub catch_up: Duration,
    /// Readers (streams, whole completions, resumes) of one user open on
    /// this gateway at once.
    pub max_readers_per_user: usize,
}

/// One completion to tell the other gateways about.
#[derive(Debug)]
pub(super) enum Noted {
    Opened(Completion),
    Delivered(Completion),
}

#[derive(Debug)]
pub(super) struct Shared {
    pub(super) broker: Broker,
    pub(super) settings: CompletionSettings,
    /// This gateway process, in the notes.
    pub(super) gateway: String,
    pub(super) table: Mutex<Table>,
    /// Readers here are numbered.
    pub(super) readers: AtomicU64,
    /// The last mark written, and the last of ours read back.
    pub(super) marks_written: AtomicU64,
    pub(super) marks_read: watch::Sender<u64>,
    /// The notes' own publisher, and the session it belongs to.
    pub(super) notes_channel: tokio::sync::Mutex<Option<(u64, Publisher)>>,
    /// To the gatherer of `opened` and `delivered` notes.
    pub(super) notes: mpsc::Sender<Noted>,
    /// One mark in flight at a time, whatever the number of waiting resumes.
    pub(super) syncing: tokio::sync::Mutex<()>,
}

impl Shared {
    pub(super) fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `note` to the stream: confirmed, or (`confirmed: false`) as
    /// a best effort.
    pub(super) async fn write(&self, note: Note, confirmed: bool) -> Result<(), ErrorCode> {
        let publisher = self.notes_publisher().await?;
        let note = CompletionNote::new(note);
        let stream = self.broker.names().completions_stream();
        let (body, props) = (amqp::encode(&note), properties::completion_note());
        if confirmed {
            publisher.publish("", &stream, &body, props).await
        } else {
            publisher
                .publish_best_effort("", &stream, &body, props)
                .await
        }
        .map_err(|e| e.code())
    }

    /// The notes' own channel on the live session (opened once per
    /// session): a stream that is slow to take them — its leader moving
    /// after a node was lost — never holds up the requests' confirms on
    /// the session's publisher.
    async fn notes_publisher(&self) -> Result<Publisher, ErrorCode> {
        let session = self.broker.current().ok_or(ErrorCode::BrokerUnavailable)?;
        let mut cached = self.notes_channel.lock().await;
        if let Some((generation, publisher)) = cached.as_ref()
            && *generation == session.generation()
        {
            return Ok(publisher.clone());
        }
        let channel = session
            .open_channel()
            .await
            .map_err(|_| ErrorCode::BrokerUnavailable)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|_| ErrorCode::BrokerUnavailable)?;
        let publisher = Publisher::new(channel, self.broker.settings().publish_timeout());
        *cached = Some((session.generation(), publisher.clone()));
        Ok(publisher)
    }

    /// Hands `noted` to the gatherer ([`super::notes`]); dropped (and
    /// counted) when it is that far behind.
    pub(super) fn note(&self, noted: Noted) {
        if self.notes.try_send(noted).is_err() {
            metrics::counter!("switchboard_gateway_completion_notes_dropped_total").increment(1);
        }
    }

    /// Returns once everything written to the stream before the call has
    /// been read here: writes a mark and waits to read it back. Resumes
    /// waiting at once share one mark.
    pub(super) async fn sync(&self) -> Result<(), ErrorCode> {
        let arrived = self.marks_written.load(Ordering::Acquire);
        let _one_at_a_time = self.syncing.lock().await;
        let mut read = self.marks_read.subscribe();
        if *read.borrow() > arrived {
            return Ok(());
        }
        let mark = self.marks_written.fetch_add(1, Ordering::AcqRel) + 1;
        let note = Note::Mark {
            gateway: self.gateway.clone(),
            mark,
        };
        self.write(note, true).await?;
        let limit = self.broker.settings().publish_timeout();
        tokio::time::timeout(limit, read.wait_for(|read| *read >= mark))
            .await
            .map(|_| ())
            .map_err(|_| ErrorCode::BrokerUnavailable)
    }

    /// What the feed read: a chunk, or a note.
    pub(super) fn apply_chunk(&self, chunk: ReplyChunk, bytes: usize) {
        self.table().add(chunk, bytes, Instant::now());
    }

    pub(super) fn apply_note(&self, note: Note) {
        let now = Instant::now();
        match note {
            Note::Opened { completions } => {
                let mut table = self.table();
                for Completion { id, user_id } in completions {
                    table.open(id, &user_id, now);
                }
            }
            Note::Reading {
                id,
                user_id,
                gateway,
                ..
            } if gateway != self.gateway => self.table().read_elsewhere(id, &user_id, now),
            Note::Reading { .. } => {}
            Note::Delivered { completions } => {
                let mut table = self.table();
                for Completion { id, user_id } in completions {
                    table.delivered(&id, &user_id);
                }
            }
            Note::Mark { gateway, mark } if gateway == self.gateway => {
                self.marks_read.send_if_modified(|read| {
                    let newer = mark > *read;
                    *read = (*read).max(mark);
                    newer
                });
            }
            Note::Mark { .. } => {}
        }
    }
}
