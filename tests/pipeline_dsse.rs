//! DSSE verification on the real embedded pipeline (`vex-lens serve`, the built binary):
//! a correctly signed envelope, a tampered one, one signed by a key that is not the
//! claimed issuer's, one with a truncated signature and one by a key the directory does
//! not know are each verified on the verifier pool, persisted to `vex_dsse_verifications`
//! with their own result and reason, and counted; the consensus records carry the
//! verified statement (signature factor 1.0, issuer = the signer) and exclude the failed
//! ones with conflict `missing_provenance`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vex_lens::crypto::{
    generate_keypair, openvex_statement, sign_envelope, Envelope, KeyAlg, SigningKey, Subject, IN_TOTO_PAYLOAD_TYPE,
};

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");
const OPENVEX_TYPE: &str = "application/openvex+json";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn key(alg: KeyAlg) -> SigningKey {
    SigningKey::from_pem(&generate_keypair(alg).unwrap().0).unwrap()
}

/// An OpenVEX document by `author` saying `pkg:npm/<pkg>@1.0.0` is affected by `cve`.
fn doc(author: &str, pkg: &str, cve: &str) -> Value {
    json!({
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
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

fn vex_lens(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).current_dir(repo()).output().expect("run vex-lens")
}

fn ndjson(out: &std::process::Output) -> Vec<Value> {
    assert!(out.status.success(), "vex-lens failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some((status, body))
}

fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find(|l| l.starts_with(sample) && l[sample.len()..].starts_with(' '))?.rsplit(' ').next()?.parse().ok()
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn write_issuers(path: &Path, acme: &SigningKey, distro: &SigningKey) {
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
        acme.public_key().to_pem(),
        distro.public_key().to_pem()
    );
    std::fs::write(path, toml).unwrap();
}

#[test]
fn each_envelope_is_verified_persisted_counted_and_weighted() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let data = tmp.path().join("data");
    let acme = key(KeyAlg::Ed25519);
    let distro = key(KeyAlg::EcdsaP256);
    let stranger = key(KeyAlg::Ed25519);
    let issuers = tmp.path().join("issuers.toml");
    write_issuers(&issuers, &acme, &distro);

    // 1. Signed by distro (in-toto Statement, keyid = the configured alias) while the
    //    document's author claims ACME: verified, the issuer is distro.
    let statement = openvex_statement(&[Subject::default()], &doc("ACME PSIRT", "good", "CVE-2024-1001"));
    let mut good = sign_envelope(IN_TOTO_PAYLOAD_TYPE, &statement, &distro).unwrap();
    good.signatures[0].keyid = "distro-2024".into();
    // 2. Signed by acme, payload changed afterwards.
    let mut tampered =
        sign_envelope(OPENVEX_TYPE, &bytes(&doc("ACME PSIRT", "tampered", "CVE-2024-1002")), &acme).unwrap();
    tampered.payload.extend_from_slice(b" ");
    // 3. Keyless signature by a key that is not the claimed issuer's (acme): wrong key.
    let mut wrong =
        sign_envelope(OPENVEX_TYPE, &bytes(&doc("ACME PSIRT", "wrongkey", "CVE-2024-1003")), &stranger).unwrap();
    wrong.signatures[0].keyid.clear();
    // 4. Signed by acme, signature truncated.
    let mut truncated =
        sign_envelope(OPENVEX_TYPE, &bytes(&doc("ACME PSIRT", "truncated", "CVE-2024-1004")), &acme).unwrap();
    let n = truncated.signatures[0].sig.len();
    truncated.signatures[0].sig.truncate(n / 2);
    // 5. Signed (with its keyid) by a key the directory does not have: unsigned/unknown_key.
    let unknown =
        sign_envelope(OPENVEX_TYPE, &bytes(&doc("ACME PSIRT", "unknownkey", "CVE-2024-1005")), &stranger).unwrap();

    let envelopes: [(&str, &Envelope); 5] = [
        ("good", &good),
        ("tampered", &tampered),
        ("wrongkey", &wrong),
        ("truncated", &truncated),
        ("unknownkey", &unknown),
    ];
    for (name, env) in envelopes {
        std::fs::write(input.join(format!("{name}.dsse.json")), env.to_json()).unwrap();
    }

    let port = free_port();
    let child = Command::new(BIN)
        .args(["serve", "--ingest-dir", input.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("VEXLENS_CONSENSUS__ISSUERS_FILE", &issuers)
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let mut server = Server(child);
    let docs = wait_for("the five documents", Duration::from_secs(60), || {
        let (_, m) = get(port, "/metrics")?;
        metric(&m, "vex_documents_ingested_total").filter(|n| *n >= 5.0).map(|_| m)
    });
    assert_eq!(metric(&docs, "vex_dsse_verification_failures_total"), Some(3.0), "three failures counted:\n{docs}");

    let pid = server.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    server.0.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert!(status.success(), "exit status {status:?}; log:\n{stderr}");
    // One log line per failure, naming issuer, keyid and reason.
    let failures: Vec<Value> = stderr
        .lines()
        .filter(|l| l.contains("\"event\":\"dsse_verification_failed\""))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(failures.len(), 3, "log:\n{stderr}");
    assert!(failures.iter().all(|f| f["reason"].is_string() && f["issuer"] == "acme"), "{failures:?}");

    // Every verification persisted with its own result and reason.
    let verifications = ndjson(&vex_lens(&["records", "--verifications", "--data-dir", data.to_str().unwrap()]));
    assert_eq!(verifications.len(), 5, "{verifications:?}");
    let by_name = |name: &str| -> &Value {
        verifications
            .iter()
            .find(|v| v["source"].as_str().is_some_and(|s| s.ends_with(&format!("{name}.dsse.json"))))
            .unwrap_or_else(|| panic!("no verification of {name}: {verifications:?}"))
    };
    let expect = [
        ("good", "verified", Value::Null, "distro", distro.keyid()),
        ("tampered", "failed", json!("bad_signature"), "acme", acme.keyid()),
        ("wrongkey", "failed", json!("wrong_key"), "acme", ""),
        ("truncated", "failed", json!("bad_signature"), "acme", acme.keyid()),
        ("unknownkey", "unsigned", json!("unknown_key"), "acme", stranger.keyid()),
    ];
    for (name, result, reason, issuer, keyid) in expect {
        let v = by_name(name);
        assert_eq!(v["result"], result, "{name}: {v}");
        assert_eq!(v["reason"], reason, "{name}: {v}");
        assert_eq!(v["issuer"], issuer, "{name}: {v}");
        if keyid.is_empty() {
            assert!(v["keyid"].is_null(), "{name}: {v}");
        } else {
            assert_eq!(v["keyid"], keyid, "{name}: {v}");
        }
        let digest = format!(
            "sha256:{}",
            vex_lens::domain::canonical::sha256_hex(&std::fs::read(input.join(format!("{name}.dsse.json"))).unwrap())
        );
        assert_eq!(v["envelope_digest"], digest, "{name}: the digest of the envelope bytes");
        assert!(v["verified_at_ms"].as_i64().unwrap() > 0);
    }

    // The consensus: verified counts at factor 1.0 with the signer as issuer; failed
    // statements are excluded with missing_provenance; unknown key counts as unsigned.
    let records = ndjson(&vex_lens(&["records", "--data-dir", data.to_str().unwrap()]));
    let record = |pkg: &str| -> &Value {
        records
            .iter()
            .find(|r| r["artifact"] == format!("pkg:npm/{pkg}@1.0.0"))
            .unwrap_or_else(|| panic!("no record for {pkg}: {records:?}"))
    };
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
        let s = &r["statements"][0];
        assert_eq!((s["signature"].as_str(), s["role"].as_str()), (Some("failed"), Some("excluded")), "{pkg}: {r}");
        assert_eq!(s["reason"], format!("signature_failed: {reason}"), "{pkg}: {r}");
        assert_eq!(s["factors"]["signature_ppm"], 0, "{pkg}: {r}");
        let conflicts: Vec<&str> =
            r["conflicts"].as_array().unwrap().iter().filter_map(|c| c["reason"].as_str()).collect();
        assert!(conflicts.contains(&"missing_provenance"), "{pkg}: {r}");
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

/// A key in the issuer directory that does not parse stops `serve` at startup, naming
/// the issuer.
#[test]
fn an_unparseable_issuer_key_is_a_startup_error_naming_the_issuer() {
    let tmp = tempfile::tempdir().unwrap();
    let issuers = tmp.path().join("issuers.toml");
    std::fs::write(
        &issuers,
        "[[issuers]]\nid = \"broken\"\ntier = \"known\"\nkeys = [{ public_key = \"zz not a key\" }]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--once", "--listen", "127.0.0.1:0", "--data-dir", tmp.path().join("d").to_str().unwrap()])
        .env("VEXLENS_CONSENSUS__ISSUERS_FILE", &issuers)
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("issuer broken") && err.contains("key 0"), "{err}");
}
