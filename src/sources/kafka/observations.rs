//! The observations consumer's handler: one message of the observations topic checked
//! (tag, key, form) and applied by the package's artifact actor until durable, settled
//! like a document (`crate::ingest::settle`); recovery after a failed write is the
//! pipeline's (`Pipeline::apply_durable`).
//!
//! Invariants: an observation without a valid tag counts as unsigned whatever its
//! signature claim; its message key must be its own `<tenant>/<package>`; its offset is
//! its stream position (`provenance.sequence`, which orders record writes); its tenant
//! is a tenant name (else `invalid_tenant`) and the one its `tenant` header claims, when
//! it has one (the bus sets it on every observation; else `tenant_mismatch`): neither a
//! producer's header nor a forged body moves an observation into another tenant.

use super::dead_letters::MessageDeadLetters;
use super::message::{correlation_of, source_name, timestamp_ms};
use crate::actors::{Pipeline, PipelineError};
use crate::crypto::mac::{ObservationMac, HEADER_MAC};
use crate::domain::codes::DeadLetterReason;
use crate::domain::model::Observation;
use crate::ingest::settle::{self, Ack, Failure, Input, RetryPolicy};
use crate::ingest::STORE_REJECTED;
use crate::telemetry::trace::bounded;
use rdkafka::message::{Headers, Message, OwnedMessage};
use rdkafka::producer::FutureProducer;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Span;

/// Reason code of a message on the observations topic that is JSON but not a valid observation.
pub const INVALID_OBSERVATION: DeadLetterReason = DeadLetterReason::InvalidObservation;
/// What the observations handler needs.
pub(super) struct Observations {
    pub pipeline: Pipeline,
    pub mac: Arc<ObservationMac>,
    pub max_bytes: usize,
    pub retry: RetryPolicy,
    pub producer: FutureProducer,
    pub dlq: String,
    pub shutdown: watch::Receiver<bool>,
}

/// Handles one observations-topic message to the end: applied and durable with its
/// records, or dead-lettered into the observations' dead-letter topic (retried while it
/// fails transiently).
pub(super) async fn handle_observation(m: OwnedMessage, h: &Observations) -> Ack {
    let dead_letters = MessageDeadLetters { producer: &h.producer, dlq: &h.dlq, message: &m, shutdown: &h.shutdown };
    let (name, correlation) = (source_name(&m), correlation_of(&m));
    let input = Input { name: &name, correlation_id: Some(&correlation), at_ms: timestamp_ms(&m) };
    settle::to_the_end(input, &h.retry, &dead_letters, &h.shutdown, || apply(&m, h)).await
}

/// One attempt: the observation checked and applied until durable, or why not.
async fn apply(m: &OwnedMessage, h: &Observations) -> Result<(), Failure> {
    let payload = m.payload().unwrap_or_default();
    if payload.len() > h.max_bytes {
        let detail = format!("{} bytes, over the {}-byte limit", payload.len(), h.max_bytes);
        return Err(Failure::Permanent { reason: DeadLetterReason::TooLarge, detail });
    }
    let tag = m.headers().and_then(|h| h.iter().find(|x| x.key.eq_ignore_ascii_case(HEADER_MAC)).and_then(|x| x.value));
    let authentic = |o: &Observation| match tag {
        Some(t) => o.content_bytes().is_ok_and(|c| h.mac.verify(m.key().unwrap_or_default(), &c, t)),
        None => false,
    };
    let mut o = match crate::actors::parse_observation(payload, authentic) {
        Ok(o) => o,
        Err(detail) => {
            let reason = if serde_json::from_slice::<serde_json::Value>(payload).is_ok() {
                INVALID_OBSERVATION
            } else {
                DeadLetterReason::InvalidJson
            };
            return Err(Failure::Permanent { reason, detail });
        }
    };
    // The key decides the partition, so the instance that owns the package: it must be
    // the observation's own (a forged key would hand the package to a second owner).
    let key = format!("{}/{}", o.tenant, o.package);
    if m.key() != Some(key.as_bytes()) {
        let got = m.key().map(String::from_utf8_lossy);
        let detail = format!("message key {got:?} is not the observation's {key:?} (<tenant>/<package>)");
        return Err(Failure::Permanent { reason: INVALID_OBSERVATION, detail });
    }
    // The tenant: a tenant name, and the one the message's header claims.
    if !crate::config::valid_tenant(&o.tenant) {
        let shown: String = o.tenant.chars().take(64).collect();
        let detail = format!("observation tenant {shown:?} is not a tenant name: 1 to 128 of A-Z a-z 0-9 . _ -");
        return Err(Failure::Permanent { reason: DeadLetterReason::InvalidTenant, detail });
    }
    // Byte for byte: a header that is no UTF-8 (or padded) claims another tenant too.
    let claimed = m.headers().and_then(|h| h.iter().find(|x| x.key.eq_ignore_ascii_case("tenant")).map(|x| x.value));
    if let Some(claimed) = claimed {
        if claimed != Some(o.tenant.as_bytes()) {
            let shown: String = String::from_utf8_lossy(claimed.unwrap_or_default()).chars().take(64).collect();
            let detail = format!("tenant header {shown:?} is not the observation's tenant {:?}", o.tenant);
            return Err(Failure::Permanent { reason: DeadLetterReason::TenantMismatch, detail });
        }
    }
    // Its position in the stream orders record writes; whatever the message said.
    o.provenance.sequence = Some(m.offset());
    if o.provenance.received_at_ms.is_none() {
        o.provenance.received_at_ms = Some(timestamp_ms(m));
    }
    if o.provenance.source.is_none() {
        o.provenance.source = Some(source_name(m));
    }
    if o.provenance.correlation_id.is_none() {
        o.provenance.correlation_id = Some(correlation_of(m));
    }
    let span = Span::current();
    if !span.is_disabled() {
        span.record("vex.tenant", bounded(&o.tenant));
        span.record("vex.artifact", bounded(&o.artifact));
        span.record("vex.vulnerability", bounded(&o.vulnerability));
        span.record("vex.document_digest", bounded(&o.document_digest));
        if let Some(i) = &o.issuer {
            span.record("vex.issuer", bounded(i));
        }
        span.record("vex.signature", tracing::field::debug(&o.signature.status));
    }
    match h.pipeline.apply_durable(o).await {
        Ok(()) => Ok(()),
        Err(PipelineError::Rejected(rejected)) => {
            Err(Failure::Permanent { reason: STORE_REJECTED, detail: rejected.to_string() })
        }
        Err(PipelineError::Unavailable(e)) => Err(Failure::Transient(format!("observation not routed: {e}"))),
        Err(PipelineError::NotDurable) => Err(Failure::Transient("observation not made durable".into())),
    }
}
