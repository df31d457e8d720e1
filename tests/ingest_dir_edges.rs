//! The watched directory's hostile edges, on a real directory through the built binary's
//! `serve` (embedded mode): FIFOs, devices and symlinks out of the directory are skipped,
//! logged once and counted, never blocking a reader or shutdown; a file over the size
//! limit is dead-lettered without being read whole; an unreadable subdirectory or file is
//! skipped and the rest ingested, and it is read once it becomes readable; a file being
//! written is not read until it settles (and `.part` files until renamed). The CLI's
//! inputs follow the same regular-file rule.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{get, metric, start_embedded_serve, wait_for, KillOnDrop};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");

fn example(name: &str) -> Vec<u8> {
    std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples").join(name)).unwrap()
}

fn metrics(port: u16) -> String {
    get(port, "/metrics").map(|(_, m)| m).unwrap_or_default()
}

fn skipped(port: u16, reason: &str) -> f64 {
    metric(&metrics(port), &format!("vex_ingest_files_skipped_total{{reason=\"{reason}\"}}")).unwrap_or(-1.0)
}

/// The log's `ingest_file_skipped` lines naming `file`.
fn skip_lines(log: &Path, file: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"event\":\"ingest_file_skipped\"") && l.contains(file))
        .count()
}

fn mkfifo(p: &Path) {
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

#[test]
fn hostile_entries_are_skipped_once_counted_and_never_block() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(input.join("docs")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(input.join("a.json"), example("acme-vendor.openvex.json")).unwrap();
    // Inside the directory, under a name the scan does not take: read through the symlink.
    std::fs::write(input.join("docs/c.txt"), example("scanner.cdx.json")).unwrap();
    std::os::unix::fs::symlink(input.join("docs/c.txt"), input.join("c-link.json")).unwrap();
    // Outside: refused, whatever it is.
    std::fs::write(outside.join("x.json"), example("distro.csaf.json")).unwrap();
    std::os::unix::fs::symlink(outside.join("x.json"), input.join("out.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", input.join("zero.json")).unwrap();
    // A FIFO nobody writes to.
    mkfifo(&input.join("f.json"));
    // Over the 4096-byte limit set below.
    let mut big = example("acme-vendor.openvex.json");
    big.extend(std::iter::repeat_n(b' ', 5000));
    std::fs::write(input.join("big.json"), &big).unwrap();
    // A subdirectory whose path is longer than PATH_MAX (4096): two chains of 250-byte
    // names, each made with paths under the limit, the second renamed into the first.
    let name = "d".repeat(250);
    let chain = |n: usize| (0..n).fold(PathBuf::new(), |p, _| p.join(&name));
    let first = input.join("deep").join(chain(14));
    std::fs::create_dir_all(&first).unwrap();
    let second = tmp.path().join("x").join(chain(4));
    std::fs::create_dir_all(&second).unwrap();
    std::fs::write(second.join("doc.json"), b"{}").unwrap();
    std::fs::rename(tmp.path().join("x").join(&name), first.join(&name)).unwrap();
    assert!(first.as_os_str().len() + 4 * 251 > 4096);

    let log = tmp.path().join("serve.log");
    let data = tmp.path().join("data");
    let (mut server, port) = start_embedded_serve(
        &["--ingest-dir", input.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &[("VEXLENS_INGEST__POLL_INTERVAL_MS", "100"), ("VEXLENS_INGEST__MAX_MESSAGE_BYTES", "4096")],
        &log,
        Duration::from_secs(30),
    );
    wait_for("the two readable documents", Duration::from_secs(30), || {
        metric(&metrics(port), "vex_documents_ingested_total").filter(|n| *n >= 2.0)
    });
    wait_for("the too_large dead letter", Duration::from_secs(30), || {
        metric(&metrics(port), "vex_dead_letter_total{reason=\"too_large\"}").filter(|n| *n >= 1.0)
    });
    // Many polls later: each hostile entry counted and logged once, nothing else read.
    std::thread::sleep(Duration::from_millis(1500));
    let m = metrics(port);
    assert_eq!(metric(&m, "vex_documents_ingested_total"), Some(2.0), "a.json and c-link.json only");
    assert_eq!(metric(&m, "vex_dead_letter_total{reason=\"too_large\"}"), Some(1.0));
    assert_eq!(metric(&m, "vex_dead_letter_total{reason=\"invalid_json\"}"), Some(0.0));
    assert_eq!(skipped(port, "not_regular"), 1.0, "the FIFO:\n{m}");
    assert_eq!(skipped(port, "symlink_outside"), 2.0, "out.json and zero.json:\n{m}");
    assert_eq!(skipped(port, "unreadable"), 1.0, "the subdirectory past PATH_MAX:\n{m}");
    for f in ["f.json", "out.json", "zero.json"] {
        assert_eq!(skip_lines(&log, f), 1, "{f} logged once:\n{}", std::fs::read_to_string(&log).unwrap());
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("fifo; only regular files are read"), "{text}");
    assert!(text.contains("outside the watched directory"), "{text}");
    assert!(text.contains("File name too long"), "{text}");
    // A file dropped in later is still picked up: the scan is not stuck.
    std::fs::write(input.join("later.json"), example("distro.csaf.json")).unwrap();
    wait_for("the later document", Duration::from_secs(30), || {
        metric(&metrics(port), "vex_documents_ingested_total").filter(|n| *n >= 3.0)
    });
    let status = server.terminate(Duration::from_secs(10));
    assert!(status.success(), "exit {status:?}:\n{}", std::fs::read_to_string(&log).unwrap());
}

/// Runs `serve` as the unprivileged `nobody` when the tests run as root (root reads any
/// file), so that permissions apply.
fn unprivileged(tmp: &Path) -> Vec<String> {
    let uid = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout).unwrap();
    if uid.trim() != "0" {
        return Vec::new();
    }
    let chown = Command::new("chown").args(["-R", "65534:65534"]).arg(tmp).status().unwrap();
    assert!(chown.success());
    ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"].map(String::from).to_vec()
}

#[test]
fn unreadable_files_and_subdirectories_are_skipped_and_read_once_readable() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(input.join("locked")).unwrap();
    std::fs::write(input.join("a.json"), example("acme-vendor.openvex.json")).unwrap();
    std::fs::write(input.join("secret.json"), example("distro.csaf.json")).unwrap();
    std::fs::write(input.join("locked/inner.json"), example("scanner.cdx.json")).unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let prefix = unprivileged(tmp.path());
    std::fs::set_permissions(input.join("secret.json"), std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(input.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();

    let log = tmp.path().join("serve.log");
    let port = common::free_port();
    let out = std::fs::File::create(&log).unwrap();
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    cmd.args(["serve", "--ingest-dir", input.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("VEXLENS_INGEST__POLL_INTERVAL_MS", "100")
        .env("VEXLENS_EXPORT__DIR", tmp.path().join("exports"))
        .current_dir(common::repo_dir())
        .stdout(out.try_clone().unwrap())
        .stderr(out);
    let mut server = KillOnDrop(cmd.spawn().unwrap());
    wait_for("a.json", Duration::from_secs(30), || {
        metric(&metrics(port), "vex_documents_ingested_total").filter(|n| *n >= 1.0)
    });
    wait_for("both skips", Duration::from_secs(30), || Some(skipped(port, "unreadable")).filter(|n| *n >= 2.0));
    std::thread::sleep(Duration::from_millis(1000));
    let m = metrics(port);
    assert_eq!(metric(&m, "vex_documents_ingested_total"), Some(1.0), "{m}");
    assert_eq!(skipped(port, "unreadable"), 2.0, "the file and the subdirectory, once each:\n{m}");
    assert_eq!(metric(&m, "vex_dead_letter_total{reason=\"unreadable\"}"), Some(0.0), "not dead-lettered");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("Permission denied"), "{text}");
    assert_eq!(skip_lines(&log, "secret.json"), 1, "{text}");
    assert_eq!(skip_lines(&log, "locked"), 1, "{text}");

    // Readable again: both are read on a later scan, nothing was lost.
    std::fs::set_permissions(input.join("secret.json"), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(input.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    wait_for("the two documents once readable", Duration::from_secs(30), || {
        metric(&metrics(port), "vex_documents_ingested_total").filter(|n| *n >= 3.0)
    });
    assert_eq!(metric(&metrics(port), "vex_dead_letter_total{reason=\"invalid_json\"}"), Some(0.0));
    assert!(server.terminate(Duration::from_secs(10)).success());
}

#[test]
fn a_file_being_written_is_read_once_settled_and_never_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let log = tmp.path().join("serve.log");
    let data = tmp.path().join("data");
    let (mut server, port) = start_embedded_serve(
        &["--ingest-dir", input.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &[("VEXLENS_INGEST__POLL_INTERVAL_MS", "50"), ("VEXLENS_INGEST__SETTLE_MS", "800")],
        &log,
        Duration::from_secs(30),
    );
    // Written in place, slowly: a chunk every 250 ms (under the settle time), ~2 s in all.
    let doc = example("distro.csaf.json");
    let mut f = std::fs::File::create(input.join("slow.json")).unwrap();
    for chunk in doc.chunks(doc.len() / 8 + 1) {
        f.write_all(chunk).unwrap();
        f.flush().unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let m = metrics(port);
        assert_eq!(metric(&m, "vex_documents_total{outcome=\"dead_lettered\"}"), Some(0.0), "read half-written");
        assert_eq!(metric(&m, "vex_documents_ingested_total"), Some(0.0), "read before it settled");
    }
    drop(f);
    wait_for("the settled document", Duration::from_secs(30), || {
        metric(&metrics(port), "vex_documents_ingested_total").filter(|n| *n >= 1.0)
    });
    // Write-then-rename: the `.part` file is never read, the renamed one is.
    let part = input.join("next.json.part");
    std::fs::write(&part, &example("acme-vendor.openvex.json")[..100]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut f = std::fs::OpenOptions::new().append(true).open(&part).unwrap();
    f.write_all(&example("acme-vendor.openvex.json")[100..]).unwrap();
    drop(f);
    std::fs::rename(&part, input.join("next.json")).unwrap();
    wait_for("the renamed document", Duration::from_secs(30), || {
        metric(&metrics(port), "vex_documents_ingested_total").filter(|n| *n >= 2.0)
    });
    let m = metrics(port);
    assert_eq!(metric(&m, "vex_documents_total{outcome=\"dead_lettered\"}"), Some(0.0), "{m}");
    assert!(server.terminate(Duration::from_secs(10)).success());
}

#[test]
fn serve_once_waits_for_a_fresh_file_to_settle() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("a.json"), example("acme-vendor.openvex.json")).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--once", "--ingest-dir", input.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .args(["--data-dir", tmp.path().join("data").to_str().unwrap()])
        .current_dir(common::repo_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stderr);
    let stopped = text.lines().find(|l| l.contains("\"event\":\"stopped\"")).expect("stopped line");
    let v: serde_json::Value = serde_json::from_str(stopped).unwrap();
    assert_eq!(v["documents"], 1, "{text}");
}

#[test]
fn the_cli_refuses_a_fifo_without_blocking() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("pipe.json");
    mkfifo(&fifo);
    let mut child = Command::new(BIN)
        .args(["consensus", fifo.to_str().unwrap()])
        .current_dir(common::repo_dir())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("consensus blocked on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("pipe.json") && err.contains("not a regular file (fifo)"), "{err}");
}

/// `ingest.max_in_flight_bytes` bounds the watched files in flight, and a file larger than
/// the whole budget still runs (alone): with a 1 KiB budget, every corpus file is larger,
/// and `serve --once` still ingests them all, to the records `consensus` makes of them.
#[test]
fn files_over_the_byte_budget_run_alone_and_all_are_ingested() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    let mut files = common::corpus_files(&["openvex", "cyclonedx"]);
    files.retain(|f| std::fs::metadata(f).unwrap().len() > 1024);
    assert!(files.len() > 3, "{files:?}");
    for f in &files {
        std::fs::copy(f, input.join(f.file_name().unwrap())).unwrap();
    }
    let data = tmp.path().join("data");
    let mut child = KillOnDrop(
        Command::new(BIN)
            .args(["serve", "--once", "--ingest-dir", input.to_str().unwrap(), "--listen", "127.0.0.1:0"])
            .args(["--data-dir", data.to_str().unwrap()])
            .env("VEXLENS_INGEST__MAX_IN_FLIGHT_BYTES", "1024")
            .env("VEXLENS_INGEST__SETTLE_MS", "0")
            .current_dir(common::repo_dir())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve --once did not finish: a file over the budget waits forever");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success());
    let run = |args: &[&str]| {
        let o = Command::new(BIN).args(args).current_dir(common::repo_dir()).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    let stored = run(&["records", "--data-dir", data.to_str().unwrap(), "--format", "ndjson"]);
    let want = run(&["consensus", input.to_str().unwrap(), "--format", "ndjson"]);
    assert!(!want.is_empty());
    assert_eq!(String::from_utf8(stored).unwrap(), String::from_utf8(want).unwrap());
}
