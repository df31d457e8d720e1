//! The consume loop shared by both consumers: in-flight work bounded by messages, bytes
//! and tracked offsets (pausing the assignment when full), every message handed to its
//! handler, which settles it (`crate::ingest::settle`: retried while it fails
//! transiently, dead-lettered when it fails permanently or runs out of attempts),
//! offsets stored over settled runs, drained and committed on shutdown.
//!
//! Invariants: a bad message never stops a consumer; an offset is stored only once its
//! message is durable or dead-lettered (never on shutdown: it is replayed); every
//! consumed message is one span (`vex.document` or `vex.observation`, kind consumer),
//! a child of the producer's span when its headers carry a valid `traceparent`.

use super::message::correlation_of;
use super::offsets::OffsetTracker;
use super::KConsumer;
use crate::ingest::Ack;
use crate::telemetry::trace::{self as trace, bounded};
use futures::future::BoxFuture;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message, OwnedMessage};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tracing::{field::Empty, Instrument, Span};

/// Handles one message to the end: the handler settles it (durable, dead-lettered, or
/// not done: see [`Ack`]).
pub(super) type Handle = Arc<dyn Fn(OwnedMessage) -> BoxFuture<'static, Ack> + Send + Sync>;

/// Handles one message in its consume span; `true` when its offset may be stored
/// (`false` only on shutdown: the message is then replayed after the restart).
async fn process(m: OwnedMessage, handle: &Handle, consumer: &'static str) -> bool {
    let span = consume_span(&m, consumer);
    let ack = handle(m).instrument(span.clone()).await;
    span.record(
        "vex.outcome",
        match (ack, consumer) {
            (Ack::Done, "documents") => "ingested",
            (Ack::Done, _) => "applied",
            (Ack::DeadLettered, _) => "dead_lettered",
            (Ack::NotDone, _) => "abandoned",
        },
    );
    ack.settled()
}

/// The span of one consumed message (`vex.document` or `vex.observation`), a child of
/// the producer's span when the message carries a valid `traceparent`.
fn consume_span(m: &OwnedMessage, consumer: &'static str) -> Span {
    let span = tracing::info_span!(
        "vex.consume",
        otel.name = if consumer == "documents" { "vex.document" } else { "vex.observation" },
        otel.kind = "consumer",
        messaging.system = "kafka",
        messaging.destination.name = m.topic(),
        messaging.destination.partition.id = m.partition(),
        messaging.kafka.offset = m.offset(),
        vex.correlation_id = bounded(&correlation_of(m)),
        vex.bytes = m.payload().map_or(0, <[u8]>::len),
        vex.tenant = Empty,
        vex.artifact = Empty,
        vex.vulnerability = Empty,
        vex.issuer = Empty,
        vex.document_digest = Empty,
        vex.signature = Empty,
        vex.observations = Empty,
        vex.attempts = Empty,
        vex.outcome = Empty,
        vex.reason = Empty,
    );
    if let Some(h) = m.headers() {
        trace::set_remote_parent(&span, h.iter().map(|x| (x.key, x.value.unwrap_or_default())));
    }
    span
}

/// Limits of one consumer's in-flight work.
#[derive(Clone, Debug)]
pub(super) struct Limits {
    /// Messages being handled.
    pub(super) messages: usize,
    /// Payload bytes being handled (a larger message passes alone).
    pub(super) bytes: usize,
    /// Offsets tracked (handled or not) before the consumer pauses: a slow message
    /// holds back its partition's commits, and the ones after it wait here, bounded.
    pub(super) tracked: usize,
}

