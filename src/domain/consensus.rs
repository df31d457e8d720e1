//! Per-package consensus state and the evaluation of one (tenant, artifact,
//! vulnerability) pair (CONSENSUS.md).
//!
//! Invariants: the state is a set of observations keyed by their deterministic id, so
//! applying a duplicate changes nothing and the order of application does not matter;
//! a record is a pure function of (the observations that apply to its pair, the policy),
//! so incremental application equals batch recomputation; all arithmetic is in integer
//! ppm; every list in a record is sorted by a total order.

use super::canonical::{self, CanonicalError};
pub use super::codes::ConflictReason;
use super::decay;
use super::keys::{self, ArtifactKey};
use super::model::{Justification, Observation, SignatureStatus, SourceFormat, Status};
use super::timestamp::Timestamp;
use super::trust::{to_ppm, Mode, Policy, Tier, PPM, UNKNOWN_ISSUER};
use super::vers::compare_generic as compare_versions;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    Superseded,
    Excluded,
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

/// One statement as it contributed to a record.
/// Fields in RFC 8785 key order: serialised in declaration order, the canonical JSON is
/// written without sorting ([`canonical::to_vec_ordered`]; checked in debug builds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementEntry {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action_statement: Option<Arc<str>>,
    /// The statement's own artifact key (broader than the pair's for version-less or
    /// range statements).
    pub artifact: Arc<str>,
    pub document_digest: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub document_version: Option<Arc<str>>,
    pub factors: Factors,
    pub format: SourceFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub impact_statement: Option<Arc<str>>,
    /// Issuer id after directory resolution (`unknown` when none was named).
    pub issuer: Arc<str>,
    /// The name the statement claimed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub issuer_claimed: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification: Option<Justification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub justification_original: Option<Arc<str>>,
    pub observation_id: Arc<str>,
    pub position: u32,
    /// Why superseded or excluded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<Arc<str>>,
    pub signature: SignatureStatus,
    pub status: Status,
    pub status_original: Arc<str>,
    pub tier: Tier,
    pub timestamp: Timestamp,
    pub weight_ppm: u64,
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
pub const RECORD_SCHEMA_VERSION: u32 = 2;

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
    pub evaluation_time_source: String,
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
        let bytes = if self.consensus_digest.is_empty() && self.explain.is_none() {
            canonical::to_vec_ordered(self)?
        } else {
            let mut bare = self.clone();
            bare.consensus_digest.clear();
            bare.explain = None;
            canonical::to_vec_ordered(&bare)?
        };
        Ok(canonical::sha256_prefixed(&bytes))
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

    /// Canonical JSON of the record (what is digested, plus the digest and explain).
    pub fn to_canonical_json(&self) -> Result<String, CanonicalError> {
        match self.kept_json() {
            Some(json) => Ok(json.to_string()),
            None => String::from_utf8(canonical::to_vec_ordered(self)?)
                .map_err(|e| CanonicalError::Serialise(e.to_string())),
        }
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
            Some((digest, json)) if self.explain.is_none() && *digest == self.consensus_digest => Some(json),
            _ => None,
        }
    }

    /// Sets `consensus_digest` (the record must not have one yet, nor `explain`) and keeps
    /// the canonical JSON made on the way: one serialisation for both.
    fn seal(&mut self) -> Result<(), CanonicalError> {
        debug_assert!(self.consensus_digest.is_empty() && self.explain.is_none());
        self.check_numbers()?;
        // ~1.3 KB per statement on vexhub; the member added below fits too.
        let mut json = canonical::to_vec_ordered_sized(self, 512 + 1536 * self.statements.len())?;
        let digest = canonical::sha256_prefixed(&json);
        canonical::insert_member_in_place(&mut json, "consensus_digest", &canonical::to_vec(&digest)?)
            .ok_or_else(|| CanonicalError::Serialise("a record did not serialise as a JSON object".into()))?;
        // Kept with the record (and, by `vex-lens consensus`, until every record is out).
        json.shrink_to_fit();
        let json = String::from_utf8(json).map_err(|e| CanonicalError::Serialise(e.to_string()))?;
        self.canonical = CanonicalCache(Some((digest.clone(), std::sync::Arc::new(json))));
        self.consensus_digest = digest;
        Ok(())
    }
}

/// Why an observation was not accepted by a package state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("observation {id}: belongs to package {got}, not {expected}")]
    WrongPackage { id: String, got: String, expected: String },
    #[error("observation {id}: artifact key {artifact:?} is invalid: {reason}")]
    BadArtifact { id: String, artifact: String, reason: String },
    #[error("observation has no canonical form: {0}")]
    Unidentifiable(CanonicalError),
    #[error("record of {artifact} / {vulnerability} cannot be digested: {source}")]
    Undigestible { artifact: String, vulnerability: String, source: CanonicalError },
}

/// The statements of one (tenant, vulnerability), split by the artifacts they can apply to.
#[derive(Clone, Debug, Default)]
struct VulnIndex {
    /// Version-less or `vers:` range statements: may apply to any artifact of the package.
    broad: BTreeSet<ObsKey>,
    /// Statements about one concrete version: apply only to artifacts of that version.
    exact: HashMap<String, BTreeSet<ObsKey>>,
}

