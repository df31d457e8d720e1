//! The one error type of every store port, and whether retrying can help.

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be reached or timed out: retry with backoff.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request itself is wrong (bad data, schema): retrying will not help.
    #[error("store rejected the request: {0}")]
    Rejected(String),
    /// The server failed internally (MongoDB `InternalError`, code 1; SecantusDB reports
    /// its storage engine's transient failures so): retriable, but only
    /// [`INTERNAL_ERROR_ATTEMPTS`] times, since a failure the request causes every time
    /// must not hold the writer forever.
    #[error("store failed internally: {0}")]
    Internal(String),
}

/// Attempts of an operation that keeps failing with [`StoreError::Internal`] before it
/// counts as rejected.
pub const INTERNAL_ERROR_ATTEMPTS: u32 = 5;

impl StoreError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Internal(_))
    }
}
