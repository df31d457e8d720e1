//! The log lines of the built binary as an operator reads them (issue 21 item 5): every
//! line has an `event` (actix-server's own lines too); each processed document writes one
//! info line with its `correlationId` (minted for files), the same id on its dead letter
//! and on the lines of the records it changed; record changes and conflicts are info lines
//! with `artifactKey` and `advisoryKey`; HTTP responses carry `X-Correlation-Id`; text
//! lines are coloured only on a terminal with `NO_COLOR` unset.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");

fn is_minted(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The examples plus one file that is not JSON, in a fresh ingest directory.
fn ingest_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("in");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(common::repo_dir().join("examples")).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::write(dir.join("broken.json"), b"{ not json").unwrap();
    dir
}

/// One GET with extra headers: (status, the response's X-Correlation-Id).
fn get_correlation(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, Option<String>) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, _) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let id = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-correlation-id").then(|| v.trim().to_string())
    });
    (status, id)
}

#[test]
fn json_lines_carry_event_correlation_and_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = ingest_dir(tmp.path());
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let (serve, port) = common::start_embedded_serve(
        &["--ingest-dir", dir.to_str().unwrap(), "--data-dir", data.to_str().unwrap(), "--log-format", "json"],
        &[("RUST_LOG", "info")],
        &log,
        Duration::from_secs(60),
    );
    let read_lines = || -> Vec<Value> {
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
            .collect()
    };
    // Three documents ingested, one dead-lettered: four lines, one per document.
    let lines = common::wait_for("a line per document", Duration::from_secs(60), || {
        let lines = read_lines();
        let n = lines.iter().filter(|v| v["event"] == "document_ingested" || v["event"] == "dead_lettered").count();
        (n >= 4).then_some(lines)
    });
    // HTTP: the caller's id is echoed, a missing or unusable one is minted, errors too.
    let (status, id) = get_correlation(port, "/v1/vex/conflicts", &[("X-Correlation-Id", "req-0042")]);
    assert_eq!((status, id.as_deref()), (200, Some("req-0042")));
    let (status, id) = get_correlation(port, "/v1/vex/conflicts", &[]);
    assert!(status == 200 && id.as_deref().is_some_and(is_minted), "{status} {id:?}");
    let (status, id) = get_correlation(port, "/v1/vex/conflicts", &[("X-Correlation-Id", "has space")]);
    assert!(status == 200 && id.as_deref().is_some_and(is_minted), "{status} {id:?}");
    let (status, id) = get_correlation(
        port,
        "/v1/vex/conflicts",
        &[("X-Correlation-Id", "via-proxy"), ("X-Forwarded-For", "192.0.2.1")],
    );
    assert_eq!((status, id.as_deref()), (403, Some("via-proxy")), "a refusal carries the id too");
    let (status, id) = get_correlation(port, "/health/liveness", &[("X-Correlation-Id", "probe-1")]);
    assert_eq!((status, id.as_deref()), (200, Some("probe-1")));
    drop(serve);

    // Every line has an event, actix-server's included.
    for v in &lines {
        assert!(v["event"].as_str().is_some_and(|e| !e.is_empty()), "a line without an event: {v}");
    }
    assert!(
        lines.iter().any(|v| v["event"] == "actix_server"),
        "actix-server's lines carry event=actix_server: {:?}",
        lines.iter().map(|v| &v["event"]).collect::<Vec<_>>()
    );

    // One info line per document, each with its own minted correlation id.
    let ingested: Vec<&Value> = lines.iter().filter(|v| v["event"] == "document_ingested").collect();
    assert_eq!(ingested.len(), 3, "{ingested:?}");
    let mut ids = BTreeSet::new();
    for v in &ingested {
        assert_eq!(v["level"], "INFO", "{v}");
        let id = v["correlationId"].as_str().unwrap_or_else(|| panic!("no correlationId: {v}"));
        assert!(is_minted(id), "{v}");
        ids.insert(id.to_string());
    }
    assert_eq!(ids.len(), 3, "one id per document");
    let dead: Vec<&Value> = lines.iter().filter(|v| v["event"] == "dead_lettered").collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    let dead_id = dead[0]["correlationId"].as_str().expect("the dead letter's line has its id");
    assert!(is_minted(dead_id) && !ids.contains(dead_id), "{}", dead[0]);

    // The stored dead letter carries the same id.
    let out = Command::new(BIN)
        .args(["records", "--dead-letters", "--data-dir", data.to_str().unwrap()])
        .output()
        .expect("records --dead-letters");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stored: Value = serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(stored["correlation_id"].as_str(), Some(dead_id), "{stored}");

    // Record changes and conflicts: info lines with the runbook's keys and the id of the
    // document that caused them.
    let changed: Vec<&Value> = lines.iter().filter(|v| v["event"] == "consensus_changed").collect();
    assert!(!changed.is_empty(), "no consensus_changed line at info");
    for v in &changed {
        assert_eq!(v["level"], "INFO", "{v}");
        assert!(v["artifactKey"].as_str().is_some_and(|a| !a.is_empty()), "{v}");
        assert!(v["advisoryKey"].as_str().is_some_and(|a| !a.is_empty()), "{v}");
        let id = v["correlationId"].as_str().unwrap_or_else(|| panic!("no correlationId: {v}"));
        assert!(ids.contains(id), "the id of an ingested document: {v}");
    }
    let conflicts: Vec<&Value> = lines.iter().filter(|v| v["event"] == "conflicts_appeared").collect();
    assert!(!conflicts.is_empty(), "the examples disagree: conflicts_appeared expected at info");
    for v in &conflicts {
        assert_eq!(v["level"], "INFO", "{v}");
        assert!(v["artifactKey"].is_string() && v["advisoryKey"].is_string(), "{v}");
        assert!(v["correlationId"].as_str().is_some_and(|id| ids.contains(id)), "{v}");
    }
}

