//! Step "evaluation time" (CONSENSUS.md "Weight of a statement", freshness): the instant a
//! pair's statements are aged against, never the wall clock.
//!
//! Invariants: an explicit `as_of` wins; else the newest counted statement of an issuer of
//! tier `known` or above; else the newest counted statement; else (nothing counted) the
//! newest statement, or the epoch. A pure function of the statements, so a replay gives
//! the same time.

use super::record::Role;
use super::Work;
use crate::domain::codes::EvaluationTimeSource;
use crate::domain::timestamp::Timestamp;
use crate::domain::trust::Tier;

/// The evaluation time of `work` (after exclusion and supersession) and where it came
/// from.
pub(super) fn evaluation_time(work: &[Work], as_of: Option<Timestamp>) -> (Timestamp, EvaluationTimeSource) {
    let counted = || work.iter().filter(|w| w.role == Role::Counted);
    if let Some(t) = as_of {
        (t, EvaluationTimeSource::AsOf)
    } else if let Some(t) = counted().filter(|w| w.tier >= Tier::Known).map(|w| w.o.timestamp).max() {
        (t, EvaluationTimeSource::NewestKnownIssuer)
    } else if let Some(t) = counted().map(|w| w.o.timestamp).max() {
        (t, EvaluationTimeSource::NewestStatement)
    } else {
        (work.iter().map(|w| w.o.timestamp).max().unwrap_or(Timestamp::EPOCH), EvaluationTimeSource::None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{obs, ts};
    use super::*;
    use crate::domain::model::Status;

    #[test]
    fn as_of_then_known_issuers_then_any_counted_then_any() {
        let a = obs(Some("a"), "pkg:npm/a@1", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
        let b = obs(Some("b"), "pkg:npm/a@1", "CVE-1", Status::Affected, "2024-03-01T00:00:00Z");
        let w = |o, tier, role| Work { o, issuer: "i".into(), tier, issuer_ppm: 1, role, reason: None };
        let at = ts("2025-01-01T00:00:00Z");
        assert_eq!(evaluation_time(&[w(&a, Tier::Known, Role::Counted)], Some(at)), (at, EvaluationTimeSource::AsOf));
        let mixed = [w(&a, Tier::Known, Role::Counted), w(&b, Tier::Unknown, Role::Counted)];
        assert_eq!(evaluation_time(&mixed, None), (a.timestamp, EvaluationTimeSource::NewestKnownIssuer));
        let low = [w(&a, Tier::Unknown, Role::Counted), w(&b, Tier::Untrusted, Role::Counted)];
        assert_eq!(evaluation_time(&low, None), (b.timestamp, EvaluationTimeSource::NewestStatement));
        let none = [w(&a, Tier::Known, Role::Excluded), w(&b, Tier::Known, Role::Superseded)];
        assert_eq!(evaluation_time(&none, None), (b.timestamp, EvaluationTimeSource::None));
        assert_eq!(evaluation_time(&[], None), (Timestamp::EPOCH, EvaluationTimeSource::None));
    }
}
