//! A trust change whose recompute a crash cut short is finished at the next start-up:
//! `vex-lens serve` (the built binary, embedded pipeline and store) is killed with
//! SIGKILL while it recomputes a tenant of many packages after `PUT
//! /v1/vex/trust/issuers/{id}`; after the restart every pair carries the new policy and
//! equals, digest for digest, the records of a clean run of the same change.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{wait_for, KillOnDrop};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");
/// Packages of the tenant (one pair each): enough that recomputing them takes a while.
const PACKAGES: usize = 1500;
const CONFIG: &str = "[consensus]\nissuers_file = \"config/issuers.toml\"\n";
const CHANGE: &str = r#"{"tier": "untrusted", "reason": "crash drill"}"#;
const PUT: &str = "/v1/vex/trust/issuers/acme";

/// Two OpenVEX documents disagreeing on every package: acme (authoritative) says
/// not_affected, example-linux (trusted) says fixed.
fn write_documents(inbox: &Path) {
    std::fs::create_dir_all(inbox).unwrap();
    for (file, author, status) in [
        ("acme.json", "ACME Product Security <psirt@acme.example>", "not_affected"),
        ("linux.json", "https://security.example-linux.org", "fixed"),
    ] {
        let statements: Vec<Value> = (0..PACKAGES)
            .map(|i| {
                let mut s = serde_json::json!({
                    "vulnerability": {"name": format!("CVE-2025-{}", 10_000 + i)},
                    "products": [{"@id": format!("pkg:npm/crash-{i}@1.0.0")}],
                    "status": status,
                });
                if status == "not_affected" {
                    s["justification"] = "component_not_present".into();
                }
                s
            })
            .collect();
        let doc = serde_json::json!({
            "@context": "https://openvex.dev/ns/v0.2.0",
            "@id": format!("https://crash.example/vex/{file}"),
            "author": author,
            "timestamp": "2025-01-01T00:00:00Z",
            "version": 1,
            "statements": statements,
        });
        std::fs::write(inbox.join(file), serde_json::to_vec(&doc).unwrap()).unwrap();
    }
}

fn ingest(inbox: &Path, data: &Path) {
    let out = Command::new(BIN)
        .args(["serve", "--once", "--ingest-dir", inbox.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("serve --once");
    assert!(out.status.success(), "serve --once failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn start(tmp: &Path, data: &Path, name: &str) -> (KillOnDrop, u16, PathBuf) {
    let cfg = tmp.join("config.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let log = tmp.join(format!("serve-{name}.log"));
    let (child, port) = common::start_embedded_serve(
        &["--config", cfg.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &[],
        &log,
        Duration::from_secs(120),
    );
    (child, port, log)
}

/// `PUT` of the change (loopback, no tokens: the default tenant): the status and body,
/// or `None` when the connection ended without an answer (the server died).
fn put_change(port: u16) -> Option<(u16, Value)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    let head = format!(
        "PUT {PUT} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        CHANGE.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(CHANGE.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((code, serde_json::from_str(body).unwrap_or(Value::Null)))
}

/// Every record of the default tenant, by (artifact, vulnerability).
fn records(port: u16) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    let mut token: Option<String> = None;
    loop {
        let path = match &token {
            Some(t) => format!("/v1/vex/consensus?page_size=1000&page_token={t}"),
            None => "/v1/vex/consensus?page_size=1000".to_string(),
        };
        let (code, body) = common::get(port, &path).expect("GET consensus");
        assert_eq!(code, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        for r in page["items"].as_array().unwrap() {
            let key = (r["artifact"].as_str().unwrap().to_string(), r["vulnerability"].as_str().unwrap().to_string());
            out.insert(key, r.clone());
        }
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => return out,
        }
    }
}

fn log_has(log: &Path, needle: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|l| l.contains(needle))
}

#[test]
fn a_trust_change_cut_short_by_kill_9_is_finished_at_restart_and_equals_a_clean_run() {
    let tmp = tempfile::tempdir().unwrap();
    let inbox = tmp.path().join("in");
    write_documents(&inbox);
    let (clean, crashed) = (tmp.path().join("clean"), tmp.path().join("crashed"));
    ingest(&inbox, &clean);
    ingest(&inbox, &crashed);

    // The clean run: the change applied whole.
    let (child, port, _) = start(tmp.path(), &clean, "clean");
    let before = records(port);
    assert_eq!(before.len(), PACKAGES);
    let (code, applied) = put_change(port).expect("an answer");
    assert_eq!(code, 200, "{applied}");
    assert_eq!(applied["recomputed"]["pairs"], PACKAGES, "{applied}");
    eprintln!("clean run: the change and its recompute of {PACKAGES} packages took {} ms", applied["duration_ms"]);
    let version = applied["policy_version"].clone();
    let want = records(port);
    drop(child);
    assert!(want.values().all(|r| r["policy_version"] == version));
    let flipped = want.iter().filter(|(k, r)| r["status"] != before[*k]["status"]).count();
    assert_eq!(flipped, PACKAGES, "the change matters for every pair");

    // The crashed run: SIGKILL once the change is durable (logged), before it answers.
    let (mut child, port, log) = start(tmp.path(), &crashed, "crashed");
    let put = std::thread::spawn(move || put_change(port));
    wait_for("the change applied", Duration::from_secs(120), || log_has(&log, "issuer_trust_changed").then_some(()));
    child.0.kill().expect("SIGKILL");
    child.0.wait().expect("reaped");
    let answer = put.join().expect("PUT thread");
    assert!(answer.is_none(), "the recompute finished before the kill (fixture too small): {answer:?}");

    // The restart finishes the recompute the change still owed.
    let (_child, port, log) = start(tmp.path(), &crashed, "restarted");
    wait_for("the owed recompute finished", Duration::from_secs(300), || {
        log_has(&log, "trust_recompute_finished").then_some(())
    });
    let got = records(port);
    assert_eq!(got.len(), PACKAGES);
    for (pair, r) in &got {
        assert_eq!(r["policy_version"], version, "{pair:?} still carries the old policy");
        assert_eq!(r["consensus_digest"], want[pair]["consensus_digest"], "{pair:?} differs from the clean run");
    }
    let (code, weights) = common::get(port, "/v1/vex/trust/weights").expect("weights");
    assert_eq!(code, 200);
    let weights: Value = serde_json::from_str(&weights).unwrap();
    assert_eq!(weights["epoch"], 1, "{weights}");
}