/// `serve --once` on the examples with `--log-format text`; stderr as given.
fn text_run(data: &Path, stderr: Stdio) -> Command {
    let mut c = Command::new(BIN);
    c.args([
        "serve",
        "--once",
        "--ingest-dir",
        "examples",
        "--data-dir",
        data.to_str().unwrap(),
        "--log-format",
        "text",
    ])
    .args(["--listen", "127.0.0.1:0"])
    .current_dir(common::repo_dir())
    .env("RUST_LOG", "info")
    .env_remove("NO_COLOR")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(stderr);
    c
}

#[test]
fn text_lines_to_a_file_have_no_escapes_and_name_their_event() {
    let tmp = tempfile::tempdir().unwrap();
    let log = tmp.path().join("text.log");
    let status =
        text_run(&tmp.path().join("data"), Stdio::from(std::fs::File::create(&log).unwrap())).status().unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.lines().count() >= 4, "{text}");
    assert!(!text.contains('\u{1b}'), "ANSI escapes in a redirected log:\n{text:?}");
    for l in text.lines() {
        assert!(l.contains("event="), "a line without an event: {l}");
    }
    assert!(text.contains("event=\"document_ingested\""), "{text}");
    assert!(text.contains("event=\"actix_server\""), "{text}");
}

/// Under a terminal (a pseudo-terminal from util-linux `script`) text lines are coloured,
/// unless `NO_COLOR` is set.
#[test]
fn text_lines_on_a_terminal_are_coloured_unless_no_color() {
    let script = Command::new("script").arg("--version").output();
    assert!(
        script.is_ok_and(|o| o.status.success()),
        "util-linux `script` (a pseudo-terminal) is needed: apt-get install bsdutils"
    );
    let run = |no_color: Option<&str>| -> String {
        let tmp = tempfile::tempdir().unwrap();
        let cmd = format!(
            "{BIN} serve --once --ingest-dir examples --data-dir {} --log-format text --listen 127.0.0.1:0",
            tmp.path().join("data").display()
        );
        let mut c = Command::new("script");
        c.args(["-q", "-e", "-c", &cmd, "/dev/null"])
            .current_dir(common::repo_dir())
            .env("RUST_LOG", "info")
            .env_remove("NO_COLOR")
            .stdin(Stdio::null());
        if let Some(v) = no_color {
            c.env("NO_COLOR", v);
        }
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = run(None);
    assert!(coloured.contains("document_ingested"), "{coloured}");
    assert!(has_colour(&coloured), "a terminal gets colour:\n{coloured:?}");
    let plain = run(Some("1"));
    assert!(plain.contains("document_ingested"), "{plain}");
    assert!(!has_colour(&plain), "NO_COLOR=1 turns colour off:\n{plain:?}");
    // An empty NO_COLOR does not (no-color.org).
    assert!(has_colour(&run(Some(""))));
}

/// Whether `text` holds a colour (an SGR sequence, `ESC [ <digits;> m`); the progress
/// bar's cursor moves (`ESC [ 1A`, `ESC [ 2K`) are no colour.
fn has_colour(text: &str) -> bool {
    text.split("\u{1b}[").skip(1).any(|rest| {
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == ';'));
        end.is_some_and(|i| rest[i..].starts_with('m'))
    })
}

#[test]
fn colour_is_an_sgr_sequence_not_a_cursor_move() {
    assert!(has_colour("a \u{1b}[2mdim\u{1b}[0m"));
    assert!(has_colour("\u{1b}[1;31mred"));
    assert!(!has_colour("bar\u{1b}[1A\r\u{1b}[2K\u{1b}[1B line"));
    assert!(!has_colour("plain"));
}
