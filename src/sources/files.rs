//! The embedded sources: a watched directory of `*.json` documents and NDJSON documents
//! on stdin, each handed to the ingest flow (`crate::ingest`; its observation bus is the
//! registry's mailbox: observations go straight to the artifact actors). Each document
//! is one `vex.document` span (a trace root) from intake until it is settled.
//!
//! Invariants: a source only reads bytes and names them; a file is remembered as
//! processed ([`ProcessedFiles`]) only once the flow settled it (durable or
//! dead-lettered), else it is offered again on the next scan. A `<document>.asc` beside
//! a watched file is read with it and travels in the context as its detached OpenPGP
//! signature (write it before, or with, the document: one that appears later is read
//! only when the document changes).
//! dead-lettered), else it is offered again on the next scan. What the directory offers
//! and when a file may be read are the scan's rules (`sources::scan`: regular `*.json`
//! files only, settled, symlinks kept inside); a file that is skipped, cannot be opened
//! or changes while read is logged and counted once (`vex_ingest_files_skipped_total`)
//! and tried again on later scans, never dead-lettered; a file over the size limit (at
//! most limit + 1 bytes are read) is dead-lettered `too_large`. Nothing here blocks on a
//! file: FIFOs and devices are never opened for reading, so shutdown is not held up.

use crate::domain::codes::DeadLetterReason;
use crate::domain::model::{IngestContext, Provenance};
use crate::ingest::{Document, Ingest, Unreadable};
use crate::ports::{DeadLetterSink, ProcessedFiles};
use crate::sources::scan::{self, Settling, SkipLog, SkipReason};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Where the embedded sources keep what they handled: the processed files (none: every
/// file is read again after a restart) and the dead letters.
#[derive(Clone)]
pub struct Intake {
    pub files: Option<Arc<dyn ProcessedFiles>>,
    pub dead_letters: Arc<dyn DeadLetterSink>,
}

/// Settings of the embedded sources.
#[derive(Clone, Debug)]
pub struct SourceSettings {
    pub dir: Option<PathBuf>,
    pub stdin: bool,
    pub poll: Duration,
    /// How long a watched file must be unchanged before it is read (`scan::Settling`).
    pub settle: Duration,
    /// Follow symlinks to regular files outside the directory.
    pub follow_symlinks: bool,
    pub tenant: String,
    pub max_bytes: usize,
    pub max_in_flight: usize,
    /// Bytes of watched files in flight at once (a larger file passes alone).
    pub max_in_flight_bytes: usize,
    /// Process what is there (and stdin to EOF), then return.
    pub once: bool,
}

#[derive(Clone)]
struct Ctx {
    ingest: Ingest,
    files: Option<Arc<dyn ProcessedFiles>>,
    dead_letters: Arc<dyn DeadLetterSink>,
    settings: Arc<SourceSettings>,
}

/// Hands one document to the ingest flow in its `vex.document` span; `true` when it is
/// settled (durable or dead-lettered).
async fn process(
    ctx: &Ctx,
    name: String,
    bytes: Result<Vec<u8>, Unreadable>,
    openpgp_signature: Option<Vec<u8>>,
) -> bool {
    use tracing::Instrument;
    let span = tracing::info_span!(
        parent: None,
        "vex.intake",
        otel.name = "vex.document",
        vex.source = crate::telemetry::trace::bounded(&name),
        vex.tenant = crate::telemetry::trace::bounded(&ctx.settings.tenant),
        vex.bytes = bytes.as_ref().map_or(0, Vec::len),
        vex.observations = tracing::field::Empty,
        vex.outcome = tracing::field::Empty,
        vex.reason = tracing::field::Empty,
    );
    let ictx = IngestContext {
        tenant: Some(ctx.settings.tenant.clone()),
        provenance: Provenance { source: Some(name.clone()), ..Default::default() },
        openpgp_signature,
        ..Default::default()
    };
    let doc = Document { name, bytes, ctx: ictx, trace: Vec::new() };
    ctx.ingest.document(doc, ctx.dead_letters.as_ref()).instrument(span).await.settled()
}

/// Logs and counts a skipped watched file once (per path, reason and `key`).
fn skipped(log: &Mutex<SkipLog>, path: &Path, reason: SkipReason, key: &str, detail: &str) {
    if log.lock().map(|mut l| l.admit(path, reason, key)).unwrap_or(true) {
        crate::telemetry::metrics()
            .ingest_files_skipped
            .get_or_create(&crate::telemetry::ReasonLabel { reason: reason.as_str().to_string() })
            .inc();
        crate::warn_event!(
            crate::telemetry::events::LogEvent::IngestFileSkipped,
            path = %path.display(),
            reason = reason.as_str(),
            detail,
            "watched file not read (logged once while it stays so; tried again on later scans)"
        );
    }
}

/// Reads stdin line by line (one document per line) into the ingest flow until EOF or
/// shutdown; returns once every line read is processed.
async fn read_stdin(ctx: Ctx, sem: Arc<Semaphore>, mut shutdown: watch::Receiver<bool>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut inner: JoinSet<()> = JoinSet::new();
    let mut n = 0u64;
    loop {
        let line = tokio::select! {
            _ = shutdown.changed() => break,
            l = lines.next_line() => l,
        };
        let line = match line {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                crate::warn_event!(crate::telemetry::events::LogEvent::StdinError, error = %e, "stdin read failed");
                break;
            }
        };
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let permit = sem.clone().acquire_owned().await.expect("semaphore never closed");
        let ctx = ctx.clone();
        inner.spawn(async move {
            process(&ctx, format!("stdin:{n}"), Ok(line.into_bytes()), None).await;
            drop(permit);
        });
    }
    while inner.join_next().await.is_some() {}
}

