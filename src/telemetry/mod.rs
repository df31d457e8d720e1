//! Telemetry: every metric name in one place, the Prometheus registry, one struct per
//! telemetry event (log line + metric together), the log set-up and the trace export
//! ([`trace`]: OTLP, off by default).
//!
//! Invariants: no other module names a metric; label values come from small closed sets
//! (reason codes, recompute reasons), never an artifact or observation id; every event
//! logs its correlation fields (`correlationId`, `artifactKey`, `advisoryKey`, `issuer`)
//! when it has them.

pub mod correlation;
pub mod events;
pub mod trace;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::OnceLock;

/// Metric names (as exposed; counters carry their `_total` suffix here).
pub mod names {
    /// Histogram: document arrival (Kafka timestamp, or embedded arrival) to durable consensus write.
    pub const CONSENSUS_LATENCY_SECONDS: &str = "vex_consensus_latency_seconds";
    /// Gauge{tenant}: open conflicts (`vex_conflict_queue`) per tenant.
    pub const CONFLICT_QUEUE_DEPTH: &str = "vex_conflict_queue_depth";
    /// Histogram{reason}: recomputation time; reason `ingestion_delta`, `rebuild`,
    /// `issuer_update` or `policy_knob` (one package re-evaluated after a trust change).
    pub const RECOMPUTE_DURATION_SECONDS: &str = "vex_recompute_duration_seconds";
    /// Histogram: export job runtime (export jobs run by the service).
    pub const EXPORT_DURATION_SECONDS: &str = "vex_export_duration_seconds";
    /// Counter{result}: export jobs run by the service: `success`, `failure` (the
    /// service's fault: the store, a file write, signing) or `client_error` (the request's
    /// fault, e.g. 422 `nothing_to_export`; outside the failure-rate alert).
    pub const EXPORT_JOBS_TOTAL: &str = "vex_export_jobs_total";
    /// Counter{reason}: failed DSSE verifications, by failure reason.
    pub const DSSE_VERIFICATION_FAILURES_TOTAL: &str = "vex_dsse_verification_failures_total";
    /// Counter{reason}: conflicts that appeared on a record (a reason the record did not
    /// have before), not re-evaluations of a record that already had them.
    pub const CONSENSUS_CONFLICTS_TOTAL: &str = "vex_consensus_conflicts_total";
    /// Counter: documents normalised successfully.
    pub const DOCUMENTS_INGESTED_TOTAL: &str = "vex_documents_ingested_total";
    /// Counter: observations made durable together with their records.
    pub const OBSERVATIONS_APPLIED_TOTAL: &str = "vex_observations_applied_total";
    /// Counter{reason}: messages/documents dead-lettered, by reason code.
    pub const DEAD_LETTER_TOTAL: &str = "vex_dead_letter_total";
    /// Counter{outcome}: input documents by outcome (`ingested`, `dead_lettered`).
    pub const DOCUMENTS_TOTAL: &str = "vex_documents_total";
    /// Counter{outcome}: observations by outcome (`applied`, `dead_lettered`, `rejected`).
    pub const OBSERVATIONS_TOTAL: &str = "vex_observations_total";
    /// Histogram{operation}: store operation time (one attempt) by operation.
    pub const STORE_OPERATION_DURATION_SECONDS: &str = "vex_store_operation_duration_seconds";
    /// Counter{operation}: failed store operations by operation (each is retried).
    pub const STORE_ERRORS_TOTAL: &str = "vex_store_errors_total";
    /// Gauge: live artifact actors.
    pub const ARTIFACT_ACTORS: &str = "vex_artifact_actors";
    /// Gauge: observations the live artifact actors' states hold together (bounded by
    /// `actors.max_live_observations` plus what busy actors hold beyond it).
    pub const ARTIFACT_OBSERVATIONS: &str = "vex_artifact_observations";
    /// Gauge: observations routed to artifact actors and not yet durable (mailbox/in flight).
    pub const OBSERVATIONS_IN_FLIGHT: &str = "vex_observations_in_flight";
    /// Gauge{topic,partition}: consumer lag (high watermark minus position) per partition.
    pub const CONSUMER_LAG: &str = "vex_kafka_consumer_lag";
    /// Counter: issuer trust changes (trust tier or weight) applied.
    pub const ISSUER_TRUST_CHANGES_TOTAL: &str = "vex_issuer_trust_changes_total";
    /// Counter{level,event}: warn/error log events by event code.
    pub const LOG_EVENTS_TOTAL: &str = "vex_log_events_total";
    /// Counter: failed OTLP exports of a batch of spans (collector down, refusing, an HTTP
    /// error status, a timeout); stays 0 with export off.
    pub const TRACE_EXPORT_ERRORS_TOTAL: &str = "vex_trace_export_errors_total";
    /// Counter{event}: info lines not written because their event was over its rate
    /// (`consensus_changed`, `conflicts_appeared`: see `events::LogBudget`).
    pub const LOG_LINES_DROPPED_TOTAL: &str = "vex_log_lines_dropped_total";
    /// Counter{feed,status}: a feed's HTTP requests by response status (`304`: a
    /// conditional hit; `error`: no response).
    pub const FEED_REQUESTS_TOTAL: &str = "vex_feed_requests_total";
    /// Counter{feed,outcome,reason}: a feed's documents by outcome (`fetched`, `emitted`,
    /// `dead_lettered`, `unchanged`, `deferred`, `rejected`, `skipped`; `reason` set for
    /// the last two, else empty).
    pub const FEED_DOCUMENTS_TOTAL: &str = "vex_feed_documents_total";
    /// Counter{feed}: bytes of bodies a feed received.
    pub const FEED_BYTES_TOTAL: &str = "vex_feed_bytes_total";
    /// Counter{feed}: `changes.csv` rewinds reconciled against `index.txt`.
    pub const FEED_REWINDS_TOTAL: &str = "vex_feed_rewinds_total";
    /// Gauge{feed}: end of the feed's last run without a feed-level failure (Unix
    /// seconds); a feed that never succeeded reads the time `serve` started it, so the
    /// staleness alert counts from there.
    pub const FEED_LAST_SUCCESS_SECONDS: &str = "vex_feed_last_success_timestamp_seconds";
    /// Gauge{feed}: the feed's configured interval (seconds), for the staleness alert.
    pub const FEED_INTERVAL_SECONDS: &str = "vex_feed_interval_seconds";
    /// Counter{reason}: files of the watched directory not read (not_regular,
    /// symlink_outside, unreadable, changed), each counted once while it stays so.
    pub const INGEST_FILES_SKIPPED_TOTAL: &str = "vex_ingest_files_skipped_total";
    /// Counter{code}: diagnostics of the documents normalised, by diagnostic code.
    pub const DIAGNOSTICS_TOTAL: &str = "vex_diagnostics_total";
    /// Counter{store,kind,collection}: what the store wrote: `kind` `document` (a
    /// document/row inserted, replaced or deleted) or `index_entry` (an entry of a
    /// secondary index maintained for it); `store` `embedded` or `mongodb`; `collection`
    /// the collection (table). Divided by `vex_observations_applied_total`: the writes
    /// per observation.
    pub const STORE_WRITES_TOTAL: &str = "vex_store_writes_total";

