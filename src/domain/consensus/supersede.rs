//! Step "supersede" (CONSENSUS.md "Which statements count"): for each issuer only its
//! latest statement counts.
//!
//! Invariants: the order deciding "latest" is total (time, document version, position,
//! document digest, observation id), so the outcome does not depend on input order;
//! excluded statements take no part; an issuer contradicting itself at one time in
//! different documents yields its most conservative status and a conflict.

use super::record::{Conflict, ConflictReason, Reason, Role};
use super::Work;
use crate::domain::model::{Observation, Status};
use crate::domain::vers::compare_generic as compare_versions;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// The total order deciding which statement of an issuer is its latest: timestamp, then
/// document version, then position, then document digest, then observation id.
pub(super) fn latest_order(a: &Observation, b: &Observation) -> Ordering {
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
/// statements count"). Statements of one issuer tied on time and document version have
/// no order when they disagree, whether from different documents or from one document
/// stating two statuses at one time (a CSAF product in two status lists; position orders
/// only statements that agree): the most conservative status counts, the others are
/// superseded with that reason, and a `status_disagreement` conflict naming them is
/// returned. Agreeing, the latest position of each document, then the larger document
/// digest counts.
pub(super) fn supersede(work: &mut [Work]) -> Vec<Conflict> {
    let mut by_issuer: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, w) in work.iter().enumerate() {
        if w.role == Role::Counted {
            by_issuer.entry(&w.issuer).or_default().push(i);
        }
    }
    let mut conflicts = Vec::new();
    let mut marks: Vec<(usize, Reason)> = Vec::new();
    for (issuer, idx) in by_issuer {
        let Some(top) = idx.iter().copied().max_by(|&a, &b| latest_order(work[a].o, work[b].o)) else {
            continue;
        };
        // Among the statements tied at the newest (time, version): the latest of each
        // (document, status). One status: the latest of each document; more: a document or
        // documents contradicting each other (or itself) at one time.
        let mut candidates: BTreeMap<(&str, Status), usize> = BTreeMap::new();
        for &i in &idx {
            if time_version_order(work[i].o, work[top].o) == Ordering::Equal {
                let e = candidates.entry((&work[i].o.document_digest, work[i].o.status)).or_insert(i);
                if latest_order(work[*e].o, work[i].o) == Ordering::Less {
                    *e = i;
                }
            }
        }
        let statuses: BTreeSet<Status> = candidates.keys().map(|(_, s)| *s).collect();
        let winner = if statuses.len() > 1 {
            let w = candidates
                .values()
                .copied()
                .max_by(|&a, &b| {
                    let (x, y) = (work[a].o, work[b].o);
                    x.status
                        .conservative_rank()
                        .cmp(&y.status.conservative_rank())
                        .then_with(|| x.document_digest.cmp(&y.document_digest))
                        .then_with(|| latest_order(x, y))
                })
                .unwrap_or(top);
            let parts: BTreeSet<String> = candidates
                .values()
                .map(|&i| format!("{} in {}", work[i].o.status.as_str(), work[i].o.document_digest))
                .collect();
            let documents: BTreeSet<&str> = candidates.keys().map(|(d, _)| *d).collect();
            let place = if documents.len() > 1 { "in different documents" } else { "within one document" };
            conflicts.push(Conflict {
                reason: ConflictReason::StatusDisagreement,
                detail: format!(
                    "{issuer} contradicts itself at {} {place}: {}; the more conservative status counts",
                    work[w].o.timestamp,
                    parts.into_iter().collect::<Vec<_>>().join(" vs ")
                ),
                issuers: vec![issuer.to_string()],
                statuses: statuses.iter().copied().collect(),
            });
            for &i in candidates.values() {
                if i != w {
                    marks.push((i, Reason::MoreConservative { superseded_by: work[w].o.id.clone() }));
                }
            }
            w
        } else {
            // Agreeing (or a single document): the larger document digest is kept.
            candidates.values().next_back().copied().unwrap_or(top)
        };
        let contradicted: BTreeSet<usize> =
            if statuses.len() > 1 { candidates.values().copied().collect() } else { BTreeSet::new() };
        for &i in &idx {
            if i != winner && !contradicted.contains(&i) {
                marks.push((i, Reason::Superseded { superseded_by: work[winner].o.id.clone() }));
            }
        }
    }
    for (i, reason) in marks {
        work[i].role = Role::Superseded;
        work[i].reason = Some(reason);
    }
    conflicts
}

