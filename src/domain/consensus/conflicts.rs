//! Step "conflicts" (CONSENSUS.md "Conflicts"): the conflicts a pair's statements show.
//!
//! Invariants: only counted statements can disagree (`status_disagreement`,
//! `scope_mismatch`); `missing_provenance` looks at every statement; the list is sorted.

use super::record::{Conflict, ConflictReason, PairKey, Role, StatementEntry};
use crate::domain::model::{SignatureStatus, Status};
use crate::domain::trust::UNKNOWN_ISSUER;
use std::collections::BTreeSet;
use std::sync::Arc;

pub(super) fn conflicts(pair: &PairKey, entries: &[StatementEntry]) -> Vec<Conflict> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(issuer: &str, artifact: &str, status: Status) -> StatementEntry {
        let mut e: StatementEntry = serde_json::from_value(serde_json::json!({
            "artifact": artifact, "document_digest": "sha256:00", "observation_id": issuer,
            "factors": {"freshness_ppm": 0, "issuer_ppm": 0, "justification_ppm": 0, "signature_ppm": 0},
            "format": "openvex", "issuer": issuer, "issuer_claimed": issuer, "position": 0,
            "role": "counted", "signature": "unsigned", "status": status.as_str(),
            "status_original": status.as_str(), "tier": "known",
            "timestamp": "2024-01-01T00:00:00Z", "weight_ppm": 1
        }))
        .unwrap();
        e.status = status;
        e
    }

    fn pair(artifact: &str) -> PairKey {
        PairKey { tenant: "default".into(), artifact: artifact.into(), vulnerability: "CVE-1".into() }
    }

    #[test]
    fn disagreement_between_scopes_is_also_a_scope_mismatch() {
        let same = [entry("a", "pkg:npm/x@1", Status::Affected), entry("b", "pkg:npm/x@1", Status::Fixed)];
        let c = conflicts(&pair("pkg:npm/x@1"), &same);
        assert_eq!(c.iter().map(|c| c.reason).collect::<Vec<_>>(), [ConflictReason::StatusDisagreement]);
        let broad = [entry("a", "pkg:npm/x", Status::Affected), entry("b", "pkg:npm/x@1", Status::Fixed)];
        let c = conflicts(&pair("pkg:npm/x@1"), &broad);
        assert_eq!(
            c.iter().map(|c| c.reason).collect::<Vec<_>>(),
            [ConflictReason::ScopeMismatch, ConflictReason::StatusDisagreement]
        );
        let agree = [entry("a", "pkg:npm/x", Status::Fixed), entry("b", "pkg:npm/x@1", Status::Fixed)];
        assert!(conflicts(&pair("pkg:npm/x@1"), &agree).is_empty());
    }

    #[test]
    fn no_issuer_or_a_failed_signature_is_missing_provenance() {
        let mut anon = entry(UNKNOWN_ISSUER, "pkg:npm/x@1", Status::Fixed);
        anon.issuer_claimed = None;
        let mut failed = entry("b", "pkg:npm/x@1", Status::Fixed);
        failed.signature = SignatureStatus::Failed;
        failed.role = Role::Excluded;
        let c = conflicts(&pair("pkg:npm/x@1"), &[anon, failed]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].reason, ConflictReason::MissingProvenance);
        assert_eq!(c[0].detail, "1 statement(s) name no issuer; 1 statement(s) failed signature verification");
    }
}
