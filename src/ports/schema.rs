//! The schema role: the version a store's data is at, and the bulk operations an
//! upgrade of that data runs (`crate::upgrade` drives them; `crate::domain::upgrade`
//! decides what changes).
//!
//! Invariants: the version is a marker kept apart from the data; a store with data and no
//! marker was written by bafbf91 or before ([`UNMARKED_STORE_VERSION`]), an empty one
//! with no marker is new; the marker is written by the upgrade only after the data is at
//! that version. Every operation is idempotent, so an upgrade a crash cut short is simply
//! run again: [`SchemaStore::replace_observations`] inserts the new observations before
//! it deletes the old ones (never a moment with neither).
//!
//! [`UNMARKED_STORE_VERSION`]: crate::domain::upgrade::UNMARKED_STORE_VERSION

use super::StoreError;
use crate::domain::model::Observation;
use std::sync::Arc;

/// Where a stored observation is (what deleting it needs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StoredObservation {
    pub tenant: Arc<str>,
    pub package: Arc<str>,
    pub id: Arc<str>,
}

impl StoredObservation {
    /// The place of `o`.
    pub fn of(o: &Observation) -> StoredObservation {
        StoredObservation { tenant: o.tenant.clone(), package: o.package.clone(), id: o.id.clone() }
    }
}

/// A store's schema version and the upgrade's bulk writes.
#[async_trait::async_trait]
pub trait SchemaStore: Send + Sync + 'static {
    /// The marker; else [`crate::domain::upgrade::UNMARKED_STORE_VERSION`] when the store
    /// holds any observation or record; else `None` (a new store).
    async fn schema_version(&self) -> Result<Option<u32>, StoreError>;
    /// Writes the marker.
    async fn set_schema_version(&self, version: u32) -> Result<(), StoreError>;
    /// Every (tenant, package) with stored observations, every tenant, each once, sorted.
    async fn stored_packages(&self) -> Result<Vec<(String, String)>, StoreError>;
    /// Stores `add` (an id already stored is kept as it is), then deletes `remove`.
    async fn replace_observations(&self, remove: &[StoredObservation], add: &[Observation]) -> Result<(), StoreError>;
    /// Deletes every current record and conflict-queue entry, every tenant (history and
    /// the change stream are kept): the upgrade then recomputes them.
    async fn clear_current_records(&self) -> Result<(), StoreError>;
}
