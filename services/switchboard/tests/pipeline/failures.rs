use crate::stack::{Mock, TestStack};
use protocol::ErrorCode;
use protocol::ws::{LinkState, ServerFrame};
use testkit::{ChatClient, Closed};

fn error_code(frame: &ServerFrame) -> (ErrorCode, bool) {
    match frame {
        ServerFrame::Error {
            code, retryable, ..
        } => (*code, *retryable),
        other => panic!("expected an error frame, got {other:?}"),
    }
}

#[tokio::test]
async fn sending_while_the_broker_is_down_gets_a_clear_retryable_error() {
    let stack = TestStack::start(0, Mock::default()).await;
    // A gateway whose broker never answers: nothing listens on port 1.
    let mut settings = stack.gateway_settings();
    settings.amqp.url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
    let down = gateway::Gateway::build(settings).await.unwrap().spawn();
    let addr = down.addr();

    let http = reqwest::Client::new();
    let health = http
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "alive without a broker");
    let ready = http
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready without a broker");

    // Identity and sockets do not need the broker; sending does.
    let guest = testkit::guest_session(addr).await.unwrap();
    let mut client = ChatClient::connect(addr, &guest.token).await.unwrap();
    // Told at once that the broker is away…
    assert_eq!(
        client.next_frame().await.unwrap(),
        ServerFrame::Status {
            broker: LinkState::Down
        }
    );
    // …and a send regardless is refused as retryable.
    let id = client.send_message("anyone?").await.unwrap();
    let frame = client.next_frame().await.unwrap();
    assert_eq!(error_code(&frame), (ErrorCode::BrokerUnavailable, true));
    assert!(matches!(frame, ServerFrame::Error { id: Some(got), .. } if got == id));
    // The socket stays usable.
    assert!(client.frames_before_pong().await.unwrap().is_empty());
    down.stop().await.unwrap();
}

#[tokio::test]
async fn a_ready_gateway_says_so() {
    let stack = TestStack::start(0, Mock::default()).await;
    let ready = reqwest::get(format!("http://{}/readyz", stack.addr()))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
}

