//! `vex-lens keygen`: writes a PKCS#8 private key with mode 0600, prints the SPKI public
//! key and its securesystemslib key id, refuses to overwrite without --force.

use std::process::Command;
use vex_lens::crypto::{KeyAlg, PublicKey, SigningKey};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vex-lens"))
}

fn keygen(alg: &str, expect: KeyAlg) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    let pubfile = dir.path().join("key.pub.pem");
    let out =
        bin().args(["keygen", "--alg", alg, "--out"]).arg(&key).arg("--public-out").arg(&pubfile).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("-----BEGIN PUBLIC KEY-----\n"), "{stdout}");
    let printed = PublicKey::from_pem(&stdout).unwrap();
    let keyid_line = stdout.lines().find_map(|l| l.strip_prefix("keyid: ")).expect("keyid line");
    assert_eq!(keyid_line, printed.keyid());
    assert_eq!(printed.alg(), expect);
    assert_eq!(std::fs::read_to_string(&pubfile).unwrap(), printed.to_pem());

    let pem = std::fs::read_to_string(&key).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "PKCS#8 PEM expected");
    let signer = SigningKey::from_pem(&pem).unwrap();
    assert_eq!(signer.keyid(), printed.keyid(), "the printed key is the private key's public key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // No silent overwrite.
    let again = bin().args(["keygen", "--alg", alg, "--out"]).arg(&key).output().unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    assert_eq!(std::fs::read_to_string(&key).unwrap(), pem, "key changed without --force");

    // --force replaces it (with a new key, still 0600).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let forced = bin().args(["keygen", "--alg", alg, "--force", "--out"]).arg(&key).output().unwrap();
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    assert_ne!(std::fs::read_to_string(&key).unwrap(), pem);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
}

#[test]
fn keygen_ed25519() {
    keygen("ed25519", KeyAlg::Ed25519);
}

#[test]
fn keygen_ecdsa_p256() {
    keygen("ecdsa-p256", KeyAlg::EcdsaP256);
}

#[test]
fn keygen_rejects_unknown_algorithm_as_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().args(["keygen", "--alg", "rsa", "--out"]).arg(dir.path().join("k")).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