    /// Gauge: start time of the process (Unix seconds): its changes count restarts (the
    /// crash-loop alert). The standard `process_*` name, as every Prometheus client has it.
    pub const PROCESS_START_TIME_SECONDS: &str = "process_start_time_seconds";
    /// Gauge: resident memory of the process (bytes; Linux `/proc/self/statm`, 0 elsewhere).
    pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
    /// Gauge: open file descriptors of the process (Linux `/proc/self/fd`, 0 elsewhere).
    pub const PROCESS_OPEN_FDS: &str = "process_open_fds";

    /// The standard process metrics registered beside [`ALL`].
    pub const PROCESS: [&str; 3] = [PROCESS_START_TIME_SECONDS, PROCESS_RESIDENT_MEMORY_BYTES, PROCESS_OPEN_FDS];

    /// Every registered `vex_*` metric name (as it appears in `/metrics`, without histogram suffixes).
    pub const ALL: [&str; 31] = [
        CONSENSUS_LATENCY_SECONDS,
        CONFLICT_QUEUE_DEPTH,
        RECOMPUTE_DURATION_SECONDS,
        EXPORT_DURATION_SECONDS,
        EXPORT_JOBS_TOTAL,
        DSSE_VERIFICATION_FAILURES_TOTAL,
        CONSENSUS_CONFLICTS_TOTAL,
        DOCUMENTS_INGESTED_TOTAL,
        OBSERVATIONS_APPLIED_TOTAL,
        DEAD_LETTER_TOTAL,
        DOCUMENTS_TOTAL,
        OBSERVATIONS_TOTAL,
        STORE_OPERATION_DURATION_SECONDS,
        STORE_ERRORS_TOTAL,
        ARTIFACT_ACTORS,
        ARTIFACT_OBSERVATIONS,
        OBSERVATIONS_IN_FLIGHT,
        CONSUMER_LAG,
        ISSUER_TRUST_CHANGES_TOTAL,
        LOG_EVENTS_TOTAL,
        TRACE_EXPORT_ERRORS_TOTAL,
        LOG_LINES_DROPPED_TOTAL,
        FEED_REQUESTS_TOTAL,
        FEED_DOCUMENTS_TOTAL,
        FEED_BYTES_TOTAL,
        FEED_REWINDS_TOTAL,
        FEED_LAST_SUCCESS_SECONDS,
        FEED_INTERVAL_SECONDS,
        INGEST_FILES_SKIPPED_TOTAL,
        DIAGNOSTICS_TOTAL,
        STORE_WRITES_TOTAL,
    ];
}