#[tokio::test]
async fn bad_frames_get_stable_error_codes_and_the_socket_stays_open() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (_, mut client) = stack.client().await;
    let id = "6f1c2a4e-9a55-4a8b-9d7e-3f0c1b2a3d4e";
    let long = "x".repeat(4001);
    let cases = [
        ("{oops".to_owned(), ErrorCode::InvalidJson),
        (r#"{"type":"dance"}"#.to_owned(), ErrorCode::UnknownType),
        (
            r#"{"type":"send","text":"hi"}"#.to_owned(),
            ErrorCode::InvalidFrame,
        ),
        (
            r#"{"type":"send","id":"nope","text":"hi"}"#.to_owned(),
            ErrorCode::InvalidId,
        ),
        (
            format!(r#"{{"type":"send","id":"{id}","text":"   "}}"#),
            ErrorCode::EmptyText,
        ),
        (
            format!(r#"{{"type":"send","id":"{id}","text":"{long}"}}"#),
            ErrorCode::TextTooLong,
        ),
    ];
    for (frame, code) in cases {
        client.send_text(&frame).await.unwrap();
        let answer = client.next_frame().await.unwrap();
        assert_eq!(error_code(&answer), (code, false), "{frame:.60}");
    }
    client.send_binary(vec![0, 159, 146, 150]).await.unwrap();
    let answer = client.next_frame().await.unwrap();
    assert_eq!(error_code(&answer), (ErrorCode::BinaryNotSupported, false));
    assert!(
        client.frames_before_pong().await.unwrap().is_empty(),
        "still serving"
    );
}

#[tokio::test]
async fn shutdown_closes_sockets_with_going_away() {
    let mut stack = TestStack::start(0, Mock::default()).await;
    let (_, mut client) = stack.client().await;
    let gateway = stack.gateway.take().unwrap();
    let stopping = tokio::spawn(gateway.stop());
    assert_eq!(client.closed().await.unwrap(), Closed::Code(1001));
    stopping.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_oversized_message_closes_the_socket_with_1009() {
    let stack = TestStack::start(0, Mock::default()).await;
    let (_, mut client) = stack.client().await;
    let huge = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(70_000));
    client.send_text(&huge).await.unwrap();
    assert_eq!(client.closed().await.unwrap(), Closed::Code(1009));
}

#[tokio::test]
async fn a_consumer_cancelled_by_the_broker_comes_back_without_a_reconnect() {
    use broker::lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
    let stack = TestStack::start(1, Mock::default()).await;
    let (guest, mut client) = stack.client().await;
    let generation = stack.gateway().broker().current().unwrap().generation();

    // An operator deletes the user's reply queue under its consumer.
    let admin = broker::lapin::Connection::connect(&stack.url, Default::default())
        .await
        .unwrap();
    let queue = protocol::topology::Names::new(&stack.prefix).reply_queue(&guest.user_id);
    let channel = admin.create_channel().await.unwrap();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();

    // The gateway re-declares and re-consumes it on the same connection.
    let mut consumers = 0;
    for _ in 0..400 {
        let probe = admin.create_channel().await.unwrap();
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        if let Ok(q) = probe
            .queue_declare(queue.as_str().into(), passive, Default::default())
            .await
        {
            consumers = q.consumer_count();
            let _ = probe.close(200, "probe".into()).await;
            if consumers == 1 {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(consumers, 1, "the reply queue is consumed again");
    let now = stack.gateway().broker().current().unwrap().generation();
    assert_eq!(now, generation, "no reconnect for a consumer-level failure");
    // The socket heard that its replies were out of reach, and back.
    let down = ServerFrame::Status {
        broker: LinkState::Down,
    };
    let up = ServerFrame::Status {
        broker: LinkState::Up,
    };
    assert_eq!(client.next_frame().await.unwrap(), down);
    assert_eq!(client.next_frame().await.unwrap(), up);

    client.ask("still there?").await.unwrap();
    let _ = admin.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_gateway_given_several_nodes_uses_the_one_that_answers() {
    // A cluster's first node is down: the gateway takes the next, says
    // which, and works as usual.
    let stack = TestStack::start_with(1, Mock::default(), |settings| {
        settings.amqp.url = format!("amqp://guest:guest@127.0.0.1:1/%2f,{}", settings.amqp.url);
        // Several nodes make quorum reply queues the default; here the one
        // node is a single broker, where they work too.
    })
    .await;
    let (_, mut client) = stack.client().await;
    client.ask("anyone there?").await.unwrap();
}

#[tokio::test]
async fn an_answer_for_a_reply_queue_that_expired_is_dropped_and_the_request_done() {
    use broker::lapin::options::BasicPublishOptions;
    let stack = TestStack::start(1, Mock::default()).await;
    let mut counters = stack.responders[0].counters();
    // A request of a user whose queue is gone (it expired after 30 minutes
    // without a socket; this one never had one).
    let request = protocol::amqp::ChatRequest::new(
        protocol::MessageId::new_random(),
        protocol::UserId::new_guest(),
        "hello?".into(),
        0,
    );
    let names = protocol::topology::Names::new(&stack.prefix);
    let admin = broker::lapin::Connection::connect(&stack.url, Default::default())
        .await
        .unwrap();
    let channel = admin.create_channel().await.unwrap();
    channel
        .basic_publish(
            "".into(),
            names.chat_queue().as_str().into(),
            BasicPublishOptions::default(),
            &protocol::amqp::encode(&request),
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // Nobody is left to read it: answered once, not retried, not failed.
    crate::stack::wait_counters(&mut counters, "the request is done", |c| c.answered == 1).await;
    assert_eq!(counters.borrow().failed, 0, "never handed back");
    let _ = admin.close(200, "done".into()).await;
}

#[tokio::test]
async fn a_dead_letter_notice_a_full_queue_refuses_is_settled_once_not_looped() {
    use broker::lapin::options::BasicPublishOptions;
    let stack = TestStack::start_with(1, Mock::default(), |s| s.reply_queue.max_length = 2).await;
    let mut counters = stack.responders[0].counters();
    let (guest, client) = stack.client().await;
    client.close().await.unwrap();
    let names = protocol::topology::Names::new(&stack.prefix);
    let admin = broker::lapin::Connection::connect(&stack.url, Default::default())
        .await
        .unwrap();
    let channel = admin.create_channel().await.unwrap();
    let publish = async |queue: String, body: Vec<u8>| {
        channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                BasicPublishOptions::default(),
                &body,
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    };
    // Someone filled the user's queue (co-members of a room can).
    for n in 0..2 {
        publish(
            names.reply_queue(&guest.user_id),
            format!("filler {n}").into_bytes(),
        )
        .await;
    }
    // A request of theirs that fails every attempt is dead-lettered; its
    // notice is refused by the full queue.
    let poison = protocol::amqp::ChatRequest::new(
        protocol::MessageId::new_random(),
        guest.user_id.clone(),
        format!("please {}", crate::stack::POISON),
        0,
    );
    publish(names.chat_queue(), protocol::amqp::encode(&poison)).await;
    crate::stack::wait_counters(&mut counters, "the notice is settled", |c| {
        c.dead_letters_notified == 1
    })
    .await;
    let _ = admin.close(200, "done".into()).await;
}