/// An observation's id as a package state holds it (in its map and every index): the 32
/// bytes its 64 lower-case hex digits spell, or, for an id of any other form (only a
/// caller can make one), the SHA-256 of its text. 32 bytes inline instead of a 64-byte
/// string on the heap per copy; the same order as the ids' text for hex ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct ObsKey([u8; 32]);

impl ObsKey {
    fn of(id: &str) -> ObsKey {
        let mut k = [0u8; 32];
        let lower_hex = id.len() == 64 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if lower_hex && hex::decode_to_slice(id, &mut k).is_ok() {
            return ObsKey(k);
        }
        k.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, id.as_bytes()).as_ref());
        ObsKey(k)
    }
}

/// What one tenant's statements about the package say, indexed so that applying one
/// statement touches only the artifacts it can apply to. Keys are the package's shared
/// strings ([`Strings`]).
#[derive(Clone, Debug, Default)]
struct TenantIndex {
    /// Every artifact seen in any statement.
    artifacts: BTreeSet<Arc<str>>,
    /// The same artifacts by version (`None`: version-less).
    by_version: HashMap<Option<String>, BTreeSet<Arc<str>>>,
    vulns: BTreeMap<Arc<str>, VulnIndex>,
    /// Vulnerabilities with a broad statement.
    broad_vulns: BTreeSet<Arc<str>>,
    /// Vulnerabilities with a statement about a concrete version, by version.
    exact_vulns: HashMap<String, BTreeSet<Arc<str>>>,
}

/// The strings a package state holds, each once: the statements of one package share
/// most of theirs (tenant, package, artifact, vulnerability, document id, digest and
/// version, issuer, status and justification as written, impact and action statements),
/// so every observation applied has its strings replaced by the state's copies and the
/// indexes key on the same `Arc`s. Only grows, as the state does.
#[derive(Clone, Debug, Default)]
struct Strings(std::collections::HashSet<Arc<str>>);

impl Strings {
    /// The state's copy of `s` (stored first if new).
    fn share(&mut self, s: &mut Arc<str>) {
        match self.0.get(s) {
            Some(held) => *s = held.clone(),
            None => {
                // The state's own copy: observations of one document (whose strings the
                // normalisers share) may go to states used on other threads.
                *s = Arc::from(&**s);
                self.0.insert(s.clone());
            }
        }
    }

    fn share_opt(&mut self, s: &mut Option<Arc<str>>) {
        if let Some(s) = s {
            self.share(s);
        }
    }

    /// Replaces every shareable string of `o` (all but its id) by the state's copy.
    fn share_all(&mut self, o: &mut Observation) {
        for s in [&mut o.tenant, &mut o.artifact, &mut o.package, &mut o.vulnerability, &mut o.status_original] {
            self.share(s);
        }
        self.share(&mut o.document_digest);
        for s in [
            &mut o.issuer,
            &mut o.justification_original,
            &mut o.impact_statement,
            &mut o.action_statement,
            &mut o.document_id,
            &mut o.document_version,
        ] {
            self.share_opt(s);
        }
        for s in o.scope.iter_mut().chain(o.aliases.iter_mut()) {
            self.share(s);
        }
    }
}

/// A version-less or `vers:` range key: a statement about it may apply to other artifacts.
fn is_broad(k: &ArtifactKey) -> bool {
    k.version.as_ref().map_or(true, |v| v.starts_with("vers:"))
}

/// The concrete version of a key, if it has one.
fn concrete_version(k: &ArtifactKey) -> Option<&String> {
    k.version.as_ref().filter(|v| !v.starts_with("vers:"))
}

/// The in-memory consensus state of one package (what an `ArtifactActor` holds).
///
/// Indexed so that applying an observation costs in proportion to the pairs it can
/// change: a statement about a concrete version meets only the artifacts of that version;
/// a version-less or range statement every artifact of the package (CONSENSUS.md "Pairs");
/// a new artifact only the broad statements and those about its own version.
#[derive(Clone, Debug, Default)]
pub struct PackageState {
    package: Option<Arc<str>>,
    /// Boxed: the map's nodes hold a key and a pointer, not the observations' slack.
    observations: BTreeMap<ObsKey, Box<Observation>>,
    tenants: BTreeMap<Arc<str>, TenantIndex>,
    parsed: HashMap<Arc<str>, ArtifactKey>,
    strings: Strings,
}

