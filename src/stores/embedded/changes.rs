//! The change stream on redb: the history log itself (`vex_consensus_history_log`:
//! `<tenant>\0<position, 20 digits>` -> history entry; `vex_consensus_change_tails`: each
//! tenant's last position), read through [`crate::ports::RecordStore::changes_after`] and
//! `change_tail`; `put_records` gives each new history entry its position.
//!
//! Invariant: history written before the stream existed gets positions once, when the
//! database is opened (after those already given, oldest first), before `records` moves
//! the history into the log.

use super::records::StoredRecord;
use super::{change_key, err, EmbeddedStore, CHANGES, CHANGE_TAILS, HISTORY, HISTORY_LOG};
use crate::ports::{ChangeEvent, StoreError, TimedRecord};
use redb::ReadableTable;

/// The `vex_meta` key of the change stream's backfill of older history.
pub(super) const STREAM_BACKFILL: &str = "history_stream_backfill";

impl EmbeddedStore {
    /// History written before the change stream existed has no position: gives each such
    /// entry its tenant's next positions (after those already given, oldest first), so a
    /// consumer that starts from 0 gets every change the store holds. Once per database
    /// (`vex_meta`).
    pub(super) fn backfill_stream(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut changes = tx.open_table(CHANGES).map_err(err)?;
        let mut tails = tx.open_table(CHANGE_TAILS).map_err(err)?;
        let hist = tx.open_table(HISTORY).map_err(err)?;
        let mut streamed = std::collections::HashSet::new();
        for r in changes.iter().map_err(err)? {
            let (_, hid) = r.map_err(err)?;
            streamed.insert(hid.value().to_string());
        }
        let mut missing = Vec::new();
        for r in hist.iter().map_err(err)? {
            let (hid, v) = r.map_err(err)?;
            if !streamed.contains(hid.value()) {
                let s = StoredRecord::decode(v.value())?;
                missing.push((s.changed_at_ms, hid.value().to_string(), s.record.tenant));
            }
        }
        missing.sort();
        for (_, hid, tenant) in &missing {
            let seq = tails.get(tenant.as_str()).map_err(err)?.map_or(0, |v| v.value()) + 1;
            tails.insert(tenant.as_str(), seq).map_err(err)?;
            changes.insert(change_key(tenant, seq).as_str(), hid.as_str()).map_err(err)?;
        }
        if !missing.is_empty() {
            tracing::info!(
                event = "history_stream_backfill",
                entries = missing.len(),
                "history written before the change stream existed is now in the stream"
            );
        }
        Ok(())
    }

    /// The tenant's positions after `after` (at most `limit`), each with its history entry.
    pub(super) async fn read_changes(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<ChangeEvent>, StoreError> {
        let tenant = tenant.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let log = tx.open_table(HISTORY_LOG).map_err(err)?;
            let entries = super::log_rows::entries_from(&log, &tenant, after.saturating_add(1), limit)?;
            Ok(entries
                .into_iter()
                .map(|(seq, s)| ChangeEvent {
                    seq,
                    entry: TimedRecord { record: s.record, changed_at_ms: s.changed_at_ms },
                })
                .collect())
        })
        .await
    }

    /// The tenant's last position (0 when it has none).
    pub(super) async fn stream_tail(&self, tenant: &str) -> Result<u64, StoreError> {
        let tenant = tenant.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CHANGE_TAILS).map_err(err)?;
            Ok(t.get(tenant.as_str()).map_err(err)?.map_or(0, |v| v.value()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::super::DB_FILE;
    use super::*;
    use crate::domain::consensus::PairKey;
    use crate::domain::version::VersionedRecord;
    use crate::ports::RecordStore;
    use redb::Database;

    /// A database a build before the change stream left (history, no positions) gets
    /// every history entry into the stream when opened, oldest first, once.
    #[tokio::test(flavor = "multi_thread")]
    async fn history_written_before_the_change_stream_is_streamed_after_opening() {
        use crate::domain::consensus::PackageState;
        use crate::stores::contract::sample_observation;
        let dir = tempfile::tempdir().unwrap();
        let record = |artifact: &str, vuln: &str| {
            let o = sample_observation("t", "vendor", artifact, vuln, crate::domain::model::Status::Affected);
            let pair = PairKey { tenant: "t".into(), artifact: o.artifact.to_string(), vulnerability: vuln.into() };
            let mut st = PackageState::new();
            st.apply(o).unwrap();
            st.evaluate(&pair, &crate::domain::trust::Policy::default(), false).unwrap().unwrap()
        };
        // The layout such a build wrote: the record as the current row and as a history
        // entry keyed by its history id; no stream, no markers.
        let old = record("pkg:npm/old@1.0.0", "CVE-2024-0001");
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let id = crate::ports::pair_id(&old.pair());
                let hid = crate::ports::history_id(&id, 1_000, &old.consensus_digest);
                let bytes = serde_json::to_vec(&StoredRecord::new(1_000, old, Default::default())).unwrap();
                tx.open_table(HISTORY).unwrap().insert(hid.as_str(), bytes.as_slice()).unwrap();
                tx.open_table(super::super::CONSENSUS_BY_ID).unwrap().insert(id.as_str(), bytes.as_slice()).unwrap();
            }
            tx.commit().unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let new = [VersionedRecord::unversioned(record("pkg:npm/new@1.0.0", "CVE-2024-0002"))];
        store.put_records(&new, 2_000).await.unwrap();
        let seen = |events: Vec<ChangeEvent>| events.iter().map(|e| (e.seq, e.entry.changed_at_ms)).collect::<Vec<_>>();
        assert_eq!(seen(store.changes_after("t", 0, 100).await.unwrap()), vec![(1, 1_000), (2, 2_000)]);
        drop(store);
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(seen(store.changes_after("t", 0, 100).await.unwrap()), vec![(1, 1_000), (2, 2_000)], "once");
        let pair =
            PairKey { tenant: "t".into(), artifact: "pkg:npm/old@1.0.0".into(), vulnerability: "CVE-2024-0001".into() };
        let h = store.record_history(&pair).await.unwrap();
        assert_eq!(h.iter().map(|e| e.changed_at_ms).collect::<Vec<_>>(), vec![1_000]);
        assert!(store.get_record(&pair).await.unwrap().is_some(), "the current row names the moved entry");
        let tables = store.table_lengths().await.unwrap();
        assert!(
            !tables.contains_key("vex_consensus_history") && !tables.contains_key("vex_consensus_changes"),
            "{tables:?}"
        );
        assert_eq!(store.history_len().await.unwrap(), 2);
    }
}
