//! `vex_store_writes_total{store,kind,collection}` counts exactly what each store wrote:
//! a small corpus's observations and records are written to a fresh embedded store and a
//! fresh database on the real MongoDB-wire server, and the counter's rise per collection
//! is compared with the documents (rows) the test counts in the database itself, and,
//! for MongoDB, with those times the secondary indexes the server lists. Writing the
//! same observations and records again writes nothing; one changed record writes itself
//! and its history entry.
//!
//! One test per store: the counters are per process, and the `store` label keeps the
//! two tests (which may run at once) apart.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use vex_lens::domain::consensus::ConsensusRecord;
use vex_lens::domain::model::Observation;
use vex_lens::ports::{ObservationStore, RecordStore, StoreAdmin, VersionedRecord};
use vex_lens::telemetry::{labels, metrics, StoreWriteLabel};

/// The counter of every (kind, collection) of `store`.
fn counters(store: &str) -> BTreeMap<(String, String), u64> {
    labels::STORE_WRITES
        .iter()
        .filter(|(s, _, _)| *s == store)
        .map(|(s, kind, collection)| {
            let label =
                StoreWriteLabel { store: s.to_string(), kind: kind.to_string(), collection: collection.to_string() };
            ((kind.to_string(), collection.to_string()), metrics().store_writes.get_or_create(&label).get())
        })
        .collect()
}

/// The rise of each counter since `before` (zeros left out).
fn rise(store: &str, before: &BTreeMap<(String, String), u64>) -> BTreeMap<(String, String), u64> {
    counters(store).into_iter().map(|(k, v)| (k.clone(), v - before[&k])).filter(|(_, v)| *v > 0).collect()
}

fn key(kind: &str, collection: &str) -> (String, String) {
    (kind.to_string(), collection.to_string())
}

/// Observations and records of a small corpus, and one record changed (another status,
/// its digest recomputed).
fn corpus() -> (Vec<Observation>, Vec<VersionedRecord>, VersionedRecord) {
    let files = common::corpus_files(&["openvex", "cyclonedx"]);
    let observations = common::observations_of(&files, "t");
    let records: Vec<ConsensusRecord> = common::batch_records(observations.clone());
    assert!(records.len() > 10 && records.iter().any(|r| !r.conflicts.is_empty()), "{} records", records.len());
    let mut changed = records[0].clone();
    changed.confidence_ppm = changed.confidence_ppm.saturating_sub(1);
    changed.consensus_digest = changed.compute_digest().unwrap();
    let records = records.into_iter().map(VersionedRecord::unversioned).collect();
    (observations, records, VersionedRecord::unversioned(changed))
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_store_counts_the_rows_it_writes() {
    use vex_lens::stores::embedded::EmbeddedStore;
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path()).unwrap();
    let (observations, records, changed) = corpus();
    let before = counters("embedded");
    let rows_before = store.table_lengths().await.unwrap();
    store.put_observations(&observations).await.unwrap();
    store.put_records(&records, 1_000).await.unwrap();
    let rows = store.table_lengths().await.unwrap();
    let grown = |t: &str| rows[t] - rows_before.get(t).copied().unwrap_or(0);
    let mut want = BTreeMap::new();
    for t in ["vex_observations", "vex_consensus", "vex_consensus_history_log", "vex_conflict_queue"] {
        want.insert(key("document", t), grown(t));
    }
    // New pairs: their entries are named by their current rows, so no history index row;
    // the tenant's tail written once per call.
    assert_eq!(grown("vex_consensus_history_index"), 0);
    want.insert(key("index_entry", "vex_consensus_change_tails"), 1);
    assert_eq!(grown("vex_consensus"), records.len() as u64);
    assert!(grown("vex_conflict_queue") > 0);
    assert_eq!(rise("embedded", &before), want, "the counters rose by the rows written");

    let before = counters("embedded");
    store.put_observations(&observations).await.unwrap();
    store.put_records(&records, 2_000).await.unwrap();
    assert_eq!(rise("embedded", &before), BTreeMap::new(), "the same again writes nothing");

    let before = counters("embedded");
    store.put_records(std::slice::from_ref(&changed), 3_000).await.unwrap();
    let mut want = BTreeMap::from([
        (key("document", "vex_consensus"), 1),
        (key("document", "vex_consensus_history_log"), 1),
        // The replaced entry is named by the index from now on.
        (key("index_entry", "vex_consensus_history_index"), 1),
        (key("index_entry", "vex_consensus_change_tails"), 1),
    ]);
    if !changed.record.conflicts.is_empty() {
        want.insert(key("document", "vex_conflict_queue"), 1);
    }
    assert_eq!(rise("embedded", &before), want, "one changed record");
}

