//! The `vex-lens consensus` command, run as users run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vex-lens"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run vex-lens")
}

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus").join(rel)
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

#[test]
fn examples_give_sorted_records_with_verifiable_digests() {
    let o = run(&["consensus", "examples"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4);
    let keys: Vec<(String, String)> = lines
        .iter()
        .map(|r| (r["artifact"].as_str().unwrap().to_string(), r["vulnerability"].as_str().unwrap().to_string()))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    for (line, r) in stdout(&o).lines().zip(&lines) {
        // The digest is the SHA-256 of the canonical JSON without the digest itself.
        let mut v = r.clone();
        let digest = v.as_object_mut().unwrap().remove("consensus_digest").unwrap();
        let canon = vex_lens::domain::canonical::to_vec(&v).unwrap();
        assert_eq!(digest.as_str().unwrap(), vex_lens::domain::canonical::sha256_prefixed(&canon));
        // ndjson output is itself canonical.
        assert_eq!(line.as_bytes(), vex_lens::domain::canonical::to_vec(r).unwrap());
    }
    let disputed = lines.iter().find(|r| r["vulnerability"] == "CVE-2024-3094").unwrap();
    assert_eq!(disputed["status"], "disputed");
    assert_eq!(disputed["leading_status"], "not_affected");
    assert_eq!(disputed["conflicts"][0]["reason"], "status_disagreement");
}

#[test]
fn explain_adds_a_trace_without_changing_the_digest() {
    let plain = run(&["consensus", "examples"]);
    let explained = run(&["consensus", "--explain", "examples"]);
    let a: Vec<serde_json::Value> = stdout(&plain).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let b: Vec<serde_json::Value> = stdout(&explained).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["consensus_digest"], y["consensus_digest"]);
        assert!(x.get("explain").is_none());
        assert!(y["explain"].as_array().unwrap().iter().any(|s| s.as_str().unwrap().starts_with("evaluation time")));
    }
}

#[test]
fn modes_and_formats() {
    let o = run(&["consensus", "--mode", "lattice", "--format", "table", "examples"]);
    assert!(o.status.success());
    let t = stdout(&o);
    assert!(t.starts_with("ARTIFACT"), "{t}");
    assert!(t.lines().any(|l| l.contains("CVE-2024-3094") && l.contains(" affected")), "{t}");
    let o = run(&["consensus", "--format", "json", "--as-of", "2025-01-01T00:00:00Z", "examples"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 4);
    assert!(v.as_array().unwrap().iter().all(|r| r["evaluation_time"] == "2025-01-01T00:00:00Z"));
    let bad = run(&["consensus", "--mode", "coin_flip", "examples"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("weighted_vote"));
}

#[test]
fn unreadable_and_invalid_input_fail_clearly_unless_keep_going() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("examples/acme-vendor.openvex.json", dir.path().join("a.json")).unwrap();
    std::fs::write(dir.path().join("b.json"), b"{not json").unwrap();
    let d = dir.path().to_str().unwrap();
    let o = run(&["consensus", d]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("b.json") && err.contains("not valid JSON"), "{err}");
    assert!(o.stdout.is_empty());
    let o = run(&["consensus", "--keep-going", d]);
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(" documents=2 ") && err.contains(" dead_letters=1 "), "{err}");
    // The vendor document alone: 3 statements, and its version-less one also applies to @2.4.1.
    assert_eq!(stdout(&o).lines().count(), 4);
    let o = run(&["consensus", "/nonexistent/vex.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/nonexistent/vex.json"));
}

#[test]
fn directory_order_does_not_change_the_output() {
    // The same documents under names that sort in opposite orders.
    let files = [
        "openvex/go-vex_v001-1.vex.json",
        "openvex/go-vex_v001-2.vex.json",
        "csaf/2022-evd-uc-02-na-001.json",
        "cyclonedx/CISA-Use-Cases_Case-2_vex.json",
        "openvex/vexctl_sample-history.openvex.json",
    ];
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate() {
        std::fs::copy(corpus(f), a.path().join(format!("{i}.json"))).unwrap();
        std::fs::copy(corpus(f), b.path().join(format!("{}.json", files.len() - i))).unwrap();
    }
    let x = run(&["consensus", a.path().to_str().unwrap()]);
    let y = run(&["consensus", b.path().to_str().unwrap()]);
    assert!(x.status.success());
    assert!(!x.stdout.is_empty());
    assert_eq!(x.stdout, y.stdout);
}