impl PackageState {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.observations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.observations.is_empty()
    }

    pub fn package(&self) -> Option<&str> {
        self.package.as_deref()
    }

    pub fn observations(&self) -> impl Iterator<Item = &Observation> {
        self.observations.values().map(|o| &**o)
    }

    /// Applies one observation. Returns the pairs whose record may have changed (empty
    /// when the observation was already known: duplicates change nothing).
    pub fn apply(&mut self, o: Observation) -> Result<Vec<PairKey>, ApplyError> {
        self.add(o, true)
    }

    /// [`Self::apply`] without listing the pairs it changes (a batch evaluates every pair
    /// of the state afterwards): the same state, less work.
    pub fn insert(&mut self, o: Observation) -> Result<(), ApplyError> {
        self.add(o, false).map(drop)
    }

    fn add(&mut self, mut o: Observation, list_changed: bool) -> Result<Vec<PairKey>, ApplyError> {
        if o.id.is_empty() {
            o.id = o.compute_id().map_err(ApplyError::Unidentifiable)?.into();
        }
        let id = ObsKey::of(&o.id);
        if self.observations.contains_key(&id) {
            return Ok(Vec::new());
        }
        // An artifact already held was parsed when it first came.
        let key = match self.parsed.get(&*o.artifact) {
            Some(k) => k.clone(),
            None => keys::parse_key(&o.artifact).map_err(|e| ApplyError::BadArtifact {
                id: o.id.to_string(),
                artifact: o.artifact.to_string(),
                reason: e.to_string(),
            })?,
        };
        if let Some(p) = self.package.as_ref().filter(|p| **p != o.package) {
            return Err(ApplyError::WrongPackage {
                id: o.id.to_string(),
                got: o.package.to_string(),
                expected: p.to_string(),
            });
        }
        self.strings.share_all(&mut o);
        if self.package.is_none() {
            self.package = Some(o.package.clone());
        }
        let broad = is_broad(&key);
        let t = self.tenants.entry(o.tenant.clone()).or_default();
        let new_artifact = t.artifacts.insert(o.artifact.clone());
        if new_artifact {
            t.by_version.entry(key.version.clone()).or_default().insert(o.artifact.clone());
        }
        self.parsed.entry(o.artifact.clone()).or_insert_with(|| key.clone());
        let pair = |artifact: &str, vulnerability: &str| PairKey {
            tenant: o.tenant.to_string(),
            artifact: artifact.to_string(),
            vulnerability: vulnerability.to_string(),
        };
        let mut affected: BTreeSet<PairKey> = BTreeSet::new();
        if list_changed {
            // The statement's own pair, and every known artifact it applies to.
            let candidates: Box<dyn Iterator<Item = &Arc<str>>> = if broad {
                Box::new(t.artifacts.iter())
            } else {
                Box::new(t.by_version.get(&key.version).into_iter().flatten())
            };
            for a in candidates {
                if self.parsed.get(a).is_some_and(|pk| key.applies_to(pk)) {
                    affected.insert(pair(a, &o.vulnerability));
                }
            }
            // A new artifact gains pairs for every vulnerability with a statement applying to
            // it: only broad statements and those about its own version can.
            if new_artifact {
                let applies = |id: &ObsKey| {
                    self.observations
                        .get(id)
                        .and_then(|x| self.parsed.get(&x.artifact))
                        .is_some_and(|k| k.applies_to(&key))
                };
                for v in &t.broad_vulns {
                    if t.vulns.get(v).is_some_and(|vi| vi.broad.iter().any(applies)) {
                        affected.insert(pair(&o.artifact, v));
                    }
                }
                if let Some(ver) = concrete_version(&key) {
                    for v in t.exact_vulns.get(ver).into_iter().flatten() {
                        if t.vulns.get(v).and_then(|vi| vi.exact.get(ver)).is_some_and(|ids| ids.iter().any(applies)) {
                            affected.insert(pair(&o.artifact, v));
                        }
                    }
                }
            }
        }
        let vi = t.vulns.entry(o.vulnerability.clone()).or_default();
        match concrete_version(&key).filter(|_| !broad) {
            Some(ver) => {
                vi.exact.entry(ver.clone()).or_default().insert(id);
                t.exact_vulns.entry(ver.clone()).or_default().insert(o.vulnerability.clone());
            }
            None => {
                vi.broad.insert(id);
                t.broad_vulns.insert(o.vulnerability.clone());
            }
        }
        self.observations.insert(id, Box::new(o));
        Ok(affected.into_iter().collect())
    }

    fn key_of(&self, id: &ObsKey) -> Option<&ArtifactKey> {
        self.observations.get(id).and_then(|o| self.parsed.get(&o.artifact))
    }

    /// Every pair of this package, sorted.
    pub fn pairs(&self) -> Vec<PairKey> {
        let mut out = BTreeSet::new();
        for (tenant, t) in &self.tenants {
            for (v, vi) in &t.vulns {
                let mut add = |ids: &BTreeSet<ObsKey>, arts: &BTreeSet<Arc<str>>| {
                    for a in arts {
                        let Some(pk) = self.parsed.get(a) else { continue };
                        if ids.iter().any(|id| self.key_of(id).is_some_and(|k| k.applies_to(pk))) {
                            out.insert(PairKey {
                                tenant: tenant.to_string(),
                                artifact: a.to_string(),
                                vulnerability: v.to_string(),
                            });
                        }
                    }
                };
                add(&vi.broad, &t.artifacts);
                for (ver, ids) in &vi.exact {
                    if let Some(arts) = t.by_version.get(&Some(ver.clone())) {
                        add(ids, arts);
                    }
                }
            }
        }
        out.into_iter().collect()
    }

    /// The observations that apply to a pair, sorted by id.
    pub fn applicable(&self, pair: &PairKey) -> Vec<&Observation> {
        let Some(pk) = self.parsed.get(pair.artifact.as_str()) else {
            return Vec::new();
        };
        let Some(vi) = self.tenants.get(pair.tenant.as_str()).and_then(|t| t.vulns.get(pair.vulnerability.as_str()))
        else {
            return Vec::new();
        };
        let exact = concrete_version(pk).and_then(|v| vi.exact.get(v));
        let mut out: Vec<&Observation> = vi
            .broad
            .iter()
            .chain(exact.into_iter().flatten())
            .filter_map(|id| self.observations.get(id).map(|o| &**o))
            .filter(|o| self.parsed.get(&o.artifact).is_some_and(|k| k.applies_to(pk)))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The highest `provenance.sequence` among the observations that apply to a pair
    /// (-1 when none has one) and how many apply: with the policy epoch, the version of
    /// the pair's record (`ports::RecordVersion`). Both only grow as observations apply.
    pub fn pair_extent(&self, pair: &PairKey) -> (i64, u64) {
        let obs = self.applicable(pair);
        let max = obs.iter().filter_map(|o| o.provenance.sequence).max().unwrap_or(-1);
        (max, obs.len() as u64)
    }

    /// Evaluates one pair under a policy (`Ok(None)`: no statement applies to it).
    pub fn evaluate(
        &self,
        pair: &PairKey,
        policy: &Policy,
        explain: bool,
    ) -> Result<Option<ConsensusRecord>, ApplyError> {
        let obs = self.applicable(pair);
        if obs.is_empty() {
            return Ok(None);
        }
        let package = self.package.as_deref().unwrap_or_default();
        evaluate(pair, package, &obs, policy, explain).map(Some).map_err(|source| ApplyError::Undigestible {
            artifact: pair.artifact.clone(),
            vulnerability: pair.vulnerability.clone(),
            source,
        })
    }
}

