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
//! evaluation (the stored state and a recompute are baselines, not new conflicts: a
//! rebuilt pair's baseline is evaluated before the first new observation that may change
//! it applies); after a rebuild that found stored observations and heals, the first
//! effects re-evaluate every pair (a crash between the observation and record writes).

use super::record::{ConflictReason, ConsensusRecord, PairKey};
use super::state::{ApplyError, PackageState};
use crate::domain::model::Observation;
use crate::domain::trust::Policy;
use crate::domain::version::{RecordVersion, VersionedRecord};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;

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

/// How [`PackageConsensus::rebuild`] treats the stored observations.
#[derive(Clone, Debug, Default)]
pub struct Rebuild {
    /// Re-evaluate every pair at the first effects: heals a crash between the observation
    /// and record writes. Only a caller that knows the stored records follow from the
    /// stored observations (it wrote both and every write succeeded) leaves it off.
    pub heal: bool,
    /// The policy of the conflict baseline: the conflicts a pair had before the new
    /// observations (what its stored record carries) do not count as appearing. Each pair
    /// is evaluated for it when the first new observation that may change it is staged,
    /// before that observation applies; the heal records the others'. `None`: every
    /// conflict a pair's first evaluation finds counts as appearing.
    pub baseline: Option<Arc<Policy>>,
}

/// A package's consensus state as its actor holds it: the observations, the pairs changed
/// since the last effects, and each pair's conflict reasons at its last evaluation.
#[derive(Debug, Default)]
pub struct PackageConsensus {
    state: PackageState,
    /// The pairs staged observations changed since the last effects.
    changed: BTreeSet<PairKey>,
    /// The next effects evaluate every pair (a heal after a rebuild).
    heal: bool,
    /// The heal's pairs, once [`Self::pairs_to_evaluate`] listed them (the heal is still
    /// to come).
    heal_pairs: Option<BTreeSet<PairKey>>,
    /// While some pair of the rebuilt state may lack its conflict baseline: the policy
    /// to evaluate it under ([`Rebuild::baseline`]).
    baseline: Option<Arc<Policy>>,
    /// The pairs with a recorded baseline or evaluated since the rebuild (their hashes),
    /// while `baseline` is set.
    baselined: HashSet<u64, foldhash::fast::RandomState>,
    conflict_reasons: HashMap<PairKey, BTreeSet<ConflictReason>>,
}

impl PackageConsensus {
    /// The consensus rebuilt from stored observations (those the state refuses are
    /// returned), healed and baselined as `how` says (only when observations were
    /// stored).
    pub fn rebuild(stored: Vec<Observation>, how: Rebuild) -> (Self, Vec<ApplyError>) {
        let found = !stored.is_empty();
        let (state, errors) = PackageState::rebuild(stored);
        let c = PackageConsensus {
            state,
            heal: how.heal && found,
            baseline: how.baseline.filter(|_| found),
            ..PackageConsensus::default()
        };
        (c, errors)
    }

    pub fn state(&self) -> &PackageState {
        &self.state
    }

    /// Whether the next effects re-evaluate every pair (after a rebuild that found stored
    /// observations and heals).
    pub fn heals_next(&self) -> bool {
        self.heal || self.heal_pairs.is_some()
    }

    /// How many pairs the next [`Self::effects`] evaluates if nothing more is staged
    /// (every pair before a heal: listed once, here).
    pub fn pairs_to_evaluate(&mut self) -> usize {
        if self.heal {
            self.heal_pairs = Some(self.state.pairs().into_iter().collect());
            self.heal = false;
        }
        match &self.heal_pairs {
            Some(all) => all.len() + self.changed.iter().filter(|p| !all.contains(*p)).count(),
            None => self.changed.len(),
        }
    }

    /// How many pairs [`Self::recompute`] evaluates.
    pub fn pair_count(&self) -> usize {
        self.state.pairs().len()
    }

