//! The embedded store: every store role ([`crate::ports::Store`]) on redb under `--data-dir`, plus what the
//! embedded sources need to remember (processed files, dead letters).
//!
//! Invariants: every write is one redb write transaction committed with immediate
//! durability, so a returned `Ok` means on disk; writes are idempotent upserts keyed
//! by deterministic ids; redb is blocking, so every call runs on tokio's blocking pool.
//! A new history entry gets its tenant's next change-stream position in the same write
//! transaction (redb serialises write transactions), so positions are dense and
//! committed in order.

use super::read_cache::ReadCache;
use crate::domain::consensus::{ConsensusRecord, PairKey};
use crate::domain::model::Observation;
use crate::domain::trust::TenantTrust;
use crate::domain::version::{RecordVersion, VersionedRecord};
use crate::ports::{
    decide_write, pair_id, trust_audit_id, ChangeEvent, ConflictQueue, ExportJobRecord, ExportJobStore,
    ObservationStore, RecordQuery, RecordStore, StoreAdmin, StoreError, TimedRecord, TrustAudit, TrustStore,
    VerificationRecord, VerificationStore, WriteDecision,
};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const OBSERVATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_observations");
const CONSENSUS: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_consensus");
const HISTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_consensus_history");
const CONFLICTS: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_conflict_queue");
const VERIFICATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_dsse_verifications");
const FILES: TableDefinition<&str, &str> = TableDefinition::new("ingested_files");
const DEAD_LETTERS: TableDefinition<&str, &[u8]> = TableDefinition::new("dead_letters");
const EXPORT_JOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_export_jobs");
const TRUST_POLICIES: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_trust_policies");
const TRUST_AUDIT: TableDefinition<&str, &[u8]> = TableDefinition::new("vex_trust_audit");
/// The change stream: `<tenant>\0<position, 20 digits>` -> history entry id.
const CHANGES: TableDefinition<&str, &str> = TableDefinition::new("vex_consensus_changes");
/// Per tenant, the policy epoch up to which its trust changes are recomputed.
const TRUST_RECOMPUTED: TableDefinition<&str, u64> = TableDefinition::new("vex_trust_recomputed");
/// One-time migrations done (key: the migration).
const META: TableDefinition<&str, u64> = TableDefinition::new("vex_meta");
/// The [`META`] key of the change stream's backfill of older history.
const STREAM_BACKFILL: &str = "history_stream_backfill";
/// The last change-stream position of each tenant.
const CHANGE_TAILS: TableDefinition<&str, u64> = TableDefinition::new("vex_consensus_change_tails");

/// Page cache of the embedded database (redb's default is 1 GiB).
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Pairs whose read-API answer is kept in memory ([`ReadCache`]: a hit reads no page).
const READ_CACHE_PAIRS: usize = 4096;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "vex-lens.redb";

/// A current record with the time it last changed (the record holds no float, so its
/// JSON round-trips exactly and re-digests to its stored `consensus_digest`).
#[derive(Serialize, Deserialize)]
struct StoredRecord {
    changed_at_ms: i64,
    record: ConsensusRecord,
    /// Absent in records written before versions existed: the lowest version.
    #[serde(default)]
    version: RecordVersion,
}

impl StoredRecord {
    fn new(changed_at_ms: i64, record: ConsensusRecord, version: RecordVersion) -> Self {
        StoredRecord { changed_at_ms, record, version }
    }

    fn decode(bytes: &[u8]) -> Result<StoredRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(json_err)
    }
}

/// One dead-lettered input of the embedded mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source: String,
    pub reason: crate::domain::codes::DeadLetterReason,
    pub detail: String,
    pub at_ms: i64,
}

fn err<E: Into<redb::Error>>(e: E) -> StoreError {
    let e: redb::Error = e.into();
    match e {
        redb::Error::Io(_) | redb::Error::DatabaseAlreadyOpen | redb::Error::PreviousIo => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Rejected(other.to_string()),
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Rejected(format!("json: {e}"))
}

fn change_key(tenant: &str, seq: u64) -> String {
    format!("{tenant}\u{0}{seq:020}")
}

fn obs_key(tenant: &str, package: &str, id: &str) -> String {
    format!("{tenant}\u{0}{package}\u{0}{id}")
}

/// redb-backed store (one file under the data directory).
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    path: PathBuf,
    /// The read API's one-pair answers, updated after each commit of `put_records`.
    reads: Arc<ReadCache>,
}

