//! The watched directory's rules for what is a document and when it may be read: the scan
//! (which entries are candidates, which are skipped and why), the settle rule (a file is
//! read only once its writer is done) and the skip log (each skipped file logged and
//! counted once, not once per poll).
//!
//! Invariants:
//! - Only `*.json` names are documents; dot-files and dot-directories, and names ending
//!   in `.tmp` or `.part` are ignored, so a writer that writes `doc.json.part` (or
//!   `.doc.json`) and renames it into place is never seen half-written.
//! - A candidate is a regular file, or a symlink whose target is a regular file inside
//!   the directory (anywhere with `follow_symlinks`); symlinks to directories are never
//!   followed (no loops). FIFOs, sockets, devices and symlinks out of the directory are
//!   skipped ([`SkipReason`]), never opened by the scan.
//! - An unreadable subdirectory (permission, a path past `PATH_MAX`) is skipped and the
//!   rest of the scan goes on; it is tried again on every scan.
//! - A file is settled when its modification time is at least `settle` old, or when the
//!   scans have seen the same size and modification time for at least `settle`
//!   ([`Settling`]). A writer that writes in place must therefore not pause longer than
//!   `settle` mid-file; the write-then-rename convention needs no such assumption.
//! - The scan reads no file content and touches no store.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Why a watched file was not read (the `reason` label of `vex_ingest_files_skipped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A FIFO, socket or device (or a symlink to one, or a dangling symlink's kind unknown).
    NotRegular,
    /// A symlink whose target is outside the watched directory.
    SymlinkOutside,
    /// A subdirectory or file that could not be read (permission, name too long, I/O).
    Unreadable,
    /// The file changed while it was read: read again on a later scan.
    Changed,
}

impl SkipReason {
    pub const ALL: [SkipReason; 4] =
        [SkipReason::NotRegular, SkipReason::SymlinkOutside, SkipReason::Unreadable, SkipReason::Changed];

    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NotRegular => "not_regular",
            SkipReason::SymlinkOutside => "symlink_outside",
            SkipReason::Unreadable => "unreadable",
            SkipReason::Changed => "changed",
        }
    }
}

/// A file the scan offers for reading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The path as found in the directory (the document's name and its processed-files key).
    pub path: PathBuf,
    /// The path to read: `path`, or a symlink's resolved target.
    pub read_path: PathBuf,
    /// `size:mtime_ns` of the file read: a changed file is processed again.
    pub fingerprint: String,
    /// Modification time of the file read.
    pub modified: Option<SystemTime>,
    /// Size of the file read, in bytes, when scanned.
    pub size: u64,
}

/// An entry that is not read, with what is known about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub path: PathBuf,
    pub reason: SkipReason,
    pub detail: String,
}

/// One scan of the directory, in byte order of the paths.
#[derive(Debug, Default)]
pub struct Scan {
    pub files: Vec<Candidate>,
    pub skipped: Vec<Skip>,
}

/// `size:mtime_ns` of a file: a changed file is processed again.
pub fn fingerprint(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}:{mtime}", meta.len())
}

/// Whether a file name is ignored: not `*.json`, a dot-file, or a temporary name.
fn ignored_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    name.starts_with('.') || lower.ends_with(".tmp") || lower.ends_with(".part") || !lower.ends_with(".json")
}