#[tokio::test(flavor = "multi_thread")]
async fn mongodb_store_counts_the_documents_and_index_entries_it_writes() {
    use vex_lens::stores::mongo::{MongoStore, SECONDARY_INDEXES};
    let Some(services) = common::services() else { return };
    let db = common::fresh_name("store_writes");
    let store = MongoStore::connect(&services.mongo_uri, &db).await.expect("connect");
    store.init().await.expect("init");
    let client = common::mongo_client(&services.mongo_uri).await;
    // The secondary indexes the counter assumes are those the server has.
    for (collection, names) in SECONDARY_INDEXES {
        let mut listed = client
            .database(&db)
            .collection::<mongodb::bson::Document>(collection)
            .list_index_names()
            .await
            .unwrap_or_else(|e| panic!("{collection}: {e}"));
        listed.retain(|n| n != "_id_");
        listed.sort();
        let mut want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        want.sort();
        assert_eq!(listed, want, "{collection}");
    }
    let secondary = |c: &str| SECONDARY_INDEXES.iter().find(|(n, _)| *n == c).map_or(0, |(_, i)| i.len() as u64);
    let (observations, records, changed) = corpus();

    let before = counters("mongodb");
    store.put_observations(&observations).await.unwrap();
    store.put_records(&records, 1_000).await.unwrap();
    let mut want = BTreeMap::new();
    for c in ["vex_observations", "vex_consensus", "vex_consensus_history", "vex_conflict_queue"] {
        let n = common::count(&services.mongo_uri, &db, c).await;
        assert!(n > 0, "{c}");
        want.insert(key("document", c), n);
        want.insert(key("index_entry", c), n * secondary(c));
    }
    assert_eq!(want[&key("document", "vex_consensus")], records.len() as u64);
    assert_eq!(rise("mongodb", &before), want, "the counters rose by the documents in the database");

    let before = counters("mongodb");
    store.put_observations(&observations).await.unwrap();
    store.put_records(&records, 2_000).await.unwrap();
    assert_eq!(rise("mongodb", &before), BTreeMap::new(), "the same again writes nothing");

    let before = counters("mongodb");
    store.put_records(std::slice::from_ref(&changed), 3_000).await.unwrap();
    let mut want = BTreeMap::from([
        // replaced in place: `changed_at_ms` is the one indexed field that changes
        (key("document", "vex_consensus"), 1),
        (key("index_entry", "vex_consensus"), 1),
        (key("document", "vex_consensus_history"), 1),
        (key("index_entry", "vex_consensus_history"), secondary("vex_consensus_history")),
    ]);
    if !changed.record.conflicts.is_empty() {
        want.insert(key("document", "vex_conflict_queue"), 1);
        want.insert(key("index_entry", "vex_conflict_queue"), 1);
    }
    assert_eq!(rise("mongodb", &before), want, "one changed record");
    assert_eq!(common::count(&services.mongo_uri, &db, "vex_consensus_history").await, records.len() as u64 + 1);

    // The document ledger: a version is one document written (its document's entry, no
    // secondary index), the first version of a document included.
    use vex_lens::ports::DocumentLedger;
    let versions = vex_lens::domain::ledger::DocumentVersion::of(&observations);
    assert!(versions.len() >= 3, "{} document versions", versions.len());
    for version in &versions[..3] {
        let before = counters("mongodb");
        store.record_version(version).await.unwrap();
        assert_eq!(rise("mongodb", &before), BTreeMap::from([(key("document", "vex_document_ledger"), 1)]));
    }
    common::drop_db(&services.mongo_uri, &db).await;
}
