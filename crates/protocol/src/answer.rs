//! Attempts at an answer, and what a client shows of one answer from its
//! `reply` chunks as they arrive — the rule of docs/protocol.md §3 in one
//! place for every Rust client in the repository (the web page has the
//! same rule in `web/src/lib/answer.ts`).
//!
//! An answer may be written more than once: a responder that crashed
//! mid-answer, a request redelivered or published twice. A model writes a
//! different text each time, and chunk boundaries depend on timing, so the
//! chunks of two attempts must never be mixed. Every chunk carries its
//! attempt's number ([`attempt_number`]: unique, and higher for an attempt
//! begun later). So:
//! - chunks are kept per attempt, placed by `seq`; a repeat is dropped;
//! - the page shows the highest attempt seen: a chunk of a higher attempt
//!   replaces what a lower one showed (the answer restarted); chunks of a
//!   lower attempt arriving late are not shown;
//! - the answer is complete as soon as one attempt's final chunk and every
//!   chunk before it are in — normally the attempt shown; should an
//!   earlier one complete first (two copies of a request answered side by
//!   side, say), that one is the answer — and after that every chunk is
//!   dropped;
//! - a chunk with an `error` ends the answer as failed, unless it was
//!   complete already.
//!
//! So what is shown at the end is always one attempt, whole, and an
//! answer some attempt completed is never lost. Every chunk is
//! acknowledged as it arrives, whatever becomes of it.

use crate::amqp::ReplyError;
use crate::output::ModelOutput;
use crate::ws::ReplyFrame;
use std::collections::{BTreeMap, btree_map::Entry};

/// Random bits in an attempt number, below the time.
const RANDOM_BITS: u32 = 11;

/// The number of an attempt begun at `unix_ms` (milliseconds since the
/// Unix epoch): the time, then `random` (its low 11 bits) so two attempts
/// begun in the same millisecond differ. Below 2^53 until the year 2109,
/// so a JavaScript number holds it exactly.
pub fn attempt_number(unix_ms: u64, random: u64) -> u64 {
    (unix_ms << RANDOM_BITS) | (random & ((1 << RANDOM_BITS) - 1))
}

/// The number of an attempt begun now ([`attempt_number`] of the clock and
/// a random number).
pub fn attempt_begun_now() -> u64 {
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    attempt_number(unix_ms, uuid::Uuid::new_v4().as_u64_pair().0)
}

/// One attempt's chunks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Attempt {
    chunks: BTreeMap<u32, (String, Option<Box<ModelOutput>>)>,
    /// The seq of its final chunk, once in.
    final_seq: Option<u32>,
    cancelled: bool,
}

impl Attempt {
    fn is_complete(&self) -> bool {
        self.final_seq
            .is_some_and(|f| self.chunks.len() as u64 == u64::from(f) + 1)
    }
}

/// One answer as shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShownAnswer {
    attempts: BTreeMap<u64, Attempt>,
    /// The attempt shown.
    shown: u64,
    /// Set once an attempt is complete: the answer is that attempt.
    done: bool,
    error: Option<ReplyError>,
    /// How often what was shown was replaced by another attempt.
    restarts: u32,
}

/// What became of one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Shown, in the attempt on screen (or the first one seen).
    Shown,
    /// Shown, replacing what another attempt had shown.
    Restarted,
    /// Already in: a redelivery.
    Repeat,
    /// Of a lower attempt than the one shown: kept, not shown.
    Stale,
    /// The answer was complete already (or had failed): dropped.
    AfterEnd,
    /// The chunk says the answer failed.
    Failed,
}

