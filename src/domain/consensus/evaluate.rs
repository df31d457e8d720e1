//! The evaluation of one pair: the steps composed (exclude, retract, supersede, evaluation time,
//! weigh, decide, conflicts, record).
//!
//! Invariants: a record is a pure function of (the observations that apply to its pair,
//! the policy): no clock, no IO, no dependence on the order of `obs`.

use super::record::{ConsensusRecord, PairKey, StatementText};
use super::{conflicts, decide, evaluation_time, exclude, record, retract, supersede, weigh, Trace, Work};
use crate::domain::canonical::CanonicalError;
use crate::domain::model::Observation;
use crate::domain::trust::Policy;

/// Evaluates a pair given the observations that apply to it and which of them a newer
/// version of their document retracted.
pub fn evaluate(
    pair: &PairKey,
    package: &str,
    obs: &[&Observation],
    retracted_by: &dyn Fn(&Observation) -> Option<super::record::Reason>,
    policy: &Policy,
    explain: bool,
) -> Result<ConsensusRecord, CanonicalError> {
    let mut trace = Trace::new(explain);
    let mut work: Vec<Work> = obs
        .iter()
        .map(|o| {
            let (issuer, tier, issuer_ppm) = policy.resolve(o.issuer.as_ref(), &pair.tenant);
            Work { o, issuer, tier, issuer_ppm, role: super::record::Role::Counted, reason: None }
        })
        .collect();
    exclude::exclude(&mut work, &policy.knobs);
    retract::retract(&mut work, retracted_by);
    // Latest statement per issuer counts; the others are superseded.
    let self_conflicts = supersede::supersede(&mut work);
    let (evaluation_time, evaluation_time_source) = evaluation_time::evaluation_time(&work, policy.as_of);
    trace.add(|| format!("evaluation time {evaluation_time} ({evaluation_time_source})"));
    let (entries, weighed) = weigh::weigh(&work, &policy.knobs, &evaluation_time);
    trace.statements(&entries, &weighed);
    let outcome = decide::decide(policy, &entries, &mut trace);
    let mut conflicts = conflicts::conflicts(pair, &entries, &weighed);
    conflicts.extend(self_conflicts);
    conflicts.sort();
    for c in &conflicts {
        trace.add(|| format!("conflict {}: {}", c.reason, c.detail));
    }
    let texts: Option<Vec<StatementText>> = explain.then(|| weighed.iter().map(|o| StatementText::from(*o)).collect());
    let mut record = record::assemble(
        pair,
        package,
        obs,
        policy,
        record::Evaluated { evaluation_time, evaluation_time_source, entries, outcome, conflicts },
    )?;
    if let Some(texts) = texts {
        // The observations joined back (after sealing: not digested, not stored).
        for (e, t) in record.statements.iter_mut().zip(texts) {
            e.observation = Some(t);
        }
        trace.add(|| format!("result {} (confidence {} ppm)", record.status.as_str(), record.confidence_ppm));
        record.explain = trace.lines;
    }
    Ok(record)
}
