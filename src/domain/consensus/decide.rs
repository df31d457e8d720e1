//! Step "decide" (CONSENSUS.md "Modes"): the record's status from the counted
//! statements' scores under the policy's mode, and the confidence.
//!
//! Invariants: integer arithmetic only; every tie is broken by a total order (score, then
//! the more conservative status; in `highest_weight`/`most_recent` then time/weight, then
//! observation id), so the decision does not depend on input order.

use super::record::{ConsensusStatus, Outcome, Role, StatementEntry};
use super::Trace;
use crate::domain::model::{Justification, Status};
use crate::domain::trust::{to_ppm, Mode, Policy, Tier, PPM};
use std::collections::{BTreeMap, BTreeSet};

/// Scores the counted entries, decides under the policy's mode, and computes the
/// confidence (the leader's share of the scores the decision was taken on).
pub(super) fn decide(policy: &Policy, entries: &[StatementEntry], trace: &mut Trace) -> Outcome {
    let counted: Vec<&StatementEntry> = entries.iter().filter(|e| e.role == Role::Counted).collect();
    let mut scores_ppm: BTreeMap<Status, u64> = BTreeMap::new();
    for e in &counted {
        *scores_ppm.entry(e.status).or_default() += e.weight_ppm;
    }
    let total_weight_ppm: u64 = scores_ppm.values().sum();
    trace.add(|| {
        format!(
            "scores (ppm): {}; total {total_weight_ppm}",
            scores_ppm.iter().map(|(s, v)| format!("{}={v}", s.as_str())).collect::<Vec<_>>().join(", ")
        )
    });
    let decision = decide_mode(policy, &counted, &scores_ppm, total_weight_ppm, trace);
    let confidence_ppm = match (decision.leading, decision.score_basis_total) {
        (Some(l), t) if t > 0 => {
            let s = *decision.scores.get(&l).unwrap_or(&0);
            ((s as u128 * PPM as u128 + t as u128 / 2) / t as u128) as u64
        }
        _ => 0,
    };
    let justification = decision.leading.and_then(|l| {
        let js: BTreeSet<Justification> =
            counted.iter().filter(|e| e.status == l).filter_map(|e| e.justification).collect();
        let only = js.first().copied();
        only.filter(|_| js.len() == 1)
    });
    Outcome {
        status: decision.status,
        leading: decision.leading,
        scores_ppm,
        total_weight_ppm,
        confidence_ppm,
        justification,
    }
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

fn decide_mode(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::consensus::record::Factors;
    use crate::domain::model::SignatureStatus;
    use crate::domain::timestamp::Timestamp;
    use crate::domain::trust::IssuerDirectory;

    fn entry(id: &str, status: Status, weight_ppm: u64, tier: Tier, t: &str) -> StatementEntry {
        StatementEntry {
            artifact: "pkg:npm/x@1".into(),
            factors: Factors { freshness_ppm: PPM, issuer_ppm: weight_ppm, justification_ppm: PPM, signature_ppm: PPM },
            issuer: id.into(),
            justification: None,
            observation: None,
            observation_id: id.into(),
            reason: None,
            role: Role::Counted,
            signature: SignatureStatus::Verified,
            status,
            tier,
            timestamp: Timestamp::parse(t).unwrap(),
            weight_ppm,
        }
    }

    fn policy(mode: Mode) -> Policy {
        Policy::new(mode, IssuerDirectory::default(), Default::default())
    }

    #[test]
    fn weighted_vote_disputes_at_the_threshold_and_ties_go_conservative() {
        let mut t = Trace::new(false);
        let e = [
            entry("a", Status::NotAffected, 700_000, Tier::Known, "2024-01-01T00:00:00Z"),
            entry("b", Status::Affected, 300_000, Tier::Known, "2024-01-01T00:00:00Z"),
        ];
        let o = decide(&policy(Mode::WeightedVote), &e, &mut t);
        assert_eq!(
            (o.status, o.leading, o.confidence_ppm),
            (ConsensusStatus::Disputed, Some(Status::NotAffected), 700_000)
        );
        let tie = [
            entry("a", Status::NotAffected, 500_000, Tier::Known, "2024-01-01T00:00:00Z"),
            entry("b", Status::Affected, 500_000, Tier::Known, "2024-01-01T00:00:00Z"),
        ];
        assert_eq!(decide(&policy(Mode::WeightedVote), &tie, &mut t).leading, Some(Status::Affected));
        let light = [entry("a", Status::Fixed, 50_000, Tier::Known, "2024-01-01T00:00:00Z")];
        assert_eq!(decide(&policy(Mode::WeightedVote), &light, &mut t).status, ConsensusStatus::Inconclusive);
    }

    #[test]
    fn modes_other_than_the_vote() {
        let mut t = Trace::new(false);
        let e = [
            entry("a", Status::Fixed, 900_000, Tier::Authoritative, "2024-01-01T00:00:00Z"),
            entry("b", Status::Affected, 100_000, Tier::Unknown, "2024-01-01T00:00:00Z"),
            entry("c", Status::NotAffected, 300_000, Tier::Known, "2024-03-01T00:00:00Z"),
        ];
        let status = |m| decide(&policy(m), &e, &mut Trace::new(false)).status;
        assert_eq!(status(Mode::Lattice), ConsensusStatus::Affected);
        assert_eq!(status(Mode::HighestWeight), ConsensusStatus::Fixed);
        assert_eq!(status(Mode::MostRecent), ConsensusStatus::NotAffected);
        assert_eq!(status(Mode::AuthoritativeFirst), ConsensusStatus::Fixed);
        let none: [StatementEntry; 0] = [];
        let o = decide(&policy(Mode::Lattice), &none, &mut t);
        assert_eq!((o.status, o.leading, o.confidence_ppm), (ConsensusStatus::Inconclusive, None, 0));
    }
}
