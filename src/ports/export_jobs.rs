//! The export-jobs role (`vex_export_jobs`): one entry per export job the service ran.
//!
//! Invariant: an entry is keyed by its job id; writing it again replaces it.

use super::StoreError;
use crate::domain::export_format::ExportFormat;
use serde::{Deserialize, Serialize};

/// How an export job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobResult {
    Success,
    Failure,
}

impl JobResult {
    /// Every result (the label values of `vex_export_jobs_total`).
    pub const ALL: [JobResult; 2] = [JobResult::Success, JobResult::Failure];

    /// `success` or `failure` (the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            JobResult::Success => "success",
            JobResult::Failure => "failure",
        }
    }
}

/// One export job run by the service, as persisted (`vex_export_jobs`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJobRecord {
    /// Unique id (the record's id), also the job's output directory name.
    pub job_id: String,
    /// `json`, `ndjson` or `openvex`.
    pub format: ExportFormat,
    pub tenant: Option<String>,
    pub since_ms: Option<i64>,
    pub started_at_ms: i64,
    pub duration_ms: u64,
    /// `success` or `failure`.
    pub result: JobResult,
    pub error: Option<String>,
    /// The bundle's manifest and id (success only).
    pub manifest: Option<String>,
    pub bundle_id: Option<String>,
    pub records: u64,
}

/// Persistence of export job records.
#[async_trait::async_trait]
pub trait ExportJobStore: Send + Sync + 'static {
    /// Upserts an export job record by `job_id`.
    async fn put_export_job(&self, job: &ExportJobRecord) -> Result<(), StoreError>;
    /// Export jobs run for `tenant`, newest first.
    async fn list_export_jobs(&self, tenant: &str) -> Result<Vec<ExportJobRecord>, StoreError>;
    async fn get_export_job(&self, job_id: &str) -> Result<Option<ExportJobRecord>, StoreError>;
}
