//! MongoDB adapter of every store role ([`crate::ports::Store`]; official `mongodb`
//! driver v3), written for MongoDB 7+ (a standalone server: no transactions, no change
//! streams, no client-level `bulkWrite`, which needs 8.0) and tested against SecantusDB
//! (a MongoDB-wire server). One module per role: `observations`, `ledger` (document
//! versions), `records` (current
//! records, history and the conflict-queue writes), `changes` (the change stream),
//! `conflicts`, `trust`, `export_jobs`, `verifications`, `schema` (the schema version and
//! the upgrade's bulk writes); this module holds the
//! connection, the batched write commands and the error mapping they share.
//!
//! Invariants:
//! - Every write is an idempotent upsert/insert keyed by a deterministic `_id`, so a
//!   replay after a crash changes nothing; no write needs a transaction.
//! - Writes are batched: observations and history entries with unordered `insert_many`
//!   (duplicates ignored), upserts and deletes as one `update`/`delete` command of at
//!   most [`BATCH`] statements and [`BATCH_BYTES`] (unordered), current digests read with
//!   one `$in` query per batch. Reads use secondary indexes created by `init`
//!   (`vex_observations` on tenant+package, history on pair+time, conflict queue on
//!   tenant+reason, consensus on tenant+time, tenant+artifact+vulnerability and
//!   tenant+package+artifact); no document grows without bound but a document's ledger
//!   entry (one per VEX document, its versions; 16 MiB at most, see `ledger`).
//! - Connection failures and timeouts are [`StoreError::Unavailable`] (retriable); the
//!   server's `InternalError` (code 1) is [`StoreError::Internal`] (retried a few times);
//!   everything else is [`StoreError::Rejected`].

mod changes;
mod conflicts;
mod export_jobs;
mod ledger;
mod observations;
mod records;
mod schema;
mod trust;
mod verifications;

pub use changes::SEQUENCE_PER_CALL;

