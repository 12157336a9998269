//! Hostile clients (#20): each finding of the attack on the gateway, as a
//! test that failed before its fix. Bounded counts, loopback only.

use crate::rooms::{call, create_room, join, room_messages, say};
use crate::stack::{Mock, TestStack};
use broker::lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use protocol::ws::ServerFrame;
use protocol::{ErrorCode, MessageId, RoomId};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;
use testkit::{ChatClient, Closed, MuteSocket};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads what the server sends until it closes the connection; `None`
/// when it is still open after `within`.
async fn read_until_closed(tcp: &mut TcpStream, within: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            match tcp.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(within, read).await.ok().map(|()| got)
}

fn error_code(body: &Value) -> &str {
    body["code"].as_str().unwrap_or("<no code>")
}

// --- 1. Idle and slow connections are closed; the connection cap holds.

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.http.handshake_timeout_ms = 300;
    })
    .await;
    let mut idle = TcpStream::connect(stack.addr()).await.unwrap();
    assert!(
        read_until_closed(&mut idle, testkit::WAIT).await.is_some(),
        "closed"
    );
}

#[tokio::test]
async fn an_http2_preface_gets_no_http2_connection_to_hold() {
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.http.handshake_timeout_ms = 300;
    })
    .await;
    // A partial HTTP/2 preface, then silence: HTTP/1.1 only, so it is a bad
    // request line, answered and closed.
    let mut h2 = TcpStream::connect(stack.addr()).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    assert!(read_until_closed(&mut h2, testkit::WAIT).await.is_some());
}

#[tokio::test]
async fn a_request_body_that_trickles_is_cut_off_with_request_timeout() {
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.http.request_timeout_ms = 500;
    })
    .await;
    let guest = stack.guest().await;
    let mut tcp = TcpStream::connect(stack.addr()).await.unwrap();
    let head = format!(
        "POST /api/messages HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"te",
        stack.addr(),
        guest.token
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    // The rest never comes (a byte now and then would not help either: the
    // deadline is for the whole body).
    let answer = read_until_closed(&mut tcp, testkit::WAIT).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"request_timeout\""), "{answer}");
}

#[tokio::test]
async fn beyond_the_connection_cap_new_ones_are_refused_and_healthz_still_answers() {
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.http.max_connections = 4;
    })
    .await;
    // Four connections that hold their places (a request under way).
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut tcp = TcpStream::connect(stack.addr()).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(tcp);
    }
    // The accept loop counts them as they are accepted: wait until a fifth
    // request is refused, then check both refusals.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = |path: &str| format!("http://{}{path}", stack.addr());
    let mut refused = None;
    for _ in 0..200 {
        let response = http.post(url("/api/session")).send().await.unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(response.json::<Value>().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = refused.expect("a connection over the cap is refused");
    assert_eq!(error_code(&refused), "gateway_full");
    let health = http.get(url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "/healthz still answers");
    drop(held);
}

#[tokio::test]
async fn an_open_websocket_keeps_its_place_under_the_connection_cap() {
    // The connection task ends at the upgrade; the socket's descriptor does not.
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.http.max_connections = 2;
    })
    .await;
    let (alice, bob) = (stack.guest().await, stack.guest().await);
    let mut sockets = Vec::new();
    for guest in [&alice, &bob] {
        // The sessions' own connections may still hold places for a moment.
        let mut socket = None;
        for _ in 0..200 {
            if let Ok(client) = ChatClient::connect(stack.addr(), &guest.token).await {
                socket = Some(client);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        sockets.push(socket.expect("a socket once the sessions' connections are gone"));
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let health = || http.get(format!("http://{}/healthz", stack.addr())).send();
    // Any route but /healthz (guest sessions have a rate limit of their own).
    let api = || {
        http.get(format!("http://{}/api/openapi.json", stack.addr()))
            .send()
    };
    // Two sockets open, two places taken: a request is answered by the overflow service.
    let refused = api().await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&refused.json().await.unwrap()), "gateway_full");
    assert_eq!(health().await.unwrap().status(), StatusCode::OK);
    // Closed: the places are free again.
    drop(sockets);
    let mut admitted = false;
    for _ in 0..200 {
        if api().await.unwrap().status() == StatusCode::OK {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(admitted, "closed sockets give their places back");
}

// --- 2. One user cannot starve the others.

#[tokio::test]
async fn one_user_may_have_only_so_many_messages_waiting() {
    // Slow answers, so messages wait; a cap of 5 for the test.
    let slow = Mock {
        chunk_delay_ms: 200,
        ..Mock::default()
    };
    let stack = TestStack::start_with(1, slow, |s| s.messages.max_pending_per_user = 5).await;
    let flooder = stack.guest().await;
    let http = reqwest::Client::new();
    let mut codes = Vec::new();
    for n in 0..8 {
        let response = http
            .post(format!("http://{}/api/messages", stack.addr()))
            .bearer_auth(&flooder.token)
            .json(&json!({"text": format!("flood {n}")}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        codes.push((status, error_code(&body).to_owned()));
    }
    let accepted = codes
        .iter()
        .filter(|(s, _)| *s == StatusCode::ACCEPTED)
        .count();
    assert_eq!(accepted, 5, "{codes:?}");
    assert!(
        codes[5..]
            .iter()
            .all(|(s, c)| *s == StatusCode::TOO_MANY_REQUESTS && c == "too_many_pending"),
        "{codes:?}"
    );
    // Someone else is not held up by it.
    let (_, mut other) = stack.client().await;
    other.ask("and me?").await.unwrap();
}

#[tokio::test]
async fn rest_requests_of_one_user_are_rate_limited() {
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.rate_limit.api_burst = 3;
        s.rate_limit.api_per_second = 1;
    })
    .await;
    let guest = stack.guest().await;
    let http = reqwest::Client::new();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = http
            .get(format!("http://{}/api/session", stack.addr()))
            .bearer_auth(&guest.token)
            .send()
            .await
            .unwrap();
        statuses.push((
            response.status(),
            response.headers().get("retry-after").cloned(),
        ));
    }
    assert!(
        statuses[..3].iter().all(|(s, _)| *s == StatusCode::OK),
        "{statuses:?}"
    );
    let (status, retry_after) = &statuses[3];
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after.is_some(), "says when to come back");
}