/// The closed label value sets. Every labelled counter series a panel or alert reads is
/// created at 0 at start-up from these, because `rate()`/`increase()` never count a
/// series' first sample: a series born by its first increment hides that increment.
pub mod labels {
    /// Dead-letter reason codes: every [`DeadLetterReason`](crate::domain::codes::DeadLetterReason).
    pub const DEAD_LETTER_REASONS: &[crate::domain::codes::DeadLetterReason] =
        crate::domain::codes::DeadLetterReason::ALL;
    /// Conflict reasons: every [`ConflictReason`](crate::domain::codes::ConflictReason).
    pub const CONFLICT_REASONS: &[crate::domain::codes::ConflictReason] = crate::domain::codes::ConflictReason::ALL;
    /// DSSE failure reasons (`crypto::verify::FailureReason::as_str`).
    pub const DSSE_FAILURE_REASONS: [&str; 4] =
        ["bad_signature", "malformed_envelope", "wrong_key", "threshold_not_met"];
    /// OpenPGP failure reasons (`crypto::openpgp::OpenPgpFailure`, as signature reasons).
    pub const OPENPGP_FAILURE_REASONS: [&str; 6] =
        ["bad_signature", "invalid_key", "key_expired", "key_revoked", "malformed_signature", "weak_hash"];
    /// `kind` of `vex_dsse_verification_failures_total` with the reasons of each kind.
    pub const VERIFICATION_FAILURE_LABELS: [(&str, &[&str]); 2] =
        [("dsse", &DSSE_FAILURE_REASONS), ("openpgp", &OPENPGP_FAILURE_REASONS)];
    /// Export job results (`result` of `vex_export_jobs_total`): the stored
    /// [`JobResult`](crate::ports::JobResult)s, with a failure that was the request's
    /// fault counted apart as `client_error`.
    pub const EXPORT_RESULTS: [&str; 3] = ["success", "failure", super::EXPORT_CLIENT_ERROR];
    /// Document outcomes.
    pub const DOCUMENT_OUTCOMES: [&str; 2] = ["ingested", "dead_lettered"];
    /// Observation outcomes.
    pub const OBSERVATION_OUTCOMES: [&str; 3] = ["applied", "dead_lettered", "rejected"];
    /// Store operations of the store writer.
    pub const STORE_OPERATIONS: [&str; 5] =
        ["put_verification", "put_observations", "put_records", "observations_for_package", "conflict_queue_depth"];
    /// `(store, kind, collection)` of `vex_store_writes_total`: the collections (tables)
    /// of the ingest path, each with the kinds its store writes there (an embedded table
    /// has no secondary index: the history log's index and the stream tails are counted as
    /// its index entries).
    pub const STORE_WRITES: &[(&str, &str, &str)] = &[
        ("embedded", "document", "vex_observations"),
        ("embedded", "document", "vex_document_versions"),
        ("embedded", "document", "vex_consensus"),
        ("embedded", "document", "vex_consensus_history_log"),
        ("embedded", "document", "vex_conflict_queue"),
        ("embedded", "document", "vex_dsse_verifications"),
        ("embedded", "document", "ingested_files"),
        ("embedded", "document", "dead_letters"),
        ("embedded", "index_entry", "vex_consensus_history_index"),
        ("embedded", "index_entry", "vex_consensus_change_tails"),
        ("mongodb", "document", "vex_observations"),
        ("mongodb", "index_entry", "vex_observations"),
        ("mongodb", "document", "vex_document_ledger"),
        ("mongodb", "document", "vex_consensus"),
        ("mongodb", "index_entry", "vex_consensus"),
        ("mongodb", "document", "vex_consensus_history"),
        ("mongodb", "index_entry", "vex_consensus_history"),
        ("mongodb", "document", "vex_conflict_queue"),
        ("mongodb", "index_entry", "vex_conflict_queue"),
        ("mongodb", "document", "vex_consensus_changes"),
        ("mongodb", "index_entry", "vex_consensus_changes"),
        ("mongodb", "document", "vex_dsse_verifications"),
    ];
    /// Why a watched file was not read (`sources::scan::SkipReason::as_str`).
    pub const INGEST_SKIP_REASONS: [&str; 4] = ["not_regular", "symlink_outside", "unreadable", "changed"];
    /// The info events written at most at their rate (`vex_log_lines_dropped_total{event}`).
    pub const RATE_LIMITED_EVENTS: [&str; 2] = ["consensus_changed", "conflicts_appeared"];
    /// Recompute reasons.
    pub const RECOMPUTE_REASONS: [&str; 4] = [
        super::RECOMPUTE_INGESTION_DELTA,
        super::RECOMPUTE_REBUILD,
        super::RECOMPUTE_ISSUER_UPDATE,
        super::RECOMPUTE_POLICY_KNOB,
    ];
}

/// Label set `{kind, reason}` of signature verification failures (`kind`: `dsse` or
/// `openpgp`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindReasonLabel {
    pub kind: String,
    pub reason: String,
}

/// Label set `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Label set `{code}` (diagnostic codes: a closed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: String,
}

/// Label set `{store, kind, collection}` of `vex_store_writes_total` (closed sets: two
/// stores, two kinds, the collections of the stores).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreWriteLabel {
    pub store: String,
    pub kind: String,
    pub collection: String,
}

/// Label set `{tenant}` (tenants are configured, a small set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

/// Label set `{outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

/// Label set `{operation}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    pub operation: String,
}

/// Label set `{topic, partition}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabel {
    pub topic: String,
    pub partition: i32,
}

/// Label set `{level, event}` (event codes of warn/error events).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LogEventLabel {
    pub level: String,
    pub event: String,
}

/// Label set `{event}` (the rate-limited info events).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabel {
    pub event: String,
}

/// Label set `{feed}` (feeds are configured, a small set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedLabel {
    pub feed: String,
}

/// Label set `{feed, status}` (HTTP statuses: a small set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedStatusLabel {
    pub feed: String,
    pub status: String,
}

/// Label set `{feed, outcome, reason}` (closed sets of the feed source's codes).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeedOutcomeLabel {
    pub feed: String,
    pub outcome: String,
    pub reason: String,
}

/// Label set `{result}` (`success` or `failure`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// The `result` of an export job that failed through the request's fault.
pub const EXPORT_CLIENT_ERROR: &str = "client_error";

/// Recompute reasons (the `reason` label of `vex_recompute_duration_seconds`).
pub const RECOMPUTE_INGESTION_DELTA: &str = "ingestion_delta";
pub const RECOMPUTE_REBUILD: &str = "rebuild";
/// A tenant's issuer tier/weight changed (`PUT /v1/vex/trust/issuers/{id}`).
pub const RECOMPUTE_ISSUER_UPDATE: &str = "issuer_update";
/// A tenant's mode or knobs changed (`PUT /v1/vex/trust/policy`).
pub const RECOMPUTE_POLICY_KNOB: &str = "policy_knob";

