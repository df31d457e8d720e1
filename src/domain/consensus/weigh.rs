//! Step "weigh" (CONSENSUS.md "Weight of a statement"): each statement's factors and
//! weight, as the entries of the record.
//!
//! Invariants: `w = issuer x signature x freshness x justification`, each factor in ppm
//! and the product rounded half up at each step, in integers only (freshness without
//! floating-point `powf`), so every platform gives the same weights; an excluded
//! statement weighs 0; a statement dated after the evaluation time has freshness 1; the
//! entries come out in one total order (issuer, time, document digest, position,
//! observation id).

use super::exclude::unjustified;
use super::record::{Factors, Role, StatementEntry};
use super::Work;
use crate::domain::decay;
use crate::domain::model::{Observation, SignatureStatus};
use crate::domain::timestamp::Timestamp;
use crate::domain::trust::{to_ppm, Knobs, PPM};

/// The record's statement entries for `work`, weighed at `evaluation_time`, sorted, with
/// the observation of each entry at the same index.
pub(super) fn weigh<'a>(
    work: &[Work<'a>],
    knobs: &Knobs,
    evaluation_time: &Timestamp,
) -> (Vec<StatementEntry>, Vec<&'a Observation>) {
    let signature_unsigned = to_ppm(1.0 - knobs.unsigned_penalty);
    let half_life_seconds = decay::half_life_seconds(knobs.half_life_days);
    let floor_ppm = to_ppm(knobs.freshness_floor);
    let mut entries: Vec<(StatementEntry, &'a Observation)> = work
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
                freshness_ppm: freshness_ppm(&w.o.timestamp, evaluation_time, half_life_seconds, floor_ppm),
                justification_ppm,
            };
            let weight_ppm = if w.role == Role::Excluded {
                0
            } else {
                mul_ppm(&[factors.issuer_ppm, factors.signature_ppm, factors.freshness_ppm, factors.justification_ppm])
            };
            let entry = StatementEntry {
                observation_id: w.o.id.clone(),
                issuer: w.issuer.clone(),
                tier: w.tier,
                signature: w.o.signature.status,
                status: w.o.status,
                justification: w.o.justification,
                timestamp: w.o.timestamp,
                artifact: w.o.artifact.clone(),
                role: w.role,
                reason: w.reason.clone(),
                weight_ppm,
                factors,
                observation: None,
            };
            (entry, w.o)
        })
        .collect();
    entries.sort_by(|(a, x), (b, y)| {
        a.issuer
            .cmp(&b.issuer)
            .then(a.timestamp.cmp(&b.timestamp))
            .then(x.document_digest.cmp(&y.document_digest))
            .then(x.position.cmp(&y.position))
            .then(a.observation_id.cmp(&b.observation_id))
    });
    entries.into_iter().unzip()
}

/// `a * b * c * d` for ppm factors, rounded half up to ppm.
pub(super) fn mul_ppm(fs: &[u64]) -> u64 {
    let mut acc: u128 = PPM as u128;
    for f in fs {
        acc = (acc * *f as u128 + (PPM as u128 / 2)) / PPM as u128;
    }
    acc as u64
}

/// `max(floor, 0.5 ^ (age / half_life))` in fixed point (see [`decay`]).
fn freshness_ppm(ts: &Timestamp, at: &Timestamp, half_life_seconds: u64, floor_ppm: u64) -> u64 {
    decay::decay_ppm(at.unix_nanos() - ts.unix_nanos(), half_life_seconds).max(floor_ppm)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{obs, ts};
    use super::*;
    use crate::domain::model::Status;
    use crate::domain::trust::Tier;

    #[test]
    fn products_round_half_up_at_each_step() {
        assert_eq!(mul_ppm(&[]), PPM);
        assert_eq!(mul_ppm(&[PPM, 700_000, 500_000]), 350_000);
        // 0.333333 x 0.5 = 0.1666665 -> 0.166667
        assert_eq!(mul_ppm(&[333_333, 500_000]), 166_667);
    }

    #[test]
    fn freshness_halves_per_half_life_with_a_floor_and_no_future_bonus() {
        let hl = decay::half_life_seconds(90.0);
        let at = ts("2024-04-01T00:00:00Z");
        assert_eq!(freshness_ppm(&at, &at, hl, 300_000), PPM);
        assert_eq!(freshness_ppm(&ts("2025-01-01T00:00:00Z"), &at, hl, 300_000), PPM, "future-dated");
        let ninety_days_before = ts("2024-01-02T00:00:00Z");
        assert_eq!(freshness_ppm(&ninety_days_before, &at, hl, 0), 500_000);
        assert_eq!(freshness_ppm(&ts("2020-01-01T00:00:00Z"), &at, hl, 300_000), 300_000, "floor");
    }

    #[test]
    fn excluded_statements_weigh_nothing_and_entries_are_sorted() {
        let a = obs(Some("b"), "pkg:npm/a@1", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
        let b = obs(Some("a"), "pkg:npm/a@1", "CVE-1", Status::Fixed, "2024-01-01T00:00:00Z");
        let w = |o, issuer: &str, role| Work {
            o,
            issuer: issuer.into(),
            tier: Tier::Known,
            issuer_ppm: 500_000,
            role,
            reason: None,
        };
        let (e, _) = weigh(&[w(&a, "b", Role::Excluded), w(&b, "a", Role::Counted)], &Knobs::default(), &a.timestamp);
        assert_eq!(e.iter().map(|e| &*e.issuer).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(e[1].weight_ppm, 0);
        // issuer 0.5 x unsigned 0.7 x fresh 1 x justified 1
        assert_eq!(e[0].weight_ppm, 350_000);
    }
}
