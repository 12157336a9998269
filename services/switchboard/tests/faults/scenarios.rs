//! The scenarios. Each: 4 users × 60 messages, a fault in the middle, every
//! message accounted for at the end.

use crate::model::{Behaviour, Tally, run_users};
use crate::processes::{Service, Stack, restart_broker};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use testkit::Cleanup;
use tokio::sync::Mutex;

/// Scenarios share the broker (and one restarts it): one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

const USERS: usize = 4;
const MESSAGES: usize = 60;
const DEADLINE: Duration = Duration::from_secs(120);

fn behaviour() -> Behaviour {
    Behaviour {
        messages: MESSAGES,
        // ~3 s of traffic: long enough for a fault to land mid-run.
        pace: Duration::from_millis(50),
        drop_one_in: None,
        poison_one_in: None,
    }
}

struct Scenario {
    stack: Stack,
    gateway: Option<Service>,
    responders: Vec<Service>,
    resolved: Arc<AtomicUsize>,
    // Last: the broker objects go after the processes.
    cleanup: Cleanup,
}

impl Scenario {
    async fn start(name: &str, responders: usize) -> Self {
        platform::telemetry::init_for_tests();
        let url = testkit::amqp_url().await;
        let prefix = testkit::unique_prefix();
        let stack = Stack::new(name, &url, &prefix);
        let gateway = stack.gateway();
        stack.gateway_ready().await;
        let responders = (0..responders).map(|_| stack.responder()).collect();
        Self {
            cleanup: Cleanup::new(&url, &prefix),
            stack,
            gateway: Some(gateway),
            responders,
            resolved: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs the users in the background; `strike` runs once a third of the
    /// messages are resolved.
    async fn run(&mut self, behaviour: Behaviour, strike: impl AsyncFnOnce(&mut Self)) -> Tally {
        let mut guests = Vec::new();
        for _ in 0..USERS {
            let guest = testkit::guest_session(self.stack.addr).await.unwrap();
            self.cleanup.track_user(&guest.user_id);
            guests.push(guest);
        }
        let users = tokio::spawn(run_users(
            self.stack.addr,
            guests,
            behaviour,
            self.resolved.clone(),
            DEADLINE,
        ));
        let third = USERS * MESSAGES / 3;
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.resolved.load(Ordering::Relaxed) < third && !users.is_finished() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the run never got a third of the way"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        strike(self).await;
        // A fault that lands after the traffic is over proves nothing.
        let after = self.resolved.load(Ordering::Relaxed);
        assert!(
            after < USERS * MESSAGES,
            "the fault struck after the run was over ({after} of {} resolved)",
            USERS * MESSAGES
        );
        users.await.unwrap()
    }
}

/// The promise: every request accepted and accounted for, nothing lost,
/// nothing missing, nothing shown twice, every answer right.
fn assert_kept(scenario: &str, tally: &Tally, poisoned: usize) {
    tally.print(scenario);
    assert_eq!(
        tally.requests,
        USERS * MESSAGES,
        "{scenario}: every message was sent"
    );
    assert_eq!(tally.lost, 0, "{scenario}: lost requests");
    assert_eq!(tally.chunks_missing, 0, "{scenario}: missing chunks");
    assert_eq!(tally.shown_twice, 0, "{scenario}: answers shown twice");
    assert_eq!(tally.wrong_answers, 0, "{scenario}: wrong answers");
    assert_eq!(
        tally.accepted, tally.requests,
        "{scenario}: every message accepted"
    );
    assert_eq!(
        tally.failed_and_told, poisoned,
        "{scenario}: poison requests reported"
    );
    assert_eq!(tally.answered + tally.failed_and_told, tally.requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_killed_mid_stream_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::start("responder-sigkill", 2).await;
    let tally = s
        .run(behaviour(), async |s: &mut Scenario| {
            s.responders.remove(0).kill();
            s.responders.push(s.stack.responder());
        })
        .await;
    assert_kept("responder SIGKILL mid-stream", &tally, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_and_restarted_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::start("gateway-sigkill", 2).await;
    let tally = s
        .run(behaviour(), async |s: &mut Scenario| {
            s.gateway.take().unwrap().kill();
            s.gateway = Some(s.stack.gateway());
        })
        .await;
    assert!(tally.reconnects >= USERS, "every user had to reconnect");
    assert_kept("gateway SIGKILL + restart", &tally, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    if std::env::var("FAULTS_BROKER_CONTROL").as_deref() != Ok("rabbitmqctl") {
        println!(
            "[faults] broker restart: SKIPPED — set FAULTS_BROKER_CONTROL=rabbitmqctl to let this test \
             restart the local RabbitMQ (.ci/run does)"
        );
        return;
    }
    let mut s = Scenario::start("broker-restart", 2).await;
    let tally = s
        .run(behaviour(), async |_: &mut Scenario| {
            tokio::task::spawn_blocking(restart_broker).await.unwrap();
        })
        .await;
    assert_kept("RabbitMQ restart", &tally, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_dropped_at_random_lose_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::start("socket-drops", 2).await;
    let dropping = Behaviour {
        drop_one_in: Some(25),
        ..behaviour()
    };
    let tally = s.run(dropping, async |_: &mut Scenario| {}).await;
    assert!(tally.reconnects > USERS, "sockets did drop");
    assert_kept("random socket drops", &tally, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_requests_are_reported_and_the_rest_answered() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::start("poison", 2).await;
    let poisoned = Behaviour {
        poison_one_in: Some(10),
        ..behaviour()
    };
    let tally = s.run(poisoned, async |_: &mut Scenario| {}).await;
    assert_kept("poison requests mixed in", &tally, USERS * MESSAGES / 10);
}
