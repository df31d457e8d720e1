//! The records role on redb (`vex_consensus`: current rows, keyed by pair; `vex_consensus_history_log`:
//! the history, keyed by change-stream position, with `vex_consensus_history_index`
//! naming a pair's entries; in the same write transaction the conflict queue and the
//! stream tails; reads of the stream are `changes`).
//!
//! Invariants:
//! - `put_records` is one write (in a transaction shared with other writes,
//!   `group_commit`): each record is compared with the stored one ([`decide_write`]) and
//!   written, with its history entry, its stream position and its conflict-queue change,
//!   only if it is not older; all of it commits together, and the read cache learns the
//!   new answers only after the commit.
//! - A record's bytes are stored once, in its history entry: the current row of a pair
//!   ([`CurrentRow`]) holds what `decide_write` compares and the entry's position, and a
//!   conflict-queue row nothing but its key.
//! - History entries get increasing positions, so a commit appends to the log (filling its
//!   tenant's last row, then new ones: `log_rows`). A pair's
//!   current entry is named by its current row; the index (keyed by history id, a hash)
//!   names only the entries a later write replaced (and, in stores written before this
//!   layout, every entry), so a pair's first record costs no index row.
//! - Current rows and conflict-queue rows are keyed by the pair itself (tenant, artifact,
//!   vulnerability; [`RowKey`]), so a package's pairs are neighbours in the table: a batch
//!   of one package's records touches a few pages, not one page per record as keys by
//!   pair id (a hash) did; and a tenant's rows are one range.
//! - Older layouts are rewritten once when opened: current rows that copied the record
//!   ([`EmbeddedStore::point_current_rows_to_history`]), then the history keyed by history
//!   id ([`EmbeddedStore::key_history_by_position`]), then current rows and the conflict
//!   queue keyed by pair id ([`EmbeddedStore::key_current_rows_by_pair`]); these read and
//!   write the tables as text-keyed (`*_TEXT`), and last `byte_keys` moves them to byte
//!   keys (the same bytes), which every other function here reads and writes.

use super::{
    change_key, err, json_err, key_text, position_of, EmbeddedStore, PairColumns, Tally, CHANGES, CHANGE_TAILS,
    CONFLICTS, CONFLICTS_BY_ID, CONFLICTS_TEXT, CONSENSUS, CONSENSUS_BY_ID, CONSENSUS_TEXT, HISTORY, HISTORY_INDEX,
    HISTORY_INDEX_TEXT, HISTORY_LOG, HISTORY_LOG_TEXT,
};
use crate::domain::consensus::{ConsensusRecord, PairKey};
use crate::domain::version::{RecordVersion, VersionedRecord};
use crate::ports::{
    decide_write, history_id, pair_id, ChangeEvent, RecordQuery, RecordStore, StoreError, TimedRecord, WriteDecision,
};
use redb::ReadableTable;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// A current record with the time it last changed (the record holds no float, so its
/// JSON round-trips exactly and re-digests to its stored `consensus_digest`).
#[derive(Serialize, Deserialize)]
pub(super) struct StoredRecord {
    pub(super) changed_at_ms: i64,
    pub(super) record: ConsensusRecord,
    /// Absent in records written before versions existed: the lowest version.
    #[serde(default)]
    version: RecordVersion,
}

impl StoredRecord {
    #[cfg(test)]
    pub(super) fn new(changed_at_ms: i64, record: ConsensusRecord, version: RecordVersion) -> Self {
        StoredRecord { changed_at_ms, record, version }
    }

    /// A history entry's value (compressed, or plain JSON as stores before compression and
    /// current rows before [`CurrentRow`] held it).
    pub(super) fn decode(bytes: &[u8]) -> Result<StoredRecord, StoreError> {
        super::compressed::decode(bytes)
    }

    /// The history entry's value of `record`: the bytes of a [`StoredRecord`] holding it.
    /// A record's fields are declared in RFC 8785 order, so its serde JSON is its canonical
    /// JSON, which the core made for its digest and keeps with it: copied in, not written
    /// again (writing it again was about 8 % of `serve --once`'s CPU on vexhub). Tested
    /// against serialising a [`StoredRecord`].
    fn encode(changed_at_ms: i64, record: &ConsensusRecord, version: RecordVersion) -> Result<Vec<u8>, StoreError> {
        let json = record.canonical_json().map_err(|e| StoreError::Rejected(format!("encoding record: {e}")))?;
        let mut entry = Vec::with_capacity(json.len() + 128);
        entry.extend_from_slice(b"{\"changed_at_ms\":");
        serde_json::to_writer(&mut entry, &changed_at_ms).map_err(json_err)?;
        entry.extend_from_slice(b",\"record\":");
        entry.extend_from_slice(json.as_bytes());
        entry.extend_from_slice(b",\"version\":");
        serde_json::to_writer(&mut entry, &version).map_err(json_err)?;
        entry.push(b'}');
        super::compressed::compress(super::compressed::Kind::Record, &entry)
    }
}

