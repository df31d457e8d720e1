//! The in-memory consensus state of one package: its observations, indexed by the pairs
//! they can apply to (CONSENSUS.md "Pairs").
//!
//! Invariants: the state is a set of observations keyed by their deterministic id, so
//! applying a duplicate changes nothing and the order of application does not matter;
//! every observation belongs to the state's one package; applying one costs in proportion
//! to the pairs it can change; the state only grows. A version marker of the document
//! ledger ([`crate::domain::ledger`]) is held like an observation (same id rule, same
//! package check) but applies to no pair: it only orders its document's versions for
//! retraction ([`PackageState::apply`] lists the pairs of that document's statements).
//! Of an observation's provenance the state holds only its stream position (what a
//! record's version reads); the rest of the observation is held as applied.

use super::evaluate::evaluate;
use super::record::{ConsensusRecord, PairKey, Reason};
use super::retract;
use crate::domain::canonical::CanonicalError;
use crate::domain::keys::{self, ArtifactKey};
use crate::domain::ledger::version_cmp;
use crate::domain::model::{Observation, Provenance};
use crate::domain::trust::Policy;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The hash maps of a package state: foldhash (randomly seeded per process, as std's is)
/// instead of std's SipHash, which took about 1 % of `serve --once` hashing the state's
/// strings; nothing reads these maps in their iteration order.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// Why an observation was not accepted by a package state.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("observation {id}: belongs to package {got}, not {expected}")]
    WrongPackage { id: String, got: String, expected: String },
    #[error("observation {id}: artifact key {artifact:?} is invalid: {reason}")]
    BadArtifact { id: String, artifact: String, reason: String },
    #[error("version marker {id}: names no document")]
    MarkerWithoutDocument { id: String },
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
struct Strings(std::collections::HashSet<Arc<str>, foldhash::fast::RandomState>);

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

/// Every pair (of known artifacts) a statement about `key` and `vulnerability` applies to.
fn pairs_applying(
    t: &TenantIndex,
    parsed: &HashMap<Arc<str>, ArtifactKey>,
    key: &ArtifactKey,
    tenant: &str,
    vulnerability: &str,
    out: &mut BTreeSet<PairKey>,
) {
    let candidates: Box<dyn Iterator<Item = &Arc<str>>> = if is_broad(key) {
        Box::new(t.artifacts.iter())
    } else {
        Box::new(t.by_version.get(&key.version).into_iter().flatten())
    };
    for a in candidates {
        if parsed.get(a).is_some_and(|pk| key.applies_to(pk)) {
            out.insert(PairKey {
                tenant: tenant.to_string(),
                artifact: a.to_string(),
                vulnerability: vulnerability.to_string(),
            });
        }
    }
}

/// Every pair (of known artifacts) the statements of document `d` apply to (`t`: the
/// document's tenant).
fn document_pairs(
    t: &TenantIndex,
    parsed: &HashMap<Arc<str>, ArtifactKey>,
    observations: &BTreeMap<ObsKey, Box<Observation>>,
    d: &DocumentVersions,
    out: &mut BTreeSet<PairKey>,
) {
    for x in d.ids.iter().filter_map(|id| observations.get(id)).filter(|x| x.kind.is_statement()) {
        if let Some(xk) = parsed.get(&x.artifact) {
            pairs_applying(t, parsed, xk, &x.tenant, &x.vulnerability, out);
        }
    }
}

/// What [`PackageState::pair_extent`] tells of a pair: the highest `provenance.sequence`
/// among the observations that apply to it (-1 when none has one) and how many apply.
pub type PairExtent = (i64, u64);

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
    /// The observations of each document (all its versions), for retraction.
    documents: HashMap<DocKey, DocumentVersions>,
}

/// A document across its versions: (tenant, issuer as claimed, document id: OpenVEX
/// `@id`, CSAF `tracking.id`, CycloneDX `serialNumber`).
type DocKey = (Arc<str>, Option<Arc<str>>, Arc<str>);