impl ShownAnswer {
    /// Takes in one chunk by the rule above.
    pub fn add(&mut self, chunk: &ReplyFrame) -> Arrival {
        if self.is_complete() {
            return Arrival::AfterEnd;
        }
        if let Some(error) = &chunk.error {
            self.error = Some(error.clone());
            return Arrival::Failed;
        }
        let attempt = self.attempts.entry(chunk.attempt).or_default();
        match attempt.chunks.entry(chunk.seq) {
            Entry::Occupied(_) => return Arrival::Repeat,
            Entry::Vacant(slot) => slot.insert((chunk.text.clone(), chunk.output.clone())),
        };
        if chunk.r#final {
            attempt.final_seq = Some(chunk.seq);
            attempt.cancelled = chunk.cancelled;
        }
        let completes = attempt.is_complete();
        let first = self.attempts.len() == 1;
        if chunk.attempt == self.shown || first {
            self.shown = chunk.attempt;
            self.done = completes;
            return Arrival::Shown;
        }
        if chunk.attempt > self.shown || completes {
            // Something else was on screen: it is replaced.
            let replaced = self
                .attempts
                .get(&self.shown)
                .is_some_and(|a| !a.chunks.is_empty());
            self.shown = chunk.attempt;
            self.done = completes;
            self.restarts += u32::from(replaced);
            return if replaced {
                Arrival::Restarted
            } else {
                Arrival::Shown
            };
        }
        Arrival::Stale
    }

    fn on_screen(&self) -> Option<&Attempt> {
        self.attempts.get(&self.shown)
    }

    /// The text that can be shown: the shown attempt's chunks from seq 0
    /// without a gap.
    pub fn text(&self) -> String {
        self.text_through(u32::MAX)
    }

    /// The highest seq of the shown attempt with every chunk before it in
    /// (what [`ShownAnswer::text`] ends with); `None` before chunk 0.
    pub fn through(&self) -> Option<u32> {
        let attempt = self.on_screen()?;
        let mut through = None;
        for (expected, seq) in (0u32..).zip(attempt.chunks.keys()) {
            if expected != *seq {
                break;
            }
            through = Some(expected);
        }
        through
    }

    /// The shown attempt's text of chunks 0..=`seq` (as far as they are in
    /// without a gap): what a client that has them was shown.
    pub fn text_through(&self, seq: u32) -> String {
        let Some(attempt) = self.on_screen() else {
            return String::new();
        };
        let mut text = String::new();
        for (expected, (s, (chunk, _))) in (0u32..=seq).zip(&attempt.chunks) {
            if expected != *s {
                break;
            }
            text.push_str(chunk);
        }
        text
    }

    /// The shown attempt's text and other output of the chunks after
    /// `after` (from the first when `None`) through `through`, merged in
    /// order — what a client that has everything up to `after` is owed.
    pub fn between(&self, after: Option<u32>, through: u32) -> (String, ModelOutput) {
        let (mut text, mut output) = (String::new(), ModelOutput::default());
        let Some(attempt) = self.on_screen() else {
            return (text, output);
        };
        let from = after.map_or(0, |a| a.saturating_add(1));
        for (_, (chunk, more)) in attempt.chunks.range(from..=through) {
            text.push_str(chunk);
            if let Some(more) = more {
                output.merge((**more).clone());
            }
        }
        (text, output)
    }

    /// Everything but the text of the shown attempt, merged.
    pub fn output(&self) -> ModelOutput {
        self.through()
            .map(|through| self.between(None, through).1)
            .unwrap_or_default()
    }

    /// Whether the answer is whole: failed, or one attempt's final chunk
    /// and every one before it are in.
    pub fn is_complete(&self) -> bool {
        self.done || self.error.is_some()
    }

    /// Whether it ended with an error, and which.
    pub fn error(&self) -> Option<&ReplyError> {
        self.error.as_ref()
    }

    /// Whether the attempt shown was stopped by a `cancel`.
    pub fn is_cancelled(&self) -> bool {
        self.on_screen().is_some_and(|a| a.cancelled)
    }

    /// The attempt shown.
    pub fn attempt(&self) -> u64 {
        self.shown
    }

    /// How often what was shown was replaced by another attempt.
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// Chunks of the attempt shown.
    pub fn chunks(&self) -> usize {
        self.on_screen().map_or(0, |a| a.chunks.len())
    }

    /// Seqs of the attempt shown missing before its final chunk, once that
    /// is in.
    pub fn missing(&self) -> usize {
        self.on_screen().map_or(0, |a| {
            a.final_seq
                .map_or(0, |f| (0..=f).filter(|s| !a.chunks.contains_key(s)).count())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ErrorCode, MessageId, ReplyId, UserId};

    fn chunk(attempt: u64, seq: u32, text: &str, last: bool) -> ReplyFrame {
        let user = UserId::parse("alice").unwrap();
        let id = MessageId::parse("6f1c2a4e-9a55-4a8b-9d7e-3f0c1b2a3d4e").unwrap();
        ReplyFrame {
            id: ReplyId::for_request(&user, id),
            in_reply_to: id,
            seq,
            attempt,
            text: text.into(),
            r#final: last,
            error: None,
            cancelled: false,
            room_id: None,
            output: None,
        }
    }

    fn shown(chunks: &[ReplyFrame]) -> (ShownAnswer, Vec<Arrival>) {
        let mut answer = ShownAnswer::default();
        let arrivals = chunks.iter().map(|c| answer.add(c)).collect();
        (answer, arrivals)
    }

    #[test]
    fn attempt_numbers_follow_the_time_and_stay_exact_in_javascript() {
        let now = 1_796_000_000_000; // December 2026
        assert!(attempt_number(now, 0) < attempt_number(now, 1));
        assert!(attempt_number(now, u64::MAX) < attempt_number(now + 1, 0));
        let year_2100 = 4_102_444_800_000;
        assert!(attempt_number(year_2100, u64::MAX) < 1 << 53);
    }

    #[test]
    fn chunks_are_placed_by_seq_and_repeats_dropped() {
        let (answer, arrivals) = shown(&[
            chunk(5, 1, "b", false),
            chunk(5, 0, "a", false),
            chunk(5, 0, "a", false),
            chunk(5, 2, "c", true),
        ]);
        use Arrival::*;
        assert_eq!(arrivals, [Shown, Shown, Repeat, Shown]);
        assert_eq!(answer.text(), "abc");
        assert!(answer.is_complete());
    }

    #[test]
    fn a_gap_holds_the_text_and_completion_back() {
        let (answer, _) = shown(&[chunk(0, 0, "a", false), chunk(0, 2, "c", true)]);
        assert_eq!(answer.text(), "a");
        assert!(!answer.is_complete());
        assert_eq!(answer.missing(), 1);
    }

    #[test]
    fn a_newer_attempt_replaces_the_older_and_its_late_chunks_are_not_shown() {
        let (answer, arrivals) = shown(&[
            chunk(10, 0, "The cat ", false),
            chunk(10, 1, "sat ", false),
            chunk(20, 0, "A dog ", false),
            chunk(10, 3, "mat.", true),
            chunk(20, 1, "ran.", true),
        ]);
        use Arrival::*;
        assert_eq!(arrivals, [Shown, Shown, Restarted, Stale, Shown]);
        assert_eq!(answer.text(), "A dog ran.");
        assert!(answer.is_complete());
        assert_eq!((answer.attempt(), answer.restarts()), (20, 1));
    }

    #[test]
    fn an_older_attempt_that_completes_first_is_the_answer() {
        // Two copies of a request answered side by side: the one begun
        // first finishes first.
        let (answer, arrivals) = shown(&[
            chunk(10, 0, "One ", false),
            chunk(20, 0, "Two ", false),
            chunk(10, 1, "done.", true),
            chunk(20, 1, "also done.", true),
        ]);
        use Arrival::*;
        assert_eq!(arrivals, [Shown, Restarted, Restarted, AfterEnd]);
        assert_eq!(answer.text(), "One done.");
        assert!(answer.is_complete());
    }

    #[test]
    fn a_first_seen_later_attempt_is_no_restart() {
        let (answer, arrivals) = shown(&[chunk(7, 0, "x", true)]);
        assert_eq!(arrivals, [Arrival::Shown]);
        assert_eq!(answer.restarts(), 0);
    }

    #[test]
    fn nothing_changes_a_complete_answer() {
        let (answer, arrivals) = shown(&[chunk(1, 0, "done", true), chunk(9, 0, "again", true)]);
        assert_eq!(arrivals[1], Arrival::AfterEnd);
        assert_eq!(answer.text(), "done");
    }

    #[test]
    fn an_error_ends_the_answer_whatever_its_attempt() {
        let mut failure = chunk(0, u32::MAX, "", true);
        failure.error = Some(ReplyError {
            code: ErrorCode::RequestFailed,
            message: "gave up".into(),
        });
        let (answer, arrivals) = shown(&[chunk(3, 0, "part", false), failure]);
        assert_eq!(arrivals[1], Arrival::Failed);
        assert!(answer.is_complete());
        assert_eq!(answer.text(), "part");
        assert_eq!(answer.error().unwrap().code, ErrorCode::RequestFailed);
    }

    #[test]
    fn a_cancelled_final_chunk_counts_for_its_attempt_only() {
        let mut stop = chunk(1, 1, "", true);
        stop.cancelled = true;
        let (answer, _) = shown(&[chunk(1, 0, "a", false), stop.clone()]);
        assert!(answer.is_cancelled() && answer.is_complete());
        stop.seq = 2;
        let (answer, _) = shown(&[chunk(1, 0, "a", false), stop, chunk(2, 0, "b", false)]);
        assert!(!answer.is_cancelled() && !answer.is_complete());
    }
}
