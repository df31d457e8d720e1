//! Bringing a store written by an older version to [`STORE_SCHEMA_VERSION`], the same way
//! for every adapter: what changes is decided by the pure [`crate::domain::upgrade`]
//! (one step per change of keys or record shape); this module applies its plan through
//! the store's roles ([`SchemaStore`], [`ObservationStore`], [`RecordStore`]).
//!
//! Invariants:
//! - A store at the current version is left alone; an empty store gets the marker; a
//!   store at a newer version is refused ([`UpgradeError::Newer`]).
//! - Nothing is written unless the whole store can be upgraded: the plan is made for
//!   every stored package first; any lossy observation refuses start-up with a message
//!   naming `vex-lens reindex` ([`UpgradeError::Lossy`]), and a refusal changes nothing.
//!   `reindex` drops the lossy observations (their documents must be ingested again).
//! - Then, package by package, the re-keyed observations replace the old ones; every
//!   current record and conflict-queue entry is deleted and recomputed from the upgraded
//!   observations under each tenant's policy ([`PackageState::rebuild`] + evaluate, as
//!   the artifact actor does; history and the change stream are kept); the marker is
//!   written last. A crash in between runs the upgrade again at the next start: every
//!   step is idempotent on its own output, and re-keyed observations already stored are
//!   unchanged by the plan.
//! - Memory is bounded by one package's observations, not the store's.

use crate::domain::consensus::PackageState;
use crate::domain::trust::Policy;
use crate::domain::upgrade::{plan, LossyObservation, STORE_SCHEMA_VERSION};
use crate::domain::version::VersionedRecord;
use crate::ports::{pair_id, ObservationStore, RecordStore, SchemaStore, StoreError, StoredObservation};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The roles an upgrade uses.
pub struct UpgradeStores<'a> {
    pub schema: &'a dyn SchemaStore,
    pub observations: &'a dyn ObservationStore,
    pub records: &'a dyn RecordStore,
}

impl<'a> From<&'a crate::ports::Stores> for UpgradeStores<'a> {
    fn from(s: &'a crate::ports::Stores) -> Self {
        UpgradeStores { schema: &*s.schema, observations: &*s.observations, records: &*s.records }
    }
}

/// What an upgrade found and did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpgradeReport {
    /// The version the store was at.
    pub from: u32,
    /// Observations re-keyed, dropped (reindex only) and unchanged.
    pub rekeyed: usize,
    pub dropped: usize,
    pub unchanged: usize,
    /// Records written by the recompute.
    pub records: usize,
}

impl UpgradeReport {
    /// Whether anything was upgraded (the store was not at the current version).
    pub fn upgraded(&self) -> bool {
        self.from != STORE_SCHEMA_VERSION
    }
}

/// Why the store cannot be used for the pipeline as it is.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Lossy observations: the message names `vex-lens reindex`.
    #[error("{0}")]
    Lossy(String),
    #[error("the store was written by a newer version of vex-lens (schema version {0}, this version writes {STORE_SCHEMA_VERSION}); use that version or a fresh store")]
    Newer(u32),
}

/// Brings the store to [`STORE_SCHEMA_VERSION`] before the pipeline uses it (see the
/// module doc); `policy` gives a tenant's installed policy for the recompute.
pub async fn upgrade(
    stores: UpgradeStores<'_>,
    policy: &dyn Fn(&str) -> Arc<Policy>,
) -> Result<UpgradeReport, UpgradeError> {
    run(stores, policy, false).await
}

/// `vex-lens reindex`: as [`upgrade`], but drops the lossy observations (their documents
/// must be ingested again) and with them every record of their packages; at the current
/// version it recomputes every record.
pub async fn reindex(
    stores: UpgradeStores<'_>,
    policy: &dyn Fn(&str) -> Arc<Policy>,
) -> Result<UpgradeReport, UpgradeError> {
    run(stores, policy, true).await
}

async fn run(
    s: UpgradeStores<'_>,
    policy: &dyn Fn(&str) -> Arc<Policy>,
    reindex: bool,
) -> Result<UpgradeReport, UpgradeError> {
    let from = match s.schema.schema_version().await? {
        None => {
            s.schema.set_schema_version(STORE_SCHEMA_VERSION).await?;
            return Ok(UpgradeReport { from: STORE_SCHEMA_VERSION, ..Default::default() });
        }
        Some(v) if v > STORE_SCHEMA_VERSION => return Err(UpgradeError::Newer(v)),
        Some(v) if v == STORE_SCHEMA_VERSION && !reindex => return Ok(UpgradeReport { from: v, ..Default::default() }),
        Some(v) => v,
    };
    let packages = s.schema.stored_packages().await?;
    // First pass: is the whole store lossless? (Nothing is written before the answer.)
    if !reindex {
        let mut lossy: Vec<LossyObservation> = Vec::new();
        let mut count = 0usize;
        for (tenant, package) in &packages {
            let p = plan(from, &s.observations.observations_for_package(tenant, package).await?);
            count += p.lossy.len();
            if lossy.len() < 3 {
                lossy.extend(p.lossy);
            }
        }
        if count > 0 {
            return Err(UpgradeError::Lossy(crate::domain::upgrade::refusal(from, count, &lossy)));
        }
    }
    // Second pass: re-key (and, for reindex, drop), package by package.
    let mut report = UpgradeReport { from, ..Default::default() };
    let mut recompute: BTreeSet<(String, String)> = BTreeSet::new();
    for (tenant, package) in &packages {
        let p = plan(from, &s.observations.observations_for_package(tenant, package).await?);
        let mut remove: Vec<StoredObservation> = p
            .lossy
            .iter()
            .map(|l| StoredObservation { tenant: l.tenant.clone(), package: l.package.clone(), id: l.id.clone() })
            .collect();
        let mut add = Vec::with_capacity(p.rekeyed.len());
        for (old, n) in p.rekeyed.iter() {
            remove.push(StoredObservation {
                tenant: tenant.as_str().into(),
                package: package.as_str().into(),
                id: old.clone(),
            });
            recompute.insert((n.tenant.to_string(), n.package.to_string()));
            add.push(n.clone());
        }
        if !remove.is_empty() || !add.is_empty() {
            s.schema.replace_observations(&remove, &add).await?;
        }
        report.rekeyed += p.rekeyed.len();
        report.dropped += p.lossy.len();
        report.unchanged += p.unchanged;
        recompute.insert((tenant.clone(), package.clone()));
    }
    s.schema.clear_current_records().await?;
    for (tenant, package) in &recompute {
        report.records += recompute_package(&s, tenant, package, &policy(tenant)).await?;
    }
    s.schema.set_schema_version(STORE_SCHEMA_VERSION).await?;
    Ok(report)
}

/// Recomputes every pair of one stored package and writes the records; returns how many.
async fn recompute_package(
    s: &UpgradeStores<'_>,
    tenant: &str,
    package: &str,
    policy: &Policy,
) -> Result<usize, StoreError> {
    let (st, _refused) = PackageState::rebuild(s.observations.observations_for_package(tenant, package).await?);
    let mut records = Vec::new();
    for pair in st.pairs() {
        match st.evaluate(&pair, policy, false) {
            Ok(Some(r)) => records.push(VersionedRecord::unversioned(r)),
            Ok(None) => {}
            Err(e) => return Err(StoreError::Rejected(format!("recomputing {} ({package}): {e}", pair_id(&pair)))),
        }
    }
    if !records.is_empty() {
        s.records.put_records(&records, crate::ports::now_ms()).await?;
    }
    Ok(records.len())
}
