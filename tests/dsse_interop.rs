//! DSSE interoperability with securesystemslib (Python), both directions, for Ed25519 and
//! ECDSA P-256:
//! * envelopes signed here verify with securesystemslib's `Envelope.verify` (which also
//!   proves our key ids equal securesystemslib's: it only tries keys whose id matches);
//! * envelopes signed by securesystemslib (`CryptoSigner`) verify here, with the key taken
//!   from securesystemslib's key dict, and our key id equals its key id;
//! * a private key written by `generate_keypair` loads in pyca/cryptography, and what
//!   securesystemslib signs with it verifies here under the same key id.
//! * the `manifest.dsse.json` of a bundle from `vex-lens export --sign-key`, with keys from
//!   `vex-lens keygen`, verifies with securesystemslib under the key id keygen printed,
//!   and its payload is the manifest file byte for byte.
//!
//! Setup: a venv in `$CARGO_TARGET_TMPDIR/interop-venv` with
//! `integration-tests/interop/requirements.txt` installed (reused on later runs). If the
//! venv or pip install fails (e.g. no network), the tests FAIL with the pip output.
//! `VEX_LENS_PYTHON` overrides the `python3` used to create the venv.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;
use vex_lens::crypto::{
    generate_keypair, openvex_statement, sign_envelope, verify_envelope, write_private_key, Envelope, KeyAlg,
    PublicKey, Subject, Verdict, IN_TOTO_PAYLOAD_TYPE,
};

fn interop_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integration-tests/interop")
}

fn run(cmd: &mut Command) -> Result<std::process::Output, String> {
    cmd.output().map_err(|e| format!("cannot run {cmd:?}: {e}"))
}

/// The venv's python, creating the venv and installing securesystemslib on first use.
fn venv_python() -> &'static Path {
    static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = PYTHON.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("interop-venv");
        let python = venv.join("bin/python");
        let requirements = interop_dir().join("requirements.txt");
        let ready = |python: &Path| {
            Command::new(python)
                .arg(interop_dir().join("sslib_dsse.py"))
                .arg("--version")
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        };
        if python.exists() && ready(&python) {
            return Ok(python);
        }
        let base = std::env::var("VEX_LENS_PYTHON").unwrap_or_else(|_| "python3".into());
        let out = run(Command::new(&base).args(["-m", "venv", "--clear"]).arg(&venv))?;
        if !out.status.success() {
            return Err(format!(
                "`{base} -m venv {}` failed:\n{}{}",
                venv.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let out = run(Command::new(&python).args(["-m", "pip", "install", "--quiet", "-r"]).arg(&requirements))?;
        if !out.status.success() {
            return Err(format!(
                "pip install -r {} failed (is PyPI reachable?):\n{}{}",
                requirements.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        if !ready(&python) {
            return Err("securesystemslib installed but sslib_dsse.py --version fails".into());
        }
        Ok(python)
    });
    match result {
        Ok(p) => p,
        Err(e) => {
            panic!("DSSE interop test setup failed — securesystemslib is unavailable, so interop is NOT tested:\n{e}")
        }
    }
}

/// Runs `sslib_dsse.py` with `args`; returns (exit code, stdout JSON).
fn sslib(args: &[&str]) -> (i32, Value) {
    let out = Command::new(venv_python())
        .arg(interop_dir().join("sslib_dsse.py"))
        .args(args)
        .output()
        .expect("run sslib_dsse.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("sslib_dsse.py {args:?}: bad output ({e}):\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap_or(-1), json)
}

/// The payloads VEX Lens accepts: an in-toto Statement with an OpenVEX predicate, and a bare
/// OpenVEX document.
fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let doc = serde_json::json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.com/vex/interop-1",
        "author": "Interop Test <test@example.com>",
        "timestamp": "2024-01-01T00:00:00Z",
        "version": 1,
        "statements": [{
            "vulnerability": {"name": "CVE-2024-0001"},
            "products": [{"@id": "pkg:oci/app@sha256%3Aabc"}],
            "status": "not_affected",
            "justification": "vulnerable_code_not_present"
        }]
    });
    let subject = Subject { name: "pkg:oci/app".into(), digest: [("sha256".to_string(), "ab".repeat(32))].into() };
    vec![
        (IN_TOTO_PAYLOAD_TYPE, openvex_statement(&[subject], &doc)),
        ("application/vnd.openvex+json", serde_json::to_vec(&doc).unwrap()),
    ]
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Our envelope verifies with securesystemslib, the key given as PEM and as key dict.
fn ours_verify_in_sslib(alg: KeyAlg) {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public) = generate_keypair(alg).unwrap();
    let signer = vex_lens::crypto::SigningKey::from_pem(&private_pem).unwrap();
    let pem_path = dir.path().join("key.pub.pem");
    std::fs::write(&pem_path, public.to_pem()).unwrap();
    let dict_path = dir.path().join("key.pub.json");
    std::fs::write(&dict_path, serde_json::to_string(&public.to_sslib_dict()).unwrap()).unwrap();
    for (i, (payload_type, payload)) in payloads().into_iter().enumerate() {
        let env = sign_envelope(payload_type, &payload, &signer).unwrap();
        let env_path = dir.path().join(format!("env{i}.json"));
        std::fs::write(&env_path, env.to_json()).unwrap();
        for key_path in [&pem_path, &dict_path] {
            let (code, out) = sslib(&["verify", "--envelope", path_str(&env_path), "--public-key", path_str(key_path)]);
            assert_eq!(code, 0, "{alg}: securesystemslib rejected our envelope: {out}");
            assert_eq!(out["ok"], true);
            assert_eq!(out["key_keyid"], public.keyid(), "{alg}: key ids differ");
            assert_eq!(out["keyids"], serde_json::json!([public.keyid()]));
        }
        // and a tampered one is rejected there too
        let mut bad = env.clone();
        bad.payload.push(b' ');
        std::fs::write(&env_path, bad.to_json()).unwrap();
        let (code, out) = sslib(&["verify", "--envelope", path_str(&env_path), "--public-key", path_str(&pem_path)]);
        assert_eq!((code, &out["ok"]), (1, &Value::Bool(false)), "{alg}: tampered envelope accepted: {out}");
    }
}