/// The total order deciding which statement of an issuer is its latest: timestamp, then
/// document version, then position, then document digest, then observation id.
fn latest_order(a: &Observation, b: &Observation) -> Ordering {
    time_version_order(a, b)
        .then_with(|| a.position.cmp(&b.position))
        .then_with(|| a.document_digest.cmp(&b.document_digest))
        .then_with(|| a.id.cmp(&b.id))
}

/// Statement time, then document version: the order between versions of statements.
/// `Equal` for statements of different documents with the same time and no version order.
fn time_version_order(a: &Observation, b: &Observation) -> Ordering {
    a.timestamp.cmp(&b.timestamp).then_with(|| match (&a.document_version, &b.document_version) {
        (Some(x), Some(y)) => compare_versions(x, y),
        (x, y) => x.is_some().cmp(&y.is_some()),
    })
}

/// Marks all but each issuer's latest statement `superseded` (CONSENSUS.md "Which
/// statements count"). Statements of one issuer tied on time and document version but
/// from different documents have no order: if they disagree, the most conservative status
/// counts, the others are superseded with that reason, and a `status_disagreement`
/// conflict naming them is returned; if they agree, the larger document digest counts.
fn supersede(work: &mut [Work]) -> Vec<Conflict> {
    let mut by_issuer: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, w) in work.iter().enumerate() {
        if w.role != Role::Excluded {
            by_issuer.entry(&w.issuer).or_default().push(i);
        }
    }
    let mut conflicts = Vec::new();
    let mut marks: Vec<(usize, String)> = Vec::new();
    for (issuer, idx) in by_issuer {
        // Latest per document among the statements tied at the newest (time, version).
        let Some(top) = idx.iter().copied().max_by(|&a, &b| latest_order(work[a].o, work[b].o)) else {
            continue;
        };
        let mut per_doc: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in &idx {
            if time_version_order(work[i].o, work[top].o) == Ordering::Equal {
                let e = per_doc.entry(&work[i].o.document_digest).or_insert(i);
                if latest_order(work[*e].o, work[i].o) == Ordering::Less {
                    *e = i;
                }
            }
        }
        let statuses: BTreeSet<Status> = per_doc.values().map(|&i| work[i].o.status).collect();
        let winner = if statuses.len() > 1 {
            let w = per_doc
                .values()
                .copied()
                .max_by(|&a, &b| {
                    let (x, y) = (work[a].o, work[b].o);
                    x.status
                        .conservative_rank()
                        .cmp(&y.status.conservative_rank())
                        .then_with(|| x.document_digest.cmp(&y.document_digest))
                })
                .unwrap_or(top);
            let mut parts: Vec<String> = per_doc
                .values()
                .map(|&i| format!("{} in {}", work[i].o.status.as_str(), work[i].o.document_digest))
                .collect();
            parts.sort();
            conflicts.push(Conflict {
                reason: ConflictReason::StatusDisagreement,
                detail: format!(
                    "{issuer} contradicts itself at {} in different documents: {}; the more conservative status counts",
                    work[w].o.timestamp,
                    parts.join(" vs ")
                ),
                issuers: vec![issuer.to_string()],
                statuses: statuses.iter().copied().collect(),
            });
            for &i in per_doc.values() {
                if i != w {
                    marks.push((
                        i,
                        format!(
                            "superseded by {} ({} at {}): same issuer and time in another document; the more conservative status counts",
                            work[w].o.id,
                            work[w].o.status.as_str(),
                            work[w].o.timestamp
                        ),
                    ));
                }
            }
            w
        } else {
            // Agreeing (or a single document): the larger document digest is kept.
            per_doc.values().next_back().copied().unwrap_or(top)
        };
        let contradicted: BTreeSet<usize> =
            if statuses.len() > 1 { per_doc.values().copied().collect() } else { BTreeSet::new() };
        for &i in &idx {
            if i != winner && !contradicted.contains(&i) {
                let by = work[winner].o;
                marks.push((i, format!("superseded by {} ({} at {})", by.id, by.status.as_str(), by.timestamp)));
            }
        }
    }
    for (i, reason) in marks {
        work[i].role = Role::Superseded;
        work[i].reason = Some(reason);
    }
    conflicts
}

