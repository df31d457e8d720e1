//! The embedded store: every store role ([`crate::ports::Store`]) on redb under
//! `--data-dir`, one module per role (`observations`, `ledger` (document versions), `records` (current records,
//! history and the conflict-queue writes), `changes` (the change stream),
//! `conflicts`, `trust`, `export_jobs`, `verifications`, `schema` (the schema version and
//! the upgrade's bulk writes)), plus what the embedded
//! sources need to remember (`ingest`: processed files, dead letters). This module
//! holds the database, its tables and the helpers every role uses.
//!
//! Invariants: a record's bytes are stored once, in its history entry (`records`);
//! every write is in a redb write transaction committed with immediate durability before
//! it returns `Ok` (the hot writes share transactions: `group_commit`); writes are
//! idempotent upserts keyed by deterministic ids; redb is blocking, so every call runs on
//! tokio's blocking pool or the commit thread.
//! A new history entry gets its tenant's next change-stream position in the same write
//! transaction (redb serialises write transactions), so positions are dense and
//! committed in order.

mod byte_keys;
mod changes;
mod compressed;
mod conflicts;
mod export_jobs;
mod group_commit;
mod ingest;
mod ledger;
mod log_rows;
mod observations;
mod records;
mod schema;
mod trust;
mod verifications;

pub use crate::ports::DeadLetter;

