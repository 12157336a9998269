use crate::stack::{Mock, TestStack, expected_answer, wait_counters};
use protocol::answer::ShownAnswer;
use std::collections::BTreeSet;
use testkit::ChatClient;

#[tokio::test]
async fn a_reply_produced_while_the_user_is_offline_arrives_when_they_reconnect() {
    // No responder yet: the request waits in chat_queue.
    let mut stack = TestStack::start(0, Mock::default()).await;
    let (guest, mut client) = stack.client().await;
    let id = client.send_accepted("are you there?").await.unwrap();
    client.close().await.unwrap();
    testkit::wait_until("the gateway has no socket of the user", || {
        stack.gateway().online_users() == 0
    })
    .await;

    // The answer is produced entirely while the user is offline.
    let mut counters = stack.start_responder(Mock::default()).await;
    wait_counters(&mut counters, "the request is answered", |c| {
        c.answered == 1
    })
    .await;

    let mut client = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    assert_eq!(client.user_id, guest.user_id);
    let chunks = client.collect_reply(id).await.unwrap();
    let seqs: Vec<u32> = chunks.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (0..chunks.len() as u32).collect::<Vec<_>>());
    let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(text, expected_answer("are you there?"));
}

#[tokio::test]
async fn every_socket_of_a_user_on_a_gateway_gets_every_reply() {
    let stack = TestStack::start(1, Mock::default()).await;
    let (guest, mut tab1) = stack.client().await;
    let mut tab2 = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    let id = tab1.send_accepted("two tabs").await.unwrap();
    let in_tab1 = tab1.collect_reply(id).await.unwrap();
    let in_tab2 = tab2.collect_reply(id).await.unwrap();
    assert_eq!(in_tab1, in_tab2);
}

#[tokio::test]
async fn a_responder_killed_mid_answer_leaves_no_request_unanswered() {
    // A slow responder: one word per chunk, 100 ms apart.
    let slow = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 100,
        prefetch: 4,
    };
    let mut stack = TestStack::start(1, slow).await;
    let (_, mut client) = stack.client().await;
    let id = client.send_accepted("please survive this").await.unwrap();

    // Wait until the answer is visibly under way, then kill its responder.
    let first = client.next_frame().await.unwrap();
    assert!(
        matches!(&first, protocol::ws::ServerFrame::Reply(c) if c.in_reply_to == id && !c.r#final),
        "{first:?}"
    );
    let victim = stack.responders.remove(0);
    let killed_counters = victim.counters();
    victim.kill().await;
    assert_eq!(
        killed_counters.borrow().answered,
        0,
        "killed before it could finish"
    );

    // Another responder (same answer, no delay) takes the requeued request
    // and answers it in full, as a later attempt.
    let fast = Mock {
        chunk_delay_ms: 0,
        ..slow
    };
    let mut counters = stack.start_responder(fast).await;
    let rest = client.collect_reply(id).await.unwrap();
    wait_counters(&mut counters, "the survivor answered", |c| c.answered == 1).await;

    let protocol::ws::ServerFrame::Reply(first) = first else {
        unreachable!()
    };
    let mut shown = ShownAnswer::default();
    shown.add(&first);
    for chunk in &rest {
        shown.add(chunk);
        assert_eq!(chunk.id, first.id, "one reply id across both responders");
    }
    assert!(
        rest.iter().any(|c| c.attempt > first.attempt),
        "the survivor's answer is a later attempt: {rest:?}"
    );
    assert_eq!(
        shown.restarts(),
        1,
        "what the first attempt showed was replaced"
    );
    assert!(shown.is_complete());
    assert_eq!(shown.text(), expected_answer("please survive this"));
}

#[tokio::test]
async fn a_stopping_responder_finishes_the_answer_in_flight() {
    let slow = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 20,
        prefetch: 4,
    };
    let mut stack = TestStack::start(1, slow).await;
    let (_, mut client) = stack.client().await;
    let id = client
        .send_accepted("finish what you started")
        .await
        .unwrap();
    let first = client.next_frame().await.unwrap();
    assert!(
        matches!(first, protocol::ws::ServerFrame::Reply(_)),
        "{first:?}"
    );

    // Grace (2 s) is far longer than the rest of the answer (~0.2 s).
    let responder = stack.responders.remove(0);
    let counters = responder.counters();
    responder.stop().await;
    assert_eq!(
        counters.borrow().answered,
        1,
        "answered before stop returned"
    );
    let rest = client.collect_reply(id).await.unwrap();
    assert!(rest.last().unwrap().r#final);
}

