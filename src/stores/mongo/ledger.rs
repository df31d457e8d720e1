//! The document ledger role on MongoDB (`vex_document_ledger`).
//!
//! Invariants: a document (tenant, issuer, document id) is one MongoDB document, `_id` =
//! SHA-256 of its key, holding its versions under `versions.<SHA-256 of the version's
//! digest>` as their JSON (beside the key's fields, set on insert). Recording a version is
//! an `insert` of the entry holding only it when the document is new (most are: the insert
//! succeeds only if no version of it was recorded, by any instance, so the answer is that
//! version alone), else one `findAndModify` (`$set` of the version, upsert, the new
//! document returned): a single-document write, atomic on its own, so the answer holds
//! every version recorded before it, by any instance, and a replay sets the same value
//! again (changes nothing). One command per new document (an insert: SecantusDB's upsert
//! costs more server time, and the server is the latency's bottleneck at 500
//! observations/s, issue 20), two for a document seen before; the layout of one document
//! per version took an insert and a query for every version. A document's versions are
//! bounded by MongoDB's 16 MiB per document: a version that does not fit is refused with
//! a message naming the document (dead-lettered `store_rejected`, nothing lost); e.g. 100
//! versions each naming 1,000 packages of 100 bytes take ~10 MB. (SecantusDB 0.7 answers
//! such a write with `InternalError`, code 1, measured: retried as any internal error, then
//! dead-lettered `retries_exhausted` on the Kafka stream.) Stores written before this
//! layout kept one document per version in `vex_document_versions`:
//! [`MongoStore::migrate_document_versions`] (run by `init`) moves them here and drops
//! that collection.

use super::{map_err, namespace_not_found, only_duplicate_keys, rejected, MongoStore};
use super::{DOCUMENT_LEDGER, LEGACY_DOCUMENT_VERSIONS};
use crate::domain::canonical::sha256_hex;
use crate::domain::ledger::{DocumentKey, DocumentVersion};
use crate::ports::{DocumentLedger, StoreError};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::error::ErrorKind;

/// How many times a version is recorded before the ledger gives up (retriable).
const ASKS: usize = 4;

/// MongoDB's codes for a document that would exceed 16 MiB.
const TOO_LARGE: &[i32] = &[10334, 17419, 17420];

/// The `_id` of a document's ledger entry.
fn ledger_id(k: &DocumentKey) -> Result<String, StoreError> {
    let input = serde_json::to_vec(k).map_err(rejected("document ledger id"))?;
    Ok(sha256_hex(&input))
}

/// The name of one version under `versions`: the SHA-256 of its digest (a digest is not
/// trusted to be a valid field name).
fn version_name(digest: &str) -> String {
    sha256_hex(digest.as_bytes())
}

/// The field of one version: `versions.<version_name>`.
fn version_field(digest: &str) -> String {
    format!("versions.{}", version_name(digest))
}

/// The key's fields, written when the entry is created (operators read them).
fn key_fields(k: &DocumentKey) -> Document {
    let issuer = k.issuer.as_deref().map_or(Bson::Null, |i| Bson::String(i.to_string()));
    doc! { "tenant": &k.tenant, "issuer": issuer, "document_id": &k.document_id }
}

/// A version as the ledger stores it: its JSON.
fn version_json(version: &DocumentVersion) -> Result<String, StoreError> {
    serde_json::to_string(version).map_err(rejected("encoding document version"))
}

/// The update statement recording `version`, given as its JSON (with its encoded size).
fn record_update(version: &DocumentVersion, json: String) -> (Document, usize) {
    let bytes = json.len() + 256;
    let mut set = Document::new();
    set.insert(version_field(&version.digest), json);
    (doc! { "$set": set, "$setOnInsert": key_fields(&version.key) }, bytes)
}

/// A new ledger entry holding only `version`, given as its JSON (what `record_update`'s
/// upsert creates), with its encoded size.
fn new_entry(id: &str, version: &DocumentVersion, json: String) -> (Document, usize) {
    let bytes = json.len() + 256;
    let mut entry = doc! { "_id": id };
    entry.extend(key_fields(&version.key));
    entry.insert("versions", doc! { version_name(&version.digest): json });
    (entry, bytes)
}

/// The versions held by a ledger entry, sorted by digest.
fn versions_of(entry: &Document) -> Result<Vec<DocumentVersion>, StoreError> {
    let versions = entry.get_document("versions").map_err(rejected("stored document ledger entry"))?;
    let mut out = Vec::with_capacity(versions.len());
    for (_, v) in versions {
        let json = v.as_str().ok_or_else(|| StoreError::Rejected("stored document version is not a string".into()))?;
        out.push(serde_json::from_str::<DocumentVersion>(json).map_err(rejected("decoding document version"))?);
    }
    out.sort_by(|a, b| a.digest.cmp(&b.digest));
    Ok(out)
}

