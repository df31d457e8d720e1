//! Detached OpenPGP signatures over Kafka, on the real broker and MongoDB-wire server:
//! kcat writes a CSAF document signed by GnuPG with its signature in the
//! `openpgp-signature` header, and an OpenVEX document carrying that same signature (over
//! other bytes); `vex-lens serve` verifies both on the verifier pool. The first is
//! `verified` (issuer: the certificate's owner), the second `failed`/`bad_signature` and
//! counted in `vex_dsse_verification_failures_total{kind="openpgp"}`; neither is
//! dead-lettered; and the records are byte for byte (by `consensus_digest`) the records the
//! embedded pipeline makes from the same files with `.asc` beside them.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{metric, repo_dir, Serve, ServeSetup};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn fixture(f: &str) -> Vec<u8> {
    std::fs::read(repo_dir().join("tests/fixtures/openpgp").join(f)).unwrap()
}

fn write_issuers(path: &Path) {
    let gpg = String::from_utf8(fixture("gpg-cert.asc")).unwrap();
    std::fs::write(
        path,
        format!("[[issuers]]\nid = \"csaf-provider\"\ntier = \"trusted\"\naliases = [\"ACME PSIRT\"]\nkeys = [{{ type = \"openpgp\", certificate = \"\"\"\n{gpg}\"\"\" }}]\n"),
    )
    .unwrap();
}

const OPENVEX: &str = r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://acme.example/vex/1","author":"ACME PSIRT","timestamp":"2024-01-01T00:00:00Z","version":1,"statements":[{"vulnerability":{"name":"CVE-2024-1"},"products":[{"@id":"pkg:npm/other-bytes@1.0.0"}],"status":"affected","action_statement":"upgrade"}]}"#;

fn digests(records: &[Value]) -> Vec<String> {
    let mut d: Vec<String> = records.iter().map(|r| r["consensus_digest"].as_str().unwrap().to_string()).collect();
    d.sort();
    d
}

#[test]
fn openpgp_signatures_in_a_kafka_header_are_verified_like_files() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let tmp = tempfile::tempdir().unwrap();
    let issuers = tmp.path().join("issuers.toml");
    write_issuers(&issuers);
    let asc = fixture("csaf-signed.json.asc");
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("csaf-signed.json"), fixture("csaf-signed.json")).unwrap();
    std::fs::write(input.join("csaf-signed.json.asc"), &asc).unwrap();
    std::fs::write(input.join("other.json"), OPENVEX).unwrap();
    std::fs::write(input.join("other.json.asc"), &asc).unwrap();

    // The embedded pipeline over the files, for comparison.
    let data = tmp.path().join("data");
    let out = common::serve_once(
        &["--ingest-dir", input.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &[("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers.to_str().unwrap())],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = common::vex_lens(&["records", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success());
    let embedded: Vec<Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(embedded.len() >= 2, "{embedded:?}");

    // The same bytes over Kafka, the signature in the header.
    let setup = ServeSetup::fresh(&services, "openpgp");
    let issuers_env = issuers.to_str().unwrap().to_string();
    let mut serve = Serve::start(&setup, "a", &[("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers_env.as_str())]);
    serve.wait_ready(Duration::from_secs(90));
    let header = String::from_utf8(asc).unwrap();
    common::kcat_produce_file(
        &services.brokers,
        &setup.topic,
        "csaf",
        &[("openpgp-signature", header.as_str())],
        &input.join("csaf-signed.json"),
    );
    common::kcat_produce_file(
        &services.brokers,
        &setup.topic,
        "other",
        &[("openpgp-signature", header.as_str())],
        &input.join("other.json"),
    );
    let records = common::wait_for_stored_records(&mut serve, &services.mongo_uri, &setup.db, embedded.len());
    assert_eq!(digests(&records), digests(&embedded), "Kafka and the watched directory give the same records");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let verifications = rt.block_on(common::stored_verifications(&services.mongo_uri, &setup.db));
    let mut seen: Vec<(String, String, String)> = verifications
        .iter()
        .map(|v| {
            assert_eq!(v["kind"], "openpgp", "{v}");
            assert!(v["source"].as_str().is_some_and(|s| s.starts_with("kafka:")), "{v}");
            (
                v["result"].as_str().unwrap().to_string(),
                v["reason"].as_str().unwrap_or("-").to_string(),
                v["issuer"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("failed".to_string(), "bad_signature".to_string(), "csaf-provider".to_string()),
            ("verified".to_string(), "-".to_string(), "csaf-provider".to_string())
        ]
    );
    let m = serve.get("/metrics").expect("metrics").1;
    assert_eq!(
        metric(&m, "vex_dsse_verification_failures_total{kind=\"openpgp\",reason=\"bad_signature\"}"),
        Some(1.0),
        "{m}"
    );
    assert_eq!(common::kcat_count(&services.brokers, &setup.dlq_topic), 0, "nothing is dead-lettered");
    assert!(serve.terminate(Duration::from_secs(30)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}
