//! `TestStack`: a gateway and responders on a unique broker prefix.

use gateway::RunningGateway;
use responder::{Counters, RunningResponder};
use std::net::SocketAddr;
use testkit::{ChatClient, Cleanup, Guest};
use tokio::sync::watch;

/// A message containing this fails on every attempt (the mock's fail marker).
pub const POISON: &str = "[[poison]]";

/// Mock answer used by every test: short, and easy to check.
pub const TEMPLATE: &str = "Echo: {text} — that is all.";

pub fn expected_answer(text: &str) -> String {
    TEMPLATE.replace("{text}", text)
}

/// How the responders of a test answer.
#[derive(Debug, Clone, Copy)]
pub struct Mock {
    pub words_per_chunk: usize,
    pub chunk_delay_ms: u64,
    pub prefetch: u16,
}

impl Default for Mock {
    fn default() -> Self {
        Self {
            words_per_chunk: 2,
            chunk_delay_ms: 0,
            prefetch: 16,
        }
    }
}

pub struct TestStack {
    pub url: String,
    pub prefix: String,
    pub gateway: Option<RunningGateway>,
    pub responders: Vec<RunningResponder>,
    // Declared last: dropped after the services.
    cleanup: Cleanup,
}

impl TestStack {
    /// A gateway and `responders` responders answering with `mock`.
    pub async fn start(responders: usize, mock: Mock) -> Self {
        Self::start_with(responders, mock, |_| {}).await
    }

    /// Like [`TestStack::start`], with the gateway's settings adjusted.
    pub async fn start_with(
        responders: usize,
        mock: Mock,
        adjust: impl FnOnce(&mut gateway::Settings),
    ) -> Self {
        platform::telemetry::init_for_tests();
        let url = testkit::amqp_url().await;
        let prefix = testkit::unique_prefix();
        let mut stack = Self {
            cleanup: Cleanup::new(&url, &prefix),
            url,
            prefix,
            gateway: None,
            responders: Vec::new(),
        };
        stack.start_gateway_with(adjust).await;
        for _ in 0..responders {
            stack.start_responder(mock).await;
        }
        stack
    }

    pub fn gateway_settings(&self) -> gateway::Settings {
        let mut settings = gateway::Settings::load().expect("gateway defaults load");
        settings.http.listen = "127.0.0.1:0".into();
        settings.http.web_dir = "does-not-exist".into();
        settings.amqp.url = self.url.clone();
        settings.amqp.prefix = self.prefix.clone();
        settings.amqp.reconnect_initial_ms = 50;
        settings.amqp.reconnect_max_ms = 500;
        settings.reply_queue.expires_ms = 120_000;
        settings.rooms.database_url = testkit::database_url();
        // Every test's guests come from 127.0.0.1: the per-address limit on
        // guest sessions has its own test.
        settings.rate_limit.guest_burst = 100_000;
        settings
    }

    pub fn responder_settings(&self, mock: Mock) -> responder::Settings {
        let mut settings = responder::Settings::load().expect("responder defaults load");
        settings.health.listen.clear();
        settings.amqp.url = self.url.clone();
        settings.amqp.prefix = self.prefix.clone();
        settings.amqp.reconnect_initial_ms = 50;
        settings.amqp.reconnect_max_ms = 500;
        settings.mock.template = TEMPLATE.into();
        settings.mock.words_per_chunk = mock.words_per_chunk;
        settings.mock.chunk_delay_ms = mock.chunk_delay_ms;
        settings.mock.fail_marker = POISON.into();
        settings.worker.prefetch = mock.prefetch;
        settings.worker.shutdown_grace_ms = 2_000;
        settings
    }

    /// Starts the gateway, with adjusted settings, and waits until it is
    /// connected.
    pub async fn start_gateway_with(&mut self, adjust: impl FnOnce(&mut gateway::Settings)) {
        let mut settings = self.gateway_settings();
        adjust(&mut settings);
        let gateway = gateway::Gateway::build(settings)
            .await
            .expect("gateway builds")
            .spawn();
        testkit::wait_until("the gateway is connected to RabbitMQ", || {
            gateway.is_ready()
        })
        .await;
        self.gateway = Some(gateway);
    }

    /// Starts one more responder and waits until it is connected.
    pub async fn start_responder(&mut self, mock: Mock) -> watch::Receiver<Counters> {
        self.start_responder_with(mock, |_| {}).await
    }

    /// Starts one more responder with adjusted settings (another engine, say).
    pub async fn start_responder_with(
        &mut self,
        mock: Mock,
        adjust: impl FnOnce(&mut responder::Settings),
    ) -> watch::Receiver<Counters> {
        let mut settings = self.responder_settings(mock);
        adjust(&mut settings);
        let responder = responder::Responder::build(settings)
            .await
            .expect("responder builds")
            .spawn();
        testkit::wait_until("the responder is connected to RabbitMQ", || {
            responder.is_ready()
        })
        .await;
        let counters = responder.counters();
        self.responders.push(responder);
        counters
    }

    /// One more gateway on the same broker names (a second replica).
    pub async fn another_gateway(&self) -> RunningGateway {
        let gateway = gateway::Gateway::build(self.gateway_settings())
            .await
            .expect("gateway builds")
            .spawn();
        testkit::wait_until("the other gateway is connected", || gateway.is_ready()).await;
        gateway
    }

    pub fn gateway(&self) -> &RunningGateway {
        self.gateway.as_ref().expect("gateway running")
    }

    pub fn addr(&self) -> SocketAddr {
        self.gateway().addr()
    }

    /// A new guest whose reply queue is cleaned up after the test.
    pub async fn guest(&self) -> Guest {
        let guest = testkit::guest_session(self.addr())
            .await
            .expect("guest session");
        self.cleanup.track_user(&guest.user_id);
        guest
    }

    /// Deletes this user's reply queue after the test.
    pub fn track(&self, user: &protocol::UserId) {
        self.cleanup.track_user(user);
    }

    /// A new guest, connected.
    pub async fn client(&self) -> (Guest, ChatClient) {
        let guest = self.guest().await;
        let client = ChatClient::connect(self.addr(), &guest.token)
            .await
            .expect("client connects");
        (guest, client)
    }
}

/// Waits until `counters` satisfies `done`.
pub async fn wait_counters(
    counters: &mut watch::Receiver<Counters>,
    what: &str,
    done: impl FnMut(&Counters) -> bool,
) {
    tokio::time::timeout(testkit::WAIT, counters.wait_for(done))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what}"))
        .expect("responder counters alive");
}