/// Reads one settled file (bounded, with its `.asc` beside it) and runs it through the
/// ingest flow; a file not read (changed, not regular, unreadable) is logged once and
/// left for the next scan, and so is one whose processing did not complete.
async fn ingest_file(
    ctx: &Ctx,
    c: &scan::Candidate,
    key: String,
    fp: String,
    submitted: &Mutex<HashMap<PathBuf, String>>,
    skips: &Mutex<SkipLog>,
) {
    let path = c.path.clone();
    let limit = ctx.settings.max_bytes;
    // A blocking read: on the blocking pool, not the async threads.
    let (p, beside) = (c.read_path.clone(), path.clone());
    let read = tokio::task::spawn_blocking(move || {
        (crate::input::read_limited(&p, limit), crate::input::read_signature_beside(&beside))
    })
    .await;
    let (read, signature) = match read {
        Ok((r, s)) => (Ok(r), s),
        Err(e) => (Err(e), None),
    };
    use crate::input::InputError;
    let bytes = match read {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e @ InputError::TooLarge { .. })) => {
            Err(Unreadable { reason: DeadLetterReason::TooLarge, detail: e.to_string() })
        }
        Ok(Err(e)) => {
            // Not read (it changed, or cannot be opened): logged once, tried
            // again on the next scan, never dead-lettered.
            let reason = match e {
                InputError::NotRegular { .. } => SkipReason::NotRegular,
                InputError::Changed { .. } => SkipReason::Changed,
                _ => SkipReason::Unreadable,
            };
            skipped(skips, &path, reason, &fp, &e.to_string());
            if let Ok(mut m) = submitted.lock() {
                m.remove(&path);
            }
            return;
        }
        Err(e) => Err(Unreadable { reason: DeadLetterReason::Unreadable, detail: e.to_string() }),
    };
    if let Ok(mut l) = skips.lock() {
        l.clear(&path);
    }
    if process(ctx, key.clone(), bytes, signature).await {
        if let Some(s) = &ctx.files {
            if let Err(e) = s.mark_file(&key, &fp).await {
                crate::warn_event!(crate::telemetry::events::LogEvent::FileNotMarked, error = %e, "processed file not recorded");
            }
        }
    } else if let Ok(mut m) = submitted.lock() {
        // Not done: try again on the next scan.
        m.remove(&path);
    }
}

