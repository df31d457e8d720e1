//! MongoDB adapter of every store role ([`crate::ports::Store`]) (official `mongodb` driver v3), written for
//! MongoDB 7+ (a standalone server: no transactions, no change streams, no client-level
//! `bulkWrite`, which needs 8.0) and tested against SecantusDB (a MongoDB-wire server).
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
//!   tenant+package+artifact); no document
//!   grows without bound.
//! - Current records are fenced: each carries its [`RecordVersion`] (`v_epoch`,
//!   `v_offset`, `v_count`, and `v_key`: one string that sorts like the version) and is
//!   written by an `update` whose filter matches only a stored version that is not newer
//!   (`{_id, v_key: {$lte: key}, consensus_digest: {$ne: digest}}`, upsert; `{_id, v_key:
//!   {$exists: false}}` over a record without a version, or none): a stored newer (or
//!   identical) record makes the upsert try to insert its `_id`, and that duplicate key
//!   error means "stored is newer: skip" (MongoDB 7+ and SecantusDB answer alike), so a
//!   late write of an instance that lost the package never replaces the new owner's
//!   record. No `$or` in these filters: SecantusDB scans the collection for one.
//! - `put_records` writes the current records first, then, for the writes that won, the
//!   history entries and the conflict queue (also version-conditional); a replay of the
//!   stored version re-inserts its history entry and re-applies its queue entry, so a
//!   crash between the steps is repaired by the replay.
//! - A consensus record is stored as its canonical JSON string (`record_json`, which
//!   holds only integers and strings); reading parses the string, so `compute_digest()`
//!   after a round trip equals the stored `consensus_digest`, which
//!   `get_record`/`list_records` check.
//!   Observations are stored the same way (`observation_json`, canonical) beside the
//!   fields queries use (tenant, package, artifact, vulnerability, status, source
//!   topic/partition/offset).
//! - The change stream (`vex_consensus_changes`) gives every history entry one position
//!   per tenant, after the entry is committed: history entries are written pending
//!   (`stream_seq: 0`); a reader of the stream sequences the pending ones (oldest first)
//!   by inserting `{_id: <tenant>:<n>, history_id}` with `n` = the last visible position
//!   + 1, then marking the entry. The `_id` makes each position taken once, the unique
//!   index on `history_id` each entry sequenced once, and `n` is only tried once `n - 1`
//!   is visible, so positions are dense and appear in order on any number of instances
//!   with no transaction and no change stream (a standalone server has neither).
//!   History written before the stream existed (no `stream_seq`) is made pending once by
//!   `init` (marker in `vex_meta`).
//! - Connection failures and timeouts are [`StoreError::Unavailable`] (retriable); the
//!   server's `InternalError` (code 1) is [`StoreError::Internal`] (retried a few times);
//!   everything else is [`StoreError::Rejected`].

