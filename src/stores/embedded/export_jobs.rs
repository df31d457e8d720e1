//! The export-jobs role on redb (`vex_export_jobs`, keyed by job id).

use super::{err, json_err, EmbeddedStore, EXPORT_JOBS};
use crate::ports::{ExportJobRecord, ExportJobStore, StoreError};

impl EmbeddedStore {
    /// Every export job record (`vex_export_jobs`), by job id.
    pub async fn export_jobs(&self) -> Result<Vec<ExportJobRecord>, StoreError> {
        self.read_all(EXPORT_JOBS).await
    }
}

#[async_trait::async_trait]
impl ExportJobStore for EmbeddedStore {
    async fn put_export_job(&self, job: &ExportJobRecord) -> Result<(), StoreError> {
        self.put_json(&EXPORT_JOBS, &job.job_id, job).await
    }

    async fn list_export_jobs(&self, tenant: &str) -> Result<Vec<ExportJobRecord>, StoreError> {
        let mut jobs: Vec<ExportJobRecord> = self.read_all(EXPORT_JOBS).await?;
        jobs.retain(|j| j.tenant.as_deref() == Some(tenant));
        jobs.sort_by(|a, b| b.started_at_ms.cmp(&a.started_at_ms).then(b.job_id.cmp(&a.job_id)));
        Ok(jobs)
    }

    async fn get_export_job(&self, job_id: &str) -> Result<Option<ExportJobRecord>, StoreError> {
        let id = job_id.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(EXPORT_JOBS).map_err(err)?;
            match t.get(id.as_str()).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(json_err)?)),
                None => Ok(None),
            }
        })
        .await
    }
}