impl EmbeddedStore {
    /// Opens (creating) `<data_dir>/vex-lens.redb`.
    pub fn open(data_dir: &Path) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", data_dir.display())))?;
        let path = data_dir.join(DB_FILE);
        let db = Database::builder().set_cache_size(CACHE_BYTES).create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                StoreError::Unavailable(format!("{} is in use by another process", path.display()))
            }
            e => StoreError::Unavailable(format!("{}: {e}", path.display())),
        })?;
        let store = EmbeddedStore { db: Arc::new(db), path, reads: Arc::new(ReadCache::new(READ_CACHE_PAIRS)) };
        store.create_tables()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn create_tables(&self) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(err)?;
        for t in [
            OBSERVATIONS,
            CONSENSUS,
            HISTORY,
            CONFLICTS,
            VERIFICATIONS,
            DEAD_LETTERS,
            EXPORT_JOBS,
            TRUST_POLICIES,
            TRUST_AUDIT,
        ] {
            tx.open_table(t).map_err(err)?;
        }
        tx.open_table(FILES).map_err(err)?;
        tx.open_table(CHANGES).map_err(err)?;
        tx.open_table(CHANGE_TAILS).map_err(err)?;
        tx.open_table(TRUST_RECOMPUTED).map_err(err)?;
        Self::backfill_stream(&tx)?;
        tx.commit().map_err(err)
    }

    /// History written before the change stream existed has no position: gives each such
    /// entry its tenant's next positions (after those already given, oldest first), so a
    /// consumer that starts from 0 gets every change the store holds. Once per database
    /// ([`META`]).
    fn backfill_stream(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut meta = tx.open_table(META).map_err(err)?;
        if meta.get(STREAM_BACKFILL).map_err(err)?.is_some() {
            return Ok(());
        }
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
        meta.insert(STREAM_BACKFILL, 1).map_err(err)?;
        Ok(())
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

    /// Whether a file (by path, size and modification time) was already fully processed.
    pub async fn file_seen(&self, path: &str, fingerprint: &str) -> Result<bool, StoreError> {
        let (path, fingerprint) = (path.to_string(), fingerprint.to_string());
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(FILES).map_err(err)?;
            Ok(t.get(path.as_str()).map_err(err)?.is_some_and(|v| v.value() == fingerprint))
        })
        .await
    }

    /// Remembers that a file was fully processed.
    pub async fn mark_file(&self, path: &str, fingerprint: &str) -> Result<(), StoreError> {
        let (path, fingerprint) = (path.to_string(), fingerprint.to_string());
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(FILES).map_err(err)?.insert(path.as_str(), fingerprint.as_str()).map_err(err)?;
            tx.commit().map_err(err)
        })
        .await
    }

    /// Records a dead-lettered input.
    pub async fn put_dead_letter(&self, d: &DeadLetter) -> Result<(), StoreError> {
        self.put_json(DEAD_LETTERS, &format!("{:020}:{}:{}", d.at_ms, d.source, d.reason), d).await
    }

    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.read_all(DEAD_LETTERS).await
    }

    /// Every DSSE verification (`vex_dsse_verifications`), by envelope digest.
    pub async fn verifications(&self) -> Result<Vec<VerificationRecord>, StoreError> {
        self.read_all(VERIFICATIONS).await
    }

    /// Every export job record (`vex_export_jobs`), by job id.
    pub async fn export_jobs(&self) -> Result<Vec<ExportJobRecord>, StoreError> {
        self.read_all(EXPORT_JOBS).await
    }

    /// Upserts `value` as JSON under `key` in a JSON-valued table.
    async fn put_json<T: serde::Serialize>(
        &self,
        table: TableDefinition<'static, &'static str, &'static [u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let key = key.to_string();
        let value = serde_json::to_vec(value).map_err(json_err)?;
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            tx.open_table(table).map_err(err)?.insert(key.as_str(), value.as_slice()).map_err(err)?;
            tx.commit().map_err(err)
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
            let n = tx.open_table(HISTORY).map_err(err)?.len().map_err(err)?;
            Ok(n)
        })
        .await
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

