//! The `opened` and `delivered` notes, gathered: every completion has both,
//! so each is a broker write per request unless many go in one. Gathered
//! for a few milliseconds (or until a batch is full) and written as one
//! note each, best effort — a note lost is a resume elsewhere that finds
//! nothing before the first chunk, or an answer kept elsewhere until its
//! window ends.

use super::shared::{Noted, Shared};
use protocol::amqp::Note;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long notes gather before they are written.
const GATHER: Duration = Duration::from_millis(5);
/// A note is written at most this long after it was gathered (its
/// gathering, then its write), but in a storm.
pub(super) const LATEST: Duration = Duration::from_millis(25);
/// Completions in one note at most.
const MAX_BATCH: usize = 512;
/// Notes waiting to be gathered; beyond, one is dropped (and counted).
pub(super) const QUEUE: usize = 16_384;

/// Gathers and writes notes until `stop` fires or every sender is gone.
pub(super) async fn gather(
    shared: Arc<Shared>,
    mut noted: mpsc::Receiver<Noted>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            () = stop.cancelled() => return,
            first = noted.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        let (mut opened, mut delivered) = (Vec::new(), Vec::new());
        let mut take = |note| match note {
            Noted::Opened(c) => opened.push(c),
            Noted::Delivered(c) => delivered.push(c),
        };
        take(first);
        let until = tokio::time::Instant::now() + GATHER;
        for _ in 1..MAX_BATCH {
            match tokio::time::timeout_at(until, noted.recv()).await {
                Ok(Some(note)) => take(note),
                _ => break,
            }
        }
        let notes = [
            (!opened.is_empty()).then_some(Note::Opened {
                completions: opened,
            }),
            (!delivered.is_empty()).then_some(Note::Delivered {
                completions: delivered,
            }),
        ];
        for note in notes.into_iter().flatten() {
            let _ = shared.write(note, false).await;
        }
    }
}
