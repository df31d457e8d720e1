//! Telemetry events: each struct writes its log line and updates its metric together, so
//! the two never drift apart. Correlation fields use the runbook's names
//! (`correlationId`, `artifactKey`, `advisoryKey`, `issuer`).
//!
//! Invariants: every line has an `event`; at the default level (info) each processed
//! document writes one line with its `correlationId` (`document_ingested`, or the warn
//! `dead_lettered`), and each record change and each appearance of conflicts one line with
//! `artifactKey` and `advisoryKey` (`consensus_changed`, `conflicts_appeared`), at most
//! [`LogBudget`]'s rate per event, the lines held back counted in
//! `vex_log_lines_dropped_total{event}`.

use super::{metrics, CodeLabel, OperationLabel, OutcomeLabel, ReasonLabel, ResultLabel, StoreWriteLabel};
use crate::domain::codes::DeadLetterReason;
use crate::domain::consensus::ConsensusRecord;
use crate::ports::JobResult;
use std::time::Duration;

/// A document was normalised into observations.
pub struct DocumentIngested<'a> {
    pub source: &'a str,
    pub correlation_id: Option<&'a str>,
    pub format: &'a str,
    pub observations: usize,
    /// The code of each diagnostic of the document.
    pub diagnostics: &'a [crate::domain::codes::DiagnosticCode],
}

impl DocumentIngested<'_> {
    pub fn emit(&self) {
        let m = metrics();
        m.documents_ingested.inc();
        m.documents.get_or_create(&outcome("ingested")).inc();
        for code in self.diagnostics {
            m.diagnostics.get_or_create(&CodeLabel { code: code.as_str().to_string() }).inc();
        }
        tracing::info!(
            event = "document_ingested",
            source = self.source,
            correlationId = self.correlation_id,
            format = self.format,
            observations = self.observations,
            diagnostics = self.diagnostics.len(),
            "document normalised"
        );
    }
}

/// An input was dead-lettered.
pub struct DeadLettered<'a> {
    pub source: &'a str,
    pub correlation_id: Option<&'a str>,
    pub reason: DeadLetterReason,
    pub detail: &'a str,
}

impl DeadLettered<'_> {
    pub fn emit(&self) {
        let m = metrics();
        m.dead_letter.get_or_create(&ReasonLabel { reason: self.reason.as_str().to_string() }).inc();
        // Observations are dead-lettered on the observations topic; everything else is a document.
        if self.reason == DeadLetterReason::InvalidObservation {
            m.observations.get_or_create(&outcome("dead_lettered")).inc();
        } else {
            m.documents.get_or_create(&outcome("dead_lettered")).inc();
        }
        LogEvent::DeadLettered.count();
        tracing::warn!(
            event = "dead_lettered",
            source = self.source,
            correlationId = self.correlation_id,
            reason = self.reason.as_str(),
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
        m.observations.get_or_create(&outcome("applied")).inc_by(self.observations as u64);
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
    /// Finds the correlation id; called only for a line the rate limit admits (finding it
    /// scans the batch's observations, and most lines of a large batch are not logged).
    pub correlation_id: &'a dyn Fn() -> Option<&'a str>,
}

impl RecordChanged<'_> {
    pub fn emit(&self) {
        if !CONSENSUS_CHANGED_BUDGET.admit(std::time::Instant::now()) {
            return;
        }
        let issuer = self.record.statements.iter().find(|s| s.role == crate::domain::consensus::Role::Counted);
        let correlation_id = (self.correlation_id)();
        tracing::info!(
            event = "consensus_changed",
            correlationId = correlation_id,
            artifactKey = self.record.artifact.as_str(),
            advisoryKey = self.record.vulnerability.as_str(),
            issuer = issuer.map(|s| &*s.issuer),
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

/// Conflicts appeared on a record: reasons it did not have at its previous evaluation
/// (a re-evaluation or rebuild of a record that already had them counts nothing).
pub struct ConflictsAppeared<'a> {
    pub tenant: &'a str,
    pub artifact: &'a str,
    pub vulnerability: &'a str,
    pub reasons: &'a [&'a str],
    /// The correlation id of an observation of the pair applied in this turn.
    pub correlation_id: Option<&'a str>,
}

impl ConflictsAppeared<'_> {
    pub fn emit(&self) {
        let m = metrics();
        for r in self.reasons {
            m.consensus_conflicts.get_or_create(&ReasonLabel { reason: r.to_string() }).inc();
        }
        if !CONFLICTS_APPEARED_BUDGET.admit(std::time::Instant::now()) {
            return;
        }
        tracing::info!(
            event = "conflicts_appeared",
            correlationId = self.correlation_id,
            tenant = self.tenant,
            artifactKey = self.artifact,
            advisoryKey = self.vulnerability,
            reasons = ?self.reasons,
            "conflicts appeared"
        );
    }
}