/// The current row of a pair (`vex_consensus`, keyed by [`RowKey`]): what [`decide_write`]
/// compares, the tenant (for scans by tenant), the time and digest that name the record's
/// history entry (`history_id(pair id, changed_at_ms, digest)`) and that entry's position
/// in the tenant's history log, which holds the record itself.
#[derive(Clone, Serialize, Deserialize)]
pub(super) struct CurrentRow {
    changed_at_ms: i64,
    digest: String,
    version: RecordVersion,
    tenant: String,
    /// Whether the record has conflicts (then the pair has a conflict-queue row); rows
    /// without the field (none is expected) count as conflicted.
    #[serde(default = "conflicted_unknown")]
    conflicted: bool,
    /// The history entry's position (absent only between the one-time rewrites of an
    /// older store; `key_history_by_position` fills it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
}

fn conflicted_unknown() -> bool {
    true
}

/// The first byte of a current row in [`PackedRow`]'s form (a JSON row starts with `{`).
const PACKED_ROW: u8 = 1;

/// The digest prefix of every record (`consensus_digest`), which a [`PackedRow`] leaves out.
const DIGEST_PREFIX: &str = "sha256:";

/// A [`CurrentRow`] as the pair-keyed table holds it since rows were packed: after
/// [`PACKED_ROW`], postcard of this (the digest as its 32 bytes; the tenant is the key's):
/// about 55 bytes where the JSON took about 235.
#[derive(Serialize, Deserialize)]
struct PackedRow {
    changed_at_ms: i64,
    digest: [u8; 32],
    version: RecordVersion,
    conflicted: bool,
    seq: Option<u64>,
}

impl CurrentRow {
    /// A row as JSON: in the tables keyed by pair id (the one-time rewrites), and in the
    /// pair-keyed table as stores before [`PackedRow`] wrote it.
    fn decode(bytes: &[u8]) -> Result<CurrentRow, StoreError> {
        serde_json::from_slice(bytes).map_err(json_err)
    }

    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        serde_json::to_vec(self).map_err(json_err)
    }

    /// A row of the pair-keyed table (`tenant`: its key's): packed, or JSON as older
    /// stores wrote it (read as it is; nothing is rewritten).
    fn read(tenant: &[u8], bytes: &[u8]) -> Result<CurrentRow, StoreError> {
        let Some((&PACKED_ROW, rest)) = bytes.split_first() else { return Self::decode(bytes) };
        let p: PackedRow =
            postcard::from_bytes(rest).map_err(|e| StoreError::Rejected(format!("a packed current row: {e}")))?;
        Ok(CurrentRow {
            changed_at_ms: p.changed_at_ms,
            digest: format!("{DIGEST_PREFIX}{}", hex::encode(p.digest)),
            version: p.version,
            tenant: key_text(tenant),
            conflicted: p.conflicted,
            seq: p.seq,
        })
    }

    /// This row's bytes in the pair-keyed table: packed, or JSON if its digest is not a
    /// lowercase SHA-256 one (which [`Self::read`] could not give back as it is).
    fn write(&self) -> Result<Vec<u8>, StoreError> {
        let digest = self
            .digest
            .strip_prefix(DIGEST_PREFIX)
            .filter(|h| h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .and_then(|h| <[u8; 32]>::try_from(hex::decode(h).ok()?).ok());
        let Some(digest) = digest else { return self.encode() };
        let packed = PackedRow {
            changed_at_ms: self.changed_at_ms,
            digest,
            version: self.version,
            conflicted: self.conflicted,
            seq: self.seq,
        };
        postcard::to_extend(&packed, vec![PACKED_ROW])
            .map_err(|e| StoreError::Rejected(format!("packing a current row: {e}")))
    }

    /// The key of the history entry holding this row's record.
    fn history_key(&self, pair_id: &str) -> String {
        history_id(pair_id, self.changed_at_ms, &self.digest)
    }

    /// The record this row names, read from the history log, with the time it last changed
    /// (`pair` names the pair in errors).
    fn load(
        &self,
        pair: &dyn std::fmt::Debug,
        log: &impl ReadableTable<&'static [u8], &'static [u8]>,
    ) -> Result<TimedRecord, StoreError> {
        let seq = self.seq.ok_or_else(|| self.missing(pair))?;
        let s = super::log_rows::entry_at(log, &self.tenant, seq)?.ok_or_else(|| self.missing(pair))?;
        Ok(TimedRecord { record: s.record, changed_at_ms: self.changed_at_ms })
    }

    /// The history log key of the entry this row names, in stores before `log_rows` packed
    /// the log (one entry per row; read only by the one-time rewrites).
    fn entry_key(&self, pair: &dyn std::fmt::Debug) -> Result<String, StoreError> {
        Ok(change_key(&self.tenant, self.seq.ok_or_else(|| self.missing(pair))?))
    }

    fn missing(&self, pair: &dyn std::fmt::Debug) -> StoreError {
        StoreError::Rejected(format!(
            "the current record of pair {pair:?} names history position {:?}, which is missing",
            self.seq
        ))
    }
}

