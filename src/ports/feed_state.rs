//! The feed state port: what a feed source remembers of one provider between runs, one
//! [`FeedState`] per feed (keyed by tenant, feed and distribution URL inside it): the
//! validators of the metadata, `index.txt` and `changes.csv` (conditional requests), per
//! distribution directory the watermark and, per document, its relative path, listed
//! time, the digests of the document, its hash file and its `.asc`, and its failures with
//! the time of the next retry; and when the last run ended, when the last successful one
//! did, and the last run's feed-level failure (what `GET /v1/vex/feeds` reports).
//!
//! Invariants: a save replaces the whole state atomically (a reader or a crash sees the
//! old state or the new one, never a mix); a state that cannot be read is an error, never
//! silently an empty state (that would fetch and emit the whole provider again); the
//! watermark only moves past documents that are settled (acknowledged or done); the
//! validators of `index.txt` and `changes.csv` are stored only once every row they listed
//! was handled, so a crash in between never turns unhandled rows into a `304`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the state file format.
pub const FEED_STATE_VERSION: u32 = 1;

/// HTTP validators of one resource (for `If-None-Match` / `If-Modified-Since`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn is_empty(&self) -> bool {
        self.etag.is_none() && self.last_modified.is_none()
    }
}

/// What the provider's metadata said, kept so that a `304 Not Modified` needs no body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataState {
    pub url: String,
    pub validators: Validators,
    /// `role` (`csaf_publisher`, `csaf_provider`, `csaf_trusted_provider`).
    pub role: String,
    /// `publisher.namespace`.
    pub namespace: String,
    /// The `directory_url`s of the distributions.
    pub directories: Vec<String>,
}

/// How a document ended in its last attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocOutcome {
    /// Acknowledged by the ingest flow: durable.
    Emitted,
    /// Acknowledged by the ingest flow: dead-lettered (done until its bytes or signature
    /// change).
    DeadLettered,
    /// Not emitted on purpose (TLP, publisher), done until its listing changes.
    Skipped,
    /// Rejected for good (a path that breaks the rules, too large), until its listing changes.
    Rejected,
    /// Failed (hash, fetch, not acknowledged, stale): retried at `next_retry_ms`.
    Failed,
}

impl DocOutcome {
    /// Whether nothing more is owed for this listing.
    pub fn settled(self) -> bool {
        self != DocOutcome::Failed
    }
}

/// Digests (lower-case hex SHA-256) of what was fetched for a document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocDigests {
    pub document: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha512_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asc: Option<String>,
}

/// One document of a distribution directory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocState {
    /// Its listed time (`changes.csv`, RFC 3339 as listed; none when only `index.txt`
    /// names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listed: Option<String>,
    pub outcome: DocOutcome,
    /// Why it was skipped, rejected or failed (a reason code).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digests: Option<DocDigests>,
    /// Failed attempts in a row.
    #[serde(default)]
    pub failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry_ms: Option<i64>,
}

/// One distribution directory (`directory_url`) of the provider.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectoryState {
    /// Whether a run went through the whole directory once (the first sync is over);
    /// until then, the next run is a first sync again (`index.txt` read, `since` applied).
    #[serde(default)]
    pub synced: bool,
    pub index: Validators,
    pub changes: Validators,
    /// Every `changes.csv` row at or before this time (ms since the epoch) is settled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark_ms: Option<i64>,
    /// Distinct rows of the last `changes.csv` read (fewer later: rows are gone, a rewind).
    #[serde(default)]
    pub rows_seen: usize,
    /// Documents by path relative to the directory.
    #[serde(default)]
    pub documents: BTreeMap<String, DocState>,
}

/// The feed-level failure of a run (the feed stopped: metadata, publisher, a list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedFailure {
    /// Reason code (`metadata_invalid`, `foreign_directory`, `no_directory`,
    /// `publisher_mismatch`, `fetch_failed`, `state_failed`).
    pub code: String,
    pub message: String,
    /// When the run that failed ended (ms since the epoch).
    pub at_ms: i64,
}

/// Everything one feed remembers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedState {
    pub version: u32,
    pub feed: String,
    pub tenant: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<MetadataState>,
    /// By distribution URL.
    #[serde(default)]
    pub directories: BTreeMap<String, DirectoryState>,
    /// When the last run that reached the end without a feed-level failure ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<i64>,
    /// When the last run ended, whether it succeeded or not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_ms: Option<i64>,
    /// The feed-level failure of the last run (`None` once a run succeeds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<FeedFailure>,
}

impl FeedState {
    /// The state of a feed never run.
    pub fn new(feed: &str, tenant: &str) -> FeedState {
        FeedState {
            version: FEED_STATE_VERSION,
            feed: feed.to_string(),
            tenant: tenant.to_string(),
            metadata: None,
            directories: BTreeMap::new(),
            last_success_ms: None,
            last_attempt_ms: None,
            last_error: None,
        }
    }
}

/// The state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FeedStateError {
    #[error("feed state {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("feed state {path} is not a state this version reads: {reason}")]
    Corrupt { path: String, reason: String },
}

/// Where feed states are kept.
#[async_trait::async_trait]
pub trait FeedStateStore: Send + Sync {
    /// The feed's state, `None` when it was never saved.
    async fn load(&self, feed: &str) -> Result<Option<FeedState>, FeedStateError>;
    /// Replaces the feed's state atomically.
    async fn save(&self, state: &FeedState) -> Result<(), FeedStateError>;
    /// Forgets the feed (`feed reset`); absent is fine.
    async fn remove(&self, feed: &str) -> Result<(), FeedStateError>;
}
