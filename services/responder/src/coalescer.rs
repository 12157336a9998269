//! Gathering an engine's pieces into reply chunks, so the broker's cost per
//! answer does not grow with the model's speed (a model writes one piece
//! per token). The rule (docs/protocol.md §3):
//! - the first chunk goes out as soon as the first piece is in, with
//!   whatever pieces are already waiting behind it (no added time to the
//!   first token);
//! - after a chunk went out, the next one goes out `flush` later with every
//!   piece that came in meanwhile — or at once, when the pieces reach
//!   `max_bytes`, when the last piece is in, or when the wait is already
//!   over (a slow model's pieces go out as they come);
//! - with `flush` 0 every piece is a chunk of its own.

use protocol::output::ModelOutput;
use std::time::Duration;
use tokio::time::Instant;

/// How pieces are gathered (`[stream]` settings).
#[derive(Debug, Clone, Copy)]
pub struct Gathering {
    pub flush: Duration,
    pub max_bytes: usize,
}

impl Gathering {
    /// Whether pieces are gathered at all.
    pub fn is_on(self) -> bool {
        !self.flush.is_zero()
    }
}

/// The text gathered for the next chunk of one answer.
#[derive(Debug)]
pub struct Coalescer {
    gathering: Gathering,
    text: String,
    /// What came with the text, merged in order.
    output: ModelOutput,
    /// Pieces in `text`.
    pieces: u32,
    /// When the last chunk went out; `None` before the first.
    last_sent: Option<Instant>,
}

impl Coalescer {
    pub fn new(gathering: Gathering) -> Self {
        Self {
            gathering,
            text: String::new(),
            output: ModelOutput::default(),
            pieces: 0,
            last_sent: None,
        }
    }

    /// Adds a piece's text.
    pub fn push(&mut self, piece: &str) {
        self.text.push_str(piece);
        self.pieces += 1;
    }

    /// Adds a piece's other output (tool-call pieces join their call).
    pub fn push_output(&mut self, output: ModelOutput) {
        self.output.merge(output);
    }

    /// Takes what came besides the text, for the chunk going out.
    pub fn take_output(&mut self) -> ModelOutput {
        std::mem::take(&mut self.output)
    }

    /// Whether more pieces that are already waiting may join the chunk due
    /// now (gathering is on and there is room).
    pub fn has_room(&self) -> bool {
        self.gathering.is_on() && self.text.len() < self.gathering.max_bytes
    }

    /// When what is gathered must go out: `None` with nothing gathered.
    /// A time in the past means now.
    pub fn due(&self) -> Option<Instant> {
        if self.pieces == 0 {
            return None;
        }
        match self.last_sent {
            Some(at) if self.has_room() => Some(at + self.gathering.flush),
            _ => Some(Instant::now()),
        }
    }

    /// Takes the gathered text for a chunk going out at `now`, and how many
    /// pieces it holds.
    pub fn take(&mut self, now: Instant) -> (String, u32) {
        self.last_sent = Some(now);
        (
            std::mem::take(&mut self.text),
            std::mem::take(&mut self.pieces),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Coalescer {
        fn is_due(&self, now: Instant) -> bool {
            self.due().is_some_and(|at| at <= now)
        }
    }

    fn coalescer(flush_ms: u64, max_bytes: usize) -> Coalescer {
        Coalescer::new(Gathering {
            flush: Duration::from_millis(flush_ms),
            max_bytes,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_chunk_is_due_at_once_and_the_next_a_window_later() {
        let mut c = coalescer(40, 1024);
        assert_eq!(c.due(), None, "nothing gathered, nothing due");
        c.push("Hello");
        assert!(c.is_due(Instant::now()), "the first piece goes at once");
        let sent = Instant::now();
        assert_eq!(c.take(sent), ("Hello".into(), 1));
        tokio::time::advance(Duration::from_millis(10)).await;
        c.push(" big");
        tokio::time::advance(Duration::from_millis(10)).await;
        c.push(" world");
        assert_eq!(c.due(), Some(sent + Duration::from_millis(40)));
        assert!(!c.is_due(Instant::now()));
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(c.is_due(Instant::now()));
        assert_eq!(c.take(Instant::now()), (" big world".into(), 2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_models_pieces_go_out_as_they_come() {
        let mut c = coalescer(40, 1024);
        c.push("a");
        c.take(Instant::now());
        tokio::time::advance(Duration::from_millis(100)).await;
        c.push("b");
        assert!(c.is_due(Instant::now()), "the window is long over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_chunk_goes_at_once() {
        let mut c = coalescer(40, 8);
        c.push("a");
        c.take(Instant::now());
        c.push("1234");
        assert!(!c.is_due(Instant::now()));
        assert!(c.has_room());
        c.push("5678");
        assert!(!c.has_room());
        assert!(c.is_due(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_window_every_piece_is_due_and_nothing_joins() {
        let mut c = coalescer(0, 1024);
        c.push("a");
        assert!(!c.has_room());
        assert!(c.is_due(Instant::now()));
        c.take(Instant::now());
        c.push("b");
        assert!(c.is_due(Instant::now()));
    }
}