/// A per-event budget of info lines (a token bucket): at most `burst` lines at once and
/// `per_second` on average; a line over the budget is not written and counts in
/// `vex_log_lines_dropped_total{event}` (the metric and the dashboard see every event;
/// the log keeps a sample when a bulk ingest changes thousands of records a second).
pub struct LogBudget {
    event: &'static str,
    per_second: f64,
    burst: f64,
    /// Tokens left and when they were counted.
    state: std::sync::Mutex<Option<(f64, std::time::Instant)>>,
}

impl LogBudget {
    pub const fn new(event: &'static str, per_second: u32, burst: u32) -> LogBudget {
        LogBudget { event, per_second: per_second as f64, burst: burst as f64, state: std::sync::Mutex::new(None) }
    }

    /// Whether a line may be written at `now` (else it is counted as dropped).
    pub fn admit(&self, now: std::time::Instant) -> bool {
        let admitted = {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            let (tokens, at) = s.unwrap_or((self.burst, now));
            let tokens = (tokens + now.saturating_duration_since(at).as_secs_f64() * self.per_second).min(self.burst);
            let at = at.max(now);
            if tokens >= 1.0 {
                *s = Some((tokens - 1.0, at));
                true
            } else {
                *s = Some((tokens, at));
                false
            }
        };
        if !admitted {
            metrics().log_lines_dropped.get_or_create(&super::EventLabel { event: self.event.to_string() }).inc();
        }
        admitted
    }
}

/// `consensus_changed` lines: 50 a second on average, bursts of 500.
pub static CONSENSUS_CHANGED_BUDGET: LogBudget = LogBudget::new("consensus_changed", 50, 500);
/// `conflicts_appeared` lines: 50 a second on average, bursts of 500.
pub static CONFLICTS_APPEARED_BUDGET: LogBudget = LogBudget::new("conflicts_appeared", 50, 500);

/// The conflict queue depth per tenant was read from the store.
pub struct ConflictQueueDepth<'a> {
    pub depths: &'a [(String, u64)],
}

impl ConflictQueueDepth<'_> {
    pub fn emit(&self) {
        metrics().set_conflict_queue_depths(self.depths);
    }
}

/// One store operation attempt finished (successful or not).
pub struct StoreAttempt<'a> {
    pub operation: &'a str,
    pub duration: Duration,
}

impl StoreAttempt<'_> {
    pub fn emit(&self) {
        metrics()
            .store_operation_duration
            .get_or_create(&OperationLabel { operation: self.operation.to_string() })
            .observe(self.duration.as_secs_f64());
    }
}

/// What a store wrote to one collection (table): `documents` documents (rows) inserted,
/// replaced or deleted, and the `index_entries` maintained for them
/// (`vex_store_writes_total`).
pub struct StoreWrites<'a> {
    /// `embedded` or `mongodb`.
    pub store: &'static str,
    pub collection: &'a str,
    pub documents: u64,
    pub index_entries: u64,
}

impl StoreWrites<'_> {
    pub fn emit(&self) {
        let m = metrics();
        for (kind, n) in [("document", self.documents), ("index_entry", self.index_entries)] {
            if n > 0 {
                let label = StoreWriteLabel {
                    store: self.store.to_string(),
                    kind: kind.to_string(),
                    collection: self.collection.to_string(),
                };
                m.store_writes.get_or_create(&label).inc_by(n);
            }
        }
    }
}