#[tokio::test]
async fn chat_queue_is_bounded_and_refuses_beyond_it() {
    // No responder: requests pile up; the queue holds 3. (A quorum queue
    // applies its bound as it applies each message, so one more may slip
    // in before it refuses.)
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.amqp.chat_queue_max_length = 3;
    })
    .await;
    let (_, mut client) = stack.client().await;
    let mut accepted = 0;
    let mut refused = 0;
    for n in 0..8 {
        let id = client.send_message(&format!("waiting {n}")).await.unwrap();
        match client.next_frame().await.unwrap() {
            ServerFrame::Accepted { .. } => accepted += 1,
            ServerFrame::Error {
                code,
                id: Some(about),
                retryable,
                ..
            } => {
                assert_eq!(
                    (code, about, retryable),
                    (ErrorCode::PublishRejected, id, true)
                );
                refused += 1;
            }
            other => panic!("expected accepted or publish_rejected, got {other:?}"),
        }
    }
    assert!((3..=4).contains(&accepted), "{accepted} accepted");
    assert_eq!(accepted + refused, 8);
}

#[tokio::test]
async fn the_dead_letter_queue_keeps_only_the_newest() {
    // Both services declare the queue; they agree on its bound.
    let mut stack =
        TestStack::start_with(0, Mock::default(), |s| s.amqp.dead_letter_max_length = 3).await;
    let mut counters = stack
        .start_responder_with(Mock::default(), |s| s.amqp.dead_letter_max_length = 3)
        .await;
    let names = protocol::topology::Names::new(&stack.prefix);
    let admin = broker::lapin::Connection::connect(&stack.url, Default::default())
        .await
        .unwrap();
    let channel = admin.create_channel().await.unwrap();
    for _ in 0..5 {
        // Unreadable: dead-lettered at once.
        channel
            .basic_publish(
                "".into(),
                names.chat_queue().as_str().into(),
                BasicPublishOptions::default(),
                b"not a request",
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    crate::stack::wait_counters(&mut counters, "all five rejected", |c| c.rejected == 5).await;
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let mut kept = 0;
    testkit::wait_until_async("the dead-letter queue settles at its bound", async || {
        let queue = channel
            .queue_declare(
                names.dead_letter_queue().as_str().into(),
                passive,
                Default::default(),
            )
            .await
            .unwrap();
        kept = queue.message_count();
        kept == 3
    })
    .await;
    assert_eq!(kept, 3);
    let _ = admin.close(200, "done".into()).await;
}

// --- 3, 4, 8, 9. Rooms.

#[tokio::test]
async fn leaving_a_room_while_the_queue_is_set_up_leaves_nothing_bound() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (owner, mut owner_socket) = stack.client().await;
    // A member of many rooms: a socket's set-up reads them, then binds them
    // one by one, the last joined last — a wide window for a leave of that
    // one to land between the read and its binding.
    let mut rooms = Vec::new();
    for _ in 0..40 {
        rooms.push(create_room(&stack, &owner).await);
    }
    let member = stack.guest().await;
    for (_, invite) in &rooms {
        join(&stack, &member, invite).await;
    }
    let (last, _) = rooms.last().unwrap().clone();
    let path = format!("/api/rooms/{last}/leave");
    let leave = async {
        // Once the socket's upgrade is under way.
        tokio::time::sleep(Duration::from_millis(5)).await;
        call(&stack, "POST", &path, &member.token, Value::Null).await
    };
    let (socket, (status, _)) =
        tokio::join!(ChatClient::connect(stack.addr(), &member.token), leave);
    assert_eq!(status, StatusCode::NO_CONTENT);
    let mut socket = socket.unwrap();
    // Wait until the set-up is done: a message to the first room arrives.
    let (first, _) = rooms[0];
    say(&mut owner_socket, first, "to the first room").await;
    room_messages(&mut socket, 1).await;
    // The owner's message to the room left reaches the owner, not the one
    // who left.
    say(&mut owner_socket, last, "after the leave").await;
    let got = room_messages(&mut owner_socket, 2).await;
    assert!(got.iter().any(|(_, _, _, text)| text == "after the leave"));
    let stray = socket.frames_before_pong().await.unwrap();
    assert!(
        !stray
            .iter()
            .any(|f| matches!(f, ServerFrame::RoomMessage { room_id, .. } if *room_id == last)),
        "a member who left still gets the room: {stray:?}"
    );
}

#[tokio::test]
async fn one_members_full_queue_neither_blocks_the_room_nor_loses_it_for_the_others() {
    // Reply queues hold 3 here.
    let stack = TestStack::start_with(0, Mock::default(), |s| s.reply_queue.max_length = 3).await;
    let (owner, mut owner_socket) = stack.client().await;
    let (room, invite) = create_room(&stack, &owner).await;
    // A member with no socket: their queue fills and stays full.
    let absent = stack.guest().await;
    join(&stack, &absent, &invite).await;
    let (present, mut present_socket) = stack.client().await;
    join(&stack, &present, &invite).await;
    for n in 0..6 {
        say(&mut owner_socket, room, &format!("message {n}")).await;
    }
    // Every send is accepted and everyone with room gets every message.
    let mut accepted = 0;
    let mut seen = 0;
    while accepted < 6 || seen < 6 {
        match owner_socket.next_frame().await.unwrap() {
            ServerFrame::Accepted { .. } => accepted += 1,
            ServerFrame::RoomMessage { .. } => seen += 1,
            ServerFrame::Error { code, .. } => panic!("the room is blocked: {code}"),
            _ => {}
        }
    }
    assert_eq!(room_messages(&mut present_socket, 6).await.len(), 6);
    // The full member reads the rest from the history.
    let (status, history) = call(
        &stack,
        "GET",
        &format!("/api/rooms/{room}/messages"),
        &absent.token,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(history["messages"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn one_user_flooding_a_room_is_held_to_the_rate_limit_and_others_get_in() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (owner, _) = stack.client().await;
    let (room, _) = create_room(&stack, &owner).await;
    // Eight sockets of the owner post to the room as fast as they can.
    let mut sockets = Vec::new();
    for _ in 0..8 {
        sockets.push(
            ChatClient::connect(stack.addr(), &owner.token)
                .await
                .unwrap(),
        );
    }
    let flood = sockets.into_iter().map(|mut socket| async move {
        for n in 0..120 {
            let frame = json!({"type": "send", "id": MessageId::new_random(), "text": format!("{n}"), "room_id": room});
            if socket.send_text(&frame.to_string()).await.is_err() {
                break;
            }
        }
        let mut limited = 0;
        while let Ok(Ok(frame)) = tokio::time::timeout(Duration::from_secs(2), socket.next_frame()).await {
            if matches!(frame, ServerFrame::Error { code: ErrorCode::RateLimited, .. }) {
                limited += 1;
            }
        }
        limited
    });
    // Meanwhile a new user gets in and is answered.
    let newcomer = async {
        let (_, mut client) = stack.client().await;
        client.send_accepted("let me in").await.unwrap();
    };
    let (limited, ()) = tokio::join!(futures_util::future::join_all(flood), newcomer);
    let limited: usize = limited.into_iter().sum();
    assert!(limited > 0, "the flood met the rate limit");
    // Each socket got at most its burst (40) through before refusals.
    let (status, history) = call(
        &stack,
        "GET",
        &format!("/api/rooms/{room}/messages?limit=500"),
        &owner.token,
        Value::Null,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let stored = history["messages"].as_array().unwrap().len();
    assert!(stored < 8 * 120, "{stored} stored: the limit held");
}

#[tokio::test]
async fn a_room_message_id_belongs_to_its_sender() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (owner, mut owner_socket) = stack.client().await;
    let (room, invite) = create_room(&stack, &owner).await;
    let (other, mut other_socket) = stack.client().await;
    join(&stack, &other, &invite).await;
    let id = say(&mut owner_socket, room, "mine").await;
    room_messages(&mut other_socket, 1).await;
    // The other member reuses the id with other words.
    let reuse = json!({"type": "send", "id": id, "text": "forged", "room_id": room});
    other_socket.send_text(&reuse.to_string()).await.unwrap();
    match other_socket.next_frame().await.unwrap() {
        ServerFrame::Error { code, .. } => assert_eq!(code, ErrorCode::IdTaken),
        frame => panic!("expected id_taken, got {frame:?}"),
    }
    // Nobody got a message "from" them with that id.
    let stray = owner_socket.frames_before_pong().await.unwrap();
    assert!(
        !stray
            .iter()
            .any(|f| matches!(f, ServerFrame::RoomMessage { text, .. } if text == "forged")),
        "{stray:?}"
    );
}

#[tokio::test]
async fn nul_in_a_room_name_or_text_is_bad_input() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (owner, mut socket) = stack.client().await;
    let (status, body) = call(
        &stack,
        "POST",
        "/api/rooms",
        &owner.token,
        json!({"name": "a\u{0}b"}),
    )
    .await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::BAD_REQUEST, "invalid_text")
    );
    let (room, _) = create_room(&stack, &owner).await;
    let bad =
        json!({"type": "send", "id": MessageId::new_random(), "text": "a\u{0}b", "room_id": room});
    socket.send_text(&bad.to_string()).await.unwrap();
    match socket.next_frame().await.unwrap() {
        ServerFrame::Error {
            code, retryable, ..
        } => assert_eq!((code, retryable), (ErrorCode::InvalidText, false)),
        frame => panic!("expected invalid_text, got {frame:?}"),
    }
}

// --- 5. Guest sessions.

#[tokio::test]
async fn guest_sessions_are_rate_limited_per_address_and_cost_the_broker_nothing() {
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.rate_limit.guest_burst = 3;
        s.rate_limit.guest_per_minute = 1;
    })
    .await;
    let http = reqwest::Client::new();
    let mut made = Vec::new();
    let mut last = None;
    for _ in 0..4 {
        let response = http
            .post(format!("http://{}/api/session", stack.addr()))
            .send()
            .await
            .unwrap();
        if response.status() == StatusCode::OK {
            let body: Value = response.json().await.unwrap();
            made.push(body["user_id"].as_str().unwrap().to_owned());
        } else {
            last = Some((response.status(), response.json::<Value>().await.unwrap()));
        }
    }
    assert_eq!(made.len(), 3);
    let (status, body) = last.unwrap();
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited")
    );
    // No reply queue exists for a guest that has not connected or sent.
    let admin = broker::lapin::Connection::connect(&stack.url, Default::default())
        .await
        .unwrap();
    let names = protocol::topology::Names::new(&stack.prefix);
    let user = protocol::UserId::parse(made[0].clone()).unwrap();
    let channel = admin.create_channel().await.unwrap();
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(
            names.reply_queue(&user).as_str().into(),
            passive,
            Default::default(),
        )
        .await;
    assert!(declared.is_err(), "no queue for a new guest");
    let _ = admin.close(200, "done".into()).await;
}