#[async_trait::async_trait]
impl DocumentLedger for MongoStore {
    async fn record_version(&self, version: &DocumentVersion) -> Result<Vec<DocumentVersion>, StoreError> {
        let id = ledger_id(&version.key)?;
        let json = version_json(version)?;
        // A document seen for the first time: its entry inserted, its versions this one.
        // An entry already there (duplicate key) goes the findAndModify way; so does a
        // refused insert (e.g. a version too large), whose answer the findAndModify gives.
        // A server away or busy is answered as such (the caller retries; the insert may
        // have applied, and the retry's duplicate key then reads it): asking it again at
        // once would only wait out a second server selection.
        match self.insert_new(DOCUMENT_LEDGER, vec![new_entry(&id, version, json.clone())]).await {
            Ok(existed) if existed.is_empty() => return Ok(vec![version.clone()]),
            Err(e @ StoreError::Unavailable(_)) => return Err(e),
            Ok(_) | Err(_) => {}
        }
        let (update, _) = record_update(version, json);
        let command = doc! {
            "findAndModify": DOCUMENT_LEDGER,
            "query": { "_id": &id },
            "update": update,
            "upsert": true,
            "new": true,
            "fields": { "versions": 1 },
        };
        // Two upserts of a new entry at once: the loser's insert meets the winner's `_id`
        // (MongoDB retries that itself for an `_id` equality; here for servers that do
        // not), or SecantusDB 0.7 answers the loser with no document (`value: null`,
        // its version written). Both are asked again: the entry exists then, and setting
        // the version again changes nothing.
        let mut counted = false;
        for _ in 0..ASKS {
            let reply = match self.db.run_command(command.clone()).await {
                Ok(r) => r,
                Err(e) if only_duplicate_keys(&e) => continue,
                Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(c) if TOO_LARGE.contains(&c.code)) => {
                    return Err(StoreError::Rejected(format!(
                        "document ledger: the versions of document {:?} (issuer {:?}) no longer fit in one MongoDB \
                         document (16 MiB): {e}",
                        version.key.document_id, version.key.issuer
                    )))
                }
                Err(e) => return Err(map_err(e)),
            };
            if !std::mem::replace(&mut counted, true) {
                // The first reply that wrote (asking again writes the same value).
                let upserted = reply.get_document("lastErrorObject").is_ok_and(|l| l.get("upserted").is_some());
                super::count_writes(DOCUMENT_LEDGER, u64::from(upserted), u64::from(!upserted), 0);
            }
            if let Ok(entry) = reply.get_document("value") {
                return versions_of(entry);
            }
        }
        Err(StoreError::Unavailable(format!(
            "document ledger: no entry returned for document {:?} after {ASKS} attempts",
            version.key.document_id
        )))
    }
}

impl MongoStore {
    /// Moves the versions of the earlier layout (`vex_document_versions`, one MongoDB
    /// document per version) into the ledger, then drops that collection. Idempotent (a
    /// version set twice is the same value) and crash-safe: the old collection is dropped
    /// only after every version was written, so an interrupted move runs again whole.
    /// Memory: one batch of versions.
    pub(super) async fn migrate_document_versions(&self) -> Result<(), StoreError> {
        let old = self.coll(LEGACY_DOCUMENT_VERSIONS);
        let mut cursor = old.find(doc! {}).projection(doc! { "version_json": 1 }).await.map_err(map_err)?;
        let (mut batch, mut moved) = (Vec::new(), 0usize);
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let json = d.get_str("version_json").map_err(rejected("stored document version"))?;
            let version: DocumentVersion =
                serde_json::from_str(json).map_err(rejected("decoding stored document version"))?;
            let (update, bytes) = record_update(&version, version_json(&version)?);
            batch.push((doc! { "q": { "_id": ledger_id(&version.key)? }, "u": update, "upsert": true }, bytes));
            if batch.len() == super::BATCH {
                moved += batch.len();
                self.move_batch(std::mem::take(&mut batch)).await?;
            }
        }
        moved += batch.len();
        self.move_batch(batch).await?;
        if moved > 0 {
            tracing::info!(
                event = "document_ledger_migrated",
                versions = moved,
                "document versions moved to one ledger entry per document ({LEGACY_DOCUMENT_VERSIONS} -> {DOCUMENT_LEDGER})"
            );
        }
        drop_collection(old).await
    }

    /// One batch of the move: an update command of upserts (a duplicate key, two upserts
    /// of one new entry in one command, is run again: the entry exists then).
    async fn move_batch(&self, batch: Vec<(Document, usize)>) -> Result<(), StoreError> {
        let lost = self.conditional_update(DOCUMENT_LEDGER, batch.clone(), 0).await?;
        if !lost.is_empty() {
            let again = batch.into_iter().enumerate().filter(|(i, _)| lost.contains(i)).map(|(_, s)| s).collect();
            let lost = self.conditional_update(DOCUMENT_LEDGER, again, 0).await?;
            if !lost.is_empty() {
                return Err(StoreError::Unavailable(format!("{DOCUMENT_LEDGER}: {} upserts lost twice", lost.len())));
            }
        }
        Ok(())
    }
}

/// Drops `coll` (a missing collection is not an error).
async fn drop_collection(coll: mongodb::Collection<Document>) -> Result<(), StoreError> {
    match coll.drop().await {
        Ok(()) => Ok(()),
        Err(e) if namespace_not_found(&e) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}
