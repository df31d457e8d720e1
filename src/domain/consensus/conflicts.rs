//! Step "conflicts" (CONSENSUS.md "Conflicts"): the conflicts a pair's statements show.
//!
//! Invariants: only counted statements can disagree (`status_disagreement`,
//! `scope_mismatch`); `missing_provenance` looks at every statement; the list is sorted.

use super::record::{Conflict, ConflictReason, PairKey, Role, StatementEntry};
use crate::domain::model::{Observation, SignatureStatus, Status};
use crate::domain::trust::UNKNOWN_ISSUER;
use std::collections::BTreeSet;
use std::sync::Arc;

/// The conflicts of a pair's `entries` (`obs[i]` is the observation of `entries[i]`: its
/// scope and claimed issuer).
pub(super) fn conflicts(pair: &PairKey, entries: &[StatementEntry], obs: &[&Observation]) -> Vec<Conflict> {
    let mut out = Vec::new();
    let counted: Vec<(&StatementEntry, &Observation)> =
        entries.iter().zip(obs.iter().copied()).filter(|(e, _)| e.role == Role::Counted).collect();
    let statuses: BTreeSet<Status> = counted.iter().map(|(e, _)| e.status).collect();
    if statuses.len() > 1 {
        let issuers: BTreeSet<&str> = counted.iter().map(|(e, _)| &*e.issuer).collect();
        let detail = statuses
            .iter()
            .map(|s| {
                let who: BTreeSet<&str> =
                    counted.iter().filter(|(e, _)| e.status == *s).map(|(e, _)| &*e.issuer).collect();
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
            counted.iter().map(|(e, o)| (*e.artifact == *pair.artifact, &o.scope)).collect();
        if shapes.len() > 1 {
            let mut issuers = BTreeSet::new();
            let mut sts = BTreeSet::new();
            let mut parts = BTreeSet::new();
            for (e, o) in &counted {
                issuers.insert(&*e.issuer);
                sts.insert(e.status);
                let scope = if o.scope.is_empty() { String::new() } else { format!(" within {}", o.scope.join(", ")) };
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
    let missing: Vec<(&StatementEntry, &Observation)> = entries
        .iter()
        .zip(obs.iter().copied())
        .filter(|(e, o)| &*e.issuer == UNKNOWN_ISSUER && o.issuer.is_none() || e.signature == SignatureStatus::Failed)
        .collect();
    if !missing.is_empty() {
        let issuers: BTreeSet<&str> = missing.iter().map(|(e, _)| &*e.issuer).collect();
        let no_id = missing.iter().filter(|(_, o)| o.issuer.is_none()).count();
        let failed = missing.iter().filter(|(e, _)| e.signature == SignatureStatus::Failed).count();
        out.push(Conflict {
            reason: ConflictReason::MissingProvenance,
            detail: format!("{no_id} statement(s) name no issuer; {failed} statement(s) failed signature verification"),
            issuers: issuers.into_iter().map(str::to_string).collect(),
            statuses: missing.iter().map(|(e, _)| e.status).collect::<BTreeSet<_>>().into_iter().collect(),
        });
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::super::tests::obs;
    use super::*;

    fn entry(issuer: &str, artifact: &str, status: Status) -> (StatementEntry, Observation) {
        let o = obs(Some(issuer), artifact, "CVE-1", status, "2024-01-01T00:00:00Z");
        let e: StatementEntry = serde_json::from_value(serde_json::json!({
            "artifact": artifact, "observation_id": &*o.id,
            "factors": {"freshness_ppm": 0, "issuer_ppm": 0, "justification_ppm": 0, "signature_ppm": 0},
            "issuer": issuer, "role": "counted", "signature": "unsigned", "status": status.as_str(),
            "tier": "known", "timestamp": "2024-01-01T00:00:00Z", "weight_ppm": 1
        }))
        .unwrap();
        (e, o)
    }

    fn pair(artifact: &str) -> PairKey {
        PairKey { tenant: "default".into(), artifact: artifact.into(), vulnerability: "CVE-1".into() }
    }

    fn run(pair: &PairKey, items: &[(StatementEntry, Observation)]) -> Vec<Conflict> {
        let entries: Vec<StatementEntry> = items.iter().map(|(e, _)| e.clone()).collect();
        let obs: Vec<&Observation> = items.iter().map(|(_, o)| o).collect();
        conflicts(pair, &entries, &obs)
    }

    #[test]
    fn disagreement_between_scopes_is_also_a_scope_mismatch() {
        let same = [entry("a", "pkg:npm/x@1", Status::Affected), entry("b", "pkg:npm/x@1", Status::Fixed)];
        let c = run(&pair("pkg:npm/x@1"), &same);
        assert_eq!(c.iter().map(|c| c.reason).collect::<Vec<_>>(), [ConflictReason::StatusDisagreement]);
        let broad = [entry("a", "pkg:npm/x", Status::Affected), entry("b", "pkg:npm/x@1", Status::Fixed)];
        let c = run(&pair("pkg:npm/x@1"), &broad);
        assert_eq!(
            c.iter().map(|c| c.reason).collect::<Vec<_>>(),
            [ConflictReason::ScopeMismatch, ConflictReason::StatusDisagreement]
        );
        let agree = [entry("a", "pkg:npm/x", Status::Fixed), entry("b", "pkg:npm/x@1", Status::Fixed)];
        assert!(run(&pair("pkg:npm/x@1"), &agree).is_empty());
    }

    #[test]
    fn no_issuer_or_a_failed_signature_is_missing_provenance() {
        let mut anon = entry(UNKNOWN_ISSUER, "pkg:npm/x@1", Status::Fixed);
        anon.1.issuer = None;
        let mut failed = entry("b", "pkg:npm/x@1", Status::Fixed);
        failed.0.signature = SignatureStatus::Failed;
        failed.0.role = Role::Excluded;
        let c = run(&pair("pkg:npm/x@1"), &[anon, failed]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason, ConflictReason::MissingProvenance);
        assert_eq!(c[0].detail, "1 statement(s) name no issuer; 1 statement(s) failed signature verification");
    }
}
