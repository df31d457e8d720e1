//! `apply -> effects`: a package's consensus as the actor holds it, and what applying
//! observations means for the store writer (ARCHITECTURE.md "apply(observation) ->
//! effects"): the versioned records of the pairs that changed, and the conflicts that
//! appeared on them.
//!
//! Invariants: pure (no clock, no IO); observations staged in one turn are evaluated
//! together, each changed pair once; every record carries its version (the policy epoch,
//! then the highest stream position and the number of the observations that apply: see
//! [`RecordVersion`]), so a store never lets an older state replace a newer one; a
//! conflict reason counts as appearing only when the pair did not have it at its previous
//! evaluation (the rebuild and a recompute are baselines, not new conflicts); after a
//! rebuild that found stored observations the first effects re-evaluate every pair (heals
//! a crash between the observation and record writes).

use super::record::{ConflictReason, ConsensusRecord, PairKey};
use super::state::{ApplyError, PackageState};
use crate::domain::model::Observation;
use crate::domain::trust::Policy;
use crate::domain::version::{RecordVersion, VersionedRecord};
use std::collections::{BTreeSet, HashMap};

/// Conflict reasons a pair gained at this evaluation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConflictsAppeared {
    pub pair: PairKey,
    pub reasons: Vec<ConflictReason>,
}

/// What applying observations (or a policy change) means for the store writer.
#[derive(Debug, Default)]
pub struct Effects {
    /// The records of every pair that changed, each with its version, in pair order.
    pub records: Vec<VersionedRecord>,
    /// Conflict reasons that appeared (empty for a rebuild or a recompute: baselines).
    pub conflicts_appeared: Vec<ConflictsAppeared>,
    /// Pairs whose record could not be digested (not written).
    pub undigestible: Vec<ApplyError>,
}

/// A package's consensus state as its actor holds it: the observations, the pairs changed
/// since the last effects, and each pair's conflict reasons at its last evaluation.
#[derive(Debug, Default)]
pub struct PackageConsensus {
    state: PackageState,
    changed: BTreeSet<PairKey>,
    heal: bool,
    /// Every pair was moved into `changed` by [`Self::pairs_to_evaluate`] for a heal.
    healing: bool,
    conflict_reasons: HashMap<PairKey, BTreeSet<ConflictReason>>,
}

impl PackageConsensus {
    /// The consensus rebuilt from stored observations (those the state refuses are
    /// returned). With `baseline`, every pair is evaluated to record the conflicts the
    /// stored records already carry (a caller that re-evaluates every pair right away
    /// records them itself).
    pub fn rebuild(stored: Vec<Observation>, baseline: Option<&Policy>) -> (Self, Vec<ApplyError>) {
        let heal = !stored.is_empty();
        let (state, errors) = PackageState::rebuild(stored);
        let mut c = PackageConsensus {
            state,
            changed: BTreeSet::new(),
            heal,
            healing: false,
            conflict_reasons: HashMap::new(),
        };
        if let Some(policy) = baseline {
            for p in c.state.pairs() {
                if let Ok(Some(r)) = c.state.evaluate(&p, policy, false) {
                    c.note_conflicts(&r);
                }
            }
        }
        (c, errors)
    }

    pub fn state(&self) -> &PackageState {
        &self.state
    }

    /// Whether the next effects re-evaluate every pair (after a rebuild that found stored
    /// observations).
    pub fn heals_next(&self) -> bool {
        self.heal || self.healing
    }

    /// How many pairs the next [`Self::effects`] evaluates if nothing more is staged
    /// (every pair after a rebuild that found stored observations: listed once, here).
    pub fn pairs_to_evaluate(&mut self) -> usize {
        if self.heal {
            let all = self.state.pairs();
            self.changed.extend(all);
            self.heal = false;
            self.healing = true;
        }
        self.changed.len()
    }

    /// How many pairs [`Self::recompute`] evaluates.
    pub fn pair_count(&self) -> usize {
        self.state.pairs().len()
    }

    /// Stages one observation: applied to the state, its changed pairs kept for the next
    /// [`Self::effects`]. Returns how many pairs it changed (0 for a duplicate).
    pub fn stage(&mut self, o: Observation) -> Result<usize, ApplyError> {
        let changed = self.state.apply(o)?;
        let n = changed.len();
        self.changed.extend(changed);
        Ok(n)
    }

    /// The effects of everything staged since the last effects (every pair after a
    /// rebuild that found stored observations), under `policy`.
    pub fn effects(&mut self, policy: &Policy) -> Effects {
        let pairs: Vec<PairKey> =
            if self.heal { self.state.pairs() } else { std::mem::take(&mut self.changed).into_iter().collect() };
        self.heal = false;
        self.healing = false;
        self.changed.clear();
        self.evaluate(pairs, policy, true)
    }

    /// Applies one observation and returns its effects ([`Self::stage`] then
    /// [`Self::effects`]).
    pub fn apply(&mut self, o: Observation, policy: &Policy) -> Result<Effects, ApplyError> {
        self.stage(o)?;
        Ok(self.effects(policy))
    }

    /// Every pair re-evaluated under a new policy (a trust change): the new baseline of
    /// conflicts, none counted as appearing.
    pub fn recompute(&mut self, policy: &Policy) -> Effects {
        self.heal = false;
        self.healing = false;
        self.changed.clear();
        self.conflict_reasons.clear();
        let pairs = self.state.pairs();
        self.evaluate(pairs, policy, false)
    }