/// The artifact registry's live actors and the observations their states hold.
pub struct RegistryLoad {
    pub live_actors: usize,
    pub observations: usize,
}

impl RegistryLoad {
    pub fn emit(&self) {
        let m = metrics();
        m.artifact_actors.set(self.live_actors as i64);
        m.artifact_observations.set(self.observations as i64);
    }
}

/// Observations routed to artifact actors and not yet durable (or failed).
pub struct InFlight;

impl InFlight {
    /// One observation was routed.
    pub fn routed() {
        metrics().observations_in_flight.inc();
    }
    /// One routed observation became durable or failed.
    pub fn settled() {
        metrics().observations_in_flight.dec();
    }
}

/// An issuer's trust (tier or weight) changed for a tenant; the audit fields are the
/// runbook's (`issuer`, `trustTier`, `weightBefore`, `weightAfter`, `justification`).
pub struct IssuerTrustChanged<'a> {
    pub correlation_id: Option<&'a str>,
    pub tenant: &'a str,
    /// Who changed it (the API token's name).
    pub who: &'a str,
    pub issuer: &'a str,
    pub trust_tier: &'a str,
    pub weight_before: f64,
    pub weight_after: f64,
    /// The caller's stated reason (empty when none was given).
    pub justification: &'a str,
    /// The tenant's policy epoch after the change.
    pub epoch: u64,
}

impl IssuerTrustChanged<'_> {
    pub fn emit(&self) {
        metrics().issuer_trust_changes.inc();
        tracing::info!(
            event = "issuer_trust_changed",
            correlationId = self.correlation_id,
            tenant = self.tenant,
            who = self.who,
            issuer = self.issuer,
            trustTier = self.trust_tier,
            weightBefore = self.weight_before,
            weightAfter = self.weight_after,
            justification = self.justification,
            epoch = self.epoch,
            "issuer trust changed"
        );
    }
}

/// A tenant's consensus mode or knobs changed (`PUT /v1/vex/trust/policy`).
pub struct TrustPolicyChanged<'a> {
    /// The request's correlation id.
    pub correlation_id: Option<&'a str>,
    pub tenant: &'a str,
    pub who: &'a str,
    pub mode_before: &'a str,
    pub mode_after: &'a str,
    /// The knobs before and after, as JSON.
    pub knobs_before: &'a str,
    pub knobs_after: &'a str,
    pub justification: &'a str,
    pub epoch: u64,
}

impl TrustPolicyChanged<'_> {
    pub fn emit(&self) {
        tracing::info!(
            event = "trust_policy_changed",
            correlationId = self.correlation_id,
            tenant = self.tenant,
            who = self.who,
            modeBefore = self.mode_before,
            modeAfter = self.mode_after,
            knobsBefore = self.knobs_before,
            knobsAfter = self.knobs_after,
            justification = self.justification,
            epoch = self.epoch,
            "trust policy changed"
        );
    }
}

/// This instance installed a tenant's newer trust settings (its own change, or another
/// instance's found in the store).
pub struct TrustPolicyInstalled<'a> {
    pub tenant: &'a str,
    pub epoch: u64,
    pub policy_version: &'a str,
    /// `api` (this instance's change), `store` (read at start-up or by the poll).
    pub origin: &'a str,
}

impl TrustPolicyInstalled<'_> {
    pub fn emit(&self) {
        tracing::info!(
            event = "trust_policy_installed",
            tenant = self.tenant,
            epoch = self.epoch,
            policy_version = self.policy_version,
            origin = self.origin,
            "tenant trust policy installed"
        );
    }
}

/// A consumer's lag on one assigned partition (from librdkafka statistics).
pub struct ConsumerLag<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub lag: i64,
}

impl ConsumerLag<'_> {
    pub fn emit(&self) {
        metrics()
            .consumer_lag
            .get_or_create(&super::PartitionLabel { topic: self.topic.to_string(), partition: self.partition })
            .set(self.lag);
    }
}

/// An artifact actor rejected an observation (validated before routing: a bug, not bad input).
pub struct ObservationRejected<'a> {
    pub error: &'a str,
}

impl ObservationRejected<'_> {
    pub fn emit(&self) {
        metrics().observations.get_or_create(&outcome("rejected")).inc();
        crate::error_event!(LogEvent::ApplyRejected, error = self.error, "observation not applied");
    }
}

