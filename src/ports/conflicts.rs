//! The conflict-queue role (`vex_conflict_queue`): the pairs whose current record has
//! open conflicts. The queue is written by [`super::RecordStore::put_records`] together
//! with the record (a pair is queued when its winning record has conflicts and leaves
//! when it has none); this role reads it.

use super::StoreError;

/// Reads of the conflict queue (the depth gauges).
#[async_trait::async_trait]
pub trait ConflictQueue: Send + Sync + 'static {
    /// Number of open conflicts.
    async fn conflict_queue_depth(&self) -> Result<u64, StoreError>;
    /// Open conflicts per tenant; tenants with none are left out.
    async fn conflict_queue_depths(&self) -> Result<Vec<(String, u64)>, StoreError>;
}
