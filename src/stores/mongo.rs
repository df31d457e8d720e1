//! MongoDB adapter of [`ConsensusStore`] (official `mongodb` driver v3), tested against
//! FerretDB v1 (MongoDB wire protocol, no transactions, no client-level bulkWrite).
//!
//! Invariants:
//! - Every write is an idempotent upsert/insert keyed by a deterministic `_id`, so a
//!   replay after a crash changes nothing; no write needs a transaction.
//! - `put_records` writes, per changed record, the history entry, then the conflict
//!   queue entry, and the current record LAST: the stored `consensus_digest` is the
//!   commit marker, so a crash between the steps is repaired by the replay.
//! - A consensus record is stored as its canonical JSON string (`record_json`) plus its
//!   `confidence` as a BSON double; reading parses the string (u64 ppm exact) and takes
//!   `confidence` from the double (exact bits), so `compute_digest()` after a round trip
//!   equals the stored `consensus_digest`, which `get_record`/`list_records` check.
//!   Observations are stored the same way (`observation_json`, canonical) beside the
//!   fields queries use (tenant, package, artifact, vulnerability, status, source
//!   topic/partition/offset). Strings, not nested documents, also because FerretDB v1
//!   (SQLite) scans and decodes every document of a collection for any filter but an
//!   `_id` equality. For the same reason `observations_for_package` reads the package's
//!   id list from `vex_package_observations` (`_id` = SHA-256 of tenant \0 package,
//!   `$addToSet`, written after the observations) and then each observation by `_id`,
//!   instead of scanning `vex_observations` (whose (tenant, package) index MongoDB uses
//!   but FerretDB v1 does not).
//! - Connection failures and timeouts are [`StoreError::Unavailable`] (retriable);
//!   everything else is [`StoreError::Rejected`].