fn latency_histogram() -> Histogram {
    // 1 ms .. ~65 s
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Buckets of `vex_consensus_latency_seconds`: resolve 10 ms .. 2 s around the runbook's
/// 1.5 s p99 alert, and still place a long tail.
pub const CONSENSUS_LATENCY_BUCKETS: &[f64] =
    &[0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 5.0, 10.0, 30.0, 60.0];

/// The process-wide metrics.
pub struct Metrics {
    pub registry: Registry,
    pub consensus_latency: Histogram,
    pub conflict_queue_depth: Family<TenantLabel, Gauge>,
    pub recompute_duration: Family<ReasonLabel, Histogram>,
    pub export_duration: Histogram,
    pub export_jobs: Family<ResultLabel, Counter>,
    pub dsse_verification_failures: Family<KindReasonLabel, Counter>,
    pub consensus_conflicts: Family<ReasonLabel, Counter>,
    pub documents_ingested: Counter,
    pub observations_applied: Counter,
    pub dead_letter: Family<ReasonLabel, Counter>,
    pub documents: Family<OutcomeLabel, Counter>,
    pub observations: Family<OutcomeLabel, Counter>,
    pub store_operation_duration: Family<OperationLabel, Histogram>,
    pub store_errors: Family<OperationLabel, Counter>,
    pub artifact_actors: Gauge,
    pub artifact_observations: Gauge,
    pub observations_in_flight: Gauge,
    pub consumer_lag: Family<PartitionLabel, Gauge>,
    pub issuer_trust_changes: Counter,
    pub log_events: Family<LogEventLabel, Counter>,
    pub trace_export_errors: Counter,
    pub log_lines_dropped: Family<EventLabel, Counter>,
    pub feed_requests: Family<FeedStatusLabel, Counter>,
    pub feed_documents: Family<FeedOutcomeLabel, Counter>,
    pub feed_bytes: Family<FeedLabel, Counter>,
    pub feed_rewinds: Family<FeedLabel, Counter>,
    pub feed_last_success: Family<FeedLabel, Gauge>,
    pub feed_interval: Family<FeedLabel, Gauge>,
    pub ingest_files_skipped: Family<ReasonLabel, Counter>,
    pub diagnostics: Family<CodeLabel, Counter>,
    pub store_writes: Family<StoreWriteLabel, Counter>,
    pub process_start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub process_resident_memory: Gauge,
    pub process_open_fds: Gauge,
}

/// The process' start time (Unix seconds): Linux `/proc/self/stat` field 22 (clock ticks
/// after boot) plus the boot time of `/proc/stat` (`btime`); elsewhere, or when that cannot
/// be read, the time the metrics were first registered (early in `main`).
fn read_process_start_time() -> f64 {
    fn from_proc() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces.
        let after = &stat[stat.rfind(')')? + 2..];
        let ticks: f64 = after.split(' ').nth(19)?.parse().ok()?;
        let btime: f64 = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        // USER_HZ is 100 on every Linux architecture the service builds for.
        Some(btime + ticks / 100.0)
    }
    from_proc().unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    })
}

/// Resident memory (bytes) and open file descriptors of the process, read at scrape time.
fn process_usage() -> (i64, i64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split(' ').nth(1).and_then(|p| p.parse::<i64>().ok()))
        .map_or(0, |pages| pages * 4096);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as i64);
    (rss, fds)
}

fn counter_name(name: &str) -> &str {
    // prometheus-client appends `_total` to counters itself.
    name.strip_suffix("_total").unwrap_or(name)
}

fn reason(r: &str) -> ReasonLabel {
    ReasonLabel { reason: r.to_string() }
}

fn pre_create<L: Clone + std::hash::Hash + Eq, M: prometheus_client::metrics::TypedMetric>(
    family: &Family<L, M, impl prometheus_client::metrics::family::MetricConstructor<M>>,
    labels: impl IntoIterator<Item = L>,
) {
    for l in labels {
        let _ = family.get_or_create(&l);
    }
}

impl Metrics {
    /// Every metric registered, family by family, in the order of [`names::ALL`] then
    /// [`names::PROCESS`] (the order of the exposition), labelled counters pre-created at 0.
    fn new() -> Metrics {
        let mut m = Metrics::unregistered();
        m.register_consensus();
        m.register_export();
        m.register_ingest_outcomes();
        m.register_store_operations();
        m.register_pipeline();
        m.register_telemetry();
        m.register_feeds();
        m.register_inputs();
        m.register_store_writes();
        m.register_process();
        m
    }

    /// The metrics, not yet in the (empty) registry.
    fn unregistered() -> Metrics {
        Metrics {
            registry: Registry::default(),
            consensus_latency: Histogram::new(CONSENSUS_LATENCY_BUCKETS.iter().copied()),
            conflict_queue_depth: Family::default(),
            recompute_duration: Family::new_with_constructor(latency_histogram as fn() -> _),
            export_duration: latency_histogram(),
            export_jobs: Family::default(),
            dsse_verification_failures: Family::default(),
            consensus_conflicts: Family::default(),
            documents_ingested: Counter::default(),
            observations_applied: Counter::default(),
            dead_letter: Family::default(),
            documents: Family::default(),
            observations: Family::default(),
            store_operation_duration: Family::new_with_constructor(latency_histogram as fn() -> _),
            store_errors: Family::default(),
            artifact_actors: Gauge::default(),
            artifact_observations: Gauge::default(),
            observations_in_flight: Gauge::default(),
            consumer_lag: Family::default(),
            issuer_trust_changes: Counter::default(),
            log_events: Family::default(),
            trace_export_errors: Counter::default(),
            log_lines_dropped: Family::default(),
            feed_requests: Family::default(),
            feed_documents: Family::default(),
            feed_bytes: Family::default(),
            feed_rewinds: Family::default(),
            feed_last_success: Family::default(),
            feed_interval: Family::default(),
            ingest_files_skipped: Family::default(),
            diagnostics: Family::default(),
            store_writes: Family::default(),
            process_start_time: Gauge::default(),
            process_resident_memory: Gauge::default(),
            process_open_fds: Gauge::default(),
        }
    }

