//! Shared by tests/pipeline_dsse.rs (embedded) and tests/it_dsse.rs (Kafka + MongoDB-wire):
//! an issuer directory with two issuers' keys and five envelopes, one per verification
//! outcome, plus the checks of what the pipeline must have stored for them. A test that
//! includes it also includes `integration-tests/common` as `mod common` (its record
//! helpers).

#![allow(dead_code)]

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use vex_lens::crypto::{
    generate_keypair, openvex_statement, sign_envelope, Envelope, KeyAlg, SigningKey, Subject, IN_TOTO_PAYLOAD_TYPE,
};

const OPENVEX_TYPE: &str = "application/openvex+json";

pub struct Keys {
    /// Issuer `acme` (alias "ACME PSIRT"), Ed25519.
    pub acme: SigningKey,
    /// Issuer `distro`, ECDSA P-256, configured with keyid `distro-2024`.
    pub distro: SigningKey,
    /// Not in the directory.
    pub stranger: SigningKey,
}

fn key(alg: KeyAlg) -> SigningKey {
    SigningKey::from_pem(&generate_keypair(alg).unwrap().0).unwrap()
}

impl Keys {
    pub fn new() -> Keys {
        Keys { acme: key(KeyAlg::Ed25519), distro: key(KeyAlg::EcdsaP256), stranger: key(KeyAlg::Ed25519) }
    }

    /// Writes the issuer directory holding acme's and distro's public keys.
    pub fn write_issuers(&self, path: &Path) {
        let toml = format!(
            r#"[[issuers]]
id = "acme"
display_name = "ACME Product Security"
tier = "authoritative"
aliases = ["ACME PSIRT"]
keys = [{{ public_key = """{}""" }}]

[[issuers]]
id = "distro"
display_name = "Distro Security"
tier = "trusted"
keys = [{{ keyid = "distro-2024", public_key = """{}""" }}]
"#,
            self.acme.public_key().to_pem(),
            self.distro.public_key().to_pem()
        );
        std::fs::write(path, toml).unwrap();
    }
}

/// An OpenVEX document by `author`: `pkg:npm/<pkg>@1.0.0` is affected by `cve`.
pub fn doc(author: &str, pkg: &str, cve: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": format!("https://example.test/vex/{pkg}"),
        "author": author,
        "timestamp": "2024-06-01T00:00:00Z",
        "version": 1,
        "statements": [{
            "vulnerability": {"name": cve},
            "products": [{"@id": format!("pkg:npm/{pkg}@1.0.0")}],
            "status": "affected",
            "action_statement": "upgrade"
        }]
    }))
    .unwrap()
}

/// The five envelopes, by name (= package), every document claiming ACME as its author:
/// * `good`: signed by distro (in-toto Statement, keyid = the configured alias): verified,
///   the issuer is distro;
/// * `tampered`: signed by acme, payload changed afterwards: failed/bad_signature;
/// * `wrongkey`: keyless signature by a key that is not acme's: failed/wrong_key;
/// * `truncated`: signed by acme, signature cut in half: failed/bad_signature;
/// * `unknownkey`: signed with its keyid by a key the directory does not have:
///   unsigned/unknown_key.
pub fn envelopes(k: &Keys) -> Vec<(&'static str, Envelope)> {
    let statement = openvex_statement(
        &[Subject::default()],
        &serde_json::from_slice(&doc("ACME PSIRT", "good", "CVE-2024-1001")).unwrap(),
    );
    let mut good = sign_envelope(IN_TOTO_PAYLOAD_TYPE, &statement, &k.distro).unwrap();
    good.signatures[0].keyid = "distro-2024".into();
    let mut tampered = sign_envelope(OPENVEX_TYPE, &doc("ACME PSIRT", "tampered", "CVE-2024-1002"), &k.acme).unwrap();
    tampered.payload.extend_from_slice(b" ");
    let mut wrong = sign_envelope(OPENVEX_TYPE, &doc("ACME PSIRT", "wrongkey", "CVE-2024-1003"), &k.stranger).unwrap();
    wrong.signatures[0].keyid.clear();
    let mut truncated = sign_envelope(OPENVEX_TYPE, &doc("ACME PSIRT", "truncated", "CVE-2024-1004"), &k.acme).unwrap();
    let n = truncated.signatures[0].sig.len();
    truncated.signatures[0].sig.truncate(n / 2);
    let unknown = sign_envelope(OPENVEX_TYPE, &doc("ACME PSIRT", "unknownkey", "CVE-2024-1005"), &k.stranger).unwrap();
    vec![("good", good), ("tampered", tampered), ("wrongkey", wrong), ("truncated", truncated), ("unknownkey", unknown)]
}

