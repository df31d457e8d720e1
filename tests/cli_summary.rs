//! The one-line summary every `consensus`, `normalise`, `export` and `serve --once` run
//! ends with on stderr, and the progress bar drawn only when stderr is a terminal
//! (`vex_lens::progress`). Counts are checked against what the test counts itself: the
//! documents of the folder, the lines written, the diagnostics listed by `-v`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vex-lens"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

fn run(args: &[&str]) -> Output {
    let o = bin().args(args).output().expect("run vex-lens");
    assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
    o
}

fn corpus(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus").join(rel)
}

/// The `*.json` files under `dir`, counted here (recursively), not taken from the binary.
fn json_files(dir: &Path) -> u64 {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += json_files(&p);
        } else if p.extension().is_some_and(|x| x.eq_ignore_ascii_case("json")) {
            n += 1;
        }
    }
    n
}

/// The summary line of `command` in `stderr` (exactly one) as its `key=value` words.
fn summary(stderr: &[u8], command: &str) -> BTreeMap<String, String> {
    let text = String::from_utf8_lossy(stderr);
    let prefix = format!("vex-lens {command}: summary: ");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with(&prefix)).collect();
    assert_eq!(lines.len(), 1, "one summary line in:\n{text}");
    assert_eq!(text.lines().last(), Some(lines[0]), "the summary is the last line:\n{text}");
    lines[0][prefix.len()..]
        .split(' ')
        .map(|w| {
            let (k, v) = w.split_once('=').unwrap_or_else(|| panic!("{w:?} in {}", lines[0]));
            (k.to_string(), v.to_string())
        })
        .collect()
}

fn count(s: &BTreeMap<String, String>, key: &str) -> u64 {
    s.get(key).unwrap_or_else(|| panic!("no {key} in {s:?}")).parse().unwrap()
}

/// `code:n,...` (or `none`) as a map.
fn diagnostics(s: &BTreeMap<String, String>) -> BTreeMap<String, u64> {
    match s["diagnostics"].as_str() {
        "none" => BTreeMap::new(),
        d => d
            .split(',')
            .map(|p| {
                let (c, n) = p.split_once(':').unwrap();
                (c.to_string(), n.parse().unwrap())
            })
            .collect(),
    }
}

/// Diagnostics by code as `-v` lists them (`warning: <document>: <code>: <message>`).
fn listed_diagnostics(stderr: &[u8]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for l in String::from_utf8_lossy(stderr).lines() {
        if let Some(rest) = l.strip_prefix("warning: ") {
            let code = rest.split(": ").nth(1).unwrap().to_string();
            *out.entry(code).or_default() += 1;
        }
    }
    out
}

fn no_terminal_codes(stderr: &[u8]) {
    let text = String::from_utf8_lossy(stderr);
    assert!(
        !text.contains('\u{1b}') && !text.contains('\r'),
        "escape codes on a stderr that is no terminal:\n{text:?}"
    );
}

#[test]
fn consensus_and_normalise_summaries_count_what_they_read_and_wrote() {
    for folder in ["openvex", "cyclonedx", "csaf"] {
        let dir = corpus(folder);
        let d = dir.to_str().unwrap();
        let o = run(&["consensus", "--keep-going", "-v", d]);
        no_terminal_codes(&o.stderr);
        let s = summary(&o.stderr, "consensus");
        assert_eq!(count(&s, "documents"), json_files(&dir), "{folder}: {s:?}");
        assert_eq!(count(&s, "records"), o.stdout.iter().filter(|b| **b == b'\n').count() as u64, "{folder}");
        assert_eq!(count(&s, "dead_letters"), 0, "{folder}");
        assert_eq!(diagnostics(&s), listed_diagnostics(&o.stderr), "{folder}");
        assert!(s["elapsed"].ends_with('s'), "{s:?}");
        let n = run(&["normalise", "--keep-going", d]);
        no_terminal_codes(&n.stderr);
        let ns = summary(&n.stderr, "normalise");
        let observations = n.stdout.iter().filter(|b| **b == b'\n').count() as u64;
        assert_eq!(count(&ns, "observations"), observations, "{folder}");
        assert_eq!(count(&s, "observations"), observations, "{folder}");
        assert_eq!(count(&ns, "documents"), json_files(&dir), "{folder}");
        assert!(!ns.contains_key("records"), "normalise writes no records: {ns:?}");
    }
}

