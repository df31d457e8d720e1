//! The driven side: the store adapters behind the store ports (`crate::ports`: one
//! trait per role; MongoDB and embedded redb implement them all) and the one contract
//! suite every store must pass.

pub mod contract;
pub mod embedded;
pub mod feed_files;
pub mod mongo;
pub mod read_cache;

use crate::ports::{StoreError, Stores};
use std::sync::Arc;

/// Connects the MongoDB store (`vex_*` collections in database `db`): every role.
pub async fn connect_mongo(uri: &str, db: &str) -> Result<Stores, StoreError> {
    Ok(Stores::of(Arc::new(mongo::MongoStore::connect(uri, db).await?)))
}
