//! `vex-lens verify`: exit 0 for a good bundle, 3 for a tampered/missing file (named),
//! 4 for a bad, foreign or missing signature when a key is given, 2 for usage errors;
//! without a key it says the signature was NOT checked. And the runbook's offline check:
//! `jq -r '.files[].sha256'` agrees with `sha256sum`.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use vex_lens::crypto::{generate_keypair, write_private_key, KeyAlg};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vex-lens"));
    c.env_remove("SOURCE_DATE_EPOCH");
    c
}

struct Bundle {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    out: PathBuf,
    public: PathBuf,
    other_public: PathBuf,
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// A signed ndjson bundle of two tiny documents, plus a second (foreign) key.
fn bundle(alg: KeyAlg, sign: bool) -> Bundle {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    let doc = json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.com/vex/1",
        "author": "Alice",
        "timestamp": "2024-01-01T00:00:00Z",
        "version": 1,
        "statements": [
            {"vulnerability": {"name": "CVE-2024-0001"}, "products": [{"@id": "pkg:npm/a@1.0.0"}], "status": "fixed"},
            {"vulnerability": {"name": "CVE-2024-0002"}, "products": [{"@id": "pkg:npm/b@1.0.0"}], "status": "affected"}
        ]
    });
    std::fs::write(root.join("doc.json"), serde_json::to_vec(&doc).unwrap()).unwrap();
    let (pem, public) = generate_keypair(alg).unwrap();
    write_private_key(&root.join("key.pem"), &pem).unwrap();
    std::fs::write(root.join("key.pub"), public.to_pem()).unwrap();
    let (_, other) = generate_keypair(alg).unwrap();
    std::fs::write(root.join("other.pub"), other.to_pem()).unwrap();
    let out = root.join("out");
    let mut c = bin();
    c.current_dir(&root).args([
        "export",
        "--format",
        "openvex",
        "--manifest",
        "out/manifest.json",
        "--from",
        "doc.json",
    ]);
    if sign {
        c.args(["--sign-key", "key.pem"]);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    Bundle { root: root.clone(), out, public: root.join("key.pub"), other_public: root.join("other.pub"), _tmp: tmp }
}

fn verify(dir: &Path, key: Option<&Path>) -> Output {
    let mut c = bin();
    c.arg("verify").arg(dir);
    if let Some(k) = key {
        c.arg("--public-key").arg(k);
    }
    c.output().unwrap()
}

#[test]
fn good_bundle_verifies_with_and_without_key() {
    for alg in [KeyAlg::Ed25519, KeyAlg::EcdsaP256] {
        let b = bundle(alg, true);
        let o = verify(&b.out, Some(&b.public));
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("signature ok"), "{}", text(&o));
        assert!(text(&o).contains("tool:     vex-lens"), "{}", text(&o));
        assert!(text(&o).contains("records:  2"), "{}", text(&o));
        let o = verify(&b.out, None);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(text(&o).contains("signature NOT checked"), "{}", text(&o));
        // --manifest instead of the directory
        let o = bin()
            .args(["verify", "--manifest"])
            .arg(b.out.join("manifest.json"))
            .arg("--public-key")
            .arg(&b.public)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }
}

#[test]
fn tampered_data_file_is_named_and_exits_3() {
    let b = bundle(KeyAlg::Ed25519, true);
    let f = b.out.join("consensus.openvex.json");
    let mut data = std::fs::read(&f).unwrap();
    let i = data.iter().position(|&c| c == b'f').unwrap();
    data[i] = b'F'; // same size, different hash
    std::fs::write(&f, &data).unwrap();
    for key in [Some(b.public.as_path()), None] {
        let o = verify(&b.out, key);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(text(&o).contains("MISMATCH  consensus.openvex.json: sha256"), "{}", text(&o));
    }
    // a size change is named too
    data.push(b'\n');
    std::fs::write(&f, &data).unwrap();
    let o = verify(&b.out, Some(&b.public));
    assert_eq!(o.status.code(), Some(3));
    assert!(text(&o).contains("bytes, manifest says"), "{}", text(&o));
}

