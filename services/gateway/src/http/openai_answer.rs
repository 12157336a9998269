//! One answer on its way to an OpenAI-API client, as events: the text in
//! the order of its chunks, once, from one attempt only. A Server-Sent
//! Events stream cannot take text back, so when a newer attempt replaces
//! one the client has already seen text of (a responder crashed and the
//! answer began again), the stream ends with `answer_restarted` instead of
//! splicing two attempts (docs/protocol.md §9). A resumed stream starts
//! after the event the client names.

use protocol::amqp::{ReplyChunk, ReplyError};
use protocol::answer::{Arrival, ShownAnswer};
use protocol::output::{ModelOutput, Usage};
use std::fmt;
use std::str::FromStr;

/// An event's id: the attempt and the last chunk (seq) its text includes.
/// A client resumes with it (`Last-Event-ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventId {
    pub attempt: u64,
    pub seq: u32,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.attempt, self.seq)
    }
}

impl FromStr for EventId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        let (attempt, seq) = s.trim().split_once('.').ok_or(())?;
        Ok(Self {
            attempt: attempt.parse().map_err(|_| ())?,
            seq: seq.parse().map_err(|_| ())?,
        })
    }
}

/// What to tell the client next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Emit {
    /// More of the answer: text, and tool-call pieces, refusal or
    /// log-probabilities that came with it.
    Delta {
        id: EventId,
        text: String,
        output: ModelOutput,
    },
    /// The answer is whole (`cancelled`: stopped before its end), with
    /// why the model stopped and what it used, where it said.
    Done {
        cancelled: bool,
        finish_reason: Option<String>,
        usage: Option<Usage>,
    },
    /// The answer failed (the model, or every attempt).
    Failed(ReplyError),
    /// A newer attempt replaced the one the client has text of.
    Restarted,
    /// The resume names an attempt this answer never had.
    UnknownAttempt,
}

/// The answer so far, and how much of it the client has.
#[derive(Debug, Default)]
pub struct StreamedAnswer {
    shown: ShownAnswer,
    /// The attempt the client is getting, and the last of its chunks sent.
    attempt: Option<u64>,
    sent: Option<u32>,
    /// A resumed stream: what the client had, until it is found again.
    resume: Option<EventId>,
    /// Whether a chunk of the resumed attempt came.
    resume_seen: bool,
}

impl StreamedAnswer {
    /// A stream from the start, or after `resume` (the last event the
    /// client got).
    pub fn new(resume: Option<EventId>) -> Self {
        Self {
            resume,
            ..Self::default()
        }
    }

    /// Takes one chunk in; what to tell the client because of it.
    pub fn take(&mut self, chunk: &ReplyChunk) -> Vec<Emit> {
        self.resume_seen |= self.resume.is_some_and(|r| r.attempt == chunk.attempt);
        match self.shown.add(chunk) {
            Arrival::Repeat | Arrival::Stale | Arrival::AfterEnd => Vec::new(),
            Arrival::Failed => self
                .shown
                .error()
                .cloned()
                .map(Emit::Failed)
                .into_iter()
                .collect(),
            Arrival::Shown | Arrival::Restarted => self.advance(),
        }
    }