#[tokio::test]
async fn an_answer_outlasting_the_grace_period_is_answered_by_another_responder() {
    let mut stack = TestStack::start(0, Mock::default()).await;
    let glacial = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 1_000,
        prefetch: 4,
    };
    let mut settings = stack.responder_settings(glacial);
    settings.worker.shutdown_grace_ms = 100;
    let responder = responder::Responder::build(settings).await.unwrap().spawn();
    testkit::wait_until("the responder is connected", || responder.is_ready()).await;
    let counters = responder.counters();

    let (_, mut client) = stack.client().await;
    let id = client.send_accepted("too slow to finish").await.unwrap();
    let first = client.next_frame().await.unwrap();
    assert!(
        matches!(first, protocol::ws::ServerFrame::Reply(_)),
        "{first:?}"
    );
    responder.stop().await;
    assert_eq!(counters.borrow().answered, 0, "abandoned, not acked");

    let mut survivor = stack
        .start_responder(Mock {
            chunk_delay_ms: 0,
            ..glacial
        })
        .await;
    let rest = client.collect_reply(id).await.unwrap();
    assert!(rest.last().unwrap().r#final);
    wait_counters(&mut survivor, "the survivor answered", |c| c.answered == 1).await;
}

#[tokio::test]
async fn both_services_recover_from_a_lost_broker_connection() {
    let stack = TestStack::start(1, Mock::default()).await;
    let (_, mut client) = stack.client().await;
    let before = client.send_accepted("before").await.unwrap();
    let before_chunks = client.collect_reply(before).await.unwrap();

    let gateway_generation = stack.gateway().broker().current().unwrap().generation();
    let responder_generation = stack.responders[0].broker().current().unwrap().generation();
    stack.gateway().broker().kill_connection().await;
    stack.responders[0].broker().kill_connection().await;
    let reconnected = |broker: &broker::Broker, before: u64| {
        broker.current().is_some_and(|s| s.generation() > before)
    };
    testkit::wait_until("the gateway reconnected", || {
        reconnected(stack.gateway().broker(), gateway_generation)
    })
    .await;
    testkit::wait_until("the responder reconnected", || {
        reconnected(stack.responders[0].broker(), responder_generation)
    })
    .await;

    // The same socket keeps working: sends are accepted at once, and the
    // reply arrives because the gateway re-subscribed the user's queue.
    // Chunks of "before" whose acks the kill overtook may come again: the
    // same chunks (at least once on the wire), which a client drops.
    let id = client.send_message("after").await.unwrap();
    let mut accepted = false;
    let mut last_status = None;
    let mut after = Vec::new();
    while after
        .last()
        .is_none_or(|c: &protocol::ws::ReplyFrame| !c.r#final)
    {
        match client.next_frame().await.unwrap() {
            protocol::ws::ServerFrame::Accepted { id: got, .. } if got == id => accepted = true,
            protocol::ws::ServerFrame::Reply(c) if c.in_reply_to == id => after.push(c),
            protocol::ws::ServerFrame::Reply(c) if c.in_reply_to == before => {
                assert!(before_chunks.contains(&c), "a repeat is identical: {c:?}");
            }
            protocol::ws::ServerFrame::Status { broker } => last_status = Some(broker),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(accepted);
    // The socket may have been told of the outage; if so, also of the return.
    assert_ne!(last_status, Some(protocol::ws::LinkState::Down));
    let seqs: Vec<u32> = after.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, (0..after.len() as u32).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_socket_dropped_mid_answer_loses_no_chunk() {
    // Many small chunks, streamed while the socket goes away.
    let chatty = Mock {
        words_per_chunk: 1,
        chunk_delay_ms: 2,
        prefetch: 4,
    };
    let stack = TestStack::start(1, chatty).await;
    let (guest, mut client) = stack.client().await;
    let text = "word ".repeat(60);
    let id = client.send_accepted(&text).await.unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < 5 {
        if let protocol::ws::ServerFrame::Reply(chunk) = client.next_frame().await.unwrap() {
            seen.insert(chunk.seq);
        }
    }
    drop(client); // gone without a close handshake, chunks still in flight

    let mut client = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    let rest = client.collect_reply(id).await.unwrap();
    let last = rest.last().unwrap().seq;
    seen.extend(rest.iter().map(|c| c.seq));
    assert_eq!(
        seen,
        (0..=last).collect::<BTreeSet<_>>(),
        "every chunk reached a socket"
    );
}

#[tokio::test]
async fn chunks_a_client_never_acknowledged_are_delivered_again() {
    let stack = TestStack::start(1, Mock::default()).await;
    let guest = stack.guest().await;
    let mut forgetful = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap()
        .without_acks();
    let id = forgetful.send_accepted("remember me").await.unwrap();
    let first = forgetful.collect_reply(id).await.unwrap();
    forgetful.close().await.unwrap();

    let mut client = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    let again = client.collect_reply(id).await.unwrap();
    assert_eq!(again, first, "the same chunks, delivered again");
    // Acknowledged now: a third connection gets nothing more.
    client.close().await.unwrap();
    let mut third = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    assert!(third.frames_before_pong().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_request_that_always_fails_is_dead_lettered_and_its_user_told() {
    let stack = TestStack::start(1, Mock::default()).await;
    let mut counters = stack.responders[0].counters();
    let (_, mut client) = stack.client().await;
    let poison = client
        .send_accepted(&format!("please {}", crate::stack::POISON))
        .await
        .unwrap();
    let healthy = client.send_accepted("and a normal one").await.unwrap();

    let mut failure = None;
    let mut healthy_done = false;
    while failure.is_none() || !healthy_done {
        match client.next_frame().await.unwrap() {
            protocol::ws::ServerFrame::Reply(c) if c.in_reply_to == poison => {
                assert!(c.r#final && c.seq == protocol::amqp::ERROR_SEQ, "{c:?}");
                failure = c.error;
            }
            protocol::ws::ServerFrame::Reply(c) if c.in_reply_to == healthy => {
                healthy_done |= c.r#final;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(failure.unwrap().code, protocol::ErrorCode::RequestFailed);
    wait_counters(&mut counters, "the user was told once", |c| {
        c.dead_letters_notified == 1
    })
    .await;
    let tried = counters.borrow().failed;
    let limit = u64::from(
        stack
            .responder_settings(Mock::default())
            .amqp
            .delivery_limit,
    );
    assert!(
        (limit..=limit + 1).contains(&tried),
        "tried {tried} times, limit {limit}"
    );
    assert_eq!(counters.borrow().answered, 1, "only the healthy request");
}

#[tokio::test]
async fn a_user_with_tabs_on_two_gateways_sees_every_reply_in_both() {
    let stack = TestStack::start(1, Mock::default()).await;
    let second = stack.another_gateway().await;
    let guest = stack.guest().await;
    let mut tab_a = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    let mut tab_b = ChatClient::connect(second.addr(), &guest.token)
        .await
        .unwrap();
    // Both gateways set up the user and learned of each other (a tab that
    // opens mid-answer sees only the chunks after it joined).
    testkit::wait_until("the gateways know of each other", || {
        stack.gateway().relays(&guest.user_id) && second.relays(&guest.user_id)
    })
    .await;

    // Sent from the tab on the second gateway: whichever gateway holds the
    // user's queue delivers to its tab and relays to the other.
    let from_b = tab_b.send_accepted("from the second tab").await.unwrap();
    let in_b = tab_b.collect_reply(from_b).await.unwrap();
    let in_a = tab_a.collect_reply(from_b).await.unwrap();
    assert_eq!(in_a, in_b, "both tabs show the same answer");

    // And the other way round.
    let from_a = tab_a.send_accepted("from the first tab").await.unwrap();
    let in_a = tab_a.collect_reply(from_a).await.unwrap();
    let in_b = tab_b.collect_reply(from_a).await.unwrap();
    assert_eq!(in_a, in_b);

    // The first tab goes: the second gateway takes the queue over.
    tab_a.close().await.unwrap();
    testkit::wait_until("the first gateway let the user go", || {
        stack.gateway().online_users() == 0
    })
    .await;
    // Its `left` tells the second that the user is on it alone now.
    testkit::wait_until("the second gateway stops relaying", || {
        !second.relays(&guest.user_id)
    })
    .await;
    let alone = tab_b.send_accepted("now alone").await.unwrap();
    let chunks = tab_b.collect_reply(alone).await.unwrap();
    let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(text, expected_answer("now alone"));
    assert!(
        tab_b.frames_before_pong().await.unwrap().is_empty(),
        "nothing twice"
    );
    second.stop().await.unwrap();
}

#[tokio::test]
async fn tabs_opened_at_the_same_moment_on_two_gateways_both_get_every_reply() {
    // Both gateways may declare the queue before either consumes, so
    // neither sees the other at set-up: their announcements must do it.
    let stack = TestStack::start(1, Mock::default()).await;
    let second = stack.another_gateway().await;
    let guest = stack.guest().await;
    let (tab_a, tab_b) = tokio::join!(
        ChatClient::connect(stack.addr(), &guest.token),
        ChatClient::connect(second.addr(), &guest.token)
    );
    let (mut tab_a, mut tab_b) = (tab_a.unwrap(), tab_b.unwrap());
    testkit::wait_until("the gateways know of each other", || {
        stack.gateway().relays(&guest.user_id) && second.relays(&guest.user_id)
    })
    .await;
    for n in 0..3 {
        let text = format!("question {n}");
        let id = tab_a.send_accepted(&text).await.unwrap();
        let in_a = tab_a.collect_reply(id).await.unwrap();
        let in_b = tab_b.collect_reply(id).await.unwrap();
        assert_eq!(in_a, in_b, "both tabs show the same answer");
    }
    second.stop().await.unwrap();
}