fn outcome(o: &str) -> OutcomeLabel {
    OutcomeLabel { outcome: o.to_string() }
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
        metrics().store_errors.get_or_create(&OperationLabel { operation: self.operation.to_string() }).inc();
        LogEvent::StoreRetry.count();
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
/// `threshold_not_met`), or a detached OpenPGP signature did (`kind` openpgp: the
/// `crypto::openpgp` reasons); unsigned documents are not failures. Counted in
/// `vex_dsse_verification_failures_total{kind,reason}`; logged as
/// `dsse_verification_failed` or `openpgp_verification_failed`.
pub struct DsseVerificationFailed<'a> {
    pub kind: crate::domain::codes::SignatureKind,
    pub source: &'a str,
    pub correlation_id: Option<&'a str>,
    pub issuer: Option<&'a str>,
    pub keyid: Option<&'a str>,
    pub reason: &'a str,
}

impl DsseVerificationFailed<'_> {
    pub fn emit(&self) {
        metrics()
            .dsse_verification_failures
            .get_or_create(&super::KindReasonLabel { kind: self.kind.to_string(), reason: self.reason.to_string() })
            .inc();
        let event = match self.kind {
            crate::domain::codes::SignatureKind::Dsse => LogEvent::DsseVerificationFailed,
            crate::domain::codes::SignatureKind::Openpgp => LogEvent::OpenPgpVerificationFailed,
        };
        event.count();
        tracing::warn!(
            event = event.as_str(),
            kind = self.kind.as_str(),
            source = self.source,
            correlationId = self.correlation_id,
            issuer = self.issuer,
            keyid = self.keyid,
            reason = self.reason,
            "signature verification failed"
        );
    }
}

/// A detached OpenPGP signature came with a DSSE envelope: the envelope's own signatures
/// decide, the detached one is ignored (and this line says so).
pub struct OpenPgpSignatureIgnored<'a> {
    pub source: &'a str,
    pub correlation_id: Option<&'a str>,
}

impl OpenPgpSignatureIgnored<'_> {
    pub fn emit(&self) {
        LogEvent::OpenPgpSignatureIgnored.count();
        tracing::warn!(
            event = LogEvent::OpenPgpSignatureIgnored.as_str(),
            source = self.source,
            correlationId = self.correlation_id,
            "detached OpenPGP signature beside a DSSE envelope ignored: the envelope's signatures decide"
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
    /// The failure was the request's fault (counted as `client_error`, not `failure`).
    pub client_error: bool,
    pub records: usize,
}

impl ExportJobFinished<'_> {
    pub fn emit(&self) {
        let m = metrics();
        m.export_duration.observe(self.duration.as_secs_f64());
        let result = match (self.error, self.client_error) {
            (None, _) => JobResult::Success.as_str(),
            (Some(_), true) => super::EXPORT_CLIENT_ERROR,
            (Some(_), false) => JobResult::Failure.as_str(),
        };
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
            Some(e) if self.client_error => tracing::info!(
                event = "export_job_rejected",
                job = self.job_id,
                format = self.format,
                error = e,
                "export job refused: the request's fault"
            ),
            Some(e) => {
                LogEvent::ExportJobFailed.count();
                tracing::warn!(
                    event = "export_job_failed",
                    job = self.job_id,
                    format = self.format,
                    duration_ms = self.duration.as_millis() as u64,
                    error = e,
                    "export job failed"
                );
            }
        }
    }
}

/// At most one log line per `interval`; counts the lines it held back.
pub struct LogRateLimit {
    interval: Duration,
    /// When the last line was written, and how many were held back since.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl LogRateLimit {
    pub const fn new(interval: Duration) -> LogRateLimit {
        LogRateLimit { interval, state: std::sync::Mutex::new((None, 0)) }
    }

    /// `Some(lines held back since the last one)` when a line may be written at `now`;
    /// `None` (counted as held back) otherwise.
    pub fn admit(&self, now: std::time::Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match s.0 {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                s.1 += 1;
                None
            }
            _ => {
                let held_back = s.1;
                *s = (Some(now), 0);
                Some(held_back)
            }
        }
    }
}

