//! Ports: the traits the actors talk to. Each has a real adapter (Kafka, MongoDB) and an
//! embedded one (files/stdin, in-process channel, redb), so the same pipeline runs with
//! no servers.
//!
//! Invariants: every write is an idempotent upsert keyed by a deterministic id, so a
//! replay after a crash is harmless; a pair's current record is replaced only by a write
//! of an equal or newer [`RecordVersion`], so a late write of an instance that lost the
//! package (a rebalance) never replaces the new owner's newer record; errors say whether
//! retrying can help.

use crate::domain::consensus::{ConsensusRecord, ConsensusStatus, PackageState, PairKey};
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
    /// The server failed internally (MongoDB `InternalError`, code 1; SecantusDB reports
    /// its storage engine's transient failures so): retriable, but only
    /// [`INTERNAL_ERROR_ATTEMPTS`] times, since a failure the request causes every time
    /// must not hold the writer forever.
    #[error("store failed internally: {0}")]
    Internal(String),
}

/// Attempts of an operation that keeps failing with [`StoreError::Internal`] before it
/// counts as rejected.
pub const INTERNAL_ERROR_ATTEMPTS: u32 = 5;

impl StoreError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Internal(_))
    }
}

/// The version of a pair's record, compared field by field in this order: the tenant's
/// policy epoch it was evaluated under (raised by every trust or policy change, 0 = the
/// seed of `config/issuers.toml`), then the highest position in the observation stream
/// among the observations that apply to the pair (`provenance.sequence`: the
/// `vex.observations` offset in Kafka mode, the arrival sequence in embedded mode; -1
/// when none has one), then how many observations apply to it.
///
/// A state only grows, so within one actor every later evaluation of a pair has an equal
/// or higher version; the count breaks the tie between two states with the same highest
/// offset where one lacks an earlier observation (observations of one package may be
/// applied slightly out of order). A recompute after a trust change raises the epoch and
/// wins without a new offset. The stores replace a record only with an equal or higher
/// version (equal: the same observations, so the same record unless the policy changed
/// without an epoch: the later write wins; identical: nothing changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RecordVersion {
    pub epoch: u64,
    pub offset: i64,
    pub observations: u64,
}

impl Default for RecordVersion {
    fn default() -> Self {
        RecordVersion::LOWEST
    }
}

impl RecordVersion {
    /// Below every version a record can have (a record stored before versions existed).
    pub const LOWEST: RecordVersion = RecordVersion { epoch: 0, offset: i64::MIN, observations: 0 };

    /// The version of `pair`'s record evaluated from `state` under policy epoch `epoch`.
    pub fn of(epoch: u64, state: &PackageState, pair: &PairKey) -> RecordVersion {
        let (offset, observations) = state.pair_extent(pair);
        RecordVersion { epoch, offset, observations }
    }
}

/// A record to write with its version.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionedRecord {
    pub record: ConsensusRecord,
    pub version: RecordVersion,
}

impl VersionedRecord {
    pub fn new(record: ConsensusRecord, version: RecordVersion) -> Self {
        VersionedRecord { record, version }
    }

    /// A record at the lowest version (tools and tests that write one version at a time:
    /// equal versions replace each other).
    pub fn unversioned(record: ConsensusRecord) -> Self {
        VersionedRecord { record, version: RecordVersion::default() }
    }
}

/// What a conditional record write does against the stored `(version, digest)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteDecision {
    /// No stored record, or an older (or equal) version with another digest: write it.
    Write,
    /// The same record at an older version: only raise the stored version.
    RaiseVersion,
    /// The same record at the same version: a replay, nothing to change.
    Unchanged,
    /// The stored record is newer: skip (this write lost).
    Stale,
}

/// Decides a conditional record write (both stores use it, so they agree).
pub fn decide_write(stored: Option<(RecordVersion, &str)>, new: RecordVersion, new_digest: &str) -> WriteDecision {
    match stored {
        None => WriteDecision::Write,
        Some((v, _)) if v > new => WriteDecision::Stale,
        Some((v, d)) if d == new_digest => {
            if v == new {
                WriteDecision::Unchanged
            } else {
                WriteDecision::RaiseVersion
            }
        }
        Some(_) => WriteDecision::Write,
    }
}

/// Deterministic id of a pair's current record: SHA-256 hex of `tenant \0 artifact \0 vulnerability`.
pub fn pair_id(pair: &PairKey) -> String {
    crate::domain::canonical::sha256_hex(
        format!("{}\u{0}{}\u{0}{}", pair.tenant, pair.artifact, pair.vulnerability).as_bytes(),
    )
}

