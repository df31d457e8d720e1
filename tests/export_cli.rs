//! `vex-lens export`: deterministic bundles, a canonical manifest whose hashes are right,
//! DSSE over the manifest bytes, and an OpenVEX v0.2.0 document that validates against
//! the published schema (../shared/corpus/schemas/openvex_json_schema.json, formats on)
//! and maps disputed/inconclusive to under_investigation with status_notes.

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vex_lens::crypto::{generate_keypair, verify_envelope, write_private_key, Envelope};
use vex_lens::domain::canonical;
use vex_lens::export::MANIFEST_PAYLOAD_TYPE;

fn bin(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vex-lens"));
    // Run outside the repository so config/default.toml and config/issuers.toml are not
    // picked up: the fixtures are scored with the built-in defaults.
    c.current_dir(cwd).env_remove("SOURCE_DATE_EPOCH");
    c
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Three OpenVEX documents: Alice and Bob disagree about left-pad (disputed, leading
/// affected); Bob's foo statement is not_affected without a justification; Alice's bar
/// statement is affected with an action; Carol's (newest) baz statement is not_affected
/// with a justification and a GHSA alias.
fn fixtures(dir: &Path) -> PathBuf {
    let docs = dir.join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let doc = |id: &str, author: &str, ts: &str, statements: Value| {
        json!({
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": format!("https://example.com/vex/{id}"),
            "author": author,
            "timestamp": ts,
            "version": 1,
            "statements": statements,
        })
    };
    let a = doc(
        "a",
        "Alice",
        "2024-01-01T00:00:00Z",
        json!([
            {"vulnerability": {"name": "CVE-2024-0001"}, "products": [{"@id": "pkg:npm/left-pad@1.3.0"}], "status": "affected"},
            {"vulnerability": {"name": "CVE-2024-0003"}, "products": [{"@id": "pkg:npm/bar@2.0.0"}], "status": "affected",
             "action_statement": "Upgrade to 2.0.1"},
        ]),
    );
    let b = doc(
        "b",
        "Bob",
        "2024-01-01T00:00:00Z",
        json!([
            {"vulnerability": {"name": "CVE-2024-0001"}, "products": [{"@id": "pkg:npm/left-pad@1.3.0"}], "status": "not_affected"},
            {"vulnerability": {"name": "CVE-2024-0002"}, "products": [{"@id": "pkg:npm/foo@1.0.0"}], "status": "not_affected"},
        ]),
    );
    let c = doc(
        "c",
        "Carol",
        "2024-06-01T12:00:00Z",
        json!([
            {"vulnerability": {"name": "CVE-2024-0004", "aliases": ["GHSA-aaaa-bbbb-cccc"]},
             "products": [{"@id": "pkg:npm/baz@3.0.0"}], "status": "not_affected",
             "justification": "component_not_present"},
        ]),
    );
    for (name, d) in [("a.json", a), ("b.json", b), ("c.json", c)] {
        std::fs::write(docs.join(name), serde_json::to_vec_pretty(&d).unwrap()).unwrap();
    }
    docs
}

fn export(cwd: &Path, from: &[&Path], format: &str, manifest: &Path, extra: &[&str]) -> Output {
    let mut c = bin(cwd);
    c.args(["export", "--format", format, "--manifest"]).arg(manifest).arg("--from").args(from).args(extra);
    c.output().unwrap()
}

fn openvex_validator() -> jsonschema::Validator {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/schemas/openvex_json_schema.json");
    let schema: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    jsonschema::options().should_validate_formats(true).build(&schema).expect("OpenVEX schema compiles")
}

fn assert_valid_openvex(doc: &Value) {
    let v = openvex_validator();
    let errors: Vec<String> = v.iter_errors(doc).map(|e| format!("{} at {}", e, e.instance_path)).collect();
    assert!(errors.is_empty(), "OpenVEX export does not validate:\n{}", errors.join("\n"));
}

fn read_json(p: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn openvex_export_validates_and_maps_consensus() {
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures(dir.path());
    let manifest = dir.path().join("out/manifest.json");
    ok(export(dir.path(), &[&docs], "openvex", &manifest, &[]));
    let doc = read_json(&dir.path().join("out/consensus.openvex.json"));
    assert_valid_openvex(&doc);
    // The schema really is enforced (not vacuous): a bad status fails.
    let mut broken = doc.clone();
    broken["statements"][0]["status"] = json!("disputed");
    assert!(openvex_validator().validate(&broken).is_err());

    assert_eq!(doc["@context"], "https://openvex.dev/ns/v0.2.0");
    // Document timestamp: the newest evaluation time in the data, not the clock.
    assert_eq!(doc["timestamp"], "2024-06-01T12:00:00Z");
    let statements = doc["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 4, "one statement per record");
    let by_product = |p: &str| -> &Value {
        statements.iter().find(|s| s["products"][0]["@id"] == p).unwrap_or_else(|| panic!("no statement for {p}"))
    };
    // disputed -> under_investigation, notes name the consensus status, the leader and the conflict
    let lp = by_product("pkg:npm/left-pad@1.3.0");
    assert_eq!(lp["status"], "under_investigation");
    let notes = lp["status_notes"].as_str().unwrap();
    assert!(notes.contains("disputed"), "{notes}");
    assert!(notes.contains("leading status: affected"), "{notes}");
    assert!(notes.contains("status_disagreement"), "{notes}");
    assert_eq!(lp["products"][0]["identifiers"]["purl"], "pkg:npm/left-pad@1.3.0");
    assert_eq!(lp["vulnerability"]["name"], "CVE-2024-0001");
    // not_affected without any justification: an impact statement summarising the consensus
    let foo = by_product("pkg:npm/foo@1.0.0");
    assert_eq!(foo["status"], "not_affected");
    assert!(foo.get("justification").is_none());
    assert!(foo["impact_statement"].as_str().unwrap().contains("VEX Lens consensus"));
    // affected: the winning side's action statement
    let bar = by_product("pkg:npm/bar@2.0.0");
    assert_eq!(bar["status"], "affected");
    assert_eq!(bar["action_statement"], "Upgrade to 2.0.1");
    // not_affected with the winning side's justification; aliases kept
    let baz = by_product("pkg:npm/baz@3.0.0");
    assert_eq!(baz["justification"], "component_not_present");
    assert_eq!(baz["vulnerability"]["aliases"], json!(["GHSA-aaaa-bbbb-cccc"]));
    assert_eq!(baz["timestamp"], "2024-06-01T12:00:00Z");

    let m = read_json(&manifest);
    assert_eq!(m["counts"]["records"], 4);
    assert_eq!(m["counts"]["by_status"], json!({"affected": 1, "disputed": 1, "not_affected": 2}));
    assert_eq!(m["counts"]["conflicts"], 1);
    assert_eq!(m["snapshot_time"], "2024-06-01T12:00:00Z");
}

#[test]
fn exports_are_deterministic_and_the_manifest_differs_only_in_created_at() {
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures(dir.path());
    for (format, file) in
        [("json", "consensus.json"), ("ndjson", "consensus.ndjson"), ("openvex", "consensus.openvex.json")]
    {
        let m1 = dir.path().join(format!("{format}-1/manifest.json"));
        let m2 = dir.path().join(format!("{format}-2/manifest.json"));
        ok(export(dir.path(), &[&docs], format, &m1, &[]));
        // A second export later, from the documents given in another order.
        let mut c = bin(dir.path());
        c.env("SOURCE_DATE_EPOCH", "1700000000");
        c.args(["export", "--format", format, "--manifest"]).arg(&m2).arg("--from");
        for f in ["c.json", "b.json", "a.json"] {
            c.arg(docs.join(f));
        }
        ok(c.output().unwrap());
        let d1 = std::fs::read(m1.with_file_name(file)).unwrap();
        let d2 = std::fs::read(m2.with_file_name(file)).unwrap();
        assert_eq!(d1, d2, "{format}: data files differ");
        let (mut j1, mut j2) = (read_json(&m1), read_json(&m2));
        assert_ne!(j1["created_at"], j2["created_at"]);
        assert_eq!(j2["created_at"], "2023-11-14T22:13:20Z", "SOURCE_DATE_EPOCH sets created_at");
        j1.as_object_mut().unwrap().remove("created_at");
        j2.as_object_mut().unwrap().remove("created_at");
        assert_eq!(j1, j2, "{format}: manifests differ beyond created_at");
        // The same export into the same directory again: same data bytes.
        ok(export(dir.path(), &[&docs], format, &m1, &[]));
        assert_eq!(std::fs::read(m1.with_file_name(file)).unwrap(), d1);
    }
}

#[test]
fn manifest_is_canonical_and_lists_every_file_with_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures(dir.path());
    let manifest = dir.path().join("bundle/manifest.json");
    ok(export(dir.path(), &[&docs], "ndjson", &manifest, &[]));
    let bytes = std::fs::read(&manifest).unwrap();
    let m: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(canonical::to_vec(&m).unwrap(), bytes, "manifest is canonical JSON (sorted keys, no whitespace)");
    assert_eq!(m["manifest_version"], 1);
    assert_eq!(m["format"], "ndjson");
    assert_eq!(m["source"], "files");
    assert_eq!(m["tenant"], "default");
    assert_eq!(m["tool"]["name"], "vex-lens");
    assert_eq!(m["tool"]["version"], env!("CARGO_PKG_VERSION"));
    let commit = m["tool"]["commit"].as_str().unwrap();
    assert!(commit == "unknown" || (commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit())), "{commit}");
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0]["path"], "consensus.ndjson");
    let data = std::fs::read(dir.path().join("bundle/consensus.ndjson")).unwrap();
    assert_eq!(files[0]["sha256"], canonical::sha256_hex(&data));
    assert_eq!(files[0]["bytes"], data.len());
    assert_eq!(m["bundle_id"], canonical::sha256_prefixed(&canonical::to_vec(&m["files"]).unwrap()));
    // ndjson: one canonical record per line, no explain trace
    let lines: Vec<&str> = std::str::from_utf8(&data).unwrap().lines().collect();
    assert_eq!(lines.len(), 4);
    for l in lines {
        let r: Value = serde_json::from_str(l).unwrap();
        assert_eq!(canonical::to_string(&r).unwrap(), l);
        assert!(r.get("explain").is_none());
    }
    // json: an array of the same records
    let jm = dir.path().join("j/manifest.json");
    ok(export(dir.path(), &[&docs], "json", &jm, &[]));
    let arr = read_json(&jm.with_file_name("consensus.json"));
    assert_eq!(arr.as_array().unwrap().len(), 4);
    assert!(!dir.path().join("bundle/manifest.dsse.json").exists(), "unsigned export writes no envelope");
}