    /// Consensus: arrival to durable write, the conflict queue, recomputation time.
    fn register_consensus(&mut self) {
        self.registry.register(
            names::CONSENSUS_LATENCY_SECONDS,
            "Time from a document's arrival (Kafka timestamp or embedded arrival) to the durable consensus write",
            self.consensus_latency.clone(),
        );
        self.registry.register(
            names::CONFLICT_QUEUE_DEPTH,
            "Open conflicts in the conflict queue, per tenant",
            self.conflict_queue_depth.clone(),
        );
        pre_create(&self.recompute_duration, labels::RECOMPUTE_REASONS.map(reason));
        self.registry.register(
            names::RECOMPUTE_DURATION_SECONDS,
            "Consensus recomputation time by trigger (ingestion_delta, rebuild)",
            self.recompute_duration.clone(),
        );
    }

    /// Export jobs run by the service: runtime and result.
    fn register_export(&mut self) {
        self.registry.register(names::EXPORT_DURATION_SECONDS, "Export job runtime", self.export_duration.clone());
        pre_create(&self.export_jobs, labels::EXPORT_RESULTS.map(|r| ResultLabel { result: r.to_string() }));
        self.registry.register(
            counter_name(names::EXPORT_JOBS_TOTAL),
            "Export jobs run by the service, by result (success, failure: the service's fault, client_error: the request's)",
            self.export_jobs.clone(),
        );
    }

    /// What became of the inputs: failed signature verifications, conflicts that appeared,
    /// documents and observations by outcome, dead letters.
    fn register_ingest_outcomes(&mut self) {
        pre_create(
            &self.dsse_verification_failures,
            labels::VERIFICATION_FAILURE_LABELS.iter().flat_map(|(kind, reasons)| {
                reasons.iter().map(|r| KindReasonLabel { kind: kind.to_string(), reason: r.to_string() })
            }),
        );
        self.registry.register(
            counter_name(names::DSSE_VERIFICATION_FAILURES_TOTAL),
            "Failed signature verifications (DSSE envelopes, detached OpenPGP signatures) by kind and reason",
            self.dsse_verification_failures.clone(),
        );
        pre_create(&self.consensus_conflicts, labels::CONFLICT_REASONS.iter().map(|r| reason(r.as_str())));
        self.registry.register(
            counter_name(names::CONSENSUS_CONFLICTS_TOTAL),
            "Conflicts that appeared on consensus records, by reason",
            self.consensus_conflicts.clone(),
        );
        self.registry.register(
            counter_name(names::DOCUMENTS_INGESTED_TOTAL),
            "VEX documents normalised",
            self.documents_ingested.clone(),
        );
        self.registry.register(
            counter_name(names::OBSERVATIONS_APPLIED_TOTAL),
            "Observations made durable with their consensus records",
            self.observations_applied.clone(),
        );
        pre_create(&self.dead_letter, labels::DEAD_LETTER_REASONS.iter().map(|r| reason(r.as_str())));
        self.registry.register(
            counter_name(names::DEAD_LETTER_TOTAL),
            "Dead-lettered inputs by reason",
            self.dead_letter.clone(),
        );
        let outcome = |o: &str| OutcomeLabel { outcome: o.to_string() };
        pre_create(&self.documents, labels::DOCUMENT_OUTCOMES.map(outcome));
        self.registry.register(
            counter_name(names::DOCUMENTS_TOTAL),
            "Input documents by outcome (ingested, dead_lettered)",
            self.documents.clone(),
        );
        pre_create(&self.observations, labels::OBSERVATION_OUTCOMES.map(outcome));
        self.registry.register(
            counter_name(names::OBSERVATIONS_TOTAL),
            "Observations by outcome (applied, dead_lettered, rejected)",
            self.observations.clone(),
        );
    }

    /// The store writer's operations: time of one attempt, failures.
    fn register_store_operations(&mut self) {
        let operation = |o: &str| OperationLabel { operation: o.to_string() };
        pre_create(&self.store_operation_duration, labels::STORE_OPERATIONS.map(operation));
        self.registry.register(
            names::STORE_OPERATION_DURATION_SECONDS,
            "Store operation time (one attempt) by operation",
            self.store_operation_duration.clone(),
        );
        pre_create(&self.store_errors, labels::STORE_OPERATIONS.map(operation));
        self.registry.register(
            counter_name(names::STORE_ERRORS_TOTAL),
            "Failed store operations by operation (each failure is retried)",
            self.store_errors.clone(),
        );
    }

    /// The pipeline's state: artifact actors, observations in flight, consumer lag; and
    /// the issuer trust changes it applied.
    fn register_pipeline(&mut self) {
        self.registry.register(names::ARTIFACT_ACTORS, "Live artifact actors", self.artifact_actors.clone());
        self.registry.register(
            names::ARTIFACT_OBSERVATIONS,
            "Observations the live artifact actors' states hold",
            self.artifact_observations.clone(),
        );
        self.registry.register(
            names::OBSERVATIONS_IN_FLIGHT,
            "Observations routed to artifact actors and not yet durable",
            self.observations_in_flight.clone(),
        );
        self.registry.register(
            names::CONSUMER_LAG,
            "Kafka consumer lag (high watermark minus position) per assigned partition",
            self.consumer_lag.clone(),
        );
        self.registry.register(
            counter_name(names::ISSUER_TRUST_CHANGES_TOTAL),
            "Issuer trust changes (tier or weight) applied",
            self.issuer_trust_changes.clone(),
        );
    }

    /// Telemetry's own: warn and error events, failed trace exports, rate-limited lines.
    fn register_telemetry(&mut self) {
        pre_create(
            &self.log_events,
            events::LogEvent::ALL
                .map(|e| LogEventLabel { level: e.level().to_string(), event: e.as_str().to_string() }),
        );
        self.registry.register(
            counter_name(names::LOG_EVENTS_TOTAL),
            "Warn and error log events by level and event code",
            self.log_events.clone(),
        );
        self.registry.register(
            counter_name(names::TRACE_EXPORT_ERRORS_TOTAL),
            "Failed OTLP exports of a batch of spans (the spans are lost, the service's work is not)",
            self.trace_export_errors.clone(),
        );
        pre_create(&self.log_lines_dropped, labels::RATE_LIMITED_EVENTS.map(|e| EventLabel { event: e.to_string() }));
        self.registry.register(
            counter_name(names::LOG_LINES_DROPPED_TOTAL),
            "Info log lines not written because their event was over its rate limit",
            self.log_lines_dropped.clone(),
        );
    }