#[test]
fn a_document_skipped_by_keep_going_is_a_dead_letter_of_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy("examples/acme-vendor.openvex.json", dir.path().join("a.json")).unwrap();
    std::fs::write(dir.path().join("b.json"), b"{not json").unwrap();
    let o = run(&["consensus", "--keep-going", dir.path().to_str().unwrap()]);
    let s = summary(&o.stderr, "consensus");
    assert_eq!((count(&s, "documents"), count(&s, "dead_letters")), (2, 1), "{s:?}");
    assert_eq!(count(&s, "records"), 4);
}

#[test]
fn export_from_files_summarises_the_bundle() {
    let out = tempfile::tempdir().unwrap();
    let dir = corpus("openvex");
    let manifest = out.path().join("manifest.json");
    let o = run(&["export", "--manifest", manifest.to_str().unwrap(), "--from", dir.to_str().unwrap(), "--keep-going"]);
    no_terminal_codes(&o.stderr);
    let s = summary(&o.stderr, "export");
    assert_eq!(count(&s, "documents"), json_files(&dir));
    let manifest: serde_json::Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(count(&s, "records"), manifest["counts"]["records"].as_u64().unwrap(), "{manifest}");
}

/// `serve --once`: the summary is the `stopped` log line (JSON on a stderr that is no
/// terminal), with the documents of the directory and what the store holds.
#[test]
fn serve_once_ends_with_the_summary() {
    let data = tempfile::tempdir().unwrap();
    let dir = corpus("openvex");
    let o = bin()
        .args(["serve", "--once", "--listen", "127.0.0.1:0"])
        .arg("--ingest-dir")
        .arg(&dir)
        .arg("--data-dir")
        .arg(data.path())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty(), "serve writes nothing on stdout");
    no_terminal_codes(&o.stderr);
    let text = String::from_utf8_lossy(&o.stderr);
    let stopped: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "stopped")
        .collect();
    assert_eq!(stopped.len(), 1, "{text}");
    let line = stopped[0]["message"].as_str().unwrap().to_string();
    assert!(line.starts_with("vex-lens serve --once: summary: "), "{line}");
    let s = summary(format!("{}\n", line.split("; drained").next().unwrap()).as_bytes(), "serve --once");
    assert_eq!(count(&s, "documents"), json_files(&dir), "{s:?}");
    assert_eq!(stopped[0]["documents"].as_u64(), Some(json_files(&dir)));
    assert_eq!(count(&s, "dead_letters"), 0);
    let cli = run(&["consensus", "--keep-going", dir.to_str().unwrap()]);
    let c = summary(&cli.stderr, "consensus");
    assert_eq!(diagnostics(&s), diagnostics(&c), "the service's diagnostics are the CLI's");
    let stored = run(&["records", "--data-dir", data.path().to_str().unwrap()]);
    let stored = stored.stdout.iter().filter(|b| **b == b'\n').count() as u64;
    assert!(stored > 0 && count(&s, "records") >= stored, "{s:?}: {stored} stored");
}

/// On a terminal (a pseudo-terminal made by `script`), the bar is drawn on stderr; the
/// records on stdout are the same as without it.
#[test]
fn the_bar_is_drawn_on_a_terminal_only() {
    let dir = corpus("vexhub");
    let cmd = format!("{} consensus {} > /dev/null", env!("CARGO_BIN_EXE_vex-lens"), dir.display());
    let o = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("COLUMNS", "160")
        .output()
        .expect("script (util-linux) runs the command on a pseudo-terminal");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let tty = String::from_utf8_lossy(&o.stdout);
    assert!(tty.contains('\u{1b}') && tty.contains(" documents, "), "no bar drawn on a terminal:\n{tty:?}");
    assert!(tty.contains("vex-lens consensus: summary: "), "{tty:?}");
    let piped = bin().args(["consensus", dir.to_str().unwrap()]).output().unwrap();
    no_terminal_codes(&piped.stderr);
}
