//! The records role (`vex_consensus`, `vex_consensus_history`, the change stream): each
//! pair's current record, every version it had, and each tenant's stream of changes.
//!
//! Invariants: a pair's current record is replaced only by a write of an equal or newer
//! [`RecordVersion`] ([`decide_write`], one rule for every store), so a late write of an
//! instance that lost the package (a rebalance) never replaces the new owner's newer
//! record; a write that changes the digest adds one history entry (id [`history_id`])
//! and one change-stream position; the conflict queue ([`super::ConflictQueue`]) is kept
//! by the same write.

use super::StoreError;
use crate::domain::codes::ConflictReason;
use crate::domain::consensus::{ConsensusRecord, ConsensusStatus, PairKey};
use crate::domain::version::{RecordVersion, VersionedRecord};
use serde::Serialize;

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
        let record = self.record.canonical_json().map_err(|e| StoreError::Rejected(format!("encoding record: {e}")))?;
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
    pub conflict_reason: Option<ConflictReason>,
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
            && self.conflict_reason.map_or(true, |c| r.conflicts.iter().any(|x| x.reason == c))
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

/// Persistence of current records, their history and the change stream.
#[async_trait::async_trait]
pub trait RecordStore: Send + Sync + 'static {
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

    // --- the change stream -------------------------------------------------------------

    /// The tenant's change stream after position `after`, oldest first, at most `limit`:
    /// every history entry the store has committed gets one position, positions are
    /// dense (`after + 1`, `after + 2`, ...), and position `n + 1` is never visible
    /// before `n`, so a reader that resumes after the last position it saw misses
    /// nothing and sees nothing twice, whichever instance wrote the entry. History
    /// entries written before a store supported the stream have no position.
    async fn changes_after(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError>;
    /// The last position of the tenant's change stream (0 when it is empty), counting
    /// every history entry committed before the call.
    async fn change_tail(&self, tenant: &str) -> Result<u64, StoreError>;
}
