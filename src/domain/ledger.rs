//! The document ledger (CONSENSUS.md "Which statements count", retraction by a newer
//! version): which versions of a document were seen and which packages each named, and
//! the version markers that follow, so that a package whose products a newer version no
//! longer names still hears of that version.
//!
//! A package state sees the versions of a document whose statements it holds; a newer
//! version naming none of its products would never reach it. The ledger closes that gap:
//! for every version `X` of a document (same tenant, claimed issuer and document id) and
//! every package `P` that `X` names no product of while some version `V` with a lower
//! document version does, and `V` and `X` name at least one package in common, it owes `P`
//! one **version marker** of `X`
//! ([`EntryKind::VersionMarker`]): an entry of the observation stream, routed, carried,
//! authenticated and stored as the package's observations are, which the package state
//! orders among the document's versions ([`crate::domain::consensus::PackageState`]).
//!
//! Invariants: the markers owed are a pure function of the set of versions seen
//! ([`owed`]), so every order of arrival owes the same set and the batch computation
//! ([`Ledger`]) owes what the incremental one does; [`owed_on_arrival`] owes exactly the
//! markers of [`owed`] that involve the arriving version, so an ingest flow that records
//! each version before it reads the others (the store's ledger) emits, over all arrivals,
//! exactly [`owed`] of the final set; a marker's content (so its id) depends only on its
//! version and package, so owing it twice changes nothing. Versions are compared by
//! document version only ([`version_cmp`]): two versions with equal (or no) document
//! versions owe each other nothing (the package state still orders them by statement time
//! where it holds both). Two versions that name no package in common are not taken for
//! versions of one document (publishers reuse ids: three of Rancher's vexhub documents,
//! about three different repositories, share one OpenVEX `@id`), so they owe each other
//! nothing. A version with no statement at all is not seen (nothing gives its tenant and
//! issuer). Nothing here does IO.

use crate::domain::model::{
    EntryKind, IssuerSource, Observation, Provenance, Signature, SourceFormat, Status, TimestampSource,
};
use crate::domain::timestamp::Timestamp;
use crate::domain::vers::compare_generic;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A document across its versions: (tenant, claimed issuer, document id).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DocumentKey {
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub document_id: String,
}

/// One version of a document as the ledger holds it (what the store's ledger keeps, one
/// entry per (key, digest)).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentVersion {
    pub key: DocumentKey,
    /// `sha256:<hex>` of the version's bytes: tells versions apart.
    pub digest: String,
    /// The document version as written (OpenVEX `version`, CSAF `tracking.version`,
    /// CycloneDX `version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub format: SourceFormat,
    /// The newest statement time of the version (a marker's `timestamp`).
    pub newest: Timestamp,
    /// The package keys the version names, sorted.
    pub packages: BTreeSet<String>,
}

/// The order of two document versions: numerically, segment by segment; a version beats
/// none. The one order of versions for the ledger and the package state's retraction.
pub fn version_cmp(a: Option<&str>, b: Option<&str>) -> Ordering {
    match (a, b) {
        (Some(x), Some(y)) => compare_generic(x, y),
        (x, y) => x.is_some().cmp(&y.is_some()),
    }
}

impl DocumentVersion {
    fn newer_than(&self, other: &DocumentVersion) -> bool {
        version_cmp(self.version.as_deref(), other.version.as_deref()) == Ordering::Greater
    }

    /// Whether `self` can retract what `older` names: a newer version of the same document
    /// naming at least one package `older` names too.
    fn supersedes(&self, older: &DocumentVersion) -> bool {
        self.key == older.key && self.newer_than(older) && self.packages.iter().any(|p| older.packages.contains(p))
    }