/// The key of a pair's current row and conflict-queue row: (tenant, artifact,
/// vulnerability), owned.
pub(super) type RowKey = (String, String, String);

/// [`RowKey`] borrowed, as the tables take it.
fn row_key(k: &RowKey) -> (&[u8], &[u8], &[u8]) {
    (k.0.as_bytes(), k.1.as_bytes(), k.2.as_bytes())
}

/// A table's pair key, shown as text (in errors).
struct Shown<'a>((&'a [u8], &'a [u8], &'a [u8]));

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("").field(&key_text(self.0 .0)).field(&key_text(self.0 .1)).field(&key_text(self.0 .2)).finish()
    }
}

/// The [`RowKey`] of `pair`.
fn key_of(pair: &PairKey) -> RowKey {
    (pair.tenant.clone(), pair.artifact.clone(), pair.vulnerability.clone())
}

/// The pair id of a current row's key (what history ids and the read cache use).
fn pair_id_of(key: (&[u8], &[u8], &[u8])) -> String {
    pair_id(&PairKey { tenant: key_text(key.0), artifact: key_text(key.1), vulnerability: key_text(key.2) })
}

/// A conflict-queue row of the layout keyed by pair id (`vex_conflict_queue` before
/// [`EmbeddedStore::key_current_rows_by_pair`]): the pair is in the queue; its record is
/// the current one. (Rows that copied the whole record, before that, decode as well: a
/// record has a top-level `tenant`.) Read and written only by the one-time rewrites.
#[derive(Serialize, Deserialize)]
struct ConflictRow {
    tenant: String,
}

/// The `vex_meta` key of the one-time rewrite of current rows that copied their record.
pub(super) const CURRENT_ROWS_IN_HISTORY: &str = "current_rows_point_to_history";

impl EmbeddedStore {
    /// Rewrites a store whose current rows and conflict-queue rows copied the record
    /// (every store before this layout) to [`CurrentRow`]s and [`ConflictRow`]s, once per
    /// database (`once`, with marker [`CURRENT_ROWS_IN_HISTORY`]), in the opening write
    /// transaction. A current record with no
    /// history entry (none is expected: both were always written together) gets one, with
    /// the next position of its tenant's change stream, so nothing is lost.
    pub(super) fn point_current_rows_to_history(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut cur = tx.open_table(CONSENSUS_BY_ID).map_err(err)?;
        let mut hist = tx.open_table(HISTORY).map_err(err)?;
        let mut conf = tx.open_table(CONFLICTS_BY_ID).map_err(err)?;
        let mut changes = tx.open_table(CHANGES).map_err(err)?;
        let mut tails = tx.open_table(CHANGE_TAILS).map_err(err)?;
        let mut old = Vec::new();
        for r in cur.iter().map_err(err)? {
            let (k, v) = r.map_err(err)?;
            if CurrentRow::decode(v.value()).is_err() {
                old.push((k.value().to_string(), v.value().to_vec()));
            }
        }
        let (mut rewritten, mut restored) = (0usize, 0usize);
        for (id, bytes) in &old {
            let s = StoredRecord::decode(bytes)?;
            let row = CurrentRow {
                changed_at_ms: s.changed_at_ms,
                digest: s.record.consensus_digest.clone(),
                version: s.version,
                tenant: s.record.tenant.clone(),
                conflicted: !s.record.conflicts.is_empty(),
                seq: None,
            };
            let hid = row.history_key(id);
            if hist.get(hid.as_str()).map_err(err)?.is_none() {
                hist.insert(hid.as_str(), bytes.as_slice()).map_err(err)?;
                let seq = tails.get(row.tenant.as_str()).map_err(err)?.map_or(0, |v| v.value()) + 1;
                tails.insert(row.tenant.as_str(), seq).map_err(err)?;
                changes.insert(change_key(&row.tenant, seq).as_str(), hid.as_str()).map_err(err)?;
                restored += 1;
            }
            cur.insert(id.as_str(), row.encode()?.as_slice()).map_err(err)?;
            rewritten += 1;
        }
        let mut queued = Vec::new();
        for r in conf.iter().map_err(err)? {
            let (k, v) = r.map_err(err)?;
            let row: ConflictRow = serde_json::from_slice(v.value()).map_err(json_err)?;
            queued.push((k.value().to_string(), serde_json::to_vec(&row).map_err(json_err)?));
        }
        for (id, bytes) in &queued {
            conf.insert(id.as_str(), bytes.as_slice()).map_err(err)?;
        }
        if rewritten > 0 {
            tracing::info!(
                event = "current_rows_point_to_history",
                rows = rewritten,
                history_entries_restored = restored,
                "current records are now stored once, in the history"
            );
        }
        Ok(())
    }
}

/// The `vex_meta` key of the one-time move of the history into the position-keyed log.
pub(super) const HISTORY_BY_POSITION: &str = "history_keyed_by_position";