/// Id of a history entry: `<pair_id>:<changed_at_ms, 20 digits>:<digest>`, so entries of
/// a pair sort by time and a pair that returns to an earlier version (A -> B -> A) keeps
/// every change.
pub fn history_id(pair_id: &str, changed_at_ms: i64, digest: &str) -> String {
    format!("{pair_id}:{changed_at_ms:020}:{digest}")
}

/// One DSSE verification, as persisted (`vex_dsse_verifications`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// `sha256:<hex>` of the envelope bytes (the record's id).
    pub envelope_digest: String,
    pub issuer: Option<String>,
    pub keyid: Option<String>,
    /// `verified`, `unsigned` or `failed`.
    pub result: crate::domain::model::SignatureStatus,
    /// Why unsigned or failed (`crypto::verify`: `no_signatures`, `unknown_key`,
    /// `bad_signature`, `wrong_key`, `threshold_not_met`, `malformed_envelope`).
    pub reason: Option<crate::domain::codes::SignatureReason>,
    /// When it was verified (ms since the epoch).
    pub verified_at_ms: i64,
    /// Where the envelope came from (`kafka:topic/partition@offset` or a path).
    pub source: Option<String>,
}

/// How an export job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobResult {
    Success,
    Failure,
}

impl JobResult {
    /// Every result (the label values of `vex_export_jobs_total`).
    pub const ALL: [JobResult; 2] = [JobResult::Success, JobResult::Failure];

    /// `success` or `failure` (the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            JobResult::Success => "success",
            JobResult::Failure => "failure",
        }
    }
}

/// One export job run by the service, as persisted (`vex_export_jobs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJobRecord {
    /// Unique id (the record's id), also the job's output directory name.
    pub job_id: String,
    /// `json`, `ndjson` or `openvex`.
    pub format: crate::export::ExportFormat,
    pub tenant: Option<String>,
    pub since_ms: Option<i64>,
    pub started_at_ms: i64,
    pub duration_ms: u64,
    /// `success` or `failure`.
    pub result: JobResult,
    pub error: Option<String>,
    /// The bundle's manifest and id (success only).
    pub manifest: Option<String>,
    pub bundle_id: Option<String>,
    pub records: u64,
}

/// One applied trust change, as audited (`vex_trust_audit`): who, when, what before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrustAudit {
    pub tenant: String,
    /// The tenant's policy epoch the change produced (the entry's id is `tenant:epoch`).
    pub epoch: u64,
    /// When it was applied (ms since the epoch).
    pub at_ms: i64,
    /// Who: the API token's name (`loopback` without tokens).
    pub who: String,
    /// `issuer` or `policy`.
    pub kind: crate::domain::trust::TrustChangeKind,
    /// The issuer id (issuer changes).
    pub issuer: Option<String>,
    /// The caller's stated reason, if any.
    pub reason: Option<String>,
    /// The tenant's trust settings before and after.
    pub before: crate::domain::trust::TenantTrust,
    pub after: crate::domain::trust::TenantTrust,
}

/// Id of an audit entry: `<tenant>:<epoch, 20 digits>` (entries of a tenant sort by epoch).
pub fn trust_audit_id(tenant: &str, epoch: u64) -> String {
    format!("{tenant}:{epoch:020}")
}

/// A stored consensus record with the time it was written (`changed_at_ms`: when its
/// digest last changed; for a history entry, when that version was first written).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TimedRecord {
    #[serde(flatten)]
    pub record: ConsensusRecord,
    pub changed_at_ms: i64,
}

impl TimedRecord {
    /// The JSON the read API serves for one pair: the record's RFC 8785 canonical JSON with
    /// `changed_at_ms` inserted as a member (so itself canonical). The same members as
    /// serialising `self`; spliced into the record's bytes, never decoded and re-encoded.
    pub fn canonical_json(&self) -> Result<Vec<u8>, StoreError> {
        let record =
            self.record.to_canonical_json().map_err(|e| StoreError::Rejected(format!("encoding record: {e}")))?;
        timed_record_json(record.as_bytes(), self.changed_at_ms)
    }
}

/// [`TimedRecord::canonical_json`] from a record's stored canonical JSON: inserts
/// `changed_at_ms` into `record_json` (an RFC 8785 object).
pub fn timed_record_json(record_json: &[u8], changed_at_ms: i64) -> Result<Vec<u8>, StoreError> {
    crate::domain::canonical::insert_member(record_json, "changed_at_ms", changed_at_ms.to_string().as_bytes())
        .ok_or_else(|| StoreError::Rejected("stored record JSON is not an object".into()))
}