/// `a * b * c * d` for ppm factors, rounded half up to ppm.
fn mul_ppm(fs: &[u64]) -> u64 {
    let mut acc: u128 = PPM as u128;
    for f in fs {
        acc = (acc * *f as u128 + (PPM as u128 / 2)) / PPM as u128;
    }
    acc as u64
}

/// `max(floor, 0.5 ^ (age / half_life))` in fixed point (see [`super::decay`]).
fn freshness_ppm(ts: &Timestamp, at: &Timestamp, half_life_seconds: u64, floor_ppm: u64) -> u64 {
    decay::decay_ppm(at.unix_nanos() - ts.unix_nanos(), half_life_seconds).max(floor_ppm)
}

struct Work<'a> {
    o: &'a Observation,
    issuer: Arc<str>,
    tier: Tier,
    issuer_ppm: u64,
    role: Role,
    reason: Option<String>,
}

/// The explain trace: lines are formatted only when the caller asked for them.
struct Trace {
    lines: Option<Vec<String>>,
}

impl Trace {
    fn new(enabled: bool) -> Self {
        Trace { lines: enabled.then(Vec::new) }
    }

    fn add(&mut self, line: impl FnOnce() -> String) {
        if let Some(l) = &mut self.lines {
            l.push(line());
        }
    }
}