impl EmbeddedStore {
    /// Moves a store's history (`<history id>` -> record, with the change stream's
    /// `<tenant>\0<position>` -> history id beside it) into the position-keyed log and its
    /// index, gives every current row its entry's position, and deletes the old tables;
    /// once per database (`once`, marker [`HISTORY_BY_POSITION`]), in the opening write
    /// transaction, after
    /// [`Self::backfill_stream`] gave every entry a position.
    pub(super) fn key_history_by_position(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
        let moved = Self::move_history_into_log(tx)?;
        tx.delete_table(HISTORY).map_err(err)?;
        tx.delete_table(CHANGES).map_err(err)?;
        if moved > 0 {
            tracing::info!(
                event = "history_keyed_by_position",
                entries = moved,
                "the history is now one log keyed by change-stream position"
            );
        }
        Ok(())
    }

    /// [`Self::key_history_by_position`]'s copy: every positioned entry into the log and
    /// the index, then each current row's position. Returns the entries moved.
    fn move_history_into_log(tx: &redb::WriteTransaction) -> Result<usize, StoreError> {
        let hist = tx.open_table(HISTORY).map_err(err)?;
        let changes = tx.open_table(CHANGES).map_err(err)?;
        let mut log = tx.open_table(HISTORY_LOG_TEXT).map_err(err)?;
        let mut index = tx.open_table(HISTORY_INDEX_TEXT).map_err(err)?;
        let mut moved = 0usize;
        for r in changes.iter().map_err(err)? {
            let (k, hid) = r.map_err(err)?;
            let seq = position_of(k.value().as_bytes())?;
            let Some(v) = hist.get(hid.value()).map_err(err)? else {
                return Err(StoreError::Rejected(format!("change {seq} names a missing history entry")));
            };
            log.insert(k.value(), v.value()).map_err(err)?;
            index.insert(hid.value(), seq).map_err(err)?;
            moved += 1;
        }
        let mut cur = tx.open_table(CONSENSUS_BY_ID).map_err(err)?;
        let mut rows = Vec::new();
        for r in cur.iter().map_err(err)? {
            let (id, v) = r.map_err(err)?;
            let mut row = CurrentRow::decode(v.value())?;
            let hid = row.history_key(id.value());
            let Some(seq) = index.get(hid.as_str()).map_err(err)? else {
                return Err(StoreError::Rejected(format!(
                    "the current record of pair {} has no history entry",
                    id.value()
                )));
            };
            row.seq = Some(seq.value());
            rows.push((id.value().to_string(), row.encode()?));
        }
        for (id, bytes) in &rows {
            cur.insert(id.as_str(), bytes.as_slice()).map_err(err)?;
        }
        Ok(moved)
    }
}

/// The `vex_meta` key of the one-time rewrite of current rows and conflict-queue rows
/// keyed by pair id.
pub(super) const CURRENT_ROWS_BY_PAIR: &str = "current_rows_keyed_by_pair";

impl EmbeddedStore {
    /// Rewrites the current rows and the conflict queue of a store that keyed them by pair
    /// id (every store before this layout) to rows keyed by the pair ([`RowKey`]), once
    /// per database (`once`, marker [`CURRENT_ROWS_BY_PAIR`]), in the opening write
    /// transaction, after [`Self::key_history_by_position`]: the old tables are renamed
    /// aside, each row is copied under its pair (read from the record its row names; the
    /// row's bytes are unchanged), and the old tables are deleted. A queue row whose pair
    /// has no conflicted current row (none is expected: an entry exists only with its
    /// record) is dropped, and counted in the log line.
    pub(super) fn key_current_rows_by_pair(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
        const ROWS_BY_ID: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("vex_consensus_by_pair_id");
        const QUEUE_BY_ID: redb::TableDefinition<&str, &[u8]> =
            redb::TableDefinition::new("vex_conflict_queue_by_pair_id");
        // Opened first so that both exist (a new database has them empty).
        tx.open_table(CONSENSUS_BY_ID).map_err(err)?;
        tx.open_table(CONFLICTS_BY_ID).map_err(err)?;
        tx.rename_table(CONSENSUS_BY_ID, ROWS_BY_ID).map_err(err)?;
        tx.rename_table(CONFLICTS_BY_ID, QUEUE_BY_ID).map_err(err)?;
        let (mut rows, mut queued, mut dropped) = (0usize, 0usize, 0usize);
        {
            let old = tx.open_table(ROWS_BY_ID).map_err(err)?;
            let log = tx.open_table(HISTORY_LOG_TEXT).map_err(err)?;
            let mut cur = tx.open_table(CONSENSUS_TEXT).map_err(err)?;
            // The conflicted pairs' keys, by pair id (the old queue's key).
            let mut conflicted = std::collections::HashMap::new();
            for r in old.iter().map_err(err)? {
                let (id, v) = r.map_err(err)?;
                let row = CurrentRow::decode(v.value())?;
                let entry = log.get(row.entry_key(&id.value())?.as_str()).map_err(err)?;
                let record = StoredRecord::decode(entry.ok_or_else(|| row.missing(&id.value()))?.value())?.record;
                let key: RowKey = (record.tenant, record.artifact, record.vulnerability);
                cur.insert((key.0.as_str(), key.1.as_str(), key.2.as_str()), v.value()).map_err(err)?;
                rows += 1;
                if row.conflicted {
                    conflicted.insert(id.value().to_string(), key);
                }
            }
            let old_queue = tx.open_table(QUEUE_BY_ID).map_err(err)?;
            let mut queue = tx.open_table(CONFLICTS_TEXT).map_err(err)?;
            for r in old_queue.iter().map_err(err)? {
                let (id, _) = r.map_err(err)?;
                match conflicted.get(id.value()) {
                    Some(key) => {
                        queue.insert((key.0.as_str(), key.1.as_str(), key.2.as_str()), ()).map_err(err)?;
                        queued += 1;
                    }
                    None => dropped += 1,
                }
            }
        }
        tx.delete_table(ROWS_BY_ID).map_err(err)?;
        tx.delete_table(QUEUE_BY_ID).map_err(err)?;
        if rows > 0 || dropped > 0 {
            tracing::info!(
                event = "current_rows_keyed_by_pair",
                rows,
                conflict_queue_rows = queued,
                conflict_queue_rows_dropped = dropped,
                "current rows and the conflict queue are now keyed by pair"
            );
        }
        Ok(())
    }
}

