//! What every consumer needs: a life that survives channel errors and
//! reconnects, setup that cannot hang, and a stop that leaves nothing
//! unacked.

use crate::connection::backoff;
use crate::{Broker, BrokerError, Session};
use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Consumer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long stopping a consumer may hold up its caller; the rest of the
/// clean-up goes on in the background.
const STOP_BOUND: Duration = Duration::from_secs(2);

/// A consumer that ran this long before failing starts its backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(30);

/// Runs `consume` on the broker's live session, again and again, until it
/// returns `Ok` (it was asked to stop) or `cancel` fires. A failure while the
/// connection is still up (a channel error, a consumer cancelled by the
/// broker) is retried on the same session after a growing delay; a lost
/// connection waits for the next session.
pub async fn run_consumer<F, Fut>(
    broker: &Broker,
    cancel: &CancellationToken,
    what: &str,
    mut consume: F,
) where
    F: FnMut(Session) -> Fut,
    Fut: Future<Output = Result<(), BrokerError>>,
{
    let mut skip_generation = None;
    let mut failures: u32 = 0;
    loop {
        let Some(session) = broker.next_session(skip_generation, cancel).await else {
            return;
        };
        let started = Instant::now();
        let error = match consume(session.clone()).await {
            Ok(()) => return,
            Err(e) => e,
        };
        if started.elapsed() >= HEALTHY_RUN {
            failures = 0;
        }
        if session.is_live() {
            failures = failures.saturating_add(1);
            let delay = backoff(broker.settings(), failures);
            warn!(consumer = what, error = %error, retry_in = ?delay, "consumer failed; retrying");
            skip_generation = None;
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        } else {
            debug!(consumer = what, error = %error, "consumer ended with its connection");
            skip_generation = Some(session.generation());
        }
    }
}

/// How a consumer's life on one session ended: `Ok` when asked to stop.
pub type Served = Result<(), BrokerError>;

/// A consumer that lives as long as its service: [`keep_consuming`] runs
/// its `serve` on every broker session.
pub trait Serve: Send + Sync + 'static {
    /// What it consumes, for logs.
    const WHAT: &'static str;

    /// Consumes on `session` until `stop` fires (`Ok`) or the consumer
    /// fails (a channel error, a lost connection).
    fn serve(
        self: Arc<Self>,
        session: Session,
        stop: &CancellationToken,
    ) -> impl Future<Output = Served> + Send;
}

/// Spawns `consumer`, kept alive across channel errors and reconnects
/// ([`run_consumer`]) until `stop` fires.
pub fn keep_consuming<S: Serve>(
    broker: &Broker,
    consumer: Arc<S>,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let (broker, stop) = (broker.clone(), stop.clone());
    tokio::spawn(async move {
        run_consumer(&broker, &stop, S::WHAT, |session| {
            consumer.clone().serve(session, &stop)
        })
        .await;
    })
}

/// Starts a manual-ack consumer on `queue` with at most `prefetch` unacked
/// deliveries. Returns its tag (`<label>-<random>`, unique so several
/// consumers can share a channel) and its delivery stream.
pub async fn start(
    channel: &Channel,
    queue: &str,
    label: &str,
    prefetch: u16,
) -> Result<(String, Consumer), BrokerError> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    consume(channel, queue, label).await
}

/// Starts a manual-ack consumer on `queue` under the channel's prefetch
/// (see [`Session::consumer_channel`]); returns its tag and delivery stream.
pub async fn consume(
    channel: &Channel,
    queue: &str,
    label: &str,
) -> Result<(String, Consumer), BrokerError> {
    let tag = format!("{label}-{}", protocol::MessageId::new_random());
    let consumer = channel
        .basic_consume(
            queue.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok((tag, consumer))
}

/// Where a stream consumer starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamStart {
    /// At this offset (the one after the last read: nothing twice).
    Offset(u64),
    /// At what was written since this instant (seconds since the Unix
    /// epoch; RabbitMQ finds the first chunk of that second).
    Since(u64),
}

/// Starts a consumer of `stream` (a RabbitMQ stream) from `start`, with at
/// most `prefetch` unacknowledged deliveries (a stream consumer needs
/// acknowledgements only to get more: nothing is removed). Each delivery
/// carries its offset ([`stream_offset`]).
pub async fn consume_stream(
    channel: &Channel,
    stream: &str,
    label: &str,
    prefetch: u16,
    start: StreamStart,
) -> Result<(String, Consumer), BrokerError> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let tag = format!("{label}-{}", protocol::MessageId::new_random());
    let offset = match start {
        StreamStart::Offset(offset) => {
            AMQPValue::LongLongInt(i64::try_from(offset).unwrap_or(i64::MAX))
        }
        StreamStart::Since(secs) => AMQPValue::Timestamp(secs),
    };
    let mut arguments = FieldTable::default();
    arguments.insert(ShortString::from(STREAM_OFFSET), offset);
    let consumer = channel
        .basic_consume(
            stream.into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            arguments,
        )
        .await?;
    Ok((tag, consumer))
}

/// The argument and header naming a position in a stream.
const STREAM_OFFSET: &str = "x-stream-offset";

/// The offset of a delivery from a stream.
pub fn stream_offset(delivery: &lapin::message::Delivery) -> Option<u64> {
    let headers = delivery.properties.headers().as_ref()?;
    match headers.inner().get(STREAM_OFFSET)? {
        AMQPValue::LongLongInt(offset) => u64::try_from(*offset).ok(),
        AMQPValue::LongUInt(offset) => Some(u64::from(*offset)),
        AMQPValue::LongInt(offset) => u64::try_from(*offset).ok(),
        _ => None,
    }
}

