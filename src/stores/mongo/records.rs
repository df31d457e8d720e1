//! The records role on MongoDB (`vex_consensus`, `vex_consensus_history`, and the
//! conflict-queue writes of `put_records`; the change stream is `changes`).
//!
//! Invariants:
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

use super::check_write_reply;
use super::{create_indexes, int_field, map_err, rejected, MongoStore, BATCH, CONFLICT_QUEUE, CONSENSUS, HISTORY};
use crate::domain::consensus::{ConsensusRecord, PairKey};
use crate::domain::version::{RecordVersion, VersionedRecord};
use crate::ports::{
    decide_write, pair_id, ChangeEvent, RecordQuery, RecordStore, StoreError, TimedRecord, WriteDecision,
};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use std::collections::{HashMap, HashSet};

/// What a conditional write compares with.
struct StoredVersion {
    version: RecordVersion,
    /// Whether the document has a version (`v_key`).
    versioned: bool,
    digest: String,
    changed_at_ms: i64,
}

impl MongoStore {
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
            let (deleted, _) = super::reply_counts("delete", &reply);
            super::count_writes(name, deleted, 0, 0);
            check_write_reply(name, &reply)?;
        }
        Ok(())
    }

    /// Indexes of the read API: a tenant's records in cursor order (optionally of one
    /// package) (a pair's history by time uses `pair_changed_at` of `init`).
    pub(super) async fn create_read_indexes(&self) -> Result<(), StoreError> {
        create_indexes(
            self.coll(CONSENSUS),
            vec![
                (doc! { "tenant": 1, "artifact": 1, "vulnerability": 1 }, "tenant_artifact_vulnerability"),
                (doc! { "tenant": 1, "package": 1, "artifact": 1, "vulnerability": 1 }, "tenant_package_artifact"),
            ],
        )
        .await
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
/// its digest recomputes (a record of an older schema: from its JSON as written, see
/// [`ConsensusRecord::digest_of_json`]).
pub(super) fn record_from_doc(d: &Document) -> Result<ConsensusRecord, StoreError> {
    let json = d.get_str("record_json").map_err(rejected("stored record"))?;
    let r: ConsensusRecord = serde_json::from_str(json).map_err(rejected("decoding stored record"))?;
    let digest = if r.schema_version == crate::domain::consensus::RECORD_SCHEMA_VERSION {
        r.compute_digest()
    } else {
        ConsensusRecord::digest_of_json(json)
    }
    .map_err(rejected("digesting stored record"))?;
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

/// A write that won (or a replay of the stored version): pair id, record, and the
/// `changed_at_ms` of its history and queue entries.
type Won<'a> = (String, &'a VersionedRecord, i64);

/// The records of a batch by pair id, and the ids in first-seen order; the last record of
/// a pair wins if a batch names a pair twice.
fn by_pair_id(records: &[VersionedRecord]) -> (HashMap<String, &VersionedRecord>, Vec<String>) {
    let mut by_id: HashMap<String, &VersionedRecord> = HashMap::with_capacity(records.len());
    let mut order = Vec::with_capacity(records.len());
    for r in records {
        let id = pair_id(&r.record.pair());
        if by_id.insert(id.clone(), r).is_none() {
            order.push(id);
        }
    }
    (by_id, order)
}

/// What `put_records` does with each pair, by [`decide_write`] on the stored version.
struct WritePlan<'a> {
    /// Replays of the stored version (their entries are re-applied).
    won: Vec<Won<'a>>,
    /// Pairs to write.
    pending: Vec<String>,
    /// The same record at a newer version: (id, version, whether the stored one has a version).
    raise: Vec<(String, RecordVersion, bool)>,
}

fn plan_writes<'a>(
    by_id: &HashMap<String, &'a VersionedRecord>,
    order: Vec<String>,
    stored: &HashMap<String, StoredVersion>,
    changed_at_ms: i64,
) -> WritePlan<'a> {
    let mut plan = WritePlan { won: Vec::new(), pending: Vec::new(), raise: Vec::new() };
    for id in order {
        let v = by_id[&id];
        let s = stored.get(&id);
        match decide_write(s.map(|s| (s.version, s.digest.as_str())), v.version, &v.record.consensus_digest) {
            WriteDecision::Write => plan.pending.push(id),
            WriteDecision::RaiseVersion => plan.raise.push((id, v.version, s.is_some_and(|s| s.versioned))),
            WriteDecision::Unchanged => {
                let at = s.map_or(changed_at_ms, |s| s.changed_at_ms);
                plan.won.push((id, v, at));
            }
            WriteDecision::Stale => {}
        }
    }
    plan
}

