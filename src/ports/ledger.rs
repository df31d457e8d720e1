//! The document ledger role (MongoDB `vex_document_ledger`, redb `vex_document_versions`):
//! every version of every document the ingest flow has seen, with the packages it named
//! ([`DocumentVersion`]), so that a newer version that names no product of a package is
//! told to that package ([`crate::domain::ledger`]: the version markers it owes).
//!
//! Invariants: a version is stored once per (tenant, issuer, document id, digest): a
//! replay changes nothing; [`DocumentLedger::record_version`] stores the version and reads
//! the document's versions in one atomic step (MongoDB: the `insert` of a new document's
//! entry, or one `findAndModify` of an existing one; redb: one write transaction), so the
//! read sees every version stored before it and of two versions of one document recorded
//! at the same time at least one sees the other: the markers owed on each arrival add up
//! to what the whole set owes, even across instances. A store written
//! before this role existed has no entries: versions ingested before then are unknown to
//! the ledger (their packages hear of a newer version only if it names them).

use super::StoreError;
use crate::domain::ledger::DocumentVersion;

/// Persistence of the document ledger.
#[async_trait::async_trait]
pub trait DocumentLedger: Send + Sync + 'static {
    /// Stores `version` (idempotent) and returns every stored version of its document
    /// (same tenant, issuer and document id), itself included, sorted by digest.
    async fn record_version(&self, version: &DocumentVersion) -> Result<Vec<DocumentVersion>, StoreError>;
}
