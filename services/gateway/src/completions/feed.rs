//! The one consumer of the completions stream on this gateway: from
//! `catch_up` ago when the gateway starts, then — after a lost connection
//! or channel — from the offset after the last one read, so nothing is
//! read twice or missed (beyond what the stream's retention dropped).

use super::shared::Shared;
use broker::consumer::{self, StreamStart};
use broker::lapin::message::Delivery;
use broker::lapin::options::BasicAckOptions;
use broker::{BrokerError, Session};
use protocol::amqp::{self, COMPLETION_NOTE_TYPE, CompletionNote, REPLY_CHUNK_TYPE, ReplyChunk};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Deliveries in flight: the stream is read as fast as it is written.
const PREFETCH: u16 = 1000;
/// Acknowledged in batches (a stream consumer's acks only ask for more).
const ACK_EVERY: u64 = 100;

/// Reads the stream until `stop` fires.
pub(super) async fn run(shared: Arc<Shared>, stop: CancellationToken) {
    // The offset after the last delivery read; none yet.
    let next = Arc::new(AtomicU64::new(u64::MAX));
    let broker = shared.broker.clone();
    consumer::run_consumer(&broker, &stop, "completions", |session| {
        read(shared.clone(), session, next.clone(), stop.clone())
    })
    .await;
}

async fn read(
    shared: Arc<Shared>,
    session: Session,
    next: Arc<AtomicU64>,
    stop: CancellationToken,
) -> Result<(), BrokerError> {
    let start = match next.load(Ordering::Acquire) {
        u64::MAX => {
            let since = SystemTime::now() - shared.settings.catch_up;
            StreamStart::Since(since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
        }
        offset => StreamStart::Offset(offset),
    };
    let channel = session.open_channel().await?;
    let stream = shared.broker.names().completions_stream();
    let setup = consumer::consume_stream(&channel, &stream, "gateway-completions", PREFETCH, start);
    let (_tag, mut deliveries) =
        consumer::bounded_setup(&channel, session.setup_timeout(), setup).await?;
    debug!(?start, "reading the completions stream");
    let mut unacked = 0;
    let read = consumer::deliver_until(&mut deliveries, &stop, |delivery| {
        let tag = delivery.delivery_tag;
        take(&shared, &next, delivery);
        unacked += 1;
        let ack = (unacked >= ACK_EVERY).then(|| {
            unacked = 0;
            channel.clone()
        });
        async move {
            if let Some(channel) = ack {
                channel
                    .basic_ack(tag, BasicAckOptions { multiple: true })
                    .await?;
            }
            Ok(())
        }
    })
    .await;
    let _ = channel.close(200, "stopped".into()).await;
    read
}

/// One delivery: a chunk or a note, unless it was read already.
fn take(shared: &Shared, next: &AtomicU64, delivery: Delivery) {
    if let Some(offset) = consumer::stream_offset(&delivery) {
        let expected = next.load(Ordering::Acquire);
        if expected != u64::MAX && offset < expected {
            return;
        }
        next.store(offset + 1, Ordering::Release);
    }
    metrics::counter!("switchboard_gateway_completions_read_total").increment(1);
    let kind = delivery.properties.kind().as_ref().map(|k| k.as_str());
    let bytes = delivery.data.len();
    match kind {
        Some(REPLY_CHUNK_TYPE) => match amqp::decode::<ReplyChunk>(&delivery.data) {
            Ok(chunk) => shared.apply_chunk(chunk, bytes),
            Err(e) => warn!(error = %e, "unreadable chunk in the completions stream; passed over"),
        },
        Some(COMPLETION_NOTE_TYPE) => match amqp::decode::<CompletionNote>(&delivery.data) {
            Ok(note) => shared.apply_note(note.note),
            Err(e) => debug!(error = %e, "unreadable note in the completions stream; passed over"),
        },
        other => debug!(kind = ?other, "something else in the completions stream; passed over"),
    }
}
