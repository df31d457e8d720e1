//! Producing one message until the broker acknowledges it.
//!
//! Invariant: returns `Ok` only once the broker acknowledged the message (idempotent
//! producer, `acks=all`); a message too large for the broker fails at once, any other
//! error is retried with backoff until shutdown.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use std::time::Duration;
use tokio::sync::watch;

/// Produces until the broker acknowledges (or shutdown is requested: `false`).
pub(super) async fn produce_acked(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    payload: &[u8],
    headers: Option<OwnedHeaders>,
    shutdown: &watch::Receiver<bool>,
) -> Result<(), KafkaError> {
    let mut delays = crate::backoff::delays(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let mut rec: FutureRecord<[u8], [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(k) = key {
            rec = rec.key(k);
        }
        if let Some(h) = &headers {
            rec = rec.headers(h.clone());
        }
        match producer.send(rec, Timeout::After(Duration::from_secs(30))).await {
            Ok(_) => return Ok(()),
            Err((e @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _)) => return Err(e),
            Err((e, _)) => {
                crate::warn_event!(crate::telemetry::events::LogEvent::ProduceRetry, topic, error = %e, "produce failed; retrying");
                if *shutdown.borrow() {
                    return Err(e);
                }
                tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(5))).await;
            }
        }
    }
}

/// Produces one document to the documents topic until the broker acknowledges it
/// (`acks=all`, idempotent producer), with these headers; `Err` when it is too large for
/// the broker or shutdown was requested before it was acknowledged.
pub async fn produce_document(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    payload: &[u8],
    headers: &[(&str, &[u8])],
    shutdown: &watch::Receiver<bool>,
) -> Result<(), KafkaError> {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(rdkafka::message::Header { key: k, value: Some(*v) });
    }
    produce_acked(producer, topic, Some(key), payload, Some(h), shutdown).await
}