/// [`consume`] on a channel other consumers share, within `limit`. A
/// consume RabbitMQ answers after the limit is not left dangling (its
/// deliveries would wait for a reader that never comes): a background task
/// waits for it and cancels it, requeueing what it prefetched. Unlike
/// [`bounded_setup`], it never closes the shared channel.
pub async fn consume_bounded(
    channel: &Channel,
    queue: &str,
    label: &str,
    limit: Duration,
) -> Result<(String, Consumer), BrokerError> {
    let tag = format!("{label}-{}", protocol::MessageId::new_random());
    let consume = {
        let (channel, queue, tag) = (channel.clone(), queue.to_owned(), tag.clone());
        async move {
            channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
        }
    };
    let mut consume = Box::pin(consume);
    match timeout(limit, &mut consume).await {
        Ok(consumer) => Ok((tag, consumer?)),
        Err(_) => {
            let channel = channel.clone();
            let late_tag = tag.clone();
            tokio::spawn(async move {
                // Bounded by the connection: a dead one fails it.
                if let Ok(consumer) = consume.await {
                    debug!(tag = late_tag, "a consume answered too late; cancelling it");
                    cancel_and_requeue(&channel, &late_tag, consumer).await;
                }
            });
            Err(BrokerError::Timeout(limit))
        }
    }
}

/// Serves `queue` on a channel of its own until `stop` fires: starts a
/// manual-ack consumer (set-up bounded by the session's set-up timeout), hands every
/// delivery to `handle` together with the channel (keep a clone while the
/// delivery is unsettled: dropping the last one closes the channel), and on
/// stop cancels the consumer and requeues what was prefetched.
pub async fn serve_queue<F, Fut>(
    session: &Session,
    queue: &str,
    label: &str,
    prefetch: u16,
    stop: &CancellationToken,
    mut handle: F,
) -> Result<(), BrokerError>
where
    F: FnMut(lapin::message::Delivery, Channel) -> Fut,
    Fut: Future<Output = ()>,
{
    let channel = session.open_channel().await?;
    let setup = start(&channel, queue, label, prefetch);
    let limit = session.setup_timeout();
    let (tag, mut deliveries) = bounded_setup(&channel, limit, setup).await?;
    debug!(queue, prefetch, "consuming");
    deliver_until(&mut deliveries, stop, |delivery| {
        let handled = handle(delivery, channel.clone());
        async move {
            handled.await;
            Ok(())
        }
    })
    .await?;
    cancel_and_requeue(&channel, &tag, deliveries).await;
    Ok(())
}

/// Hands every delivery of `deliveries` to `handle`, in order, until `stop`
/// fires (`Ok`: the caller stops the consumer its own way) or the consumer
/// fails (its stream errs or ends: the channel or connection is gone).
/// Every consumer loop of the services is this one.
pub async fn deliver_until<F, Fut>(
    deliveries: &mut Consumer,
    stop: &CancellationToken,
    mut handle: F,
) -> Result<(), BrokerError>
where
    F: FnMut(lapin::message::Delivery) -> Fut,
    Fut: Future<Output = Result<(), BrokerError>>,
{
    loop {
        // The waiting and the handling are apart, so an idle consumer's
        // future holds neither the handler's state nor a delivery: it lives
        // as long as its user is connected.
        let next = tokio::select! {
            biased;
            _ = stop.cancelled() => return Ok(()),
            next = deliveries.next() => next,
        };
        let delivery = match next {
            Some(Ok(delivery)) => delivery,
            Some(Err(e)) => return Err(e.into()),
            None => return Err(BrokerError::ConsumerEnded),
        };
        handle(delivery).await?;
    }
}

/// Runs consumer setup (declare, qos, consume) within `limit`. On timeout the
/// channel is closed: a `basic.consume` the broker answers after we gave up
/// would otherwise leave a consumer whose deliveries nobody reads.
pub async fn bounded_setup<T>(
    channel: &Channel,
    limit: Duration,
    setup: impl Future<Output = Result<T, BrokerError>>,
) -> Result<T, BrokerError> {
    match timeout(limit, setup).await {
        Ok(result) => result,
        Err(_) => {
            let _ = timeout(
                STOP_BOUND,
                channel.close(200, "consumer setup timed out".into()),
            )
            .await;
            Err(BrokerError::Timeout(limit))
        }
    }
}

/// Cancels the consumer `tag` on `channel` and hands back every delivery it
/// had prefetched but nobody processed, so none stays unacked on a channel
/// that lives on (shared channels outlive their consumers). Waits at most a
/// short bound; if the broker is slow, the clean-up finishes in the
/// background (it ends at the latest when the connection does).
pub async fn cancel_and_requeue(channel: &Channel, tag: &str, mut consumer: Consumer) {
    let channel = channel.clone();
    let tag = tag.to_owned();
    let cleanup = tokio::spawn(async move {
        let cancel = channel.basic_cancel(tag.as_str().into(), BasicCancelOptions::default());
        if let Err(e) = cancel.await {
            // The channel is closed: the broker has requeued everything.
            debug!(tag, error = %e, "basic.cancel failed");
            return;
        }
        let requeue = BasicNackOptions {
            requeue: true,
            ..BasicNackOptions::default()
        };
        // lapin ends the stream after cancel-ok, behind what was buffered.
        while let Some(Ok(delivery)) = consumer.next().await {
            if let Err(e) = delivery.nack(requeue).await {
                warn!(tag, error = %e, "could not requeue a prefetched delivery");
                return;
            }
        }
    });
    if timeout(STOP_BOUND, cleanup).await.is_err() {
        warn!("stopping a consumer is taking long; finishing in the background");
    }
}
