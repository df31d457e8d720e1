//! The observation bus on Kafka: a document's observations produced to the observations
//! topic, keyed `<tenant>/<package>` (so the package's partition, so its owner instance),
//! each with its HMAC tag.
//!
//! Invariants: every observation carries its tag (header `vex-lens-mac` over its key and
//! canonical content, [`crate::crypto::mac`]); `Ok` only once the broker acknowledged
//! every one (idempotent producer, `acks=all`); the messages carry this service's trace
//! context (the `vex.route` span), or the document's own when no spans are exported; an
//! observation without a canonical or JSON form, or too large for the broker, fails the
//! document permanently. Each message names its tenant in a `tenant` header (the
//! observations consumer refuses one whose header and body disagree).

use super::produce::produce_acked;
use crate::crypto::mac::{ObservationMac, HEADER_MAC};
use crate::domain::codes::DeadLetterReason;
use crate::domain::model::Observation;
use crate::ports::{ObservationBus, Origin, PublishError};
use crate::telemetry::trace;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Instrument;

/// An observation that cannot be sent: the document is dead-lettered.
fn invalid(e: impl std::fmt::Display) -> PublishError {
    PublishError::Permanent { reason: DeadLetterReason::InvalidDocument, detail: e.to_string() }
}

/// Publishes observations to the observations topic.
#[derive(Clone)]
pub struct KafkaBus {
    pub producer: FutureProducer,
    pub topic: String,
    pub mac: Arc<ObservationMac>,
    pub shutdown: watch::Receiver<bool>,
}

#[async_trait::async_trait]
impl ObservationBus for KafkaBus {
    async fn publish(&self, observations: Vec<Observation>, origin: &Origin<'_>) -> Result<(), PublishError> {
        let topic = self.topic.as_str();
        // Routing: the observations go to the partitions of their packages, each
        // carrying this span's trace context.
        let route = tracing::info_span!(
            "vex.route",
            otel.kind = "producer",
            messaging.system = "kafka",
            messaging.destination.name = topic,
            vex.observations = observations.len(),
        );
        let mut headers = OwnedHeaders::new();
        if let Some(c) = origin.correlation_id {
            headers = headers.insert(Header { key: "correlation-id", value: Some(c) });
        }
        // Spans not exported: the producer's trace context passes on unchanged, so a
        // downstream consumer (or another instance exporting spans) continues its trace.
        let mut context = trace::inject(&route);
        if context.is_empty() {
            context = origin.trace.to_vec();
        }
        for (k, v) in &context {
            headers = headers.insert(Header { key: k, value: Some(v.as_str()) });
        }
        // The HMAC input and the message; an observation without either cannot be sent.
        let mut messages = Vec::with_capacity(observations.len());
        for o in &observations {
            let content = o.content_bytes().map_err(invalid)?;
            let value = serde_json::to_vec(o).map_err(invalid)?;
            let key = format!("{}/{}", o.tenant, o.package);
            let tag = self.mac.tag(key.as_bytes(), &content);
            messages.push((key, value, tag));
        }
        let sends = messages.iter().zip(&observations).map(|((key, value, tag), o)| {
            let headers = headers
                .clone()
                .insert(Header { key: "tenant", value: Some(&*o.tenant) })
                .insert(Header { key: HEADER_MAC, value: Some(tag.as_str()) });
            produce_acked(&self.producer, topic, Some(key.as_bytes()), value, Some(headers), &self.shutdown)
        });
        let results = futures::future::join_all(sends).instrument(route).await;
        for r in results {
            match r {
                Ok(()) => {}
                Err(e @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                    return Err(PublishError::Permanent {
                        reason: DeadLetterReason::ObservationTooLarge,
                        detail: format!("an observation of this document cannot be produced: {e}"),
                    })
                }
                Err(e) => return Err(PublishError::Transient(format!("observations not produced: {e}"))),
            }
        }
        Ok(())
    }
}
