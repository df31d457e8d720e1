//! The verifications role (`vex_dsse_verifications`): one entry per DSSE envelope seen,
//! verified or not.
//!
//! Invariant: an entry is keyed by the envelope's digest, so a replay overwrites it with
//! the same verdict.

use super::StoreError;
use serde::{Deserialize, Serialize};

/// One DSSE verification, as persisted (`vex_dsse_verifications`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// `sha256:<hex>` of the envelope bytes (the record's id).
    pub envelope_digest: String,
    pub issuer: Option<String>,
    pub keyid: Option<String>,
    /// `verified`, `unsigned` or `failed`.
    pub result: crate::domain::model::SignatureStatus,
    /// Why unsigned or failed (`crypto::verify`: `no_signatures`, `unknown_key`,
    /// `bad_signature`, `wrong_key`, `threshold_not_met`, `malformed_envelope`).
    pub reason: Option<crate::domain::codes::SignatureReason>,
    /// When it was verified (ms since the epoch).
    pub verified_at_ms: i64,
    /// Where the envelope came from (`kafka:topic/partition@offset` or a path).
    pub source: Option<String>,
}

/// Persistence of DSSE verifications.
#[async_trait::async_trait]
pub trait VerificationStore: Send + Sync + 'static {
    /// Upserts a verification by `envelope_digest`.
    async fn put_verification(&self, v: &VerificationRecord) -> Result<(), StoreError>;
}
