//! Ports: the traits the actors talk to. Each has a real adapter (Kafka, MongoDB) and an
//! embedded one (files/stdin, in-process channel, redb), so the same pipeline runs with
//! no servers.
//!
//! Invariants: every write is an idempotent upsert keyed by a deterministic id, so a
//! replay after a crash is harmless; errors say whether retrying can help.

use crate::domain::consensus::{ConsensusRecord, PairKey};
use crate::domain::model::Observation;
use serde::{Deserialize, Serialize};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or timed out: retry with backoff.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (bad data, schema): retrying will not help.
    #[error("store rejected the request: {0}")]
    Rejected(String),
}

impl StoreError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Deterministic id of a pair's current record: SHA-256 hex of `tenant \0 artifact \0 vulnerability`.
pub fn pair_id(pair: &PairKey) -> String {
    crate::domain::canonical::sha256_hex(
        format!("{}\u{0}{}\u{0}{}", pair.tenant, pair.artifact, pair.vulnerability).as_bytes(),
    )
}

/// One DSSE verification, as persisted (`vex_dsse_verifications`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// `sha256:<hex>` of the envelope bytes (the record's id).
    pub envelope_digest: String,
    pub issuer: Option<String>,
    pub keyid: Option<String>,
    /// `verified`, `unsigned` or `failed`.
    pub result: String,
    pub reason: Option<String>,
    /// When it was verified (ms since the epoch).
    pub verified_at_ms: i64,
    /// Where the envelope came from (`kafka:topic/partition@offset` or a path).
    pub source: Option<String>,
}

/// One export job run by the service, as persisted (`vex_export_jobs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJobRecord {
    /// Unique id (the record's id), also the job's output directory name.
    pub job_id: String,
    /// `json`, `ndjson` or `openvex`.
    pub format: String,
    pub tenant: Option<String>,
    pub since_ms: Option<i64>,
    pub started_at_ms: i64,
    pub duration_ms: u64,
    /// `success` or `failure`.
    pub result: String,
    pub error: Option<String>,
    /// The bundle's manifest and id (success only).
    pub manifest: Option<String>,
    pub bundle_id: Option<String>,
    pub records: u64,
}

/// Persistence of observations, consensus records, history, the conflict queue and
/// DSSE verifications (MongoDB collections `vex_observations`, `vex_consensus`,
/// `vex_consensus_history`, `vex_conflict_queue`, `vex_dsse_verifications`, `vex_export_jobs`).
#[async_trait::async_trait]
pub trait ConsensusStore: Send + Sync + 'static {
    /// Creates collections/indexes; idempotent.
    async fn init(&self) -> Result<(), StoreError>;
    /// Cheap reachability check (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
    /// Upserts observations by `id` (keeps the first `provenance`).
    async fn put_observations(&self, observations: &[Observation]) -> Result<(), StoreError>;
    /// Every stored observation of (tenant, package), to rebuild an actor's state.
    async fn observations_for_package(&self, tenant: &str, package: &str) -> Result<Vec<Observation>, StoreError>;
    /// Upserts current records by [`pair_id`]; when a record's `consensus_digest` differs
    /// from the stored one, also inserts a history entry with id `<pair_id>:<digest>`
    /// (idempotent) and stamps `changed_at_ms`. Upserts the pair into the conflict queue
    /// when it has conflicts, removes it when it has none.
    async fn put_records(&self, records: &[ConsensusRecord], changed_at_ms: i64) -> Result<(), StoreError>;
    async fn get_record(&self, pair: &PairKey) -> Result<Option<ConsensusRecord>, StoreError>;
    /// Current records, optionally of one tenant and changed at or after `since_ms`,
    /// sorted by artifact, vulnerability, tenant.
    async fn list_records(
        &self,
        tenant: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<ConsensusRecord>, StoreError>;
    /// Number of open conflicts (`vex_conflict_queue`).
    async fn conflict_queue_depth(&self) -> Result<u64, StoreError>;
    /// Upserts a verification by `envelope_digest`.
    async fn put_verification(&self, v: &VerificationRecord) -> Result<(), StoreError>;
    /// Upserts an export job record by `job_id` (`vex_export_jobs`).
    async fn put_export_job(&self, job: &ExportJobRecord) -> Result<(), StoreError>;
}