use crate::domain::consensus::{ConsensusRecord, PairKey};
use crate::domain::model::Observation;
use crate::ports::{pair_id, ConsensusStore, ExportJobRecord, StoreError, VerificationRecord};
use futures::{StreamExt, TryStreamExt};
use mongodb::bson::{doc, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::collections::HashMap;
use std::time::Duration;

/// Collection names (also used by the integration tests and operators).
pub const OBSERVATIONS: &str = "vex_observations";
pub const CONSENSUS: &str = "vex_consensus";
pub const HISTORY: &str = "vex_consensus_history";
pub const CONFLICT_QUEUE: &str = "vex_conflict_queue";
pub const DSSE_VERIFICATIONS: &str = "vex_dsse_verifications";
pub const EXPORT_JOBS: &str = "vex_export_jobs";
/// Per (tenant, package): the ids of its observations (`_id` = [`package_id`]). Lets
/// `observations_for_package` use `_id` lookups only (see the module doc).
pub const PACKAGE_INDEX: &str = "vex_package_observations";

/// How long the driver waits for a reachable server before an operation fails
/// (short, so a stopped server is noticed quickly and retried by the caller).
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Ids per `$in` query and documents per `insert_many`.
const CHUNK: usize = 500;
/// Concurrent single-document writes.
const WRITE_CONCURRENCY: usize = 16;

/// MongoDB error codes that mean "the server is going away or busy": retriable.
const RETRIABLE_CODES: &[i32] = &[6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436];
const DUPLICATE_KEY: i32 = 11000;

/// A [`ConsensusStore`] on a MongoDB-wire server. Cheap to clone (the driver's client is
/// a shared pool).
#[derive(Clone, Debug)]
pub struct MongoStore {
    db: Database,
}

impl MongoStore {
    /// Connects to `uri` and uses database `db`. Does not wait for the server: the first
    /// operation (e.g. [`ConsensusStore::init`]) fails with `Unavailable` if it is down.
    pub async fn connect(uri: &str, db: &str) -> Result<MongoStore, StoreError> {
        let mut options = ClientOptions::parse(uri).await.map_err(map_err)?;
        if options.server_selection_timeout.is_none() {
            options.server_selection_timeout = Some(SERVER_SELECTION_TIMEOUT);
        }
        if options.connect_timeout.is_none() {
            options.connect_timeout = Some(CONNECT_TIMEOUT);
        }
        if options.app_name.is_none() {
            options.app_name = Some("vex-lens".to_string());
        }
        // FerretDB v1 has no retryable-write support worth relying on; our writes are
        // idempotent and the caller retries `Unavailable`.
        options.retry_writes = Some(false);
        let client = Client::with_options(options).map_err(map_err)?;
        Ok(MongoStore { db: client.database(db) })
    }

    /// The database this store writes to (tests read collections directly).
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn coll(&self, name: &str) -> Collection<Document> {
        self.db.collection::<Document>(name)
    }

    /// Current digests of the given pair ids. One `_id` lookup each (concurrently):
    /// FerretDB v1 pushes only `_id` equality down to SQLite; `$in` scans the collection.
    async fn stored_digests(&self, ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        let mut lookups = Vec::with_capacity(ids.len());
        for id in ids {
            let coll = self.coll(CONSENSUS);
            let id = id.clone();
            lookups.push(async move {
                let d = coll
                    .find_one(doc! { "_id": &id })
                    .projection(doc! { "consensus_digest": 1 })
                    .await
                    .map_err(map_err)?;
                Ok::<_, StoreError>(d.and_then(|d| d.get_str("consensus_digest").ok().map(|s| (id, s.to_string()))))
            });
        }
        let found: Vec<Option<(String, String)>> =
            futures::stream::iter(lookups).buffer_unordered(WRITE_CONCURRENCY).try_collect().await?;
        Ok(found.into_iter().flatten().collect())
    }

    /// Inserts documents, ignoring those whose `_id` already exists (idempotent; the
    /// first write wins).
    async fn insert_ignoring_duplicates(&self, name: &str, docs: Vec<Document>) -> Result<(), StoreError> {
        for chunk in docs.chunks(CHUNK) {
            match self.coll(name).insert_many(chunk.to_vec()).ordered(false).await {
                Ok(_) => {}
                Err(e) if only_duplicate_keys(&e) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(())
    }
}

/// Whether an insert failed only because some documents already existed.
fn only_duplicate_keys(e: &MongoError) -> bool {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(m) => {
            m.write_concern_error.is_none()
                && m.write_errors.as_ref().is_some_and(|w| w.iter().all(|we| we.code == DUPLICATE_KEY))
        }
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == DUPLICATE_KEY,
        _ => false,
    }
}

/// Maps a driver error to a store error: reachability and timeouts are retriable.
pub fn map_err(e: MongoError) -> StoreError {
    let retriable = match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. }
        | ErrorKind::DnsResolve { .. }
        | ErrorKind::Shutdown => true,
        ErrorKind::Command(c) => RETRIABLE_CODES.contains(&c.code),
        ErrorKind::Write(WriteFailure::WriteConcernError(_)) => true,
        ErrorKind::InsertMany(m) => m.write_concern_error.is_some() && m.write_errors.is_none(),
        _ => e.contains_label("RetryableWriteError") || e.contains_label("TransientTransactionError"),
    };
    if retriable {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Rejected(e.to_string())
    }
}

fn rejected<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Rejected(format!("{what}: {e}"))
}