/// The observations (statements and version markers) of one document held by a state,
/// and the versions (digests) they come from.
#[derive(Clone, Debug, Default)]
struct DocumentVersions {
    ids: BTreeSet<ObsKey>,
    /// The version markers among `ids` (what [`PackageState::pair_extent`] counts, without
    /// walking every statement of a large document for each pair).
    markers: BTreeSet<ObsKey>,
    digests: BTreeSet<Arc<str>>,
}

fn doc_key(o: &Observation) -> Option<DocKey> {
    Some((o.tenant.clone(), o.issuer.clone(), o.document_id.clone()?))
}

impl PackageState {
    pub fn new() -> Self {
        Self::default()
    }

    /// A state rebuilt from stored observations (what the actor, the API and the CLI do
    /// before evaluating): every observation applied, in any order (the result does not
    /// depend on it); those the state refuses are returned with why.
    pub fn rebuild<I: IntoIterator<Item = Observation>>(observations: I) -> (Self, Vec<ApplyError>) {
        let mut st = PackageState::new();
        let mut errors = Vec::new();
        for o in observations {
            if let Err(e) = st.insert(o) {
                errors.push(e);
            }
        }
        (st, errors)
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

    /// The observations held (their provenance reduced to its `sequence`).
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
        // Of its provenance a state reads only the stream position (a record's version,
        // `pair_extent`): where it came from and its correlation id stay with the copy
        // that is stored and logged, not with each held observation.
        o.provenance = Provenance { sequence: o.provenance.sequence, ..Provenance::default() };
        if !o.kind.is_statement() {
            return self.add_marker(id, o, list_changed);
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
            pairs_applying(t, &self.parsed, &key, &o.tenant, &o.vulnerability, &mut affected);
            // Another version of its document: every statement of the document may be
            // retracted (or no longer be) by this one.
            if let Some(d) = doc_key(&o).and_then(|k| self.documents.get(&k)) {
                if d.digests.iter().any(|x| *x != o.document_digest) {
                    document_pairs(t, &self.parsed, &self.observations, d, &mut affected);
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
        if let Some(k) = doc_key(&o) {
            let d = self.documents.entry(k).or_default();
            d.ids.insert(id);
            d.digests.insert(o.document_digest.clone());
        }
        self.observations.insert(id, Box::new(o));
        Ok(affected.into_iter().collect())
    }

    /// Holds a version marker: checked like a statement (its package), indexed only under
    /// its document. Lists the pairs of the document's statements (each may now be
    /// retracted).
    fn add_marker(&mut self, id: ObsKey, mut o: Observation, list_changed: bool) -> Result<Vec<PairKey>, ApplyError> {
        if let Some(p) = self.package.as_ref().filter(|p| **p != o.package) {
            return Err(ApplyError::WrongPackage {
                id: o.id.to_string(),
                got: o.package.to_string(),
                expected: p.to_string(),
            });
        }
        let Some(k) = doc_key(&o) else {
            return Err(ApplyError::MarkerWithoutDocument { id: o.id.to_string() });
        };
        self.strings.share_all(&mut o);
        if self.package.is_none() {
            self.package = Some(o.package.clone());
        }
        let tenant = o.tenant.clone();
        let d = self.documents.entry(k).or_default();
        d.ids.insert(id);
        d.markers.insert(id);
        d.digests.insert(o.document_digest.clone());
        self.observations.insert(id, Box::new(o));
        let mut affected = BTreeSet::new();
        if let Some(t) = self.tenants.get(&tenant).filter(|_| list_changed) {
            document_pairs(t, &self.parsed, &self.observations, d, &mut affected);
        }
        Ok(affected.into_iter().collect())
    }

    /// The pairs the state holds now that applying `o` may change (a superset: every
    /// held pair [`Self::apply`] would list for it; the pairs it would create are not
    /// held yet). Changes nothing: what a caller evaluates before applying `o` to know a
    /// pair's state without it. Empty for an observation the state holds or refuses.
    pub fn pairs_changed_by(&self, o: &Observation) -> Vec<PairKey> {
        if !o.id.is_empty() && self.observations.contains_key(&ObsKey::of(&o.id)) {
            return Vec::new();
        }
        let Some(t) = self.tenants.get(&*o.tenant) else {
            return Vec::new();
        };
        let mut out = BTreeSet::new();
        if o.kind.is_statement() {
            let parsed_here;
            let key = match self.parsed.get(&*o.artifact) {
                Some(k) => k,
                None => match keys::parse_key(&o.artifact) {
                    Ok(k) => {
                        parsed_here = k;
                        &parsed_here
                    }
                    Err(_) => return Vec::new(),
                },
            };
            pairs_applying(t, &self.parsed, key, &o.tenant, &o.vulnerability, &mut out);
        }
        if let Some(d) = doc_key(o).and_then(|k| self.documents.get(&k)) {
            document_pairs(t, &self.parsed, &self.observations, d, &mut out);
        }
        out.into_iter().collect()
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
    ///
    /// The pair's artifact need not be one the state holds: for a concrete artifact no one
    /// stated exactly (a scanner's `pkg:rpm/ns/name@version?arch=..&distro=..`), every
    /// statement that applies to it (version-less, a range containing its version, its
    /// platform's, a subset of its qualifiers) does. An artifact key that does not parse,
    /// or is of another package, has none.
    pub fn applicable(&self, pair: &PairKey) -> Vec<&Observation> {
        let parsed_here;
        let pk = match self.parsed.get(pair.artifact.as_str()) {
            Some(pk) => pk,
            None => match keys::parse_key(&pair.artifact) {
                Ok(k) if self.package.as_deref() == Some(k.package.as_str()) => {
                    parsed_here = k;
                    &parsed_here
                }
                _ => return Vec::new(),
            },
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
    pub fn pair_extent(&self, pair: &PairKey) -> PairExtent {
        self.extent_of(&self.applicable(pair))
    }

    /// [`Self::pair_extent`] of the pair `obs` apply to (its [`Self::applicable`]).
    fn extent_of(&self, obs: &[&Observation]) -> PairExtent {
        // The version markers of their documents change the record too (retraction).
        let docs: BTreeSet<DocKey> = obs.iter().filter_map(|o| doc_key(o)).collect();
        let mut markers: BTreeSet<ObsKey> = BTreeSet::new();
        for d in docs.iter().filter_map(|k| self.documents.get(k)) {
            markers.extend(d.markers.iter().copied());
        }
        let marker_seqs = markers.iter().filter_map(|id| self.observations.get(id)?.provenance.sequence);
        let max = obs.iter().filter_map(|o| o.provenance.sequence).chain(marker_seqs).max().unwrap_or(-1);
        (max, (obs.len() + markers.len()) as u64)
    }

    /// Why `o` no longer counts, if a newer version of its document (same tenant, claimed
    /// issuer and document id) that this state holds no longer makes it: a version marker
    /// of a document version above every version of the document's statements held here
    /// ([`Self::retracted_by_marker`]), else no statement of the newest version is about
    /// `o`'s (artifact, vulnerability). Versions are ordered by
    /// [`retract::version_order`]; versions tied at the top retract nothing.
    fn retracted_by(&self, o: &Observation) -> Option<Reason> {
        let d = self.documents.get(&doc_key(o)?)?;
        if d.digests.len() < 2 {
            return None;
        }
        if let Some(reason) = self.retracted_by_marker(d) {
            return Some(reason);
        }
        let mut versions: BTreeMap<&str, retract::Version> = BTreeMap::new();
        for x in d.ids.iter().filter_map(|id| self.observations.get(id)).filter(|x| x.kind.is_statement()) {
            let v = versions
                .entry(&x.document_digest)
                .or_insert(retract::Version { version: x.document_version.as_deref(), newest: x.timestamp });
            v.newest = v.newest.max(x.timestamp);
        }
        let own = versions.get(&*o.document_digest)?;
        let newest = versions.values().max_by(|a, b| retract::version_order(a, b))?;
        if retract::version_order(own, newest) != std::cmp::Ordering::Less {
            return None;
        }
        let top: BTreeSet<&str> = versions
            .iter()
            .filter(|(_, v)| retract::version_order(v, newest) == std::cmp::Ordering::Equal)
            .map(|(digest, _)| *digest)
            .collect();
        let restated = d.ids.iter().filter_map(|id| self.observations.get(id)).any(|x| {
            x.kind.is_statement()
                && top.contains(&*x.document_digest)
                && x.artifact == o.artifact
                && x.vulnerability == o.vulnerability
        });
        if restated {
            return None;
        }
        Some(Reason::Retracted {
            retracted_by: top.into_iter().map(Arc::from).collect(),
            version: newest.version.map(Arc::from),
        })
    }

    /// The retraction of `o` by the document's version markers: when the highest document
    /// version among them is above that of every statement of the document held here, that
    /// version names no product of this package any more, so no statement of an older one
    /// counts. The reason names the version and the digests of the markers at it (sorted).
    fn retracted_by_marker(&self, d: &DocumentVersions) -> Option<Reason> {
        let held = || d.ids.iter().filter_map(|id| self.observations.get(id));
        let newest_marker = held().filter(|x| !x.kind.is_statement()).max_by(|a, b| {
            version_cmp(a.document_version.as_deref(), b.document_version.as_deref())
                .then_with(|| b.document_digest.cmp(&a.document_digest))
        })?;
        let mv = newest_marker.document_version.as_deref();
        if held().any(|x| x.kind.is_statement() && version_cmp(x.document_version.as_deref(), mv).is_ge()) {
            return None;
        }
        let digests: BTreeSet<&str> = held()
            .filter(|x| !x.kind.is_statement() && version_cmp(x.document_version.as_deref(), mv).is_eq())
            .map(|x| &*x.document_digest)
            .collect();
        Some(Reason::Retracted {
            retracted_by: digests.into_iter().map(Arc::from).collect(),
            version: mv.map(Arc::from),
        })
    }

    /// Whether the state holds a statement about exactly this artifact (else a record of
    /// it is derived: see [`Self::applicable`]).
    pub fn holds_artifact(&self, artifact: &str) -> bool {
        self.parsed.contains_key(artifact)
    }

    /// Evaluates one pair under a policy (`Ok(None)`: no statement applies to it). The
    /// pair's artifact may be one no statement names exactly ([`Self::applicable`]).
    pub fn evaluate(
        &self,
        pair: &PairKey,
        policy: &Policy,
        explain: bool,
    ) -> Result<Option<ConsensusRecord>, ApplyError> {
        self.evaluate_applicable(pair, &self.applicable(pair), policy, explain)
    }

    /// [`Self::evaluate`] with the pair's [`Self::pair_extent`], from one look-up of the
    /// statements that apply to it.
    pub fn evaluate_with_extent(
        &self,
        pair: &PairKey,
        policy: &Policy,
    ) -> Result<Option<(ConsensusRecord, PairExtent)>, ApplyError> {
        let obs = self.applicable(pair);
        Ok(self.evaluate_applicable(pair, &obs, policy, false)?.map(|r| (r, self.extent_of(&obs))))
    }

    fn evaluate_applicable(
        &self,
        pair: &PairKey,
        obs: &[&Observation],
        policy: &Policy,
        explain: bool,
    ) -> Result<Option<ConsensusRecord>, ApplyError> {
        if obs.is_empty() {
            return Ok(None);
        }
        let package = self.package.as_deref().unwrap_or_default();
        evaluate(pair, package, obs, &|o| self.retracted_by(o), policy, explain).map(Some).map_err(|source| {
            ApplyError::Undigestible {
                artifact: pair.artifact.clone(),
                vulnerability: pair.vulnerability.clone(),
                source,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state holds ids as 32 bytes: hex ids by their bytes (same order as their text), any
    /// other id by its SHA-256, so an upper-case spelling of an id is another observation.
    #[test]
    fn observation_keys_keep_hex_order_and_tell_other_ids_apart() {
        let a = "0".repeat(63) + "1";
        let b = "f".repeat(64);
        assert!(ObsKey::of(&a) < ObsKey::of(&b));
        assert_eq!(ObsKey::of(&b).0, [0xff; 32]);
        assert_ne!(ObsKey::of(&b), ObsKey::of(&"F".repeat(64)));
        assert_ne!(ObsKey::of("x"), ObsKey::of("y"));
        assert_eq!(ObsKey::of("x"), ObsKey::of("x"));
    }
}