use crate::ports::{StoreAdmin, StoreError};
use mongodb::bson::{doc, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::collections::HashSet;
use std::time::Duration;

/// Collection names (also used by the integration tests and operators).
pub const OBSERVATIONS: &str = "vex_observations";
/// The document ledger: one document per VEX document, its versions inside
/// (`crate::ports::DocumentLedger`).
pub const DOCUMENT_LEDGER: &str = "vex_document_ledger";
/// The ledger's earlier layout, one document per version: moved into
/// [`DOCUMENT_LEDGER`] and dropped by `init`.
pub const LEGACY_DOCUMENT_VERSIONS: &str = "vex_document_versions";
pub const CONSENSUS: &str = "vex_consensus";
pub const HISTORY: &str = "vex_consensus_history";
pub const CONFLICT_QUEUE: &str = "vex_conflict_queue";
pub const DSSE_VERIFICATIONS: &str = "vex_dsse_verifications";
pub const EXPORT_JOBS: &str = "vex_export_jobs";
/// Per-tenant trust settings (`_id` = tenant, `epoch`, `trust_json`).
pub const TRUST_POLICIES: &str = "vex_trust_policies";
/// Audited trust changes (`_id` = `tenant:epoch`; who, when, before, after).
pub const TRUST_AUDIT: &str = "vex_trust_audit";
/// The change stream: one document per position (`_id` `<tenant>:<position, 20 digits>`).
pub const CHANGES: &str = "vex_consensus_changes";
/// One-time migrations done (`_id`: the migration) and the schema version
/// (`_id` `schema_version`).
pub const META: &str = "vex_meta";

/// The secondary indexes `init` creates on each collection (the `_id` index is the
/// document's own key and not counted): a document inserted or deleted writes (removes)
/// one entry in each (`vex_store_writes_total{store="mongodb",kind="index_entry"}`).
/// `tests/it_store_writes.rs` checks this list against the server's `listIndexes`.
pub const SECONDARY_INDEXES: &[(&str, &[&str])] = &[
    (OBSERVATIONS, &["tenant_package"]),
    (CONSENSUS, &["tenant_changed_at", "tenant_artifact_vulnerability", "tenant_package_artifact"]),
    (HISTORY, &["pair_changed_at", "tenant_stream_pending"]),
    (CHANGES, &["history_id_unique", "tenant_seq"]),
    (CONFLICT_QUEUE, &["tenant_reason"]),
    (EXPORT_JOBS, &["tenant_started_at"]),
    (TRUST_AUDIT, &["tenant_epoch"]),
];

/// The number of secondary indexes of `collection` ([`SECONDARY_INDEXES`]).
fn secondary_indexes(collection: &str) -> u64 {
    SECONDARY_INDEXES.iter().find(|(c, _)| *c == collection).map_or(0, |(_, i)| i.len() as u64)
}

/// Counts what one write wrote to `collection`: `whole` documents inserted or deleted
/// (each with an entry in every secondary index) and `modified` documents changed in
/// place, each changing `touched` index entries (the indexes whose keys the update can
/// change).
fn count_writes(collection: &str, whole: u64, modified: u64, touched: u64) {
    crate::telemetry::events::StoreWrites {
        store: "mongodb",
        collection,
        documents: whole + modified,
        index_entries: whole * secondary_indexes(collection) + modified * touched,
    }
    .emit();
}

/// What the reply of an `insert`, `update` or `delete` command says was written:
/// (documents inserted, upserted or deleted; documents modified in place).
fn reply_counts(command: &str, reply: &Document) -> (u64, u64) {
    let n = |k: &str| int_field(reply, k).max(0) as u64;
    match command {
        "update" => (reply.get_array("upserted").map_or(0, |u| u.len() as u64), n("nModified")),
        _ => (n("n"), 0),
    }
}

/// How long the driver waits for a reachable server before an operation fails
/// (short, so a stopped server is noticed quickly and retried by the caller).
pub const SERVER_SELECTION_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most statements per `update`/`delete` command, ids per `$in` query.
pub const BATCH: usize = 500;
/// Most estimated bytes of documents per `update` command (MongoDB's limit for one
/// command is 16 MiB).
pub const BATCH_BYTES: usize = 8 << 20;

/// MongoDB error codes that mean "the server is going away or busy": retriable.
const RETRIABLE_CODES: &[i32] = &[6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436];
const DUPLICATE_KEY: i32 = 11000;
const NAMESPACE_NOT_FOUND: i32 = 26;
/// MongoDB's `InternalError`: retried a few times ([`StoreError::Internal`]).
const INTERNAL_ERROR: i32 = 1;

/// Every store role on a MongoDB-wire server. Cheap to clone (the driver's client is
/// a shared pool).
#[derive(Clone, Debug)]
pub struct MongoStore {
    db: Database,
}

impl MongoStore {
    /// Connects to `uri` and uses database `db`. Does not wait for the server: the first
    /// operation (e.g. [`StoreAdmin::init`]) fails with `Unavailable` if it is down.
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
        // Our writes are idempotent and the caller retries `Unavailable` with backoff; the
        // `update`/`delete` commands we run are not retried by the driver anyway.
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

    /// Runs `update` statements (each `(statement, estimated bytes)`) as unordered
    /// commands of at most [`BATCH`] statements and [`BATCH_BYTES`]; returns the indexes
    /// of the statements that lost to a newer stored document (a duplicate key: the
    /// filter did not match the stored document, so the upsert tried to insert its `_id`).
    /// `touched`: the secondary indexes whose keys an update of a stored document can
    /// change (counted per document modified).
    async fn conditional_update(
        &self,
        name: &str,
        statements: Vec<(Document, usize)>,
        touched: u64,
    ) -> Result<HashSet<usize>, StoreError> {
        self.run_batched(name, "update", "updates", statements, touched).await
    }

    /// Inserts documents (each `(document, estimated bytes)`) as unordered `insert`
    /// commands of at most [`BATCH`] documents and [`BATCH_BYTES`]; returns the indexes of
    /// the documents whose `_id` already existed (duplicate key: nothing was written).
    async fn insert_new(&self, name: &str, documents: Vec<(Document, usize)>) -> Result<HashSet<usize>, StoreError> {
        self.run_batched(name, "insert", "documents", documents, 0).await
    }

    /// Runs the write command `command` on `name` with `items` (each `(item, estimated
    /// bytes)`) under `field`, unordered, in batches of at most [`BATCH`] items and
    /// [`BATCH_BYTES`]; returns the indexes of the items that met a duplicate key.
    async fn run_batched(
        &self,
        name: &str,
        command: &str,
        field: &str,
        items: Vec<(Document, usize)>,
        touched: u64,
    ) -> Result<HashSet<usize>, StoreError> {
        let mut duplicates = HashSet::new();
        let mut base = 0usize;
        for batch in batches(items.into_iter()) {
            let n = batch.len();
            let mut cmd = doc! { command: name };
            cmd.insert(field, batch);
            cmd.insert("ordered", false);
            let reply = self.db.run_command(cmd).await.map_err(map_err)?;
            let (whole, modified) = reply_counts(command, &reply);
            count_writes(name, whole, modified, touched);
            for i in check_conditional_reply(name, &reply)? {
                duplicates.insert(base + i);
            }
            base += n;
        }
        Ok(duplicates)
    }

    /// Inserts documents, ignoring those whose `_id` already exists (idempotent; the
    /// first write wins).
    async fn insert_ignoring_duplicates(&self, name: &str, docs: Vec<Document>) -> Result<(), StoreError> {
        if docs.is_empty() {
            return Ok(());
        }
        // The driver splits the documents into messages the server accepts.
        let n = docs.len() as u64;
        match self.coll(name).insert_many(docs).ordered(false).await {
            Ok(r) => {
                count_writes(name, r.inserted_ids.len() as u64, 0, 0);
                Ok(())
            }
            Err(e) if only_duplicate_keys(&e) => {
                count_writes(name, n.saturating_sub(write_error_count(&e)), 0, 0);
                Ok(())
            }
            Err(e) => Err(map_err(e)),
        }
    }

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
        let r = self.coll(collection).replace_one(doc! { "_id": id }, d).upsert(true).await.map_err(map_err)?;
        count_writes(collection, u64::from(r.upserted_id.is_some()), r.modified_count, secondary_indexes(collection));
        Ok(())
    }
}

