//! Rooms: shared conversations, delivered through each member's own reply
//! queue (bound to the room's key), in one order, kept in PostgreSQL (and
//! in SQLite, the default for one gateway).

use crate::stack::{Mock, TestStack, expected_answer};
use protocol::amqp::ReceiptState;
use protocol::ws::ServerFrame;
use protocol::{ErrorCode, MessageId, RoomId, UserId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use testkit::{ChatClient, Guest};

pub(crate) async fn call(
    stack: &TestStack,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    let url = format!("http://{}{path}", stack.addr());
    let client = reqwest::Client::new();
    let request = match method {
        "GET" => client.get(url),
        _ => client.post(url).json(&body),
    };
    let response = request.bearer_auth(token).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Alice's new room: its id and an invitation.
pub(crate) async fn create_room(stack: &TestStack, owner: &Guest) -> (RoomId, String) {
    let (status, room) = call(
        stack,
        "POST",
        "/api/rooms",
        &owner.token,
        json!({"name": "Team"}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{room}");
    (
        RoomId::parse(room["id"].as_str().unwrap()).unwrap(),
        room["invite_token"].as_str().unwrap().to_owned(),
    )
}

pub(crate) async fn join(stack: &TestStack, guest: &Guest, invite: &str) {
    let (status, body) = call(
        stack,
        "POST",
        "/api/rooms/join",
        &guest.token,
        json!({"invite_token": invite}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

pub(crate) async fn leave(stack: &TestStack, guest: &Guest, room: RoomId) {
    let path = format!("/api/rooms/{room}/leave");
    let (status, _) = call(stack, "POST", &path, &guest.token, Value::Null).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
}

/// Sends `text` to `room` over the socket; returns its id (after `accepted`).
pub(crate) async fn say(client: &mut ChatClient, room: RoomId, text: &str) -> MessageId {
    let id = MessageId::new_random();
    let frame = json!({"type": "send", "id": id, "text": text, "room_id": room});
    client.send_text(&frame.to_string()).await.unwrap();
    id
}

/// Reads frames until `count` room messages came; returns (seq, id, from, text).
pub(crate) async fn room_messages(
    client: &mut ChatClient,
    count: usize,
) -> Vec<(u64, MessageId, UserId, String)> {
    let mut got = Vec::new();
    while got.len() < count {
        match client.next_frame().await.unwrap() {
            ServerFrame::RoomMessage {
                seq,
                id,
                from,
                text,
                ..
            } => got.push((seq, id, from, text)),
            ServerFrame::Accepted { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    got
}

#[tokio::test]
async fn a_room_message_reaches_every_member_in_one_order_and_nobody_else() {
    let stack = TestStack::start(1, Mock::default()).await;
    let (alice_guest, mut alice) = stack.client().await;
    let (bob_guest, mut bob) = stack.client().await;
    let (_, mut carol) = stack.client().await;
    let (room, invite) = create_room(&stack, &alice_guest).await;
    join(&stack, &bob_guest, &invite).await;
    // Both write at the same time.
    for n in 0..5 {
        say(&mut alice, room, &format!("alice {n}")).await;
        say(&mut bob, room, &format!("bob {n}")).await;
    }
    // Two senders' messages may arrive a little out of their numbers (one
    // got its number first, the other published first): the number is the
    // order, and it is the same for everyone.
    let mut seen_by_alice = room_messages(&mut alice, 10).await;
    let mut seen_by_bob = room_messages(&mut bob, 10).await;
    seen_by_alice.sort_by_key(|m| m.0);
    seen_by_bob.sort_by_key(|m| m.0);
    assert_eq!(seen_by_alice, seen_by_bob, "one order for everyone");
    let seqs: Vec<u64> = seen_by_alice.iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    for n in 0..5 {
        assert!(
            seen_by_alice
                .iter()
                .any(|m| m.3 == format!("alice {n}") && m.2 == alice_guest.user_id)
        );
        assert!(
            seen_by_alice
                .iter()
                .any(|m| m.3 == format!("bob {n}") && m.2 == bob_guest.user_id)
        );
    }
    assert!(
        carol.frames_before_pong().await.unwrap().is_empty(),
        "not a member: nothing"
    );
}

#[tokio::test]
async fn members_offline_get_room_messages_when_they_return_and_history_keeps_them() {
    let stack = TestStack::start(1, Mock::default()).await;
    let (alice_guest, mut alice) = stack.client().await;
    let bob_guest = stack.guest().await;
    let (room, invite) = create_room(&stack, &alice_guest).await;
    join(&stack, &bob_guest, &invite).await;
    let (_, details) = call(
        &stack,
        "GET",
        &format!("/api/rooms/{room}"),
        &alice_guest.token,
        Value::Null,
    )
    .await;
    let online: Vec<(String, bool)> = details["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user_id"].as_str().unwrap().to_owned(),
                m["online"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        online,
        [
            (alice_guest.user_id.to_string(), true),
            (bob_guest.user_id.to_string(), false)
        ]
    );
    let id = say(&mut alice, room, "while you were away").await;
    room_messages(&mut alice, 1).await;
    let mut bob = ChatClient::connect(stack.addr(), &bob_guest.token)
        .await
        .unwrap();
    let got = room_messages(&mut bob, 1).await;
    assert_eq!(
        (got[0].0, got[0].1, got[0].3.as_str()),
        (1, id, "while you were away")
    );
    let (status, history) = call(
        &stack,
        "GET",
        &format!("/api/rooms/{room}/messages?after=0"),
        &bob_guest.token,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["messages"][0]["text"], json!("while you were away"));
    assert_eq!(history["messages"][0]["seq"], json!(1));
    let (_, rooms) = call(&stack, "GET", "/api/rooms", &bob_guest.token, Value::Null).await;
    assert_eq!(rooms["rooms"][0]["id"], json!(room));
}

#[tokio::test]
async fn the_assistant_answers_in_the_room_and_every_member_sees_it() {
    let stack = TestStack::start(1, Mock::default()).await;
    let (alice_guest, mut alice) = stack.client().await;
    let (bob_guest, mut bob) = stack.client().await;
    let (room, invite) = create_room(&stack, &alice_guest).await;
    join(&stack, &bob_guest, &invite).await;
    let question = "@assistant what is up";
    let id = say(&mut alice, room, question).await;
    for client in [&mut alice, &mut bob] {
        let mut answer = String::new();
        let mut saw_question = false;
        loop {
            match client.next_frame().await.unwrap() {
                ServerFrame::RoomMessage { id: got, .. } => saw_question = got == id,
                ServerFrame::Reply(chunk) => {
                    assert_eq!((chunk.in_reply_to, chunk.room_id), (id, Some(room)));
                    answer.push_str(&chunk.text);
                    if chunk.r#final {
                        break;
                    }
                }
                ServerFrame::Accepted { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(saw_question, "the question came first");
        assert_eq!(answer, expected_answer(question));
    }
}

#[tokio::test]
async fn outsiders_forged_invites_and_former_members_are_refused() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (alice_guest, _) = stack.client().await;
    let (mallory_guest, mut mallory) = stack.client().await;
    let (room, invite) = create_room(&stack, &alice_guest).await;
    let expect_not_member = |frame: ServerFrame| match frame {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::NotAMember),
        other => panic!("expected not_a_member, got {other:?}"),
    };
    say(&mut mallory, room, "let me in").await;
    expect_not_member(mallory.next_frame().await.unwrap());
    say(&mut mallory, RoomId::new_random(), "no such room").await;
    expect_not_member(mallory.next_frame().await.unwrap());
    let (status, body) = call(
        &stack,
        "GET",
        &format!("/api/rooms/{room}"),
        &mallory_guest.token,
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_a_member"))
    );
    let forged = format!("{}x", &invite[..invite.len() - 1]);
    for token in [forged.as_str(), "garbage", mallory_guest.token.as_str()] {
        let (status, body) = call(
            &stack,
            "POST",
            "/api/rooms/join",
            &mallory_guest.token,
            json!({"invite_token": token}),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("invalid_room_token")),
            "{token:.20}"
        );
    }
    let (status, body) = call(
        &stack,
        "POST",
        "/api/rooms",
        &alice_guest.token,
        json!({"name": "  "}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_frame"))
    );
    // Joining, then leaving: no longer a member.
    join(&stack, &mallory_guest, &invite).await;
    leave(&stack, &mallory_guest, room).await;
    say(&mut mallory, room, "still here?").await;
    expect_not_member(mallory.next_frame().await.unwrap());
}

#[tokio::test]
async fn rooms_survive_a_gateway_restart() {
    let mut stack = TestStack::start(0, Mock::default()).await;
    let alice_guest = stack.guest().await;
    let (room, _) = create_room(&stack, &alice_guest).await;
    stack.gateway.take().unwrap().stop().await.unwrap();
    stack.start_gateway_with(|_| {}).await;
    let (_, rooms) = call(&stack, "GET", "/api/rooms", &alice_guest.token, Value::Null).await;
    assert_eq!(rooms["rooms"][0]["id"], json!(room));
    let mut alice = ChatClient::connect(stack.addr(), &alice_guest.token)
        .await
        .unwrap();
    let id = say(&mut alice, room, "after the restart").await;
    let got = room_messages(&mut alice, 1).await;
    assert_eq!((got[0].1, got[0].3.as_str()), (id, "after the restart"));
}

#[tokio::test]
async fn members_hear_who_has_a_message_and_who_has_read_it() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (alice_guest, mut alice) = stack.client().await;
    let (bob_guest, mut bob) = stack.client().await;
    let (_, mut mallory) = stack.client().await;
    let (room, invite) = create_room(&stack, &alice_guest).await;
    join(&stack, &bob_guest, &invite).await;
    say(&mut alice, room, "did you get this?").await;
    let got = room_messages(&mut bob, 1).await; // bob's client acks it
    let seq = got[0].0;
    bob.send_text(&json!({"type": "read", "room_id": room, "seq": seq}).to_string())
        .await
        .unwrap();
    room_messages(&mut alice, 1).await;
    let wanted = [
        (bob_guest.user_id.clone(), seq, ReceiptState::Delivered),
        (bob_guest.user_id.clone(), seq, ReceiptState::Read),
    ];
    let others = alice
        .until_set_aside(|client| wanted.iter().all(|w| client.receipts.contains(w)))
        .await
        .unwrap_or_else(|e| panic!("{e}; receipts so far: {:?}", alice.receipts));
    assert!(
        others
            .iter()
            .all(|f| matches!(f, ServerFrame::Accepted { .. })),
        "{others:?}"
    );
    // Not a member: cannot claim to have read the room.
    mallory
        .send_text(&json!({"type": "read", "room_id": room, "seq": 1}).to_string())
        .await
        .unwrap();
    match mallory.next_frame().await.unwrap() {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::NotAMember),
        other => panic!("expected not_a_member, got {other:?}"),
    }
}

#[tokio::test]
async fn rooms_turned_off_answer_rooms_disabled_and_the_rest_works() {
    let stack = TestStack::start_with(1, Mock::default(), |settings| {
        settings.rooms.database_url.clear();
    })
    .await;
    let (guest, mut client) = stack.client().await;
    let (status, body) = call(
        &stack,
        "POST",
        "/api/rooms",
        &guest.token,
        json!({"name": "Team"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str(), body["retryable"].as_bool()),
        (StatusCode::NOT_FOUND, Some("rooms_disabled"), Some(false))
    );
    let id = say(&mut client, RoomId::new_random(), "anyone?").await;
    match client.next_frame().await.unwrap() {
        ServerFrame::Error {
            code,
            id: Some(got),
            ..
        } => {
            assert_eq!((code, got), (ErrorCode::RoomsDisabled, id));
        }
        other => panic!("expected rooms_disabled, got {other:?}"),
    }
    let answer: String = client
        .ask("still here")
        .await
        .unwrap()
        .iter()
        .map(|c| c.text.as_str())
        .collect();
    assert_eq!(answer, expected_answer("still here"));
}

#[tokio::test]
async fn rooms_in_sqlite_keep_one_order_history_and_membership() {
    let file = std::env::temp_dir().join(format!(
        "switchboard-rooms-{}/rooms.sqlite3",
        RoomId::new_random()
    ));
    let url = format!("sqlite:{}", file.display());
    let stack = TestStack::start_with(1, Mock::default(), |settings| {
        settings.rooms.database_url = url;
    })
    .await;
    let (alice_guest, mut alice) = stack.client().await;
    let (bob_guest, mut bob) = stack.client().await;
    let (room, invite) = create_room(&stack, &alice_guest).await;
    join(&stack, &bob_guest, &invite).await;
    let first = say(&mut alice, room, "alice first").await;
    say(&mut bob, room, "bob second").await;
    let mut seen_by_alice = room_messages(&mut alice, 2).await;
    let mut seen_by_bob = room_messages(&mut bob, 2).await;
    seen_by_alice.sort_by_key(|m| m.0);
    seen_by_bob.sort_by_key(|m| m.0);
    assert_eq!(seen_by_alice, seen_by_bob, "one order for everyone");
    assert_eq!(
        seen_by_alice.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2]
    );
    // A resend keeps its number; the id stays its sender's.
    let again = json!({"type": "send", "id": first, "text": "alice first", "room_id": room});
    bob.send_text(&again.to_string()).await.unwrap();
    loop {
        match bob.next_frame().await.unwrap() {
            // Bob's own message's `accepted` may still be on its way.
            ServerFrame::Accepted { id, .. } if id != first => {}
            ServerFrame::Error { code, id, .. } => {
                assert_eq!((code, id), (ErrorCode::IdTaken, Some(first)));
                break;
            }
            other => panic!("expected id_taken, got {other:?}"),
        }
    }
    let (status, history) = call(
        &stack,
        "GET",
        &format!("/api/rooms/{room}/messages?after=0"),
        &bob_guest.token,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{history}");
    let texts: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts.len(), 2);
    assert!(texts.contains(&"alice first") && texts.contains(&"bob second"));
    leave(&stack, &bob_guest, room).await;
    let (_, rooms) = call(&stack, "GET", "/api/rooms", &bob_guest.token, Value::Null).await;
    assert_eq!(rooms["rooms"], json!([]));
    assert!(file.is_file(), "the rooms are in the file");
    drop(stack);
    let _ = std::fs::remove_dir_all(file.parent().unwrap());
}

#[tokio::test]
async fn a_database_that_is_down_answers_rooms_unavailable_retryable() {
    let stack = TestStack::start_with(1, Mock::default(), |settings| {
        // Nothing listens on port 1.
        settings.rooms.database_url = "postgres://postgres@127.0.0.1:1/test".into();
    })
    .await;
    let (guest, _client) = stack.client().await;
    let (status, body) = call(&stack, "GET", "/api/rooms", &guest.token, Value::Null).await;
    assert_eq!(
        (status, body["code"].as_str(), body["retryable"].as_bool()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Some("rooms_unavailable"),
            Some(true)
        )
    );
}

/// The next `room_presence` about `who` that `client` hears: (member, online).
async fn presence_of(client: &mut ChatClient, who: &UserId) -> (bool, bool) {
    let heard = |c: &ChatClient| c.presences.iter().filter(|p| p.0 == *who).count();
    let before = heard(client);
    let other = client.until_set_aside(|c| heard(c) > before).await.unwrap();
    assert!(other.is_empty(), "{other:?}");
    let last = client.presences.iter().rev().find(|p| p.0 == *who).unwrap();
    (last.1, last.2)
}

#[tokio::test]
async fn members_are_told_when_someone_joins_comes_online_goes_offline_and_leaves() {
    let stack = TestStack::start(1, Mock::default()).await;
    let (alice_guest, mut alice) = stack.client().await;
    let bob_guest = stack.guest().await;
    let (room, invite) = create_room(&stack, &alice_guest).await;
    let bob = bob_guest.user_id.clone();
    // Joins with no socket open: a member, offline.
    join(&stack, &bob_guest, &invite).await;
    assert_eq!(presence_of(&mut alice, &bob).await, (true, false));
    // Opens a socket: online.
    let bob_socket = ChatClient::connect(stack.addr(), &bob_guest.token)
        .await
        .unwrap();
    assert_eq!(presence_of(&mut alice, &bob).await, (true, true));
    // Closes it: offline.
    drop(bob_socket);
    assert_eq!(presence_of(&mut alice, &bob).await, (true, false));
    // Leaves: no longer a member.
    leave(&stack, &bob_guest, room).await;
    assert_eq!(presence_of(&mut alice, &bob).await, (false, false));
}

#[tokio::test]
async fn a_join_and_a_leave_racing_never_leave_a_hidden_listener() {
    // Many requests in a row from one user: not what the rate limit is about.
    let stack =
        TestStack::start_with(1, Mock::default(), |s| s.rate_limit.api_burst = 10_000).await;
    let (alice_guest, mut alice) = stack.client().await;
    let (bob_guest, mut bob) = stack.client().await;
    let (room, invite) = create_room(&stack, &alice_guest).await;
    let leave_path = format!("/api/rooms/{room}/leave");
    for round in 0..20 {
        // Joined, then a leave and a join at once.
        join(&stack, &bob_guest, &invite).await;
        let invitation = json!({"invite_token": invite});
        let (left, joined) = tokio::join!(
            call(&stack, "POST", &leave_path, &bob_guest.token, Value::Null),
            call(
                &stack,
                "POST",
                "/api/rooms/join",
                &bob_guest.token,
                invitation
            ),
        );
        assert!(
            left.0.is_success() && joined.0.is_success(),
            "{left:?} {joined:?}"
        );
        // Then a leave for good half the time.
        if round % 2 == 0 {
            leave(&stack, &bob_guest, room).await;
        }
        let (_, rooms) = call(&stack, "GET", "/api/rooms", &bob_guest.token, Value::Null).await;
        let member = rooms.to_string().contains(&room.to_string());
        let said = say(&mut alice, room, &format!("round {round}")).await;
        room_messages(&mut alice, 1).await;
        // Anything for Bob from the room comes before the answer to what he
        // asks now: his queue keeps its order.
        let asked = MessageId::new_random();
        let frame = json!({"type": "send", "id": asked, "text": format!("after round {round}")});
        bob.send_text(&frame.to_string()).await.unwrap();
        let mut heard = false;
        loop {
            match bob.next_frame().await.unwrap() {
                ServerFrame::RoomMessage { id, .. } => heard |= id == said,
                ServerFrame::Reply(chunk) if chunk.in_reply_to == asked && chunk.r#final => break,
                _ => {}
            }
        }
        assert_eq!(heard, member, "round {round}: hears the room iff a member");
        if member {
            leave(&stack, &bob_guest, room).await;
        }
    }
}

#[tokio::test]
async fn a_user_is_in_only_so_many_rooms_and_an_invisible_name_is_refused() {
    let stack = TestStack::start_with(1, Mock::default(), |s| s.rooms.max_rooms_per_user = 2).await;
    let (alice, _) = stack.client().await;
    let (bob, _) = stack.client().await;
    create_room(&stack, &alice).await;
    let (second, _) = create_room(&stack, &alice).await;
    let (_, bobs_invite) = create_room(&stack, &bob).await;
    let (status, body) = call(
        &stack,
        "POST",
        "/api/rooms",
        &alice.token,
        json!({"name": "third"}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_rooms"))
    );
    let invitation = json!({"invite_token": bobs_invite});
    let (status, body) = call(
        &stack,
        "POST",
        "/api/rooms/join",
        &alice.token,
        invitation.clone(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_rooms"))
    );
    leave(&stack, &alice, second).await;
    join(&stack, &alice, &bobs_invite).await;
    join(&stack, &alice, &bobs_invite).await;
    for name in ["\u{200B}\u{200B}", " \u{FEFF} ", "\u{202E}"] {
        let (status, body) = call(
            &stack,
            "POST",
            "/api/rooms",
            &bob.token,
            json!({"name": name}),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_frame")),
            "{name:?}"
        );
    }
}