use super::read_cache::ReadCache;
use crate::ports::{StoreAdmin, StoreError};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Observations: `tenant \0 package \0 id` (bytes of UTF-8 text) -> compressed observation.
/// The hot tables' keys are byte strings, compared as bytes (the same order as the text
/// they hold): a `&str` key is checked as UTF-8 at every comparison of every B-tree search.
const OBSERVATIONS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("vex_observations");
/// The document ledger: `tenant \0 issuer \0 document id \0 digest` -> version (JSON).
const DOCUMENT_VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_document_versions");
/// The current row of each pair (`records::CurrentRow`), keyed by the pair itself
/// (tenant, artifact, vulnerability): a package's pairs are neighbours, so a batch of a
/// package's records touches a few pages of the table rather than one page per record.
const CONSENSUS: TableDefinition<PairColumns, &[u8]> = TableDefinition::new("vex_consensus");
/// The key of the tables keyed by pair: (tenant, artifact, vulnerability), the bytes of each.
type PairColumns = (&'static [u8], &'static [u8], &'static [u8]);
/// [`CONSENSUS`] as stores before it was keyed by pair kept it: keyed by pair id (a hash);
/// read only by the one-time rewrites of `records`.
const CONSENSUS_BY_ID: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_consensus");
/// The history as stores before the position-keyed log kept it (`<history id>` -> record);
/// read only by the one-time rewrites of `records` and `changes`, then deleted.
const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_consensus_history");
/// The history and change stream in one: `<tenant>\0<position, 20 digits>` -> the history
/// entries (compressed) of that position and the next ones, packed into rows of about a
/// page (`log_rows`), so a commit appends to it.
const HISTORY_LOG: TableDefinition<&[u8], &[u8]> = TableDefinition::new("vex_consensus_history_log");
/// A pair's earlier history entries (those a later write replaced; the current one is the
/// current row's): `<history id>` (`<pair id>:<time>:<digest>`) -> position.
const HISTORY_INDEX: TableDefinition<&[u8], u64> = TableDefinition::new("vex_consensus_history_index");
/// The conflict queue: the pairs whose current record has conflicts, keyed as [`CONSENSUS`].
const CONFLICTS: TableDefinition<PairColumns, ()> = TableDefinition::new("vex_conflict_queue");
/// [`CONFLICTS`] as stores before it was keyed by pair kept it: pair id -> tenant (JSON);
/// read only by the one-time rewrites of `records`.
const CONFLICTS_BY_ID: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_conflict_queue");
const VERIFICATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_dsse_verifications");
const FILES: TableDefinition<&str, &str> = TableDefinition::new("ingested_files");
const DEAD_LETTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("dead_letters");
const EXPORT_JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_export_jobs");
const TRUST_POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_trust_policies");
const TRUST_AUDIT: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_trust_audit");
/// The hot tables as stores before byte keys kept them (the same names, the same key
/// bytes, typed as text); read only by the one-time rewrites, the last of which
/// (`byte_keys`) moves their rows to the tables above.
const OBSERVATIONS_TEXT: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_observations");
const CONSENSUS_TEXT: TableDefinition<(&str, &str, &str), &[u8]> = TableDefinition::new("vex_consensus");
const HISTORY_LOG_TEXT: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_consensus_history_log");
const HISTORY_INDEX_TEXT: TableDefinition<&str, u64> = TableDefinition::new("vex_consensus_history_index");
const CONFLICTS_TEXT: TableDefinition<(&str, &str, &str), ()> = TableDefinition::new("vex_conflict_queue");
/// The change stream as stores before the position-keyed log kept it
/// (`<tenant>\0<position, 20 digits>` -> history entry id); read only by the one-time
/// rewrites, then deleted.
const CHANGES: TableDefinition<&str, &str> = TableDefinition::new("vex_consensus_changes");

/// The [`HISTORY_LOG`] key of position `seq` of `tenant`'s change stream (positions sort
/// in order within a tenant).
fn change_key(tenant: &str, seq: u64) -> String {
    format!("{tenant}\u{0}{seq:020}")
}

/// A byte key's text: every key is written from `&str` (its UTF-8), so the lossy
/// conversion never replaces anything; it only spares a check that cannot fail.
fn key_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The position a [`change_key`] names.
fn position_of(key: &[u8]) -> Result<u64, StoreError> {
    key.rsplit(|b| *b == 0).next().and_then(|digits| std::str::from_utf8(digits).ok()?.parse().ok()).ok_or_else(|| {
        StoreError::Rejected(format!("change stream key {:?} has no position", String::from_utf8_lossy(key)))
    })
}
/// Per tenant, the policy epoch up to which its trust changes are recomputed.
const TRUST_RECOMPUTED: TableDefinition<&str, u64> = TableDefinition::new("vex_trust_recomputed");
/// One-time migrations done (key: the migration).
const META: TableDefinition<&str, u64> = TableDefinition::new("vex_meta");
/// The last change-stream position of each tenant.
const CHANGE_TAILS: TableDefinition<&str, u64> = TableDefinition::new("vex_consensus_change_tails");

/// Page cache of the embedded database when the caller names none (redb's default is
/// 1 GiB; `serve` takes `store.cache_mib`, 24 MiB by default).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Pairs whose read-API answer is kept in memory ([`ReadCache`]: a hit reads no page).
const READ_CACHE_PAIRS: usize = 4096;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "vex-lens.redb";

fn err<E: Into<redb::Error>>(e: E) -> StoreError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::Io(_) | redb::Error::DatabaseAlreadyOpen | redb::Error::PreviousIo => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Rejected(other.to_string()),
    }
}

