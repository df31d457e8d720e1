//! Upgrading an embedded store written by bafbf91 (no schema marker: version 2), run as
//! the built binary on committed stores the baseline binary wrote
//! (tests/fixtures/upgrade/README.md): (a) a store of purl/CPE-keyed OpenVEX
//! observations is upgraded at start-up and its records then equal `vex-lens consensus`
//! on the same file; (b) a store with a lower-cased `name:` key (CSAF without purls)
//! makes start-up refuse, naming `vex-lens reindex`; `reindex` drops that observation
//! and its records, and start-up then works (and re-ingesting the document restores its
//! record, under the new key); (c) a store at version 4 (4085cd2: records copying each
//! statement's text) is upgraded to the lean records of version 5, and its history still
//! reads, the version-4 entry beside the new one.

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
    let log = data.path().join("serve.log");
    let (_child, port) = common::start_embedded_serve(
        &["--data-dir", data.path().to_str().unwrap()],
        &[],
        &log,
        std::time::Duration::from_secs(60),
    );
    let enc = |s: &str| s.replace('%', "%25").replace('/', "%2F").replace(':', "%3A").replace('@', "%40");
    let path = format!(
        "/v1/vex/consensus/history?artifact={}&vulnerability={}",
        enc(rec["artifact"].as_str().unwrap()),
        enc(rec["vulnerability"].as_str().unwrap())
    );
    let (code, body) = common::get(port, &path).expect("history answers");
    assert_eq!(code, 200, "{body}");
    let h: serde_json::Value = serde_json::from_str(&body).unwrap();
    let versions: Vec<u64> =
        h["items"].as_array().unwrap().iter().map(|v| v["schema_version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [4, 5], "{h}");
    assert_eq!(h["items"][1]["consensus_digest"], rec["consensus_digest"]);
}
