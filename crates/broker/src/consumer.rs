//! Helpers for consumers.

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicNackOptions};
use lapin::{Channel, Consumer};
use std::time::Duration;
use tokio::time::{Instant, timeout_at};
use tracing::warn;

/// How long stopping a consumer may take before the rest is left to the
/// channel's closing (which requeues it too).
const STOP_BOUND: Duration = Duration::from_secs(2);

/// Cancels the consumer `tag` on `channel` and hands back every delivery it
/// had prefetched but nobody processed, so none stays unacked on a channel
/// that lives on (shared channels outlive their consumers).
pub async fn cancel_and_requeue(channel: &Channel, tag: &str, mut consumer: Consumer) {
    let deadline = Instant::now() + STOP_BOUND;
    let cancel = channel.basic_cancel(tag.into(), BasicCancelOptions::default());
    match timeout_at(deadline, cancel).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            warn!(tag, error = %e, "basic.cancel failed");
            return;
        }
        Err(_) => {
            warn!(tag, "basic.cancel timed out");
            return;
        }
    }
    let requeue = BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    };
    while let Ok(Some(Ok(delivery))) = timeout_at(deadline, consumer.next()).await {
        if let Err(e) = delivery.nack(requeue).await {
            warn!(tag, error = %e, "could not requeue a prefetched delivery");
            return;
        }
    }
}
