//! Telemetry: every metric name in one place, the Prometheus registry, one struct per
//! telemetry event (log line + metric together) and the JSON log set-up.
//!
//! Invariants: no other module names a metric; label values come from small closed sets
//! (reason codes, recompute reasons), never an artifact or observation id; every event
//! logs its correlation fields (`correlationId`, `artifactKey`, `advisoryKey`, `issuer`)
//! when it has them.

pub mod events;

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
    /// Gauge: open conflicts (`vex_conflict_queue`).
    pub const CONFLICT_QUEUE_DEPTH: &str = "vex_conflict_queue_depth";
    /// Histogram{reason}: recomputation time; reason `ingestion_delta` or `rebuild`.
    pub const RECOMPUTE_DURATION_SECONDS: &str = "vex_recompute_duration_seconds";
    /// Histogram: export job runtime (export jobs run by the service).
    pub const EXPORT_DURATION_SECONDS: &str = "vex_export_duration_seconds";
    /// Counter{result}: export jobs run by the service, `success` or `failure`.
    pub const EXPORT_JOBS_TOTAL: &str = "vex_export_jobs_total";
    /// Counter: failed DSSE verifications.
    pub const DSSE_VERIFICATION_FAILURES_TOTAL: &str = "vex_dsse_verification_failures_total";
    /// Counter{reason}: conflicts on changed records, by reason.
    pub const CONSENSUS_CONFLICTS_TOTAL: &str = "vex_consensus_conflicts_total";
    /// Counter: documents normalised successfully.
    pub const DOCUMENTS_INGESTED_TOTAL: &str = "vex_documents_ingested_total";
    /// Counter: observations made durable together with their records.
    pub const OBSERVATIONS_APPLIED_TOTAL: &str = "vex_observations_applied_total";
    /// Counter{reason}: messages/documents dead-lettered, by reason code.
    pub const DEAD_LETTER_TOTAL: &str = "vex_dead_letter_total";

    /// Every registered metric name (as it appears in `/metrics`, without histogram suffixes).
    pub const ALL: [&str; 10] = [
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
    ];
}

/// Label set `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

/// Label set `{result}` (`success` or `failure`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// Recompute reasons (the `reason` label of `vex_recompute_duration_seconds`).
pub const RECOMPUTE_INGESTION_DELTA: &str = "ingestion_delta";
pub const RECOMPUTE_REBUILD: &str = "rebuild";

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
    pub conflict_queue_depth: Gauge,
    pub recompute_duration: Family<ReasonLabel, Histogram>,
    pub export_duration: Histogram,
    pub export_jobs: Family<ResultLabel, Counter>,
    pub dsse_verification_failures: Counter,
    pub consensus_conflicts: Family<ReasonLabel, Counter>,
    pub documents_ingested: Counter,
    pub observations_applied: Counter,
    pub dead_letter: Family<ReasonLabel, Counter>,
}

fn counter_name(name: &str) -> &str {
    // prometheus-client appends `_total` to counters itself.
    name.strip_suffix("_total").unwrap_or(name)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let consensus_latency = Histogram::new(CONSENSUS_LATENCY_BUCKETS.iter().copied());
        registry.register(
            names::CONSENSUS_LATENCY_SECONDS,
            "Time from a document's arrival (Kafka timestamp or embedded arrival) to the durable consensus write",
            consensus_latency.clone(),
        );
        let conflict_queue_depth = Gauge::default();
        registry.register(
            names::CONFLICT_QUEUE_DEPTH,
            "Open conflicts in the conflict queue",
            conflict_queue_depth.clone(),
        );
        let recompute_duration = Family::<ReasonLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            names::RECOMPUTE_DURATION_SECONDS,
            "Consensus recomputation time by trigger (ingestion_delta, rebuild)",
            recompute_duration.clone(),
        );
        let export_duration = latency_histogram();
        registry.register(names::EXPORT_DURATION_SECONDS, "Export job runtime", export_duration.clone());
        let export_jobs = Family::<ResultLabel, Counter>::default();
        registry.register(
            counter_name(names::EXPORT_JOBS_TOTAL),
            "Export jobs run by the service, by result (success, failure)",
            export_jobs.clone(),
        );
        let dsse_verification_failures = Counter::default();
        registry.register(
            counter_name(names::DSSE_VERIFICATION_FAILURES_TOTAL),
            "Failed DSSE verifications",
            dsse_verification_failures.clone(),
        );
        let consensus_conflicts = Family::<ReasonLabel, Counter>::default();
        registry.register(
            counter_name(names::CONSENSUS_CONFLICTS_TOTAL),
            "Conflicts on changed consensus records by reason",
            consensus_conflicts.clone(),
        );
        let documents_ingested = Counter::default();
        registry.register(
            counter_name(names::DOCUMENTS_INGESTED_TOTAL),
            "VEX documents normalised",
            documents_ingested.clone(),
        );
        let observations_applied = Counter::default();
        registry.register(
            counter_name(names::OBSERVATIONS_APPLIED_TOTAL),
            "Observations made durable with their consensus records",
            observations_applied.clone(),
        );
        let dead_letter = Family::<ReasonLabel, Counter>::default();
        registry.register(
            counter_name(names::DEAD_LETTER_TOTAL),
            "Dead-lettered inputs by reason",
            dead_letter.clone(),
        );
        Metrics {
            registry,
            consensus_latency,
            conflict_queue_depth,
            recompute_duration,
            export_duration,
            export_jobs,
            dsse_verification_failures,
            consensus_conflicts,
            documents_ingested,
            observations_applied,
            dead_letter,
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
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

/// Installs JSON logs on stderr (`RUST_LOG` filters; default `info`). Idempotent.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rdkafka=warn"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
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
        let text = m.encode();
        for n in names::ALL {
            assert!(
                text.contains(&format!("# TYPE {n}")) || text.contains(&format!("# TYPE {}", counter_name(n))),
                "{n}"
            );
            assert!(text.contains(n), "{n} missing from:\n{text}");
        }
        assert!(text.contains("vex_consensus_latency_seconds_bucket"));
    }
}