/// What one write transaction wrote, by table: counted while it runs, reported
/// (`vex_store_writes_total{store="embedded"}`) only once it committed.
#[derive(Default)]
pub(super) struct Tally(std::collections::BTreeMap<&'static str, (u64, u64)>);

impl Tally {
    /// `n` rows inserted, replaced or removed in `table`.
    pub(super) fn rows<K: redb::Key, V: redb::Value>(
        &mut self,
        table: &'static TableDefinition<'static, K, V>,
        n: u64,
    ) {
        self.0.entry(redb::TableHandle::name(table)).or_default().0 += n;
    }

    /// `n` entries written in `table`, an index of another table (the change stream).
    pub(super) fn index<K: redb::Key, V: redb::Value>(
        &mut self,
        table: &'static TableDefinition<'static, K, V>,
        n: u64,
    ) {
        self.0.entry(redb::TableHandle::name(table)).or_default().1 += n;
    }

    /// Reports the counts (call after the commit).
    pub(super) fn committed(self) {
        for (collection, (documents, index_entries)) in self.0 {
            crate::telemetry::events::StoreWrites { store: "embedded", collection, documents, index_entries }.emit();
        }
    }
}

/// Runs the one-time rewrite `rewrite` in `tx` unless [`META`]'s marker `key` says it ran,
/// then sets the marker (in the same transaction: both commit, or neither).
fn once(
    tx: &redb::WriteTransaction,
    key: &str,
    rewrite: impl FnOnce(&redb::WriteTransaction) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    if tx.open_table(META).map_err(err)?.get(key).map_err(err)?.is_some() {
        return Ok(());
    }
    rewrite(tx)?;
    tx.open_table(META).map_err(err)?.insert(key, 1).map_err(err)?;
    Ok(())
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Rejected(format!("json: {e}"))
}

/// redb-backed store (one file under the data directory).
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    /// The hot writes' shared transactions (`group_commit`).
    commits: group_commit::GroupCommit,
    path: PathBuf,
    /// The read API's one-pair answers, updated after each commit of `put_records`.
    reads: Arc<ReadCache>,
}

impl EmbeddedStore {
    /// Opens (creating) `<data_dir>/vex-lens.redb`, with the default page cache.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        Self::open_with_cache(data_dir, CACHE_BYTES)
    }

    /// Opens (creating) `<data_dir>/vex-lens.redb` with a page cache of `cache_bytes`.
    pub fn open_with_cache(data_dir: &Path, cache_bytes: usize) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", data_dir.display())))?;
        let path = data_dir.join(DB_FILE);
        let db = Database::builder().set_cache_size(cache_bytes).create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::Unavailable(format!("{} is in use by another process", path.display()))
            }
            e => StoreError::Unavailable(format!("{}: {e}", path.display())),
        })?;
        let db = Arc::new(db);
        let commits = group_commit::GroupCommit::start(&db)?;
        let store = EmbeddedStore { db, commits, path, reads: Arc::new(ReadCache::new(READ_CACHE_PAIRS)) };
        store.create_tables()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        for t in [DOCUMENT_VERSIONS, VERIFICATIONS, DEAD_LETTERS, EXPORT_JOBS, TRUST_POLICIES, TRUST_AUDIT] {
            tx.open_table(t).map_err(err)?;
        }
        tx.open_table(FILES).map_err(err)?;
        tx.open_table(CHANGE_TAILS).map_err(err)?;
        tx.open_table(TRUST_RECOMPUTED).map_err(err)?;
        // Older layouts, in order, each once per database.
        once(&tx, records::CURRENT_ROWS_IN_HISTORY, Self::point_current_rows_to_history)?;
        once(&tx, changes::STREAM_BACKFILL, Self::backfill_stream)?;
        once(&tx, records::HISTORY_BY_POSITION, Self::key_history_by_position)?;
        once(&tx, records::CURRENT_ROWS_BY_PAIR, Self::key_current_rows_by_pair)?;
        once(&tx, byte_keys::BYTE_KEYS, byte_keys::key_tables_by_bytes)?;
        // The byte-keyed tables, opened (made, in a new database) after the rewrites.
        tx.open_table(OBSERVATIONS).map_err(err)?;
        tx.open_table(HISTORY_LOG).map_err(err)?;
        tx.open_table(HISTORY_INDEX).map_err(err)?;
        tx.open_table(CONSENSUS).map_err(err)?;
        tx.open_table(CONFLICTS).map_err(err)?;
        tx.commit().map_err(err)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Unavailable(format!("store task failed: {e}")))?
    }

    /// Runs `work` in a write transaction shared with the other writes submitted meanwhile
    /// (`group_commit`); returns once it committed.
    async fn write<T: Send + 'static>(
        &self,
        work: impl Fn(&redb::WriteTransaction, &mut Tally) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.commits.write(work).await
    }

    /// Upserts `value` as JSON under `key` in a JSON-valued table.
    async fn put_json<T: serde::Serialize>(
        &self,
        table: &'static TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let key = key.to_string();
        let value = serde_json::to_vec(value).map_err(json_err)?;
        self.write(move |tx, tally| {
            tx.open_table(*table).map_err(err)?.insert(key.as_str(), value.as_slice()).map_err(err)?;
            tally.rows(table, 1);
            Ok(())
        })
        .await
    }

    /// Every value of a JSON-valued table, in key order.
    async fn read_all<T: serde::de::DeserializeOwned + Send + 'static>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
    ) -> Result<Vec<T>, StoreError> {
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(table).map_err(err)?;
            let mut out = Vec::new();
            for r in t.iter().map_err(err)? {
                let (_, v) = r.map_err(err)?;
                out.push(serde_json::from_slice(v.value()).map_err(json_err)?);
            }
            Ok(out)
        })
        .await
    }

    /// Number of history entries (for tests and diagnostics).
    pub async fn history_len(&self) -> Result<u64, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            log_rows::count(&tx.open_table(HISTORY_LOG).map_err(err)?)
        })
        .await
    }

    /// Rows of each table, by name (for tests and diagnostics).
    pub async fn table_lengths(&self) -> Result<std::collections::BTreeMap<String, u64>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let mut out = std::collections::BTreeMap::new();
            for h in tx.list_tables().map_err(err)? {
                let name = redb::TableHandle::name(&h).to_string();
                let n = tx.open_untyped_table(h).map_err(err)?.len().map_err(err)?;
                out.insert(name, n);
            }
            Ok(out)
        })
        .await
    }
}