use crate::domain::consensus::{ConsensusRecord, PairKey};
use crate::domain::model::Observation;
use crate::domain::trust::TenantTrust;
use crate::domain::version::{RecordVersion, VersionedRecord};
use crate::ports::{
    decide_write, pair_id, trust_audit_id, ChangeEvent, ConflictQueue, ExportJobRecord, ExportJobStore,
    ObservationStore, RecordQuery, RecordStore, StoreAdmin, StoreError, TimedRecord, TrustAudit, TrustStore,
    VerificationRecord, VerificationStore, WriteDecision,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::error::{Error as MongoError, ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Collection names (also used by the integration tests and operators).
pub const OBSERVATIONS: &str = "vex_observations";
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
/// One-time migrations done (`_id`: the migration).
pub const META: &str = "vex_meta";
/// The `vex_meta` id of the change stream's backfill of older history.
const STREAM_BACKFILL: &str = "history_stream_backfill";

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

    /// Stored version, digest and change time of the given pair ids: one `$in` query (on
    /// `_id`) per [`BATCH`]. A record written before versions existed has the lowest.
    async fn stored_versions(&self, ids: &[String]) -> Result<HashMap<String, StoredVersion>, StoreError> {
        let mut found = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(BATCH) {
            let mut cursor = self
                .coll(CONSENSUS)
                .find(doc! { "_id": { "$in": chunk } })
                .projection(
                    doc! { "consensus_digest": 1, "changed_at_ms": 1, "v_key": 1, "v_epoch": 1, "v_offset": 1, "v_count": 1 },
                )
                .await
                .map_err(map_err)?;
            while let Some(d) = cursor.try_next().await.map_err(map_err)? {
                if let (Ok(id), Ok(digest)) = (d.get_str("_id"), d.get_str("consensus_digest")) {
                    let versioned = d.contains_key("v_key");
                    let version = if versioned {
                        RecordVersion {
                            epoch: int_field(&d, "v_epoch").max(0) as u64,
                            offset: int_field(&d, "v_offset"),
                            observations: int_field(&d, "v_count").max(0) as u64,
                        }
                    } else {
                        RecordVersion::LOWEST
                    };
                    let changed_at_ms = int_field(&d, "changed_at_ms");
                    found.insert(
                        id.to_string(),
                        StoredVersion { version, versioned, digest: digest.to_string(), changed_at_ms },
                    );
                }
            }
        }
        Ok(found)
    }

    /// Runs `update` statements (each `(statement, estimated bytes)`) as unordered
    /// commands of at most [`BATCH`] statements and [`BATCH_BYTES`]; returns the indexes
    /// of the statements that lost to a newer stored document (a duplicate key: the
    /// filter did not match the stored document, so the upsert tried to insert its `_id`).
    async fn conditional_update(
        &self,
        name: &str,
        statements: Vec<(Document, usize)>,
    ) -> Result<HashSet<usize>, StoreError> {
        self.run_batched(name, "update", "updates", statements).await
    }

    /// Inserts documents (each `(document, estimated bytes)`) as unordered `insert`
    /// commands of at most [`BATCH`] documents and [`BATCH_BYTES`]; returns the indexes of
    /// the documents whose `_id` already existed (duplicate key: nothing was written).
    async fn insert_new(&self, name: &str, documents: Vec<(Document, usize)>) -> Result<HashSet<usize>, StoreError> {
        self.run_batched(name, "insert", "documents", documents).await
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
    ) -> Result<HashSet<usize>, StoreError> {
        let mut duplicates = HashSet::new();
        let mut base = 0usize;
        for batch in batches(items.into_iter()) {
            let n = batch.len();
            let mut cmd = doc! { command: name };
            cmd.insert(field, batch);
            cmd.insert("ordered", false);
            let reply = self.db.run_command(cmd).await.map_err(map_err)?;
            for i in check_conditional_reply(name, &reply)? {
                duplicates.insert(base + i);
            }
            base += n;
        }
        Ok(duplicates)
    }

    /// Deletes documents by `_id` unless they hold a newer version than the given one
    /// (two statements per id: a versioned document at most `v`, an unversioned one).
    async fn delete_unless_newer(&self, name: &str, ids: &[(String, RecordVersion)]) -> Result<(), StoreError> {
        for chunk in ids.chunks(BATCH / 2) {
            let deletes: Vec<Document> = chunk
                .iter()
                .flat_map(|(id, v)| {
                    [true, false].map(|versioned| doc! { "q": version_filter(id, *v, versioned), "limit": 1 })
                })
                .collect();
            let reply = self
                .db
                .run_command(doc! { "delete": name, "deletes": deletes, "ordered": false })
                .await
                .map_err(map_err)?;
            check_write_reply(name, &reply)?;
        }
        Ok(())
    }

    /// Inserts documents, ignoring those whose `_id` already exists (idempotent; the
    /// first write wins).
    /// History written before the change stream existed has no `stream_seq`: marks it
    /// pending (`0`), so the next reader of its tenant's stream sequences it (after the
    /// positions already given, oldest first) and a consumer that starts from 0 gets
    /// every change the store holds. Once per database (`vex_meta`), since the filter
    /// cannot use an index.
    async fn backfill_stream(&self) -> Result<(), StoreError> {
        let meta = self.coll(META);
        if meta.find_one(doc! { "_id": STREAM_BACKFILL }).await.map_err(map_err)?.is_some() {
            return Ok(());
        }
        let r = self
            .coll(HISTORY)
            .update_many(doc! { "stream_seq": { "$exists": false } }, doc! { "$set": { "stream_seq": 0_i64 } })
            .await
            .map_err(map_err)?;
        if r.modified_count > 0 {
            tracing::info!(
                event = "history_stream_backfill",
                entries = r.modified_count,
                "history written before the change stream existed is queued for the stream"
            );
        }
        match meta.insert_one(doc! { "_id": STREAM_BACKFILL }).await {
            Ok(_) => Ok(()),
            Err(e) if only_duplicate_keys(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }

    /// Copies the audit entry of `tenant`'s policy write at `epoch` to `vex_trust_audit`
    /// (idempotent by its `_id`), then sets the policy's `audit_written` if the policy is
    /// still at that epoch.
    async fn copy_audit(&self, tenant: &str, epoch: u64, entry: Document) -> Result<(), StoreError> {
        self.insert_ignoring_duplicates(TRUST_AUDIT, vec![entry]).await?;
        self.coll(TRUST_POLICIES)
            .update_one(doc! { "_id": tenant, "epoch": epoch as i64 }, doc! { "$set": { "audit_written": true } })
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn insert_ignoring_duplicates(&self, name: &str, docs: Vec<Document>) -> Result<(), StoreError> {
        if docs.is_empty() {
            return Ok(());
        }
        // The driver splits the documents into messages the server accepts.
        match self.coll(name).insert_many(docs).ordered(false).await {
            Ok(_) => Ok(()),
            Err(e) if only_duplicate_keys(&e) => Ok(()),
            Err(e) => Err(map_err(e)),
        }
    }
}

/// What a conditional write compares with.
struct StoredVersion {
    version: RecordVersion,
    /// Whether the document has a version (`v_key`).
    versioned: bool,
    digest: String,
    changed_at_ms: i64,
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

/// The version as one string that sorts (byte-wise, as MongoDB compares strings) like
/// [`RecordVersion`]: fixed-width hex of the epoch, the offset (sign bit flipped) and
/// the count.
fn version_key(v: RecordVersion) -> String {
    format!("{:016x}{:016x}{:016x}", v.epoch, (v.offset as u64) ^ (1 << 63), v.observations)
}

/// Stores a version in a document: `v_key` (compared by the filters) and, for people,
/// `v_epoch`, `v_offset`, `v_count`.
fn set_version(d: &mut Document, v: RecordVersion) {
    d.insert("v_key", version_key(v));
    d.insert("v_epoch", v.epoch as i64);
    d.insert("v_offset", v.offset);
    d.insert("v_count", v.observations as i64);
}

/// The filter of a conditional write: the document `_id` if its version is at most `v`
/// (`versioned`: the stored document has one), or if it has no version (`!versioned`: a
/// document written before versions existed, or none: an insert). Two filters rather
/// than one `$or`, because SecantusDB answers an `$or` beside `_id` with a collection scan
/// (MongoDB uses the `_id` index either way).
fn version_filter(id: &str, v: RecordVersion, versioned: bool) -> Document {
    if versioned {
        doc! { "_id": id, "v_key": { "$lte": version_key(v) } }
    } else {
        doc! { "_id": id, "v_key": { "$exists": false } }
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

/// The `vex_observations` document of an observation.
fn observation_doc(o: &Observation) -> Result<Document, StoreError> {
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

/// The `vex_consensus` document of a record.
fn record_doc(id: &str, r: &ConsensusRecord, changed_at_ms: i64) -> Result<Document, StoreError> {
    let reasons: std::collections::BTreeSet<&str> = r.conflicts.iter().map(|c| c.reason.as_str()).collect();
    Ok(doc! {
        "_id": id,
        "tenant": &r.tenant,
        "artifact": &r.artifact,
        "package": &r.package,
        "vulnerability": &r.vulnerability,
        "status": r.status.as_str(),
        "confidence_ppm": r.confidence_ppm as i64,
        "conflicts": r.conflicts.len() as i64,
        "conflict_reasons": reasons.into_iter().collect::<Vec<_>>(),
        "consensus_digest": &r.consensus_digest,
        "changed_at_ms": changed_at_ms,
        "record_json": r.to_canonical_json().map_err(rejected("encoding record"))?,
    })
}

/// A current record's document with its version, and its estimated size in a command.
fn versioned_record_doc(id: &str, v: &VersionedRecord, changed_at_ms: i64) -> Result<(Document, usize), StoreError> {
    let mut d = record_doc(id, &v.record, changed_at_ms)?;
    set_version(&mut d, v.version);
    let bytes = d.get_str("record_json").map_or(0, str::len) + 1024;
    Ok((d, bytes))
}

/// Reads a record back from its `vex_consensus` (or history) document and checks that
/// its digest recomputes.
fn record_from_doc(d: &Document) -> Result<ConsensusRecord, StoreError> {
    let json = d.get_str("record_json").map_err(rejected("stored record"))?;
    let r: ConsensusRecord = serde_json::from_str(json).map_err(rejected("decoding stored record"))?;
    let digest = r.compute_digest().map_err(rejected("digesting stored record"))?;
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

/// Reads an audit entry back (see `put_trust_policy`).
fn audit_from_doc(d: &Document) -> Result<TrustAudit, StoreError> {
    let text = |k: &str| d.get_str(k).map(str::to_string).map_err(rejected("stored trust audit"));
    let opt = |k: &str| d.get_str(k).ok().map(str::to_string);
    let trust = |k: &str| -> Result<TenantTrust, StoreError> {
        serde_json::from_str(d.get_str(k).map_err(rejected("stored trust audit"))?)
            .map_err(rejected("decoding trust audit"))
    };
    Ok(TrustAudit {
        tenant: text("tenant")?,
        epoch: d.get_i64("epoch").map_err(rejected("stored trust audit"))? as u64,
        at_ms: d.get_i64("at_ms").map_err(rejected("stored trust audit"))?,
        who: text("who")?,
        kind: text("kind")?.parse().map_err(rejected("stored trust audit"))?,
        issuer: opt("issuer"),
        reason: opt("reason"),
        before: trust("before_json")?,
        after: trust("after_json")?,
    })
}

/// Drops the index `name` if the collection has it (an index this version no longer
/// reads, kept up to date by every write otherwise).
async fn drop_index_if_present(coll: Collection<Document>, name: &str) -> Result<(), StoreError> {
    match coll.list_index_names().await {
        Ok(names) if names.iter().any(|n| n == name) => coll.drop_index(name).await.map_err(map_err),
        Ok(_) => Ok(()),
        Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 26) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

/// Creates the missing indexes, one `createIndexes` per index (an existing index of the
/// same name is left alone).
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
        // Make sure the remaining collections exist (creating an existing one is an error
        // we ignore: code 48 NamespaceExists).
        create_indexes(self.coll(TRUST_AUDIT), vec![(doc! { "tenant": 1, "epoch": 1 }, "tenant_epoch")]).await?;
        for name in [DSSE_VERIFICATIONS, EXPORT_JOBS, TRUST_POLICIES, META] {
            match self.db.create_collection(name).await {
                Ok(()) => {}
                Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 48) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        self.backfill_stream().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! { "ping": 1 }).await.map_err(map_err)?;
        Ok(())
    }
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

#[async_trait::async_trait]
impl RecordStore for MongoStore {
    /// Conditional writes ([`decide_write`] on the stored version and digest, read with
    /// one `$in` query per batch; the `update` filters re-check it on the server, so a
    /// write that raced a newer one loses there): the current records first, then, for
    /// the writes that won, their history entries and conflict-queue changes. A replay
    /// of the stored version re-inserts its history entry and re-applies its queue entry
    /// (idempotent), which repairs a crash between these steps.
    async fn put_records(&self, records: &[VersionedRecord], changed_at_ms: i64) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        // The last record of a pair wins if a batch names a pair twice.
        let mut by_id: HashMap<String, &VersionedRecord> = HashMap::with_capacity(records.len());
        let mut order = Vec::with_capacity(records.len());
        for r in records {
            let id = pair_id(&r.record.pair());
            if by_id.insert(id.clone(), r).is_none() {
                order.push(id);
            }
        }
        let mut stored = self.stored_versions(&order).await?;
        // (id, record, version, changed_at of the entry): written, or replayed as stored.
        let mut won: Vec<(String, &VersionedRecord, i64)> = Vec::new();
        let mut pending: Vec<String> = Vec::new();
        let mut raise: Vec<(String, RecordVersion, bool)> = Vec::new();
        for id in order {
            let v = by_id[&id];
            let s = stored.get(&id);
            match decide_write(s.map(|s| (s.version, s.digest.as_str())), v.version, &v.record.consensus_digest) {
                WriteDecision::Write => pending.push(id),
                WriteDecision::RaiseVersion => raise.push((id, v.version, s.is_some_and(|s| s.versioned))),
                WriteDecision::Unchanged => {
                    let at = s.map_or(changed_at_ms, |s| s.changed_at_ms);
                    won.push((id, v, at));
                }
                WriteDecision::Stale => {}
            }
        }
        // 1. the current records, each only over an older version (the commit marker). A
        //    pair with no stored record is inserted (an insert is several times cheaper
        //    than an upsert on SecantusDB and no dearer on MongoDB); one stored meanwhile
        //    (duplicate key) goes the conditional way like the rest. A statement that
        //    loses on the server (a newer or identical record is stored: duplicate key) is
        //    re-read and retried only if it would still win (a race between two writers of
        //    one pair).
        // Pairs whose record this call inserted: no conflict-queue entry can exist for
        // them (an entry is written only after its record), so none is deleted.
        let mut inserted: HashSet<String> = HashSet::new();
        for _ in 0..3 {
            if pending.is_empty() {
                break;
            }
            let (fresh, known): (Vec<String>, Vec<String>) = pending.drain(..).partition(|id| !stored.contains_key(id));
            let mut lost_ids = Vec::new();
            if !fresh.is_empty() {
                let docs = fresh
                    .iter()
                    .map(|id| versioned_record_doc(id, by_id[id], changed_at_ms))
                    .collect::<Result<_, _>>()?;
                let existed = self.insert_new(CONSENSUS, docs).await?;
                for (i, id) in fresh.into_iter().enumerate() {
                    if existed.contains(&i) {
                        lost_ids.push(id);
                    } else {
                        won.push((id.clone(), by_id[&id], changed_at_ms));
                        inserted.insert(id);
                    }
                }
            }
            if !known.is_empty() {
                let mut docs = Vec::with_capacity(known.len());
                for id in &known {
                    let v = by_id[id];
                    let (d, bytes) = versioned_record_doc(id, v, changed_at_ms)?;
                    let versioned = stored.get(id).is_some_and(|s| s.versioned);
                    let mut filter = version_filter(id, v.version, versioned);
                    if versioned {
                        filter.insert("consensus_digest", doc! { "$ne": &v.record.consensus_digest });
                    }
                    docs.push((doc! { "q": filter, "u": d, "upsert": true }, bytes));
                }
                let lost = self.conditional_update(CONSENSUS, docs).await?;
                for (i, id) in known.into_iter().enumerate() {
                    if lost.contains(&i) {
                        lost_ids.push(id);
                    } else {
                        won.push((id.clone(), by_id[&id], changed_at_ms));
                    }
                }
            }
            if lost_ids.is_empty() {
                break;
            }
            stored.extend(self.stored_versions(&lost_ids).await?);
            for id in lost_ids {
                let v = by_id[&id];
                let s = stored.get(&id).map(|s| (s.version, s.digest.as_str()));
                if decide_write(s, v.version, &v.record.consensus_digest) == WriteDecision::Write {
                    pending.push(id);
                }
            }
        }
        // 2. the same record at a newer version: only the version moves.
        if !raise.is_empty() {
            let statements = raise
                .iter()
                .map(|(id, v, versioned)| {
                    let mut set = Document::new();
                    set_version(&mut set, *v);
                    (doc! { "q": version_filter(id, *v, *versioned), "u": { "$set": set }, "upsert": false }, 256)
                })
                .collect();
            self.conditional_update(CONSENSUS, statements).await?;
        }
        if won.is_empty() {
            return Ok(());
        }

        // 3. history (insert-only, idempotent by `<pair_id>:<changed_at_ms>:<digest>`)
        let mut history = Vec::with_capacity(won.len());
        for (id, v, at) in &won {
            let mut h = record_doc(id, &v.record, *at)?;
            h.insert("_id", crate::ports::history_id(id, *at, &v.record.consensus_digest));
            h.insert("pair_id", id.as_str());
            h.insert("stream_seq", 0_i64);
            history.push(h);
        }
        self.insert_ignoring_duplicates(HISTORY, history).await?;

        // 4. conflict queue: open conflicts upserted, resolved ones deleted, each only
        //    over an older (or equal) version
        let resolved: Vec<(String, RecordVersion)> = won
            .iter()
            .filter(|(id, v, _)| v.record.conflicts.is_empty() && !inserted.contains(id))
            .map(|(id, v, _)| (id.clone(), v.version))
            .collect();
        self.delete_unless_newer(CONFLICT_QUEUE, &resolved).await?;
        let mut open = Vec::new();
        for (id, v, at) in won.iter().filter(|(_, v, _)| !v.record.conflicts.is_empty()) {
            let r = &v.record;
            let conflicts = mongodb::bson::to_bson(&r.conflicts).map_err(rejected("encoding conflicts"))?;
            let reasons: std::collections::BTreeSet<&str> = r.conflicts.iter().map(|c| c.reason.as_str()).collect();
            let mut d = doc! {
                "_id": id.as_str(),
                "tenant": &r.tenant,
                "artifact": &r.artifact,
                "package": &r.package,
                "vulnerability": &r.vulnerability,
                "status": r.status.as_str(),
                "reasons": reasons.into_iter().collect::<Vec<_>>(),
                "conflicts": conflicts,
                "consensus_digest": &r.consensus_digest,
                "changed_at_ms": *at,
            };
            set_version(&mut d, v.version);
            let bytes = r.conflicts.iter().map(|c| c.detail.len() + 256).sum::<usize>() + 512;
            open.push((id.as_str(), v.version, d, bytes));
        }
        // Over an older versioned entry; what lost is tried over an unversioned one (an
        // entry written before versions existed); what loses again is newer: left alone.
        let statements = |versioned: bool, entries: &[&(&str, RecordVersion, Document, usize)]| {
            entries
                .iter()
                .map(|(id, v, d, bytes)| {
                    (doc! { "q": version_filter(id, *v, versioned), "u": d, "upsert": true }, *bytes)
                })
                .collect::<Vec<_>>()
        };
        // The entries of pairs this call inserted are inserted too (none can exist); one
        // that does (duplicate key) goes the conditional way.
        let (fresh, mut all): (Vec<_>, Vec<_>) = open.iter().partition(|e| inserted.contains(e.0));
        if !fresh.is_empty() {
            let existed = self.insert_new(CONFLICT_QUEUE, fresh.iter().map(|e| (e.2.clone(), e.3)).collect()).await?;
            all.extend(fresh.iter().enumerate().filter(|(i, _)| existed.contains(i)).map(|(_, e)| *e));
        }
        let lost = self.conditional_update(CONFLICT_QUEUE, statements(true, &all)).await?;
        let retry: Vec<_> = all.iter().enumerate().filter(|(i, _)| lost.contains(i)).map(|(_, e)| *e).collect();
        if !retry.is_empty() {
            self.conditional_update(CONFLICT_QUEUE, statements(false, &retry)).await?;
        }
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

    async fn query_records(&self, q: &RecordQuery) -> Result<Vec<TimedRecord>, StoreError> {
        let mut filter = doc! { "tenant": &q.tenant };
        if let Some(a) = &q.artifact {
            filter.insert("artifact", a);
        }
        if let Some(p) = &q.package {
            filter.insert("package", p);
        }
        if let Some(v) = &q.vulnerability {
            filter.insert("vulnerability", v);
        }
        if let Some(st) = q.status {
            filter.insert("status", st.as_str());
        }
        if let Some(s) = q.since_ms {
            filter.insert("changed_at_ms", doc! { "$gte": s });
        }
        if q.conflicted {
            filter.insert("conflicts", doc! { "$gt": 0_i64 });
        }
        if let Some(reason) = &q.conflict_reason {
            filter.insert("conflict_reasons", reason);
        }
        if let Some((a, v)) = &q.after {
            filter.insert(
                "$or",
                vec![doc! { "artifact": { "$gt": a } }, doc! { "artifact": a, "vulnerability": { "$gt": v } }],
            );
        }
        let consensus = self.coll(CONSENSUS);
        let mut find = consensus.find(filter).sort(doc! { "artifact": 1, "vulnerability": 1 });
        if q.issuer.is_none() {
            find = find.limit(q.limit as i64);
        }
        let mut cursor = find.await.map_err(map_err)?;
        let mut out = Vec::new();
        while out.len() < q.limit {
            let Some(d) = cursor.try_next().await.map_err(map_err)? else { break };
            let record = record_from_doc(&d)?;
            if q.matches_decoded(&record) {
                out.push(TimedRecord { record, changed_at_ms: d.get_i64("changed_at_ms").unwrap_or(0) });
            }
        }
        Ok(out)
    }

    async fn record_history(&self, pair: &PairKey) -> Result<Vec<TimedRecord>, StoreError> {
        let mut cursor = self
            .coll(HISTORY)
            .find(doc! { "pair_id": pair_id(pair) })
            .sort(doc! { "changed_at_ms": 1, "consensus_digest": 1 })
            .await
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            out.push(TimedRecord {
                record: record_from_doc(&d)?,
                changed_at_ms: d.get_i64("changed_at_ms").unwrap_or(0),
            });
        }
        Ok(out)
    }

    /// Sequences pending entries (at most [`SEQUENCE_PER_CALL`]), then one `find` of the
    /// positions and one `$in` of their history entries.
    async fn changes_after(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        self.sequence_changes(tenant).await?;
        let mut cursor = self
            .coll(CHANGES)
            .find(doc! { "tenant": tenant, "seq": { "$gt": after as i64 } })
            .sort(doc! { "seq": 1 })
            .limit(limit as i64)
            .await
            .map_err(map_err)?;
        let mut positions: Vec<(u64, String)> = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let seq = seq_of(&d)?;
            // Dense by construction; stop at a gap rather than skip a position.
            if seq != after + positions.len() as u64 + 1 {
                break;
            }
            positions.push((seq, d.get_str("history_id").map_err(rejected("change history_id"))?.to_string()));
        }
        if positions.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = positions.iter().map(|(_, h)| h.as_str()).collect();
        let mut entries: HashMap<String, TimedRecord> = HashMap::with_capacity(ids.len());
        let mut cursor = self.coll(HISTORY).find(doc! { "_id": { "$in": ids } }).await.map_err(map_err)?;
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let id = d.get_str("_id").map_err(rejected("history _id"))?.to_string();
            let entry =
                TimedRecord { record: record_from_doc(&d)?, changed_at_ms: d.get_i64("changed_at_ms").unwrap_or(0) };
            entries.insert(id, entry);
        }
        let mut out = Vec::with_capacity(positions.len());
        for (seq, hid) in positions {
            match entries.remove(&hid) {
                Some(entry) if entry.record.tenant == tenant => out.push(ChangeEvent { seq, entry }),
                Some(_) => {
                    return Err(StoreError::Rejected(format!("change {seq} of {tenant} names another tenant's entry")))
                }
                None => {
                    return Err(StoreError::Rejected(format!("change {seq} of {tenant} names a missing history entry")))
                }
            }
        }
        Ok(out)
    }

    async fn change_tail(&self, tenant: &str) -> Result<u64, StoreError> {
        self.sequence_changes(tenant).await
    }
}

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

#[async_trait::async_trait]
impl TrustStore for MongoStore {
    async fn trust_policies(&self) -> Result<Vec<TenantTrust>, StoreError> {
        let mut cursor = self.coll(TRUST_POLICIES).find(doc! {}).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let json = d.get_str("trust_json").map_err(rejected("stored trust policy"))?;
            out.push(serde_json::from_str(json).map_err(rejected("decoding stored trust policy"))?);
        }
        Ok(out)
    }

    /// Compare-and-set on the epoch: the first change of a tenant inserts its document
    /// (a duplicate `_id` means another writer came first), a later one updates with
    /// filter `{_id: tenant, epoch: next - 1}` (no match: another writer came first).
    /// No multi-document transaction on a standalone server, so the audit entry rides in
    /// the same single-document write (`audit`, with `audit_written: false`) and is then
    /// copied to `vex_trust_audit` (idempotent by its `_id`) and the flag set: a crash in
    /// between leaves a change whose entry [`TrustStore::repair_trust_audit`] copies
    /// (start-up and every trust poll), never a change without its entry. Before/after
    /// are stored as JSON strings (issuer ids may hold `.`).
    async fn put_trust_policy(&self, next: &TenantTrust, audit: &TrustAudit) -> Result<bool, StoreError> {
        let expected = next.epoch.checked_sub(1).ok_or_else(|| StoreError::Rejected("epoch 0 is the seed".into()))?;
        let json = serde_json::to_string(next).map_err(rejected("encoding trust policy"))?;
        let entry = doc! {
            "_id": trust_audit_id(&audit.tenant, audit.epoch),
            "tenant": &audit.tenant,
            "epoch": audit.epoch as i64,
            "at_ms": audit.at_ms,
            "who": &audit.who,
            "kind": audit.kind.as_str(),
            "issuer": audit.issuer.as_deref(),
            "reason": audit.reason.as_deref(),
            "before_json": serde_json::to_string(&audit.before).map_err(rejected("encoding trust audit"))?,
            "after_json": serde_json::to_string(&audit.after).map_err(rejected("encoding trust audit"))?,
        };
        let coll = self.coll(TRUST_POLICIES);
        if expected == 0 {
            let d = doc! {
                "_id": &next.tenant, "epoch": next.epoch as i64, "trust_json": &json, "updated_at_ms": audit.at_ms,
                "audit": entry.clone(), "audit_written": false,
            };
            match coll.insert_one(d).await {
                Ok(_) => {}
                Err(e) if only_duplicate_keys(&e) => return Ok(false),
                Err(e) => return Err(map_err(e)),
            }
        } else {
            let filter = doc! { "_id": &next.tenant, "epoch": expected as i64 };
            let update = doc! { "$set": {
                "epoch": next.epoch as i64, "trust_json": &json, "updated_at_ms": audit.at_ms,
                "audit": entry.clone(), "audit_written": false,
            } };
            let r = coll.update_one(filter, update).await.map_err(map_err)?;
            if r.matched_count != 1 {
                return Ok(false);
            }
        }
        self.copy_audit(&next.tenant, next.epoch, entry).await?;
        Ok(true)
    }

    async fn trust_audit(&self, tenant: &str) -> Result<Vec<TrustAudit>, StoreError> {
        let mut cursor =
            self.coll(TRUST_AUDIT).find(doc! { "tenant": tenant }).sort(doc! { "epoch": 1 }).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            out.push(audit_from_doc(&d)?);
        }
        Ok(out)
    }

    async fn trust_recomputed(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut cursor = self.coll(TRUST_POLICIES).find(doc! {}).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let tenant = d.get_str("_id").map_err(rejected("stored trust policy _id"))?.to_string();
            out.push((tenant, int_field(&d, "recomputed_epoch").max(0) as u64));
        }
        Ok(out)
    }

    async fn mark_trust_recomputed(&self, tenant: &str, epoch: u64) -> Result<(), StoreError> {
        let update = doc! { "$max": { "recomputed_epoch": epoch as i64 } };
        self.coll(TRUST_POLICIES).update_one(doc! { "_id": tenant }, update).await.map_err(map_err)?;
        Ok(())
    }

    async fn repair_trust_audit(&self) -> Result<usize, StoreError> {
        let mut cursor = self.coll(TRUST_POLICIES).find(doc! { "audit_written": false }).await.map_err(map_err)?;
        let mut pending = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let tenant = d.get_str("_id").map_err(rejected("stored trust policy _id"))?.to_string();
            let entry = d.get_document("audit").map_err(rejected("stored trust policy audit"))?.clone();
            pending.push((tenant, int_field(&d, "epoch") as u64, entry));
        }
        let n = pending.len();
        for (tenant, epoch, entry) in pending {
            self.copy_audit(&tenant, epoch, entry).await?;
        }
        Ok(n)
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

#[async_trait::async_trait]
impl VerificationStore for MongoStore {
    async fn put_verification(&self, v: &VerificationRecord) -> Result<(), StoreError> {
        self.replace_by_id(DSSE_VERIFICATIONS, &v.envelope_digest, v, "encoding verification").await
    }
}

/// Most pending history entries one call sequences (a backlog is worked off over calls).
pub const SEQUENCE_PER_CALL: usize = 1000;
/// Pending history entries sequenced per batch.
const SEQUENCE_BATCH: usize = 200;

/// The change-stream document id of a position.
fn change_id(tenant: &str, seq: u64) -> String {
    format!("{tenant}:{seq:020}")
}

fn seq_of(d: &Document) -> Result<u64, StoreError> {
    match d.get("seq") {
        Some(mongodb::bson::Bson::Int64(n)) if *n > 0 => Ok(*n as u64),
        Some(mongodb::bson::Bson::Int32(n)) if *n > 0 => Ok(*n as u64),
        other => Err(StoreError::Rejected(format!("change stream position {other:?} is not a positive integer"))),
    }
}

impl MongoStore {
    /// Indexes of the change stream: one position per history entry (unique), a tenant's
    /// positions in order.
    async fn create_change_indexes(&self) -> Result<(), StoreError> {
        let coll = self.coll(CHANGES);
        let existing = match coll.list_index_names().await {
            Ok(names) => names,
            Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if c.code == 26) => Vec::new(),
            Err(e) => return Err(map_err(e)),
        };
        if !existing.iter().any(|n| n == "history_id_unique") {
            let model = IndexModel::builder()
                .keys(doc! { "history_id": 1 })
                .options(IndexOptions::builder().name("history_id_unique".to_string()).unique(true).build())
                .build();
            coll.create_index(model).await.map_err(map_err)?;
        }
        create_indexes(coll, vec![(doc! { "tenant": 1, "seq": 1 }, "tenant_seq")]).await
    }

    /// The last visible position of the tenant's stream (0 when empty).
    async fn stream_tail(&self, tenant: &str) -> Result<u64, StoreError> {
        let last = self
            .coll(CHANGES)
            .find_one(doc! { "tenant": tenant })
            .sort(doc! { "seq": -1 })
            .projection(doc! { "seq": 1 })
            .await
            .map_err(map_err)?;
        last.as_ref().map_or(Ok(0), seq_of)
    }

    /// Gives the tenant's pending history entries (oldest first, at most
    /// [`SEQUENCE_PER_CALL`]) their positions; returns the last position. Safe to run on
    /// any number of instances at once (see the module invariants).
    ///
    /// Per batch of pending entries: one ordered `insert_many` of positions `tail + 1..`
    /// (it stops at the first position or entry another reader took), one `find` of the
    /// positions the batch's entries now have (ours or another reader's) and one
    /// `update` command marking them.
    pub async fn sequence_changes(&self, tenant: &str) -> Result<u64, StoreError> {
        let mut done = 0usize;
        for _ in 0..SEQUENCE_PER_CALL {
            if done >= SEQUENCE_PER_CALL {
                break;
            }
            let mut cursor = self
                .coll(HISTORY)
                .find(doc! { "tenant": tenant, "stream_seq": 0_i64 })
                .sort(doc! { "changed_at_ms": 1, "_id": 1 })
                .projection(doc! { "_id": 1 })
                .limit(SEQUENCE_BATCH as i64)
                .await
                .map_err(map_err)?;
            let mut pending = Vec::new();
            while let Some(d) = cursor.try_next().await.map_err(map_err)? {
                pending.push(d.get_str("_id").map_err(rejected("history _id"))?.to_string());
            }
            if pending.is_empty() {
                break;
            }
            let tail = self.stream_tail(tenant).await?;
            let changes: Vec<Document> = pending
                .iter()
                .zip(tail + 1..)
                .map(|(hid, n)| doc! { "_id": change_id(tenant, n), "tenant": tenant, "seq": n as i64, "history_id": hid })
                .collect();
            match self.coll(CHANGES).insert_many(changes).ordered(true).await {
                Ok(_) => {}
                // Another reader took a position or an entry: what went in before stays.
                Err(e) if only_duplicate_keys(&e) => {}
                Err(e) => return Err(map_err(e)),
            }
            let mut cursor = self
                .coll(CHANGES)
                .find(doc! { "history_id": { "$in": &pending } })
                .projection(doc! { "history_id": 1, "seq": 1 })
                .await
                .map_err(map_err)?;
            let mut marks = Vec::new();
            while let Some(d) = cursor.try_next().await.map_err(map_err)? {
                let hid = d.get_str("history_id").map_err(rejected("change history_id"))?.to_string();
                let seq = seq_of(&d)? as i64;
                marks.push((doc! { "q": { "_id": hid }, "u": { "$set": { "stream_seq": seq } } }, 64));
            }
            done += marks.len();
            for batch in batches(marks.into_iter()) {
                let reply = self
                    .db
                    .run_command(doc! { "update": HISTORY, "updates": batch, "ordered": false })
                    .await
                    .map_err(map_err)?;
                check_write_reply(HISTORY, &reply)?;
            }
        }
        self.stream_tail(tenant).await
    }

    /// Indexes of the read API: a tenant's records in cursor order (optionally of one
    /// package), a tenant's export jobs by start time (a pair's history by time uses
    /// `pair_changed_at` of `init`).
    async fn create_read_indexes(&self) -> Result<(), StoreError> {
        create_indexes(
            self.coll(CONSENSUS),
            vec![
                (doc! { "tenant": 1, "artifact": 1, "vulnerability": 1 }, "tenant_artifact_vulnerability"),
                (doc! { "tenant": 1, "package": 1, "artifact": 1, "vulnerability": 1 }, "tenant_package_artifact"),
            ],
        )
        .await?;
        create_indexes(self.coll(EXPORT_JOBS), vec![(doc! { "tenant": 1, "started_at_ms": -1 }, "tenant_started_at")])
            .await
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
        self.coll(collection).replace_one(doc! { "_id": id }, d).upsert(true).await.map_err(map_err)?;
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

    #[test]
    fn version_keys_sort_like_versions() {
        let v = |epoch: u64, offset: i64, observations: u64| RecordVersion { epoch, offset, observations };
        let mut versions = vec![
            RecordVersion::LOWEST,
            v(0, -1, 0),
            v(0, -1, 3),
            v(0, 0, 0),
            v(0, 9, 1),
            v(0, 10, 1),
            v(0, 10, 2),
            v(0, i64::MAX, u64::MAX),
            v(1, -5, 0),
            v(1, 3, 1),
            v(u64::MAX, 0, 0),
        ];
        let mut keys: Vec<String> = versions.iter().map(|v| version_key(*v)).collect();
        versions.sort();
        keys.sort();
        assert_eq!(keys, versions.iter().map(|v| version_key(*v)).collect::<Vec<_>>());
        assert!(keys.iter().all(|k| k.len() == 48));
    }

    #[test]
    fn kafka_source_is_split() {
        assert_eq!(parse_kafka_source("kafka:vex.observations/3@42"), Some(("vex.observations".into(), 3, 42)));
        assert_eq!(parse_kafka_source("kafka:a/b/c/0@1"), Some(("a/b/c".into(), 0, 1)));
        assert_eq!(parse_kafka_source("/tmp/x.json"), None);
        assert_eq!(parse_kafka_source("kafka:t/x@1"), None);
    }
}
