//! The schema role on MongoDB ([`SchemaStore`]; `crate::upgrade` drives it).
//!
//! Invariants: the version is the document `{_id: "schema_version", version}` of
//! `vex_meta` (beside the one-time migrations' markers); a database with no marker and
//! data (observations or records) was written by bafbf91 or before
//! ([`UNMARKED_STORE_VERSION`]). With no transactions on a standalone server, each
//! operation is ordered so that a crash leaves a state the next run repairs: new
//! observations are inserted (duplicates ignored) before old ones are deleted.

use super::observations::observation_doc;
use super::{map_err, rejected, MongoStore, CONFLICT_QUEUE, CONSENSUS, META, OBSERVATIONS};
use crate::domain::model::Observation;
use crate::domain::upgrade::UNMARKED_STORE_VERSION;
use crate::ports::{SchemaStore, StoreError, StoredObservation};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson};

/// The `_id` of the schema marker in `vex_meta`.
const SCHEMA_VERSION: &str = "schema_version";

#[async_trait::async_trait]
impl SchemaStore for MongoStore {
    async fn schema_version(&self) -> Result<Option<u32>, StoreError> {
        if let Some(d) = self.coll(META).find_one(doc! { "_id": SCHEMA_VERSION }).await.map_err(map_err)? {
            let v = match d.get("version") {
                Some(Bson::Int32(v)) => i64::from(*v),
                Some(Bson::Int64(v)) => *v,
                other => return Err(StoreError::Rejected(format!("{META}.{SCHEMA_VERSION}: version is {other:?}"))),
            };
            return u32::try_from(v)
                .map(Some)
                .map_err(|_| StoreError::Rejected(format!("{META}.{SCHEMA_VERSION}: version {v} out of range")));
        }
        let data = self.coll(OBSERVATIONS).find_one(doc! {}).await.map_err(map_err)?.is_some()
            || self.coll(CONSENSUS).find_one(doc! {}).await.map_err(map_err)?.is_some();
        Ok(data.then_some(UNMARKED_STORE_VERSION))
    }

    async fn set_schema_version(&self, version: u32) -> Result<(), StoreError> {
        self.coll(META)
            .update_one(doc! { "_id": SCHEMA_VERSION }, doc! { "$set": { "version": i64::from(version) } })
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    /// One aggregation over `vex_observations` (its tenant+package index).
    async fn stored_packages(&self) -> Result<Vec<(String, String)>, StoreError> {
        let pipeline = vec![
            doc! { "$group": { "_id": { "tenant": "$tenant", "package": "$package" } } },
            doc! { "$sort": { "_id.tenant": 1, "_id.package": 1 } },
        ];
        let mut cursor = self.coll(OBSERVATIONS).aggregate(pipeline).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let id = d.get_document("_id").map_err(rejected("package of an observation"))?;
            out.push((
                id.get_str("tenant").map_err(rejected("tenant of an observation"))?.to_string(),
                id.get_str("package").map_err(rejected("package of an observation"))?.to_string(),
            ));
        }
        out.sort();
        Ok(out)
    }

    async fn replace_observations(&self, remove: &[StoredObservation], add: &[Observation]) -> Result<(), StoreError> {
        let docs = add.iter().map(observation_doc).collect::<Result<Vec<_>, _>>()?;
        self.insert_ignoring_duplicates(OBSERVATIONS, docs).await?;
        for chunk in remove.chunks(super::BATCH) {
            let ids: Vec<&str> = chunk.iter().map(|r| &*r.id).collect();
            self.coll(OBSERVATIONS).delete_many(doc! { "_id": { "$in": ids } }).await.map_err(map_err)?;
        }
        Ok(())
    }

    async fn clear_current_records(&self) -> Result<(), StoreError> {
        self.coll(CONSENSUS).delete_many(doc! {}).await.map_err(map_err)?;
        self.coll(CONFLICT_QUEUE).delete_many(doc! {}).await.map_err(map_err)?;
        Ok(())
    }
}