/// Evaluates a pair given the observations that apply to it.
pub fn evaluate(
    pair: &PairKey,
    package: &str,
    obs: &[&Observation],
    policy: &Policy,
    explain: bool,
) -> Result<ConsensusRecord, CanonicalError> {
    let knobs = &policy.knobs;
    let mut trace = Trace::new(explain);
    let mut work: Vec<Work> = obs
        .iter()
        .map(|o| {
            let (issuer, tier, issuer_ppm) = policy.resolve(o.issuer.as_ref(), &pair.tenant);
            Work { o, issuer, tier, issuer_ppm, role: Role::Counted, reason: None }
        })
        .collect();
    // Exclusions.
    for w in &mut work {
        if w.o.signature.status == SignatureStatus::Failed {
            w.role = Role::Excluded;
            w.reason =
                Some(format!("signature_failed{}", w.o.signature.reason.map(|r| format!(": {r}")).unwrap_or_default()));
        } else if knobs.require_justification_for_not_affected && unjustified(w.o) {
            w.role = Role::Excluded;
            w.reason = Some("not_affected_without_justification".into());
        }
    }
    // Latest statement per issuer counts; the others are superseded.
    let self_conflicts = supersede(&mut work);
    // Evaluation time.
    let counted = || work.iter().filter(|w| w.role == Role::Counted);
    let (evaluation_time, evaluation_time_source) = if let Some(t) = policy.as_of {
        (t, "as_of")
    } else if let Some(t) = counted().filter(|w| w.tier >= Tier::Known).map(|w| w.o.timestamp).max() {
        (t, "newest_known_issuer")
    } else if let Some(t) = counted().map(|w| w.o.timestamp).max() {
        (t, "newest_statement")
    } else {
        (work.iter().map(|w| w.o.timestamp).max().unwrap_or(Timestamp::EPOCH), "none")
    };
    trace.add(|| format!("evaluation time {evaluation_time} ({evaluation_time_source})"));
    // Weights.
    let signature_unsigned = to_ppm(1.0 - knobs.unsigned_penalty);
    let half_life_seconds = decay::half_life_seconds(knobs.half_life_days);
    let floor_ppm = to_ppm(knobs.freshness_floor);
    let mut entries: Vec<StatementEntry> = work
        .iter()
        .map(|w| {
            let signature_ppm = match w.o.signature.status {
                SignatureStatus::Verified => PPM,
                SignatureStatus::Unsigned => signature_unsigned,
                SignatureStatus::Failed => 0,
            };
            let justification_ppm = if unjustified(w.o) { to_ppm(knobs.unjustified_not_affected_factor) } else { PPM };
            let factors = Factors {
                issuer_ppm: w.issuer_ppm,
                signature_ppm,
                freshness_ppm: freshness_ppm(&w.o.timestamp, &evaluation_time, half_life_seconds, floor_ppm),
                justification_ppm,
            };
            let weight_ppm = if w.role == Role::Excluded {
                0
            } else {
                mul_ppm(&[factors.issuer_ppm, factors.signature_ppm, factors.freshness_ppm, factors.justification_ppm])
            };
            StatementEntry {
                observation_id: w.o.id.clone(),
                issuer: w.issuer.clone(),
                issuer_claimed: w.o.issuer.clone(),
                tier: w.tier,
                signature: w.o.signature.status,
                status: w.o.status,
                status_original: w.o.status_original.clone(),
                justification: w.o.justification,
                justification_original: w.o.justification_original.clone(),
                impact_statement: w.o.impact_statement.clone(),
                action_statement: w.o.action_statement.clone(),
                timestamp: w.o.timestamp,
                document_id: w.o.document_id.clone(),
                document_version: w.o.document_version.clone(),
                document_digest: w.o.document_digest.clone(),
                position: w.o.position,
                format: w.o.format,
                artifact: w.o.artifact.clone(),
                scope: w.o.scope.clone(),
                role: w.role,
                reason: w.reason.clone(),
                weight_ppm,
                factors,
            }
        })
        .collect();
    entries.sort_by(|a, b| {
        a.issuer
            .cmp(&b.issuer)
            .then(a.timestamp.cmp(&b.timestamp))
            .then(a.document_digest.cmp(&b.document_digest))
            .then(a.position.cmp(&b.position))
            .then(a.observation_id.cmp(&b.observation_id))
    });
    for e in &entries {
        trace.add(|| {
            format!(
                "{} {} {} {}: weight {} = issuer {} x signature {} x freshness {} x justification {}{}",
                e.issuer,
                e.status.as_str(),
                e.timestamp,
                match e.role {
                    Role::Counted => "counted",
                    Role::Superseded => "superseded",
                    Role::Excluded => "excluded",
                },
                e.weight_ppm,
                e.factors.issuer_ppm,
                e.factors.signature_ppm,
                e.factors.freshness_ppm,
                e.factors.justification_ppm,
                e.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
            )
        });
    }
    let counted_entries: Vec<&StatementEntry> = entries.iter().filter(|e| e.role == Role::Counted).collect();
    let mut scores_ppm: BTreeMap<Status, u64> = BTreeMap::new();
    for e in &counted_entries {
        *scores_ppm.entry(e.status).or_default() += e.weight_ppm;
    }
    let total_weight_ppm: u64 = scores_ppm.values().sum();
    trace.add(|| {
        format!(
            "scores (ppm): {}; total {total_weight_ppm}",
            scores_ppm.iter().map(|(s, v)| format!("{}={v}", s.as_str())).collect::<Vec<_>>().join(", ")
        )
    });
    // Decision.
    let decision = decide(policy, &counted_entries, &scores_ppm, total_weight_ppm, &mut trace);
    let confidence_ppm = match (decision.leading, decision.score_basis_total) {
        (Some(l), t) if t > 0 => {
            let s = *decision.scores.get(&l).unwrap_or(&0);
            ((s as u128 * PPM as u128 + t as u128 / 2) / t as u128) as u64
        }
        _ => 0,
    };
    // Justification of the winning side, when its statements agree.
    let justification = decision.leading.and_then(|l| {
        let js: BTreeSet<Justification> =
            counted_entries.iter().filter(|e| e.status == l).filter_map(|e| e.justification).collect();
        let only = js.first().copied();
        only.filter(|_| js.len() == 1)
    });
    let mut conflicts = conflicts(pair, &entries);
    conflicts.extend(self_conflicts);
    conflicts.sort();
    for c in &conflicts {
        trace.add(|| format!("conflict {}: {}", c.reason, c.detail));
    }
    let mut aliases: BTreeSet<&str> = obs.iter().flat_map(|o| o.aliases.iter().map(|a| &**a)).collect();
    aliases.insert(&pair.vulnerability);
    let mut record = ConsensusRecord {
        schema_version: RECORD_SCHEMA_VERSION,
        tenant: pair.tenant.clone(),
        artifact: pair.artifact.clone(),
        package: package.to_string(),
        vulnerability: pair.vulnerability.clone(),
        aliases: aliases.into_iter().map(str::to_string).collect(),
        status: decision.status,
        leading_status: decision.leading,
        justification,
        confidence_ppm,
        mode: policy.mode,
        policy_version: policy.version().to_string(),
        evaluation_time,
        evaluation_time_source: evaluation_time_source.to_string(),
        scores_ppm,
        total_weight_ppm,
        statements: entries,
        conflicts,
        consensus_digest: String::new(),
        explain: None,
        canonical: CanonicalCache::default(),
    };
    record.seal()?;
    if explain {
        trace.add(|| format!("result {} (confidence {confidence_ppm} ppm)", record.status.as_str()));
        record.explain = trace.lines;
    }
    Ok(record)
}

fn unjustified(o: &Observation) -> bool {
    o.status == Status::NotAffected
        && o.justification.is_none()
        && o.justification_original.is_none()
        && o.impact_statement.is_none()
}

struct Decision {
    status: ConsensusStatus,
    leading: Option<Status>,
    /// Scores the confidence is computed from, and their total.
    scores: BTreeMap<Status, u64>,
    score_basis_total: u64,
}

/// Highest score; ties go to the more conservative status.
fn leader_of(scores: &BTreeMap<Status, u64>) -> Option<(Status, u64)> {
    scores
        .iter()
        .map(|(s, v)| (*s, *v))
        .max_by(|a, b| a.1.cmp(&b.1).then(a.0.conservative_rank().cmp(&b.0.conservative_rank())))
}

fn weighted_vote(policy: &Policy, scores: &BTreeMap<Status, u64>, total: u64, trace: &mut Trace) -> Decision {
    let Some((leader, lead_score)) = leader_of(scores) else {
        trace.add(|| "no counted statement: inconclusive".into());
        return Decision {
            status: ConsensusStatus::Inconclusive,
            leading: None,
            scores: scores.clone(),
            score_basis_total: total,
        };
    };
    let min = to_ppm(policy.knobs.minimum_weight);
    let runner_up = scores.iter().filter(|(s, _)| **s != leader).map(|(_, v)| *v).max().unwrap_or(0);
    let threshold = to_ppm(policy.knobs.conflict_threshold);
    let status = if total < min || total == 0 {
        trace.add(|| format!("total weight {total} below minimum {min}: inconclusive"));
        ConsensusStatus::Inconclusive
    } else if runner_up > 0 && (runner_up as u128) * (PPM as u128) >= (threshold as u128) * (total as u128) {
        trace.add(|| format!("runner-up share {runner_up}/{total} at or above {threshold} ppm: disputed"));
        ConsensusStatus::Disputed
    } else {
        trace.add(|| format!("leader {} with {lead_score} of {total}", leader.as_str()));
        leader.into()
    };
    Decision { status, leading: Some(leader), scores: scores.clone(), score_basis_total: total }
}