    /// Stages one observation: applied to the state, its changed pairs kept for the next
    /// [`Self::effects`]. Returns how many pairs it changed (0 for a duplicate). A held
    /// pair it may change that has no conflict baseline yet is evaluated for it first.
    pub fn stage(&mut self, o: Observation) -> Result<usize, ApplyError> {
        if let Some(policy) = self.baseline.clone() {
            for p in self.state.pairs_changed_by(&o) {
                if !self.changed.contains(&p) && self.baselined.insert(self.baselined.hasher().hash_one(&p)) {
                    if let Ok(Some(r)) = self.state.evaluate(&p, &policy, false) {
                        self.note_conflicts(&r);
                    }
                }
            }
        }
        let changed = self.state.apply(o)?;
        let n = changed.len();
        self.changed.extend(changed);
        Ok(n)
    }

    /// The effects of everything staged since the last effects (every pair at a heal),
    /// under `policy`.
    pub fn effects(&mut self, policy: &Policy) -> Effects {
        let staged = std::mem::take(&mut self.changed);
        if !self.heals_next() {
            let effects = self.evaluate(staged.iter(), policy, |_| true);
            if self.baseline.is_some() {
                for p in &staged {
                    self.baselined.insert(self.baselined.hasher().hash_one(p));
                }
            }
            return effects;
        }
        let mut pairs = match self.heal_pairs.take() {
            Some(all) => all,
            None => self.state.pairs().into_iter().collect(),
        };
        self.heal = false;
        pairs.extend(staged.iter().cloned());
        // A pair no staged observation changed is evaluated as it was stored: its
        // conflicts are the baseline (the staged ones were baselined as they came).
        let baselined = self.baseline.take().is_some();
        self.baselined.clear();
        self.evaluate(pairs.iter(), policy, |p| !baselined || staged.contains(p))
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
        self.heal_pairs = None;
        self.baseline = None;
        self.baselined.clear();
        self.changed.clear();
        self.conflict_reasons.clear();
        let pairs = self.state.pairs();
        self.evaluate(pairs.iter(), policy, |_| false)
    }