/// How often a failing trace export is logged at most (each failure is counted).
pub const TRACE_EXPORT_LOG_INTERVAL: Duration = Duration::from_secs(60);

static TRACE_EXPORT_LOG: LogRateLimit = LogRateLimit::new(TRACE_EXPORT_LOG_INTERVAL);

/// The OTLP export of a batch of spans failed (collector down or refusing, an HTTP error
/// status, a timeout): the spans are lost, the service's work is not. Every failure is
/// counted in `vex_trace_export_errors_total`; the warn line (`trace_export_failed`) is
/// written at most once per [`TRACE_EXPORT_LOG_INTERVAL`] with the number held back, so a
/// collector that is down does not flood the log.
pub struct TraceExportFailed<'a> {
    pub endpoint: &'a str,
    pub error: &'a str,
    /// Spans in the batch that was not exported.
    pub spans: usize,
}

impl TraceExportFailed<'_> {
    pub fn emit(&self) {
        metrics().trace_export_errors.inc();
        if let Some(held_back) = TRACE_EXPORT_LOG.admit(std::time::Instant::now()) {
            crate::warn_event!(
                LogEvent::TraceExportFailed,
                endpoint = self.endpoint,
                error = self.error,
                spans_lost = self.spans,
                failures_not_logged = held_back,
                "trace export failed; spans lost, ingestion unaffected (logged at most once a minute; every failure counts in vex_trace_export_errors_total)"
            );
        }
    }
}

/// The OTLP export succeeded again after failures.
pub struct TraceExportRecovered<'a> {
    pub endpoint: &'a str,
}

impl TraceExportRecovered<'_> {
    pub fn emit(&self) {
        tracing::info!(event = "trace_export_recovered", endpoint = self.endpoint, "trace export works again");
    }
}

/// The warn/error events without a struct of their own: each is logged through
/// [`warn_event!`](crate::warn_event) / [`error_event!`](crate::error_event), which also
/// counts it in `vex_log_events_total{level,event}` (pre-created at 0 for every code).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogEvent {
    // warn
    DeadLettered,
    StoreRetry,
    DsseVerificationFailed,
    OpenPgpVerificationFailed,
    OpenPgpSignatureIgnored,
    ExportJobFailed,
    RebuildSkip,
    ExportJobActorRestarting,
    ExportJobNotRecorded,
    StoreWriterRestarting,
    StoreUnreachable,
    StoreInitRetry,
    NoInputs,
    DeadLetterNotStored,
    IngestDirUnreadable,
    IngestFileSkipped,
    StdinError,
    FileNotMarked,
    RebalanceError,
    BrokerUnreachable,
    TopicCreateFailed,
    ProduceRetry,
    ConsumeError,
    CommitFailed,
    TrustPollFailed,
    RevokeDrainIncomplete,
    TraceExportFailed,
    StreamClientStalled,
    ExportBundleNotDeleted,
    FeedRequestRetry,
    FeedDocumentRejected,
    FeedFailed,
    // error
    ArtifactActorUnreachable,
    ApplyRejected,
    StoreWriterUnreachable,
    RebuildFailed,
    IssuerKeysUnusable,
    PipelineUnavailable,
    StoreWriteTaskFailed,
    RecordUndigestible,
    HandlerRetry,
    StoreBatchRejected,
    LoadRejected,
    ApiLoopbackOnly,
    TrustRecomputeFailed,
    StreamReadFailed,
}