fn decide(
    policy: &Policy,
    counted: &[&StatementEntry],
    scores: &BTreeMap<Status, u64>,
    total: u64,
    trace: &mut Trace,
) -> Decision {
    trace.add(|| format!("mode {}", policy.mode.as_str()));
    let pick = |s: Option<Status>, trace: &mut Trace| match s {
        Some(s) => Decision { status: s.into(), leading: Some(s), scores: scores.clone(), score_basis_total: total },
        None => {
            trace.add(|| "no counted statement: inconclusive".into());
            Decision {
                status: ConsensusStatus::Inconclusive,
                leading: None,
                scores: scores.clone(),
                score_basis_total: total,
            }
        }
    };
    match policy.mode {
        Mode::WeightedVote => weighted_vote(policy, scores, total, trace),
        Mode::Lattice => {
            let s = counted.iter().map(|e| e.status).max_by_key(|s| s.conservative_rank());
            pick(s, trace)
        }
        Mode::HighestWeight => {
            let s = counted
                .iter()
                .max_by(|a, b| {
                    a.weight_ppm
                        .cmp(&b.weight_ppm)
                        .then(a.timestamp.cmp(&b.timestamp))
                        .then(a.status.conservative_rank().cmp(&b.status.conservative_rank()))
                        .then(b.observation_id.cmp(&a.observation_id))
                })
                .map(|e| e.status);
            pick(s, trace)
        }
        Mode::MostRecent => {
            let s = counted
                .iter()
                .max_by(|a, b| {
                    a.timestamp
                        .cmp(&b.timestamp)
                        .then(a.weight_ppm.cmp(&b.weight_ppm))
                        .then(a.status.conservative_rank().cmp(&b.status.conservative_rank()))
                        .then(b.observation_id.cmp(&a.observation_id))
                })
                .map(|e| e.status);
            pick(s, trace)
        }
        Mode::AuthoritativeFirst => {
            let auth: Vec<&&StatementEntry> = counted.iter().filter(|e| e.tier == Tier::Authoritative).collect();
            if auth.is_empty() {
                trace.add(|| "no authoritative statement: vote among all".into());
                weighted_vote(policy, scores, total, trace)
            } else {
                let mut s: BTreeMap<Status, u64> = BTreeMap::new();
                for e in &auth {
                    *s.entry(e.status).or_default() += e.weight_ppm;
                }
                let t = s.values().sum();
                trace.add(|| format!("vote among {} authoritative statement(s)", auth.len()));
                weighted_vote(policy, &s, t, trace)
            }
        }
    }
}

fn conflicts(pair: &PairKey, entries: &[StatementEntry]) -> Vec<Conflict> {
    let mut out = Vec::new();
    let counted: Vec<&StatementEntry> = entries.iter().filter(|e| e.role == Role::Counted).collect();
    let statuses: BTreeSet<Status> = counted.iter().map(|e| e.status).collect();
    if statuses.len() > 1 {
        let issuers: BTreeSet<&str> = counted.iter().map(|e| &*e.issuer).collect();
        let detail = statuses
            .iter()
            .map(|s| {
                let who: BTreeSet<&str> = counted.iter().filter(|e| e.status == *s).map(|e| &*e.issuer).collect();
                format!("{} ({})", s.as_str(), who.into_iter().collect::<Vec<_>>().join(", "))
            })
            .collect::<Vec<_>>()
            .join(" vs ");
        out.push(Conflict {
            reason: ConflictReason::StatusDisagreement,
            detail,
            issuers: issuers.into_iter().map(str::to_string).collect(),
            statuses: statuses.iter().copied().collect(),
        });
        // Disagreement between statements of different scope (version-less or range vs
        // this exact artifact, or different subcomponents).
        let shapes: BTreeSet<(bool, &Vec<Arc<str>>)> =
            counted.iter().map(|e| (*e.artifact == *pair.artifact, &e.scope)).collect();
        if shapes.len() > 1 {
            let mut issuers = BTreeSet::new();
            let mut sts = BTreeSet::new();
            let mut parts = BTreeSet::new();
            for e in &counted {
                issuers.insert(&*e.issuer);
                sts.insert(e.status);
                let scope = if e.scope.is_empty() { String::new() } else { format!(" within {}", e.scope.join(", ")) };
                parts.insert(format!("{} says {} about {}{}", e.issuer, e.status.as_str(), e.artifact, scope));
            }
            out.push(Conflict {
                reason: ConflictReason::ScopeMismatch,
                detail: parts.into_iter().collect::<Vec<_>>().join("; "),
                issuers: issuers.into_iter().map(str::to_string).collect(),
                statuses: sts.into_iter().collect(),
            });
        }
    }
    let missing: Vec<&StatementEntry> = entries
        .iter()
        .filter(|e| {
            &*e.issuer == UNKNOWN_ISSUER && e.issuer_claimed.is_none() || e.signature == SignatureStatus::Failed
        })
        .collect();
    if !missing.is_empty() {
        let issuers: BTreeSet<&str> = missing.iter().map(|e| &*e.issuer).collect();
        let no_id = missing.iter().filter(|e| e.issuer_claimed.is_none()).count();
        let failed = missing.iter().filter(|e| e.signature == SignatureStatus::Failed).count();
        out.push(Conflict {
            reason: ConflictReason::MissingProvenance,
            detail: format!("{no_id} statement(s) name no issuer; {failed} statement(s) failed signature verification"),
            issuers: issuers.into_iter().map(str::to_string).collect(),
            statuses: missing.iter().map(|e| e.status).collect::<BTreeSet<_>>().into_iter().collect(),
        });
    }
    out.sort();
    out
}