/// What one table holds ([`EmbeddedStore::table_sizes`]): rows, the bytes of their keys
/// and values, and the bytes of the table's pages beyond them (branch keys and metadata;
/// unused space in its pages).
#[derive(Clone, Debug, serde::Serialize)]
pub struct TableSize {
    pub table: String,
    pub rows: u64,
    pub stored_bytes: u64,
    pub metadata_bytes: u64,
    pub fragmented_bytes: u64,
}

impl EmbeddedStore {
    /// Every table's [`TableSize`], by name.
    pub async fn table_sizes(&self) -> Result<Vec<TableSize>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let mut out = Vec::new();
            for h in tx.list_tables().map_err(err)? {
                let table = redb::TableHandle::name(&h).to_string();
                let t = tx.open_untyped_table(h).map_err(err)?;
                let stats = t.stats().map_err(err)?;
                out.push(TableSize {
                    table,
                    rows: t.len().map_err(err)?,
                    stored_bytes: stats.stored_bytes(),
                    metadata_bytes: stats.metadata_bytes(),
                    fragmented_bytes: stats.fragmented_bytes(),
                });
            }
            out.sort_by(|a, b| a.table.cmp(&b.table));
            Ok(out)
        })
        .await
    }

    /// Compacts the database file (redb's `compact`: live pages move to the front of the
    /// file and the file is shortened). Needs the only handle on the database: refused
    /// while a clone of this store is alive (a server using it). Returns whether anything
    /// moved.
    pub fn compact(self) -> Result<bool, StoreError> {
        drop(self.commits);
        let mut db = Arc::try_unwrap(self.db)
            .map_err(|_| StoreError::Unavailable("the store is in use; stop the server first".into()))?;
        db.compact().map_err(|e| StoreError::Rejected(format!("compacting {}: {e}", self.path.display())))
    }
}

#[async_trait::async_trait]
impl StoreAdmin for EmbeddedStore {
    async fn init(&self) -> Result<(), StoreError> {
        let s = self.clone();
        self.blocking(move |_| s.create_tables()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.blocking(|db| db.begin_read().map(|_| ()).map_err(err)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn embedded_store_passes_the_contract_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        crate::stores::contract::store_contract_suite(&store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn embedded_store_passes_the_schema_contract() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        crate::stores::contract::schema_contract(&store).await;
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _a = EmbeddedStore::open(dir.path()).unwrap();
        let b = EmbeddedStore::open(dir.path());
        assert!(matches!(b, Err(StoreError::Unavailable(_))));
    }
}