/// Writes each envelope to `<dir>/<name>.dsse.json`; returns the paths.
pub fn write_envelopes(k: &Keys, dir: &Path) -> Vec<(&'static str, PathBuf)> {
    envelopes(k)
        .into_iter()
        .map(|(name, env)| {
            let p = dir.join(format!("{name}.dsse.json"));
            std::fs::write(&p, env.to_json()).unwrap();
            (name, p)
        })
        .collect()
}

/// Checks the stored verifications (JSON of `VerificationRecord`s): one per envelope,
/// with its own result, reason, issuer, keyid and the digest of the bytes sent.
pub fn check_verifications(verifications: &[Value], k: &Keys, files: &[(&str, PathBuf)]) {
    assert_eq!(verifications.len(), 5, "{verifications:?}");
    let expect = [
        ("good", "verified", Value::Null, "distro", k.distro.keyid()),
        ("tampered", "failed", json!("bad_signature"), "acme", k.acme.keyid()),
        ("wrongkey", "failed", json!("wrong_key"), "acme", ""),
        ("truncated", "failed", json!("bad_signature"), "acme", k.acme.keyid()),
        ("unknownkey", "unsigned", json!("unknown_key"), "acme", k.stranger.keyid()),
    ];
    for (name, result, reason, issuer, keyid) in expect {
        let path = &files.iter().find(|(n, _)| *n == name).unwrap().1;
        let digest = format!("sha256:{}", vex_lens::domain::canonical::sha256_hex(&std::fs::read(path).unwrap()));
        let v = verifications
            .iter()
            .find(|v| v["envelope_digest"] == digest)
            .unwrap_or_else(|| panic!("no verification of {name} ({digest}): {verifications:?}"));
        assert_eq!(v["result"], result, "{name}: {v}");
        assert_eq!(v["reason"], reason, "{name}: {v}");
        assert_eq!(v["issuer"], issuer, "{name}: {v}");
        if keyid.is_empty() {
            assert!(v["keyid"].is_null(), "{name}: {v}");
        } else {
            assert_eq!(v["keyid"], keyid, "{name}: {v}");
        }
        assert!(v["verified_at_ms"].as_i64().unwrap() > 0, "{name}: {v}");
        assert!(v["source"].as_str().is_some_and(|s| !s.is_empty()), "{name}: {v}");
    }
}

/// Checks the consensus records (JSON): verified counts at factor 1.0 with the signer as
/// issuer; failed statements are excluded with conflict `missing_provenance`; a key the
/// directory does not know counts as unsigned (factor 0.7).
pub fn check_records(records: &[Value]) {
    let record = |pkg: &str| crate::common::npm_record(records, pkg);
    let r = record("good");
    let s = &r["statements"][0];
    assert_eq!(
        (s["issuer"].as_str(), s["signature"].as_str(), s["role"].as_str()),
        (Some("distro"), Some("verified"), Some("counted")),
        "{r}"
    );
    assert_eq!(s["factors"]["signature_ppm"], 1_000_000, "{r}");
    assert_eq!(r["status"], "affected");
    assert!(r["conflicts"].as_array().unwrap().is_empty(), "{r}");
    for (pkg, reason) in [("tampered", "bad_signature"), ("wrongkey", "wrong_key"), ("truncated", "bad_signature")] {
        let r = record(pkg);
        crate::common::assert_signature_failed(r, pkg, reason);
        assert_eq!(r["statements"][0]["factors"]["signature_ppm"], 0, "{pkg}: {r}");
    }
    let r = record("unknownkey");
    let s = &r["statements"][0];
    assert_eq!(
        (s["issuer"].as_str(), s["signature"].as_str(), s["role"].as_str()),
        (Some("acme"), Some("unsigned"), Some("counted")),
        "{r}"
    );
    assert_eq!(s["factors"]["signature_ppm"], 700_000, "{r}");
}
