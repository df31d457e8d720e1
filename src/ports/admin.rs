//! The store's own upkeep: creating what it needs and answering a reachability check.

use super::StoreError;

/// Set-up and readiness of a store (the composition root and `/readyz`).
#[async_trait::async_trait]
pub trait StoreAdmin: Send + Sync + 'static {
    /// Creates collections/indexes (and runs one-time migrations); idempotent.
    async fn init(&self) -> Result<(), StoreError>;
    /// Cheap reachability check (readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