/// Scans `root` recursively. Fails only when `root` itself cannot be listed.
pub fn scan(root: &Path, follow_symlinks: bool) -> std::io::Result<Scan> {
    let canonical_root = std::fs::canonicalize(root)?;
    let entries = std::fs::read_dir(root)?;
    let mut out = Scan::default();
    walk(root, entries, &canonical_root, follow_symlinks, &mut out);
    out.files.sort_by(|a, b| a.path.cmp(&b.path));
    out.skipped.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(dir: &Path, entries: std::fs::ReadDir, root: &Path, follow: bool, out: &mut Scan) {
    let unreadable = |path: &Path, e: &std::io::Error| Skip {
        path: path.to_path_buf(),
        reason: SkipReason::Unreadable,
        detail: e.to_string(),
    };
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                out.skipped.push(unreadable(dir, &e));
                break;
            }
        };
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ft = match entry.file_type() {
            Ok(ft) => ft,
            Err(e) => {
                out.skipped.push(unreadable(&path, &e));
                continue;
            }
        };
        if ft.is_dir() {
            if name.starts_with('.') {
                continue;
            }
            match std::fs::read_dir(&path) {
                Ok(sub) => walk(&path, sub, root, follow, out),
                Err(e) => out.skipped.push(unreadable(&path, &e)),
            }
            continue;
        }
        if ignored_name(&name) {
            continue;
        }
        let read_path = if ft.is_symlink() {
            let target = match std::fs::canonicalize(&path) {
                Ok(t) => t,
                Err(e) => {
                    out.skipped.push(Skip {
                        path,
                        reason: SkipReason::Unreadable,
                        detail: format!("symlink target unreadable: {e}"),
                    });
                    continue;
                }
            };
            if !follow && !target.starts_with(root) {
                out.skipped.push(Skip {
                    path,
                    reason: SkipReason::SymlinkOutside,
                    detail: format!(
                        "symlink to {} outside the watched directory (ingest.follow_symlinks is off)",
                        target.display()
                    ),
                });
                continue;
            }
            target
        } else {
            path.clone()
        };
        // The target's metadata (a symlink's was resolved above: no symlink left to follow).
        let meta = match std::fs::symlink_metadata(&read_path) {
            Ok(m) => m,
            Err(e) => {
                out.skipped.push(unreadable(&path, &e));
                continue;
            }
        };
        if !meta.file_type().is_file() {
            out.skipped.push(Skip {
                path,
                reason: SkipReason::NotRegular,
                detail: format!("{}; only regular files are read", crate::input::file_kind(meta.file_type())),
            });
            continue;
        }
        out.files.push(Candidate {
            fingerprint: fingerprint(&meta),
            modified: meta.modified().ok(),
            size: meta.len(),
            path,
            read_path,
        });
    }
}

/// The settle rule: which candidates have stopped changing.
#[derive(Debug, Default)]
pub struct Settling {
    /// path -> (fingerprint, when the scans first saw it).
    seen: HashMap<PathBuf, (String, Instant)>,
}

impl Settling {
    /// Whether `c` is settled at `now` (wall clock `now_sys`): its modification time is at
    /// least `settle` old, or the scans saw the same fingerprint for at least `settle`.
    pub fn settled(&mut self, c: &Candidate, settle: Duration, now: Instant, now_sys: SystemTime) -> bool {
        let old = c.modified.and_then(|m| now_sys.duration_since(m).ok()).is_some_and(|age| age >= settle);
        let stable = match self.seen.get(&c.path) {
            Some((fp, since)) if *fp == c.fingerprint => now.duration_since(*since) >= settle,
            _ => {
                self.seen.insert(c.path.clone(), (c.fingerprint.clone(), now));
                false
            }
        };
        if old || stable {
            self.seen.remove(&c.path);
            true
        } else {
            false
        }
    }

    /// Forgets files that are gone.
    pub fn retain(&mut self, present: &HashSet<PathBuf>) {
        self.seen.retain(|p, _| present.contains(p));
    }

    /// Whether some file is still waiting to settle.
    pub fn pending(&self) -> bool {
        !self.seen.is_empty()
    }
}

/// Which skips were already logged: each path is logged and counted once per reason and
/// detail until it is gone or changes, not once per poll.
#[derive(Debug, Default)]
pub struct SkipLog {
    logged: HashMap<PathBuf, (SkipReason, String)>,
}

impl SkipLog {
    /// Whether `skip` (keyed by path, reason and `key`: a fingerprint or the detail) is
    /// new, and so to be logged and counted; remembers it.
    pub fn admit(&mut self, path: &Path, reason: SkipReason, key: &str) -> bool {
        let v = (reason, key.to_string());
        if self.logged.get(path) == Some(&v) {
            return false;
        }
        self.logged.insert(path.to_path_buf(), v);
        true
    }

    /// Forgets a path that was read (so a later skip of it is logged again).
    pub fn clear(&mut self, path: &Path) {
        self.logged.remove(path);
    }