/// One entry of a tenant's change stream (`GET /v1/vex/consensus/stream`): a history
/// entry (`vex_consensus_history`) with its position in the tenant's stream.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChangeEvent {
    /// Position in the tenant's stream: 1, 2, 3, ... with no gap, each history entry
    /// exactly once, never reused.
    pub seq: u64,
    #[serde(flatten)]
    pub entry: TimedRecord,
}

/// A page of one tenant's current records, in (artifact, vulnerability) byte order
/// (the read API's list queries). Every filter is optional and they combine with AND.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordQuery {
    pub tenant: String,
    /// Exact (normalised) artifact key.
    pub artifact: Option<String>,
    /// Exact package key (every artifact of the package).
    pub package: Option<String>,
    pub vulnerability: Option<String>,
    pub status: Option<ConsensusStatus>,
    /// Only records with a statement (counted, superseded or excluded) by this issuer id.
    pub issuer: Option<String>,
    /// Only records written at or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Only records with at least one conflict...
    pub conflicted: bool,
    /// ...and, when set, one with this reason.
    pub conflict_reason: Option<String>,
    /// Exclusive lower bound (artifact, vulnerability): the cursor of the previous page.
    pub after: Option<(String, String)>,
    /// Most records returned.
    pub limit: usize,
}

impl RecordQuery {
    /// The query of one pair's current record.
    pub fn pair(pair: &PairKey) -> RecordQuery {
        RecordQuery {
            tenant: pair.tenant.clone(),
            artifact: Some(pair.artifact.clone()),
            vulnerability: Some(pair.vulnerability.clone()),
            limit: 1,
            ..Default::default()
        }
    }

    /// The filters that need the decoded record (not indexed fields).
    pub fn matches_decoded(&self, r: &ConsensusRecord) -> bool {
        self.issuer.as_ref().map_or(true, |i| r.statements.iter().any(|s| *s.issuer == **i))
            && self.conflict_reason.as_ref().map_or(true, |c| r.conflicts.iter().any(|x| x.reason.as_str() == c))
    }

