//! The observations role (`vex_observations`): every counted observation, kept so an
//! actor's state (and a recompute after a trust change) can be rebuilt from the store.
//!
//! Invariant: an observation is stored once per id, with its first provenance; a
//! replay changes nothing.

use super::StoreError;
use crate::domain::model::Observation;

/// Persistence of observations.
#[async_trait::async_trait]
pub trait ObservationStore: Send + Sync + 'static {
    /// Upserts observations by `id` (keeps the first `provenance`).
    async fn put_observations(&self, observations: &[Observation]) -> Result<(), StoreError>;
    /// Every stored observation of (tenant, package), to rebuild an actor's state.
    async fn observations_for_package(&self, tenant: &str, package: &str) -> Result<Vec<Observation>, StoreError>;
    /// What [`Self::observations_for_package`] returns for each (tenant, package), in the
    /// order asked; a store that can reads them together (many actors start at once when
    /// a document names many packages). By default the reads run concurrently (one
    /// after another, a networked store would make the last wait for every round trip).
    async fn observations_for_packages(
        &self,
        packages: &[(String, String)],
    ) -> Result<Vec<Vec<Observation>>, StoreError> {
        futures::future::try_join_all(packages.iter().map(|(t, p)| self.observations_for_package(t, p))).await
    }
    /// Every package of `tenant` with stored observations, each once, sorted; a trust
    /// change recomputes them all.
    async fn tenant_packages(&self, tenant: &str) -> Result<Vec<String>, StoreError>;
}
