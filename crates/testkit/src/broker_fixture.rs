use broker::lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use broker::lapin::{Connection, ConnectionProperties};
use protocol::UserId;
use protocol::topology::Names;
use std::sync::Mutex;
use testcontainers::ContainerAsync;
use testcontainers::ImageExt;
use testcontainers::runners::AsyncRunner;
use testcontainers_modules::rabbitmq::RabbitMq;
use tokio::sync::OnceCell;

/// RabbitMQ image used when no `AMQP_URL` is given (pinned; management
/// variant so the UI is there when debugging a test run).
pub const RABBITMQ_IMAGE_TAG: &str = "4.1.4-management";

static CONTAINER: OnceCell<ContainerAsync<RabbitMq>> = OnceCell::const_new();

/// The broker for this test run.
pub async fn amqp_url() -> String {
    if let Ok(url) = std::env::var("AMQP_URL")
        && !url.is_empty()
    {
        return url;
    }
    let container = CONTAINER
        .get_or_try_init(|| RabbitMq::default().with_tag(RABBITMQ_IMAGE_TAG).start())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "no RabbitMQ for the tests: AMQP_URL is not set and testcontainers could not \
                 start rabbitmq:{RABBITMQ_IMAGE_TAG} ({e}). Either set \
                 AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f to use a running broker, \
                 or make a Docker engine available."
            )
        });
    let host = container.get_host().await.expect("container host");
    let port = container
        .get_host_port_ipv4(5672)
        .await
        .expect("container AMQP port");
    format!("amqp://guest:guest@{host}:{port}/%2f")
}

/// A prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("test-{}.", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Deletes a test's exchanges and queues when dropped — also when the test
/// panics — so a long-lived broker does not collect them.
#[derive(Debug)]
pub struct Cleanup {
    url: String,
    names: Names,
    users: Mutex<Vec<UserId>>,
}

impl Cleanup {
    pub fn new(url: &str, prefix: &str) -> Self {
        Self {
            url: url.to_owned(),
            names: Names::new(prefix),
            users: Mutex::new(Vec::new()),
        }
    }

    /// Also delete this user's reply queue at the end.
    pub fn track_user(&self, user: &UserId) {
        self.users.lock().expect("users lock").push(user.clone());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let url = self.url.clone();
        let names = self.names.clone();
        let users = std::mem::take(&mut *self.users.lock().unwrap_or_else(|e| e.into_inner()));
        // Drop cannot be async, and may run inside a runtime: use a thread
        // with a runtime of its own.
        let worker = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(delete_all(&url, &names, &users));
        });
        let _ = worker.join();
    }
}

async fn delete_all(url: &str, names: &Names, users: &[UserId]) {
    let Ok(connection) = Connection::connect(url, ConnectionProperties::default()).await else {
        return;
    };
    let mut queues: Vec<String> = users.iter().map(|u| names.reply_queue(u)).collect();
    queues.push(names.chat_queue());
    queues.push(names.dead_letter_queue());
    queues.push(names.dead_letter_notify_queue());
    queues.push(names.completions_stream());
    for queue in queues {
        // A failed delete closes the channel, so each gets its own.
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
    }
    for exchange in [
        names.responses_exchange(),
        names.dead_letter_exchange(),
        names.relay_exchange(),
        names.control_exchange(),
    ] {
        if let Ok(channel) = connection.create_channel().await {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
    }
    let _ = connection.close(200, "cleanup done".into()).await;
}
