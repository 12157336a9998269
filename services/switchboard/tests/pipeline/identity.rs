use crate::stack::{Mock, TestStack};
use protocol::ws::ServerFrame;
use std::collections::HashSet;
use testkit::ChatClient;
use tokio_tungstenite::tungstenite;

#[tokio::test]
async fn two_users_at_once_each_get_only_their_own_replies() {
    let stack = TestStack::start(
        1,
        Mock {
            chunk_delay_ms: 2,
            ..Mock::default()
        },
    )
    .await;
    let (_, mut alice) = stack.client().await;
    let (_, mut bob) = stack.client().await;
    assert_ne!(alice.user_id, bob.user_id);

    let mut alice_ids = HashSet::new();
    let mut bob_ids = HashSet::new();
    for n in 0..5 {
        alice_ids.insert(alice.send_message(&format!("alice {n}")).await.unwrap());
        bob_ids.insert(bob.send_message(&format!("bob {n}")).await.unwrap());
    }
    let (alice_seen, bob_seen) = tokio::join!(
        collect_finals(&mut alice, alice_ids.len()),
        collect_finals(&mut bob, bob_ids.len())
    );
    assert_eq!(alice_seen, alice_ids, "alice sees exactly her own answers");
    assert_eq!(bob_seen, bob_ids, "bob sees exactly his own answers");
    assert!(alice.frames_before_pong().await.unwrap().is_empty());
    assert!(bob.frames_before_pong().await.unwrap().is_empty());
}

/// Reads until `n` final chunks arrived; returns the ids every reply chunk
/// answered (so a foreign chunk shows up as a foreign id).
async fn collect_finals(client: &mut ChatClient, n: usize) -> HashSet<protocol::MessageId> {
    let mut answered = HashSet::new();
    let mut finals = 0;
    while finals < n {
        match client.next_frame().await.unwrap() {
            ServerFrame::Accepted { .. } => {}
            ServerFrame::Reply(chunk) => {
                answered.insert(chunk.in_reply_to);
                finals += usize::from(chunk.r#final);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    answered
}

#[tokio::test]
async fn the_socket_refuses_a_missing_or_invalid_token() {
    let stack = TestStack::start(0, Mock::default()).await;
    for (query, code) in [
        ("", "missing_token"),
        ("?token=", "missing_token"),
        ("?token=forged.jwt.x", "invalid_token"),
    ] {
        let url = format!("ws://{}/ws{query}", stack.addr());
        match tokio_tungstenite::connect_async(url).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{query}");
                let body: serde_json::Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["code"], code, "{query}");
            }
            other => panic!("{query}: expected a 401, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_token_from_another_secret_is_refused() {
    let stack = TestStack::start(0, Mock::default()).await;
    let mut other = stack.gateway_settings();
    other.auth.jwt_secret = "some other secret".into();
    let forger = gateway::auth::Tokens::new(&other.auth);
    let (_, token) = forger.issue_guest().unwrap();
    let error = ChatClient::connect(stack.addr(), &token).await.unwrap_err();
    assert!(error.to_string().contains("401"), "{error}");
}

#[tokio::test]
async fn the_same_token_is_the_same_user_across_connections() {
    let stack = TestStack::start(0, Mock::default()).await;
    let guest = stack.guest().await;
    let first = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    let second = ChatClient::connect(stack.addr(), &guest.token)
        .await
        .unwrap();
    assert_eq!(first.user_id, guest.user_id);
    assert_eq!(second.user_id, guest.user_id);
}