impl LogEvent {
    pub const ALL: [LogEvent; 46] = [
        LogEvent::DeadLettered,
        LogEvent::StoreRetry,
        LogEvent::DsseVerificationFailed,
        LogEvent::OpenPgpVerificationFailed,
        LogEvent::OpenPgpSignatureIgnored,
        LogEvent::ExportJobFailed,
        LogEvent::RebuildSkip,
        LogEvent::ExportJobActorRestarting,
        LogEvent::ExportJobNotRecorded,
        LogEvent::StoreWriterRestarting,
        LogEvent::StoreUnreachable,
        LogEvent::StoreInitRetry,
        LogEvent::NoInputs,
        LogEvent::DeadLetterNotStored,
        LogEvent::IngestDirUnreadable,
        LogEvent::IngestFileSkipped,
        LogEvent::StdinError,
        LogEvent::FileNotMarked,
        LogEvent::RebalanceError,
        LogEvent::BrokerUnreachable,
        LogEvent::TopicCreateFailed,
        LogEvent::ProduceRetry,
        LogEvent::ConsumeError,
        LogEvent::CommitFailed,
        LogEvent::RevokeDrainIncomplete,
        LogEvent::ArtifactActorUnreachable,
        LogEvent::ApplyRejected,
        LogEvent::StoreWriterUnreachable,
        LogEvent::RebuildFailed,
        LogEvent::IssuerKeysUnusable,
        LogEvent::PipelineUnavailable,
        LogEvent::StoreWriteTaskFailed,
        LogEvent::RecordUndigestible,
        LogEvent::HandlerRetry,
        LogEvent::StoreBatchRejected,
        LogEvent::LoadRejected,
        LogEvent::ApiLoopbackOnly,
        LogEvent::TrustPollFailed,
        LogEvent::TrustRecomputeFailed,
        LogEvent::StreamReadFailed,
        LogEvent::TraceExportFailed,
        LogEvent::StreamClientStalled,
        LogEvent::ExportBundleNotDeleted,
        LogEvent::FeedRequestRetry,
        LogEvent::FeedDocumentRejected,
        LogEvent::FeedFailed,
    ];

    /// The `event` field of the log line and the `event` label.
    pub fn as_str(self) -> &'static str {
        match self {
            LogEvent::DeadLettered => "dead_lettered",
            LogEvent::StoreRetry => "store_retry",
            LogEvent::DsseVerificationFailed => "dsse_verification_failed",
            LogEvent::OpenPgpVerificationFailed => "openpgp_verification_failed",
            LogEvent::OpenPgpSignatureIgnored => "openpgp_signature_ignored",
            LogEvent::ExportJobFailed => "export_job_failed",
            LogEvent::RebuildSkip => "rebuild_skip",
            LogEvent::ExportJobActorRestarting => "export_job_actor_restarting",
            LogEvent::ExportJobNotRecorded => "export_job_not_recorded",
            LogEvent::StoreWriterRestarting => "store_writer_restarting",
            LogEvent::StoreUnreachable => "store_unreachable",
            LogEvent::StoreInitRetry => "store_init_retry",
            LogEvent::NoInputs => "no_inputs",
            LogEvent::DeadLetterNotStored => "dead_letter_not_stored",
            LogEvent::IngestDirUnreadable => "ingest_dir_unreadable",
            LogEvent::IngestFileSkipped => "ingest_file_skipped",
            LogEvent::StdinError => "stdin_error",
            LogEvent::FileNotMarked => "file_not_marked",
            LogEvent::RebalanceError => "rebalance_error",
            LogEvent::BrokerUnreachable => "broker_unreachable",
            LogEvent::TopicCreateFailed => "topic_create_failed",
            LogEvent::ProduceRetry => "produce_retry",
            LogEvent::ConsumeError => "consume_error",
            LogEvent::CommitFailed => "commit_failed",
            LogEvent::RevokeDrainIncomplete => "revoke_drain_incomplete",
            LogEvent::ArtifactActorUnreachable => "artifact_actor_unreachable",
            LogEvent::ApplyRejected => "apply_rejected",
            LogEvent::StoreWriterUnreachable => "store_writer_unreachable",
            LogEvent::RebuildFailed => "rebuild_failed",
            LogEvent::IssuerKeysUnusable => "issuer_keys_unusable",
            LogEvent::PipelineUnavailable => "pipeline_unavailable",
            LogEvent::StoreWriteTaskFailed => "store_write_task_failed",
            LogEvent::RecordUndigestible => "record_undigestible",
            LogEvent::HandlerRetry => "handler_retry",
            LogEvent::StoreBatchRejected => "store_batch_rejected",
            LogEvent::LoadRejected => "load_rejected",
            LogEvent::ApiLoopbackOnly => "api_loopback_only",
            LogEvent::TrustPollFailed => "trust_poll_failed",
            LogEvent::TrustRecomputeFailed => "trust_recompute_failed",
            LogEvent::StreamReadFailed => "stream_read_failed",
            LogEvent::TraceExportFailed => "trace_export_failed",
            LogEvent::StreamClientStalled => "stream_client_stalled",
            LogEvent::ExportBundleNotDeleted => "export_bundle_not_deleted",
            LogEvent::FeedRequestRetry => "feed_request_retry",
            LogEvent::FeedDocumentRejected => "feed_document_rejected",
            LogEvent::FeedFailed => "feed_failed",
        }
    }

    /// The level the event is logged at (`warn` or `error`).
    pub fn level(self) -> &'static str {
        match self {
            LogEvent::ArtifactActorUnreachable
            | LogEvent::ApplyRejected
            | LogEvent::StoreWriterUnreachable
            | LogEvent::RebuildFailed
            | LogEvent::IssuerKeysUnusable
            | LogEvent::PipelineUnavailable
            | LogEvent::StoreWriteTaskFailed
            | LogEvent::RecordUndigestible
            | LogEvent::LoadRejected
            | LogEvent::TrustRecomputeFailed => "error",
            _ => "warn",
        }
    }

    /// Counts one occurrence (called by the logging macros).
    pub fn count(self) {
        metrics()
            .log_events
            .get_or_create(&super::LogEventLabel { level: self.level().to_string(), event: self.as_str().to_string() })
            .inc();
    }
}