    /// The feeds (labelled by configured feed: nothing to pre-create).
    fn register_feeds(&mut self) {
        self.registry.register(
            counter_name(names::FEED_REQUESTS_TOTAL),
            "Feed HTTP requests by feed and response status (304: conditional hit; error: no response)",
            self.feed_requests.clone(),
        );
        self.registry.register(
            counter_name(names::FEED_DOCUMENTS_TOTAL),
            "Feed documents by feed, outcome and (rejected, skipped) reason",
            self.feed_documents.clone(),
        );
        self.registry.register(
            counter_name(names::FEED_BYTES_TOTAL),
            "Bytes of bodies received by a feed",
            self.feed_bytes.clone(),
        );
        self.registry.register(
            counter_name(names::FEED_REWINDS_TOTAL),
            "changes.csv rewinds reconciled against index.txt, by feed",
            self.feed_rewinds.clone(),
        );
        self.registry.register(
            names::FEED_LAST_SUCCESS_SECONDS,
            "End of the feed's last run without a feed-level failure (Unix seconds)",
            self.feed_last_success.clone(),
        );
        self.registry.register(
            names::FEED_INTERVAL_SECONDS,
            "The feed's configured check interval (seconds)",
            self.feed_interval.clone(),
        );
    }

    /// Inputs: files the watched directory's source did not read, diagnostics of the
    /// documents normalised.
    fn register_inputs(&mut self) {
        pre_create(&self.ingest_files_skipped, labels::INGEST_SKIP_REASONS.map(reason));
        self.registry.register(
            counter_name(names::INGEST_FILES_SKIPPED_TOTAL),
            "Files of the watched directory not read, by reason (each counted once while it stays so)",
            self.ingest_files_skipped.clone(),
        );
        pre_create(
            &self.diagnostics,
            crate::domain::codes::DiagnosticCode::ALL.iter().map(|c| CodeLabel { code: c.as_str().to_string() }),
        );
        self.registry.register(
            counter_name(names::DIAGNOSTICS_TOTAL),
            "Diagnostics of the documents normalised, by diagnostic code",
            self.diagnostics.clone(),
        );
    }

    /// What the stores wrote, by store, kind and collection.
    fn register_store_writes(&mut self) {
        pre_create(
            &self.store_writes,
            labels::STORE_WRITES.iter().map(|(store, kind, collection)| StoreWriteLabel {
                store: store.to_string(),
                kind: kind.to_string(),
                collection: collection.to_string(),
            }),
        );
        self.registry.register(
            counter_name(names::STORE_WRITES_TOTAL),
            "Documents (rows) and secondary index entries the store wrote, by store, kind and collection",
            self.store_writes.clone(),
        );
    }

    /// The standard process metrics (the start time read now, the others at scrape time).
    fn register_process(&mut self) {
        self.process_start_time.set(read_process_start_time());
        self.registry.register(
            names::PROCESS_START_TIME_SECONDS,
            "Start time of the process since the Unix epoch in seconds",
            self.process_start_time.clone(),
        );
        self.registry.register(
            names::PROCESS_RESIDENT_MEMORY_BYTES,
            "Resident memory size in bytes",
            self.process_resident_memory.clone(),
        );
        self.registry.register(
            names::PROCESS_OPEN_FDS,
            "Number of open file descriptors",
            self.process_open_fds.clone(),
        );
    }

    /// `vex_store_writes_total{kind, collection}` summed over the stores.
    pub fn store_writes_of(&self, kind: &str, collection: &str) -> u64 {
        ["embedded", "mongodb"]
            .iter()
            .map(|store| {
                let label = StoreWriteLabel {
                    store: store.to_string(),
                    kind: kind.to_string(),
                    collection: collection.to_string(),
                };
                self.store_writes.get_or_create(&label).get()
            })
            .sum()
    }

    /// Sets the conflict queue depth of every tenant in `depths`, and 0 for every tenant
    /// seen before and absent now (its queue emptied).
    pub fn set_conflict_queue_depths(&self, depths: &[(String, u64)]) {
        let seen: Vec<TenantLabel> = {
            // Family exposes no key iteration; remember tenants ourselves.
            static KNOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
            let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
            for (t, _) in depths {
                if !known.contains(t) {
                    known.push(t.clone());
                }
            }
            known.iter().map(|t| TenantLabel { tenant: t.clone() }).collect()
        };
        for l in seen {
            let d = depths.iter().find(|(t, _)| *t == l.tenant).map_or(0, |(_, d)| *d);
            self.conflict_queue_depth.get_or_create(&l).set(d as i64);
        }
    }

    /// Prometheus text exposition of every metric (the process gauges read now).
    pub fn encode(&self) -> String {
        let (rss, fds) = process_usage();
        self.process_resident_memory.set(rss);
        self.process_open_fds.set(fds);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process-wide metrics (registered on first use).
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// How log lines are written on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, event fields flattened (the runbook's field names).
    Json,
    /// Compact human-readable lines (coloured only on a terminal, see [`use_colour`]).
    Text,
}

impl LogFormat {
    /// Text when stderr (where the lines go) is a terminal (a person is watching), JSON
    /// otherwise.
    pub fn for_terminal() -> LogFormat {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            LogFormat::Text
        } else {
            LogFormat::Json
        }
    }
}

