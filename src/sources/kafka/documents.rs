//! The documents consumer's handler: one message of the documents topic normalised
//! (verified when enveloped) and its observations produced to the observations topic.
//!
//! Invariants: an observation is produced keyed `<tenant>/<package>` with its HMAC tag
//! (header `vex-lens-mac`); the handler succeeds only once every observation of the
//! document is acknowledged by the broker; a `tenant` header that is not a tenant name
//! (the API's rule, `config::valid_tenant`) is dead-lettered as `invalid_tenant`; every
//! document carries a correlation id (the producer's, else one derived from its position).

use super::consumer::{HandleError, STORE_REJECTED};
use super::message::{correlation_of, header_str, source_name, timestamp_ms};
use super::produce::produce_acked;
use crate::actors::messages::IngestOutcome;
use crate::actors::{Pipeline, PipelineError};
use crate::config::Config;
use crate::crypto::mac::{ObservationMac, HEADER_MAC};
use crate::domain::codes::DeadLetterReason;
use crate::domain::model::{IngestContext, Provenance};
use crate::telemetry::events::DocumentIngested;
use crate::telemetry::trace::{self as trace, bounded};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureProducer;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::{Instrument, Span};

/// Handles one documents-topic message: its observations produced (and acknowledged), or
/// why not.
pub(super) async fn handle_document(
    m: OwnedMessage,
    pipeline: Pipeline,
    producer: FutureProducer,
    cfg: Arc<Config>,
    mac: Arc<ObservationMac>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HandleError> {
    let name = source_name(&m);
    let Some(payload) = m.payload() else {
        return Err(HandleError::Permanent { reason: DeadLetterReason::InvalidJson, detail: "empty message".into() });
    };
    let correlation = Some(correlation_of(&m));
    let tenant = match header_str(&m, "tenant") {
        Some(t) if !crate::config::valid_tenant(&t) => {
            let shown: String = t.chars().take(200).collect();
            return Err(HandleError::Permanent {
                reason: DeadLetterReason::InvalidTenant,
                detail: format!("tenant header {shown:?} is not a tenant name: 1 to 128 of A-Z a-z 0-9 . _ -"),
            });
        }
        Some(t) => t,
        None => cfg.ingest.tenant.clone(),
    };
    let ctx = IngestContext {
        tenant: Some(tenant),
        issuer_header: header_str(&m, "issuer"),
        provenance: Provenance {
            source: Some(name.clone()),
            correlation_id: correlation.clone(),
            received_at_ms: Some(timestamp_ms(&m)),
            sequence: None,
        },
        ..Default::default()
    };
    let span = Span::current();
    if let Some(t) = &ctx.tenant {
        span.record("vex.tenant", bounded(t));
    }
    let outcome = match pipeline.normalise(name.clone(), payload.to_vec(), ctx, cfg.ingest.max_message_bytes).await {
        Ok(o) => o,
        Err(PipelineError::Rejected(r)) => {
            return Err(HandleError::Permanent { reason: STORE_REJECTED, detail: r.to_string() })
        }
        Err(e) => return Err(HandleError::Transient(format!("document not processed: {e}"))),
    };
    match outcome {
        IngestOutcome::DeadLetter { reason, detail } => Err(HandleError::Permanent { reason, detail }),
        IngestOutcome::Observations { observations, format, diagnostics, .. } => {
            let topic = cfg.kafka.observations_topic.as_str();
            span.record("vex.observations", observations.len());
            if let Some(o) = observations.first() {
                span.record("vex.document_digest", bounded(&o.document_digest));
                if let Some(i) = &o.issuer {
                    span.record("vex.issuer", bounded(i));
                }
            }
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
            if let Some(c) = &correlation {
                headers = headers.insert(Header { key: "correlation-id", value: Some(c.as_str()) });
            }
            // Spans not exported: the producer's trace context passes on unchanged, so a
            // downstream consumer (or another instance exporting spans) continues its trace.
            let mut context = trace::inject(&route);
            if context.is_empty() {
                if let Some(h) = m.headers() {
                    context = trace::forward(h.iter().map(|x| (x.key, x.value.unwrap_or_default())));
                }
            }
            for (k, v) in &context {
                headers = headers.insert(Header { key: k, value: Some(v.as_str()) });
            }
            // The HMAC input; an observation without a canonical form cannot be tagged.
            let contents: Result<Vec<Vec<u8>>, _> = observations.iter().map(|o| o.content_bytes()).collect();
            let contents = match contents {
                Ok(c) => c,
                Err(e) => {
                    return Err(HandleError::Permanent {
                        reason: DeadLetterReason::InvalidDocument,
                        detail: e.to_string(),
                    })
                }
            };
            let sends =
                observations.iter().zip(&contents).map(|(o, content)| {
                    let key = format!("{}/{}", o.tenant, o.package);
                    let value = serde_json::to_vec(o).unwrap_or_default();
                    let tag = mac.tag(key.as_bytes(), content);
                    let headers = headers.clone().insert(Header { key: HEADER_MAC, value: Some(tag.as_str()) });
                    let producer = &producer;
                    let shutdown = &shutdown;
                    async move {
                        produce_acked(producer, topic, Some(key.as_bytes()), &value, Some(headers), shutdown).await
                    }
                });
            let results = futures::future::join_all(sends).instrument(route).await;
            for r in results {
                match r {
                    Ok(()) => {}
                    Err(e @ KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)) => {
                        return Err(HandleError::Permanent {
                            reason: DeadLetterReason::ObservationTooLarge,
                            detail: format!("an observation of this document cannot be produced: {e}"),
                        })
                    }
                    Err(e) => return Err(HandleError::Transient(format!("observations not produced: {e}"))),
                }
            }
            DocumentIngested {
                source: &name,
                correlation_id: correlation.as_deref(),
                format,
                observations: observations.len(),
                diagnostics,
            }
            .emit();
            Ok(())
        }
    }
}
