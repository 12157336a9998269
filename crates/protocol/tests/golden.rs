//! Golden JSON: the exact bytes of every envelope, as documented in
//! `docs/protocol.md`. A failing test here means the wire format changed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use protocol::amqp::{self, CancelRequest, ChatRequest, MessageStatus, ReplyChunk, StatusEvent};
use protocol::ws::{ClientFrame, FrameLimits, Message, ReplyFrame, ServerFrame};
use protocol::{ErrorCode, MessageId, ReplyId, UserId};
use serde_json::Value;

const MSG: &str = "6f1c2a4e-9a55-4a8b-9d7e-3f0c1b2a3d4e";

fn msg() -> MessageId {
    MessageId::parse(MSG).unwrap()
}

fn alice() -> UserId {
    UserId::parse("alice").unwrap()
}

/// Serializes `value`, compares with `golden` as JSON (key order free), and
/// checks that `golden` parses back to `value`.
fn assert_golden<T>(value: &T, golden: &str)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let ours: Value = serde_json::to_value(value).unwrap();
    let theirs: Value = serde_json::from_str(golden).unwrap();
    assert_eq!(ours, theirs);
    let back: T = serde_json::from_str(golden).unwrap();
    assert_eq!(&back, value);
}

#[test]
fn an_api_request_with_model_wishes_is_answered_into_the_completions_stream() {
    let request = ChatRequest::new(MessageId::parse(MSG).unwrap(), alice(), "hi".into(), 1)
        .for_api(amqp::ApiCall {
            model: Some("big".into()),
            messages: vec![serde_json::json!({"role": "user", "content": "hi"})],
            params: serde_json::json!({"max_tokens": 200})
                .as_object()
                .unwrap()
                .clone(),
        });
    assert_golden(
        &request,
        &format!(
            r#"{{"v":1,"id":"{MSG}","user_id":"alice","text":"hi","sent_at_ms":1,"to_stream":true,"api":{{"model":"big","messages":[{{"role":"user","content":"hi"}}],"params":{{"max_tokens":200}}}}}}"#
        ),
    );
    let names = protocol::topology::Names::new("p.");
    let to = names.answer_destination(&request);
    assert_eq!(
        (to.exchange.as_str(), to.routing_key.as_str()),
        ("", "p.chat_completions")
    );
    assert_eq!(names.answer_queue(&request), "p.chat_completions");
    assert_eq!(
        names.status_destination(&request),
        None,
        "no processing status"
    );
}