/// An integer field (BSON int32, int64 or double), 0 when absent.
fn int_field(d: &Document, key: &str) -> i64 {
    match d.get(key) {
        Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
        Some(mongodb::bson::Bson::Int64(n)) => *n,
        Some(mongodb::bson::Bson::Double(n)) => *n as i64,
        _ => 0,
    }
}

/// Checks the reply of a conditional `update`: returns the indexes of statements that
/// lost (duplicate key); any other write error as [`check_write_reply`] does.
fn check_conditional_reply(collection: &str, reply: &Document) -> Result<Vec<usize>, StoreError> {
    let Ok(errors) = reply.get_array("writeErrors") else {
        return check_write_reply(collection, reply).map(|()| Vec::new());
    };
    let mut lost = Vec::new();
    let mut others = Vec::new();
    for e in errors {
        let Some(d) = e.as_document() else { continue };
        if d.get_i32("code").ok() == Some(DUPLICATE_KEY) {
            lost.push(int_field(d, "index") as usize);
        } else {
            others.push(e.clone());
        }
    }
    let mut rest = reply.clone();
    rest.insert("writeErrors", others);
    check_write_reply(collection, &rest)?;
    Ok(lost)
}

/// The documents an `insert_many` did not insert (its write errors).
fn write_error_count(e: &MongoError) -> u64 {
    match e.kind.as_ref() {
        ErrorKind::InsertMany(m) => m.write_errors.as_ref().map_or(0, |w| w.len() as u64),
        ErrorKind::Write(WriteFailure::WriteError(_)) => 1,
        _ => 0,
    }
}

/// Whether a command failed because its collection does not exist (`NamespaceNotFound`).
fn namespace_not_found(e: &MongoError) -> bool {
    matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == NAMESPACE_NOT_FOUND)
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