/// Logs a warn event and counts it: `warn_event!(LogEvent::X, field = value, ..., "message")`.
#[macro_export]
macro_rules! warn_event {
    ($code:expr, $($rest:tt)+) => {{
        let code: $crate::telemetry::events::LogEvent = $code;
        debug_assert_eq!(code.level(), "warn", "{:?} is an error event", code);
        code.count();
        ::tracing::warn!(event = code.as_str(), $($rest)+)
    }};
}

/// Logs an error event and counts it: `error_event!(LogEvent::X, field = value, ..., "message")`.
#[macro_export]
macro_rules! error_event {
    ($code:expr, $($rest:tt)+) => {{
        let code: $crate::telemetry::events::LogEvent = $code;
        debug_assert_eq!(code.level(), "error", "{:?} is a warn event", code);
        code.count();
        ::tracing::error!(event = code.as_str(), $($rest)+)
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn the_rate_limit_admits_one_line_per_interval_and_counts_the_rest() {
        let limit = LogRateLimit::new(Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(limit.admit(t0), Some(0), "the first line is written");
        for s in 1..=5 {
            assert_eq!(limit.admit(t0 + Duration::from_secs(s)), None);
        }
        assert_eq!(limit.admit(t0 + Duration::from_secs(60)), Some(5), "the next says how many were held back");
        assert_eq!(limit.admit(t0 + Duration::from_secs(61)), None);
        assert_eq!(limit.admit(t0 + Duration::from_secs(200)), Some(1));
        // A clock that seems to go back (another thread's earlier instant) holds back too.
        assert_eq!(limit.admit(t0), None);
    }

    #[test]
    fn the_budget_admits_a_burst_then_its_rate_and_counts_the_drops() {
        let budget = LogBudget::new("conflicts_appeared", 10, 3);
        let dropped = || {
            metrics()
                .log_lines_dropped
                .get_or_create(&crate::telemetry::EventLabel { event: "conflicts_appeared".into() })
                .get()
        };
        let before = dropped();
        let t0 = Instant::now();
        assert!((0..3).all(|_| budget.admit(t0)), "the burst");
        assert!(!budget.admit(t0), "over the burst");
        assert!(!budget.admit(t0 + Duration::from_millis(50)), "half a token");
        assert!(budget.admit(t0 + Duration::from_millis(100)), "one token a tenth of a second");
        assert!(!budget.admit(t0 + Duration::from_millis(100)));
        // Idle for long: back to the burst, no more.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| budget.admit(later)));
        assert!(!budget.admit(later));
        // An earlier instant (another thread's) adds nothing.
        assert!(!budget.admit(t0));
        assert!(dropped() >= before + 5, "every line held back is counted");
    }
}
