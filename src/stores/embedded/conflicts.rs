//! The conflict-queue role on redb (`vex_conflict_queue`, keyed by pair: tenant, artifact,
//! vulnerability): reads of the queue that `put_records` (`records`) keeps.

use super::{err, key_text, EmbeddedStore, CONFLICTS};
use crate::ports::{ConflictQueue, StoreError};
use redb::{ReadableTable, ReadableTableMetadata};

#[async_trait::async_trait]
impl ConflictQueue for EmbeddedStore {
    async fn conflict_queue_depth(&self) -> Result<u64, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let n = tx.open_table(CONFLICTS).map_err(err)?.len().map_err(err)?;
            Ok(n)
        })
        .await
    }

    async fn conflict_queue_depths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CONFLICTS).map_err(err)?;
            let mut by_tenant = std::collections::BTreeMap::<Vec<u8>, u64>::new();
            for entry in t.iter().map_err(err)? {
                let (k, _) = entry.map_err(err)?;
                *by_tenant.entry(k.value().0.to_vec()).or_default() += 1;
            }
            Ok(by_tenant.into_iter().map(|(t, n)| (key_text(&t), n)).collect())
        })
        .await
    }
}
