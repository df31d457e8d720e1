//! The one-time rewrite of the hot tables (`vex_observations`, `vex_consensus`,
//! `vex_consensus_history_log`, `vex_consensus_history_index`, `vex_conflict_queue`) from
//! text keys to byte keys.
//!
//! Invariants:
//! - Once per database (`once`, marker [`BYTE_KEYS`]), in the opening write transaction,
//!   after every older rewrite (they read and write the text-keyed tables): each table is
//!   renamed aside, its rows are copied under the same key bytes (a `&str` key's bytes are
//!   its UTF-8; a tuple's columns each), and the old table is deleted. Values are copied
//!   unchanged, so nothing else about a store changes.
//! - Byte order is text order (UTF-8 compares as its bytes), so every key range the store
//!   reads (a tenant's rows, a package's observations, a tenant's change stream) holds the
//!   same rows after the rewrite as before it.

use super::{
    err, StoreError, CONFLICTS, CONFLICTS_TEXT, CONSENSUS, CONSENSUS_TEXT, HISTORY_INDEX, HISTORY_INDEX_TEXT,
    HISTORY_LOG, HISTORY_LOG_TEXT, OBSERVATIONS, OBSERVATIONS_TEXT,
};
use redb::{ReadableTable, TableDefinition, TableHandle, WriteTransaction};

/// The `vex_meta` key of the rewrite to byte keys.
pub(super) const BYTE_KEYS: &str = "hot_tables_keyed_by_bytes";

/// Rewrites the five text-keyed tables to byte keys (see the module's invariants); logs
/// the rows moved when there were any.
pub(super) fn key_tables_by_bytes(tx: &WriteTransaction) -> Result<(), StoreError> {
    let mut moved = 0u64;
    moved += rekey(tx, OBSERVATIONS_TEXT, OBSERVATIONS)?;
    moved += rekey(tx, HISTORY_LOG_TEXT, HISTORY_LOG)?;
    moved += rekey(tx, HISTORY_INDEX_TEXT, HISTORY_INDEX)?;
    moved += rekey(tx, CONSENSUS_TEXT, CONSENSUS)?;
    moved += rekey(tx, CONFLICTS_TEXT, CONFLICTS)?;
    if moved > 0 {
        tracing::info!(
            event = "hot_tables_keyed_by_bytes",
            rows = moved,
            "the store's hot tables are now keyed by bytes"
        );
    }
    Ok(())
}

/// A text key type and the byte key type holding the same bytes.
trait TextKey: redb::Key + 'static {
    type Bytes: redb::Key + 'static;
    fn bytes<'a>(key: Self::SelfType<'a>) -> <Self::Bytes as redb::Value>::SelfType<'a>;
    /// The way back (tests make a store of the layout before byte keys with it).
    #[cfg(test)]
    fn text<'a>(key: <Self::Bytes as redb::Value>::SelfType<'a>) -> Self::SelfType<'a>;
}

impl TextKey for &'static str {
    type Bytes = &'static [u8];
    fn bytes<'a>(key: <Self as redb::Value>::SelfType<'a>) -> <Self::Bytes as redb::Value>::SelfType<'a> {
        key.as_bytes()
    }
    #[cfg(test)]
    fn text<'a>(key: <Self::Bytes as redb::Value>::SelfType<'a>) -> <Self as redb::Value>::SelfType<'a> {
        std::str::from_utf8(key).unwrap()
    }
}

impl TextKey for (&'static str, &'static str, &'static str) {
    type Bytes = (&'static [u8], &'static [u8], &'static [u8]);
    fn bytes<'a>(key: <Self as redb::Value>::SelfType<'a>) -> <Self::Bytes as redb::Value>::SelfType<'a> {
        let (t, a, v) = key;
        (t.as_bytes(), a.as_bytes(), v.as_bytes())
    }
    #[cfg(test)]
    fn text<'a>(key: <Self::Bytes as redb::Value>::SelfType<'a>) -> <Self as redb::Value>::SelfType<'a> {
        let text = |b| std::str::from_utf8(b).unwrap();
        (text(key.0), text(key.1), text(key.2))
    }
}

