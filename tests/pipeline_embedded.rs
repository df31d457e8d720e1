//! `vex-lens serve` in the embedded default, run as the built binary: the records it
//! stores equal `vex-lens consensus` on the same files, digest for digest; HTTP health,
//! readiness, metrics and status answer while serving; files dropped into the ingest
//! directory are picked up; bad files are dead-lettered without stopping anything;
//! SIGTERM drains and exits 0; a restart does not reprocess remembered files.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{copy_dir, corpus_dir, free_port, get, metric, repo_dir, vex_lens, wait_for, KillOnDrop};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");

fn digests(ndjson: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(ndjson)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("record line is JSON");
            format!(
                "{} {} {} {}",
                v["artifact"].as_str().unwrap(),
                v["vulnerability"].as_str().unwrap(),
                v["tenant"].as_str().unwrap(),
                v["consensus_digest"].as_str().unwrap()
            )
        })
        .collect()
}

fn records(data: &Path) -> Vec<String> {
    let out = vex_lens(&["records", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "records failed: {}", String::from_utf8_lossy(&out.stderr));
    digests(&out.stdout)
}

fn consensus(dir: &Path) -> Vec<String> {
    let out = vex_lens(&["consensus", "--keep-going", dir.to_str().unwrap()]);
    assert!(out.status.success(), "consensus failed: {}", String::from_utf8_lossy(&out.stderr));
    digests(&out.stdout)
}

/// The `stopped` log line's counters.
fn stopped_counts(stderr: &[u8]) -> (u64, u64) {
    let text = String::from_utf8_lossy(stderr);
    let line = text
        .lines()
        .rev()
        .find(|l| l.contains("\"event\":\"stopped\""))
        .unwrap_or_else(|| panic!("no stopped line in:\n{text}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    (v["documents"].as_u64().unwrap(), v["observations"].as_u64().unwrap())
}

#[test]
fn serve_once_stores_exactly_what_consensus_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    for sub in ["openvex", "csaf", "cyclonedx"] {
        copy_dir(&corpus_dir().join(sub), &input.join(sub));
    }
    let data = tmp.path().join("data");
    let args = ["--ingest-dir", input.to_str().unwrap(), "--data-dir", data.to_str().unwrap()];
    let out = common::serve_once(&args, &[]);
    assert!(out.status.success(), "serve --once failed: {}", String::from_utf8_lossy(&out.stderr));
    let (docs, observations) = stopped_counts(&out.stderr);
    assert!(docs > 40 && observations > 1000, "processed {docs} documents, {observations} observations");

    let expected = consensus(&input);
    assert!(expected.len() > 1000, "the corpus gives many records ({})", expected.len());
    let got = records(&data);
    assert_eq!(got.len(), expected.len(), "same number of records");
    assert_eq!(got, expected, "the stored records equal `vex-lens consensus`, digest for digest");

    // A restart remembers the processed files: nothing is ingested again, records unchanged.
    let out = common::serve_once(&args, &[]);
    assert!(out.status.success(), "second serve --once failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stopped_counts(&out.stderr), (0, 0), "a restart does not reprocess remembered files");
    assert_eq!(records(&data), expected);
}

#[test]
fn serving_answers_health_metrics_status_and_picks_up_new_files() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let first = repo_dir().join("examples/acme-vendor.openvex.json");
    std::fs::copy(&first, input.join("a.json")).unwrap();
    let data = tmp.path().join("data");
    let (mut server, port) = common::spawn_serve(&input, &data, &[]);

    let (code, _) = wait_for("liveness", Duration::from_secs(30), || get(port, "/health/liveness"));
    assert_eq!(code, 200);
    let (code, body) = get(port, "/health/readiness").unwrap();
    assert_eq!(code, 200, "ready: {body}");
    let (code, body) = get(port, "/status").unwrap();
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status["mode"], "embedded");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["feature_flags"]["dsse_verification"], true);
    // Which configuration and issuer directory this run uses (the repository's, found in
    // ./config/ of the working directory).
    assert_eq!(status["config"]["file"], "config/default.toml", "{status}");
    assert_eq!(status["config"]["source"], "working_directory", "{status}");
    assert_eq!(status["config"]["issuers_file"], "config/issuers.toml", "{status}");
    assert_eq!(status["config"]["issuers_loaded"], true, "{status}");
    assert!(status["config"]["issuers"].as_u64().unwrap() > 0, "{status}");

    let docs = |port| {
        let (_, m) = get(port, "/metrics")?;
        metric(&m, "vex_documents_ingested_total")
    };
    wait_for("the first document", Duration::from_secs(30), || docs(port).filter(|n| *n >= 1.0));
    let (_, m) = get(port, "/metrics").unwrap();
    assert!(m.contains("vex_consensus_latency_seconds_bucket"), "latency histogram exposed:\n{m}");
    assert!(metric(&m, "vex_consensus_latency_seconds_count").unwrap() >= 1.0, "latency observed:\n{m}");
    for name in ["vex_conflict_queue_depth", "vex_observations_applied_total", "vex_dsse_verification_failures_total"] {
        assert!(m.contains(name), "{name} exposed");
    }
    // The live actors' states hold every observation applied so far (none is idle long
    // enough to be evicted): the gauge follows once the actors settle.
    wait_for("the held observations", Duration::from_secs(30), || {
        let (_, m) = get(port, "/metrics")?;
        let applied = metric(&m, "vex_observations_applied_total")?;
        (applied >= 1.0 && metric(&m, "vex_artifact_observations")? == applied).then_some(())
    });

    // A new file and a bad file dropped in while serving.
    std::fs::copy(repo_dir().join("examples/distro.csaf.json"), input.join("b.json")).unwrap();
    std::fs::write(input.join("garbage.json"), b"\x00\x01 not json").unwrap();
    wait_for("the new document", Duration::from_secs(30), || docs(port).filter(|n| *n >= 2.0));
    let dead = wait_for("the dead letter", Duration::from_secs(30), || {
        let (_, m) = get(port, "/metrics")?;
        metric(&m, "vex_dead_letter_total{reason=\"invalid_json\"}")
    });
    assert_eq!(dead, 1.0);
    let (code, _) = get(port, "/health/liveness").unwrap();
    assert_eq!(code, 200, "still alive after bad input");

    // SIGTERM: drain and exit 0.
    let status = server.terminate(Duration::from_secs(30));
    let stderr = server.stderr();
    assert!(status.success(), "exit status {status:?}; log:\n{stderr}");

    // What was served equals the batch consensus of the two good documents.
    std::fs::remove_file(input.join("garbage.json")).unwrap();
    assert_eq!(records(&data), consensus(&input));
    let out = vex_lens(&["records", "--dead-letters", "--data-dir", data.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("garbage.json") && text.contains("invalid_json"), "dead letter recorded: {text}");
}

#[test]
fn serve_reads_ndjson_documents_from_stdin() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    // One line per document (compact JSON); the same bytes go to files for `consensus`.
    let docs_dir = tmp.path().join("docs");
    std::fs::create_dir_all(&docs_dir).unwrap();
    let mut input = String::new();
    for f in ["acme-vendor.openvex.json", "scanner.cdx.json"] {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(repo_dir().join("examples").join(f)).unwrap()).unwrap();
        let line = serde_json::to_string(&v).unwrap();
        std::fs::write(docs_dir.join(f), &line).unwrap();
        input.push_str(&line);
        input.push('\n');
    }
    input.push_str("{\"not\":\"vex\"}\n");
    let mut child = Command::new(BIN)
        .args(["serve", "--once", "--stdin", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .current_dir(repo_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Three documents read (the summary's `documents`), the third dead-lettered (not VEX).
    assert_eq!(stopped_counts(&out.stderr).0, 3);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("\"dead_letters\":1"), "{text}");
    let expected = consensus(&docs_dir);
    assert_eq!(records(&data), expected);
}

#[test]
fn malformed_configuration_is_a_startup_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bad.toml");
    std::fs::write(&cfg, "[kafka]\ntopik = \"x\"\n").unwrap();
    let out = vex_lens(&["serve", "--once", "--config", cfg.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("topik"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN)
        .args(["serve", "--once", "--listen", "127.0.0.1:0", "--data-dir", tmp.path().join("d").to_str().unwrap()])
        .env("VEXLENS_ACTORS__WRITER_BATCH_MAX", "0")
        .current_dir(repo_dir())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("actors.writer_batch_max"));
}

#[test]
fn sigterm_exits_zero_also_without_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(BIN)
        .args(["serve", "--data-dir", tmp.path().join("d").to_str().unwrap(), "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(repo_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = KillOnDrop(child);
    wait_for("liveness", Duration::from_secs(30), || get(port, "/health/liveness").filter(|(c, _)| *c == 200));
    let status = server.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
}