/// securesystemslib's envelope verifies here, with the key from its key dict.
fn sslib_verify_in_ours(alg: KeyAlg, sslib_alg: &str) {
    let dir = tempfile::tempdir().unwrap();
    for (i, (payload_type, payload)) in payloads().into_iter().enumerate() {
        let payload_path = dir.path().join(format!("payload{i}"));
        std::fs::write(&payload_path, &payload).unwrap();
        let env_path = dir.path().join(format!("env{i}.json"));
        let key_path = dir.path().join(format!("key{i}.json"));
        let (code, out) = sslib(&[
            "sign",
            "--alg",
            sslib_alg,
            "--payload-type",
            payload_type,
            "--payload",
            path_str(&payload_path),
            "--out-envelope",
            path_str(&env_path),
            "--out-key",
            path_str(&key_path),
        ]);
        assert_eq!(code, 0, "{out}");
        let key_dict: Value = serde_json::from_slice(&std::fs::read(&key_path).unwrap()).unwrap();
        let key = PublicKey::from_sslib_dict(&key_dict).unwrap();
        assert_eq!(key.alg(), alg);
        assert_eq!(key.keyid(), key_dict["keyid"].as_str().unwrap(), "{alg}: key id differs from securesystemslib's");
        // the same key given as PEM (ECDSA) / hex (Ed25519) gets the same id
        let public = key_dict["keyval"]["public"].as_str().unwrap();
        assert_eq!(PublicKey::parse(public).unwrap().keyid(), key.keyid());

        let env = Envelope::from_json(&std::fs::read(&env_path).unwrap()).unwrap();
        assert_eq!(env.payload, payload);
        assert_eq!(env.payload_type, payload_type);
        let outcome = verify_envelope(&env, std::slice::from_ref(&key), 1);
        assert_eq!(outcome.verdict, Verdict::Verified { keyids: vec![key.keyid().to_string()] }, "{alg}");
        // keyless: still found among the issuer's keys
        let mut keyless = env.clone();
        keyless.signatures[0].keyid.clear();
        let other = generate_keypair(alg).unwrap().1;
        assert!(verify_envelope(&keyless, &[other, key.clone()], 1).is_verified());
        // tampered
        let mut bad = env.clone();
        bad.payload.push(b' ');
        assert_eq!(verify_envelope(&bad, &[key], 1).reason(), Some("bad_signature"));
        assert!(vex_lens::crypto::vex_payload(&env).is_ok());
    }
}