    fn advance(&mut self) -> Vec<Emit> {
        let attempt = self.shown.attempt();
        if self.attempt != Some(attempt) {
            let resumed_other = self.resume.is_some_and(|r| r.attempt != attempt);
            if resumed_other && !self.resume_seen {
                // Its chunks come before a newer attempt's: it never was.
                return vec![Emit::UnknownAttempt];
            }
            if self.sent.is_some() || resumed_other {
                return vec![Emit::Restarted];
            }
            self.attempt = Some(attempt);
            self.sent = None;
        }
        let through = self.shown.through();
        if let Some(resume) = self.resume {
            // Wait until the chunks the client has are all here again.
            match through {
                Some(through) if through >= resume.seq => self.sent = Some(resume.seq),
                // The client names an event past the end: it has it all.
                _ if self.shown.is_complete() => self.sent = through,
                _ => return Vec::new(),
            }
            self.resume = None;
        }
        let mut emits = Vec::new();
        if let Some(seq) = through.filter(|t| self.sent.is_none_or(|s| s < *t)) {
            let (text, mut output) = self.shown.between(self.sent, seq);
            // Told once, at the end.
            (output.finish_reason, output.usage) = (None, None);
            if !text.is_empty() || !output.is_empty() {
                emits.push(Emit::Delta {
                    id: EventId { attempt, seq },
                    text,
                    output,
                });
            }
            self.sent = Some(seq);
        }
        if self.shown.is_complete() {
            let output = self.shown.output();
            emits.push(Emit::Done {
                cancelled: self.shown.is_cancelled(),
                finish_reason: output.finish_reason,
                usage: output.usage,
            });
        }
        emits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::amqp::ChatRequest;
    use protocol::{ErrorCode, MessageId, UserId};

    fn chunk(attempt: u64, seq: u32, text: &str, last: bool) -> ReplyChunk {
        let request = ChatRequest::new(
            MessageId::new_random(),
            UserId::parse("u").unwrap(),
            "q".into(),
            0,
        );
        ReplyChunk::answering(&request, seq, text.into(), last).in_attempt(attempt)
    }

    const DONE: Emit = Emit::Done {
        cancelled: false,
        finish_reason: None,
        usage: None,
    };

    fn texts(emits: &[Emit]) -> String {
        emits
            .iter()
            .filter_map(|e| match e {
                Emit::Delta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn text_goes_out_in_order_once_and_ends_with_done() {
        let mut answer = StreamedAnswer::new(None);
        assert_eq!(
            texts(&answer.take(&chunk(5, 1, "b", false))),
            "",
            "waits for seq 0"
        );
        let first = answer.take(&chunk(5, 0, "a", false));
        assert_eq!(
            first,
            [Emit::Delta {
                id: EventId { attempt: 5, seq: 1 },
                text: "ab".into(),
                output: ModelOutput::default(),
            }]
        );
        assert!(
            answer.take(&chunk(5, 0, "a", false)).is_empty(),
            "a repeat adds nothing"
        );
        let last = answer.take(&chunk(5, 2, "c", true));
        assert_eq!(texts(&last), "c");
        assert_eq!(last.last(), Some(&DONE));
    }

    #[test]
    fn a_newer_attempt_before_any_text_is_simply_followed_and_after_text_ends_the_stream() {
        let mut quiet = StreamedAnswer::new(None);
        assert!(quiet.take(&chunk(5, 1, "late", false)).is_empty());
        let emits = quiet.take(&chunk(9, 0, "new", true));
        assert_eq!(texts(&emits), "new");
        let mut spoke = StreamedAnswer::new(None);
        spoke.take(&chunk(5, 0, "old", false));
        assert_eq!(spoke.take(&chunk(9, 0, "new", false)), [Emit::Restarted]);
        assert!(
            spoke.take(&chunk(3, 0, "older", false)).is_empty(),
            "older: stale"
        );
    }

    #[test]
    fn a_resumed_stream_starts_after_what_the_client_had() {
        let mut resumed = StreamedAnswer::new(Some("7.1".parse().unwrap()));
        assert!(resumed.take(&chunk(7, 1, "b", false)).is_empty());
        let emits = resumed.take(&chunk(7, 0, "a", false));
        assert!(emits.is_empty(), "nothing new yet: {emits:?}");
        let emits = resumed.take(&chunk(7, 2, "c", true));
        assert_eq!(texts(&emits), "c");
        // Resumed, but the answer began again meanwhile.
        let mut moved = StreamedAnswer::new(Some("7.1".parse().unwrap()));
        assert!(moved.take(&chunk(7, 0, "a", false)).is_empty());
        assert_eq!(moved.take(&chunk(8, 0, "x", false)), [Emit::Restarted]);
        // Resumed from an attempt the answer never had: told so, nothing
        // restarted (and so nothing cancelled).
        let mut made_up = StreamedAnswer::new(Some("3.1".parse().unwrap()));
        assert_eq!(
            made_up.take(&chunk(8, 0, "x", false)),
            [Emit::UnknownAttempt]
        );
    }

    #[test]
    fn a_resume_past_the_final_chunk_ends_at_once() {
        let mut resumed = StreamedAnswer::new(Some("7.99".parse().unwrap()));
        assert!(resumed.take(&chunk(7, 0, "a", false)).is_empty());
        let emits = resumed.take(&chunk(7, 1, "b", true));
        assert_eq!(emits, [DONE], "nothing twice, and the end");
    }

    #[test]
    fn tool_calls_go_out_in_order_and_the_finish_and_usage_at_the_end() {
        use protocol::output::ToolCallDelta;
        let call = |seq, head: Option<&str>, arguments: &str, last: bool| {
            let output = ModelOutput {
                tool_calls: vec![ToolCallDelta {
                    index: 0,
                    id: head.map(str::to_owned),
                    name: head.map(|_| "f".to_owned()),
                    arguments: arguments.into(),
                }],
                finish_reason: last.then(|| "tool_calls".into()),
                usage: last.then_some(Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    total_tokens: 3,
                }),
                ..ModelOutput::default()
            };
            chunk(4, seq, "", last).with_output(output)
        };
        let mut answer = StreamedAnswer::new(None);
        assert!(
            answer.take(&call(1, None, "1}", false)).is_empty(),
            "waits for seq 0"
        );
        let emits = answer.take(&call(0, Some("c"), "{\"a\":", false));
        let [Emit::Delta { output, .. }] = emits.as_slice() else {
            panic!("{emits:?}");
        };
        assert_eq!(
            output.tool_calls[0].arguments, "{\"a\":1}",
            "both pieces, in order"
        );
        assert_eq!(output.tool_calls[0].id.as_deref(), Some("c"));
        let end = answer.take(&call(2, None, "", true));
        assert_eq!(
            end.last(),
            Some(&Emit::Done {
                cancelled: false,
                finish_reason: Some("tool_calls".into()),
                usage: Some(Usage {
                    prompt_tokens: 1,
                    completion_tokens: 2,
                    total_tokens: 3
                }),
            })
        );
    }

    #[test]
    fn a_failure_is_told() {
        let mut answer = StreamedAnswer::new(None);
        let error = ReplyError {
            code: ErrorCode::ModelFailed,
            message: "overloaded".into(),
        };
        let mut failed = chunk(5, 0, "", true);
        failed.error = Some(error.clone());
        assert_eq!(answer.take(&failed), [Emit::Failed(error)]);
    }

    #[test]
    fn event_ids_read_back() {
        let id = EventId {
            attempt: 123_456_789,
            seq: 42,
        };
        assert_eq!(id.to_string().parse::<EventId>(), Ok(id));
        assert!("x.1".parse::<EventId>().is_err());
        assert!("12".parse::<EventId>().is_err());
    }
}
