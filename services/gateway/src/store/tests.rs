//! The SQLite store on its own (the PostgreSQL one is exercised by the
//! pipeline tests against a real server).

use super::*;

fn temp_store() -> (Store, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("sb-store-{}", RoomId::new_random()));
    let store = Store::open(&format!("sqlite:{}/rooms.sqlite3", dir.display()), 1).unwrap();
    (store, dir)
}

fn user(name: &str) -> UserId {
    UserId::parse(name).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_get_one_gapless_order_and_resends_keep_their_number() {
    let (store, dir) = temp_store();
    let store = std::sync::Arc::new(store);
    let room = store.create("Team", &user("alice")).await.unwrap();
    store.join(room, &user("bob")).await.unwrap();
    let mut sends = Vec::new();
    for n in 0..20u64 {
        let store = store.clone();
        sends.push(tokio::spawn(async move {
            let id = MessageId::new_random();
            let who = user(if n % 2 == 0 { "alice" } else { "bob" });
            let first = store
                .append(room, id, &who, &format!("m{n}"), n)
                .await
                .unwrap();
            let again = store.append(room, id, &who, "changed", n).await.unwrap();
            assert_eq!(again, first, "a resend keeps its number and first text");
            let stolen = store.append(room, id, &user("mallory"), "x", n).await;
            assert!(matches!(stolen, Err(StoreError::IdTaken)));
            first.seq
        }));
    }
    let mut seqs = Vec::new();
    for send in sends {
        seqs.push(send.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    let history = store.history(room, 10, 5).await.unwrap();
    assert_eq!(
        history.iter().map(|m| m.seq).collect::<Vec<_>>(),
        [11, 12, 13, 14, 15]
    );
    let (name, members) = store.room(room).await.unwrap();
    assert_eq!(
        (name.as_str(), members),
        ("Team", vec![user("alice"), user("bob")])
    );
    assert!(store.leave(room, &user("bob")).await.unwrap());
    assert!(!store.leave(room, &user("bob")).await.unwrap());
    assert!(!store.is_member(room, &user("bob")).await.unwrap());
    assert_eq!(store.rooms_of(&user("bob")).await.unwrap(), []);
    assert!(matches!(
        store
            .append(
                RoomId::new_random(),
                MessageId::new_random(),
                &user("alice"),
                "?",
                0
            )
            .await,
        Err(StoreError::NoSuchRoom)
    ));
    drop(store);
    std::fs::remove_dir_all(dir).unwrap();
}
