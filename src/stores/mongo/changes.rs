//! The change stream on MongoDB (`vex_consensus_changes`), read through
//! [`crate::ports::RecordStore::changes_after`] and `change_tail`.
//!
//! Invariants: every history entry gets one position per tenant, after the entry is
//! committed: history entries are written pending (`stream_seq: 0`); a reader of the
//! stream sequences the pending ones (oldest first) by inserting `{_id: <tenant>:<n>,
//! history_id}` with `n` the last visible position plus one, then marking the entry.
//! The `_id` makes each position taken once, the unique index on `history_id` each
//! entry sequenced once, and `n` is only tried once `n - 1` is visible, so positions
//! are dense and appear in order on any number of instances with no transaction and no
//! change stream (a standalone server has neither). History written before the stream
//! existed (no `stream_seq`) is made pending once by `init` (marker in `vex_meta`).

use super::records::record_from_doc;
use super::MongoStore;
use super::{batches, check_write_reply, create_indexes, map_err, namespace_not_found, only_duplicate_keys, rejected};
use super::{CHANGES, HISTORY, META};
use crate::ports::{ChangeEvent, StoreError, TimedRecord};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use mongodb::options::IndexOptions;
use mongodb::IndexModel;
use std::collections::HashMap;

/// The `vex_meta` id of the change stream's backfill of older history.
const STREAM_BACKFILL: &str = "history_stream_backfill";

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
    /// History written before the change stream existed has no `stream_seq`: marks it
    /// pending (`0`), so the next reader of its tenant's stream sequences it (after the
    /// positions already given, oldest first) and a consumer that starts from 0 gets
    /// every change the store holds. Once per database (`vex_meta`), since the filter
    /// cannot use an index.
    pub(super) async fn backfill_stream(&self) -> Result<(), StoreError> {
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

    /// Indexes of the change stream: one position per history entry (unique), a tenant's
    /// positions in order.
    pub(super) async fn create_change_indexes(&self) -> Result<(), StoreError> {
        let coll = self.coll(CHANGES);
        let existing = match coll.list_index_names().await {
            Ok(names) => names,
            Err(e) if namespace_not_found(&e) => Vec::new(),
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
                Ok(r) => super::count_writes(CHANGES, r.inserted_ids.len() as u64, 0, 0),
                // Another reader took a position or an entry: what went in before stays
                // (ordered: the documents before the first error).
                Err(e) if only_duplicate_keys(&e) => {
                    let first = match e.kind.as_ref() {
                        mongodb::error::ErrorKind::InsertMany(m) => {
                            m.write_errors.as_ref().and_then(|w| w.iter().map(|we| we.index).min()).unwrap_or(0)
                        }
                        _ => 0,
                    };
                    super::count_writes(CHANGES, first as u64, 0, 0);
                }
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
                // `stream_seq` is a key of `tenant_stream_pending`.
                let (_, modified) = super::reply_counts("update", &reply);
                super::count_writes(HISTORY, 0, modified, 1);
                check_write_reply(HISTORY, &reply)?;
            }
        }
        self.stream_tail(tenant).await
    }

    /// Sequences pending entries (at most [`SEQUENCE_PER_CALL`]), then one `find` of the
    /// positions and one `$in` of their history entries.
    pub(super) async fn read_changes(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChangeEvent>, StoreError> {
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
}
