//! Telemetry events: each struct writes its log line and updates its metric together, so
//! the two never drift apart. Correlation fields use the runbook's names
//! (`correlationId`, `artifactKey`, `advisoryKey`, `issuer`).

use super::{metrics, ReasonLabel, ResultLabel};
use crate::domain::consensus::ConsensusRecord;
use std::time::Duration;

/// A document was normalised into observations.
pub struct DocumentIngested<'a> {
    pub source: &'a str,
    pub correlation_id: Option<&'a str>,
    pub format: &'a str,
    pub observations: usize,
    pub diagnostics: usize,
}

impl DocumentIngested<'_> {
    pub fn emit(&self) {
        metrics().documents_ingested.inc();
        tracing::debug!(
            event = "document_ingested",
            source = self.source,
            correlationId = self.correlation_id,
            format = self.format,
            observations = self.observations,
            diagnostics = self.diagnostics,
            "document normalised"
        );
    }
}

/// An input was dead-lettered.
pub struct DeadLettered<'a> {
    pub source: &'a str,
    pub correlation_id: Option<&'a str>,
    /// Reason code (`invalid_json`, `too_large`, `not_vex`, `invalid_document`, `invalid_observation`).
    pub reason: &'a str,
    pub detail: &'a str,
}

impl DeadLettered<'_> {
    pub fn emit(&self) {
        metrics().dead_letter.get_or_create(&ReasonLabel { reason: self.reason.to_string() }).inc();
        tracing::warn!(
            event = "dead_lettered",
            source = self.source,
            correlationId = self.correlation_id,
            reason = self.reason,
            detail = self.detail,
            "input dead-lettered"
        );
    }
}

/// Observations and their changed records became durable.
pub struct ObservationsDurable<'a> {
    pub observations: usize,
    pub records: usize,
    /// Arrival times (ms since the epoch) of the persisted observations' documents.
    pub received_at_ms: &'a [i64],
    pub now_ms: i64,
}

impl ObservationsDurable<'_> {
    pub fn emit(&self) {
        let m = metrics();
        m.observations_applied.inc_by(self.observations as u64);
        for t in self.received_at_ms {
            m.consensus_latency.observe(((self.now_ms - t).max(0) as f64) / 1000.0);
        }
        tracing::debug!(
            event = "observations_durable",
            observations = self.observations,
            records = self.records,
            "observations and records written"
        );
    }
}

/// A consensus record changed (written as a new current record).
pub struct RecordChanged<'a> {
    pub record: &'a ConsensusRecord,
    pub correlation_id: Option<&'a str>,
}

impl RecordChanged<'_> {
    pub fn emit(&self) {
        let m = metrics();
        for c in &self.record.conflicts {
            m.consensus_conflicts.get_or_create(&ReasonLabel { reason: c.reason.clone() }).inc();
        }
        let issuer = self.record.statements.iter().find(|s| s.role == crate::domain::consensus::Role::Counted);
        tracing::debug!(
            event = "consensus_changed",
            correlationId = self.correlation_id,
            artifactKey = self.record.artifact.as_str(),
            advisoryKey = self.record.vulnerability.as_str(),
            issuer = issuer.map(|s| s.issuer.as_str()),
            tenant = self.record.tenant.as_str(),
            status = self.record.status.as_str(),
            conflicts = self.record.conflicts.len(),
            digest = self.record.consensus_digest.as_str(),
            "consensus record changed"
        );
    }
}

/// An actor recomputed consensus (`ingestion_delta`) or rebuilt its state (`rebuild`).
pub struct Recomputed<'a> {
    pub reason: &'static str,
    pub tenant: &'a str,
    pub package: &'a str,
    pub pairs: usize,
    pub duration: Duration,
}

impl Recomputed<'_> {
    pub fn emit(&self) {
        metrics()
            .recompute_duration
            .get_or_create(&ReasonLabel { reason: self.reason.to_string() })
            .observe(self.duration.as_secs_f64());
        tracing::trace!(
            event = "recomputed",
            reason = self.reason,
            tenant = self.tenant,
            package = self.package,
            pairs = self.pairs,
            seconds = self.duration.as_secs_f64(),
            "consensus recomputed"
        );
    }
}

/// The conflict queue depth was read from the store.
pub struct ConflictQueueDepth {
    pub depth: u64,
}

impl ConflictQueueDepth {
    pub fn emit(&self) {
        metrics().conflict_queue_depth.set(self.depth as i64);
    }
}

/// A store operation failed and will be retried.
pub struct StoreRetry<'a> {
    pub operation: &'a str,
    pub attempt: u32,
    pub error: &'a str,
    pub delay: Duration,
}

impl StoreRetry<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            event = "store_retry",
            operation = self.operation,
            attempt = self.attempt,
            error = self.error,
            delay_ms = self.delay.as_millis() as u64,
            "store operation failed; retrying"
        );
    }
}

/// The store rejected a batch permanently; its inputs are handed back to their sources
/// (retried, then dead-lettered: `vex_dead_letter_total{reason="retries_exhausted"}`).
pub struct StoreRejected<'a> {
    pub observations: usize,
    pub records: usize,
    pub verifications: usize,
    pub error: &'a str,
}

impl StoreRejected<'_> {
    pub fn emit(&self) {
        tracing::error!(
            event = "store_rejected",
            observations = self.observations,
            records = self.records,
            verifications = self.verifications,
            error = self.error,
            "store rejected a batch; its inputs are retried or dead-lettered"
        );
    }
}

/// A DSSE envelope failed verification (`bad_signature`, `wrong_key`, `malformed_envelope`,
/// `threshold_not_met`); unsigned envelopes are not failures.
pub struct DsseVerificationFailed<'a> {
    pub source: &'a str,
    pub correlation_id: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub keyid: Option<&'a str>,
    pub reason: &'a str,
}

impl DsseVerificationFailed<'_> {
    pub fn emit(&self) {
        metrics().dsse_verification_failures.inc();
        tracing::warn!(
            event = "dsse_verification_failed",
            source = self.source,
            correlationId = self.correlation_id,
            issuer = self.issuer,
            keyid = self.keyid,
            reason = self.reason,
            "DSSE signature verification failed"
        );
    }
}

/// An export job of the service finished.
pub struct ExportJobFinished<'a> {
    pub job_id: &'a str,
    pub format: &'a str,
    pub duration: Duration,
    /// `None` on success, else the error.
    pub error: Option<&'a str>,
    pub records: usize,
}

impl ExportJobFinished<'_> {
    pub fn emit(&self) {
        let m = metrics();
        m.export_duration.observe(self.duration.as_secs_f64());
        let result = if self.error.is_none() { "success" } else { "failure" };
        m.export_jobs.get_or_create(&ResultLabel { result: result.to_string() }).inc();
        match self.error {
            None => tracing::info!(
                event = "export_job_finished",
                job = self.job_id,
                format = self.format,
                records = self.records,
                duration_ms = self.duration.as_millis() as u64,
                "export job succeeded"
            ),
            Some(e) => tracing::warn!(
                event = "export_job_failed",
                job = self.job_id,
                format = self.format,
                duration_ms = self.duration.as_millis() as u64,
                error = e,
                "export job failed"
            ),
        }
    }
}