#[test]
fn deleted_file_exits_3_and_extra_file_is_reported() {
    let b = bundle(KeyAlg::Ed25519, true);
    std::fs::write(b.out.join("notes.txt"), "hello").unwrap();
    let o = verify(&b.out, Some(&b.public));
    assert_eq!(o.status.code(), Some(0), "an extra file is reported, not fatal: {}", text(&o));
    assert!(text(&o).contains("notes.txt (not in the manifest"), "{}", text(&o));
    std::fs::remove_file(b.out.join("consensus.openvex.json")).unwrap();
    let o = verify(&b.out, Some(&b.public));
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("MISSING   consensus.openvex.json"), "{}", text(&o));
    // a manifest whose files[] was edited without its bundle_id (unsigned check)
    let mp = b.out.join("manifest.json");
    let m = std::fs::read_to_string(&mp).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&m).unwrap();
    v["files"][0]["path"] = json!("other.json");
    std::fs::write(&mp, serde_json::to_vec(&v).unwrap()).unwrap();
    let o = verify(&b.out, None);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    assert!(text(&o).contains("is not the hash of files[]"), "{}", text(&o));
    // and a missing manifest
    std::fs::remove_file(b.out.join("manifest.json")).unwrap();
    let o = verify(&b.out, None);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

#[test]
fn bad_signature_wrong_key_or_unsigned_exits_4() {
    let b = bundle(KeyAlg::EcdsaP256, true);
    // the wrong key
    let o = verify(&b.out, Some(&b.other_public));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("SIGNATURE BAD (unknown_key)"), "{}", text(&o));
    // a tampered envelope: flip a byte of the signature
    let envp = b.out.join("manifest.dsse.json");
    let original = std::fs::read(&envp).unwrap();
    let mut env: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let sig = env["signatures"][0]["sig"].as_str().unwrap().to_string();
    let mut raw = vex_lens::crypto::decode_base64(&sig).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 1;
    env["signatures"][0]["sig"] = json!(vex_lens::crypto::encode_base64(&raw));
    std::fs::write(&envp, serde_json::to_vec(&env).unwrap()).unwrap();
    let o = verify(&b.out, Some(&b.public));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("SIGNATURE BAD (bad_signature)"), "{}", text(&o));
    // an envelope over another payload
    let mut env: serde_json::Value = serde_json::from_slice(&original).unwrap();
    env["payload"] = json!(vex_lens::crypto::encode_base64(b"{}"));
    std::fs::write(&envp, serde_json::to_vec(&env).unwrap()).unwrap();
    let o = verify(&b.out, Some(&b.public));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("payload_mismatch"), "{}", text(&o));
    // garbage
    std::fs::write(&envp, b"not json").unwrap();
    let o = verify(&b.out, Some(&b.public));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("malformed_envelope"), "{}", text(&o));
    // a tampered manifest under a good envelope (signature wins over hashes)
    std::fs::write(&envp, &original).unwrap();
    let mp = b.out.join("manifest.json");
    let m = std::fs::read_to_string(&mp).unwrap();
    std::fs::write(&mp, m.replace("\"records\":2", "\"records\":3")).unwrap();
    let o = verify(&b.out, Some(&b.public));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));

    // unsigned bundle, key given
    let u = bundle(KeyAlg::Ed25519, false);
    let o = verify(&u.out, Some(&u.public));
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(text(&o).contains("SIGNATURE MISSING"), "{}", text(&o));
    let o = verify(&u.out, None);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains("signature NOT checked"));
}

#[test]
fn usage_and_unexpected_errors() {
    let o = bin().arg("verify").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "no directory nor --manifest is a usage error");
    let o = bin().args(["verify", "x", "--bogus"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    let b = bundle(KeyAlg::Ed25519, true);
    std::fs::write(b.root.join("junk.pub"), "junk").unwrap();
    let o = verify(&b.out, Some(&b.root.join("junk.pub")));
    assert_eq!(o.status.code(), Some(5), "an unusable key file is an unexpected error: {}", text(&o));
    let o = verify(&b.out, Some(&b.root.join("absent.pub")));
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
}

fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// The runbook's offline check, with the real tools: the hashes `jq` reads from the
/// manifest are what `sha256sum` computes, and `sha256sum -c` accepts them.
#[test]
fn runbook_jq_and_sha256sum_agree() {
    if !(have("jq") && have("sha256sum")) {
        panic!("jq and sha256sum are needed for the runbook check (scripts/install-system-deps.sh installs jq)");
    }
    let b = bundle(KeyAlg::Ed25519, true);
    let sh = |script: &str| {
        let o = Command::new("sh").arg("-c").arg(script).current_dir(&b.out).output().unwrap();
        assert!(o.status.success(), "{script}: {}", text(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let listed = sh("jq -r '.files[].sha256' manifest.json");
    let computed = sh("jq -r '.files[].path' manifest.json | xargs sha256sum | cut -d' ' -f1");
    assert_eq!(listed, computed);
    assert_eq!(listed.lines().count(), 1);
    let check = sh("jq -r '.files[] | \"\\(.sha256)  \\(.path)\"' manifest.json | sha256sum -c -");
    assert!(check.contains("consensus.openvex.json: OK"), "{check}");
}