#[test]
fn out_dir_elsewhere_is_listed_relative_to_the_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures(dir.path());
    let manifest = dir.path().join("meta/manifest.json");
    ok(export(dir.path(), &[&docs], "json", &manifest, &["--out", "data"]));
    let m = read_json(&manifest);
    assert_eq!(m["files"][0]["path"], "../data/consensus.json");
    let out = bin(dir.path()).args(["verify", "--manifest"]).arg(&manifest).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn since_filters_on_evaluation_time_for_files() {
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures(dir.path());
    let manifest = dir.path().join("out/manifest.json");
    ok(export(dir.path(), &[&docs], "ndjson", &manifest, &["--since", "2024-03-01T00:00:00Z"]));
    let m = read_json(&manifest);
    assert_eq!(m["counts"]["records"], 1);
    assert_eq!(m["since"], "2024-03-01T00:00:00Z");
    let data = std::fs::read_to_string(dir.path().join("out/consensus.ndjson")).unwrap();
    assert!(data.contains("pkg:npm/baz@3.0.0"));
    // milliseconds since the epoch are accepted too (2024-03-01T00:00:00Z)
    ok(export(dir.path(), &[&docs], "ndjson", &manifest, &["--since", "1709251200000"]));
    assert_eq!(read_json(&manifest)["counts"]["records"], 1);
    // nothing left: OpenVEX needs a statement, so that is an error (json/ndjson are empty)
    let out = export(dir.path(), &[&docs], "openvex", &manifest, &["--since", "2030-01-01T00:00:00Z"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to export"));
    ok(export(dir.path(), &[&docs], "json", &manifest, &["--since", "2030-01-01T00:00:00Z"]));
    assert_eq!(read_json(&manifest)["counts"]["records"], 0);
    let bad = export(dir.path(), &[&docs], "json", &manifest, &["--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn signed_export_envelope_signs_the_exact_manifest_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let docs = fixtures(dir.path());
    for alg in [vex_lens::crypto::KeyAlg::Ed25519, vex_lens::crypto::KeyAlg::EcdsaP256] {
        let (pem, public) = generate_keypair(alg).unwrap();
        let key = dir.path().join(format!("{alg}.pem"));
        write_private_key(&key, &pem).unwrap();
        let manifest = dir.path().join(format!("{alg}/manifest.json"));
        ok(export(dir.path(), &[&docs], "openvex", &manifest, &["--sign-key", key.to_str().unwrap()]));
        let env = Envelope::from_json(&std::fs::read(manifest.with_file_name("manifest.dsse.json")).unwrap()).unwrap();
        assert_eq!(env.payload_type, MANIFEST_PAYLOAD_TYPE);
        assert_eq!(env.payload, std::fs::read(&manifest).unwrap());
        assert_eq!(env.signatures.len(), 1);
        assert_eq!(env.signatures[0].keyid, public.keyid());
        assert!(verify_envelope(&env, &[public], 1).is_verified());
        // Re-exporting unsigned removes the now-stale envelope.
        ok(export(dir.path(), &[&docs], "openvex", &manifest, &[]));
        assert!(!manifest.with_file_name("manifest.dsse.json").exists());
    }
    // A bad key fails before anything is written.
    let bad = dir.path().join("bad.pem");
    std::fs::write(&bad, "not a key").unwrap();
    let manifest = dir.path().join("badkey/manifest.json");
    let out = export(dir.path(), &[&docs], "json", &manifest, &["--sign-key", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!manifest.exists());
}

#[test]
fn corpus_openvex_export_validates() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let sources: Vec<PathBuf> = ["openvex", "csaf", "cyclonedx", "vexhub"].iter().map(|d| corpus.join(d)).collect();
    let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let manifest = dir.path().join("out/manifest.json");
    ok(export(dir.path(), &refs, "openvex", &manifest, &["--keep-going"]));
    let doc = read_json(&dir.path().join("out/consensus.openvex.json"));
    assert_valid_openvex(&doc);
    let m = read_json(&manifest);
    let n = m["counts"]["records"].as_u64().unwrap();
    assert!(n > 100, "{n} records");
    assert_eq!(doc["statements"].as_array().unwrap().len() as u64, n);
    let by_status: u64 = m["counts"]["by_status"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(by_status, n);
}
