//! The embedded store's schema version and its upgrade ([`crate::domain::upgrade`]).
//!
//! Invariants: the store's version is the `schema_version` entry of `vex_meta`; a store
//! with no marker and no data is new (it gets the current version), one with data and no
//! marker was written by bafbf91 or before ([`UNMARKED_STORE_VERSION`]). A store at an
//! older version is upgraded only when the plan has no lossy observation: the re-keyed
//! observations replace the old ones (one write transaction), then every current record
//! (and conflict-queue entry) is dropped and recomputed from the upgraded observations
//! (history is kept), and only then is the marker written, so a crash in between
//! re-runs an upgrade that finds the observations already re-keyed (every step is
//! idempotent on its own output). A store at a newer version is never opened for the
//! pipeline. [`EmbeddedStore::reindex`] drops the lossy observations and their pairs
//! first, then does the same.

use super::{err, json_err, EmbeddedStore, CONFLICTS, CONSENSUS, META, OBSERVATIONS};
use crate::domain::consensus::PackageState;
use crate::domain::model::Observation;
use crate::domain::trust::Policy;
use crate::domain::upgrade::{plan, STORE_SCHEMA_VERSION, UNMARKED_STORE_VERSION};
use crate::domain::version::VersionedRecord;
use crate::ports::{pair_id, ObservationStore, RecordStore, StoreError};
use redb::{ReadableTable, ReadableTableMetadata};
use std::collections::BTreeSet;
use std::sync::Arc;

/// The [`META`] key of the store's schema version.
const SCHEMA_VERSION: &str = "schema_version";

/// What opening the store for the pipeline found and did.
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

/// Why the store cannot be used for the pipeline as it is.
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Lossy observations: the message names `vex-lens reindex`.
    #[error("{0}")]
    Lossy(String),
    #[error("the store was written by a newer version of vex-lens (schema version {0}, this version writes {STORE_SCHEMA_VERSION}); use that version or a fresh data directory")]
    Newer(u32),
}

fn key_of(o: &Observation) -> String {
    format!("{}\u{0}{}\u{0}{}", o.tenant, o.package, o.id)
}

impl EmbeddedStore {
    /// The store's schema version: the marker, else [`UNMARKED_STORE_VERSION`] when it
    /// holds observations or records, else `None` (a new store).
    pub async fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            if let Some(v) = tx.open_table(META).map_err(err)?.get(SCHEMA_VERSION).map_err(err)? {
                return Ok(Some(v.value() as u32));
            }
            let data = tx.open_table(OBSERVATIONS).map_err(err)?.len().map_err(err)? > 0
                || tx.open_table(CONSENSUS).map_err(err)?.len().map_err(err)? > 0;
            Ok(data.then_some(UNMARKED_STORE_VERSION))
        })
        .await
    }

    async fn set_schema_version(&self, v: u32) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(META).map_err(err)?.insert(SCHEMA_VERSION, v as u64).map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn all_observations(&self) -> Result<Vec<Observation>, StoreError> {
        self.read_all(OBSERVATIONS).await
    }

    /// Brings the store to [`STORE_SCHEMA_VERSION`] before the pipeline uses it (see the
    /// module doc); `policy` gives a tenant's installed policy for the recompute.
    pub async fn upgrade(&self, policy: &dyn Fn(&str) -> Arc<Policy>) -> Result<UpgradeReport, UpgradeError> {
        self.upgrade_or_reindex(policy, false).await
    }

    /// `vex-lens reindex`: as [`Self::upgrade`], but drops the lossy observations (their
    /// documents must be ingested again) and every record of their packages.
    pub async fn reindex(&self, policy: &dyn Fn(&str) -> Arc<Policy>) -> Result<UpgradeReport, UpgradeError> {
        self.upgrade_or_reindex(policy, true).await
    }

    async fn upgrade_or_reindex(
        &self,
        policy: &dyn Fn(&str) -> Arc<Policy>,
        reindex: bool,
    ) -> Result<UpgradeReport, UpgradeError> {
        let from = match self.schema_version().await? {
            None => {
                self.set_schema_version(STORE_SCHEMA_VERSION).await?;
                return Ok(UpgradeReport { from: STORE_SCHEMA_VERSION, ..Default::default() });
            }
            Some(v) if v > STORE_SCHEMA_VERSION => return Err(UpgradeError::Newer(v)),
            Some(v) if v == STORE_SCHEMA_VERSION && !reindex => {
                return Ok(UpgradeReport { from: v, ..Default::default() })
            }
            Some(v) => v,
        };
        let observations = self.all_observations().await?;
        let p = plan(from, &observations);
        if !p.is_lossless() && !reindex {
            return Err(UpgradeError::Lossy(p.refusal(from)));
        }
        let mut remove: Vec<String> =
            p.lossy.iter().map(|l| format!("{}\u{0}{}\u{0}{}", l.tenant, l.package, l.id)).collect();
        let by_id: std::collections::HashMap<&str, &Observation> = observations.iter().map(|o| (&*o.id, o)).collect();
        let mut add = Vec::with_capacity(p.rekeyed.len());
        for (old, n) in &p.rekeyed {
            if let Some(o) = by_id.get(&**old) {
                remove.push(key_of(o));
            }
            add.push((key_of(n), serde_json::to_vec(n).map_err(json_err)?));
        }
        let report = UpgradeReport {
            from,
            rekeyed: p.rekeyed.len(),
            dropped: p.lossy.len(),
            unchanged: p.unchanged,
            records: 0,
        };
        // Observations replaced and every current record and queue entry dropped, at once.
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut t = tx.open_table(OBSERVATIONS).map_err(err)?;
                for k in &remove {
                    t.remove(k.as_str()).map_err(err)?;
                }
                for (k, v) in &add {
                    if t.get(k.as_str()).map_err(err)?.is_none() {
                        t.insert(k.as_str(), v.as_slice()).map_err(err)?;
                    }
                }
                tx.open_table(CONSENSUS).map_err(err)?.retain(|_, _| false).map_err(err)?;
                tx.open_table(CONFLICTS).map_err(err)?.retain(|_, _| false).map_err(err)?;
            }
            tx.commit().map_err(err)
        })
        .await?;
        let records = self.recompute_all(policy).await?;
        self.set_schema_version(STORE_SCHEMA_VERSION).await?;
        Ok(UpgradeReport { records, ..report })
    }

    /// Recomputes every pair of every stored package ([`PackageState::rebuild`] +
    /// evaluate, as the artifact actor does) and writes the records.
    async fn recompute_all(&self, policy: &dyn Fn(&str) -> Arc<Policy>) -> Result<usize, StoreError> {
        let packages: BTreeSet<(String, String)> =
            self.all_observations().await?.into_iter().map(|o| (o.tenant.to_string(), o.package.to_string())).collect();
        let now = crate::ports::now_ms();
        let mut n = 0;
        for (tenant, package) in packages {
            let (st, _refused) = PackageState::rebuild(self.observations_for_package(&tenant, &package).await?);
            let pol = policy(&tenant);
            let mut records = Vec::new();
            for pair in st.pairs() {
                match st.evaluate(&pair, &pol, false) {
                    Ok(Some(r)) => records.push(VersionedRecord::unversioned(r)),
                    Ok(None) => {}
                    Err(e) => {
                        return Err(StoreError::Rejected(format!("recomputing {} ({}): {e}", pair_id(&pair), package)))
                    }
                }
            }
            n += records.len();
            self.put_records(&records, now).await?;
        }
        Ok(n)
    }
}
