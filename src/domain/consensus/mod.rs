//! Consensus (CONSENSUS.md): the per-package state and the evaluation of one (tenant,
//! artifact, vulnerability) pair, as a folder of small pure steps.
//!
//! - [`state`]: a package's observations, indexed by the pairs they apply to;
//! - the steps of one evaluation, composed by [`evaluate()`]: [`exclude`] ->
//!   [`retract`] -> [`supersede`] -> [`evaluation_time`] -> [`weigh`] -> [`decide`] -> [`conflicts`] ->
//!   [`record`] (sealed with its digest);
//! - [`effects`]: `apply -> effects`, a package's consensus as its actor holds it (the
//!   versioned records and conflict deltas a store writer needs);
//! - [`batch`]: every pair of a set of observations, on every core.
//!
//! Invariants: the state is a set of observations keyed by their deterministic id, so
//! applying a duplicate changes nothing and the order of application does not matter;
//! a record is a pure function of (the observations that apply to its pair, the policy),
//! so incremental application equals batch recomputation; all arithmetic is in integer
//! ppm; every list in a record is sorted by a total order. Nothing here does IO.

mod batch;
mod conflicts;
mod decide;
mod effects;
mod evaluate;
mod evaluation_time;
mod exclude;
mod record;
mod retract;
mod state;
mod supersede;
mod weigh;

pub use batch::{batch, batch_each, batch_map};
pub use effects::{ConflictsAppeared, Effects, PackageConsensus, Rebuild};
pub use evaluate::evaluate;
pub use record::{
    Conflict, ConflictReason, ConsensusRecord, ConsensusStatus, Factors, PairKey, Reason, Role, StatementEntry,
    StatementText, RECORD_SCHEMA_VERSION,
};
pub use state::{ApplyError, PackageState, PairExtent};

use crate::domain::model::Observation;
use crate::domain::trust::Tier;
use std::sync::Arc;

/// One statement while a pair is evaluated: the observation, its resolved issuer, and
/// what the steps so far decided about it.
struct Work<'a> {
    o: &'a Observation,
    issuer: Arc<str>,
    tier: Tier,
    issuer_ppm: u64,
    role: Role,
    reason: Option<Reason>,
}

/// The explain trace: lines are formatted only when the caller asked for them.
struct Trace {
    lines: Option<Vec<String>>,
}

impl Trace {
    fn new(enabled: bool) -> Self {
        Trace { lines: enabled.then(Vec::new) }
    }

    fn add(&mut self, line: impl FnOnce() -> String) {
        if let Some(l) = &mut self.lines {
            l.push(line());
        }
    }

    /// One line per statement: its weight, factors, role and reason (`obs[i]` is the
    /// observation of `entries[i]`).
    fn statements(&mut self, entries: &[StatementEntry], obs: &[&Observation]) {
        if self.lines.is_none() {
            return;
        }
        let by_id: std::collections::HashMap<&str, &Observation> = obs.iter().map(|o| (&*o.id, *o)).collect();
        for (e, o) in entries.iter().zip(obs) {
            self.add(|| {
                format!(
                    "{} {} {} {}: weight {} = issuer {} x signature {} x freshness {} x justification {}{}",
                    e.issuer,
                    e.status.as_str(),
                    e.timestamp,
                    match e.role {
                        Role::Counted => "counted",
                        Role::Superseded => "superseded",
                        Role::Excluded => "excluded",
                        Role::Retracted => "retracted",
                    },
                    e.weight_ppm,
                    e.factors.issuer_ppm,
                    e.factors.signature_ppm,
                    e.factors.freshness_ppm,
                    e.factors.justification_ppm,
                    e.reason.as_ref().map(|r| format!(" ({})", describe(r, o, &by_id))).unwrap_or_default()
                )
            });
        }
    }
}

/// The explain trace's words for a reason of the statement `o` (`by_id`: the pair's
/// observations, for the statement that superseded it).
fn describe(r: &Reason, o: &Observation, by_id: &std::collections::HashMap<&str, &Observation>) -> String {
    let by = |id: &str| match by_id.get(id) {
        Some(b) => format!("superseded by {} ({} at {})", b.id, b.status.as_str(), b.timestamp),
        None => format!("superseded by {id}"),
    };
    match r {
        Reason::SignatureFailed { signature_reason } => {
            format!("signature_failed{}", signature_reason.map(|r| format!(": {r}")).unwrap_or_default())
        }
        Reason::NotAffectedWithoutJustification => "not_affected_without_justification".into(),
        Reason::Superseded { superseded_by } => by(superseded_by),
        Reason::MoreConservative { superseded_by } => {
            let same = match by_id.get(&**superseded_by) {
                Some(b) if b.document_digest == o.document_digest => "the same document",
                _ => "another document",
            };
            format!("{}: same issuer and time in {same}; the more conservative status counts", by(superseded_by))
        }
        Reason::Retracted { retracted_by, version } => format!(
            "retracted: version {} of document {} ({}) no longer states it",
            version.as_deref().unwrap_or("-"),
            o.document_id.as_deref().unwrap_or_default(),
            retracted_by.join(", ")
        ),
        Reason::Text(t) => t.clone(),
    }
}

#[cfg(test)]
mod tests;
