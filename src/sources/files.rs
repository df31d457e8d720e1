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

use crate::domain::codes::DeadLetterReason;
use crate::domain::model::{IngestContext, Provenance};
use crate::ingest::{Document, Ingest, Unreadable};
use crate::ports::{DeadLetterSink, ProcessedFiles};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
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
    pub tenant: String,
    pub max_bytes: usize,
    pub max_in_flight: usize,
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

/// `size:mtime_ns` of a file: a changed file is processed again.
fn fingerprint(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}:{mtime}", meta.len())
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

fn scan(dir: &std::path::Path) -> Vec<PathBuf> {
    match crate::input::expand(&[dir.to_path_buf()]) {
        Ok(files) => files,
        Err(e) => {
            crate::warn_event!(crate::telemetry::events::LogEvent::IngestDirUnreadable, error = %e, "ingest directory unreadable");
            Vec::new()
        }
    }
}

/// Runs the sources until shutdown (or, with `once`, until everything is processed).
pub async fn run(ingest: Ingest, intake: Intake, settings: SourceSettings, mut shutdown: watch::Receiver<bool>) {
    let ctx = Ctx { ingest, files: intake.files, dead_letters: intake.dead_letters, settings: Arc::new(settings) };
    let sem = Arc::new(Semaphore::new(ctx.settings.max_in_flight));
    let mut tasks: JoinSet<()> = JoinSet::new();
    if ctx.settings.stdin {
        let (ctx, sem, mut shutdown) = (ctx.clone(), sem.clone(), shutdown.clone());
        tasks.spawn(async move {
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
        });
    }
    if let Some(dir) = ctx.settings.dir.clone() {
        // path -> fingerprint of files submitted in this run.
        let submitted: Arc<std::sync::Mutex<HashMap<PathBuf, String>>> = Default::default();
        loop {
            let d = dir.clone();
            let scanned = tokio::task::spawn_blocking(move || {
                scan(&d).into_iter().filter_map(|p| std::fs::metadata(&p).ok().map(|m| (p, m))).collect::<Vec<_>>()
            })
            .await
            .unwrap_or_default();
            for (path, meta) in scanned {
                let fp = fingerprint(&meta);
                if submitted.lock().map(|m| m.get(&path) == Some(&fp)).unwrap_or(false) {
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
                let (ctx, submitted) = (ctx.clone(), submitted.clone());
                tasks.spawn(async move {
                    let limit = ctx.settings.max_bytes;
                    // A blocking read: on the blocking pool, not the async threads.
                    let p = path.clone();
                    let read = tokio::task::spawn_blocking(move || {
                        (crate::input::read_limited(&p, limit), crate::input::read_signature_beside(&p))
                    })
                    .await;
                    let (read, signature) = match read {
                        Ok((r, s)) => (Ok(r), s),
                        Err(e) => (Err(e), None),
                    };
                    let bytes = match read {
                        Ok(r) => r.map_err(|e| match e {
                            crate::input::InputError::TooLarge { .. } => {
                                Unreadable { reason: DeadLetterReason::TooLarge, detail: e.to_string() }
                            }
                            crate::input::InputError::Io { .. } => {
                                Unreadable { reason: DeadLetterReason::Unreadable, detail: e.to_string() }
                            }
                        }),
                        Err(e) => Err(Unreadable { reason: DeadLetterReason::Unreadable, detail: e.to_string() }),
                    };
                    if process(&ctx, key.clone(), bytes, signature).await {
                        if let Some(s) = &ctx.files {
                            if let Err(e) = s.mark_file(&key, &fp).await {
                                crate::warn_event!(crate::telemetry::events::LogEvent::FileNotMarked, error = %e, "processed file not recorded");
                            }
                        }
                    } else if let Ok(mut m) = submitted.lock() {
                        // Not done: try again on the next scan.
                        m.remove(&path);
                    }
                    drop(permit);
                });
            }
            // Reap finished tasks without waiting.
            while tasks.try_join_next().is_some() {}
            if ctx.settings.once || *shutdown.borrow() {
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
