//! The consensus record and its parts (CONSENSUS.md "The record"): what one pair's
//! evaluation decided, serialised in RFC 8785 key order and sealed with its digest.
//!
//! Invariants: a record holds no floating-point number (weights and confidence in ppm);
//! every struct declares its fields in RFC 8785 key order, so the canonical JSON is written
//! without sorting (checked in debug builds); `consensus_digest` is the SHA-256 of that
//! JSON without the digest and without what explain adds (`explain`, `statements[].observation`), and the JSON kept from sealing is used
//! only while the digest is still the one it was made with.

use crate::domain::canonical::{self, CanonicalError};
pub use crate::domain::codes::{ConflictReason, EvaluationTimeSource};
use crate::domain::model::{Justification, Observation, SignatureReason, SignatureStatus, SourceFormat, Status};
use crate::domain::timestamp::Timestamp;
use crate::domain::trust::{Mode, Tier, PPM};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Identifies one consensus pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PairKey {
    pub tenant: String,
    pub artifact: String,
    pub vulnerability: String,
}

/// Status of a consensus record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsensusStatus {
    Affected,
    NotAffected,
    Fixed,
    UnderInvestigation,
    Disputed,
    Inconclusive,
}

impl From<Status> for ConsensusStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Affected => ConsensusStatus::Affected,
            Status::NotAffected => ConsensusStatus::NotAffected,
            Status::Fixed => ConsensusStatus::Fixed,
            Status::UnderInvestigation => ConsensusStatus::UnderInvestigation,
        }
    }
}

impl ConsensusStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConsensusStatus::Affected => "affected",
            ConsensusStatus::NotAffected => "not_affected",
            ConsensusStatus::Fixed => "fixed",
            ConsensusStatus::UnderInvestigation => "under_investigation",
            ConsensusStatus::Disputed => "disputed",
            ConsensusStatus::Inconclusive => "inconclusive",
        }
    }
}

/// What part a statement played in a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Counted,
    /// An older statement of its issuer, or the less conservative side of an issuer
    /// contradicting itself.
    Superseded,
    /// Takes no part (failed signature; unjustified `not_affected` when required).
    Excluded,
    /// A newer version of its document no longer makes it.
    Retracted,
}

/// The factors of a statement's weight, each in ppm.
/// Fields in RFC 8785 key order: serialised in declaration order, the canonical JSON is
/// written without sorting ([`canonical::to_vec_ordered`]; checked in debug builds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Factors {
    pub freshness_ppm: u64,
    pub issuer_ppm: u64,
    pub justification_ppm: u64,
    pub signature_ppm: u64,
}

/// One statement as it contributed to a record: the observation it is (by id) and what
/// this pair's evaluation decided about it. The statement's own content is stored once,
/// in the observation ([`StatementText`]); explain joins it back under `observation`.
/// Fields in RFC 8785 key order: serialised in declaration order, the canonical JSON is
/// written without sorting ([`canonical::to_vec_ordered`]; checked in debug builds).
/// Reading is lenient (a record of an older schema in history keeps the fields it
/// shares; the moved ones are dropped).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementEntry {
    /// The statement's own artifact key (broader than the pair's for version-less or
    /// range statements).
    pub artifact: Arc<str>,
    pub factors: Factors,
    /// Issuer id after directory resolution (`unknown` when none was named).
    pub issuer: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<Justification>,
    /// The observation's own content, joined back by explain only: never stored, never
    /// digested (removing it gives the stored statement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observation: Option<StatementText>,
    pub observation_id: Arc<str>,
    /// Why superseded, excluded or retracted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    pub role: Role,
    pub signature: SignatureStatus,
    pub status: Status,
    pub tier: Tier,
    pub timestamp: Timestamp,
    pub weight_ppm: u64,
}

/// The content of a statement that lives once, in its observation (moved out of the
/// record in schema version 5): what explain shows under `statements[].observation` and
/// what exports read (impact and action statements, scope).
/// Fields in RFC 8785 key order: serialised in declaration order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatementText {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_statement: Option<Arc<str>>,
    pub document_digest: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_version: Option<Arc<str>>,
    pub format: SourceFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact_statement: Option<Arc<str>>,
    /// The name the statement claimed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_claimed: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification_original: Option<Arc<str>>,
    pub position: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<Arc<str>>,
    pub status_original: Arc<str>,
}

impl From<&Observation> for StatementText {
    fn from(o: &Observation) -> Self {
        StatementText {
            action_statement: o.action_statement.clone(),
            document_digest: o.document_digest.clone(),
            document_id: o.document_id.clone(),
            document_version: o.document_version.clone(),
            format: o.format,
            impact_statement: o.impact_statement.clone(),
            issuer_claimed: o.issuer.clone(),
            justification_original: o.justification_original.clone(),
            position: o.position,
            scope: o.scope.clone(),
            status_original: o.status_original.clone(),
        }
    }
}

