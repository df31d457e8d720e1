//! The processed-files port of the watched directory: which files (by path and
//! fingerprint, `size:mtime_ns`) were fully handled, so a restart does not read them again.
//!
//! Invariant: a file is marked only once it is durable or dead-lettered; a changed file
//! (another fingerprint) counts as not seen.

use super::StoreError;

/// The files the watched directory has fully handled.
#[async_trait::async_trait]
pub trait ProcessedFiles: Send + Sync {
    /// Whether the file at `path` with this fingerprint was fully handled.
    async fn file_seen(&self, path: &str, fingerprint: &str) -> Result<bool, StoreError>;
    /// Remembers that the file at `path` with this fingerprint was fully handled.
    async fn mark_file(&self, path: &str, fingerprint: &str) -> Result<(), StoreError>;
}
