//! Hostile and careless clients: each gets a defined answer, the gateway
//! never falls over, and other users are not held up.

use crate::stack::{Mock, TestStack, expected_answer};
use protocol::ErrorCode;
use protocol::ws::ServerFrame;
use std::time::Duration;
use testkit::{ChatClient, Closed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, header};
use tokio_tungstenite::tungstenite::{
    self,
    protocol::frame::Frame,
    protocol::frame::coding::{Data, OpCode},
};

/// The refusal of an upgrade: HTTP status and error code.
async fn refused(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    headers: &[(header::HeaderName, &str)],
) -> (u16, String) {
    let outcome = ChatClient::connect_with(addr, token, |map: &mut HeaderMap| {
        for (name, value) in headers {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
    })
    .await;
    let error = outcome.expect_err("the upgrade must be refused");
    match error.downcast::<tungstenite::Error>() {
        Ok(tungstenite::Error::Http(response)) => {
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            (
                response.status().as_u16(),
                body["code"].as_str().unwrap().to_owned(),
            )
        }
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn a_page_from_a_foreign_origin_cannot_open_a_socket() {
    let stack = TestStack::start(0, Mock::default()).await;
    let guest = stack.guest().await;
    let addr = stack.addr();
    let (status, code) = refused(
        addr,
        Some(&guest.token),
        &[(header::ORIGIN, "http://evil.example")],
    )
    .await;
    assert_eq!((status, code.as_str()), (403, "origin_not_allowed"));
    // The gateway's own origin and the allowed dev origin may.
    let own = format!("http://{addr}");
    for origin in [own.as_str(), "http://localhost:5173"] {
        let connected = ChatClient::connect_with(addr, Some(&guest.token), |h| {
            h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        })
        .await;
        assert!(connected.is_ok(), "{origin}: {connected:?}");
    }
}

#[tokio::test]
async fn the_token_may_come_in_a_header_or_a_subprotocol_and_is_never_echoed() {
    let stack = TestStack::start(0, Mock::default()).await;
    let guest = stack.guest().await;
    let (client, _) = ChatClient::connect_with(stack.addr(), None, |h| {
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {}", guest.token)).unwrap(),
        );
    })
    .await
    .unwrap();
    assert_eq!(client.user_id, guest.user_id);

    let offered = format!("switchboard, bearer.{}", guest.token);
    let (client, response) = ChatClient::connect_with(stack.addr(), None, |h| {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_str(&offered).unwrap(),
        );
    })
    .await
    .unwrap();
    assert_eq!(client.user_id, guest.user_id);
    let selected = response
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .unwrap();
    assert_eq!(
        selected, "switchboard",
        "the server picks the protocol, never the token"
    );
}

#[tokio::test]
async fn sessions_can_be_checked_and_guest_sessions_turned_off() {
    let stack = TestStack::start(0, Mock::default()).await;
    let guest = stack.guest().await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/session", stack.addr());
    let check = http
        .get(&url)
        .bearer_auth(&guest.token)
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 200);
    let body: serde_json::Value = check.json().await.unwrap();
    assert_eq!(body["user_id"], guest.user_id.as_str());
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let forged = http.get(&url).bearer_auth("x.y.z").send().await.unwrap();
    assert_eq!(forged.status(), 401);

    let closed = TestStack::start_with(0, Mock::default(), |s| s.auth.guest_sessions = false).await;
    let refused = http
        .post(format!("http://{}/api/session", closed.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "guest_sessions_disabled");
}

#[tokio::test]
async fn sockets_are_capped_per_user_and_per_gateway() {
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.websocket.max_sockets_per_user = 2;
        s.websocket.max_sockets = 3;
    })
    .await;
    let alice = stack.guest().await;
    let first = ChatClient::connect(stack.addr(), &alice.token)
        .await
        .unwrap();
    let _second = ChatClient::connect(stack.addr(), &alice.token)
        .await
        .unwrap();
    assert_eq!(
        refused(stack.addr(), Some(&alice.token), &[]).await,
        (429, "too_many_sockets".into())
    );
    let bob = stack.guest().await;
    let _bob = ChatClient::connect(stack.addr(), &bob.token).await.unwrap();
    let carol = stack.guest().await;
    assert_eq!(
        refused(stack.addr(), Some(&carol.token), &[]).await,
        (503, "gateway_full".into())
    );
    // A closed socket frees its slot.
    first.close().await.unwrap();
    testkit::wait_until("alice's first socket is gone", || {
        stack.gateway().open_sockets() == 2
    })
    .await;
    ChatClient::connect(stack.addr(), &alice.token)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_flood_is_rate_limited_then_closed_while_others_are_served() {
    let stack = TestStack::start_with(1, Mock::default(), |s| {
        s.rate_limit.burst = 5;
        s.rate_limit.per_second = 1;
        s.rate_limit.abuse_threshold = 200;
    })
    .await;
    let (_, mut flooder) = stack.client().await;
    let (_, mut bystander) = stack.client().await;

    for _ in 0..5 {
        flooder.send_text(r#"{"type":"ping"}"#).await.unwrap();
    }
    for _ in 0..5 {
        assert_eq!(flooder.next_frame().await.unwrap(), ServerFrame::Pong);
    }
    flooder.send_text(r#"{"type":"ping"}"#).await.unwrap();
    let limited = flooder.next_frame().await.unwrap();
    assert!(
        matches!(
            limited,
            ServerFrame::Error {
                code: ErrorCode::RateLimited,
                retryable: true,
                ..
            }
        ),
        "{limited:?}"
    );

    // Keep flooding; meanwhile another user's round trip completes.
    let flood = tokio::spawn(async move {
        for _ in 0..2_000 {
            if flooder.send_text(r#"{"type":"ping"}"#).await.is_err() {
                break;
            }
        }
        flooder.closed().await.unwrap()
    });
    let id = bystander.send_accepted("still served?").await.unwrap();
    let chunks = bystander.collect_reply(id).await.unwrap();
    let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(text, expected_answer("still served?"));
    assert_eq!(
        flood.await.unwrap(),
        Closed::Code(1008),
        "sustained abuse is closed"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_as_idle() {
    // Never answers the gateway's pings: a half-open connection.
    let stack = TestStack::start_with(0, Mock::default(), |s| {
        s.websocket.ping_interval_ms = 50;
        s.websocket.idle_timeout_ms = 300;
    })
    .await;
    let guest = stack.guest().await;
    let mut silent = testkit::MuteSocket::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    assert_eq!(silent.close_code().await.unwrap(), 4002);
    testkit::wait_until("the gateway dropped the silent socket", || {
        stack.gateway().open_sockets() == 0
    })
    .await;
}

#[tokio::test]
async fn a_socket_is_closed_when_its_token_expires() {
    let stack = TestStack::start(0, Mock::default()).await;
    let tokens = gateway::auth::Tokens::new(&stack.gateway_settings().auth);
    let user = protocol::UserId::new_guest();
    stack.track(&user);
    let token = tokens.issue(&user, Duration::from_secs(1)).unwrap();
    let mut client = ChatClient::connect(stack.addr(), &token).await.unwrap();
    assert_eq!(client.closed().await.unwrap(), Closed::Code(4001));
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_is_closed_with_1007() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (_, mut client) = stack.client().await;
    let frame = Frame::message(vec![0x7b, 0xff, 0xfe, 0x7d], OpCode::Data(Data::Text), true);
    client.send_raw_frame(frame).await.unwrap();
    assert_eq!(client.closed().await.unwrap(), Closed::Code(1007));
}

#[tokio::test]
async fn compression_is_never_negotiated() {
    let stack = TestStack::start(0, Mock::default()).await;
    let guest = stack.guest().await;
    let (_, response) = ChatClient::connect_with(stack.addr(), Some(&guest.token), |h| {
        h.insert(
            header::SEC_WEBSOCKET_EXTENSIONS,
            HeaderValue::from_static("permessage-deflate; client_max_window_bits"),
        );
    })
    .await
    .unwrap();
    assert!(
        response
            .headers()
            .get(header::SEC_WEBSOCKET_EXTENSIONS)
            .is_none()
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let stack =
        TestStack::start_with(0, Mock::default(), |s| s.http.handshake_timeout_ms = 200).await;
    let mut tcp = tokio::net::TcpStream::connect(stack.addr()).await.unwrap();
    tcp.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(testkit::WAIT, tcp.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the gateway closed the connection");
}

#[tokio::test]
async fn deeply_nested_json_gets_invalid_json() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (_, mut client) = stack.client().await;
    client.send_text(&"[".repeat(60_000)).await.unwrap();
    let answer = client.next_frame().await.unwrap();
    assert!(
        matches!(
            answer,
            ServerFrame::Error {
                code: ErrorCode::InvalidJson,
                ..
            }
        ),
        "{answer:?}"
    );
    assert!(client.frames_before_pong().await.unwrap().is_empty());
}

#[tokio::test]
async fn malformed_amqp_bodies_are_dropped_by_both_services_without_harm() {
    use broker::lapin::BasicProperties;
    use broker::lapin::options::{BasicGetOptions, BasicPublishOptions};
    let stack = TestStack::start(1, Mock::default()).await;
    let mut counters = stack.responders[0].counters();
    let (guest, mut client) = stack.client().await;
    let names = protocol::topology::Names::new(&stack.prefix);
    let admin = broker::lapin::Connection::connect(&stack.url, Default::default())
        .await
        .unwrap();
    let channel = admin.create_channel().await.unwrap();
    let publish = |exchange: String, key: String, body: &'static [u8]| {
        let channel = channel.clone();
        async move {
            channel
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    // At the responder: garbage, and a body from a future schema.
    publish(String::new(), names.chat_queue(), b"\xff not json").await;
    publish(String::new(), names.chat_queue(), br#"{"v":99}"#).await;
    crate::stack::wait_counters(&mut counters, "both are rejected", |c| c.rejected == 2).await;
    // Quorum queues dead-letter asynchronously: wait for both to arrive.
    let mut dead = 0;
    let deadline = tokio::time::Instant::now() + testkit::WAIT;
    while dead < 2 && tokio::time::Instant::now() < deadline {
        let got = channel
            .basic_get(
                names.dead_letter_queue().as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        match got {
            Some(_) => dead += 1,
            None => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(
        dead, 2,
        "rejected requests are kept in the dead-letter queue"
    );

    // At the gateway: garbage, and another user's chunk, in this user's queue.
    let key = guest.user_id.to_string();
    publish(names.responses_exchange(), key.clone(), b"{]").await;
    let other = protocol::amqp::ChatRequest::new(
        protocol::MessageId::new_random(),
        protocol::UserId::new_guest(),
        "x".into(),
        0,
    );
    let foreign = protocol::amqp::encode(&protocol::amqp::ReplyChunk::answering(
        &other,
        0,
        "secret".into(),
        true,
    ));
    channel
        .basic_publish(
            names.responses_exchange().into(),
            key.as_str().into(),
            BasicPublishOptions::default(),
            &foreign,
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    // Nothing of that reaches the socket, and the pipeline still works.
    let id = client.send_accepted("after the garbage").await.unwrap();
    let chunks = client.collect_reply(id).await.unwrap();
    assert!(chunks.last().unwrap().r#final);
    assert!(client.frames_before_pong().await.unwrap().is_empty());
    let _ = admin.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_client_too_slow_to_read_is_disconnected_and_loses_nothing() {
    // ~8 MB of answers (200 KB each) to a client that never reads: its receive
    // window stays small, the gateway's writes time out, the socket is dropped.
    let mut stack = TestStack::start_with(0, Mock::default(), |s| {
        s.websocket.send_timeout_ms = 300;
        // Forty slow answers in flight for one user: more than a user may
        // usually have waiting.
        s.messages.max_pending_per_user = 64;
    })
    .await;
    let one_at_a_time = Mock {
        prefetch: 1,
        chunk_delay_ms: 20,
        ..Mock::default()
    };
    let mut settings = stack.responder_settings(one_at_a_time);
    settings.mock.template = "{text}".repeat(50);
    settings.mock.words_per_chunk = 1_000_000;
    let responder = responder::Responder::build(settings).await.unwrap().spawn();
    testkit::wait_until("the responder is connected", || responder.is_ready()).await;
    stack.responders.push(responder);

    let guest = stack.guest().await;
    let mut sluggard = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    let (_, mut bystander) = stack.client().await;
    let text = "x".repeat(4_000);
    let ids: Vec<protocol::MessageId> =
        (0..40).map(|_| protocol::MessageId::new_random()).collect();
    let send = |id: protocol::MessageId| {
        protocol::ws::ClientFrame::Send(protocol::ws::Message {
            id,
            text: text.clone(),
            context: Vec::new(),
            room_id: None,
        })
        .to_json()
    };
    for id in &ids {
        // The gateway may drop the socket before all are sent.
        if sluggard.send_text(&send(*id)).await.is_err() {
            break;
        }
    }
    testkit::wait_until("the gateway dropped the slow socket", || {
        stack.gateway().open_sockets() == 1
    })
    .await;
    // Meanwhile another user is served as usual.
    bystander.ask("meanwhile").await.unwrap();
    drop(sluggard);

    // Back, the client re-sends what it never saw accepted, with the same
    // ids (as the web page does); every message ends up answered in full.
    let mut again = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    for id in &ids {
        again.send_text(&send(*id)).await.unwrap();
    }
    let mut answered = std::collections::HashSet::new();
    while answered.len() < ids.len() {
        match again.next_frame().await.unwrap() {
            ServerFrame::Reply(chunk) if chunk.r#final => {
                assert_eq!(chunk.text.len(), 200_000);
                answered.insert(chunk.in_reply_to);
            }
            ServerFrame::Reply(_) | ServerFrame::Accepted { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(answered, ids.iter().copied().collect());
}

#[tokio::test]
async fn the_page_is_served_with_its_headers_and_a_missing_file_is_not_the_page() {
    let dir = std::env::temp_dir().join(format!("sb-page-{}", protocol::MessageId::new_random()));
    std::fs::create_dir_all(dir.join("assets")).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>page</title>").unwrap();
    std::fs::write(dir.join("assets/app-1a2b3c.js"), "console.log(1)").unwrap();
    let web_dir = dir.to_str().unwrap().to_owned();
    let stack = TestStack::start_with(0, Mock::default(), |s| s.http.web_dir = web_dir).await;
    let get = async |path: &str| {
        reqwest::get(format!("http://{}{path}", stack.addr()))
            .await
            .unwrap()
    };
    let long = format!("/{}", "a".repeat(300));
    for (path, status, cache) in [
        ("/", 200, "no-cache"),
        ("/some/page/of/the/app", 200, "no-cache"),
        (
            "/assets/app-1a2b3c.js",
            200,
            "public, max-age=31536000, immutable",
        ),
        ("/assets/missing-9z.js", 404, "no-cache"),
        ("/assets/app-1a2b3c.js.map", 404, "no-cache"),
        (long.as_str(), 404, "no-cache"),
        (&format!("{long}.js"), 404, "no-cache"),
    ] {
        let response = get(path).await;
        assert_eq!(response.status().as_u16(), status, "{path}");
        let headers = response.headers();
        assert_eq!(headers["cache-control"], cache, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(headers["referrer-policy"], "no-referrer", "{path}");
        let body = response.text().await.unwrap();
        assert_eq!(
            status == 200 && !path.contains("assets"),
            body.contains("<title>page"),
            "{path}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
