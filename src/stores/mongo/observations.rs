//! The observations role on MongoDB (`vex_observations`).
//!
//! Invariants: an observation is inserted once by its id (a duplicate `_id` is ignored,
//! so the first provenance stays); it is stored as its canonical JSON
//! (`observation_json`) beside the fields queries use (tenant, package, artifact,
//! vulnerability, status, source topic/partition/offset), and read back from the JSON.

use super::map_err;
use super::{rejected, MongoStore, OBSERVATIONS};
use crate::domain::model::Observation;
use crate::ports::{ObservationStore, StoreError};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

/// The `vex_observations` document of an observation.
pub(super) fn observation_doc(o: &Observation) -> Result<Document, StoreError> {
    let json = crate::domain::canonical::to_string(o).map_err(rejected("encoding observation"))?;
    let mut d = doc! {
        "_id": &*o.id,
        "tenant": &*o.tenant,
        "package": &*o.package,
        "artifact": &*o.artifact,
        "vulnerability": &*o.vulnerability,
        "status": o.status.as_str(),
        "observation_json": json,
    };
    if let Some(issuer) = &o.issuer {
        d.insert("issuer", &**issuer);
    }
    if let Some(source) = &o.provenance.source {
        d.insert("source", source);
        if let Some((topic, partition, offset)) = parse_kafka_source(source) {
            d.insert("source_topic", topic);
            d.insert("source_partition", partition);
            d.insert("source_offset", offset);
        }
    }
    if let Some(ms) = o.provenance.received_at_ms {
        d.insert("received_at_ms", ms);
    }
    Ok(d)
}

/// Splits `kafka:<topic>/<partition>@<offset>`.
fn parse_kafka_source(s: &str) -> Option<(String, i32, i64)> {
    let rest = s.strip_prefix("kafka:")?;
    let (topic_part, offset) = rest.rsplit_once('@')?;
    let (topic, partition) = topic_part.rsplit_once('/')?;
    Some((topic.to_string(), partition.parse().ok()?, offset.parse().ok()?))
}

#[async_trait::async_trait]
impl ObservationStore for MongoStore {
    async fn put_observations(&self, observations: &[Observation]) -> Result<(), StoreError> {
        let docs = observations.iter().map(observation_doc).collect::<Result<Vec<_>, _>>()?;
        self.insert_ignoring_duplicates(OBSERVATIONS, docs).await
    }

    /// One `find` on the (tenant, package) index.
    async fn observations_for_package(&self, tenant: &str, package: &str) -> Result<Vec<Observation>, StoreError> {
        let mut cursor = self
            .coll(OBSERVATIONS)
            .find(doc! { "tenant": tenant, "package": package })
            .projection(doc! { "observation_json": 1 })
            .await
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let json = d.get_str("observation_json").map_err(rejected("stored observation"))?;
            out.push(serde_json::from_str::<Observation>(json).map_err(rejected("decoding stored observation"))?);
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One aggregation on the (tenant, package) index of `vex_observations`.
    async fn tenant_packages(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let pipeline = vec![doc! { "$match": { "tenant": tenant } }, doc! { "$group": { "_id": "$package" } }];
        let mut cursor = self.coll(OBSERVATIONS).aggregate(pipeline).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            out.push(d.get_str("_id").map_err(rejected("package of an observation"))?.to_string());
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kafka_source_is_split() {
        assert_eq!(parse_kafka_source("kafka:vex.observations/3@42"), Some(("vex.observations".into(), 3, 42)));
        assert_eq!(parse_kafka_source("kafka:a/b/c/0@1"), Some(("a/b/c".into(), 0, 1)));
        assert_eq!(parse_kafka_source("/tmp/x.json"), None);
        assert_eq!(parse_kafka_source("kafka:t/x@1"), None);
    }
}