/// Consumes one topic: in-flight work bounded by messages, bytes and tracked offsets
/// (pausing the assignment when full), every message handled to the end ([`process`]),
/// offsets stored over completed runs, drained and committed on shutdown.
#[allow(clippy::too_many_arguments)]
pub(super) async fn consume_loop(
    name: &'static str,
    consumer: Arc<KConsumer>,
    tracker: Arc<Mutex<OffsetTracker>>,
    limits: Limits,
    drain_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    handle: Handle,
) {
    let sem = Arc::new(Semaphore::new(limits.messages));
    let byte_units = limits.bytes.div_ceil(1024).max(1);
    let bytes = Arc::new(Semaphore::new(byte_units));
    loop {
        // Too many offsets waiting on an unfinished earlier one: stop fetching until
        // that one is done (retries are bounded, so this ends).
        if tracker.lock().map(|t| t.in_flight()).unwrap_or(0) >= limits.tracked {
            let assignment = consumer.assignment().ok();
            if let Some(a) = &assignment {
                let _ = consumer.pause(a);
            }
            tracing::debug!(event = "paused", consumer = name, "offset tracker full; partitions paused");
            while tracker.lock().map(|t| t.in_flight()).unwrap_or(0) >= limits.tracked && !*shutdown.borrow() {
                tokio::select! {
                    _ = shutdown.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
            if let Some(a) = &assignment {
                let _ = consumer.resume(a);
            }
        }
        let msg = tokio::select! {
            _ = shutdown.changed() => break,
            m = consumer.recv() => m,
        };
        let m = match msg {
            Ok(m) => m.detach(),
            Err(e) => {
                crate::warn_event!(crate::telemetry::events::LogEvent::ConsumeError, consumer = name, error = %e, "consumer error");
                continue;
            }
        };
        let (topic, partition, offset) = (m.topic().to_string(), m.partition(), m.offset());
        if let Ok(mut t) = tracker.lock() {
            t.begin(&topic, partition, offset);
        }
        let units = m.payload().map_or(0, <[u8]>::len).div_ceil(1024).clamp(1, byte_units) as u32;
        let permits = match (sem.clone().try_acquire_owned(), bytes.clone().try_acquire_many_owned(units)) {
            (Ok(p), Ok(b)) => (p, b),
            (p, b) => {
                let assignment = consumer.assignment().ok();
                if let Some(a) = &assignment {
                    let _ = consumer.pause(a);
                }
                tracing::debug!(event = "paused", consumer = name, "pipeline saturated; partitions paused");
                let p = match p {
                    Ok(p) => p,
                    Err(_) => sem.clone().acquire_owned().await.expect("semaphore never closed"),
                };
                let b = match b {
                    Ok(b) => b,
                    Err(_) => bytes.clone().acquire_many_owned(units).await.expect("semaphore never closed"),
                };
                if let Some(a) = &assignment {
                    let _ = consumer.resume(a);
                }
                (p, b)
            }
        };
        let (consumer2, tracker2, handle2) = (consumer.clone(), tracker.clone(), handle.clone());
        tokio::spawn(async move {
            let ok = process(m, &handle2, name).await;
            if ok {
                // Under the tracker's lock (`rd_kafka_offsets_store` only sets a field).
                OffsetTracker::complete_and_store(&tracker2, &topic, partition, offset, |o| {
                    if let Err(e) = consumer2.store_offset(&topic, partition, o) {
                        tracing::debug!(event = "store_offset_failed", topic, partition, offset = o, error = %e, "offset not stored");
                    }
                });
            }
            drop(permits);
        });
    }
    // Drain: wait for in-flight work, then commit what is stored (a synchronous commit:
    // off the async threads).
    let drained = tokio::time::timeout(drain_timeout, sem.acquire_many(limits.messages as u32)).await.is_ok();
    let left = tracker.lock().map(|t| t.in_flight()).unwrap_or(0);
    let c = consumer.clone();
    match tokio::task::spawn_blocking(move || c.commit_consumer_state(CommitMode::Sync)).await {
        Ok(Ok(())) | Ok(Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset))) => {}
        Ok(Err(e)) => {
            crate::warn_event!(crate::telemetry::events::LogEvent::CommitFailed, consumer = name, error = %e, "final commit failed")
        }
        Err(e) => {
            crate::warn_event!(crate::telemetry::events::LogEvent::CommitFailed, consumer = name, error = %e, "final commit failed")
        }
    }
    tracing::info!(event = "consumer_stopped", consumer = name, drained, in_flight = left, "consumer stopped");
}