/// Moves the rows of `old` (text keys) into `new` (the same name, the same key bytes):
/// `old` is renamed aside, copied row by row, and deleted. Returns the rows moved.
fn rekey<K: TextKey, V: redb::Value + 'static>(
    tx: &WriteTransaction,
    old: TableDefinition<'static, K, V>,
    new: TableDefinition<'static, K::Bytes, V>,
) -> Result<u64, StoreError> {
    let aside_name = format!("{}_text_keyed", old.name());
    let aside = TableDefinition::<K, V>::new(&aside_name);
    // Opened first so that it exists (a new database has it empty).
    tx.open_table(old).map_err(err)?;
    tx.rename_table(old, aside).map_err(err)?;
    let mut moved = 0u64;
    {
        let from = tx.open_table(aside).map_err(err)?;
        let mut to = tx.open_table(new).map_err(err)?;
        for r in from.iter().map_err(err)? {
            let (k, v) = r.map_err(err)?;
            to.insert(K::bytes(k.value()), v.value()).map_err(err)?;
            moved += 1;
        }
    }
    tx.delete_table(aside).map_err(err)?;
    Ok(moved)
}

#[cfg(test)]
mod tests {
    use super::super::{EmbeddedStore, DB_FILE, META};
    use super::*;
    use crate::domain::consensus::PairKey;
    use crate::domain::model::Status;
    use crate::domain::version::{RecordVersion, VersionedRecord};
    use crate::ports::{ConflictQueue, ObservationStore, RecordStore, SchemaStore};
    use crate::stores::contract::{records_of, sample_observation};
    use redb::ReadableTableMetadata;

