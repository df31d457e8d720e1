//! The verifications role on MongoDB (`vex_dsse_verifications`, upserted by envelope
//! digest).

use super::{MongoStore, DSSE_VERIFICATIONS};
use crate::ports::{StoreError, VerificationRecord, VerificationStore};

#[async_trait::async_trait]
impl VerificationStore for MongoStore {
    async fn put_verification(&self, v: &VerificationRecord) -> Result<(), StoreError> {
        self.replace_by_id(DSSE_VERIFICATIONS, &v.envelope_digest, v, "encoding verification").await
    }
}