/// Whether text log lines are coloured: only when stderr is a terminal and `NO_COLOR`
/// is unset or empty (<https://no-color.org>), so a redirected log holds no ANSI escapes.
pub fn use_colour() -> bool {
    use std::io::IsTerminal;
    colour_for(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR").as_deref())
}

fn colour_for(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.map_or(true, |v| v.is_empty())
}

/// Installs logs on stderr in `format` (`RUST_LOG` filters; default `info`), without
/// trace export. Idempotent.
pub fn init_logging(format: LogFormat) {
    let _ = install(format, None);
}

/// Installs logs as [`init_logging`] does and, when `telemetry.export_enabled`, the OTLP
/// trace export of the crate's spans (level INFO and above, whatever `RUST_LOG` says).
/// With export off nothing but the log layer is built. Keep the returned handle alive
/// until the end: [`trace::TraceExport::shutdown`] flushes the queued spans. Call outside
/// any async runtime.
pub fn init(
    format: LogFormat,
    cfg: &crate::config::TelemetryConfig,
) -> Result<Option<trace::TraceExport>, trace::TraceError> {
    if !cfg.export_enabled {
        let _ = install(format, None);
        return Ok(None);
    }
    let (provider, tracer) = trace::build(cfg)?;
    let installed = install(format, Some(tracer));
    if installed {
        tracing::info!(
            event = "trace_export",
            endpoint = %cfg.otlp_endpoint,
            service = %cfg.service_name,
            sample_ratio = cfg.sample_ratio,
            "exporting traces over OTLP/HTTP"
        );
    }
    Ok(Some(trace::TraceExport::new(provider)))
}

/// The `event` of a line that names none: a library's line (actix-server's start-up,
/// librdkafka's, a `log` record) gets the library's crate name, e.g. `actix_server`.
fn library_event(target: &str) -> &str {
    let name = target.split("::").next().unwrap_or(target);
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        name
    } else {
        "library"
    }
}

/// The target of an event: a `log` record's own (`log.target`), else the event's.
struct LogTarget(Option<String>);

impl tracing::field::Visit for LogTarget {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "log.target" {
            self.0 = Some(value.to_string());
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

/// A line formatter that gives every line an `event`: lines that carry one are written
/// as the inner format writes them; the others (libraries' lines) get
/// `event = <crate name>` ([`library_event`]).
struct WithEvent<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for WithEvent<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        if event.metadata().fields().field("event").is_some() {
            return self.inner.format_event(ctx, writer, event);
        }
        let mut target = LogTarget(None);
        event.record(&mut target);
        let name = library_event(target.0.as_deref().unwrap_or(event.metadata().target()));
        let mut line = String::new();
        self.inner.format_event(ctx, tracing_subscriber::fmt::format::Writer::new(&mut line), event)?;
        if self.json {
            match line.strip_prefix('{') {
                Some(rest) => write!(writer, "{{\"event\":\"{name}\",{rest}"),
                None => writer.write_str(&line),
            }
        } else {
            let body = line.strip_suffix('\n').unwrap_or(&line);
            writeln!(writer, "{body} event=\"{name}\"")
        }
    }
}

