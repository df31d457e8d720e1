//! The conflict-queue role on MongoDB (`vex_conflict_queue`): reads of the queue that
//! `put_records` (`records`) keeps.

use super::{map_err, MongoStore, CONFLICT_QUEUE};
use crate::ports::{ConflictQueue, StoreError};
use futures::TryStreamExt;
use mongodb::bson::doc;

#[async_trait::async_trait]
impl ConflictQueue for MongoStore {
    async fn conflict_queue_depth(&self) -> Result<u64, StoreError> {
        self.coll(CONFLICT_QUEUE).count_documents(doc! {}).await.map_err(map_err)
    }

    async fn conflict_queue_depths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let pipeline = vec![doc! { "$group": { "_id": "$tenant", "n": { "$sum": 1 } } }];
        let mut cursor = self.coll(CONFLICT_QUEUE).aggregate(pipeline).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let tenant = d.get_str("_id").unwrap_or_default().to_string();
            let n = match d.get("n") {
                Some(mongodb::bson::Bson::Int32(n)) => *n as u64,
                Some(mongodb::bson::Bson::Int64(n)) => *n as u64,
                Some(mongodb::bson::Bson::Double(n)) => *n as u64,
                _ => 0,
            };
            out.push((tenant, n));
        }
        out.sort();
        Ok(out)
    }
}
