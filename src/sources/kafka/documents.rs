//! The documents consumer's handler: one message of the documents topic becomes a
//! [`Document`] (payload, ingest context from its headers, the trace context it came
//! with) handed to the ingest flow, whose answer decides whether its offset is stored.
//!
//! Invariants: nothing here normalises, verifies, produces or retries: the flow does
//! (`crate::ingest`); the tenant is the `tenant` header, else `ingest.tenant`, and a
//! `tenant` header that is not a tenant name (the API's rule, `config::valid_tenant`) is
//! refused as `invalid_tenant`; every document carries a correlation id (the producer's,
//! else one derived from its position); the arrival time is the message's timestamp
//! (the flow's clock when it has none).

use super::dead_letters::MessageDeadLetters;
use super::message::{correlation_of, header_str, source_name};
use crate::domain::codes::DeadLetterReason;
use crate::domain::model::{IngestContext, Provenance};
use crate::ingest::{Ack, Document, Ingest, Unreadable};
use crate::telemetry::trace;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use tokio::sync::watch;

/// The document a documents-topic message carries.
pub(super) fn document(m: &OwnedMessage, default_tenant: &str) -> Document {
    let name = source_name(m);
    let (tenant, refused) = match header_str(m, "tenant") {
        Some(t) if !crate::config::valid_tenant(&t) => {
            let shown: String = t.chars().take(200).collect();
            let detail = format!("tenant header {shown:?} is not a tenant name: 1 to 128 of A-Z a-z 0-9 . _ -");
            (None, Some(Unreadable { reason: DeadLetterReason::InvalidTenant, detail }))
        }
        Some(t) => (Some(t), None),
        None => (Some(default_tenant.to_string()), None),
    };
    let ctx = IngestContext {
        tenant,
        issuer_header: header_str(m, "issuer"),
        // A detached OpenPGP signature over the payload (the armored text as served).
        openpgp_signature: header_str(m, "openpgp-signature").map(String::into_bytes),
        provenance: Provenance {
            source: Some(name.clone()),
            correlation_id: Some(correlation_of(m)),
            received_at_ms: m.timestamp().to_millis(),
            sequence: None,
        },
        ..Default::default()
    };
    let bytes = match (m.payload(), refused) {
        (None, _) => Err(Unreadable { reason: DeadLetterReason::InvalidJson, detail: "empty message".into() }),
        (Some(_), Some(refused)) => Err(refused),
        (Some(p), None) => Ok(p.to_vec()),
    };
    let trace = m.headers().map(|h| trace::forward(h.iter().map(|x| (x.key, x.value.unwrap_or_default()))));
    Document { name, bytes, ctx, trace: trace.unwrap_or_default() }
}

/// Handles one documents-topic message to the end: the flow publishes its observations
/// or dead-letters it into the documents' dead-letter topic.
pub(super) async fn handle_document(
    m: OwnedMessage,
    ingest: &Ingest,
    default_tenant: &str,
    producer: &FutureProducer,
    dlq: &str,
    shutdown: &watch::Receiver<bool>,
) -> Ack {
    let dead_letters = MessageDeadLetters { producer, dlq, message: &m, shutdown };
    ingest.document(document(&m, default_tenant), &dead_letters).await
}
