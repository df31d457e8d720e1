//! The verifications role (`vex_dsse_verifications`): one entry per DSSE envelope, and
//! per detached OpenPGP signature (`kind: openpgp`), seen, verified or not.
//!
//! Invariant: an entry is keyed by the envelope's digest (OpenPGP: the digest of the
//! document's and the signature's digests), so a replay overwrites it with the same verdict.

use super::StoreError;
use serde::{Deserialize, Serialize};

/// One signature verification, as persisted (`vex_dsse_verifications`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerificationRecord {
    /// The record's id: `sha256:<hex>` of the envelope bytes (DSSE), or of the document's
    /// and the signature's digests (OpenPGP: `verifier::openpgp_record_id`).
    pub envelope_digest: String,
    /// `openpgp` for a detached OpenPGP signature; absent for a DSSE envelope (the form
    /// stored before OpenPGP signatures were read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<crate::domain::codes::SignatureKind>,
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
