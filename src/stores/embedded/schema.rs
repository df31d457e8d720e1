//! The schema role on the embedded store ([`SchemaStore`]; `crate::upgrade` drives it).
//!
//! Invariants: the version is the `schema_version` entry of `vex_meta`; a store with no
//! marker and data (observations or records) was written by bafbf91 or before
//! ([`UNMARKED_STORE_VERSION`]); each operation is one write transaction.

use super::observations::{obs_key, stored_row, tenant_and_package};
use super::{err, key_text, EmbeddedStore, CONFLICTS, CONSENSUS, META, OBSERVATIONS};
use crate::domain::model::Observation;
use crate::domain::upgrade::UNMARKED_STORE_VERSION;
use crate::ports::{SchemaStore, StoreError, StoredObservation};
use redb::{ReadableTable, ReadableTableMetadata};

/// The [`META`] key of the store's schema version.
const SCHEMA_VERSION: &str = "schema_version";

#[async_trait::async_trait]
impl SchemaStore for EmbeddedStore {
    async fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            if let Some(v) = tx.open_table(META).map_err(err)?.get(SCHEMA_VERSION).map_err(err)? {
                return u32::try_from(v.value())
                    .map(Some)
                    .map_err(|_| StoreError::Rejected(format!("schema version {} out of range", v.value())));
            }
            let data = tx.open_table(OBSERVATIONS).map_err(err)?.len().map_err(err)? > 0
                || tx.open_table(CONSENSUS).map_err(err)?.len().map_err(err)? > 0;
            Ok(data.then_some(UNMARKED_STORE_VERSION))
        })
        .await
    }

    async fn set_schema_version(&self, version: u32) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(META).map_err(err)?.insert(SCHEMA_VERSION, u64::from(version)).map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn stored_packages(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let mut out: Vec<(String, String)> = Vec::new();
            for r in tx.open_table(OBSERVATIONS).map_err(err)?.iter().map_err(err)? {
                let (k, _) = r.map_err(err)?;
                let (tenant, package) = tenant_and_package(k.value());
                if !out.last().is_some_and(|(t, p)| t.as_bytes() == tenant && p.as_bytes() == package) {
                    out.push((key_text(tenant), key_text(package)));
                }
            }
            Ok(out)
        })
        .await
    }

    async fn replace_observations(&self, remove: &[StoredObservation], add: &[Observation]) -> Result<(), StoreError> {
        let remove: Vec<String> = remove.iter().map(|r| obs_key(&r.tenant, &r.package, &r.id)).collect();
        let add = add.iter().map(stored_row).collect::<Result<Vec<_>, StoreError>>()?;
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut t = tx.open_table(OBSERVATIONS).map_err(err)?;
                for (k, v) in &add {
                    if t.get(k.as_bytes()).map_err(err)?.is_none() {
                        t.insert(k.as_bytes(), v.as_slice()).map_err(err)?;
                    }
                }
                for k in &remove {
                    t.remove(k.as_bytes()).map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn clear_current_records(&self) -> Result<(), StoreError> {
        self.blocking(|db| {
            let tx = db.begin_write().map_err(err)?;
            // The current entries stay in each pair's history: the index names them now.
            super::records::index_current_entries(&tx)?;
            tx.open_table(CONSENSUS).map_err(err)?.retain(|_, _| false).map_err(err)?;
            tx.open_table(CONFLICTS).map_err(err)?.retain(|_, _| false).map_err(err)?;
            tx.commit().map_err(err)
        })
        .await?;
        self.reads.cleared();
        Ok(())
    }
}
