//! Dead-letter topics: a message that cannot be handled goes to its topic's dead-letter
//! topic with its payload, key and headers, plus the reason and where it came from.
//!
//! Invariants: the dead letter carries this service's trace context (its
//! `vex.dead_letter` span) instead of the one it came with, which it keeps unchanged
//! when spans are not exported; a payload too large for the broker is dead-lettered
//! without it (header `vex-lens-value-truncated`); `true` only once the broker
//! acknowledged the dead letter.

use super::message::correlation_of;
use super::produce::produce_acked;
use crate::domain::codes::DeadLetterReason;
use crate::ports::{DeadLetter, DeadLetterError, DeadLetterSink};
use crate::telemetry::trace;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;
use tracing::Instrument;

/// Headers written on dead letters.
pub const HEADER_ERROR: &str = "vex-lens-error";
pub const HEADER_ERROR_DETAIL: &str = "vex-lens-error-detail";
pub const HEADER_SOURCE_TOPIC: &str = "vex-lens-source-topic";
pub const HEADER_SOURCE_PARTITION: &str = "vex-lens-source-partition";
pub const HEADER_SOURCE_OFFSET: &str = "vex-lens-source-offset";
pub const HEADER_VALUE_TRUNCATED: &str = "vex-lens-value-truncated";

/// The dead-letter sink of one consumed message: its topic's dead-letter topic.
pub(super) struct MessageDeadLetters<'a> {
    pub producer: &'a FutureProducer,
    pub dlq: &'a str,
    pub message: &'a OwnedMessage,
    pub shutdown: &'a watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl DeadLetterSink for MessageDeadLetters<'_> {
    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
        match dead_letter(self.producer, self.dlq, self.message, letter.reason, &letter.detail, self.shutdown).await {
            true => Ok(()),
            false => Err(DeadLetterError::Abandoned),
        }
    }
}

/// Sends a message to a dead-letter topic with its original headers plus the reason
/// (the flow has counted and logged it); `false` when the broker never acknowledged it
/// (shutdown).
async fn dead_letter(
    producer: &FutureProducer,
    dlq: &str,
    m: &OwnedMessage,
    reason: DeadLetterReason,
    detail: &str,
    shutdown: &watch::Receiver<bool>,
) -> bool {
    let correlation = correlation_of(m);
    let span = tracing::info_span!(
        "vex.dead_letter",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.destination.name = dlq,
        vex.reason = reason.as_str(),
    );
    let entered = span.enter();
    let detail: String = detail.chars().take(2000).collect();
    // The dead letter continues this service's trace: its own trace context replaces the
    // one it came with (kept as it was when traces are not exported).
    let context = trace::inject(&span);
    let mut headers = OwnedHeaders::new();
    if let Some(h) = m.headers() {
        for x in h.iter() {
            let kept = context.is_empty() || !trace::is_trace_header(x.key);
            if kept && !x.key.eq_ignore_ascii_case("correlation-id") {
                headers = headers.insert(Header { key: x.key, value: x.value });
            }
        }
    }
    // The id the log lines carry: the producer's, or the one minted for this message.
    headers = headers.insert(Header { key: "correlation-id", value: Some(correlation.as_str()) });
    for (k, v) in &context {
        headers = headers.insert(Header { key: k, value: Some(v.as_str()) });
    }
    drop(entered);
    let partition = m.partition().to_string();
    let offset = m.offset().to_string();
    headers = headers
        .insert(Header { key: HEADER_ERROR, value: Some(reason.as_str()) })
        .insert(Header { key: HEADER_ERROR_DETAIL, value: Some(detail.as_str()) })
        .insert(Header { key: HEADER_SOURCE_TOPIC, value: Some(m.topic()) })
        .insert(Header { key: HEADER_SOURCE_PARTITION, value: Some(partition.as_str()) })
        .insert(Header { key: HEADER_SOURCE_OFFSET, value: Some(offset.as_str()) });
    let payload = m.payload().unwrap_or_default();
    async move {
        match produce_acked(producer, dlq, m.key(), payload, Some(headers.clone()), shutdown).await {
            Ok(()) => true,
            Err(KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                let headers = headers.insert(Header { key: HEADER_VALUE_TRUNCATED, value: Some("true") });
                produce_acked(producer, dlq, m.key(), &[], Some(headers), shutdown).await.is_ok()
            }
            Err(_) => false,
        }
    }
    .instrument(span)
    .await
}
