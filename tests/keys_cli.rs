//! `vex-lens keys show`: what it prints agrees with GnuPG's own reading of the certificate,
//! and the issuers.toml entry it prints, pasted as is, verifies that key's signatures.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{repo_dir, vex_lens};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture(f: &str) -> PathBuf {
    repo_dir().join("tests/fixtures/openpgp").join(f)
}

/// Fingerprints GnuPG reads from a certificate (primary first), with `--show-keys`
/// (nothing is imported: a throw-away GNUPGHOME).
fn gpg_fingerprints(cert: &Path) -> Vec<String> {
    let home = tempfile::tempdir().unwrap();
    let out = Command::new("gpg")
        .env("GNUPGHOME", home.path())
        .args(["--batch", "--with-colons", "--show-keys", "--with-subkey-fingerprints"])
        .arg(cert)
        .output()
        .expect("gpg (GnuPG) is installed by scripts/install-system-deps.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.starts_with("fpr:"))
        .map(|l| l.split(':').nth(9).unwrap().to_string())
        .collect()
}

fn ungroup(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

#[test]
fn show_prints_what_gnupg_reads_and_an_entry_that_verifies_the_keys_signatures() {
    let cert = fixture("gpg-cert.asc");
    let out = vex_lens(&["keys", "show", "--issuer", "csaf-provider", cert.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();

    let gpg = gpg_fingerprints(&cert);
    assert_eq!(gpg.len(), 2, "primary + signing subkey: {gpg:?}");
    let primary = text.lines().find_map(|l| l.strip_prefix("fingerprint: ")).expect(&text);
    assert_eq!(ungroup(primary), gpg[0]);
    let shown: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("primary") || l.starts_with("subkey"))
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    assert_eq!(shown, gpg, "every key, in GnuPG's order");
    assert!(text.contains("user id:     Example CSAF Provider <psirt@csaf-provider.example>"), "{text}");
    // The signing subkey expired two days after 2024-01-01 (tests/fixtures/openpgp/README.md).
    let sub = text.lines().find(|l| l.starts_with("subkey")).unwrap();
    assert!(sub.contains("created 2024-01-01T00:00:00Z") && sub.contains("expires 2024-01-03T00:00:00Z"), "{sub}");
    assert!(sub.contains("can sign") && !sub.contains("REVOKED"), "{sub}");
    let prim = text.lines().find(|l| l.starts_with("primary")).unwrap();
    assert!(prim.contains("expires never") && prim.contains("cannot sign"), "cert-only primary: {prim}");

    // The printed entry, pasted as is, is an issuer directory that verifies the fixture's
    // GnuPG signature (made by the subkey) as this issuer's.
    let entry = &text[text.find("[[issuers]]").expect(&text)..];
    let dir = tempfile::tempdir().unwrap();
    let issuers = dir.path().join("issuers.toml");
    std::fs::write(&issuers, entry).unwrap();
    for f in ["csaf-signed.json", "csaf-signed.json.asc"] {
        std::fs::copy(fixture(f), dir.path().join(f)).unwrap();
    }
    let doc = dir.path().join("csaf-signed.json");
    let out = vex_lens(&["consensus", "--issuers", issuers.to_str().unwrap(), doc.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let records: Vec<Value> =
        String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!records.is_empty());
    for r in &records {
        for s in r["statements"].as_array().unwrap() {
            assert_eq!(s["signature"], "verified", "{s}");
            assert_eq!(s["issuer"], "csaf-provider", "{s}");
        }
    }
}

#[test]
fn show_reads_standard_input_and_marks_a_revoked_key() {
    let cert = std::fs::read(fixture("gpg-rsa-cert-revoked.asc")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vex-lens"))
        .args(["keys", "show", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &cert).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let prim = text.lines().find(|l| l.starts_with("primary")).expect(&text);
    assert!(prim.contains("B3FFC533B23B6BB6445F364BF5B42EA331C34271") && prim.contains("REVOKED"), "{prim}");
    assert!(text.contains("id = \"ISSUER-ID\""), "{text}");
}

#[test]
fn show_refuses_a_signature_binary_data_and_a_secret_key_with_a_reason() {
    let sig = vex_lens(&["keys", "show", fixture("csaf-signed.json.asc").to_str().unwrap()]);
    assert!(!sig.status.success());
    let err = String::from_utf8_lossy(&sig.stderr);
    assert!(err.contains("detached signature made by key") && err.contains("not a certificate"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cert.gpg");
    std::fs::write(&bin, [0x99u8, 0x01, 0xff, 0xfe, 0x80]).unwrap();
    let out = vex_lens(&["keys", "show", bin.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("gpg --armor --export"));

    let secret = dir.path().join("secret.asc");
    std::fs::write(&secret, "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nxx\n-----END PGP PRIVATE KEY BLOCK-----\n")
        .unwrap();
    let out = vex_lens(&["keys", "show", secret.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not load"), "{}", String::from_utf8_lossy(&out.stderr));
}