#[test]
fn completion_notes() {
    let opened = amqp::CompletionNote::new(amqp::Note::Opened {
        completions: vec![amqp::Completion {
            id: msg(),
            user_id: alice(),
        }],
    });
    assert_golden(
        &opened,
        &format!(r#"{{"v":1,"note":"opened","completions":[{{"id":"{MSG}","user_id":"alice"}}]}}"#),
    );
    let reading = amqp::CompletionNote::new(amqp::Note::Reading {
        id: msg(),
        user_id: alice(),
        gateway: "gw-1".into(),
        reader: 7,
    });
    assert_golden(
        &reading,
        &format!(
            r#"{{"v":1,"note":"reading","id":"{MSG}","user_id":"alice","gateway":"gw-1","reader":7}}"#
        ),
    );
    let mark = amqp::CompletionNote::new(amqp::Note::Mark {
        gateway: "gw-1".into(),
        mark: 3,
    });
    assert_golden(&mark, r#"{"v":1,"note":"mark","gateway":"gw-1","mark":3}"#);
}

#[test]
fn client_frames() {
    let limits = FrameLimits::default();
    let send = format!(r#"{{"type":"send","id":"{MSG}","text":"Hello"}}"#);
    let frame = ClientFrame::Send(Message {
        id: msg(),
        text: "Hello".into(),
        context: Vec::new(),
        room_id: None,
    });
    assert_eq!(ClientFrame::decode(&send, &limits), Ok(frame.clone()));
    assert_eq!(
        serde_json::from_str::<Value>(&frame.to_json()).unwrap(),
        serde_json::from_str::<Value>(&send).unwrap()
    );
    assert_eq!(
        ClientFrame::decode(r#"{"type":"ping"}"#, &limits),
        Ok(ClientFrame::Ping)
    );
    assert_eq!(ClientFrame::Ping.to_json(), r#"{"type":"ping"}"#);
    let ack = format!(r#"{{"type":"ack","id":"{MSG}","seq":7}}"#);
    let frame = ClientFrame::Ack {
        id: ReplyId::parse(MSG).unwrap(),
        seq: 7,
    };
    assert_eq!(ClientFrame::decode(&ack, &limits), Ok(frame.clone()));
    assert_eq!(
        serde_json::from_str::<Value>(&frame.to_json()).unwrap(),
        serde_json::from_str::<Value>(&ack).unwrap()
    );
    let cancel = format!(r#"{{"type":"cancel","id":"{MSG}"}}"#);
    let frame = ClientFrame::Cancel { id: msg() };
    assert_eq!(ClientFrame::decode(&cancel, &limits), Ok(frame.clone()));
    assert_eq!(frame.to_json(), cancel);
}

#[test]
fn server_frames() {
    assert_golden(
        &ServerFrame::Welcome { user_id: alice() },
        r#"{"type":"welcome","user_id":"alice"}"#,
    );
    assert_golden(
        &ServerFrame::Accepted {
            id: msg(),
            trace_id: Some("4bf92f3577b34da6a3ce929d0e0e4736".into()),
        },
        &format!(
            r#"{{"type":"accepted","id":"{MSG}","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}}"#
        ),
    );
    let reply_id = ReplyId::for_request(&alice(), msg());
    assert_golden(
        &ServerFrame::Reply(ReplyFrame {
            id: reply_id,
            in_reply_to: msg(),
            seq: 0,
            attempt: 0,
            text: "Hi ".into(),
            r#final: false,
            error: None,
            cancelled: false,
            room_id: None,
            output: None,
        }),
        &format!(
            r#"{{"type":"reply","id":"{reply_id}","in_reply_to":"{MSG}","seq":0,"text":"Hi ","final":false}}"#
        ),
    );
    // A chunk of a later attempt at the answer (the first was cut short).
    assert_golden(
        &ServerFrame::Reply(ReplyFrame {
            id: reply_id,
            in_reply_to: msg(),
            seq: 0,
            attempt: 9,
            text: "Hello ".into(),
            r#final: false,
            error: None,
            cancelled: false,
            room_id: None,
            output: None,
        }),
        &format!(
            r#"{{"type":"reply","id":"{reply_id}","in_reply_to":"{MSG}","seq":0,"attempt":9,"text":"Hello ","final":false}}"#
        ),
    );
    assert_golden(
        &ServerFrame::error(ErrorCode::BrokerUnavailable, "try later", Some(msg())),
        &format!(
            r#"{{"type":"error","code":"broker_unavailable","message":"try later","id":"{MSG}","retryable":true}}"#
        ),
    );
    assert_golden(
        &ServerFrame::error(ErrorCode::InvalidJson, "bad", None),
        r#"{"type":"error","code":"invalid_json","message":"bad","retryable":false}"#,
    );
    assert_golden(&ServerFrame::Pong, r#"{"type":"pong"}"#);
    assert_golden(
        &ServerFrame::Status {
            broker: protocol::ws::LinkState::Down,
        },
        r#"{"type":"status","broker":"down"}"#,
    );
    assert_golden(
        &ServerFrame::Reply(ReplyFrame {
            id: reply_id,
            in_reply_to: msg(),
            seq: u32::MAX,
            attempt: 0,
            text: String::new(),
            r#final: true,
            error: Some(amqp::ReplyError {
                code: ErrorCode::RequestFailed,
                message: "failed 5 times".into(),
            }),
            cancelled: false,
            room_id: None,
            output: None,
        }),
        &format!(
            r#"{{"type":"reply","id":"{reply_id}","in_reply_to":"{MSG}","seq":4294967295,"text":"","final":true,"error":{{"code":"request_failed","message":"failed 5 times"}}}}"#
        ),
    );
}

#[test]
fn stop_generating_and_status_frames() {
    let reply_id = ReplyId::for_request(&alice(), msg());
    assert_golden(
        &ServerFrame::Reply(ReplyFrame {
            id: reply_id,
            in_reply_to: msg(),
            seq: 4,
            attempt: 0,
            text: String::new(),
            r#final: true,
            error: None,
            cancelled: true,
            room_id: None,
            output: None,
        }),
        &format!(
            r#"{{"type":"reply","id":"{reply_id}","in_reply_to":"{MSG}","seq":4,"text":"","final":true,"cancelled":true}}"#
        ),
    );
    for (status, word) in [
        (MessageStatus::Processing, "processing"),
        (MessageStatus::Cancelling, "cancelling"),
    ] {
        assert_golden(
            &ServerFrame::MessageStatus { id: msg(), status },
            &format!(r#"{{"type":"message_status","id":"{MSG}","status":"{word}"}}"#),
        );
    }
    assert_golden(
        &CancelRequest::new(alice(), msg()),
        &format!(r#"{{"v":1,"user_id":"alice","message_id":"{MSG}"}}"#),
    );
    assert_golden(
        &StatusEvent::new(alice(), msg(), MessageStatus::Processing),
        &format!(r#"{{"v":1,"user_id":"alice","message_id":"{MSG}","status":"processing"}}"#),
    );
}

#[test]
fn rooms() {
    let room = protocol::RoomId::parse(MSG).unwrap();
    assert_golden(
        &ServerFrame::RoomMessage {
            room_id: room,
            seq: 7,
            id: msg(),
            from: alice(),
            text: "Hello all".into(),
        },
        &format!(
            r#"{{"type":"room_message","room_id":"{MSG}","seq":7,"id":"{MSG}","from":"alice","text":"Hello all"}}"#
        ),
    );
    assert_golden(
        &amqp::RoomMessage {
            v: 1,
            room_id: room,
            seq: 7,
            id: msg(),
            user_id: alice(),
            text: "Hello all".into(),
            sent_at_ms: 1,
        },
        &format!(
            r#"{{"v":1,"room_id":"{MSG}","seq":7,"id":"{MSG}","user_id":"alice","text":"Hello all","sent_at_ms":1}}"#
        ),
    );
    let send = format!(r#"{{"type":"send","id":"{MSG}","text":"Hi","room_id":"{MSG}"}}"#);
    let Ok(ClientFrame::Send(Message { room_id, .. })) =
        ClientFrame::decode(&send, &FrameLimits::default())
    else {
        panic!("a send to a room is understood");
    };
    assert_eq!(room_id, Some(room));
    let read = format!(r#"{{"type":"read","room_id":"{MSG}","seq":7}}"#);
    assert_eq!(
        ClientFrame::decode(&read, &FrameLimits::default()),
        Ok(ClientFrame::Read {
            room_id: room,
            seq: 7
        })
    );
    assert_golden(
        &ServerFrame::RoomReceipt {
            room_id: room,
            user_id: alice(),
            seq: 7,
            state: amqp::ReceiptState::Read,
        },
        &format!(
            r#"{{"type":"room_receipt","room_id":"{MSG}","user_id":"alice","seq":7,"state":"read"}}"#
        ),
    );
    assert_golden(
        &ServerFrame::RoomPresence {
            room_id: room,
            user_id: alice(),
            member: true,
            online: false,
        },
        &format!(
            r#"{{"type":"room_presence","room_id":"{MSG}","user_id":"alice","member":true,"online":false}}"#
        ),
    );
    assert_golden(
        &amqp::RoomPresence {
            v: 1,
            room_id: room,
            user_id: alice(),
            member: false,
            online: false,
        },
        &format!(r#"{{"v":1,"room_id":"{MSG}","user_id":"alice","member":false,"online":false}}"#),
    );
    assert_eq!(
        protocol::topology::Names::room_routing_key(&room),
        format!("room.{MSG}")
    );
}

#[test]
fn context_turns() {
    use protocol::amqp::{Role, Turn};
    let context = vec![Turn {
        role: Role::Assistant,
        text: "Earlier".into(),
    }];
    let send = format!(
        r#"{{"type":"send","id":"{MSG}","text":"Hi","context":[{{"role":"assistant","text":"Earlier"}}]}}"#
    );
    let frame = ClientFrame::Send(Message {
        id: msg(),
        text: "Hi".into(),
        context: context.clone(),
        room_id: None,
    });
    assert_eq!(
        ClientFrame::decode(&send, &FrameLimits::default()),
        Ok(frame.clone())
    );
    assert_eq!(frame.to_json(), send);
    assert_golden(
        &ChatRequest::new(msg(), alice(), "Hi".into(), 1).with_context(context),
        &format!(
            r#"{{"v":1,"id":"{MSG}","user_id":"alice","text":"Hi","sent_at_ms":1,"context":[{{"role":"assistant","text":"Earlier"}}]}}"#
        ),
    );
}

#[test]
fn reply_id_derivation_is_stable_across_releases() {
    // Clients persist reply ids to drop repeats; the derivation must not drift.
    assert_eq!(
        ReplyId::for_request(&alice(), msg()).to_string(),
        "f719ff90-8d54-5e40-bf50-8cdd93b8acba"
    );
}

#[test]
fn amqp_bodies() {
    let request = ChatRequest::new(msg(), alice(), "Hello".into(), 1_700_000_000_000);
    assert_golden(
        &request,
        &format!(
            r#"{{"v":1,"id":"{MSG}","user_id":"alice","text":"Hello","sent_at_ms":1700000000000}}"#
        ),
    );
    let chunk = ReplyChunk::answering(&request, 3, "world".into(), true);
    let reply_id = request.reply_id();
    assert_golden(
        &chunk,
        &format!(
            r#"{{"v":1,"id":"{reply_id}","in_reply_to":"{MSG}","user_id":"alice","seq":3,"text":"world","final":true,"request_sent_at_ms":1700000000000}}"#
        ),
    );
    let retried = ReplyChunk::answering(&request, 0, "again".into(), false).in_attempt(17);
    assert_golden(
        &retried,
        &format!(
            r#"{{"v":1,"id":"{reply_id}","in_reply_to":"{MSG}","user_id":"alice","seq":0,"attempt":17,"text":"again","final":false,"request_sent_at_ms":1700000000000}}"#
        ),
    );
    assert_eq!(
        amqp::decode::<ReplyChunk>(&amqp::encode(&retried)).unwrap(),
        retried
    );
    assert_eq!(
        amqp::decode::<ChatRequest>(&amqp::encode(&request)).unwrap(),
        request
    );
    assert_eq!(
        amqp::decode::<ReplyChunk>(&amqp::encode(&chunk)).unwrap(),
        chunk
    );
}