#[test]
fn a_bad_issuer_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("issuers.toml");
    std::fs::write(&p, "[[issuers]]\nid = 'x'\ntier = 'godlike'\n").unwrap();
    let o = run(&["consensus", "--issuers", p.to_str().unwrap(), "examples"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("issuers.toml") && err.contains("godlike"), "{err}");
}

/// Every run says on stderr which configuration and issuer directory it used: run from
/// outside the repository it says the built-in defaults (and its answer differs from the
/// repository's); `VEXLENS_CONFIG` names a file; `--config` wins over the variable.
#[test]
fn consensus_says_which_configuration_it_used() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let examples = repo.join("examples");
    let elsewhere = tempfile::tempdir().unwrap();
    let run_in = |dir: &Path, env: Option<&Path>, extra: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_vex-lens"));
        c.current_dir(dir).arg("consensus").arg(&examples).args(extra).env_remove("VEXLENS_CONFIG");
        if let Some(e) = env {
            c.env("VEXLENS_CONFIG", e);
        }
        let o = c.output().expect("run vex-lens");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        (err.lines().find(|l| l.starts_with("vex-lens: configuration:")).map(str::to_string), stdout(&o))
    };
    let (line, outside) = run_in(elsewhere.path(), None, &[]);
    let line = line.expect("a configuration line on stderr");
    assert!(line.contains("built-in defaults") && line.contains("issuer directory: none"), "{line}");
    let (line, inside) = run_in(repo, None, &[]);
    let line = line.unwrap();
    assert!(line.contains("config/default.toml (./config/") && line.contains("config/issuers.toml ("), "{line}");
    assert_ne!(outside, inside, "the repository's configuration gives other records than the defaults");
    let config = repo.join("config/default.toml");
    let (line, _) = run_in(elsewhere.path(), Some(&config), &[]);
    assert!(line.unwrap().contains("(VEXLENS_CONFIG)"));
    let other = elsewhere.path().join("other.toml");
    std::fs::write(&other, "[consensus.knobs]\n").unwrap();
    let (line, _) = run_in(elsewhere.path(), Some(&config), &["--config", other.to_str().unwrap()]);
    let line = line.unwrap();
    assert!(line.contains("other.toml (--config)"), "the flag wins over VEXLENS_CONFIG: {line}");
    let missing = Command::new(env!("CARGO_BIN_EXE_vex-lens"))
        .current_dir(elsewhere.path())
        .arg("consensus")
        .arg(&examples)
        .env("VEXLENS_CONFIG", elsewhere.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!missing.status.success(), "a named configuration file that is missing is an error");
    assert!(String::from_utf8_lossy(&missing.stderr).contains("VEXLENS_CONFIG"));
}

/// `--tenant` follows the API's tenant-name rule (issue 21 item 4): a tenant the CLI
/// writes is one `X-Tenant` can name.
#[test]
fn tenant_names_follow_the_api_rule() {
    for bad in ["bad/tenant", "has space", ""] {
        let o = run(&["consensus", "--tenant", bad, "examples"]);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", String::from_utf8_lossy(&o.stderr));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("--tenant") && err.contains("not a tenant name"), "{bad:?}: {err}");
    }
    let o = run(&["serve", "--once", "--tenant", "a/b", "--ingest-dir", "examples"]);
    assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
    let o = run(&["consensus", "--tenant", "acme.prod-1", "examples"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("\"tenant\":\"acme.prod-1\""), "{}", stdout(&o));
}

/// The binary's jemalloc starts with the options compiled in through `.cargo/config.toml`
/// (freed pages go back to the system after 1 s unused, not 10 s): jemalloc's own
/// `confirm_conf` lists them on stderr.
#[cfg(not(target_env = "msvc"))]
#[test]
fn the_allocator_returns_freed_pages_after_one_second() {
    let o = bin().arg("--version").env("_RJEM_MALLOC_CONF", "confirm_conf:true").output().expect("run vex-lens");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success());
    assert!(err.contains("--with-malloc-conf): \"dirty_decay_ms:1000\""), "{err}");
}