    /// The versions that `observations` (one document's, or any set) are statements of,
    /// sorted by key then digest; statements without a document id and markers are no
    /// version.
    pub fn of<'a>(observations: impl IntoIterator<Item = &'a Observation>) -> Vec<DocumentVersion> {
        let mut ledger = Ledger::default();
        for o in observations {
            ledger.note(o);
        }
        ledger.versions.into_values().collect()
    }

    /// The marker of this version for `package` (with its id).
    pub fn marker(&self, package: &str) -> Observation {
        let package: Arc<str> = Arc::from(package);
        let o = Observation {
            id: Arc::from(""),
            kind: EntryKind::VersionMarker,
            tenant: Arc::from(self.key.tenant.as_str()),
            issuer: self.key.issuer.as_deref().map(Arc::from),
            issuer_source: IssuerSource::None,
            artifact: package.clone(),
            package,
            scope: Vec::new(),
            vulnerability: Arc::from(""),
            aliases: Vec::new(),
            // A marker states nothing; the field is required and not read.
            status: Status::UnderInvestigation,
            status_original: Arc::from(""),
            justification: None,
            justification_original: None,
            impact_statement: None,
            action_statement: None,
            timestamp: self.newest,
            timestamp_source: TimestampSource::Document,
            document_id: Some(Arc::from(self.key.document_id.as_str())),
            document_version: self.version.as_deref().map(Arc::from),
            document_digest: Arc::from(self.digest.as_str()),
            position: 0,
            format: self.format,
            signature: Signature::default(),
            provenance: Provenance::default(),
        };
        // Its content is strings, enums and a timestamp: always canonical.
        let id = o.compute_id().expect("a version marker has a canonical form");
        Observation { id: id.into(), ..o }
    }
}

/// Every marker a set of versions owes (any documents, any order): for each version `X`
/// and each package `P` that `X` does not name but a version `V` of the same document with
/// a lower document version and a package in common with `X` does, the marker of `X` for
/// `P`. Sorted by id, unique.
pub fn owed(versions: &[DocumentVersion]) -> Vec<Observation> {
    let mut by_key: BTreeMap<&DocumentKey, Vec<&DocumentVersion>> = BTreeMap::new();
    for v in versions {
        by_key.entry(&v.key).or_default().push(v);
    }
    let mut out = BTreeMap::new();
    for vs in by_key.values() {
        for x in vs {
            for p in named_below(x, vs.iter().copied()) {
                let m = x.marker(p);
                out.insert(m.id.clone(), m);
            }
        }
    }
    out.into_values().collect()
}

/// The packages named by versions that `x` supersedes and not by `x`.
fn named_below<'a>(x: &DocumentVersion, others: impl Iterator<Item = &'a DocumentVersion>) -> BTreeSet<&'a str> {
    others
        .filter(|v| x.supersedes(v))
        .flat_map(|v| v.packages.iter())
        .filter(|p| !x.packages.contains(*p))
        .map(String::as_str)
        .collect()
}

/// The markers owed when `arriving` joins `known` (the other versions of its document
/// seen so far; `arriving` itself and other documents' versions among them are ignored):
/// those of [`owed`] over `known` and `arriving` that involve `arriving`, as the newer
/// version (its markers for packages only older versions name) or as the older one (the
/// newer versions' markers for packages it names and they do not). Sorted by id, unique.
pub fn owed_on_arrival(arriving: &DocumentVersion, known: &[DocumentVersion]) -> Vec<Observation> {
    let others: Vec<&DocumentVersion> =
        known.iter().filter(|v| v.key == arriving.key && v.digest != arriving.digest).collect();
    let mut out = BTreeMap::new();
    for p in named_below(arriving, others.iter().copied()) {
        let m = arriving.marker(p);
        out.insert(m.id.clone(), m);
    }
    for y in others.iter().filter(|y| y.supersedes(arriving)) {
        for p in arriving.packages.iter().filter(|p| !y.packages.contains(*p)) {
            let m = y.marker(p);
            out.insert(m.id.clone(), m);
        }
    }
    out.into_values().collect()
}

/// The ledger of a batch: notes every observation as it passes, then owes the markers of
/// every version it saw ([`owed`]).
#[derive(Debug, Default)]
pub struct Ledger {
    versions: BTreeMap<(DocumentKey, String), DocumentVersion>,
}

impl Ledger {
    /// Notes the version `o` is a statement of (markers and statements without a
    /// document id are no version).
    pub fn note(&mut self, o: &Observation) {
        if !o.kind.is_statement() {
            return;
        }
        let Some(id) = o.document_id.as_deref() else { return };
        let key = DocumentKey {
            tenant: o.tenant.to_string(),
            issuer: o.issuer.as_deref().map(str::to_string),
            document_id: id.to_string(),
        };
        let v = self.versions.entry((key.clone(), o.document_digest.to_string())).or_insert_with(|| DocumentVersion {
            key,
            digest: o.document_digest.to_string(),
            version: o.document_version.as_deref().map(str::to_string),
            format: o.format,
            newest: o.timestamp,
            packages: BTreeSet::new(),
        });
        v.newest = v.newest.max(o.timestamp);
        if !v.packages.contains(&*o.package) {
            v.packages.insert(o.package.to_string());
        }
    }