    fn evaluate(&mut self, pairs: Vec<PairKey>, policy: &Policy, count: bool) -> Effects {
        let mut effects = Effects::default();
        let epoch = policy.epoch();
        for p in pairs {
            match self.state.evaluate_with_extent(&p, policy) {
                Ok(Some((r, extent))) => {
                    let appeared = self.note_conflicts(&r);
                    if count && !appeared.is_empty() {
                        effects.conflicts_appeared.push(ConflictsAppeared { pair: p.clone(), reasons: appeared });
                    }
                    effects.records.push(VersionedRecord::new(r, RecordVersion::from_extent(epoch, extent)));
                }
                Ok(None) => {}
                Err(e) => effects.undigestible.push(e),
            }
        }
        effects
    }

    /// Records `record`'s conflict reasons; returns those it did not have before.
    fn note_conflicts(&mut self, record: &ConsensusRecord) -> Vec<ConflictReason> {
        let now: BTreeSet<ConflictReason> = record.conflicts.iter().map(|c| c.reason).collect();
        let pair = record.pair();
        let before = self.conflict_reasons.get(&pair);
        let appeared: Vec<ConflictReason> =
            now.iter().filter(|r| before.map_or(true, |b| !b.contains(*r))).copied().collect();
        if now.is_empty() {
            self.conflict_reasons.remove(&pair);
        } else {
            self.conflict_reasons.insert(pair, now);
        }
        appeared
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::obs;
    use super::*;
    use crate::domain::model::Status;

    fn policy() -> Policy {
        Policy::default()
    }

    #[test]
    fn effects_carry_versioned_records_and_conflicts_that_appeared() {
        let p = policy();
        let mut c = PackageConsensus::default();
        let a = obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z");
        let e = c.apply(a.clone(), &p).unwrap();
        assert_eq!(e.records.len(), 1);
        assert_eq!(e.records[0].version.observations, 1);
        assert!(e.conflicts_appeared.is_empty());
        // A disagreeing issuer: the conflict appears once.
        let b = obs(Some("b"), "pkg:npm/x@1", "CVE-1", Status::Fixed, "2024-01-01T00:00:00Z");
        let e = c.apply(b, &p).unwrap();
        assert_eq!(e.records[0].version.observations, 2);
        assert_eq!(e.conflicts_appeared.len(), 1);
        assert_eq!(e.conflicts_appeared[0].reasons, [ConflictReason::StatusDisagreement]);
        // A duplicate changes nothing.
        let e = c.apply(a, &p).unwrap();
        assert!(e.records.is_empty() && e.conflicts_appeared.is_empty());
        // Staged observations are evaluated together, each pair once.
        let d = obs(Some("c"), "pkg:npm/x@1", "CVE-1", Status::Fixed, "2024-01-02T00:00:00Z");
        let f = obs(Some("d"), "pkg:npm/x@1", "CVE-1", Status::Fixed, "2024-01-03T00:00:00Z");
        assert_eq!((c.stage(d).unwrap(), c.stage(f).unwrap()), (1, 1));
        let e = c.effects(&p);
        assert_eq!(e.records.len(), 1);
        assert!(e.conflicts_appeared.is_empty(), "the conflict was there before");
    }

    /// Three stored observations over two pairs, one of them in conflict.
    fn stored_two_pairs() -> Vec<Observation> {
        vec![
            obs(Some("a"), "pkg:npm/x@1", "CVE-1", Status::Affected, "2024-01-01T00:00:00Z"),
            obs(Some("b"), "pkg:npm/x@1", "CVE-1", Status::Fixed, "2024-01-01T00:00:00Z"),
            obs(Some("a"), "pkg:npm/x@2", "CVE-2", Status::Affected, "2024-01-01T00:00:00Z"),
        ]
    }

    #[test]
    fn a_rebuild_is_a_baseline_and_heals_every_pair_at_the_first_effects() {
        let p = policy();
        let stored = stored_two_pairs();
        let (mut c, errors) = PackageConsensus::rebuild(stored, Some(&p));
        assert!(errors.is_empty());
        let e = c.effects(&p);
        assert_eq!(e.records.len(), 2, "every pair after a rebuild");
        assert!(e.conflicts_appeared.is_empty(), "stored conflicts are the baseline");
        assert!(c.effects(&p).records.is_empty());
        let r = c.recompute(&p);
        assert_eq!((r.records.len(), r.conflicts_appeared.len()), (2, 0));
    }

    #[test]
    fn pairs_to_evaluate_counts_what_the_next_effects_evaluate() {
        let p = policy();
        let stored = stored_two_pairs();
        let (mut counted, _) = PackageConsensus::rebuild(stored.clone(), None);
        let (mut plain, _) = PackageConsensus::rebuild(stored, None);
        assert_eq!(counted.pairs_to_evaluate(), 2, "after a rebuild: every pair");
        assert!(counted.heals_next(), "still a heal");
        assert_eq!(counted.pairs_to_evaluate(), 2, "counting twice lists nothing twice");
        let new = obs(Some("c"), "pkg:npm/x@3", "CVE-3", Status::Fixed, "2024-01-02T00:00:00Z");
        counted.stage(new.clone()).unwrap();
        plain.stage(new).unwrap();
        assert_eq!(counted.pairs_to_evaluate(), 3);
        let digests = |e: Effects| e.records.into_iter().map(|r| r.record.consensus_digest).collect::<Vec<_>>();
        let (a, b) = (digests(counted.effects(&p)), digests(plain.effects(&p)));
        assert_eq!(a.len(), 3);
        assert_eq!(a, b, "the same records as a heal that was not counted");
        assert_eq!(counted.pairs_to_evaluate(), 0);
        assert!(!counted.heals_next());
        assert_eq!(counted.pair_count(), 3);
    }
}