#[async_trait::async_trait]
impl ObservationStore for EmbeddedStore {
    async fn put_observations(&self, observations: &[Observation]) -> Result<(), StoreError> {
        if observations.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::with_capacity(observations.len());
        for o in observations {
            let mut o = o.clone();
            if o.id.is_empty() {
                o.id =
                    o.compute_id().map_err(|e| StoreError::Rejected(format!("observation without an id: {e}")))?.into();
            }
            rows.push((obs_key(&o.tenant, &o.package, &o.id), serde_json::to_vec(&o).map_err(json_err)?));
        }
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut t = tx.open_table(OBSERVATIONS).map_err(err)?;
                for (k, v) in &rows {
                    // Keep the first provenance: never overwrite.
                    if t.get(k.as_str()).map_err(err)?.is_none() {
                        t.insert(k.as_str(), v.as_slice()).map_err(err)?;
                    }
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    async fn observations_for_package(&self, tenant: &str, package: &str) -> Result<Vec<Observation>, StoreError> {
        let start = format!("{tenant}\u{0}{package}\u{0}");
        let end = format!("{tenant}\u{0}{package}\u{1}");
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(OBSERVATIONS).map_err(err)?;
            let mut out = Vec::new();
            for r in t.range(start.as_str()..end.as_str()).map_err(err)? {
                let (_, v) = r.map_err(err)?;
                out.push(serde_json::from_slice(v.value()).map_err(json_err)?);
            }
            Ok(out)
        })
        .await
    }