/// Why a statement is superseded, excluded or retracted (`reason.code`; the observation
/// ids and document digests it names are in the record's own terms, so the record alone
/// says which statement won).
/// Variant fields in RFC 8785 key order after the tag `code`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// Excluded: the signature does not verify with the issuer's key (the verifier's
    /// reason, when it gave one).
    SignatureFailed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature_reason: Option<SignatureReason>,
    },
    /// Excluded: `not_affected` with neither justification nor impact statement, under
    /// `require_justification_for_not_affected`.
    NotAffectedWithoutJustification,
    /// Superseded by a later statement of the same issuer.
    Superseded { superseded_by: Arc<str> },
    /// Superseded by a statement of the same issuer at the same time with another
    /// status: the more conservative status counts (the record has a
    /// `status_disagreement` conflict).
    MoreConservative { superseded_by: Arc<str> },
    /// A newer version of its document (digests of that version) no longer states it.
    Retracted {
        retracted_by: Vec<Arc<str>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<Arc<str>>,
    },
    /// The free text of a record written before schema version 5 (read from history
    /// only; never written).
    #[serde(untagged)]
    Text(String),
}

impl Reason {
    /// The observation that superseded this statement, if any.
    pub fn superseded_by(&self) -> Option<&str> {
        match self {
            Reason::Superseded { superseded_by } | Reason::MoreConservative { superseded_by } => Some(superseded_by),
            _ => None,
        }
    }
}

/// A conflict on a record.
/// Fields in RFC 8785 key order: serialised in declaration order, the canonical JSON is
/// written without sorting ([`canonical::to_vec_ordered`]; checked in debug builds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    pub detail: String,
    pub issuers: Vec<String>,
    /// `status_disagreement`, `scope_mismatch` or `missing_provenance`.
    pub reason: ConflictReason,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub statuses: Vec<Status>,
}

/// Conflicts sort by reason first (then detail, issuers, statuses): the order records
/// list them in, whatever the order of the fields.
impl Ord for Conflict {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.reason, &self.detail, &self.issuers, &self.statuses).cmp(&(
            other.reason,
            &other.detail,
            &other.issuers,
            &other.statuses,
        ))
    }
}

impl PartialOrd for Conflict {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Version of the record's shape (`schema_version` in every record;
/// schemas/consensus-record.schema.json). 2: RFC 8785 digest, `confidence_ppm` integer.
/// 3: keys from names (issue 18; a store at 2 is upgraded by `domain::upgrade`).
/// 4: platform context is identity (issue 17: the platform is part of the artifact key).
/// 5: lean records (issue 20: a statement is its observation id and what the evaluation
/// decided; its text lives once, in the observation; `reason` is a [`Reason`]).
pub const RECORD_SCHEMA_VERSION: u32 = 5;

/// The consensus for one (tenant, artifact, vulnerability). Field docs:
/// schemas/consensus-record.schema.json. Holds no floating-point number.
/// Fields in RFC 8785 key order: serialised in declaration order, the canonical JSON is
/// written without sorting ([`canonical::to_vec_ordered`]; checked in debug builds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusRecord {
    pub aliases: Vec<String>,
    pub artifact: String,
    /// Share of the total counted weight that supports the leading status, in ppm
    /// (0..=1,000,000; a decimal is shown in table output only).
    pub confidence_ppm: u64,
    pub conflicts: Vec<Conflict>,
    /// SHA-256 (`sha256:<hex>`) of the RFC 8785 canonical JSON of the record without
    /// this field and without `explain`. (Empty only while it is being computed.)
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub consensus_digest: String,
    pub evaluation_time: Timestamp,
    /// `as_of`, `newest_known_issuer`, `newest_statement` or `none`.
    pub evaluation_time_source: EvaluationTimeSource,
    /// Human-readable trace of the decision (only with `--explain`; not digested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<Vec<String>>,
    pub justification: Option<Justification>,
    /// The leading status (equal to `status` unless disputed or inconclusive).
    pub leading_status: Option<Status>,
    pub mode: Mode,
    pub package: String,
    pub policy_version: String,
    /// [`RECORD_SCHEMA_VERSION`] when it was computed.
    pub schema_version: u32,
    /// Sum of counted weights per status (ppm).
    #[serde(serialize_with = "canonical::sorted_map")]
    pub scores_ppm: BTreeMap<Status, u64>,
    pub statements: Vec<StatementEntry>,
    pub status: ConsensusStatus,
    pub tenant: String,
    pub total_weight_ppm: u64,
    pub vulnerability: String,
    /// The canonical JSON made when the digest was computed (see [`CanonicalCache`]).
    #[serde(skip)]
    canonical: CanonicalCache,
}