/// The `vex_observations` document of an observation.
fn observation_doc(o: &Observation) -> Result<Document, StoreError> {
    let json = crate::domain::canonical::to_string(o).map_err(rejected("encoding observation"))?;
    let mut d = doc! {
        "_id": &o.id,
        "tenant": &o.tenant,
        "package": &o.package,
        "artifact": &o.artifact,
        "vulnerability": &o.vulnerability,
        "status": o.status.as_str(),
        "observation_json": json,
    };
    if let Some(issuer) = &o.issuer {
        d.insert("issuer", issuer);
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

/// `_id` of a package in [`PACKAGE_INDEX`]: SHA-256 hex of `tenant \0 package`.
pub fn package_id(tenant: &str, package: &str) -> String {
    crate::domain::canonical::sha256_hex(format!("{tenant}\u{0}{package}").as_bytes())
}

/// Splits `kafka:<topic>/<partition>@<offset>`.
fn parse_kafka_source(s: &str) -> Option<(String, i32, i64)> {
    let rest = s.strip_prefix("kafka:")?;
    let (topic_part, offset) = rest.rsplit_once('@')?;
    let (topic, partition) = topic_part.rsplit_once('/')?;
    Some((topic.to_string(), partition.parse().ok()?, offset.parse().ok()?))
}

/// The `vex_consensus` document of a record.
fn record_doc(id: &str, r: &ConsensusRecord, changed_at_ms: i64) -> Document {
    doc! {
        "_id": id,
        "tenant": &r.tenant,
        "artifact": &r.artifact,
        "package": &r.package,
        "vulnerability": &r.vulnerability,
        "status": r.status.as_str(),
        "confidence": r.confidence,
        "conflicts": r.conflicts.len() as i64,
        "consensus_digest": &r.consensus_digest,
        "changed_at_ms": changed_at_ms,
        "record_json": r.to_canonical_json(),
    }
}

/// Reads a record back from its `vex_consensus` (or history) document and checks that
/// its digest recomputes.
fn record_from_doc(d: &Document) -> Result<ConsensusRecord, StoreError> {
    let json = d.get_str("record_json").map_err(rejected("stored record"))?;
    let mut r: ConsensusRecord = serde_json::from_str(json).map_err(rejected("decoding stored record"))?;
    if let Ok(c) = d.get_f64("confidence") {
        r.confidence = c;
    }
    let digest = r.compute_digest();
    if digest != r.consensus_digest {
        return Err(StoreError::Rejected(format!(
            "stored record {} does not match its digest ({} != {})",
            d.get_str("_id").unwrap_or("?"),
            digest,
            r.consensus_digest
        )));
    }
    Ok(r)
}

/// Creates the missing indexes one per command: FerretDB v1.24 drops the connection when
/// one `createIndexes` names several indexes that already exist.
async fn create_indexes(coll: Collection<Document>, specs: Vec<(Document, &str)>) -> Result<(), StoreError> {
    let existing = match coll.list_index_names().await {
        Ok(names) => names,
        Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 26) => Vec::new(),
        Err(e) => return Err(map_err(e)),
    };
    for (keys, name) in specs {
        if existing.iter().any(|n| n == name) {
            continue;
        }
        let model =
            IndexModel::builder().keys(keys).options(IndexOptions::builder().name(name.to_string()).build()).build();
        coll.create_index(model).await.map_err(map_err)?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl ConsensusStore for MongoStore {
    async fn init(&self) -> Result<(), StoreError> {
        create_indexes(self.coll(OBSERVATIONS), vec![(doc! { "tenant": 1, "package": 1 }, "tenant_package")]).await?;
        create_indexes(
            self.coll(CONSENSUS),
            vec![
                (doc! { "tenant": 1, "changed_at_ms": 1 }, "tenant_changed_at"),
                (doc! { "artifact": 1, "vulnerability": 1 }, "artifact_vulnerability"),
            ],
        )
        .await?;
        create_indexes(self.coll(HISTORY), vec![(doc! { "pair_id": 1 }, "pair_id")]).await?;
        // Make sure the remaining collections exist (creating an existing one is an error
        // we ignore; FerretDB and MongoDB both report code 48 NamespaceExists).
        for name in [CONFLICT_QUEUE, DSSE_VERIFICATIONS, PACKAGE_INDEX, EXPORT_JOBS] {
            match self.db.create_collection(name).await {
                Ok(()) => {}
                Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 48) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await.map_err(map_err)?;
        Ok(())
    }

    async fn put_observations(&self, observations: &[Observation]) -> Result<(), StoreError> {
        if observations.is_empty() {
            return Ok(());
        }
        let docs = observations.iter().map(observation_doc).collect::<Result<Vec<_>, _>>()?;
        self.insert_ignoring_duplicates(OBSERVATIONS, docs).await?;
        // Then the package index (idempotent: $addToSet).
        let mut by_package: HashMap<(&str, &str), Vec<&str>> = HashMap::new();
        for o in observations {
            by_package.entry((o.tenant.as_str(), o.package.as_str())).or_default().push(o.id.as_str());
        }
        let mut updates = Vec::with_capacity(by_package.len());
        for ((tenant, package), ids) in by_package {
            let index = self.coll(PACKAGE_INDEX);
            let id = package_id(tenant, package);
            let update = doc! {
                "$setOnInsert": { "tenant": tenant, "package": package },
                "$addToSet": { "ids": { "$each": ids } },
            };
            updates.push(async move {
                index.update_one(doc! { "_id": id }, update).upsert(true).await.map_err(map_err).map(|_| ())
            });
        }
        futures::stream::iter(updates).buffer_unordered(WRITE_CONCURRENCY).try_collect::<Vec<()>>().await?;
        Ok(())
    }

    async fn observations_for_package(&self, tenant: &str, package: &str) -> Result<Vec<Observation>, StoreError> {
        let index =
            self.coll(PACKAGE_INDEX).find_one(doc! { "_id": package_id(tenant, package) }).await.map_err(map_err)?;
        let ids: Vec<String> = match index {
            None => return Ok(Vec::new()),
            Some(d) => d
                .get_array("ids")
                .map_err(rejected("stored package index"))?
                .iter()
                .filter_map(|b| b.as_str().map(str::to_string))
                .collect(),
        };
        let mut lookups = Vec::with_capacity(ids.len());
        for id in ids {
            let coll = self.coll(OBSERVATIONS);
            lookups.push(async move {
                let d = coll
                    .find_one(doc! { "_id": &id })
                    .projection(doc! { "observation_json": 1 })
                    .await
                    .map_err(map_err)?
                    .ok_or_else(|| StoreError::Rejected(format!("indexed observation {id} is missing")))?;
                let json = d.get_str("observation_json").map_err(rejected("stored observation"))?;
                serde_json::from_str::<Observation>(json).map_err(rejected("decoding stored observation"))
            });
        }
        let mut out: Vec<Observation> =
            futures::stream::iter(lookups).buffer_unordered(WRITE_CONCURRENCY).try_collect().await?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn put_records(&self, records: &[ConsensusRecord], changed_at_ms: i64) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        // The last record of a pair wins if a batch names a pair twice.
        let mut by_id: HashMap<String, &ConsensusRecord> = HashMap::with_capacity(records.len());
        let mut order = Vec::with_capacity(records.len());
        for r in records {
            let id = pair_id(&r.pair());
            if by_id.insert(id.clone(), r).is_none() {
                order.push(id);
            }
        }
        let stored = self.stored_digests(&order).await?;
        let changed: Vec<(String, &ConsensusRecord)> = order
            .into_iter()
            .filter_map(|id| {
                let r = by_id[&id];
                (stored.get(&id) != Some(&r.consensus_digest)).then_some((id, r))
            })
            .collect();
        if changed.is_empty() {
            return Ok(());
        }

        // 1. history (insert-only, idempotent by `<pair_id>:<digest>`)
        let history: Vec<Document> = changed
            .iter()
            .map(|(id, r)| {
                let mut d = record_doc(id, r, changed_at_ms);
                d.insert("_id", format!("{id}:{}", r.consensus_digest));
                d.insert("pair_id", id.as_str());
                d
            })
            .collect();
        self.insert_ignoring_duplicates(HISTORY, history).await?;

        // 2. conflict queue: open conflicts upserted, resolved ones deleted
        let resolved: Vec<String> =
            changed.iter().filter(|(_, r)| r.conflicts.is_empty()).map(|(id, _)| id.clone()).collect();
        let mut deletes = Vec::with_capacity(resolved.len());
        for id in resolved {
            let queue = self.coll(CONFLICT_QUEUE);
            deletes.push(async move { queue.delete_one(doc! { "_id": id }).await.map_err(map_err).map(|_| ()) });
        }
        futures::stream::iter(deletes).buffer_unordered(WRITE_CONCURRENCY).try_collect::<Vec<()>>().await?;
        let mut open = Vec::new();
        for (id, r) in changed.iter().filter(|(_, r)| !r.conflicts.is_empty()) {
            let conflicts = mongodb::bson::to_bson(&r.conflicts).map_err(rejected("encoding conflicts"))?;
            let d = doc! {
                "_id": id.as_str(),
                "tenant": &r.tenant,
                "artifact": &r.artifact,
                "package": &r.package,
                "vulnerability": &r.vulnerability,
                "status": r.status.as_str(),
                "conflicts": conflicts,
                "consensus_digest": &r.consensus_digest,
                "changed_at_ms": changed_at_ms,
            };
            let queue = self.coll(CONFLICT_QUEUE);
            let id = id.clone();
            open.push(async move {
                queue.replace_one(doc! { "_id": id }, d).upsert(true).await.map_err(map_err).map(|_| ())
            });
        }
        futures::stream::iter(open).buffer_unordered(WRITE_CONCURRENCY).try_collect::<Vec<()>>().await?;

        // 3. the current record (commit marker)
        let mut current = Vec::with_capacity(changed.len());
        for (id, r) in &changed {
            let d = record_doc(id, r, changed_at_ms);
            let consensus = self.coll(CONSENSUS);
            let id = id.clone();
            current.push(async move {
                consensus.replace_one(doc! { "_id": id }, d).upsert(true).await.map_err(map_err).map(|_| ())
            });
        }
        futures::stream::iter(current).buffer_unordered(WRITE_CONCURRENCY).try_collect::<Vec<()>>().await?;
        Ok(())
    }

    async fn get_record(&self, pair: &PairKey) -> Result<Option<ConsensusRecord>, StoreError> {
        let d = self.coll(CONSENSUS).find_one(doc! { "_id": pair_id(pair) }).await.map_err(map_err)?;
        d.as_ref().map(record_from_doc).transpose()
    }

    async fn list_records(
        &self,
        tenant: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<ConsensusRecord>, StoreError> {
        let mut filter = Document::new();
        if let Some(t) = tenant {
            filter.insert("tenant", t);
        }
        if let Some(s) = since_ms {
            filter.insert("changed_at_ms", doc! { "$gte": s });
        }
        let mut cursor = self.coll(CONSENSUS).find(filter).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            out.push(record_from_doc(&d)?);
        }
        out.sort_by(|a, b| {
            (a.artifact.as_bytes(), a.vulnerability.as_bytes(), a.tenant.as_bytes()).cmp(&(
                b.artifact.as_bytes(),
                b.vulnerability.as_bytes(),
                b.tenant.as_bytes(),
            ))
        });
        Ok(out)
    }

    async fn conflict_queue_depth(&self) -> Result<u64, StoreError> {
        self.coll(CONFLICT_QUEUE).count_documents(doc! {}).await.map_err(map_err)
    }

    async fn put_verification(&self, v: &VerificationRecord) -> Result<(), StoreError> {
        self.replace_by_id(DSSE_VERIFICATIONS, &v.envelope_digest, v, "encoding verification").await
    }

    async fn put_export_job(&self, job: &ExportJobRecord) -> Result<(), StoreError> {
        self.replace_by_id(EXPORT_JOBS, &job.job_id, job, "encoding export job").await
    }
}

impl MongoStore {
    /// Upserts `value` (as a BSON document with `_id` = `id`) into `collection`.
    async fn replace_by_id<T: serde::Serialize>(
        &self,
        collection: &str,
        id: &str,
        value: &T,
        what: &'static str,
    ) -> Result<(), StoreError> {
        let mut d = mongodb::bson::to_document(value).map_err(rejected(what))?;
        d.insert("_id", id);
        self.coll(collection).replace_one(doc! { "_id": id }, d).upsert(true).await.map_err(map_err)?;
        Ok(())
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
