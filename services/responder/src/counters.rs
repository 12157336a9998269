//! What the responder has done, for tests and operators.

use std::sync::Arc;
use tokio::sync::watch;

/// Counts of what this responder did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests answered in full and acked.
    pub answered: u64,
    /// Requests that could not be read and were dead-lettered.
    pub rejected: u64,
    /// Answers that failed and were handed back to the queue (each counts
    /// towards the request's delivery limit).
    pub failed: u64,
    /// Dead-lettered requests settled: their user told, or not to be (no
    /// queue left, a full one, or every try failed).
    pub dead_letters_notified: u64,
    /// Answers stopped by a `cancel` (included in `answered`: the request
    /// got its final chunk and was acked).
    pub cancelled: u64,
    /// Answers the model failed (included in `answered`: the user got a
    /// final chunk with `model_failed`, and the request was acked).
    pub model_failures: u64,
}

/// The counters, shared: every part adds, anyone may watch. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Tally(Arc<watch::Sender<Counters>>);

impl Tally {
    pub fn add(&self, count: impl FnOnce(&mut Counters)) {
        self.0.send_modify(count);
    }

    /// A live view.
    pub fn watch(&self) -> watch::Receiver<Counters> {
        self.0.subscribe()
    }
}