/// One record's rows, encoded before the write transaction (on the writer's thread: the
/// transaction holds redb's one write lock, so only redb's own work runs under it, while
/// other writers encode their batches).
struct Prepared {
    /// The pair id (history ids and the read cache use it).
    id: String,
    key: RowKey,
    /// The new current row, its position not yet known.
    row: CurrentRow,
    history_key: String,
    history_bytes: Vec<u8>,
}

impl Prepared {
    fn new(v: &VersionedRecord, changed_at_ms: i64) -> Result<Prepared, StoreError> {
        let r = &v.record;
        let pair = r.pair();
        let id = pair_id(&pair);
        let row = CurrentRow {
            changed_at_ms,
            digest: r.consensus_digest.clone(),
            version: v.version,
            tenant: r.tenant.clone(),
            conflicted: !r.conflicts.is_empty(),
            seq: None,
        };
        Ok(Prepared {
            history_key: row.history_key(&id),
            history_bytes: StoredRecord::encode(changed_at_ms, r, v.version)?,
            row,
            id,
            key: (pair.tenant, pair.artifact, pair.vulnerability),
        })
    }
}

/// Names every current row's entry in the index (before the current rows are cleared, so
/// that each pair's history keeps its entries).
pub(super) fn index_current_entries(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let cur = tx.open_table(CONSENSUS).map_err(err)?;
    let mut index = tx.open_table(HISTORY_INDEX).map_err(err)?;
    for r in cur.iter().map_err(err)? {
        let (key, v) = r.map_err(err)?;
        let row = CurrentRow::read(key.value().0, v.value())?;
        if let Some(seq) = row.seq {
            index.insert(row.history_key(&pair_id_of(key.value())).as_bytes(), seq).map_err(err)?;
        }
    }
    Ok(())
}

