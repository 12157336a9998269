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
pub static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

pub const USERS: usize = 4;
pub const MESSAGES: usize = 60;
const DEADLINE: Duration = Duration::from_secs(120);

pub fn behaviour() -> Behaviour {
    Behaviour {
        messages: MESSAGES,
        // ~3 s of traffic: long enough for a fault to land mid-run.
        pace: Duration::from_millis(50),
        drop_one_in: None,
        poison_one_in: None,
        right_answer: Arc::new(crate::model::the_template),
    }
}

pub struct Scenario {
    pub stack: Stack,
    gateways: Vec<Option<Service>>,
    responders: Vec<Service>,
    resolved: Arc<AtomicUsize>,
    // Last: the broker objects go after the processes.
    cleanup: Cleanup,
}

impl Scenario {
    async fn start(name: &str, responders: usize) -> Self {
        Self::start_with(name, 1, responders).await
    }

    async fn start_with(name: &str, gateways: usize, responders: usize) -> Self {
        platform::telemetry::init_for_tests();
        let url = testkit::amqp_url().await;
        let prefix = testkit::unique_prefix();
        Self::on(Stack::new(name, &url, &prefix, gateways), responders).await
    }

    /// Starts `stack`'s gateways and `responders` responders.
    pub async fn on(stack: Stack, responders: usize) -> Self {
        let (gateways, url, prefix) = (stack.addrs.len(), stack.url.clone(), stack.prefix.clone());
        let mut started = Vec::new();
        for n in 0..gateways {
            started.push(Some(stack.gateway(n)));
            stack.gateway_ready(n).await;
        }
        let responders = (0..responders).map(|_| stack.responder()).collect();
        Self {
            cleanup: Cleanup::new(&url, &prefix),
            stack,
            gateways: started,
            responders,
            resolved: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Runs the users in the background; `strike` runs once a third of the
    /// messages are resolved.
    async fn run(&mut self, behaviour: Behaviour, strike: impl AsyncFnOnce(&mut Self)) -> Tally {
        self.run_healing(behaviour, strike, async |_: &mut Self| {})
            .await
            .0
    }

    /// [`Scenario::run`], then `heal` right after the strike while the users
    /// go on; also returns when the fault struck.
    pub async fn run_healing(
        &mut self,
        behaviour: Behaviour,
        strike: impl AsyncFnOnce(&mut Self),
        heal: impl AsyncFnOnce(&mut Self),
    ) -> (Tally, tokio::time::Instant) {
        let mut guests = Vec::new();
        for _ in 0..USERS {
            let guest = testkit::guest_session(self.stack.addrs[0]).await.unwrap();
            self.cleanup.track_user(&guest.user_id);
            guests.push(guest);
        }
        let users = tokio::spawn(run_users(
            self.stack.addrs.clone(),
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
        let struck = tokio::time::Instant::now();
        strike(self).await;
        // A fault that lands after the traffic is over proves nothing.
        let after = self.resolved.load(Ordering::Relaxed);
        assert!(
            after < USERS * MESSAGES,
            "the fault struck after the run was over ({after} of {} resolved)",
            USERS * MESSAGES
        );
        heal(self).await;
        (users.await.unwrap(), struck)
    }
}

impl Scenario {
    /// SIGKILLs a responder, mid-answer as likely as not, and starts
    /// another in its place.
    pub fn kill_a_responder(&mut self) {
        self.responders.remove(0).kill();
        self.responders.push(self.stack.responder());
    }

    /// Waits until `more` further messages are resolved (or all are).
    pub async fn until_resolved_more(&self, more: usize) {
        let target = (self.resolved.load(Ordering::Relaxed) + more).min(USERS * MESSAGES);
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while self.resolved.load(Ordering::Relaxed) < target {
            assert!(
                tokio::time::Instant::now() < deadline,
                "answers stopped coming"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Whether every message is resolved.
    pub fn all_resolved(&self) -> bool {
        self.resolved.load(Ordering::Relaxed) >= USERS * MESSAGES
    }
}

/// The promise: every request accepted and accounted for, nothing lost,
/// nothing missing, nothing shown twice, every answer right.
pub fn assert_kept(scenario: &str, tally: &Tally, poisoned: usize) {
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
        .run(behaviour(), async |s: &mut Scenario| s.kill_a_responder())
        .await;
    assert_kept("responder SIGKILL mid-stream", &tally, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_and_restarted_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::start("gateway-sigkill", 2).await;
    let tally = s
        .run(behaviour(), async |s: &mut Scenario| {
            s.gateways[0].take().unwrap().kill();
            s.gateways[0] = Some(s.stack.gateway(0));
        })
        .await;
    assert!(tally.reconnects >= USERS, "every user had to reconnect");
    assert_kept("gateway SIGKILL + restart", &tally, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(faults_broker_control),
    ignore = "needs FAULTS_BROKER_CONTROL=rabbitmqctl: it restarts the local RabbitMQ (.ci/run sets it)"
)]
async fn a_broker_restart_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
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

// --- Scale-out: several gateways and responders, one RabbitMQ.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_spread_over_gateways_get_every_reply_in_order() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::start_with("spread", 3, 2).await;
    let tally = s.run(behaviour(), async |_: &mut Scenario| {}).await;
    assert_kept("users spread over 3 gateways", &tally, 0);
    assert_eq!(tally.out_of_order, 0, "every answer arrived in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_gateways_users_move_to_another_and_lose_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::start_with("gateway-lost", 2, 2).await;
    let tally = s
        .run(behaviour(), async |s: &mut Scenario| {
            // Gone for good: its users must find the other gateway.
            s.gateways[0].take().unwrap().kill();
        })
        .await;
    assert!(
        tally.reconnects >= USERS / 2,
        "the lost gateway's users reconnected elsewhere"
    );
    assert_kept("one of 2 gateways lost", &tally, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_every_gateway_loses_nothing() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut s = Scenario::start_with("rolling-restart", 3, 2).await;
    let slower = Behaviour {
        // Traffic outlasts three graceful restarts.
        pace: Duration::from_millis(120),
        ..behaviour()
    };
    let tally = s
        .run(slower, async |s: &mut Scenario| {
            for n in 0..s.gateways.len() {
                let gateway = s.gateways[n].take().unwrap();
                tokio::task::spawn_blocking(move || gateway.terminate())
                    .await
                    .unwrap();
                s.gateways[n] = Some(s.stack.gateway(n));
                s.stack.gateway_ready(n).await;
            }
        })
        .await;
    assert!(
        tally.reconnects >= USERS,
        "every user was moved at least once"
    );
    assert_kept("rolling restart of 3 gateways", &tally, 0);
}

/// Benchmark, not a test: throughput with slow replies (one 50 ms chunk
/// per answer, prefetch 8 per responder) for 1, 2 and 4 responders. Run:
/// `cargo test -p switchboard --test faults -- --ignored --nocapture responder_scaling`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark; figures go to docs/performance.md"]
async fn responder_scaling() {
    let _turn = ONE_AT_A_TIME.lock().await;
    const SCALE_USERS: usize = 8;
    const PER_USER: usize = 100;
    let mut rows = Vec::new();
    for responders in [1, 2, 4] {
        let mut s = Scenario::start_with(&format!("scaling-{responders}"), 1, 0).await;
        s.stack.chunk_delay_ms = 50;
        s.stack.words_per_chunk = 1_000;
        s.responders = (0..responders).map(|_| s.stack.responder()).collect();
        let mut guests = Vec::new();
        for _ in 0..SCALE_USERS {
            let guest = testkit::guest_session(s.stack.addrs[0]).await.unwrap();
            s.cleanup.track_user(&guest.user_id);
            guests.push(guest);
        }
        let flat_out = Behaviour {
            messages: PER_USER,
            pace: Duration::from_millis(1),
            ..behaviour()
        };
        let started = tokio::time::Instant::now();
        let tally = run_users(
            s.stack.addrs.clone(),
            guests,
            flat_out,
            s.resolved.clone(),
            DEADLINE,
        )
        .await;
        let seconds = started.elapsed().as_secs_f64();
        assert_eq!(
            tally.answered,
            SCALE_USERS * PER_USER,
            "every request answered"
        );
        rows.push((responders, tally.answered as f64 / seconds));
    }
    println!("[scaling] responders | answers/s | × one responder");
    for (responders, rate) in &rows {
        println!(
            "[scaling] {responders} | {rate:.0} | {:.2}",
            rate / rows[0].1
        );
    }
}
