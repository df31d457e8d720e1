//! The batch computation: every pair of a set of observations, evaluated on every core.
//!
//! Invariants: the result (records in artifact, vulnerability, tenant order, and the
//! errors) does not depend on the input order or the number of threads; it equals
//! applying the observations one by one (CONSENSUS.md "Properties"), with the version
//! markers the document ledger owes for the versions among them
//! ([`crate::domain::ledger::Ledger`]): the markers the ingest flow publishes for the
//! same documents, so a batch over files equals the service that ingested them.

use super::record::{ConsensusRecord, PairKey};
use super::state::{ApplyError, PackageState};
use crate::domain::canonical::CanonicalError;
use crate::domain::ledger::Ledger;
use crate::domain::model::Observation;
use crate::domain::trust::Policy;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Groups observations by package and evaluates every pair: the batch computation the CLI
/// runs on files, and the reference the incremental path must equal. The version markers
/// the document versions among `observations` owe are applied too (markers among the
/// input, e.g. read back from a store, are duplicates of them). Records are sorted by
/// artifact, then vulnerability, then tenant.
pub fn batch<I: IntoIterator<Item = Observation>>(
    observations: I,
    policy: &Policy,
    explain: bool,
) -> (Vec<ConsensusRecord>, Vec<ApplyError>) {
    let (records, errors) = batch_map(observations, policy, explain, Ok::<_, std::convert::Infallible>);
    (records.into_iter().map(|(_, r)| r).collect(), errors)
}

/// [`batch`], with each record mapped by `f` as soon as it is evaluated (so a caller that
/// needs only, say, its canonical JSON never holds every record at once), in the same
/// order; each item comes with its pair. A record `f` fails on is dropped and its error
/// returned with the others.
pub fn batch_map<I, T, E, F>(
    observations: I,
    policy: &Policy,
    explain: bool,
    f: F,
) -> (Vec<(PairKey, T)>, Vec<ApplyError>)
where
    I: IntoIterator<Item = Observation>,
    F: Fn(ConsensusRecord) -> Result<T, E> + Sync,
    T: Send,
    E: Into<CanonicalError>,
{
    let mut out = Vec::new();
    let errors = batch_each(observations, policy, explain, f, |p, t| out.push((p.clone(), t)));
    (out, errors)
}

/// Pairs evaluated in parallel per round, handed on in order between rounds.
pub(super) const BATCH_ROUND: usize = 1024;

/// [`batch_map`], handing each mapped record to `sink` in record order instead of
/// collecting them: the pairs are listed and sorted first, then evaluated in rounds on
/// every core (packages are independent, a record depends on its package's state only),
/// so only a round's records are held at once and the order does not depend on the
/// number of threads.
pub fn batch_each<I, T, E, F, S>(observations: I, policy: &Policy, explain: bool, f: F, mut sink: S) -> Vec<ApplyError>
where
    I: IntoIterator<Item = Observation>,
    F: Fn(ConsensusRecord) -> Result<T, E> + Sync,
    T: Send,
    E: Into<CanonicalError>,
    S: FnMut(&PairKey, T),
{
    use rayon::prelude::*;
    // Grouped by package in input order, then each package's state built on its own
    // (errors reported package by package, in package order).
    let mut by_package: BTreeMap<Arc<str>, Vec<Observation>> = BTreeMap::new();
    let mut ledger = Ledger::default();
    for o in observations {
        ledger.note(&o);
        by_package.entry(o.package.clone()).or_default().push(o);
    }
    // A marker goes to a package that an older version named: one with observations.
    for m in ledger.markers() {
        by_package.entry(m.package.clone()).or_default().push(m);
    }
    let built: Vec<(PackageState, Vec<ApplyError>)> = by_package
        .into_values()
        .collect::<Vec<_>>()
        .into_par_iter()
        .map(|obs| {
            let (mut state, mut errors) = (PackageState::new(), Vec::new());
            for o in obs {
                if let Err(e) = state.insert(o) {
                    errors.push(e);
                }
            }
            (state, errors)
        })
        .collect();
    let mut errors = Vec::new();
    let states: Vec<PackageState> = built
        .into_iter()
        .map(|(s, e)| {
            errors.extend(e);
            s
        })
        .collect();
    let mut pairs: Vec<(PairKey, &PackageState)> =
        states.par_iter().flat_map_iter(|s| s.pairs().into_iter().map(move |p| (p, s))).collect();
    pairs.par_sort_unstable_by(|(a, _), (b, _)| {
        a.artifact.cmp(&b.artifact).then(a.vulnerability.cmp(&b.vulnerability)).then(a.tenant.cmp(&b.tenant))
    });
    for round in pairs.chunks(BATCH_ROUND) {
        let evaluated: Vec<Result<Option<T>, ApplyError>> = round
            .par_iter()
            .map(|(p, s)| match s.evaluate(p, policy, explain) {
                Ok(Some(r)) => f(r).map(Some).map_err(|e| ApplyError::Undigestible {
                    artifact: p.artifact.clone(),
                    vulnerability: p.vulnerability.clone(),
                    source: e.into(),
                }),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            })
            .collect();
        for ((p, _), r) in round.iter().zip(evaluated) {
            match r {
                Ok(Some(t)) => sink(p, t),
                Ok(None) => {}
                Err(e) => errors.push(e),
            }
        }
    }
    // The states are freed on every core too (freeing every observation one by one on
    // this thread alone was a serial tail of the batch).
    drop(pairs);
    states.into_par_iter().for_each(drop);
    errors
}