/// The RFC 8785 JSON of a record (with its digest, without `explain`) as serialised by
/// [`evaluate`] to compute the digest, so a record is serialised once. Neither serialised
/// nor compared (two records are equal by their fields), and used only while the record's
/// `consensus_digest` is the one it was made with: a record changed and re-digested
/// (`compute_digest`) is serialised afresh.
#[derive(Clone, Debug, Default)]
struct CanonicalCache(Option<(String, std::sync::Arc<String>)>);

impl PartialEq for CanonicalCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for CanonicalCache {}

impl ConsensusRecord {
    /// Computes the digest: SHA-256 of the RFC 8785 bytes of the record without
    /// `consensus_digest` and `explain`. Fails (never hashes a default) when the record
    /// cannot be serialised or holds an integer beyond 2^53 - 1.
    pub fn compute_digest(&self) -> Result<String, CanonicalError> {
        self.check_numbers()?;
        let bytes = if self.consensus_digest.is_empty() && !self.is_explained() {
            canonical::to_vec_ordered(self)?
        } else {
            let mut bare = self.clone();
            bare.consensus_digest.clear();
            bare.strip_explain();
            canonical::to_vec_ordered(&bare)?
        };
        Ok(canonical::sha256_prefixed(&bytes))
    }

    /// The digest of a stored record's JSON as it was written, whatever its schema
    /// version: SHA-256 of the RFC 8785 form of the JSON without `consensus_digest` and what
    /// explain adds. For a record of this schema it equals [`Self::compute_digest`] of the
    /// decoded record; a record of an older schema (history written before an upgrade)
    /// decodes without the members it no longer has, so only its JSON can be checked.
    pub fn digest_of_json(json: &str) -> Result<String, CanonicalError> {
        let mut v: serde_json::Value =
            serde_json::from_str(json).map_err(|e| CanonicalError::Serialise(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.remove("consensus_digest");
            o.remove("explain");
            if let Some(serde_json::Value::Array(statements)) = o.get_mut("statements") {
                for st in statements.iter_mut().filter_map(|s| s.as_object_mut()) {
                    st.remove("observation");
                }
            }
        }
        let bytes = canonical::to_vec(&v).map_err(|e| CanonicalError::Serialise(e.to_string()))?;
        Ok(canonical::sha256_prefixed(&bytes))
    }

    /// Whether the record carries what explain adds (the trace, or observations joined
    /// under `statements[].observation`): neither is stored nor digested.
    pub fn is_explained(&self) -> bool {
        self.explain.is_some() || self.statements.iter().any(|s| s.observation.is_some())
    }

    /// Removes what explain adds: the stored record remains.
    pub fn strip_explain(&mut self) {
        self.explain = None;
        for s in &mut self.statements {
            s.observation = None;
        }
    }

    /// Every integer of the record is exactly representable in RFC 8785.
    fn check_numbers(&self) -> Result<(), CanonicalError> {
        canonical::check_safe("confidence_ppm", self.confidence_ppm)?;
        canonical::check_safe("total_weight_ppm", self.total_weight_ppm)?;
        for v in self.scores_ppm.values() {
            canonical::check_safe("scores_ppm", *v)?;
        }
        for s in &self.statements {
            for v in [
                s.weight_ppm,
                s.factors.issuer_ppm,
                s.factors.signature_ppm,
                s.factors.freshness_ppm,
                s.factors.justification_ppm,
            ] {
                canonical::check_safe("statements[].weight_ppm/factors", v)?;
            }
        }
        Ok(())
    }

    /// `confidence_ppm` as a decimal with `digits` fraction digits (table output only;
    /// exact integer arithmetic, rounded half up).
    pub fn confidence_decimal(&self, digits: u32) -> String {
        let scale = 10u64.pow(digits.min(6));
        let div = PPM / scale;
        let v = (self.confidence_ppm + div / 2) / div;
        if digits == 0 {
            return v.to_string();
        }
        format!("{}.{:0width$}", v / scale, v % scale, width = digits.min(6) as usize)
    }

    /// The pair this record is about.
    pub fn pair(&self) -> PairKey {
        PairKey {
            tenant: self.tenant.clone(),
            artifact: self.artifact.clone(),
            vulnerability: self.vulnerability.clone(),
        }
    }

    /// Canonical JSON of the record (what is digested, plus the digest and explain): the
    /// JSON kept from computing the digest, borrowed, while it is still this record's;
    /// otherwise made afresh.
    pub fn canonical_json(&self) -> Result<std::borrow::Cow<'_, str>, CanonicalError> {
        match self.kept_json() {
            Some(json) => Ok(std::borrow::Cow::Borrowed(json.as_str())),
            None => String::from_utf8(canonical::to_vec_ordered(self)?)
                .map(std::borrow::Cow::Owned)
                .map_err(|e| CanonicalError::Serialise(e.to_string())),
        }
    }

