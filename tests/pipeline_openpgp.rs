//! Detached OpenPGP signatures on the real embedded pipeline (`vex-lens serve`, the built
//! binary, a watched directory with `<document>.asc` beside each signed document):
//! a CSAF document signed by GnuPG (by a signing subkey that has since expired) and an
//! OpenVEX document signed by a key the test makes with rpgp are `verified` and their
//! certificate's issuer is the statement's issuer; a signature over other bytes is
//! `failed`/`bad_signature`, a truncated one `failed`/`malformed_signature` (the document
//! is not dead-lettered), another key's `unsigned`/`unknown_key`; a signature beside a
//! DSSE envelope is ignored and logged. Every verification is persisted with `kind:
//! openpgp`, failures are logged, and a second run over the same files (in another data
//! directory) gives byte-identical records.

#[path = "../integration-tests/common/mod.rs"]
mod common;
#[path = "../integration-tests/common/openpgp.rs"]
mod openpgp;

use common::{ndjson, repo_dir, vex_lens};

use std::path::Path;

use pgp::composed::SignedSecretKey;
use pgp::types::KeyDetails;
use serde_json::Value;

fn fixture(f: &str) -> Vec<u8> {
    std::fs::read(repo_dir().join("tests/fixtures/openpgp").join(f)).unwrap()
}

/// The test's key (made with rpgp, not GnuPG).
fn keygen() -> SignedSecretKey {
    openpgp::keygen("ACME PSIRT <psirt@acme.example>")
}

/// A detached signature by `key` over `payload`, made an hour after the key.
fn sign(key: &SignedSecretKey, payload: &[u8]) -> Vec<u8> {
    openpgp::sign(key, payload, openpgp::T0 + 3600)
}

fn openvex(product: &str, status: &str) -> Vec<u8> {
    format!(
        r#"{{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://acme.example/vex/{product}","author":"ACME PSIRT","timestamp":"2024-01-01T00:00:00Z","version":1,"statements":[{{"vulnerability":{{"name":"CVE-2024-1"}},"products":[{{"@id":"pkg:npm/{product}@1.0.0"}}],"status":"{status}","action_statement":"upgrade"}}]}}"#
    )
    .into_bytes()
}

fn write(dir: &Path, name: &str, doc: &[u8], asc: Option<&[u8]>) {
    std::fs::write(dir.join(name), doc).unwrap();
    if let Some(a) = asc {
        std::fs::write(dir.join(format!("{name}.asc")), a).unwrap();
    }
}

/// The issuer directory: the GnuPG fixture's certificate for `csaf-provider` (checked
/// by fingerprint), the test key's for `acme`.
fn write_issuers(path: &Path, acme: &SignedSecretKey) {
    let gpg = String::from_utf8(fixture("gpg-cert.asc")).unwrap();
    let text = format!(
        "[[issuers]]\nid = \"csaf-provider\"\ntier = \"trusted\"\nkeys = [{{ type = \"openpgp\", fingerprint = \"83CE 4271 7380 64E6 1937  449E 1C2D CBED 1F91 3457\", certificate = \"\"\"\n{gpg}\"\"\" }}]\n\n\
         [[issuers]]\nid = \"acme\"\ntier = \"trusted\"\naliases = [\"ACME PSIRT\"]\nkeys = [{{ type = \"openpgp\", certificate = \"\"\"\n{}\"\"\" }}]\n",
        openpgp::certificate(acme)
    );
    std::fs::write(path, text).unwrap();
}