    /// Every marker the versions noted owe ([`owed`]).
    pub fn markers(&self) -> Vec<Observation> {
        owed(&self.versions.values().cloned().collect::<Vec<_>>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(digest: &str, version: &str, packages: &[&str]) -> DocumentVersion {
        DocumentVersion {
            key: DocumentKey { tenant: "t".into(), issuer: Some("acme".into()), document_id: "doc".into() },
            digest: digest.into(),
            version: Some(version.into()),
            format: SourceFormat::Openvex,
            newest: Timestamp::parse("2024-01-01T00:00:00Z").unwrap(),
            packages: packages.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn targets(markers: &[Observation]) -> Vec<(String, String)> {
        let mut t: Vec<_> = markers
            .iter()
            .map(|m| (m.document_version.as_deref().unwrap().to_string(), m.package.to_string()))
            .collect();
        t.sort();
        t
    }

    /// A newer version that drops a package owes it a marker; one that keeps it owes
    /// nothing; equal versions owe each other nothing; versions are compared numerically;
    /// a version naming no package of an older one is another document reusing the id.
    #[test]
    fn a_newer_version_owes_the_packages_it_drops_a_marker() {
        let v1 = version("sha256:1", "1", &["pkg:npm/a", "pkg:npm/b"]);
        let v2 = version("sha256:2", "2", &["pkg:npm/a"]);
        let v10 = version("sha256:10", "10", &["pkg:npm/c"]);
        let v10b = version("sha256:10b", "10", &["pkg:npm/c", "pkg:npm/b"]);
        let v2b = version("sha256:2b", "2", &["pkg:npm/b"]);
        let t = |v: &str, p: &str| (v.to_string(), p.to_string());
        assert_eq!(targets(&owed(&[v1.clone(), v2.clone()])), [t("2", "pkg:npm/b")]);
        assert!(owed(&[v2.clone(), v2b.clone()]).is_empty());
        assert_eq!(targets(&owed(&[v1.clone(), v2.clone(), v10.clone()])), [t("2", "pkg:npm/b")]);
        assert_eq!(
            targets(&owed(&[v1.clone(), v2.clone(), v10b.clone()])),
            [t("10", "pkg:npm/a"), t("2", "pkg:npm/b")]
        );
        // Another document's versions owe nothing.
        let mut other = v2.clone();
        other.key.document_id = "other".into();
        assert!(owed(&[v1, other]).is_empty());
    }

    /// Whatever the order of arrival, the markers owed on each arrival (each seeing the
    /// versions that came before it) add up to what the whole set owes.
    #[test]
    fn arrivals_in_any_order_owe_the_whole_set() {
        let all = [
            version("sha256:1", "1", &["pkg:npm/a", "pkg:npm/b"]),
            version("sha256:2", "2", &["pkg:npm/a"]),
            version("sha256:3", "3", &["pkg:npm/c"]),
            version("sha256:3b", "3", &["pkg:npm/b"]),
            version("sha256:4", "4", &["pkg:npm/c", "pkg:npm/a"]),
        ];
        let whole = owed(&all);
        assert_eq!(whole.len(), 3, "{whole:?}");
        for order in [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 4, 0, 3, 1], [1, 3, 0, 4, 2]] {
            let mut seen: Vec<DocumentVersion> = Vec::new();
            let mut got = BTreeMap::new();
            for i in order {
                for m in owed_on_arrival(&all[i], &seen) {
                    got.insert(m.id.clone(), m);
                }
                seen.push(all[i].clone());
            }
            assert_eq!(got.into_values().collect::<Vec<_>>(), whole, "order {order:?}");
        }
    }

    /// A marker's id depends on its version and package only, and it is a marker.
    #[test]
    fn markers_are_deterministic_entries_of_their_package() {
        let v = version("sha256:2", "2", &[]);
        let m = v.marker("pkg:npm/b");
        assert_eq!(m, v.marker("pkg:npm/b"));
        assert_eq!(m.kind, EntryKind::VersionMarker);
        assert_eq!((&*m.package, &*m.artifact), ("pkg:npm/b", "pkg:npm/b"));
        assert_eq!(m.compute_id().unwrap(), *m.id);
        assert_ne!(m.id, v.marker("pkg:npm/c").id);
    }
}