/// Groups observations by package and evaluates every pair: the batch computation the CLI
/// runs on files, and the reference the incremental path must equal. Records are sorted
/// by artifact, then vulnerability, then tenant.
pub fn batch<I: IntoIterator<Item = Observation>>(
    observations: I,
    policy: &Policy,
    explain: bool,
) -> (Vec<ConsensusRecord>, Vec<ApplyError>) {
    let (records, errors) = batch_map(observations, policy, explain, |r| Ok::<_, std::convert::Infallible>(r));
    (records.into_iter().map(|(_, r)| r).collect(), errors)
}

/// [`batch`], with each record mapped by `f` as soon as it is evaluated (so a caller that
/// needs only, say, its canonical JSON never holds every record at once), in the same
/// order; each item comes with its pair. A record `f` fails on is dropped and its error
/// returned with the others.
pub fn batch_map<I, T, E, F>(
    observations: I,
    policy: &Policy,
    explain: bool,
    f: F,
) -> (Vec<(PairKey, T)>, Vec<ApplyError>)
where
    I: IntoIterator<Item = Observation>,
    F: Fn(ConsensusRecord) -> Result<T, E> + Sync,
    T: Send,
    E: Into<CanonicalError>,
{
    let mut out = Vec::new();
    let errors = batch_each(observations, policy, explain, f, |p, t| out.push((p.clone(), t)));
    (out, errors)
}

/// Pairs evaluated in parallel per round, handed on in order between rounds.
const BATCH_ROUND: usize = 1024;

/// [`batch_map`], handing each mapped record to `sink` in record order instead of
/// collecting them: the pairs are listed and sorted first, then evaluated in rounds on
/// every core (packages are independent, a record depends on its package's state only),
/// so only a round's records are held at once and the order does not depend on the
/// number of threads.
pub fn batch_each<I, T, E, F, S>(observations: I, policy: &Policy, explain: bool, f: F, mut sink: S) -> Vec<ApplyError>
where
    I: IntoIterator<Item = Observation>,
    F: Fn(ConsensusRecord) -> Result<T, E> + Sync,
    T: Send,
    E: Into<CanonicalError>,
    S: FnMut(&PairKey, T),
{
    use rayon::prelude::*;
    // Grouped by package in input order, then each package's state built on its own
    // (errors reported package by package, in package order).
    let mut by_package: BTreeMap<Arc<str>, Vec<Observation>> = BTreeMap::new();
    for o in observations {
        by_package.entry(o.package.clone()).or_default().push(o);
    }
    let built: Vec<(PackageState, Vec<ApplyError>)> = by_package
        .into_values()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|obs| {
            let (mut state, mut errors) = (PackageState::new(), Vec::new());
            for o in obs {
                if let Err(e) = state.insert(o) {
                    errors.push(e);
                }
            }
            (state, errors)
        })
        .collect();
    let mut errors = Vec::new();
    let states: Vec<PackageState> = built
        .into_iter()
        .map(|(s, e)| {
            errors.extend(e);
            s
        })
        .collect();
    let mut pairs: Vec<(PairKey, &PackageState)> =
        states.par_iter().flat_map_iter(|s| s.pairs().into_iter().map(move |p| (p, s))).collect();
    pairs.par_sort_unstable_by(|(a, _), (b, _)| {
        a.artifact.cmp(&b.artifact).then(a.vulnerability.cmp(&b.vulnerability)).then(a.tenant.cmp(&b.tenant))
    });
    for round in pairs.chunks(BATCH_ROUND) {
        let evaluated: Vec<Result<Option<T>, ApplyError>> = round
            .par_iter()
            .map(|(p, s)| match s.evaluate(p, policy, explain) {
                Ok(Some(r)) => f(r).map(Some).map_err(|e| ApplyError::Undigestible {
                    artifact: p.artifact.clone(),
                    vulnerability: p.vulnerability.clone(),
                    source: e.into(),
                }),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            })
            .collect();
        for ((p, _), r) in round.iter().zip(evaluated) {
            match r {
                Ok(Some(t)) => sink(p, t),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    // The states are freed on every core too (freeing every observation one by one on
    // this thread alone was a serial tail of the batch).
    drop(pairs);
    states.into_par_iter().for_each(drop);
    errors
}

#[cfg(test)]
#[path = "consensus_tests.rs"]
mod tests;