/// `put_records`' writes, in `tx`; returns which records replaced the current one (their
/// index), for the read cache.
fn write_prepared(
    tx: &redb::WriteTransaction,
    prepared: &[Prepared],
    tally: &mut Tally,
) -> Result<Vec<(String, usize)>, StoreError> {
    let mut written = Vec::new();
    {
        let mut cur = tx.open_table(CONSENSUS).map_err(err)?;
        let mut log = tx.open_table(HISTORY_LOG).map_err(err)?;
        let mut index_of = tx.open_table(HISTORY_INDEX).map_err(err)?;
        let mut conf = tx.open_table(CONFLICTS).map_err(err)?;
        let mut tails = tx.open_table(CHANGE_TAILS).map_err(err)?;
        // Each tenant's last position, written once after the loop (not once per entry).
        let mut tail_of: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
        // Each tenant's new entries (its first new position, then the entries in position
        // order), appended to its log after the loop, packed into rows (`log_rows`).
        let mut appended: std::collections::HashMap<&str, (u64, Vec<&[u8]>)> = std::collections::HashMap::new();
        for (index, p) in prepared.iter().enumerate() {
            let key = row_key(&p.key);
            let stored = match cur.get(key).map_err(err)? {
                Some(v) => Some(CurrentRow::read(key.0, v.value())?),
                None => None,
            };
            let decision =
                decide_write(stored.as_ref().map(|s| (s.version, s.digest.as_str())), p.row.version, &p.row.digest);
            match decision {
                WriteDecision::Stale => continue,
                WriteDecision::Unchanged => {}
                WriteDecision::RaiseVersion => {
                    let Some(s) = &stored else { continue };
                    let row = CurrentRow { version: p.row.version, ..s.clone() };
                    cur.insert(key, row.write()?.as_slice()).map_err(err)?;
                    tally.rows(&CONSENSUS, 1);
                }
                WriteDecision::Write => {
                    written.push((p.id.clone(), index));
                    // A replay of an entry already in the history keeps its position.
                    let known = index_of.get(p.history_key.as_bytes()).map_err(err)?.map(|v| v.value());
                    let seq = match known {
                        Some(seq) => seq,
                        None => {
                            let tenant = p.row.tenant.as_str();
                            let seq = match tail_of.get(tenant) {
                                Some(s) => *s,
                                None => tails.get(tenant).map_err(err)?.map_or(0, |v| v.value()),
                            } + 1;
                            tail_of.insert(tenant, seq);
                            appended.entry(tenant).or_insert_with(|| (seq, Vec::new())).1.push(&p.history_bytes);
                            seq
                        }
                    };
                    // The entry this write replaces is no longer the current row's: from
                    // now on the index names it (a new pair's first entry costs no index row).
                    if let Some((old_key, old_seq)) =
                        stored.as_ref().and_then(|s| Some((s.history_key(&p.id), s.seq?))).filter(|(_, o)| *o != seq)
                    {
                        index_of.insert(old_key.as_bytes(), old_seq).map_err(err)?;
                        tally.index(&HISTORY_INDEX, 1);
                    }
                    let row = CurrentRow { seq: Some(seq), ..p.row.clone() };
                    cur.insert(key, row.write()?.as_slice()).map_err(err)?;
                    tally.rows(&CONSENSUS, 1);
                }
            }
            let unchanged = decision != WriteDecision::Write;
            if !p.row.conflicted {
                // Only a pair whose stored row was conflicted can have a queue entry.
                if stored.as_ref().is_some_and(|s| s.conflicted) && conf.remove(key).map_err(err)?.is_some() {
                    tally.rows(&CONFLICTS, 1);
                }
            } else if !unchanged || conf.get(key).map_err(err)?.is_none() {
                conf.insert(key, ()).map_err(err)?;
                tally.rows(&CONFLICTS, 1);
            }
        }
        for (tenant, (first, entries)) in appended {
            let rows = super::log_rows::append(&mut log, tenant, first, &entries)?;
            tally.rows(&HISTORY_LOG, rows);
        }
        for (tenant, seq) in tail_of {
            tails.insert(tenant, seq).map_err(err)?;
            tally.index(&CHANGE_TAILS, 1);
        }
    }
    Ok(written)
}

/// The current rows from `tenant`'s first on, in (artifact, vulnerability) order (the
/// caller stops at the first row of another tenant).
fn tenant_rows<'t>(
    t: &'t redb::ReadOnlyTable<PairColumns, &'static [u8]>,
    tenant: &str,
) -> Result<redb::Range<'t, PairColumns, &'static [u8]>, StoreError> {
    t.range((tenant.as_bytes(), &b""[..], &b""[..])..).map_err(err)
}