/// Our generated private key loads in pyca/cryptography; securesystemslib signs with it,
/// under our key id, and we verify.
fn our_key_signs_in_sslib(alg: KeyAlg) {
    let dir = tempfile::tempdir().unwrap();
    let (private_pem, public) = generate_keypair(alg).unwrap();
    let key_path = dir.path().join("key.pem");
    write_private_key(&key_path, &private_pem).unwrap();
    let (payload_type, payload) = payloads().remove(0);
    let payload_path = dir.path().join("payload");
    std::fs::write(&payload_path, &payload).unwrap();
    let env_path = dir.path().join("env.json");
    let (code, out) = sslib(&[
        "sign-with",
        "--private-key",
        path_str(&key_path),
        "--payload-type",
        payload_type,
        "--payload",
        path_str(&payload_path),
        "--out-envelope",
        path_str(&env_path),
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["keyid"], public.keyid(), "{alg}: securesystemslib computes another key id for our key");
    let env = Envelope::from_json(&std::fs::read(&env_path).unwrap()).unwrap();
    assert!(verify_envelope(&env, &[public], 1).is_verified());
}

#[test]
fn ed25519_ours_verifies_in_securesystemslib() {
    ours_verify_in_sslib(KeyAlg::Ed25519);
}

#[test]
fn ecdsa_p256_ours_verifies_in_securesystemslib() {
    ours_verify_in_sslib(KeyAlg::EcdsaP256);
}

#[test]
fn ed25519_securesystemslib_verifies_in_ours() {
    sslib_verify_in_ours(KeyAlg::Ed25519, "ed25519");
}

#[test]
fn ecdsa_p256_securesystemslib_verifies_in_ours() {
    sslib_verify_in_ours(KeyAlg::EcdsaP256, "ecdsa");
}

#[test]
fn ed25519_generated_key_signs_in_securesystemslib() {
    our_key_signs_in_sslib(KeyAlg::Ed25519);
}

#[test]
fn ecdsa_p256_generated_key_signs_in_securesystemslib() {
    our_key_signs_in_sslib(KeyAlg::EcdsaP256);
}

/// A bundle exported with `vex-lens export --sign-key`, with keys from `vex-lens keygen`:
/// securesystemslib verifies `manifest.dsse.json` with the printed public key, under the
/// key id `keygen` printed, and the payload it verified is exactly `manifest.json`'s bytes;
/// a manifest signed by another key is rejected there too.
fn exported_manifest_verifies_in_sslib(alg: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let vex_lens = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vex-lens")).current_dir(root).args(args).output().unwrap();
        assert!(out.status.success(), "vex-lens {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let printed = vex_lens(&["keygen", "--alg", alg, "--out", "key.pem", "--public-out", "key.pub.pem"]);
    let keyid = printed.lines().find_map(|l| l.strip_prefix("keyid: ")).expect("keyid line").to_string();
    vex_lens(&["keygen", "--alg", alg, "--out", "other.pem", "--public-out", "other.pub.pem"]);
    let (_, doc) = payloads().remove(1);
    std::fs::write(root.join("doc.json"), doc).unwrap();
    vex_lens(&[
        "export",
        "--format",
        "openvex",
        "--manifest",
        "out/manifest.json",
        "--from",
        "doc.json",
        "--sign-key",
        "key.pem",
    ]);
    let env_path = root.join("out/manifest.dsse.json");
    let (code, out) =
        sslib(&["verify", "--envelope", path_str(&env_path), "--public-key", path_str(&root.join("key.pub.pem"))]);
    assert_eq!(code, 0, "{alg}: securesystemslib rejected the export's manifest envelope: {out}");
    assert_eq!(out["keyids"], serde_json::json!([keyid]), "{alg}");
    assert_eq!(out["key_keyid"], keyid.as_str(), "{alg}: keygen's key id differs from securesystemslib's");
    // What securesystemslib parsed as the payload is the manifest file, byte for byte.
    let check = Command::new(venv_python())
        .args([
            "-c",
            "import json,sys\nfrom securesystemslib.dsse import Envelope\n\
             env = Envelope.from_dict(json.load(open(sys.argv[1])))\n\
             ok = env.payload == open(sys.argv[2], 'rb').read() and env.payload_type == sys.argv[3]\n\
             print(json.dumps({'ok': ok}))\nsys.exit(0 if ok else 1)",
        ])
        .arg(&env_path)
        .arg(root.join("out/manifest.json"))
        .arg(vex_lens::export::MANIFEST_PAYLOAD_TYPE)
        .output()
        .unwrap();
    assert!(check.status.success(), "{alg}: payload is not the manifest: {}", String::from_utf8_lossy(&check.stderr));
    // The other key does not verify it.
    let (code, out) =
        sslib(&["verify", "--envelope", path_str(&env_path), "--public-key", path_str(&root.join("other.pub.pem"))]);
    assert_eq!((code, &out["ok"]), (1, &Value::Bool(false)), "{alg}: accepted with the wrong key: {out}");
}

#[test]
fn ed25519_exported_manifest_verifies_in_securesystemslib() {
    exported_manifest_verifies_in_sslib("ed25519");
}

#[test]
fn ecdsa_p256_exported_manifest_verifies_in_securesystemslib() {
    exported_manifest_verifies_in_sslib("ecdsa-p256");
}