    /// Evaluates `pairs`; the conflicts that appear on a pair count when `count` says so.
    fn evaluate<'a>(
        &mut self,
        pairs: impl Iterator<Item = &'a PairKey>,
        policy: &Policy,
        count: impl Fn(&PairKey) -> bool,
    ) -> Effects {
        let mut effects = Effects::default();
        let epoch = policy.epoch();
        for p in pairs {
            match self.state.evaluate_with_extent(p, policy) {
                Ok(Some((r, extent))) => {
                    let appeared = self.note_conflicts(&r);
                    if !appeared.is_empty() && count(p) {
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
        let (mut c, errors) =
            PackageConsensus::rebuild(stored, Rebuild { heal: true, baseline: Some(Arc::new(p.clone())) });
        assert!(errors.is_empty());
        let e = c.effects(&p);
        assert_eq!(e.records.len(), 2, "every pair after a rebuild");
        assert!(e.conflicts_appeared.is_empty(), "stored conflicts are the baseline");
        assert!(c.effects(&p).records.is_empty());
        let r = c.recompute(&p);
        assert_eq!((r.records.len(), r.conflicts_appeared.len()), (2, 0));
    }

    /// The observations after `stored_two_pairs()`: one on the pair already in conflict
    /// (nothing appears), a version-less one disputing `x@2` / CVE-2 (appears) and making
    /// a new pair `x@1` / CVE-2, and a newer version of a stored document that no longer
    /// names `x@4` / CVE-4 (its old statement is retracted: the pair changes), and two
    /// statements on a new artifact, `x@5` / CVE-2, in conflict with the version-less one
    /// as soon as the first comes (appears: a pair made in the same turn has no baseline).
    fn stored_then_new() -> (Vec<Observation>, Vec<Observation>) {
        let versioned = |o: Observation, version: &str| Observation {
            document_id: Some("doc-a".into()),
            document_version: Some(version.into()),
            ..o
        };
        let mut stored = stored_two_pairs();
        let old = obs(Some("a"), "pkg:npm/x@4", "CVE-4", Status::Affected, "2024-01-01T00:00:00Z");
        stored.push(versioned(old, "1"));
        let new = vec![
            obs(Some("c"), "pkg:npm/x@1", "CVE-1", Status::Fixed, "2024-01-02T00:00:00Z"),
            obs(Some("b"), "pkg:npm/x", "CVE-2", Status::Fixed, "2024-01-02T00:00:00Z"),
            versioned(obs(Some("a"), "pkg:npm/x@3", "CVE-3", Status::Affected, "2024-01-03T00:00:00Z"), "2"),
            obs(Some("a"), "pkg:npm/x@5", "CVE-2", Status::Affected, "2024-01-02T00:00:00Z"),
            obs(Some("c"), "pkg:npm/x@5", "CVE-2", Status::Fixed, "2024-01-02T00:00:00Z"),
        ];
        (stored, new)
    }

    /// A rebuilt consensus, healed or not, reports the same conflicts as appearing as a
    /// consensus that applied the stored observations itself and never stopped: each
    /// pair's baseline is evaluated before the first new observation that may change it.
    #[test]
    fn a_lazy_baseline_counts_what_a_consensus_that_never_stopped_counts() {
        let p = policy();
        let (stored, new) = stored_then_new();
        let appeared = |e: &Effects| e.conflicts_appeared.clone();
        let digests = |e: &Effects| e.records.iter().map(|r| r.record.consensus_digest.clone()).collect::<Vec<_>>();
        for heal in [true, false] {
            let mut live = PackageConsensus::default();
            for o in stored.clone() {
                live.apply(o, &p).unwrap();
            }
            for o in &new {
                live.stage(o.clone()).unwrap();
            }
            let want = live.effects(&p);
            let pairs: Vec<&str> = want.conflicts_appeared.iter().map(|c| c.pair.artifact.as_str()).collect();
            assert_eq!(pairs, ["pkg:npm/x@2", "pkg:npm/x@5"]);
            let how = Rebuild { heal, baseline: Some(Arc::new(p.clone())) };
            let (mut rebuilt, errors) = PackageConsensus::rebuild(stored.clone(), how);
            assert!(errors.is_empty());
            for o in &new {
                rebuilt.stage(o.clone()).unwrap();
            }
            let got = rebuilt.effects(&p);
            assert_eq!(appeared(&got), appeared(&want), "heal {heal}");
            if heal {
                assert_eq!(got.records.len(), rebuilt.pair_count(), "a heal evaluates every pair");
            } else {
                assert_eq!(digests(&got), digests(&want), "without a heal: the changed pairs only");
            }
            // Later effects count like the live consensus's too.
            let later = obs(Some("d"), "pkg:npm/x@1", "CVE-2", Status::Affected, "2024-01-04T00:00:00Z");
            let (a, b) = (rebuilt.apply(later.clone(), &p).unwrap(), live.apply(later, &p).unwrap());
            assert_eq!(appeared(&a), appeared(&b), "heal {heal}");
            assert_eq!(appeared(&a).len(), 1);
        }
        // Without a baseline every conflict the heal finds counts.
        let (mut unbased, _) = PackageConsensus::rebuild(stored, Rebuild { heal: true, baseline: None });
        for o in new {
            unbased.stage(o).unwrap();
        }
        assert_eq!(unbased.effects(&p).conflicts_appeared.len(), 3);
    }

    /// What a pre-apply baseline relies on: every held pair that applying an observation
    /// lists as changed is among those `pairs_changed_by` lists before it applies.
    #[test]
    fn pairs_changed_by_lists_every_held_pair_an_observation_changes() {
        let (stored, new) = stored_then_new();
        let (mut state, _) = PackageState::rebuild(stored);
        for o in new {
            let held: BTreeSet<PairKey> = state.pairs().into_iter().collect();
            let before: BTreeSet<PairKey> = state.pairs_changed_by(&o).into_iter().collect();
            let changed: BTreeSet<PairKey> = state.apply(o).unwrap().into_iter().collect();
            let missing: Vec<_> = changed.intersection(&held).filter(|p| !before.contains(*p)).collect();
            assert!(missing.is_empty(), "{missing:?}");
            assert!(!changed.is_empty());
        }
    }

    #[test]
    fn pairs_to_evaluate_counts_what_the_next_effects_evaluate() {
        let p = policy();
        let stored = stored_two_pairs();
        let (mut counted, _) = PackageConsensus::rebuild(stored.clone(), Rebuild { heal: true, baseline: None });
        let (mut plain, _) = PackageConsensus::rebuild(stored, Rebuild { heal: true, baseline: None });
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