/// Splits `(statement, estimated bytes)` into batches of at most [`BATCH`] statements
/// and [`BATCH_BYTES`] (a statement larger than that goes alone).
fn batches(statements: impl Iterator<Item = (Document, usize)>) -> Vec<Vec<Document>> {
    let mut out = Vec::new();
    let (mut current, mut bytes) = (Vec::new(), 0usize);
    for (d, size) in statements {
        if !current.is_empty() && (current.len() >= BATCH || bytes + size > BATCH_BYTES) {
            out.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push(d);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Checks the reply of an `update`/`delete` command: a write concern error or a write
/// error with a retriable code is `Unavailable`, any other write error `Rejected`.
fn check_write_reply(collection: &str, reply: &Document) -> Result<(), StoreError> {
    if let Ok(wce) = reply.get_document("writeConcernError") {
        return Err(StoreError::Unavailable(format!("{collection}: write concern error: {wce}")));
    }
    let Ok(errors) = reply.get_array("writeErrors") else {
        return Ok(());
    };
    if errors.is_empty() {
        return Ok(());
    }
    let codes: Vec<i32> = errors.iter().filter_map(|e| e.as_document().and_then(|d| d.get_i32("code").ok())).collect();
    let first = errors.first().map(|e| e.to_string()).unwrap_or_default();
    let message = format!("{collection}: {} write error(s), first: {first}", errors.len());
    if !codes.is_empty() && codes.iter().all(|c| RETRIABLE_CODES.contains(c)) {
        Err(StoreError::Unavailable(message))
    } else if !codes.is_empty() && codes.iter().all(|c| RETRIABLE_CODES.contains(c) || *c == INTERNAL_ERROR) {
        Err(StoreError::Internal(message))
    } else {
        Err(StoreError::Rejected(message))
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
    let internal = matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == INTERNAL_ERROR);
    if retriable {
        StoreError::Unavailable(e.to_string())
    } else if internal {
        StoreError::Internal(e.to_string())
    } else {
        StoreError::Rejected(e.to_string())
    }
}

fn rejected<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> StoreError + '_ {
    move |e| StoreError::Rejected(format!("{what}: {e}"))
}

/// Drops the index `name` if the collection has it (an index this version no longer
/// reads, kept up to date by every write otherwise).
async fn drop_index_if_present(coll: Collection<Document>, name: &str) -> Result<(), StoreError> {
    match coll.list_index_names().await {
        Ok(names) if names.iter().any(|n| n == name) => coll.drop_index(name).await.map_err(map_err),
        Ok(_) => Ok(()),
        Err(e) if namespace_not_found(&e) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

/// Creates the missing indexes, one `createIndexes` per index (an existing index of the
/// same name is left alone).
async fn create_indexes(coll: Collection<Document>, specs: Vec<(Document, &str)>) -> Result<(), StoreError> {
    let existing = match coll.list_index_names().await {
        Ok(names) => names,
        Err(e) if namespace_not_found(&e) => Vec::new(),
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
impl StoreAdmin for MongoStore {
    async fn init(&self) -> Result<(), StoreError> {
        create_indexes(self.coll(OBSERVATIONS), vec![(doc! { "tenant": 1, "package": 1 }, "tenant_package")]).await?;
        create_indexes(self.coll(CONSENSUS), vec![(doc! { "tenant": 1, "changed_at_ms": 1 }, "tenant_changed_at")])
            .await?;
        // Every query of records names the tenant (`tenant_artifact_vulnerability` serves
        // them); the tenant-less index of earlier versions only cost each write.
        drop_index_if_present(self.coll(CONSENSUS), "artifact_vulnerability").await?;
        create_indexes(
            self.coll(HISTORY),
            vec![
                (doc! { "pair_id": 1, "changed_at_ms": 1 }, "pair_changed_at"),
                (doc! { "tenant": 1, "stream_seq": 1, "changed_at_ms": 1 }, "tenant_stream_pending"),
            ],
        )
        .await?;
        self.create_change_indexes().await?;
        create_indexes(self.coll(CONFLICT_QUEUE), vec![(doc! { "tenant": 1, "reasons": 1 }, "tenant_reason")]).await?;
        self.create_read_indexes().await?;
        self.create_export_job_indexes().await?;
        // Make sure the remaining collections exist (creating an existing one is an error
        // we ignore: code 48 NamespaceExists).
        create_indexes(self.coll(TRUST_AUDIT), vec![(doc! { "tenant": 1, "epoch": 1 }, "tenant_epoch")]).await?;
        for name in [DOCUMENT_LEDGER, DSSE_VERIFICATIONS, EXPORT_JOBS, TRUST_POLICIES, META] {
            match self.db.create_collection(name).await {
                Ok(()) => {}
                Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 48) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        self.migrate_document_versions().await?;
        self.backfill_stream().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await.map_err(map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_errors_map_to_retriable_internal_or_rejected() {
        let reply = |codes: &[i32]| {
            let errors: Vec<Document> =
                codes.iter().enumerate().map(|(i, c)| doc! { "index": i as i32, "code": *c, "errmsg": "x" }).collect();
            doc! { "n": 0, "writeErrors": errors, "ok": 1.0 }
        };
        assert!(check_write_reply("c", &doc! { "n": 1, "ok": 1.0 }).is_ok());
        assert!(matches!(check_write_reply("c", &reply(&[91])), Err(StoreError::Unavailable(_))));
        let internal = check_write_reply("c", &reply(&[1, 91]));
        assert!(matches!(internal, Err(StoreError::Internal(_))), "InternalError: {internal:?}");
        assert!(internal.unwrap_err().is_retriable(), "InternalError is retriable");
        assert!(matches!(check_write_reply("c", &reply(&[1, 121])), Err(StoreError::Rejected(_))));
        assert!(matches!(check_write_reply("c", &reply(&[11000])), Err(StoreError::Rejected(_))));
        let wce = doc! { "n": 0, "writeConcernError": { "code": 64, "errmsg": "x" }, "ok": 1.0 };
        assert!(matches!(check_write_reply("c", &wce), Err(StoreError::Unavailable(_))));
        assert_eq!(check_conditional_reply("c", &reply(&[11000, 11000])).unwrap(), vec![0, 1], "lost = duplicate key");
        assert!(matches!(check_conditional_reply("c", &reply(&[11000, 1])), Err(StoreError::Internal(_))));
    }
}