    /// Forgets paths no longer in the directory.
    pub fn retain(&mut self, present: &HashSet<PathBuf>) {
        self.logged.retain(|p, _| present.contains(p));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_labels_are_the_reasons() {
        assert_eq!(SkipReason::ALL.map(SkipReason::as_str), crate::telemetry::labels::INGEST_SKIP_REASONS);
    }

    #[test]
    fn names_that_are_no_documents_are_ignored() {
        for n in [".doc.json", "doc.json.tmp", "doc.json.part", "doc.JSON.PART", "doc.txt", "doc.json.asc"] {
            assert!(ignored_name(n), "{n}");
        }
        for n in ["doc.json", "DOC.JSON", "a.b.json"] {
            assert!(!ignored_name(n), "{n}");
        }
    }

    fn candidate(fp: &str, modified: SystemTime) -> Candidate {
        Candidate {
            path: "d/a.json".into(),
            read_path: "d/a.json".into(),
            fingerprint: fp.into(),
            modified: Some(modified),
            size: 0,
        }
    }

    #[test]
    fn a_file_settles_when_old_or_unchanged_for_the_settle_time() {
        let settle = Duration::from_millis(1000);
        let (t0, s0) = (Instant::now(), SystemTime::now());
        let mut s = Settling::default();
        // Old: settled at once.
        assert!(s.settled(&candidate("1:1", s0 - Duration::from_secs(5)), settle, t0, s0));
        assert!(!s.pending());
        // Fresh: not settled until the scans saw it unchanged for the settle time.
        let fresh = candidate("1:2", s0);
        assert!(!s.settled(&fresh, settle, t0, s0));
        assert!(s.pending());
        assert!(!s.settled(&fresh, settle, t0 + Duration::from_millis(500), s0));
        // It changed: the wait starts again.
        let grown = candidate("2:3", s0);
        assert!(!s.settled(&grown, settle, t0 + Duration::from_millis(900), s0));
        assert!(!s.settled(&grown, settle, t0 + Duration::from_millis(1800), s0));
        assert!(s.settled(&grown, settle, t0 + Duration::from_millis(1900), s0));
        assert!(!s.pending());
        // A modification time in the future (another clock) settles by the scans alone.
        let future = candidate("3:4", s0 + Duration::from_secs(3600));
        assert!(!s.settled(&future, settle, t0, s0));
        assert!(s.settled(&future, settle, t0 + settle, s0));
    }

    #[test]
    fn a_skip_is_logged_once_until_it_changes_or_is_gone() {
        let mut l = SkipLog::default();
        let p = Path::new("d/x.json");
        assert!(l.admit(p, SkipReason::NotRegular, "fifo"));
        assert!(!l.admit(p, SkipReason::NotRegular, "fifo"));
        assert!(l.admit(p, SkipReason::Unreadable, "1:1"));
        l.retain(&HashSet::new());
        assert!(l.admit(p, SkipReason::Unreadable, "1:1"));
        l.clear(p);
        assert!(l.admit(p, SkipReason::Unreadable, "1:1"));
    }

    #[test]
    fn the_scan_sorts_candidates_from_skips() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let d = root.path();
        std::fs::write(d.join("b.json"), b"{}").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a.json"), b"{}").unwrap();
        std::fs::write(d.join("c.json.part"), b"{").unwrap();
        std::fs::create_dir(d.join(".staging")).unwrap();
        std::fs::write(d.join(".staging/e.json"), b"{}").unwrap();
        std::fs::write(outside.path().join("x.json"), b"{}").unwrap();
        std::os::unix::fs::symlink(outside.path().join("x.json"), d.join("out.json")).unwrap();
        std::os::unix::fs::symlink(d.join("b.json"), d.join("in.json")).unwrap();
        std::os::unix::fs::symlink("/dev/zero", d.join("zero.json")).unwrap();
        std::os::unix::fs::symlink(d.join("nothing"), d.join("dangling.json")).unwrap();
        assert!(std::process::Command::new("mkfifo").arg(d.join("f.json")).status().unwrap().success());
        let s = scan(d, false).unwrap();
        let names: Vec<_> = s.files.iter().map(|c| c.path.strip_prefix(d).unwrap().to_path_buf()).collect();
        assert_eq!(names, [PathBuf::from("b.json"), "in.json".into(), "sub/a.json".into()]);
        let canonical_b = std::fs::canonicalize(d.join("b.json")).unwrap();
        assert_eq!(s.files[1].read_path, canonical_b, "a symlink inside is read through its target");
        let skipped: Vec<_> =
            s.skipped.iter().map(|k| (k.path.strip_prefix(d).unwrap().display().to_string(), k.reason)).collect();
        assert_eq!(
            skipped,
            [
                ("dangling.json".to_string(), SkipReason::Unreadable),
                ("f.json".into(), SkipReason::NotRegular),
                ("out.json".into(), SkipReason::SymlinkOutside),
                ("zero.json".into(), SkipReason::SymlinkOutside),
            ]
        );
        // With follow_symlinks the file outside is a candidate; a device never is.
        let s = scan(d, true).unwrap();
        assert!(s.files.iter().any(|c| c.path.ends_with("out.json")));
        assert!(s.skipped.iter().any(|k| k.path.ends_with("zero.json") && k.reason == SkipReason::NotRegular));
    }
}