fn serve_once(input: &Path, data: &Path, issuers: &Path) -> String {
    let out = common::serve_once(
        &["--ingest-dir", input.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &[("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers.to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

#[test]
fn detached_signatures_beside_watched_files_are_verified_recorded_and_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let acme = keygen();
    let stranger = keygen();
    let issuers = tmp.path().join("issuers.toml");
    write_issuers(&issuers, &acme);

    // GnuPG: a real CSAF document and its .asc, byte for byte.
    write(&input, "csaf-signed.json", &fixture("csaf-signed.json"), Some(&fixture("csaf-signed.json.asc")));
    let good = openvex("good", "affected");
    write(&input, "good.json", &good, Some(&sign(&acme, &good)));
    let tampered = openvex("tampered", "not_affected");
    write(&input, "tampered.json", &tampered, Some(&sign(&acme, &openvex("tampered", "affected"))));
    let stranger_doc = openvex("stranger", "affected");
    write(&input, "stranger.json", &stranger_doc, Some(&sign(&stranger, &stranger_doc)));
    let truncated = openvex("truncated", "affected");
    let sig = sign(&acme, &truncated);
    write(&input, "truncated.json", &truncated, Some(&sig[..sig.len() / 2]));
    // A DSSE envelope (no signatures) with an .asc beside it: the .asc is ignored.
    let envelope = serde_json::json!({
        "payloadType": "application/openvex+json",
        "payload": vex_lens::crypto::encode_base64(&openvex("enveloped", "affected")),
        "signatures": [],
    })
    .to_string();
    write(&input, "enveloped.json", envelope.as_bytes(), Some(&sign(&acme, envelope.as_bytes())));

    let data = tmp.path().join("data");
    let stderr = serve_once(&input, &data, &issuers);
    let lines: Vec<Value> = stderr.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let events = |e: &str| lines.iter().filter(|l| l["event"] == e).collect::<Vec<_>>();
    // Two failures logged, with kind, issuer and reason; the ignored signature logged.
    let failures = events("openpgp_verification_failed");
    let mut reasons: Vec<&str> = failures.iter().map(|f| f["reason"].as_str().unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, ["bad_signature", "malformed_signature"], "{stderr}");
    assert!(failures.iter().all(|f| f["kind"] == "openpgp" && f["issuer"] == "acme"), "{failures:?}");
    let ignored = events("openpgp_signature_ignored");
    assert_eq!(ignored.len(), 1, "{stderr}");
    assert!(ignored[0]["source"].as_str().unwrap().ends_with("enveloped.json"), "{ignored:?}");
    assert!(events("dead_lettered").is_empty(), "nothing is dead-lettered for its signature:\n{stderr}");

    // Every OpenPGP verification persisted, with kind, result, reason, issuer and key.
    let verifications = ndjson(&vex_lens(&["records", "--verifications", "--data-dir", data.to_str().unwrap()]));
    let openpgp: Vec<&Value> = verifications.iter().filter(|v| v["kind"] == "openpgp").collect();
    assert_eq!(openpgp.len(), 5, "{verifications:?}");
    let by_source = |name: &str| -> &Value {
        openpgp
            .iter()
            .find(|v| v["source"].as_str().is_some_and(|s| s.ends_with(&format!("/{name}"))))
            .unwrap_or_else(|| panic!("no verification of {name}: {openpgp:?}"))
    };
    let acme_fpr = hex::encode_upper(acme.primary_key.fingerprint().as_bytes());
    let stranger_fpr = hex::encode_upper(stranger.primary_key.fingerprint().as_bytes());
    for (name, result, reason, issuer, keyid) in [
        ("csaf-signed.json", "verified", None, "csaf-provider", "1CF50DC0DA1FF33563EAA5130B1B63D36A182FDE"),
        ("good.json", "verified", None, "acme", acme_fpr.as_str()),
        ("tampered.json", "failed", Some("bad_signature"), "acme", acme_fpr.as_str()),
        ("stranger.json", "unsigned", Some("unknown_key"), "acme", stranger_fpr.as_str()),
    ] {
        let v = by_source(name);
        assert_eq!(
            (v["result"].as_str(), v["reason"].as_str(), v["issuer"].as_str(), v["keyid"].as_str()),
            (Some(result), reason, Some(issuer), Some(keyid)),
            "{name}: {v}"
        );
    }
    let v = by_source("truncated.json");
    assert_eq!((v["result"].as_str(), v["reason"].as_str()), (Some("failed"), Some("malformed_signature")), "{v}");
    // The envelope's own verification, not the .asc's.
    assert_eq!(verifications.iter().filter(|v| v["kind"].is_null()).count(), 1, "{verifications:?}");

    // The consensus records: verified statements count fully for the certificate's
    // issuer; failed ones are excluded with missing_provenance; unknown keys count unsigned.
    let records = ndjson(&vex_lens(&["records", "--data-dir", data.to_str().unwrap()]));
    let record = |pkg: &str| common::npm_record(&records, pkg);
    let s = &record("good")["statements"][0];
    assert_eq!(
        (s["issuer"].as_str(), s["signature"].as_str(), s["role"].as_str()),
        (Some("acme"), Some("verified"), Some("counted"))
    );
    assert_eq!(s["factors"]["signature_ppm"], 1_000_000);
    for (pkg, reason) in [("tampered", "bad_signature"), ("truncated", "malformed_signature")] {
        common::assert_signature_failed(record(pkg), pkg, reason);
    }
    let s = &record("stranger")["statements"][0];
    assert_eq!(
        (s["issuer"].as_str(), s["signature"].as_str(), s["role"].as_str()),
        (Some("acme"), Some("unsigned"), Some("counted"))
    );
    assert_eq!(s["factors"]["signature_ppm"], 700_000);
    let s = &record("enveloped")["statements"][0];
    assert_eq!(s["signature"].as_str(), Some("unsigned"), "the envelope decides: {s}");
    // The GnuPG-signed CSAF document: every statement is csaf-provider's, verified.
    let csaf: Vec<&Value> = records
        .iter()
        .flat_map(|r| r["statements"].as_array().unwrap())
        .filter(|s| s["issuer"] == "csaf-provider")
        .collect();
    assert!(!csaf.is_empty(), "{records:?}");
    assert!(csaf.iter().all(|s| s["signature"] == "verified"), "{csaf:?}");

    // Replay: the same files into a fresh data directory give byte-identical records.
    let again = tmp.path().join("data2");
    serve_once(&input, &again, &issuers);
    let first = vex_lens(&["records", "--data-dir", data.to_str().unwrap()]);
    let second = vex_lens(&["records", "--data-dir", again.to_str().unwrap()]);
    assert!(second.status.success());
    assert_eq!(String::from_utf8_lossy(&first.stdout), String::from_utf8_lossy(&second.stdout));

    // The CLI over the same files (`.asc` beside them) gives the same records (it reads no
    // DSSE envelopes: that one is skipped).
    let cli = vex_lens(&["consensus", "--keep-going", "--issuers", issuers.to_str().unwrap(), input.to_str().unwrap()]);
    let digests = |rs: &[Value]| -> std::collections::BTreeSet<String> {
        rs.iter()
            .filter(|r| r["artifact"] != "pkg:npm/enveloped@1.0.0")
            .map(|r| r["consensus_digest"].as_str().unwrap().to_string())
            .collect()
    };
    let cli_records = ndjson(&cli);
    assert_eq!(digests(&cli_records), digests(&records), "the CLI and the watched directory agree");
}

/// A certificate whose fingerprint is not the configured one stops `serve`, naming the
/// issuer and the key.
#[test]
fn a_certificate_with_another_fingerprint_stops_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let issuers = tmp.path().join("issuers.toml");
    let gpg = String::from_utf8(fixture("gpg-cert.asc")).unwrap();
    std::fs::write(
        &issuers,
        format!("[[issuers]]\nid = \"csaf-provider\"\ntier = \"trusted\"\nkeys = [{{ type = \"openpgp\", fingerprint = \"0000\", certificate = \"\"\"\n{gpg}\"\"\" }}]\n"),
    )
    .unwrap();
    let out = common::serve_once(
        &["--data-dir", tmp.path().join("d").to_str().unwrap()],
        &[("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers.to_str().unwrap())],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("issuer csaf-provider") && err.contains("key #0 (openpgp 0000)") && err.contains("does not match"),
        "{err}"
    );
}