/// Runs the sources until shutdown (or, with `once`, until everything is processed).
pub async fn run(ingest: Ingest, intake: Intake, settings: SourceSettings, mut shutdown: watch::Receiver<bool>) {
    let ctx = Ctx { ingest, files: intake.files, dead_letters: intake.dead_letters, settings: Arc::new(settings) };
    let sem = Arc::new(Semaphore::new(ctx.settings.max_in_flight));
    // The byte budget of watched files, in KiB permits; a file takes its size (at least
    // one, at most the whole budget: a larger file passes alone).
    let budget_kib = u32::try_from(ctx.settings.max_in_flight_bytes / 1024).unwrap_or(u32::MAX).max(1);
    let bytes = Arc::new(Semaphore::new(budget_kib as usize));
    let mut tasks: JoinSet<()> = JoinSet::new();
    if ctx.settings.stdin {
        tasks.spawn(read_stdin(ctx.clone(), sem.clone(), shutdown.clone()));
    }
    if let Some(dir) = ctx.settings.dir.clone() {
        // path -> fingerprint of files submitted in this run.
        let submitted: Arc<Mutex<HashMap<PathBuf, String>>> = Default::default();
        let skips: Arc<Mutex<SkipLog>> = Default::default();
        let mut settling = Settling::default();
        let mut dir_unreadable = false;
        loop {
            let (d, follow) = (dir.clone(), ctx.settings.follow_symlinks);
            let scanned = match tokio::task::spawn_blocking(move || scan::scan(&d, follow)).await {
                Ok(Ok(s)) => {
                    dir_unreadable = false;
                    s
                }
                Ok(Err(e)) => {
                    // Logged once until the directory can be read again.
                    if !std::mem::replace(&mut dir_unreadable, true) {
                        crate::warn_event!(crate::telemetry::events::LogEvent::IngestDirUnreadable, path = %dir.display(), error = %e, "ingest directory unreadable; tried again on every poll");
                    }
                    scan::Scan::default()
                }
                Err(_) => scan::Scan::default(),
            };
            let present: HashSet<PathBuf> = scanned.files.iter().map(|c| c.path.clone()).collect();
            settling.retain(&present);
            let everything: HashSet<PathBuf> =
                present.iter().cloned().chain(scanned.skipped.iter().map(|k| k.path.clone())).collect();
            if let Ok(mut l) = skips.lock() {
                l.retain(&everything);
            }
            for k in &scanned.skipped {
                skipped(&skips, &k.path, k.reason, &k.detail, &k.detail);
            }
            let (now, now_sys) = (std::time::Instant::now(), std::time::SystemTime::now());
            for c in scanned.files {
                let (path, fp) = (c.path.clone(), c.fingerprint.clone());
                if submitted.lock().map(|m| m.get(&path) == Some(&fp)).unwrap_or(false) {
                    continue;
                }
                // A file still being written is not read yet.
                if !settling.settled(&c, ctx.settings.settle, now, now_sys) {
                    continue;
                }
                let key = path.display().to_string();
                if let Some(s) = &ctx.files {
                    if s.file_seen(&key, &fp).await.unwrap_or(false) {
                        if let Ok(mut m) = submitted.lock() {
                            m.insert(path.clone(), fp);
                        }
                        continue;
                    }
                }
                if let Ok(mut m) = submitted.lock() {
                    m.insert(path.clone(), fp.clone());
                }
                let permit = sem.clone().acquire_owned().await.expect("semaphore never closed");
                let kib = u32::try_from(c.size.div_ceil(1024)).unwrap_or(u32::MAX).clamp(1, budget_kib);
                let size_permit = bytes.clone().acquire_many_owned(kib).await.expect("semaphore never closed");
                let (ctx, submitted, skips) = (ctx.clone(), submitted.clone(), skips.clone());
                tasks.spawn(async move {
                    ingest_file(&ctx, &c, key, fp, &submitted, &skips).await;
                    drop((permit, size_permit));
                });
            }
            // Reap finished tasks without waiting.
            while tasks.try_join_next().is_some() {}
            // With `once`, files still settling are waited for (at most the settle time
            // after their last change).
            if (ctx.settings.once && !settling.pending()) || *shutdown.borrow() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tokio::time::sleep(ctx.settings.poll) => {}
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}
