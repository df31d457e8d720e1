//! Adapters: the real (Kafka, MongoDB) and embedded (redb, files/stdin) implementations
//! of the ports, and the port contract suites every adapter must pass.

pub mod contract;
pub mod embedded;
pub mod kafka;
pub mod mongo;

use crate::ports::{ConsensusStore, StoreError};
use std::sync::Arc;

/// Connects the MongoDB store (`vex_*` collections in database `db`).
pub async fn connect_mongo(uri: &str, db: &str) -> Result<Arc<dyn ConsensusStore>, StoreError> {
    Ok(Arc::new(mongo::MongoStore::connect(uri, db).await?))
}
