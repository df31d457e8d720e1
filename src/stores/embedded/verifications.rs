//! The verifications role on redb (`vex_dsse_verifications`, keyed by envelope digest).

use super::{EmbeddedStore, VERIFICATIONS};
use crate::ports::{StoreError, VerificationRecord, VerificationStore};

impl EmbeddedStore {
    /// Every DSSE verification (`vex_dsse_verifications`), by envelope digest.
    pub async fn verifications(&self) -> Result<Vec<VerificationRecord>, StoreError> {
        self.read_all(VERIFICATIONS).await
    }
}

#[async_trait::async_trait]
impl VerificationStore for EmbeddedStore {
    async fn put_verification(&self, v: &VerificationRecord) -> Result<(), StoreError> {
        self.put_json(&VERIFICATIONS, &v.envelope_digest, v).await
    }
}
