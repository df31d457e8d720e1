//! DSSE verification on the real embedded pipeline (`vex-lens serve`, the built binary):
//! a correctly signed envelope, a tampered one, one signed by a key that is not the
//! claimed issuer's, one with a truncated signature and one by a key the directory does
//! not know are each verified on the verifier pool, persisted to `vex_dsse_verifications`
//! with their own result and reason, and counted; the consensus records carry the
//! verified statement (signature factor 1.0, issuer = the signer) and exclude the failed
//! ones with conflict `missing_provenance`.

#[path = "dsse_fixtures/mod.rs"]
mod dsse_fixtures;

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{get, metric, metric_sum, ndjson, vex_lens, wait_for};
use std::time::Duration;

use dsse_fixtures::{check_records, check_verifications, write_envelopes, Keys};
use serde_json::Value;

#[test]
fn each_envelope_is_verified_persisted_counted_and_weighted() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let data = tmp.path().join("data");
    let keys = Keys::new();
    let issuers = tmp.path().join("issuers.toml");
    keys.write_issuers(&issuers);
    let files = write_envelopes(&keys, &input);

    let (mut server, port) =
        common::spawn_serve(&input, &data, &[("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers.to_str().unwrap())]);
    let docs = wait_for("the five documents", Duration::from_secs(60), || {
        let (_, m) = get(port, "/metrics")?;
        metric(&m, "vex_documents_ingested_total").filter(|n| *n >= 5.0).map(|_| m)
    });
    assert_eq!(metric_sum(&docs, "vex_dsse_verification_failures_total"), Some(3.0), "three failures counted:\n{docs}");

    let status = server.terminate(Duration::from_secs(30));
    let stderr = server.stderr();
    assert!(status.success(), "exit status {status:?}; log:\n{stderr}");
    // One log line per failure, naming issuer, keyid and reason.
    let failures: Vec<Value> = stderr
        .lines()
        .filter(|l| l.contains("\"event\":\"dsse_verification_failed\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(failures.len(), 3, "log:\n{stderr}");
    let mut reasons: Vec<&str> = failures.iter().map(|f| f["reason"].as_str().unwrap()).collect();
    reasons.sort();
    assert_eq!(reasons, ["bad_signature", "bad_signature", "wrong_key"]);
    assert!(failures.iter().all(|f| f["issuer"] == "acme"), "{failures:?}");
    assert_eq!(failures.iter().filter(|f| f["keyid"] == keys.acme.keyid()).count(), 2, "{failures:?}");

    // Every verification persisted with its own result and reason.
    let verifications = ndjson(&vex_lens(&["records", "--verifications", "--data-dir", data.to_str().unwrap()]));
    check_verifications(&verifications, &keys, &files);
    // The consensus records.
    check_records(&ndjson(&vex_lens(&["records", "--data-dir", data.to_str().unwrap()])));
}

/// An envelope that does not parse is dead-lettered (`invalid_envelope`) and its
/// verification persisted and logged as `failed`/`malformed_envelope`.
#[test]
fn a_malformed_envelope_is_dead_lettered_and_recorded_as_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let data = tmp.path().join("data");
    let bad = br#"{"payload":"%%% not base64","payloadType":"application/openvex+json","signatures":[]}"#;
    std::fs::write(input.join("bad.dsse.json"), bad).unwrap();
    let out = common::serve_once(&["--ingest-dir", input.to_str().unwrap(), "--data-dir", data.to_str().unwrap()], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("\"event\":\"dsse_verification_failed\"") && l.contains("malformed_envelope")),
        "{stderr}"
    );
    let v = ndjson(&vex_lens(&["records", "--verifications", "--data-dir", data.to_str().unwrap()]));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!((v[0]["result"].as_str(), v[0]["reason"].as_str()), (Some("failed"), Some("malformed_envelope")));
    let digest = format!("sha256:{}", vex_lens::domain::canonical::sha256_hex(bad));
    assert_eq!(v[0]["envelope_digest"], digest);
    let dead = ndjson(&vex_lens(&["records", "--dead-letters", "--data-dir", data.to_str().unwrap()]));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["reason"], "invalid_envelope");
}

/// A key in the issuer directory that does not load (garbage, a P-256 point off the curve,
/// an Ed25519 key off the curve or of small order) stops `serve` at startup, naming the
/// issuer and the key.
#[test]
fn an_unparseable_issuer_key_is_a_startup_error_naming_the_issuer() {
    let tmp = tempfile::tempdir().unwrap();
    let issuers = tmp.path().join("issuers.toml");
    std::fs::write(
        &issuers,
        "[[issuers]]\nid = \"broken\"\ntier = \"known\"\nkeys = [{ public_key = \"zz not a key\" }]\n",
    )
    .unwrap();
    let issuers_env = [("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers.to_str().unwrap())];
    let out = common::serve_once(&["--data-dir", tmp.path().join("d").to_str().unwrap()], &issuers_env);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("issuer broken") && err.contains("key #0"), "{err}");

    // A well-formed P-256 key whose point is not on the curve: it used to load and then
    // fail every signature as bad_signature; now the start stops, naming issuer and key.
    // Likewise a 32-byte Ed25519 key off the curve, and a small-order one (the identity):
    // both used to pass the length check and then fail every signature.
    let p256_off_curve = "0467cd390f77aa359cb08c2235f652270493a9ed832b0abcc01f70954c0390d2380c782bd54e269125a44f4433aff1432ce94e12bca73aa67ac80cea12608ddf75";
    let ed_off_curve = "02a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    let ed_small_order = "0100000000000000000000000000000000000000000000000000000000000000";
    for (n, (keyid, key, says)) in [
        ("acme-p256", p256_off_curve, "curve"),
        ("acme-ed", ed_off_curve, "curve"),
        ("acme-ed", ed_small_order, "small-order"),
    ]
    .into_iter()
    .enumerate()
    {
        std::fs::write(
            &issuers,
            format!("[[issuers]]\nid = \"acme\"\ntier = \"known\"\nkeys = [{{ keyid = \"{keyid}\", public_key = \"{key}\" }}]\n"),
        )
        .unwrap();
        let data_dir = tmp.path().join(format!("d{}", n + 2));
        let out = common::serve_once(&["--data-dir", data_dir.to_str().unwrap()], &issuers_env);
        assert!(!out.status.success(), "{key} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("issuer acme") && err.contains(&format!("key #0 (keyid {keyid})")) && err.contains(says),
            "{err}"
        );
    }
}