    /// [`Self::canonical_json`], owned.
    pub fn to_canonical_json(&self) -> Result<String, CanonicalError> {
        self.canonical_json().map(std::borrow::Cow::into_owned)
    }

    /// [`Self::to_canonical_json`], taking the JSON kept from the digest instead of copying it.
    pub fn into_canonical_json(mut self) -> Result<String, CanonicalError> {
        if self.kept_json().is_none() {
            return self.to_canonical_json();
        }
        let json = self.canonical.0.take().expect("kept above").1;
        Ok(std::sync::Arc::try_unwrap(json).unwrap_or_else(|shared| shared.as_ref().clone()))
    }

    /// The JSON kept from computing the digest, while it is still this record's (no
    /// `explain`, the digest unchanged).
    fn kept_json(&self) -> Option<&std::sync::Arc<String>> {
        match &self.canonical.0 {
            Some((digest, json)) if !self.is_explained() && *digest == self.consensus_digest => Some(json),
            _ => None,
        }
    }

    /// Sets `consensus_digest` (the record must not have one yet, nor `explain`) and keeps
    /// the canonical JSON made on the way: one serialisation for both.
    fn seal(&mut self) -> Result<(), CanonicalError> {
        debug_assert!(self.consensus_digest.is_empty() && !self.is_explained());
        self.check_numbers()?;
        // ~0.5 KB per statement on vexhub (an estimate: the buffer only spares regrowths).
        let bare = canonical::to_vec_ordered_sized(self, 512 + 512 * self.statements.len())?;
        let digest = canonical::sha256_prefixed(&bare);
        // Kept with the record (and, by `vex-lens consensus`, until every record is out):
        // `insert_member` makes it in a buffer of its exact size.
        let json = canonical::insert_member(&bare, "consensus_digest", &canonical::to_vec(&digest)?)
            .ok_or_else(|| CanonicalError::Serialise("a record did not serialise as a JSON object".into()))?;
        let json = String::from_utf8(json).map_err(|e| CanonicalError::Serialise(e.to_string()))?;
        self.canonical = CanonicalCache(Some((digest.clone(), std::sync::Arc::new(json))));
        self.consensus_digest = digest;
        Ok(())
    }
}

/// What the vote decided for a pair.
pub(super) struct Outcome {
    pub status: ConsensusStatus,
    /// The leading status (equal to `status` unless disputed or inconclusive).
    pub leading: Option<Status>,
    /// Sum of counted weights per status, and their total.
    pub scores_ppm: BTreeMap<Status, u64>,
    pub total_weight_ppm: u64,
    pub confidence_ppm: u64,
    /// The justification of the winning side, when its statements agree on one.
    pub justification: Option<Justification>,
}

/// What the steps of an evaluation produced, for [`assemble`].
pub(super) struct Evaluated {
    pub evaluation_time: Timestamp,
    pub evaluation_time_source: EvaluationTimeSource,
    pub entries: Vec<StatementEntry>,
    pub outcome: Outcome,
    pub conflicts: Vec<Conflict>,
}

/// The sealed record of `pair` (its digest computed, the canonical JSON kept): the
/// aliases of every observation that applies, plus the pair's own vulnerability.
pub(super) fn assemble(
    pair: &PairKey,
    package: &str,
    obs: &[&crate::domain::model::Observation],
    policy: &crate::domain::trust::Policy,
    e: Evaluated,
) -> Result<ConsensusRecord, CanonicalError> {
    let mut aliases: std::collections::BTreeSet<&str> =
        obs.iter().flat_map(|o| o.aliases.iter().map(|a| &**a)).collect();
    aliases.insert(&pair.vulnerability);
    let mut record = ConsensusRecord {
        schema_version: RECORD_SCHEMA_VERSION,
        tenant: pair.tenant.clone(),
        artifact: pair.artifact.clone(),
        package: package.to_string(),
        vulnerability: pair.vulnerability.clone(),
        aliases: aliases.into_iter().map(str::to_string).collect(),
        status: e.outcome.status,
        leading_status: e.outcome.leading,
        justification: e.outcome.justification,
        confidence_ppm: e.outcome.confidence_ppm,
        mode: policy.mode,
        policy_version: policy.version().to_string(),
        evaluation_time: e.evaluation_time,
        evaluation_time_source: e.evaluation_time_source,
        scores_ppm: e.outcome.scores_ppm,
        total_weight_ppm: e.outcome.total_weight_ppm,
        statements: e.entries,
        conflicts: e.conflicts,
        consensus_digest: String::new(),
        explain: None,
        canonical: CanonicalCache::default(),
    };
    record.seal()?;
    Ok(record)
}
