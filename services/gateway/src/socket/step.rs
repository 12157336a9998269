//! What one client frame asks of the socket. Deciding it is pure —
//! decoding and validating the frame, nothing else — so it is
//! property-tested on its own.

use protocol::ws::{ClientFrame, FrameLimits, Message, ServerFrame};
use protocol::{MessageId, ReplyId, RoomId};

/// What one client frame asks of the socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Answer with this frame.
    Answer(ServerFrame),
    /// A binary frame: not part of the protocol.
    Binary,
    /// A ping or pong: nothing to answer here, but it counts.
    Control,
    /// Send this message.
    Publish(Message),
    /// The client has this reply chunk.
    Acknowledge { id: ReplyId, seq: u32 },
    /// Stop the answer to this message.
    Cancel { id: MessageId },
    /// The client has seen this room up to `seq`.
    Read { room_id: RoomId, seq: u64 },
}

impl Step {
    /// The client frame's `type` (or `invalid`), for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Step::Answer(ServerFrame::Pong) => "ping",
            Step::Answer(_) => "invalid",
            Step::Binary => "binary",
            Step::Control => "control",
            Step::Publish(_) => "send",
            Step::Acknowledge { .. } => "ack",
            Step::Cancel { .. } => "cancel",
            Step::Read { .. } => "read",
        }
    }
}

/// What the text frame `text` asks.
pub fn step(text: &str, limits: &FrameLimits) -> Step {
    match ClientFrame::decode(text, limits) {
        Ok(ClientFrame::Ping) => Step::Answer(ServerFrame::Pong),
        Ok(ClientFrame::Send(message)) => Step::Publish(message),
        Ok(ClientFrame::Ack { id, seq }) => Step::Acknowledge { id, seq },
        Ok(ClientFrame::Cancel { id }) => Step::Cancel { id },
        Ok(ClientFrame::Read { room_id, seq }) => Step::Read { room_id, seq },
        Err(e) => Step::Answer(ServerFrame::from(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use protocol::ErrorCode;

    fn limits() -> FrameLimits {
        FrameLimits { max_text_chars: 50 }
    }

    /// Every code an `error` frame may carry, as listed in docs/protocol.md.
    fn documented_codes() -> Vec<String> {
        let doc = include_str!("../../../../docs/protocol.md");
        ErrorCode::ALL
            .iter()
            .map(|c| c.as_str().to_owned())
            .filter(|c| doc.contains(&format!("| `{c}` |")))
            .collect()
    }

    #[test]
    fn every_error_code_is_documented() {
        assert_eq!(documented_codes().len(), ErrorCode::ALL.len());
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics_and_errors_are_documented(text in any::<String>()) {
            if let Step::Answer(ServerFrame::Error { code, .. }) = step(&text, &limits()) {
                prop_assert!(documented_codes().contains(&code.as_str().to_owned()));
            }
        }

        #[test]
        fn arbitrary_json_values_never_panic(value in arb_json()) {
            let text = value.to_string();
            let outcome = step(&text, &limits());
            if let Step::Answer(ServerFrame::Error { code, .. }) = outcome {
                prop_assert!(!code.is_retryable(), "a malformed frame is never worth resending");
            }
        }

        #[test]
        fn every_valid_frame_is_understood(frame in arb_client_frame()) {
            let expected = match frame.clone() {
                ClientFrame::Ping => Step::Answer(ServerFrame::Pong),
                ClientFrame::Send(message) => Step::Publish(message),
                ClientFrame::Ack { id, seq } => Step::Acknowledge { id, seq },
                ClientFrame::Cancel { id } => Step::Cancel { id },
                ClientFrame::Read { room_id, seq } => Step::Read { room_id, seq },
            };
            prop_assert_eq!(step(&frame.to_json(), &limits()), expected);
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::{Value, json};
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| json!(f)),
            prop_oneof![
                Just("send".to_owned()),
                Just("ack".to_owned()),
                Just("ping".to_owned()),
                Just("cancel".to_owned()),
                Just("6f1c2a4e-9a55-4a8b-9d7e-3f0c1b2a3d4e".to_owned()),
                ".*",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("id".to_owned()),
                        Just("text".to_owned()),
                        Just("seq".to_owned()),
                        "[a-z]{1,6}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_client_frame() -> impl Strategy<Value = ClientFrame> {
        let uuid = any::<u128>().prop_map(uuid::Uuid::from_u128);
        prop_oneof![
            Just(ClientFrame::Ping),
            (uuid.clone(), "\\PC{0,50}")
                .prop_filter("non-blank", |(_, t)| !t.trim().is_empty())
                .prop_map(|(id, text)| ClientFrame::Send(Message {
                    id: MessageId::from(id),
                    text,
                    context: Vec::new(),
                    room_id: None,
                })),
            (uuid.clone(), any::<u32>()).prop_map(|(id, seq)| ClientFrame::Ack {
                id: ReplyId::parse(&id.to_string()).expect("a UUID"),
                seq
            }),
            uuid.clone().prop_map(|id| ClientFrame::Cancel {
                id: MessageId::from(id)
            }),
            (uuid, any::<u64>()).prop_map(|(id, seq)| ClientFrame::Read {
                room_id: RoomId::from(id),
                seq
            }),
        ]
    }
}