#[async_trait::async_trait]
impl RecordStore for EmbeddedStore {
    /// One write transaction: each record is compared with the stored one
    /// ([`decide_write`]) and written, with its history entry and conflict-queue change,
    /// only if it is not older; all of it commits together. The rows are encoded first
    /// ([`Prepared`]), outside the transaction.
    async fn put_records(&self, records: &[VersionedRecord], changed_at_ms: i64) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let prepared =
            records.iter().map(|v| Prepared::new(v, changed_at_ms)).collect::<Result<Vec<_>, StoreError>>()?;
        let written = self.write(move |tx, tally| write_prepared(tx, &prepared, tally)).await?;
        self.reads.committed(&written, |&i| {
            // The JSON the core kept, borrowed (copied once, into the cached answer).
            let json = records[i].record.canonical_json().ok()?;
            crate::ports::timed_record_json(json.as_bytes(), changed_at_ms).ok()
        });
        Ok(())
    }

    async fn get_record(&self, pair: &PairKey) -> Result<Option<ConsensusRecord>, StoreError> {
        let key = key_of(pair);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CONSENSUS).map_err(err)?;
            let hist = tx.open_table(HISTORY_LOG).map_err(err)?;
            match t.get(row_key(&key)).map_err(err)? {
                Some(v) => Ok(Some(CurrentRow::read(key.0.as_bytes(), v.value())?.load(&key, &hist)?.record)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn list_records(
        &self,
        tenant: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<ConsensusRecord>, StoreError> {
        let tenant = tenant.map(str::to_string);
        let mut records = self
            .blocking(move |db| {
                let tx = db.begin_read().map_err(err)?;
                let table = tx.open_table(CONSENSUS).map_err(err)?;
                let hist = tx.open_table(HISTORY_LOG).map_err(err)?;
                let mut out = Vec::new();
                // One tenant's rows are one range of the table.
                let rows = match tenant.as_deref() {
                    Some(t) => tenant_rows(&table, t)?,
                    None => table.iter().map_err(err)?,
                };
                for r in rows {
                    let (k, v) = r.map_err(err)?;
                    if tenant.as_deref().is_some_and(|t| t.as_bytes() != k.value().0) {
                        break;
                    }
                    let row = CurrentRow::read(k.value().0, v.value())?;
                    if since_ms.is_some_and(|m| row.changed_at_ms < m) {
                        continue;
                    }
                    out.push(row.load(&Shown(k.value()), &hist)?.record);
                }
                Ok(out)
            })
            .await?;
        records.sort_by(|a, b| {
            a.artifact.cmp(&b.artifact).then(a.vulnerability.cmp(&b.vulnerability)).then(a.tenant.cmp(&b.tenant))
        });
        Ok(records)
    }

    async fn query_records(&self, q: &RecordQuery) -> Result<Vec<TimedRecord>, StoreError> {
        let q = q.clone();
        // One pair: a key lookup, not a scan.
        if let (Some(artifact), Some(vulnerability)) = (&q.artifact, &q.vulnerability) {
            let key: RowKey = (q.tenant.clone(), artifact.clone(), vulnerability.clone());
            return self
                .blocking(move |db| {
                    let tx = db.begin_read().map_err(err)?;
                    let t = tx.open_table(CONSENSUS).map_err(err)?;
                    let hist = tx.open_table(HISTORY_LOG).map_err(err)?;
                    let Some(v) = t.get(row_key(&key)).map_err(err)? else { return Ok(Vec::new()) };
                    let timed = CurrentRow::read(key.0.as_bytes(), v.value())?.load(&key, &hist)?;
                    Ok(if q.limit > 0 && q.matches(&timed) { vec![timed] } else { Vec::new() })
                })
                .await;
        }
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CONSENSUS).map_err(err)?;
            let hist = tx.open_table(HISTORY_LOG).map_err(err)?;
            let mut out = Vec::new();
            for r in tenant_rows(&t, &q.tenant)? {
                let (k, v) = r.map_err(err)?;
                if q.tenant.as_bytes() != k.value().0 {
                    break;
                }
                let timed = CurrentRow::read(k.value().0, v.value())?.load(&Shown(k.value()), &hist)?;
                if q.matches(&timed) {
                    out.push(timed);
                    // The rows come in the answer's order: the first `limit` matches are it.
                    if out.len() >= q.limit {
                        break;
                    }
                }
            }
            out.sort_by(|a, b| {
                (a.record.artifact.as_bytes(), a.record.vulnerability.as_bytes())
                    .cmp(&(b.record.artifact.as_bytes(), b.record.vulnerability.as_bytes()))
            });
            out.truncate(q.limit);
            Ok(out)
        })
        .await
    }

    async fn current_record_json(&self, pair: &PairKey) -> Result<Option<Arc<[u8]>>, StoreError> {
        let id = pair_id(pair);
        if let Some(hit) = self.reads.get(&id) {
            return Ok(Some(hit));
        }
        let key = key_of(pair);
        let reads = self.reads.clone();
        self.blocking(move |db| {
            let generation = reads.generation();
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CONSENSUS).map_err(err)?;
            let hist = tx.open_table(HISTORY_LOG).map_err(err)?;
            let Some(v) = t.get(row_key(&key)).map_err(err)? else { return Ok(None) };
            let json: Arc<[u8]> =
                CurrentRow::read(key.0.as_bytes(), v.value())?.load(&key, &hist)?.canonical_json()?.into();
            reads.fill(generation, &id, json.clone());
            Ok(Some(json))
        })
        .await
    }

    async fn record_history(&self, pair: &PairKey) -> Result<Vec<TimedRecord>, StoreError> {
        let id = pair_id(pair);
        let (start, end) = (format!("{id}:"), format!("{id};"));
        let tenant = pair.tenant.clone();
        let key = key_of(pair);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let index = tx.open_table(HISTORY_INDEX).map_err(err)?;
            let log = tx.open_table(HISTORY_LOG).map_err(err)?;
            // The earlier entries (the index), and the current one (the current row); an
            // index written before this layout also names the current one.
            let mut positions = Vec::new();
            for r in index.range(start.as_bytes()..end.as_bytes()).map_err(err)? {
                positions.push(r.map_err(err)?.1.value());
            }
            if let Some(v) = tx.open_table(CONSENSUS).map_err(err)?.get(row_key(&key)).map_err(err)? {
                positions.extend(CurrentRow::read(key.0.as_bytes(), v.value())?.seq);
            }
            positions.sort_unstable();
            positions.dedup();
            let mut out = Vec::new();
            for seq in positions {
                let Some(s) = super::log_rows::entry_at(&log, &tenant, seq)? else {
                    return Err(StoreError::Rejected(format!(
                        "history entry at position {seq} of pair {id} is missing"
                    )));
                };
                out.push(TimedRecord { record: s.record, changed_at_ms: s.changed_at_ms });
            }
            out.sort_by(|a, b| {
                a.changed_at_ms.cmp(&b.changed_at_ms).then(a.record.consensus_digest.cmp(&b.record.consensus_digest))
            });
            Ok(out)
        })
        .await
    }

    async fn changes_after(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        self.read_changes(tenant, after, limit).await
    }

    async fn change_tail(&self, tenant: &str) -> Result<u64, StoreError> {
        self.stream_tail(tenant).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::Status;
    use crate::stores::contract::{records_of, sample_observation};

    /// A current row reads back as it was written: packed (its tenant from the key), as
    /// JSON when its digest is not a lowercase SHA-256 one, and as JSON an older store
    /// wrote it; a packed row cut short is an error.
    #[test]
    fn a_current_row_reads_back_packed_or_as_json() {
        let row = |digest: &str, seq| CurrentRow {
            changed_at_ms: 1_765_000_000_123,
            digest: digest.into(),
            version: RecordVersion { epoch: 3, offset: i64::MIN, observations: 9 },
            tenant: "tenant-a".into(),
            conflicted: true,
            seq,
        };
        let same = |a: &CurrentRow, b: &CurrentRow| {
            (a.changed_at_ms, &a.digest, a.version, &a.tenant, a.conflicted, a.seq)
                == (b.changed_at_ms, &b.digest, b.version, &b.tenant, b.conflicted, b.seq)
        };
        let sha = format!("sha256:{}", "0123456789abcdef".repeat(4));
        for r in [row(&sha, Some(u64::MAX)), row(&sha, None)] {
            let bytes = r.write().unwrap();
            assert_eq!(bytes[0], PACKED_ROW);
            assert!(bytes.len() < 70, "{} bytes", bytes.len());
            assert!(same(&CurrentRow::read(b"tenant-a", &bytes).unwrap(), &r));
            let e = CurrentRow::read(b"tenant-a", &bytes[..bytes.len() - 1]).err().unwrap();
            assert!(e.to_string().contains("packed current row"), "{e}");
        }
        for odd in [sha.to_uppercase().replace("SHA256", "sha256"), "sha512:00".into(), format!("{sha}00")] {
            let r = row(&odd, Some(4));
            let bytes = r.write().unwrap();
            assert_eq!(bytes[0], b'{', "{odd}");
            assert!(same(&CurrentRow::read(b"tenant-a", &bytes).unwrap(), &r), "{odd}");
        }
        let older = row(&sha, Some(4));
        assert!(
            same(&CurrentRow::read(b"ignored", &older.encode().unwrap()).unwrap(), &older),
            "JSON keeps its tenant"
        );
    }

    /// A history entry decodes to the record it was written from.
    #[test]
    fn the_history_entry_decodes_to_its_record() {
        let o = sample_observation("t", "vendor", "pkg:npm/left@1.0.0", "CVE-2024-1", Status::NotAffected);
        let pair = PairKey { tenant: "t".into(), artifact: o.artifact.to_string(), vulnerability: "CVE-2024-1".into() };
        let record = records_of(&[o], &pair);
        let version = RecordVersion { epoch: 2, offset: -3, observations: 4 };
        let back = StoredRecord::decode(&StoredRecord::encode(7, &record, version).unwrap()).unwrap();
        assert_eq!((back.changed_at_ms, back.version), (7, version));
        assert_eq!(back.record.to_canonical_json().unwrap(), record.to_canonical_json().unwrap());
    }

    /// A history entry made from the canonical JSON the core kept has the bytes of a
    /// [`StoredRecord`] holding the record, serialised (the same frame, so stores written
    /// either way read alike), and one made from a record without kept JSON (decoded, so
    /// the JSON is made afresh) too.
    #[test]
    fn the_history_entry_from_the_kept_json_is_the_stored_record_byte_for_byte() {
        // An issuer with what JSON escapes, and text beyond ASCII.
        let issuer = "vendor \" \\ \t \u{1} é \u{1F600} <&>";
        let o = sample_observation("t", issuer, "pkg:npm/left@1.0.0", "CVE-2024-1", Status::NotAffected);
        let pair = PairKey { tenant: "t".into(), artifact: o.artifact.to_string(), vulnerability: "CVE-2024-1".into() };
        let record = records_of(&[o], &pair);
        let kept = matches!(record.canonical_json().unwrap(), std::borrow::Cow::Borrowed(_));
        assert!(kept, "a record fresh from the core keeps its JSON");
        let version = RecordVersion { epoch: 2, offset: -3, observations: 4 };
        let written = serde_json::to_vec(&StoredRecord::new(-7, record.clone(), version)).unwrap();
        let want = super::super::compressed::compress(super::super::compressed::Kind::Record, &written).unwrap();
        assert_eq!(StoredRecord::encode(-7, &record, version).unwrap(), want);
        let decoded = StoredRecord::decode(&want).unwrap().record;
        let made = matches!(decoded.canonical_json().unwrap(), std::borrow::Cow::Owned(_));
        assert!(made, "a decoded record keeps no JSON");
        assert_eq!(StoredRecord::encode(-7, &decoded, version).unwrap(), want);
    }
}
