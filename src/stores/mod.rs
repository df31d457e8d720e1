//! The driven side: stores behind the [`crate::ports::ConsensusStore`] port (MongoDB,
//! embedded redb) and the one contract suite every store must pass.

pub mod contract;
pub mod embedded;
pub mod mongo;
pub mod read_cache;

use crate::ports::{ConsensusStore, StoreError};
use std::sync::Arc;

/// Connects the MongoDB store (`vex_*` collections in database `db`).
pub async fn connect_mongo(uri: &str, db: &str) -> Result<Arc<dyn ConsensusStore>, StoreError> {
    Ok(Arc::new(mongo::MongoStore::connect(uri, db).await?))
}
