//! A model that never writes the same answer twice (the `openai` engine
//! against a fake that samples random words at a model's pace), and
//! responders SIGKILLed mid-answer again and again: every answer shown must
//! be exactly one attempt's whole text, and none may be lost.

use crate::model::Behaviour;
use crate::processes::Stack;
use crate::scenarios::{MESSAGES, ONE_AT_A_TIME, Scenario, USERS, assert_kept, behaviour};
use std::sync::Arc;
use std::time::Duration;
use testkit::fake_model::FakeModel;

/// Responders killed in one run, each after this many more answers.
const KILLS: usize = 8;
const ANSWERS_BETWEEN_KILLS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_model_killed_mid_answer_again_and_again_shows_one_attempt_whole() {
    let _turn = ONE_AT_A_TIME.lock().await;
    platform::telemetry::init_for_tests();
    // A word every 8 ms, 8 to 20 words: answers stream for 64–160 ms.
    let model = Arc::new(FakeModel::start_random(Duration::from_millis(8)).await);
    let url = testkit::amqp_url().await;
    let mut stack = Stack::new("random-model", &url, &testkit::unique_prefix(), 1);
    stack.model_url = Some(model.base_url());
    let mut run = Scenario::on(stack, 2).await;
    let answers = model.clone();
    let sampling = Behaviour {
        // Right: one of the answers the model began to this message, whole.
        right_answer: Arc::new(move |text, shown| {
            answers.answers_to(text).iter().any(|a| a == shown)
        }),
        ..behaviour()
    };
    let (tally, _) = run
        .run_healing(
            sampling,
            async |s: &mut Scenario| s.kill_a_responder(),
            async |s: &mut Scenario| {
                for _ in 1..KILLS {
                    s.until_resolved_more(ANSWERS_BETWEEN_KILLS).await;
                    if s.all_resolved() {
                        break;
                    }
                    s.kill_a_responder();
                }
            },
        )
        .await;
    drop(run);
    assert_kept(
        "a random model, responders SIGKILLed again and again",
        &tally,
        0,
    );
    let begun = model.answers_begun();
    println!(
        "[faults] random model: {begun} answers begun for {} messages; {} restarted on screen, {} late chunks of older attempts not shown",
        USERS * MESSAGES,
        tally.restarted,
        tally.stale_dropped
    );
    assert!(
        begun > (USERS * MESSAGES) as u64,
        "some answers were begun again after a kill"
    );
    assert!(
        tally.restarted > 0,
        "some kills landed mid-answer, after a chunk was shown"
    );
}
