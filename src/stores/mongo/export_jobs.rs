//! The export-jobs role on MongoDB (`vex_export_jobs`, indexed by tenant and start time).

use super::{create_indexes, map_err, rejected, MongoStore, EXPORT_JOBS};
use crate::ports::{ExportJobRecord, ExportJobStore, StoreError};
use futures::TryStreamExt;
use mongodb::bson::doc;

impl MongoStore {
    /// Index of the read API: a tenant's export jobs by start time.
    pub(super) async fn create_export_job_indexes(&self) -> Result<(), StoreError> {
        create_indexes(self.coll(EXPORT_JOBS), vec![(doc! { "tenant": 1, "started_at_ms": -1 }, "tenant_started_at")])
            .await
    }
}

#[async_trait::async_trait]
impl ExportJobStore for MongoStore {
    async fn put_export_job(&self, job: &ExportJobRecord) -> Result<(), StoreError> {
        self.replace_by_id(EXPORT_JOBS, &job.job_id, job, "encoding export job").await
    }

    async fn list_export_jobs(&self, tenant: &str) -> Result<Vec<ExportJobRecord>, StoreError> {
        let mut cursor = self
            .coll(EXPORT_JOBS)
            .find(doc! { "tenant": tenant })
            .sort(doc! { "started_at_ms": -1, "_id": -1 })
            .await
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            out.push(mongodb::bson::from_document(d).map_err(rejected("decoding export job"))?);
        }
        Ok(out)
    }

    async fn get_export_job(&self, job_id: &str) -> Result<Option<ExportJobRecord>, StoreError> {
        match self.coll(EXPORT_JOBS).find_one(doc! { "_id": job_id }).await.map_err(map_err)? {
            Some(d) => Ok(Some(mongodb::bson::from_document(d).map_err(rejected("decoding export job"))?)),
            None => Ok(None),
        }
    }
}