    /// A scan of the tenant's observation keys (`tenant \0 package \0 id`): no value decoded.
    async fn tenant_packages(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let start = format!("{tenant}\u{0}");
        let end = format!("{tenant}\u{1}");
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(OBSERVATIONS).map_err(err)?;
            let mut out: Vec<String> = Vec::new();
            for r in t.range(start.as_str()..end.as_str()).map_err(err)? {
                let (k, _) = r.map_err(err)?;
                let package = k.value()[start.len()..].split('\u{0}').next().unwrap_or_default();
                if out.last().map(String::as_str) != Some(package) {
                    out.push(package.to_string());
                }
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait::async_trait]
impl RecordStore for EmbeddedStore {
    /// One write transaction: each record is compared with the stored one
    /// ([`decide_write`]) and written, with its history entry and conflict-queue change,
    /// only if it is not older; all of it commits together.
    async fn put_records(&self, records: &[VersionedRecord], changed_at_ms: i64) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let records = records.to_vec();
        let reads = self.reads.clone();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            // (pair id, index in `records`) of every current record replaced.
            let mut written = Vec::new();
            {
                let mut cur = tx.open_table(CONSENSUS).map_err(err)?;
                let mut hist = tx.open_table(HISTORY).map_err(err)?;
                let mut conf = tx.open_table(CONFLICTS).map_err(err)?;
                let mut changes = tx.open_table(CHANGES).map_err(err)?;
                let mut tails = tx.open_table(CHANGE_TAILS).map_err(err)?;
                for (written_index, VersionedRecord { record: r, version }) in records.iter().enumerate() {
                    let id = pair_id(&r.pair());
                    let stored = match cur.get(id.as_str()).map_err(err)? {
                        Some(v) => Some(StoredRecord::decode(v.value())?),
                        None => None,
                    };
                    let decision = decide_write(
                        stored.as_ref().map(|s| (s.version, s.record.consensus_digest.as_str())),
                        *version,
                        &r.consensus_digest,
                    );
                    if decision == WriteDecision::Write {
                        written.push((id.clone(), written_index));
                    }
                    match decision {
                        WriteDecision::Stale => continue,
                        WriteDecision::Unchanged => {}
                        WriteDecision::RaiseVersion => {
                            let Some(mut s) = stored else { continue };
                            s.version = *version;
                            let bytes = serde_json::to_vec(&s).map_err(json_err)?;
                            cur.insert(id.as_str(), bytes.as_slice()).map_err(err)?;
                        }
                        WriteDecision::Write => {
                            let stored = StoredRecord::new(changed_at_ms, r.clone(), *version);
                            let bytes = serde_json::to_vec(&stored).map_err(json_err)?;
                            cur.insert(id.as_str(), bytes.as_slice()).map_err(err)?;
                            let hid = crate::ports::history_id(&id, changed_at_ms, &r.consensus_digest);
                            if hist.get(hid.as_str()).map_err(err)?.is_none() {
                                hist.insert(hid.as_str(), bytes.as_slice()).map_err(err)?;
                                let seq = tails.get(r.tenant.as_str()).map_err(err)?.map_or(0, |v| v.value()) + 1;
                                tails.insert(r.tenant.as_str(), seq).map_err(err)?;
                                changes.insert(change_key(&r.tenant, seq).as_str(), hid.as_str()).map_err(err)?;
                            }
                        }
                    }
                    let unchanged = decision != WriteDecision::Write;
                    if r.conflicts.is_empty() {
                        conf.remove(id.as_str()).map_err(err)?;
                    } else if !unchanged || conf.get(id.as_str()).map_err(err)?.is_none() {
                        let bytes = serde_json::to_vec(r).map_err(json_err)?;
                        conf.insert(id.as_str(), bytes.as_slice()).map_err(err)?;
                    }
                }
            }
            tx.commit().map_err(err)?;
            reads.committed(&written, |&i| {
                let json = records[i].record.to_canonical_json().ok()?;
                crate::ports::timed_record_json(json.as_bytes(), changed_at_ms).ok()
            });
            Ok(())
        })
        .await
    }

    async fn get_record(&self, pair: &PairKey) -> Result<Option<ConsensusRecord>, StoreError> {
        let id = pair_id(pair);
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CONSENSUS).map_err(err)?;
            match t.get(id.as_str()).map_err(err)? {
                Some(v) => Ok(Some(StoredRecord::decode(v.value())?.record)),
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
                let t = tx.open_table(CONSENSUS).map_err(err)?;
                let mut out = Vec::new();
                for r in t.iter().map_err(err)? {
                    let (_, v) = r.map_err(err)?;
                    let s = StoredRecord::decode(v.value())?;
                    if tenant.as_deref().is_some_and(|t| t != s.record.tenant) {
                        continue;
                    }
                    if since_ms.is_some_and(|m| s.changed_at_ms < m) {
                        continue;
                    }
                    out.push(s.record);
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
            let id = pair_id(&PairKey {
                tenant: q.tenant.clone(),
                artifact: artifact.clone(),
                vulnerability: vulnerability.clone(),
            });
            return self
                .blocking(move |db| {
                    let tx = db.begin_read().map_err(err)?;
                    let t = tx.open_table(CONSENSUS).map_err(err)?;
                    let Some(v) = t.get(id.as_str()).map_err(err)? else { return Ok(Vec::new()) };
                    let s = StoredRecord::decode(v.value())?;
                    let timed = TimedRecord { record: s.record, changed_at_ms: s.changed_at_ms };
                    Ok(if q.limit > 0 && q.matches(&timed) { vec![timed] } else { Vec::new() })
                })
                .await;
        }
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CONSENSUS).map_err(err)?;
            let mut out = Vec::new();
            for r in t.iter().map_err(err)? {
                let (_, v) = r.map_err(err)?;
                let s = StoredRecord::decode(v.value())?;
                let timed = TimedRecord { record: s.record, changed_at_ms: s.changed_at_ms };
                if q.matches(&timed) {
                    out.push(timed);
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
        let reads = self.reads.clone();
        self.blocking(move |db| {
            let generation = reads.generation();
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CONSENSUS).map_err(err)?;
            let Some(v) = t.get(id.as_str()).map_err(err)? else { return Ok(None) };
            let s = StoredRecord::decode(v.value())?;
            let json: Arc<[u8]> =
                TimedRecord { record: s.record, changed_at_ms: s.changed_at_ms }.canonical_json()?.into();
            reads.fill(generation, &id, json.clone());
            Ok(Some(json))
        })
        .await
    }

    async fn record_history(&self, pair: &PairKey) -> Result<Vec<TimedRecord>, StoreError> {
        let start = format!("{}:", pair_id(pair));
        let end = format!("{};", pair_id(pair));
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(HISTORY).map_err(err)?;
            let mut out = Vec::new();
            for r in t.range(start.as_str()..end.as_str()).map_err(err)? {
                let (_, v) = r.map_err(err)?;
                let s = StoredRecord::decode(v.value())?;
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
        let start = change_key(tenant, after.saturating_add(1));
        let end = format!("{tenant}\u{1}");
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let changes = tx.open_table(CHANGES).map_err(err)?;
            let hist = tx.open_table(HISTORY).map_err(err)?;
            let mut out = Vec::new();
            for r in changes.range(start.as_str()..end.as_str()).map_err(err)?.take(limit) {
                let (k, hid) = r.map_err(err)?;
                let seq = k.value().rsplit('\u{0}').next().and_then(|s| s.parse().ok()).ok_or_else(|| {
                    StoreError::Rejected(format!("change stream key {:?} has no position", k.value()))
                })?;
                let Some(v) = hist.get(hid.value()).map_err(err)? else {
                    return Err(StoreError::Rejected(format!("change {seq} names a missing history entry")));
                };
                let s = StoredRecord::decode(v.value())?;
                out.push(ChangeEvent { seq, entry: TimedRecord { record: s.record, changed_at_ms: s.changed_at_ms } });
            }
            Ok(out)
        })
        .await
    }

    async fn change_tail(&self, tenant: &str) -> Result<u64, StoreError> {
        let tenant = tenant.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CHANGE_TAILS).map_err(err)?;
            Ok(t.get(tenant.as_str()).map_err(err)?.map_or(0, |v| v.value()))
        })
        .await
    }
}

