//! The observations consumer's handler: one message of the observations topic checked
//! (tag, key, form) and applied by the package's artifact actor until durable.
//!
//! Invariants: an observation without a valid tag counts as unsigned whatever its
//! signature claim; its message key must be its own `<tenant>/<package>`; its offset is
//! its stream position (`provenance.sequence`, which orders record writes).

use super::consumer::{HandleError, STORE_REJECTED};
use super::message::{correlation_of, source_name, timestamp_ms};
use crate::actors::Pipeline;
use crate::config::Config;
use crate::crypto::mac::{ObservationMac, HEADER_MAC};
use crate::domain::codes::DeadLetterReason;
use crate::domain::model::Observation;
use crate::telemetry::trace::bounded;
use rdkafka::message::{Headers, Message, OwnedMessage};
use std::sync::Arc;
use tracing::Span;

/// Reason code of a message on the observations topic that is JSON but not a valid observation.
pub const INVALID_OBSERVATION: DeadLetterReason = DeadLetterReason::InvalidObservation;
/// Handles one observations-topic message: durable with its records, or why not.
pub(super) async fn handle_observation(
    m: OwnedMessage,
    pipeline: Pipeline,
    cfg: Arc<Config>,
    mac: Arc<ObservationMac>,
) -> Result<(), HandleError> {
    let payload = m.payload().unwrap_or_default();
    if payload.len() > cfg.ingest.max_message_bytes {
        let detail = format!("{} bytes, over the {}-byte limit", payload.len(), cfg.ingest.max_message_bytes);
        return Err(HandleError::Permanent { reason: DeadLetterReason::TooLarge, detail });
    }
    let tag = m.headers().and_then(|h| h.iter().find(|x| x.key.eq_ignore_ascii_case(HEADER_MAC)).and_then(|x| x.value));
    let authentic = |o: &Observation| match tag {
        Some(t) => o.content_bytes().is_ok_and(|c| mac.verify(m.key().unwrap_or_default(), &c, t)),
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
            return Err(HandleError::Permanent { reason, detail });
        }
    };
    // The key decides the partition, so the instance that owns the package: it must be
    // the observation's own (a forged key would hand the package to a second owner).
    let key = format!("{}/{}", o.tenant, o.package);
    if m.key() != Some(key.as_bytes()) {
        let got = m.key().map(String::from_utf8_lossy);
        let detail = format!("message key {got:?} is not the observation's {key:?} (<tenant>/<package>)");
        return Err(HandleError::Permanent { reason: INVALID_OBSERVATION, detail });
    }
    // Its position in the stream orders record writes; whatever the message said.
    o.provenance.sequence = Some(m.offset());
    if o.provenance.received_at_ms.is_none() {
        o.provenance.received_at_ms = Some(timestamp_ms(&m));
    }
    if o.provenance.source.is_none() {
        o.provenance.source = Some(source_name(&m));
    }
    if o.provenance.correlation_id.is_none() {
        o.provenance.correlation_id = Some(correlation_of(&m));
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
    let rx = pipeline.route(o).await.map_err(|e| HandleError::Transient(format!("observation not routed: {e}")))?;
    match rx.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(rejected)) => {
            pipeline.reset_actors();
            Err(HandleError::Permanent { reason: STORE_REJECTED, detail: rejected.to_string() })
        }
        Err(_) => {
            // Not durable (its batch was rejected because of another input, or the writer
            // restarted): drop the actors' in-memory state, which may hold what the store
            // does not, so that the retry rebuilds the package from the store and
            // rewrites its records.
            pipeline.reset_actors();
            Err(HandleError::Transient("observation not made durable".into()))
        }
    }
}
