//! Step "exclude" (CONSENSUS.md "Weight of a statement"): statements that take no part in
//! the vote, whatever their weight.
//!
//! Invariants: a statement whose signature failed is always excluded (weight 0, reason
//! `signature_failed`, with the verifier's reason); a `not_affected` with neither
//! justification nor impact statement is excluded only when the policy requires one.

use super::record::{Reason, Role};
use super::Work;
use crate::domain::model::{Observation, SignatureStatus, Status};
use crate::domain::trust::Knobs;

/// Marks the excluded statements of `work` with their reason.
pub(super) fn exclude(work: &mut [Work], knobs: &Knobs) {
    for w in work {
        if w.o.signature.status == SignatureStatus::Failed {
            w.role = Role::Excluded;
            w.reason = Some(Reason::SignatureFailed { signature_reason: w.o.signature.reason });
        } else if knobs.require_justification_for_not_affected && unjustified(w.o) {
            w.role = Role::Excluded;
            w.reason = Some(Reason::NotAffectedWithoutJustification);
        }
    }
}

/// A `not_affected` statement that gives no reason: no justification (normalised or as
/// written) and no impact statement.
pub(super) fn unjustified(o: &Observation) -> bool {
    o.status == Status::NotAffected
        && o.justification.is_none()
        && o.justification_original.is_none()
        && o.impact_statement.is_none()
}

#[cfg(test)]
mod tests {
    use super::super::tests::obs;
    use super::*;
    use crate::domain::model::{Justification, SignatureReason};
    use crate::domain::trust::Tier;

    fn work(o: &Observation) -> Work<'_> {
        Work { o, issuer: "x".into(), tier: Tier::Known, issuer_ppm: 500_000, role: Role::Counted, reason: None }
    }

    #[test]
    fn failed_signatures_are_excluded_with_the_verifiers_reason() {
        let mut o = obs(Some("x"), "pkg:npm/a@1", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
        o.signature.status = SignatureStatus::Failed;
        o.signature.reason = Some(SignatureReason::BadSignature);
        let mut w = [work(&o)];
        exclude(&mut w, &Knobs::default());
        assert_eq!(w[0].role, Role::Excluded);
        assert_eq!(
            w[0].reason,
            Some(Reason::SignatureFailed { signature_reason: Some(SignatureReason::BadSignature) })
        );
    }

    #[test]
    fn unjustified_not_affected_is_excluded_only_when_required() {
        let mut o = obs(Some("x"), "pkg:npm/a@1", "CVE-1", Status::NotAffected, "2024-01-01T00:00:00Z");
        o.justification = None;
        assert!(unjustified(&o));
        let mut w = [work(&o)];
        exclude(&mut w, &Knobs::default());
        assert_eq!(w[0].role, Role::Counted, "not required by default");
        let knobs = Knobs { require_justification_for_not_affected: true, ..Knobs::default() };
        exclude(&mut w, &knobs);
        assert_eq!((w[0].role, w[0].reason.clone()), (Role::Excluded, Some(Reason::NotAffectedWithoutJustification)));
        let mut j = o.clone();
        j.justification = Some(Justification::VulnerableCodeNotPresent);
        let mut i = o.clone();
        i.impact_statement = Some("not reachable".into());
        assert!(!unjustified(&j) && !unjustified(&i));
    }
}