#[async_trait::async_trait]
impl ConflictQueue for EmbeddedStore {
    async fn conflict_queue_depth(&self) -> Result<u64, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let n = tx.open_table(CONFLICTS).map_err(err)?.len().map_err(err)?;
            Ok(n)
        })
        .await
    }

    async fn conflict_queue_depths(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(CONFLICTS).map_err(err)?;
            let mut by_tenant = std::collections::BTreeMap::<String, u64>::new();
            for entry in t.iter().map_err(err)? {
                let (_, v) = entry.map_err(err)?;
                let r: ConsensusRecord = serde_json::from_slice(v.value()).map_err(json_err)?;
                *by_tenant.entry(r.tenant).or_default() += 1;
            }
            Ok(by_tenant.into_iter().collect())
        })
        .await
    }
}

#[async_trait::async_trait]
impl TrustStore for EmbeddedStore {
    async fn trust_policies(&self) -> Result<Vec<TenantTrust>, StoreError> {
        self.read_all(TRUST_POLICIES).await
    }

    /// The epoch check, the policy and the audit entry in one write transaction.
    async fn put_trust_policy(&self, next: &TenantTrust, audit: &TrustAudit) -> Result<bool, StoreError> {
        let tenant = next.tenant.clone();
        let expected = next.epoch.checked_sub(1).ok_or_else(|| StoreError::Rejected("epoch 0 is the seed".into()))?;
        let policy = serde_json::to_vec(next).map_err(json_err)?;
        let entry = serde_json::to_vec(audit).map_err(json_err)?;
        let audit_id = trust_audit_id(&audit.tenant, audit.epoch);
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut t = tx.open_table(TRUST_POLICIES).map_err(err)?;
                let stored = match t.get(tenant.as_str()).map_err(err)? {
                    Some(v) => serde_json::from_slice::<TenantTrust>(v.value()).map_err(json_err)?.epoch,
                    None => 0,
                };
                if stored != expected {
                    return Ok(false);
                }
                t.insert(tenant.as_str(), policy.as_slice()).map_err(err)?;
                tx.open_table(TRUST_AUDIT).map_err(err)?.insert(audit_id.as_str(), entry.as_slice()).map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(true)
        })
        .await
    }

    async fn trust_audit(&self, tenant: &str) -> Result<Vec<TrustAudit>, StoreError> {
        let start = format!("{tenant}:");
        let end = format!("{tenant};");
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(TRUST_AUDIT).map_err(err)?;
            let mut out = Vec::new();
            for r in t.range(start.as_str()..end.as_str()).map_err(err)? {
                let (_, v) = r.map_err(err)?;
                out.push(serde_json::from_slice(v.value()).map_err(json_err)?);
            }
            Ok(out)
        })
        .await
    }

    async fn trust_recomputed(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(TRUST_RECOMPUTED).map_err(err)?;
            let mut out = Vec::new();
            for r in t.iter().map_err(err)? {
                let (k, v) = r.map_err(err)?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })
        .await
    }

    async fn mark_trust_recomputed(&self, tenant: &str, epoch: u64) -> Result<(), StoreError> {
        let tenant = tenant.to_string();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut t = tx.open_table(TRUST_RECOMPUTED).map_err(err)?;
                let stored = t.get(tenant.as_str()).map_err(err)?.map_or(0, |v| v.value());
                if epoch > stored {
                    t.insert(tenant.as_str(), epoch).map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    /// Nothing to repair: the policy and its audit entry commit in one write transaction.
    async fn repair_trust_audit(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

#[async_trait::async_trait]
impl ExportJobStore for EmbeddedStore {
    async fn put_export_job(&self, job: &ExportJobRecord) -> Result<(), StoreError> {
        self.put_json(EXPORT_JOBS, &job.job_id, job).await
    }

    async fn list_export_jobs(&self, tenant: &str) -> Result<Vec<ExportJobRecord>, StoreError> {
        let mut jobs: Vec<ExportJobRecord> = self.read_all(EXPORT_JOBS).await?;
        jobs.retain(|j| j.tenant.as_deref() == Some(tenant));
        jobs.sort_by(|a, b| b.started_at_ms.cmp(&a.started_at_ms).then(b.job_id.cmp(&a.job_id)));
        Ok(jobs)
    }

    async fn get_export_job(&self, job_id: &str) -> Result<Option<ExportJobRecord>, StoreError> {
        let id = job_id.to_string();
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(EXPORT_JOBS).map_err(err)?;
            match t.get(id.as_str()).map_err(err)? {
                Some(v) => Ok(Some(serde_json::from_slice(v.value()).map_err(json_err)?)),
                None => Ok(None),
            }
        })
        .await
    }
}

#[async_trait::async_trait]
impl VerificationStore for EmbeddedStore {
    async fn put_verification(&self, v: &VerificationRecord) -> Result<(), StoreError> {
        self.put_json(VERIFICATIONS, &v.envelope_digest, v).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let old = [VersionedRecord::unversioned(record("pkg:npm/old@1.0.0", "CVE-2024-0001"))];
        store.put_records(&old, 1_000).await.unwrap();
        drop(store);
        {
            let db = Database::open(dir.path().join(DB_FILE)).unwrap();
            let tx = db.begin_write().unwrap();
            for t in [CHANGE_TAILS, META] {
                tx.delete_table(t).unwrap();
            }
            tx.delete_table(CHANGES).unwrap();
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
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn embedded_store_passes_the_contract_suite() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        crate::stores::contract::store_contract_suite(&store).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn files_and_dead_letters_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert!(!store.file_seen("/a.json", "1:2").await.unwrap());
            store.mark_file("/a.json", "1:2").await.unwrap();
            let d = DeadLetter {
                source: "/b.json".into(),
                reason: crate::domain::codes::DeadLetterReason::InvalidJson,
                detail: "x".into(),
                at_ms: 5,
            };
            store.put_dead_letter(&d).await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(store.file_seen("/a.json", "1:2").await.unwrap());
        assert!(!store.file_seen("/a.json", "1:3").await.unwrap(), "a changed file is processed again");
        assert_eq!(store.dead_letters().await.unwrap().len(), 1);
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let _a = EmbeddedStore::open(dir.path()).unwrap();
        let b = EmbeddedStore::open(dir.path());
        assert!(matches!(b, Err(StoreError::Unavailable(_))));
    }
}
