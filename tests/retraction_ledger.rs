//! Issue 17 item 4, the edge case: a newer version of a document that names no product of
//! a package the older version named retracts the older version's claims about it (the
//! document ledger's version marker). Run on the built binary, OpenVEX and CSAF: the batch
//! (`vex-lens consensus`) shows the claim as retracted; `serve` over a watched directory,
//! with the versions arriving in either order and a restart between them (the ledger and
//! the markers are in the store), stores exactly the batch's records.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::vex_lens;
use std::path::Path;

/// The fixtures (tests/fixtures/retraction/): OpenVEX `@id` .../doc-1, version 1 names
/// `pkg:npm/a@1` and `pkg:npm/b@1` (affected), version 2 only `a` (fixed); CSAF
/// `tracking.id` RETRACT-1, version 1 names two RPMs (known_affected), version 2 only the
/// first (fixed).
fn write_version(dir: &Path, version: u32) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/retraction");
    std::fs::create_dir_all(dir).unwrap();
    for format in ["openvex", "csaf"] {
        let name = format!("{format}-v{version}.json");
        std::fs::copy(fixtures.join(&name), dir.join(&name)).unwrap();
    }
}

fn lines(out: &std::process::Output, what: &str) -> Vec<serde_json::Value> {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("record line is JSON"))
        .collect()
}

/// (artifact, vulnerability, digest) of each record.
fn digests(records: &[serde_json::Value]) -> Vec<String> {
    records
        .iter()
        .map(|v| format!("{} {} {}", v["artifact"], v["vulnerability"], v["consensus_digest"].as_str().unwrap()))
        .collect()
}

fn serve_once(input: &Path, data: &Path) {
    let out = common::serve_once(&["--ingest-dir", input.to_str().unwrap(), "--data-dir", data.to_str().unwrap()], &[]);
    assert!(out.status.success(), "serve --once failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// The batch: the claims about `b` (OpenVEX) and `beta` (CSAF), which version 2 no longer
/// names at all, are retracted (shown in explain with version 2); `a` and `alpha` are
/// superseded by version 2 as before.
#[test]
fn batch_retracts_the_claims_about_a_package_a_newer_version_drops() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_version(&input, 1);
    write_version(&input, 2);
    let records = lines(&vex_lens(&["consensus", "--explain", input.to_str().unwrap()]), "consensus");
    let record = |artifact: &str| {
        records.iter().find(|r| r["artifact"] == artifact).unwrap_or_else(|| panic!("no record of {artifact}"))
    };
    for (dropped, doc) in
        [("pkg:npm/b@1", "https://vendor.example/vex/doc-1"), ("pkg:rpm/vendor/beta@2.0-1", "RETRACT-1")]
    {
        let r = record(dropped);
        assert_eq!(r["status"], "inconclusive", "{dropped}: the retracted claim no longer counts: {r}");
        let s = &r["statements"][0];
        assert_eq!(s["role"], "retracted", "{dropped}: {r}");
        // The stored reason is structured (lean record); explain's trace names the document.
        assert_eq!(s["reason"]["code"], "retracted", "{dropped}: {s}");
        assert_eq!(s["reason"]["version"], "2", "{dropped}: {s}");
        assert!(s["reason"]["retracted_by"][0].as_str().unwrap().starts_with("sha256:"), "{s}");
        assert_eq!(s["observation"]["document_id"], doc, "{dropped}: {s}");
        let explain = r["explain"].as_array().expect("explain trace");
        assert!(explain.iter().any(|l| l.as_str().unwrap().contains("retracted")), "{explain:?}");
    }
    assert_eq!(record("pkg:npm/a@1")["status"], "fixed");
    assert_eq!(record("pkg:rpm/vendor/alpha@1.0-1")["status"], "fixed");
}

/// The service: versions ingested one run at a time in either order (v1 then v2: v2's
/// markers retract; v2 then v1: v1 is retracted on arrival, from the ledger kept in the
/// store across the restart) store exactly the batch's records.
#[test]
fn serve_in_either_order_and_across_a_restart_stores_the_batch_records() {
    let tmp = tempfile::tempdir().unwrap();
    let both = tmp.path().join("both");
    write_version(&both, 1);
    write_version(&both, 2);
    let expected = digests(&lines(&vex_lens(&["consensus", both.to_str().unwrap()]), "consensus"));
    assert_eq!(expected.len(), 4, "{expected:?}");
    for (order, name) in [([1, 2], "v1-first"), ([2, 1], "v2-first")] {
        let input = tmp.path().join(name).join("in");
        let data = tmp.path().join(name).join("data");
        for v in order {
            write_version(&input, v);
            serve_once(&input, &data);
        }
        let got = digests(&lines(&vex_lens(&["records", "--data-dir", data.to_str().unwrap()]), "records"));
        assert_eq!(got, expected, "{name}: the stored records equal the batch, digest for digest");
    }
    // All at once too.
    let data = tmp.path().join("at-once");
    serve_once(&both, &data);
    let got = digests(&lines(&vex_lens(&["records", "--data-dir", data.to_str().unwrap()]), "records"));
    assert_eq!(got, expected);
}