/// The conflict-queue entry of a conflicted record, and its estimated size in a command.
fn conflict_queue_doc(id: &str, v: &VersionedRecord, at: i64) -> Result<(Document, usize), StoreError> {
    let r = &v.record;
    let conflicts = mongodb::bson::to_bson(&r.conflicts).map_err(rejected("encoding conflicts"))?;
    let reasons: std::collections::BTreeSet<&str> = r.conflicts.iter().map(|c| c.reason.as_str()).collect();
    let mut d = doc! {
        "_id": id,
        "tenant": &r.tenant,
        "artifact": &r.artifact,
        "package": &r.package,
        "vulnerability": &r.vulnerability,
        "status": r.status.as_str(),
        "reasons": reasons.into_iter().collect::<Vec<_>>(),
        "conflicts": conflicts,
        "consensus_digest": &r.consensus_digest,
        "changed_at_ms": at,
    };
    set_version(&mut d, v.version);
    let bytes = r.conflicts.iter().map(|c| c.detail.len() + 256).sum::<usize>() + 512;
    Ok((d, bytes))
}

/// The steps of `put_records`.
impl MongoStore {
    /// Step 1: the current records, each only over an older version (the commit marker).
    /// A pair with no stored record is inserted (an insert is several times cheaper than
    /// an upsert on SecantusDB and no dearer on MongoDB); one stored meanwhile (duplicate
    /// key) goes the conditional way like the rest. A statement that loses on the server
    /// (a newer or identical record is stored: duplicate key) is re-read and retried only
    /// if it would still win (a race between two writers of one pair). Returns the pairs
    /// whose record this call inserted: no conflict-queue entry can exist for them (an
    /// entry is written only after its record), so none is deleted.
    async fn write_current<'a>(
        &self,
        by_id: &HashMap<String, &'a VersionedRecord>,
        mut pending: Vec<String>,
        stored: &mut HashMap<String, StoredVersion>,
        changed_at_ms: i64,
        won: &mut Vec<Won<'a>>,
    ) -> Result<HashSet<String>, StoreError> {
        let mut inserted: HashSet<String> = HashSet::new();
        for _ in 0..3 {
            if pending.is_empty() {
                break;
            }
            let (fresh, known): (Vec<String>, Vec<String>) = pending.drain(..).partition(|id| !stored.contains_key(id));
            let mut lost_ids = Vec::new();
            if !fresh.is_empty() {
                lost_ids.extend(self.insert_fresh(by_id, fresh, changed_at_ms, won, &mut inserted).await?);
            }
            if !known.is_empty() {
                lost_ids.extend(self.update_known(by_id, known, stored, changed_at_ms, won).await?);
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
        Ok(inserted)
    }

    /// Inserts the records of pairs with no stored record; returns the ids stored
    /// meanwhile (duplicate key: lost).
    async fn insert_fresh<'a>(
        &self,
        by_id: &HashMap<String, &'a VersionedRecord>,
        fresh: Vec<String>,
        changed_at_ms: i64,
        won: &mut Vec<Won<'a>>,
        inserted: &mut HashSet<String>,
    ) -> Result<Vec<String>, StoreError> {
        let docs =
            fresh.iter().map(|id| versioned_record_doc(id, by_id[id], changed_at_ms)).collect::<Result<_, _>>()?;
        let existed = self.insert_new(CONSENSUS, docs).await?;
        let mut lost_ids = Vec::new();
        for (i, id) in fresh.into_iter().enumerate() {
            if existed.contains(&i) {
                lost_ids.push(id);
            } else {
                won.push((id.clone(), by_id[&id], changed_at_ms));
                inserted.insert(id);
            }
        }
        Ok(lost_ids)
    }

    /// Replaces the records of pairs with a stored record, each only over an older
    /// version; returns the ids that lost on the server.
    async fn update_known<'a>(
        &self,
        by_id: &HashMap<String, &'a VersionedRecord>,
        known: Vec<String>,
        stored: &HashMap<String, StoredVersion>,
        changed_at_ms: i64,
        won: &mut Vec<Won<'a>>,
    ) -> Result<Vec<String>, StoreError> {
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
        // A replaced record changes only `changed_at_ms` of the indexed fields.
        let lost = self.conditional_update(CONSENSUS, docs, 1).await?;
        let mut lost_ids = Vec::new();
        for (i, id) in known.into_iter().enumerate() {
            if lost.contains(&i) {
                lost_ids.push(id);
            } else {
                won.push((id.clone(), by_id[&id], changed_at_ms));
            }
        }
        Ok(lost_ids)
    }

    /// Step 2: the same record at a newer version: only the version moves.
    async fn raise_versions(&self, raise: &[(String, RecordVersion, bool)]) -> Result<(), StoreError> {
        if raise.is_empty() {
            return Ok(());
        }
        let statements = raise
            .iter()
            .map(|(id, v, versioned)| {
                let mut set = Document::new();
                set_version(&mut set, *v);
                (doc! { "q": version_filter(id, *v, *versioned), "u": { "$set": set }, "upsert": false }, 256)
            })
            .collect();
        self.conditional_update(CONSENSUS, statements, 0).await?;
        Ok(())
    }

    /// Step 3: history (insert-only, idempotent by `<pair_id>:<changed_at_ms>:<digest>`).
    async fn write_history(&self, won: &[Won<'_>]) -> Result<(), StoreError> {
        let mut history = Vec::with_capacity(won.len());
        for (id, v, at) in won {
            let mut h = record_doc(id, &v.record, *at)?;
            h.insert("_id", crate::ports::history_id(id, *at, &v.record.consensus_digest));
            h.insert("pair_id", id.as_str());
            h.insert("stream_seq", 0_i64);
            history.push(h);
        }
        self.insert_ignoring_duplicates(HISTORY, history).await
    }

    /// Step 4: the conflict queue: open conflicts upserted, resolved ones deleted, each
    /// only over an older (or equal) version.
    async fn write_conflict_queue(&self, won: &[Won<'_>], inserted: &HashSet<String>) -> Result<(), StoreError> {
        let resolved: Vec<(String, RecordVersion)> = won
            .iter()
            .filter(|(id, v, _)| v.record.conflicts.is_empty() && !inserted.contains(id))
            .map(|(id, v, _)| (id.clone(), v.version))
            .collect();
        self.delete_unless_newer(CONFLICT_QUEUE, &resolved).await?;
        let mut open = Vec::new();
        for (id, v, at) in won.iter().filter(|(_, v, _)| !v.record.conflicts.is_empty()) {
            let (d, bytes) = conflict_queue_doc(id, v, *at)?;
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
        let lost = self.conditional_update(CONFLICT_QUEUE, statements(true, &all), 1).await?;
        let retry: Vec<_> = all.iter().enumerate().filter(|(i, _)| lost.contains(i)).map(|(_, e)| *e).collect();
        if !retry.is_empty() {
            self.conditional_update(CONFLICT_QUEUE, statements(false, &retry), 1).await?;
        }
        Ok(())
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
        let (by_id, order) = by_pair_id(records);
        let mut stored = self.stored_versions(&order).await?;
        let WritePlan { mut won, pending, raise } = plan_writes(&by_id, order, &stored, changed_at_ms);
        let inserted = self.write_current(&by_id, pending, &mut stored, changed_at_ms, &mut won).await?;
        self.raise_versions(&raise).await?;
        if won.is_empty() {
            return Ok(());
        }
        self.write_history(&won).await?;
        self.write_conflict_queue(&won, &inserted).await
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
        if let Some(reason) = q.conflict_reason {
            filter.insert("conflict_reasons", reason.as_str());
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

    async fn changes_after(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        self.read_changes(tenant, after, limit).await
    }

    async fn change_tail(&self, tenant: &str) -> Result<u64, StoreError> {
        self.sequence_changes(tenant).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
