//! Upgrading an embedded store written by bafbf91 (no schema marker: version 2), run as
//! the built binary on committed stores the baseline binary wrote
//! (tests/fixtures/upgrade/README.md): (a) a store of purl/CPE-keyed OpenVEX
//! observations is upgraded at start-up and its records then equal `vex-lens consensus`
//! on the same file; (b) a store with a lower-cased `name:` key (CSAF without purls)
//! makes start-up refuse, naming `vex-lens reindex`; `reindex` drops that observation
//! and its records, and start-up then works (and re-ingesting the document restores its
//! record, under the new key); (c) a store at version 4 (4085cd2: records copying each
//! statement's text) is upgraded to the lean records of version 5, and its history still
//! reads, the version-4 entry beside the new one; (d) a store whose current rows copy
//! their record (ce1e05b) names the history entry instead once opened, and reads the same;
//! (e) `vex-lens compact` keeps every record and is refused while `serve` holds the store;
//! (f) a store whose current rows and conflict queue are keyed by pair id (4984aba) is
//! keyed by pair once opened, reads the same and takes the same documents again unchanged.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{repo_dir, vex_lens};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fixture(name: &str) -> PathBuf {
    repo_dir().join("tests/fixtures/upgrade").join(name)
}

/// A data directory holding the gzipped store `name` (gzip(1) decompresses it).
fn store_from(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("gzip").arg("-dc").arg(fixture(name)).output().expect("run gzip");
    assert!(out.status.success(), "gzip: {}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(dir.path().join("vex-lens.redb"), out.stdout).unwrap();
    dir
}

fn serve_once(data: &Path, ingest: &Path) -> Output {
    common::serve_once(&["--ingest-dir", ingest.to_str().unwrap(), "--data-dir", data.to_str().unwrap()], &[])
}

fn records(data: &Path) -> String {
    let out = vex_lens(&["records", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "records: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn a_purl_keyed_store_is_upgraded_at_start_up_to_what_consensus_computes() {
    let data = store_from("bafbf91-openvex.redb.gz");
    let before = records(data.path());
    assert!(before.contains("\"schema_version\":2"), "the fixture is a version-2 store: {before}");
    let empty = tempfile::tempdir().unwrap();
    let out = serve_once(data.path(), empty.path());
    assert!(out.status.success(), "serve: {}", text(&out));
    let after = records(data.path());
    let doc = repo_dir().join("examples/acme-vendor.openvex.json");
    let want = vex_lens(&["consensus", doc.to_str().unwrap()]);
    assert!(want.status.success(), "consensus: {}", text(&want));
    let want = String::from_utf8(want.stdout).unwrap();
    assert!(!want.is_empty());
    assert_eq!(after, want, "upgraded records equal the consensus of the same file");
    assert!(!after.contains("\"schema_version\":2"));
    // The marker is written: a second start changes nothing.
    let out = serve_once(data.path(), empty.path());
    assert!(out.status.success(), "serve again: {}", text(&out));
    assert_eq!(records(data.path()), want);
}

#[test]
fn a_store_with_lowercased_name_keys_is_refused_until_reindexed() {
    let data = store_from("bafbf91-csaf-names.redb.gz");
    let empty = tempfile::tempdir().unwrap();
    let out = serve_once(data.path(), empty.path());
    assert!(!out.status.success(), "start-up must refuse: {}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("vex-lens reindex"), "{msg}");
    assert!(msg.contains("name:acme/widget server@2.4"), "the refusal names the key: {msg}");
    assert!(records(data.path()).contains("name:acme/widget server@2.4"), "a refusal changes nothing");

    let out = vex_lens(&["reindex", "--data-dir", data.path().to_str().unwrap()]);
    assert!(out.status.success(), "reindex: {}", text(&out));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("1 dropped"), "{msg}");
    assert!(msg.contains("ingest those documents again"), "{msg}");
    assert_eq!(records(data.path()), "", "the dropped observation's record is gone");

    let out = serve_once(data.path(), empty.path());
    assert!(out.status.success(), "start-up after reindex: {}", text(&out));
    // Re-ingesting the document gives the record under the new key, as consensus does.
    let again = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("name.csaf.json"), again.path().join("name.csaf.json")).unwrap();
    let out = serve_once(data.path(), again.path());
    assert!(out.status.success(), "re-ingest: {}", text(&out));
    let want = vex_lens(&["consensus", fixture("name.csaf.json").to_str().unwrap()]);
    assert_eq!(records(data.path()), String::from_utf8(want.stdout).unwrap());
}

#[test]
fn a_version_4_store_gets_lean_records_and_keeps_its_history_readable() {
    let data = store_from("4085cd2-openvex.redb.gz");
    let before = records(data.path());
    assert!(before.contains("\"schema_version\":4"), "the fixture is a version-4 store: {before}");
    let empty = tempfile::tempdir().unwrap();
    let out = serve_once(data.path(), empty.path());
    assert!(out.status.success(), "serve: {}", text(&out));
    let after = records(data.path());
    let doc = repo_dir().join("examples/acme-vendor.openvex.json");
    let want = String::from_utf8(vex_lens(&["consensus", doc.to_str().unwrap()]).stdout).unwrap();
    assert_eq!(after, want, "upgraded records equal the consensus of the same file");
    assert!(after.contains("\"schema_version\":5") && !after.contains("\"document_digest\""), "{after}");
    // The history holds the version-4 record it had and the lean one; both read.
    let rec: serde_json::Value = serde_json::from_str(after.lines().next().unwrap()).unwrap();
    let h = history_via_api(data.path(), &rec);
    let versions: Vec<u64> =
        h["items"].as_array().unwrap().iter().map(|v| v["schema_version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [4, 5], "{h}");
    assert_eq!(h["items"][1]["consensus_digest"], rec["consensus_digest"]);
}

/// The history of `rec`'s pair as the API answers it, from a `serve` started on the store
/// `data` (stopped on return).
fn history_via_api(data: &Path, rec: &serde_json::Value) -> serde_json::Value {
    let log = data.join("serve.log");
    let (_child, port) = common::start_embedded_serve(
        &["--data-dir", data.to_str().unwrap()],
        &[],
        &log,
        std::time::Duration::from_secs(60),
    );
    let path = format!(
        "/v1/vex/consensus/history?artifact={}&vulnerability={}",
        common::enc(rec["artifact"].as_str().unwrap()),
        common::enc(rec["vulnerability"].as_str().unwrap())
    );
    let (code, body) = common::get(port, &path).expect("history answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The sizes of a store's tables, by name (the library's view of the file).
fn table_sizes(data: &Path) -> std::collections::BTreeMap<String, vex_lens::stores::embedded::TableSize> {
    let store = vex_lens::stores::embedded::EmbeddedStore::open(data).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(store.table_sizes()).unwrap().into_iter().map(|t| (t.table.clone(), t)).collect()
}

#[test]
fn a_store_whose_current_rows_copy_their_record_stores_each_record_once_after_opening() {
    // ce1e05b (version 5, lean records) kept a copy of each current record beside its
    // history entry; opening the store rewrites the current rows to name that entry.
    let data = store_from("ce1e05b-openvex.redb.gz");
    let doc = repo_dir().join("examples/acme-vendor.openvex.json");
    let want = String::from_utf8(vex_lens(&["consensus", doc.to_str().unwrap()]).stdout).unwrap();
    assert!(!want.is_empty());
    assert_eq!(records(data.path()), want, "the records read the same after the rewrite");
    let sizes = table_sizes(data.path());
    let (cur, hist) = (&sizes["vex_consensus"], &sizes["vex_consensus_history_log"]);
    assert_eq!(cur.rows, want.lines().count() as u64);
    assert_eq!(hist.rows, cur.rows, "one history entry per record, none added: {sizes:?}");
    let mean_record = want.len() as u64 / cur.rows;
    assert!(
        cur.stored_bytes / cur.rows < 300 && mean_record > 1000,
        "a current row names its history entry instead of copying the record ({} bytes per row, records of {mean_record} bytes)",
        cur.stored_bytes / cur.rows
    );
    // The history answers through the API: one entry per pair, the current record.
    let rec: serde_json::Value = serde_json::from_str(want.lines().next().unwrap()).unwrap();
    let h = history_via_api(data.path(), &rec);
    assert_eq!(h["items"].as_array().map(Vec::len), Some(1), "{h}");
    assert_eq!(h["items"][0]["consensus_digest"], rec["consensus_digest"]);
}

#[test]
fn compact_keeps_every_record_and_is_refused_while_the_store_is_in_use() {
    let data = store_from("ce1e05b-openvex.redb.gz");
    let before = records(data.path());
    let dir = data.path().to_str().unwrap();
    let out = vex_lens(&["compact", "--data-dir", dir]);
    assert!(out.status.success(), "compact: {}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let file_len = std::fs::metadata(data.path().join("vex-lens.redb")).unwrap().len();
    assert_eq!(summary["bytes_after"].as_u64(), Some(file_len), "{summary}");
    assert!(summary["bytes_after"].as_u64() <= summary["bytes_before"].as_u64(), "{summary}");
    assert_eq!(summary["records"].as_u64(), Some(before.lines().count() as u64), "{summary}");
    assert_eq!(records(data.path()), before, "compaction changes no record");

    let log = data.path().join("serve.log");
    let (_child, _port) =
        common::start_embedded_serve(&["--data-dir", dir], &[], &log, std::time::Duration::from_secs(60));
    let out = vex_lens(&["compact", "--data-dir", dir]);
    assert!(!out.status.success(), "compact while serve holds the store must fail");
    assert!(text(&out).contains("in use"), "{}", text(&out));
    let out = vex_lens(&["compact", "--data-dir", data.path().join("nothing").to_str().unwrap()]);
    assert!(text(&out).contains("no embedded store"), "{}", text(&out));
}

#[test]
fn a_new_store_holds_its_history_entries_and_observations_compressed() {
    let data = tempfile::tempdir().unwrap();
    let input = tempfile::tempdir().unwrap();
    let doc = repo_dir().join("examples/acme-vendor.openvex.json");
    std::fs::copy(&doc, input.path().join("acme.json")).unwrap();
    let out = serve_once(data.path(), input.path());
    assert!(out.status.success(), "serve: {}", text(&out));
    let want = records(data.path());
    let sizes = table_sizes(data.path());
    let hist = &sizes["vex_consensus_history_log"];
    let store = vex_lens::stores::embedded::EmbeddedStore::open(data.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let entries = rt.block_on(store.history_len()).unwrap();
    drop(store);
    assert_eq!(entries, want.lines().count() as u64, "one history entry per record");
    assert!(hist.rows < entries, "the entries of one commit share a row: {hist:?}");
    // A history entry is the record's JSON (plus its time and version), compressed.
    assert!(
        hist.stored_bytes < want.len() as u64,
        "history entries take {} bytes for {} bytes of records",
        hist.stored_bytes,
        want.len()
    );
    let obs = &sizes["vex_observations"];
    assert!(obs.rows > 0 && obs.stored_bytes / obs.rows < 700, "{obs:?}");
    assert_eq!(records(data.path()), want);
}

#[test]
fn a_store_keyed_by_pair_id_is_keyed_by_pair_after_opening_and_reads_the_same() {
    // 4984aba keyed current rows and the conflict queue by pair id (a hash); opening the
    // store rewrites both to rows keyed by the pair (tenant, artifact, vulnerability).
    let data = store_from("4984aba-examples.redb.gz");
    let examples = repo_dir().join("examples");
    let want = String::from_utf8(vex_lens(&["consensus", examples.to_str().unwrap()]).stdout).unwrap();
    let recs: Vec<serde_json::Value> = want.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let conflicted: Vec<&serde_json::Value> =
        recs.iter().filter(|r| r["conflicts"].as_array().is_some_and(|c| !c.is_empty())).collect();
    assert!(recs.len() > 1 && conflicted.len() == 1, "the fixture's input has one conflicted pair of several");
    assert_eq!(records(data.path()), want, "the records read the same after the rewrite");
    let sizes = table_sizes(data.path());
    assert_eq!(sizes["vex_consensus"].rows, recs.len() as u64, "{sizes:?}");
    assert_eq!(sizes["vex_conflict_queue"].rows, 1, "the conflicted pair stays queued: {sizes:?}");
    assert!(!sizes.keys().any(|t| t.ends_with("_by_pair_id")), "the old tables are gone: {sizes:?}");
    // The conflict queue is counted per tenant from the new keys.
    let store = vex_lens::stores::embedded::EmbeddedStore::open(data.path()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let depths = rt.block_on(vex_lens::ports::ConflictQueue::conflict_queue_depths(&store)).unwrap();
    assert_eq!(depths, vec![(conflicted[0]["tenant"].as_str().unwrap().to_string(), 1)]);
    drop(store);
    // Writing the same documents again finds every pair under its new key: nothing is
    // added, nothing changes.
    let out = serve_once(data.path(), &examples);
    assert!(out.status.success(), "serve: {}", text(&out));
    assert_eq!(records(data.path()), want);
    let again = table_sizes(data.path());
    assert_eq!(again["vex_consensus"].rows, recs.len() as u64);
    assert_eq!(again["vex_conflict_queue"].rows, 1);
    assert_eq!(again["vex_consensus_history_log"].rows, sizes["vex_consensus_history_log"].rows, "no new entry");
    // The conflicted pair's history answers through the API, from the new key.
    let h = history_via_api(data.path(), conflicted[0]);
    assert_eq!(h["items"].as_array().map(Vec::len), Some(1), "{h}");
    assert_eq!(h["items"][0]["consensus_digest"], conflicted[0]["consensus_digest"]);
}
