//! What a model returns besides text, as it travels in reply chunks: tool
//! calls (streamed as deltas), why it stopped, the tokens it used, a
//! refusal and log-probabilities. One merge rule serves the responder
//! gathering pieces into chunks and the gateway putting chunks back
//! together, so a tool call's arguments are never split or reordered
//! wrongly.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A piece of one tool call: the first of a call carries its `id` and
/// `name`, every one a piece of its `arguments` (a JSON text, in order).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    /// Which call of the answer (0, 1, … in the order the model began them).
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arguments: String,
}

/// Tokens an answer used, as the model counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// Everything but the text, of one piece, one chunk or a whole answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelOutput {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallDelta>,
    /// As the model gave it: `stop`, `length`, `tool_calls`,
    /// `content_filter`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The model declined: its words, in pieces like the text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub refusal: String,
    /// Log-probabilities of the text's tokens (OpenAI's `logprobs.content`
    /// entries), in order, where the client asked for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<Value>,
}

impl ModelOutput {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// `later` added after what is here: a tool call's pieces join the
    /// call of the same index (its id and name kept from its first piece,
    /// its arguments appended in order); a new index is a new call; the
    /// finish reason and the usage are the latest given.
    pub fn merge(&mut self, later: ModelOutput) {
        for delta in later.tool_calls {
            match self.tool_calls.iter_mut().find(|c| c.index == delta.index) {
                Some(call) => {
                    call.id = call.id.take().or(delta.id);
                    call.name = call.name.take().or(delta.name);
                    call.arguments.push_str(&delta.arguments);
                }
                None => self.tool_calls.push(delta),
            }
        }
        if later.finish_reason.is_some() {
            self.finish_reason = later.finish_reason;
        }
        if later.usage.is_some() {
            self.usage = later.usage;
        }
        self.refusal.push_str(&later.refusal);
        self.logprobs.extend(later.logprobs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(index: u32, head: Option<(&str, &str)>, arguments: &str) -> ModelOutput {
        ModelOutput {
            tool_calls: vec![ToolCallDelta {
                index,
                id: head.map(|(id, _)| id.into()),
                name: head.map(|(_, name)| name.into()),
                arguments: arguments.into(),
            }],
            ..ModelOutput::default()
        }
    }

    #[test]
    fn tool_call_pieces_join_their_call_in_order() {
        let mut whole = ModelOutput::default();
        whole.merge(delta(0, Some(("call_a", "weather")), ""));
        whole.merge(delta(0, None, "{\"city\":"));
        whole.merge(delta(1, Some(("call_b", "time")), "{}"));
        whole.merge(delta(0, None, "\"Oslo\"}"));
        whole.merge(ModelOutput {
            finish_reason: Some("tool_calls".into()),
            usage: Some(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7,
            }),
            ..ModelOutput::default()
        });
        assert_eq!(whole.tool_calls.len(), 2);
        assert_eq!(whole.tool_calls[0].id.as_deref(), Some("call_a"));
        assert_eq!(whole.tool_calls[0].arguments, "{\"city\":\"Oslo\"}");
        assert_eq!(whole.tool_calls[1].name.as_deref(), Some("time"));
        assert_eq!(whole.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(whole.usage.unwrap().total_tokens, 7);
    }

    #[test]
    fn merging_in_two_steps_is_merging_in_one() {
        // What the responder gathers into chunks, the gateway puts back
        // together: the same calls either way.
        let pieces = [
            delta(0, Some(("c", "f")), "{\"a\""),
            delta(0, None, ":1"),
            delta(0, None, "}"),
        ];
        let mut at_once = ModelOutput::default();
        for p in pieces.clone() {
            at_once.merge(p);
        }
        let (mut first, mut second) = (ModelOutput::default(), ModelOutput::default());
        first.merge(pieces[0].clone());
        second.merge(pieces[1].clone());
        second.merge(pieces[2].clone());
        first.merge(second);
        assert_eq!(first, at_once);
    }
}