/// The subscriber: log lines (events only: spans are never formatted into log lines),
/// each with an `event` ([`WithEvent`]), coloured only as [`use_colour`] says, and,
/// given a tracer, the OpenTelemetry layer for this crate's spans. `false` when a
/// subscriber was already installed.
fn install(format: LogFormat, tracer: Option<opentelemetry_sdk::trace::SdkTracer>) -> bool {
    use tracing_subscriber::filter::{filter_fn, FilterExt, Targets};
    use tracing_subscriber::fmt::format as fmtf;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let logs = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(|| crate::progress::LogWriter)
            .with_ansi(false)
            .fmt_fields(fmtf::JsonFields::new())
            .event_format(WithEvent {
                inner: fmtf().json().flatten_event(true).with_current_span(false).with_span_list(false),
                json: true,
            })
            .boxed(),
        LogFormat::Text => {
            let colour = use_colour();
            tracing_subscriber::fmt::layer()
                .with_writer(|| crate::progress::LogWriter)
                .with_ansi(colour)
                .event_format(WithEvent { inner: fmtf().compact().with_ansi(colour), json: false })
                .boxed()
        }
    };
    let logs = logs.with_filter(filter.and(filter_fn(|m| m.is_event())));
    let spans = tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_filter(Targets::new().with_target("vex_lens", tracing::Level::INFO))
    });
    tracing_subscriber::registry().with(logs).with(spans).try_init().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_exposed() {
        let m = metrics();
        m.recompute_duration.get_or_create(&ReasonLabel { reason: RECOMPUTE_REBUILD.into() }).observe(0.1);
        m.dead_letter.get_or_create(&ReasonLabel { reason: "invalid_json".into() }).inc();
        m.consensus_conflicts.get_or_create(&ReasonLabel { reason: "status_disagreement".into() }).inc();
        m.export_jobs.get_or_create(&ResultLabel { result: "success".into() }).inc();
        let feed = FeedLabel { feed: "f".into() };
        m.feed_requests.get_or_create(&FeedStatusLabel { feed: "f".into(), status: "200".into() }).inc();
        let outcome = FeedOutcomeLabel { feed: "f".into(), outcome: "emitted".into(), reason: String::new() };
        m.feed_documents.get_or_create(&outcome).inc();
        m.feed_bytes.get_or_create(&feed).inc();
        m.feed_rewinds.get_or_create(&feed).inc();
        let text = m.encode();
        for n in names::ALL {
            assert!(
                text.contains(&format!("# TYPE {n}")) || text.contains(&format!("# TYPE {}", counter_name(n))),
                "{n}"
            );
            assert!(text.contains(n), "{n} missing from:\n{text}");
        }
        assert!(text.contains("vex_consensus_latency_seconds_bucket"));
        for n in names::PROCESS {
            assert!(text.contains(&format!("# TYPE {n} gauge")), "{n} missing from:\n{text}");
        }
    }

    /// The process metrics: a start time between boot and now (so a restart changes it),
    /// resident memory and open descriptors read at scrape time.
    #[test]
    fn process_metrics_are_real() {
        let m = Metrics::new();
        let text = m.encode();
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{name}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let start = value(names::PROCESS_START_TIME_SECONDS);
        assert!(start > now - 86_400.0 * 365.0 && start <= now + 1.0, "start {start}, now {now}");
        if cfg!(target_os = "linux") {
            // This test process started within the last hour (the test binary just ran).
            assert!(now - start < 3_600.0, "start {start} is not this process' ({now})");
            assert!(value(names::PROCESS_RESIDENT_MEMORY_BYTES) > 1_000_000.0);
            assert!(value(names::PROCESS_OPEN_FDS) >= 3.0);
        }
    }

    /// `rate()`/`increase()` never count a series' first sample: every labelled counter an
    /// alert or panel reads must exist at 0 before its first event.
    #[test]
    fn labelled_counter_series_exist_at_zero_from_start_up() {
        let text = Metrics::new().encode();
        let mut want = Vec::new();
        for r in labels::DEAD_LETTER_REASONS.iter().map(|r| r.as_str()) {
            want.push(format!("vex_dead_letter_total{{reason=\"{r}\"}} 0"));
        }
        for r in labels::CONFLICT_REASONS.iter().map(|r| r.as_str()) {
            want.push(format!("vex_consensus_conflicts_total{{reason=\"{r}\"}} 0"));
        }
        for (kind, reasons) in labels::VERIFICATION_FAILURE_LABELS {
            for r in reasons {
                want.push(format!("vex_dsse_verification_failures_total{{kind=\"{kind}\",reason=\"{r}\"}} 0"));
            }
        }
        for r in labels::EXPORT_RESULTS {
            want.push(format!("vex_export_jobs_total{{result=\"{r}\"}} 0"));
        }
        for o in labels::DOCUMENT_OUTCOMES {
            want.push(format!("vex_documents_total{{outcome=\"{o}\"}} 0"));
        }
        for o in labels::OBSERVATION_OUTCOMES {
            want.push(format!("vex_observations_total{{outcome=\"{o}\"}} 0"));
        }
        for o in labels::STORE_OPERATIONS {
            want.push(format!("vex_store_errors_total{{operation=\"{o}\"}} 0"));
        }
        want.push("vex_trace_export_errors_total 0".to_string());
        for e in labels::RATE_LIMITED_EVENTS {
            want.push(format!("vex_log_lines_dropped_total{{event=\"{e}\"}} 0"));
        }
        for r in labels::INGEST_SKIP_REASONS {
            want.push(format!("vex_ingest_files_skipped_total{{reason=\"{r}\"}} 0"));
        }
        for (store, kind, collection) in labels::STORE_WRITES {
            want.push(format!(
                "vex_store_writes_total{{store=\"{store}\",kind=\"{kind}\",collection=\"{collection}\"}} 0"
            ));
        }
        for w in want {
            assert!(text.lines().any(|l| l == w), "{w} missing from:\n{text}");
        }
    }

    /// The pre-created label values are the codes the code emits (dead-letter and
    /// conflict reasons are enums, so every value is pre-created by construction).
    #[test]
    fn label_sets_cover_the_codes() {
        use crate::crypto::verify::FailureReason;
        for r in [
            FailureReason::BadSignature,
            FailureReason::MalformedEnvelope,
            FailureReason::WrongKey,
            FailureReason::ThresholdNotMet,
        ] {
            assert!(labels::DSSE_FAILURE_REASONS.contains(&r.as_str()), "{}", r.as_str());
        }
        use crate::crypto::openpgp::OpenPgpFailure;
        for f in [
            OpenPgpFailure::BadSignature,
            OpenPgpFailure::InvalidKey,
            OpenPgpFailure::KeyExpired,
            OpenPgpFailure::KeyRevoked,
            OpenPgpFailure::MalformedSignature,
            OpenPgpFailure::WeakHash,
        ] {
            let r = crate::domain::codes::SignatureReason::from(f);
            assert!(labels::OPENPGP_FAILURE_REASONS.contains(&r.as_str()), "{}", r.as_str());
        }
    }

    /// Every warn/error line outside this module goes through `warn_event!`/`error_event!`
    /// (or an event struct), so it is counted in `vex_log_events_total`.
    #[test]
    fn warn_and_error_go_through_the_events_module() {
        fn walk(dir: &std::path::Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    if !p.ends_with("telemetry") {
                        walk(&p, out);
                    }
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let text = std::fs::read_to_string(&p).unwrap();
                    for (i, line) in text.lines().enumerate() {
                        let l = line.replace("warn_event!", "").replace("error_event!", "");
                        if l.contains("warn!(") || l.contains("error!(") {
                            out.push(format!("{}:{}: {}", p.display(), i + 1, line.trim()));
                        }
                    }
                }
            }
        }
        let mut found = Vec::new();
        walk(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut found);
        assert!(
            found.is_empty(),
            "use crate::warn_event!/error_event! (telemetry::events::LogEvent):\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn conflict_queue_depth_is_per_tenant_and_drops_to_zero() {
        let m = Metrics::new();
        m.set_conflict_queue_depths(&[("t-a".into(), 3), ("t-b".into(), 600)]);
        m.set_conflict_queue_depths(&[("t-b".into(), 2)]);
        let text = m.encode();
        assert!(text.contains("vex_conflict_queue_depth{tenant=\"t-a\"} 0"), "{text}");
        assert!(text.contains("vex_conflict_queue_depth{tenant=\"t-b\"} 2"), "{text}");
    }
}