#[cfg(test)]
mod tests {
    use super::super::tests::obs;
    use super::*;
    use crate::domain::trust::Tier;

    fn work(o: &Observation) -> Work<'_> {
        Work {
            o,
            issuer: o.issuer.clone().unwrap(),
            tier: Tier::Known,
            issuer_ppm: 1,
            role: Role::Counted,
            reason: None,
        }
    }

    #[test]
    fn the_latest_statement_per_issuer_counts() {
        let old = obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
        let new = obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::Fixed, "2024-02-01T00:00:00Z");
        let other = obs(Some("b"), "pkg:npm/x@1", "CVE-1", Status::Affected, "2023-01-01T00:00:00Z");
        let mut w = [work(&new), work(&old), work(&other)];
        assert!(supersede(&mut w).is_empty());
        assert_eq!(w.iter().map(|w| w.role).collect::<Vec<_>>(), [Role::Counted, Role::Superseded, Role::Counted]);
        assert_eq!(w[1].reason, Some(Reason::Superseded { superseded_by: new.id.clone() }));
    }

    #[test]
    fn an_issuer_contradicting_itself_at_one_time_counts_the_conservative_status() {
        let a = obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z");
        let mut b = obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
        b.document_digest = "sha256:00".into();
        let mut w = [work(&a), work(&b)];
        let c = supersede(&mut w);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason, ConflictReason::StatusDisagreement);
        assert_eq!(c[0].statuses, [Status::Affected, Status::NotAffected]);
        assert_eq!((w[0].role, w[1].role), (Role::Superseded, Role::Counted));
    }

    #[test]
    fn excluded_statements_take_no_part() {
        let old = obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
        let new = obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::Fixed, "2024-02-01T00:00:00Z");
        let mut w = [work(&new), work(&old)];
        w[0].role = Role::Excluded;
        supersede(&mut w);
        assert_eq!((w[0].role, w[1].role), (Role::Excluded, Role::Counted));
    }

    #[test]
    fn later_document_versions_win_at_equal_time() {
        let mut v1 = obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
        let mut v10 = v1.clone();
        v1.document_version = Some("9".into());
        v10.document_version = Some("10".into());
        v10.status = Status::Fixed;
        v10.document_digest = "sha256:00".into();
        assert_eq!(latest_order(&v1, &v10), Ordering::Less);
        let mut w = [work(&v10), work(&v1)];
        assert!(supersede(&mut w).is_empty());
        assert_eq!((w[0].role, w[1].role), (Role::Counted, Role::Superseded));
    }

    #[test]
    fn one_document_stating_two_statuses_at_one_time_counts_the_conservative_one() {
        // A CSAF product in both known_affected and known_not_affected (CSAF 6.1.6): one
        // document, one time, two positions.
        let mut na = obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z");
        na.position = 7;
        let mut af = na.clone();
        af.status = Status::Affected;
        af.position = 2;
        let mut w = [work(&na), work(&af)];
        let c = supersede(&mut w);
        assert_eq!(c.len(), 1, "{c:?}");
        assert!(c[0].detail.contains("within one document"), "{}", c[0].detail);
        assert_eq!(c[0].statuses, [Status::Affected, Status::NotAffected]);
        assert_eq!((w[0].role, w[1].role), (Role::Superseded, Role::Counted));
        assert_eq!(w[0].reason, Some(Reason::MoreConservative { superseded_by: af.id.clone() }));
        // The same status twice: the later position counts, no conflict.
        let mut again = na.clone();
        again.position = 9;
        again.impact_statement = Some("restated".into());
        let mut w = [work(&na), work(&again)];
        assert!(supersede(&mut w).is_empty());
        assert_eq!((w[0].role, w[1].role), (Role::Superseded, Role::Counted));
    }
}
