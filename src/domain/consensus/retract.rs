//! Step "retract" (CONSENSUS.md "Which statements count"): a newer version of a document
//! retracts the statements of older versions that it no longer makes.
//!
//! Invariants: versions of one document (same tenant, claimed issuer and document id) are
//! ordered by document version (numerically, segment by segment; a version beats none),
//! then by their newest statement time; a statement is retracted only by a strictly newer
//! version that makes no statement about its (artifact, vulnerability) (one that does
//! supersedes it instead); excluded statements stay excluded. Which versions a package
//! sees is what its state holds: the versions of its statements, and the version markers
//! of the document ledger ([`crate::domain::ledger`]) for newer versions that name no
//! product of the package at all. A marker whose document version is above every version
//! of the document's statements the state holds retracts all of them (versions equal to
//! it do not: markers are ordered by document version only).

use super::record::{Reason, Role};
use super::Work;
use crate::domain::ledger::version_cmp;
use crate::domain::model::Observation;
use crate::domain::timestamp::Timestamp;
use std::cmp::Ordering;

/// One version of a document as a package state sees it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Version<'a> {
    pub version: Option<&'a str>,
    /// The newest statement time among its statements the state holds.
    pub newest: Timestamp,
}

/// The order of two versions of one document: document version, then newest statement time.
pub(super) fn version_order(a: &Version, b: &Version) -> Ordering {
    version_cmp(a.version, b.version).then(a.newest.cmp(&b.newest))
}

/// Marks the counted statements that `retracted_by` says a newer version retracted.
pub(super) fn retract(work: &mut [Work], retracted_by: &dyn Fn(&Observation) -> Option<Reason>) {
    for w in work.iter_mut().filter(|w| w.role == Role::Counted) {
        if let Some(reason) = retracted_by(w.o) {
            w.role = Role::Retracted;
            w.reason = Some(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::ts;
    use super::*;

    #[test]
    fn versions_order_numerically_then_by_time() {
        let v = |version, t| Version { version, newest: ts(t) };
        let t1 = "2024-01-01T00:00:00Z";
        let t2 = "2024-02-01T00:00:00Z";
        assert_eq!(version_order(&v(Some("9"), t2), &v(Some("10"), t1)), Ordering::Less);
        assert_eq!(version_order(&v(Some("1.2"), t1), &v(Some("1.10"), t1)), Ordering::Less);
        assert_eq!(version_order(&v(None, t2), &v(Some("1"), t1)), Ordering::Less);
        assert_eq!(version_order(&v(Some("2"), t1), &v(Some("2"), t2)), Ordering::Less);
        assert_eq!(version_order(&v(Some("2"), t1), &v(Some("2"), t1)), Ordering::Equal);
    }
}