    /// Moves `new`'s rows back into a text-keyed table of the same name (the layout
    /// before this rewrite).
    fn back_to_text<K: TextKey, V: redb::Value + 'static>(
        tx: &WriteTransaction,
        new: TableDefinition<'static, K::Bytes, V>,
        old: TableDefinition<'static, K, V>,
    ) {
        let aside = TableDefinition::<K::Bytes, V>::new("aside");
        tx.rename_table(new, aside).unwrap();
        {
            let from = tx.open_table(aside).unwrap();
            let mut to = tx.open_table(old).unwrap();
            for r in from.iter().unwrap() {
                let (k, v) = r.unwrap();
                to.insert(K::text(k.value()), v.value()).unwrap();
            }
        }
        tx.delete_table(aside).unwrap();
    }

    /// What a store answers, read through its ports.
    async fn answers(store: &EmbeddedStore, pairs: &[PairKey]) -> String {
        let mut out = Vec::new();
        for tenant in ["t", "u"] {
            out.push(format!("{:?}", store.tenant_packages(tenant).await.unwrap()));
            for p in store.tenant_packages(tenant).await.unwrap() {
                let obs = store.observations_for_package(tenant, &p).await.unwrap();
                out.push(format!("{:?}", obs.iter().map(|o| o.id.to_string()).collect::<Vec<_>>()));
            }
            let changes = store.changes_after(tenant, 0, 100).await.unwrap();
            out.push(format!("{:?}", changes.iter().map(|c| (c.seq, c.entry.changed_at_ms)).collect::<Vec<_>>()));
            let listed = store.list_records(Some(tenant), None).await.unwrap();
            out.push(format!("{:?}", listed.iter().map(|r| r.consensus_digest.clone()).collect::<Vec<_>>()));
        }
        for pair in pairs {
            let history = store.record_history(pair).await.unwrap();
            out.push(format!("{:?}", history.iter().map(|h| (h.changed_at_ms, h.record.status)).collect::<Vec<_>>()));
            out.push(format!("{:?}", store.get_record(pair).await.unwrap().map(|r| r.consensus_digest)));
        }
        out.push(format!("{:?}", store.conflict_queue_depths().await.unwrap()));
        out.push(format!("{:?}", store.stored_packages().await.unwrap()));
        out.join("\n")
    }

    /// A store written with text keys (every layout before this one) is rewritten to
    /// byte keys when opened, once, and answers every read as it did: observations by
    /// package and tenant, current records by tenant and pair, each pair's history (with
    /// a replaced entry, so the index has a row), the change stream, the conflict queue.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_store_with_text_keys_is_rewritten_to_byte_keys_once_and_reads_alike() {
        let dir = tempfile::tempdir().unwrap();
        let obs = [
            sample_observation("t", "vendor", "pkg:npm/left@1.0.0", "CVE-2024-1", Status::NotAffected),
            sample_observation("t", "scanner", "pkg:npm/left@1.0.0", "CVE-2024-1", Status::Affected),
            sample_observation("t", "vendor", "pkg:npm/right@2.0.0", "CVE-2024-2", Status::Fixed),
            // Text beyond ASCII in a key.
            sample_observation("u", "vendor", "pkg:npm/caf\u{e9}@1.0.0", "CVE-2024-3", Status::Affected),
        ];
        let pair = |o: &crate::domain::model::Observation| PairKey {
            tenant: o.tenant.to_string(),
            artifact: o.artifact.to_string(),
            vulnerability: o.vulnerability.to_string(),
        };
        let pairs: Vec<PairKey> = [&obs[0], &obs[2], &obs[3]].into_iter().map(pair).collect();
        let version = |n| RecordVersion { epoch: 1, offset: 0, observations: n };
        let store = EmbeddedStore::open(dir.path()).unwrap();
        store.put_observations(&obs).await.unwrap();
        // The first pair: one statement, then both (a conflict, replacing the first entry).
        let one = VersionedRecord { record: records_of(&obs[..1], &pairs[0]), version: version(1) };
        let both = VersionedRecord { record: records_of(&obs[..2], &pairs[0]), version: version(2) };
        assert!(!both.record.conflicts.is_empty(), "the test needs a conflicted pair");
        store.put_records(&[one], 1_000).await.unwrap();
        let others: Vec<VersionedRecord> = [(&obs[2..3], &pairs[1]), (&obs[3..4], &pairs[2])]
            .into_iter()
            .map(|(o, p)| VersionedRecord { record: records_of(o, p), version: version(1) })
            .collect();
        store.put_records(&[vec![both], others].concat(), 2_000).await.unwrap();
        let before = answers(&store, &pairs).await;
        assert_eq!(store.record_history(&pairs[0]).await.unwrap().len(), 2, "an entry replaced");
        assert_eq!(store.conflict_queue_depth().await.unwrap(), 1);
        drop(store);

        // The layout before: the same rows under text keys, no marker.
        {
            let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
            let tx = db.begin_write().unwrap();
            back_to_text(&tx, OBSERVATIONS, OBSERVATIONS_TEXT);
            back_to_text(&tx, HISTORY_LOG, HISTORY_LOG_TEXT);
            back_to_text(&tx, HISTORY_INDEX, HISTORY_INDEX_TEXT);
            back_to_text(&tx, CONSENSUS, CONSENSUS_TEXT);
            back_to_text(&tx, CONFLICTS, CONFLICTS_TEXT);
            tx.open_table(META).unwrap().remove(BYTE_KEYS).unwrap();
            tx.commit().unwrap();
            let tx = db.begin_read().unwrap();
            assert!(tx.open_table(OBSERVATIONS).is_err(), "the tables have text keys now");
            assert_eq!(tx.open_table(OBSERVATIONS_TEXT).unwrap().len().unwrap(), 4);
        }

        for _ in 0..2 {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert_eq!(answers(&store, &pairs).await, before);
            let tables = store.table_lengths().await.unwrap();
            assert!(!tables.keys().any(|t| t.ends_with("_text_keyed")), "{tables:?}");
            drop(store);
            let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
            let tx = db.begin_read().unwrap();
            assert_eq!(tx.open_table(OBSERVATIONS).unwrap().len().unwrap(), 4, "byte keys");
            assert_eq!(tx.open_table(HISTORY_INDEX).unwrap().len().unwrap(), 1, "the replaced entry");
            assert_eq!(tx.open_table(CONFLICTS).unwrap().len().unwrap(), 1);
            assert!(tx.open_table(META).unwrap().get(BYTE_KEYS).unwrap().is_some());
        }
    }
}