    /// Every filter, for stores that scan.
    pub fn matches(&self, t: &TimedRecord) -> bool {
        let r = &t.record;
        r.tenant == self.tenant
            && self.artifact.as_ref().map_or(true, |a| &r.artifact == a)
            && self.package.as_ref().map_or(true, |p| &r.package == p)
            && self.vulnerability.as_ref().map_or(true, |v| &r.vulnerability == v)
            && self.status.map_or(true, |s| r.status == s)
            && self.since_ms.map_or(true, |s| t.changed_at_ms >= s)
            && (!self.conflicted || !r.conflicts.is_empty())
            && self.after.as_ref().map_or(true, |(a, v)| {
                (r.artifact.as_bytes(), r.vulnerability.as_bytes()) > (a.as_bytes(), v.as_bytes())
            })
            && self.matches_decoded(r)
    }
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
    /// Upserts current records by [`pair_id`], each only if the stored one is not newer
    /// ([`decide_write`]: an older version never replaces a newer one, an equal version
    /// with the same digest changes nothing, a higher epoch wins whatever its offset).
    /// A record that is written and whose `consensus_digest` differs from the stored one
    /// also gets a history entry with id [`history_id`] (idempotent; a return to an
    /// earlier version is a new entry; a write that lost gets none) and stamps
    /// `changed_at_ms`; its pair is upserted into the conflict queue when it has
    /// conflicts, removed when it has none.
    async fn put_records(&self, records: &[VersionedRecord], changed_at_ms: i64) -> Result<(), StoreError>;
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
    /// Open conflicts per tenant (`vex_conflict_queue`); tenants with none are left out.
    async fn conflict_queue_depths(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Upserts a verification by `envelope_digest`.
    async fn put_verification(&self, v: &VerificationRecord) -> Result<(), StoreError>;
    /// Upserts an export job record by `job_id` (`vex_export_jobs`).
    async fn put_export_job(&self, job: &ExportJobRecord) -> Result<(), StoreError>;

    // --- reads of the HTTP API -------------------------------------------------------

    /// A page of current records (see [`RecordQuery`]), in (artifact, vulnerability)
    /// byte order, at most `q.limit`.
    async fn query_records(&self, q: &RecordQuery) -> Result<Vec<TimedRecord>, StoreError>;
    /// The current record of a pair as the read API serves it
    /// ([`TimedRecord::canonical_json`]), or `None`. A store that keeps the record's
    /// canonical JSON splices it (and may cache it, showing only what is durable); this
    /// default reads it through [`Self::query_records`].
    async fn current_record_json(&self, pair: &PairKey) -> Result<Option<std::sync::Arc<[u8]>>, StoreError> {
        match self.query_records(&RecordQuery::pair(pair)).await?.pop() {
            Some(t) => Ok(Some(t.canonical_json()?.into())),
            None => Ok(None),
        }
    }
    /// Every stored version of a pair (`vex_consensus_history`), oldest first.
    async fn record_history(&self, pair: &PairKey) -> Result<Vec<TimedRecord>, StoreError>;
    /// Export jobs run for `tenant`, newest first.
    async fn list_export_jobs(&self, tenant: &str) -> Result<Vec<ExportJobRecord>, StoreError>;
    async fn get_export_job(&self, job_id: &str) -> Result<Option<ExportJobRecord>, StoreError>;

    /// Every package of `tenant` with stored observations (or, in this default for
    /// wrappers, with stored records: paged through [`Self::query_records`]), sorted; a
    /// trust change recomputes them all. Both real stores answer from the observations.
    async fn tenant_packages(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let mut packages = std::collections::BTreeSet::new();
        let mut after = None;
        loop {
            let q = RecordQuery { tenant: tenant.to_string(), after: after.clone(), limit: 1000, ..Default::default() };
            let page = self.query_records(&q).await?;
            let full = page.len() == q.limit;
            for t in page {
                after = Some((t.record.artifact.clone(), t.record.vulnerability.clone()));
                packages.insert(t.record.package);
            }
            if !full {
                return Ok(packages.into_iter().collect());
            }
        }
    }

    // --- trust changes (`vex_trust_policies`, `vex_trust_audit`) ------------------------
    // Defaults for wrappers and test doubles that keep no trust state: nothing stored,
    // and a change is refused. Both real stores implement all three (contract suite).

    /// Every tenant's stored trust settings (tenants that never changed anything are absent).
    async fn trust_policies(&self) -> Result<Vec<crate::domain::trust::TenantTrust>, StoreError> {
        Ok(Vec::new())
    }
    /// Stores `next` only if the stored epoch of its tenant is `next.epoch - 1` (no
    /// document counts as epoch 0), together with its audit entry; `Ok(false)` (nothing
    /// written) when another writer changed the tenant first. Retrying an audit entry
    /// already written is harmless (idempotent by [`trust_audit_id`]).
    async fn put_trust_policy(
        &self,
        next: &crate::domain::trust::TenantTrust,
        audit: &TrustAudit,
    ) -> Result<bool, StoreError> {
        let _ = (next, audit);
        Err(StoreError::Rejected("this store keeps no trust policies".into()))
    }
    /// A tenant's audited trust changes, oldest first.
    async fn trust_audit(&self, tenant: &str) -> Result<Vec<TrustAudit>, StoreError> {
        let _ = tenant;
        Ok(Vec::new())
    }
    /// The epoch up to which each tenant's trust changes are recomputed
    /// ([`Self::mark_trust_recomputed`]; a tenant absent counts as 0). A stored policy
    /// epoch above it is a recompute still owed (interrupted by a crash): start-up and the
    /// trust poller finish it.
    async fn trust_recomputed(&self) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(Vec::new())
    }
    /// Records that every pair of `tenant` was recomputed, durably, under policy epoch
    /// `epoch` or newer; never lowers the mark.
    async fn mark_trust_recomputed(&self, tenant: &str, epoch: u64) -> Result<(), StoreError> {
        let _ = (tenant, epoch);
        Ok(())
    }
    /// Writes every audit entry a policy write carries but the audit log lacks (a store
    /// that cannot write both at once writes the entry inside the policy's
    /// compare-and-set and copies it after; a crash in between leaves it to this);
    /// idempotent; returns the number written.
    async fn repair_trust_audit(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    // --- the change stream -------------------------------------------------------------

    /// The tenant's change stream after position `after`, oldest first, at most `limit`:
    /// every history entry the store has committed gets one position, positions are
    /// dense (`after + 1`, `after + 2`, ...), and position `n + 1` is never visible
    /// before `n`, so a reader that resumes after the last position it saw misses
    /// nothing and sees nothing twice, whichever instance wrote the entry. History
    /// entries written before a store supported the stream have no position.
    async fn changes_after(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        let _ = (tenant, after, limit);
        Err(StoreError::Rejected("this store has no change stream".into()))
    }
    /// The last position of the tenant's change stream (0 when it is empty), counting
    /// every history entry committed before the call.
    async fn change_tail(&self, tenant: &str) -> Result<u64, StoreError> {
        let _ = tenant;
        Err(StoreError::Rejected("this store has no change stream".into()))
    }
}