// --- 7, 10, 11. Frames, tokens, the HTTP contract.

#[tokio::test]
async fn a_websocket_ping_flood_is_closed_like_any_flood() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (_, mut client) = stack.client().await;
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    for _ in 0..200 {
        let ping = Frame::ping(vec![0u8; 8]);
        if client.send_raw_frame(ping).await.is_err() {
            break;
        }
    }
    assert_eq!(client.closed().await.unwrap(), Closed::Code(1008));
}

#[tokio::test]
async fn a_websocket_protocol_violation_is_closed_with_1002() {
    let stack = TestStack::start(0, Mock::default()).await;
    let guest = stack.guest().await;
    let mut raw = MuteSocket::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    // An unmasked text frame: clients must mask every frame.
    raw.send_raw(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    assert_eq!(raw.close_code().await.unwrap(), 1002);
}

#[tokio::test]
async fn a_token_that_never_expires_does_not_crash_its_socket() {
    let stack = TestStack::start(1, Mock::default()).await;
    let tokens = gateway::auth::Tokens::new(&stack.gateway_settings().auth);
    let user = protocol::UserId::parse("forever").unwrap();
    stack.track(&user);
    let token = tokens
        .issue(&user, Duration::from_secs(u64::MAX / 4))
        .unwrap();
    let mut client = ChatClient::connect(stack.addr(), &token).await.unwrap();
    client.ask("still here").await.unwrap();
}

#[tokio::test]
async fn every_http_error_is_json_with_a_documented_code() {
    let stack = TestStack::start(0, Mock::default()).await;
    let guest = stack.guest().await;
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{}{path}", stack.addr());
    let room = RoomId::new_random();
    let cases = [
        (
            http.post(url("/api/rooms"))
                .bearer_auth(&guest.token)
                .body("{"),
            400,
            "invalid_json",
        ),
        (
            http.post(url("/api/rooms"))
                .bearer_auth(&guest.token)
                .body("[]"),
            400,
            "invalid_frame",
        ),
        (
            http.post(url("/api/rooms/join"))
                .bearer_auth(&guest.token)
                .body(r#"{"x":1}"#),
            400,
            "invalid_frame",
        ),
        (
            http.get(url(&format!("/api/rooms/{room}/messages?limit=501")))
                .bearer_auth(&guest.token),
            400,
            "invalid_query",
        ),
        (
            http.get(url(&format!("/api/rooms/{room}/messages?after=-1")))
                .bearer_auth(&guest.token),
            400,
            "invalid_query",
        ),
        (
            http.get(url("/api/nowhere")).bearer_auth(&guest.token),
            404,
            "not_found",
        ),
        (
            http.post(url("/api/messages/x/y/z"))
                .bearer_auth(&guest.token),
            404,
            "not_found",
        ),
        (
            http.delete(url("/api/messages")).bearer_auth(&guest.token),
            405,
            "method_not_allowed",
        ),
        (
            http.get(url("/api/session"))
                .header("authorization", "bearer nope"),
            401,
            "invalid_token",
        ),
    ];
    for (request, status, code) in cases {
        let response = request.send().await.unwrap();
        let got = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!((got, error_code(&body)), (status, code), "{body}");
    }
}

#[tokio::test]
async fn tokens_not_yet_valid_are_refused_and_the_bearer_scheme_is_case_insensitive() {
    let stack = TestStack::start(0, Mock::default()).await;
    let guest = stack.guest().await;
    let http = reqwest::Client::new();
    let check = http
        .get(format!("http://{}/api/session", stack.addr()))
        .header("authorization", format!("BEARER {}", guest.token))
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), StatusCode::OK);
    use jsonwebtoken::{EncodingKey, Header};
    let secret = stack.gateway_settings().auth.jwt_secret;
    let now = gateway::auth::now_secs();
    let early = jsonwebtoken::encode(
        &Header::default(),
        &json!({"sub": "early", "iss": "switchboard", "exp": now + 3600, "nbf": now + 600}),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let refused = http
        .get(format!("http://{}/api/session", stack.addr()))
        .bearer_auth(early)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_page_from_the_same_host_but_another_scheme_may_not_open_a_socket() {
    let stack = TestStack::start(0, Mock::default()).await;
    let guest = stack.guest().await;
    let host = stack.addr().to_string();
    let origin = format!("https://{host}");
    let refused = ChatClient::connect_with(stack.addr(), Some(&guest.token), |headers| {
        headers.insert("origin", origin.parse().unwrap());
    })
    .await;
    assert!(
        refused.is_err(),
        "https page, http gateway without a trusted proxy"
    );
    let same = format!("http://{host}");
    ChatClient::connect_with(stack.addr(), Some(&guest.token), |headers| {
        headers.insert("origin", same.parse().unwrap());
    })
    .await
    .unwrap();
}
