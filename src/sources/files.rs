//! The embedded sources: a watched directory of `*.json` documents and NDJSON documents
//! on stdin, fed to the pipeline (the in-process observation channel is the registry's
//! mailbox: observations go straight from the ingest step to the artifact actors).
//! Each document is one `vex.document` span (a trace root) from intake until its
//! observations are durable or it is dead-lettered.

use crate::actors::messages::IngestOutcome;
use crate::actors::Pipeline;
use crate::domain::codes::DeadLetterReason;
use crate::domain::model::{IngestContext, Provenance};
use crate::stores::embedded::{DeadLetter, EmbeddedStore};
use crate::telemetry::events::{DeadLettered, DocumentIngested};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

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
    pipeline: Pipeline,
    seen: Option<EmbeddedStore>,
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

/// Processes one document in its `vex.document` span; `true` when it is fully handled
/// (durable or dead-lettered).
async fn process(ctx: &Ctx, name: String, bytes: Result<Vec<u8>, (DeadLetterReason, String)>) -> bool {
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
    process_document(ctx, name, bytes).instrument(span).await
}

async fn process_document(ctx: &Ctx, name: String, bytes: Result<Vec<u8>, (DeadLetterReason, String)>) -> bool {
    use tracing::Instrument;
    let span = tracing::Span::current();
    let arrived = crate::ports::now_ms();
    // A file or a stdin line names no correlation id: the service mints one per document.
    let correlation = crate::telemetry::correlation::mint();
    let outcome = match bytes {
        Ok(bytes) => {
            let ictx = IngestContext {
                tenant: Some(ctx.settings.tenant.clone()),
                provenance: Provenance {
                    source: Some(name.clone()),
                    correlation_id: Some(correlation.clone()),
                    received_at_ms: Some(arrived),
                    sequence: None,
                },
                ..Default::default()
            };
            match ctx.pipeline.normalise(name.clone(), bytes, ictx, ctx.settings.max_bytes).await {
                Ok(o) => o,
                Err(e) => {
                    crate::error_event!(crate::telemetry::events::LogEvent::PipelineUnavailable, error = %e, "document not processed");
                    return false;
                }
            }
        }
        Err((reason, detail)) => IngestOutcome::DeadLetter { reason, detail },
    };
    match outcome {
        IngestOutcome::DeadLetter { reason, detail } => {
            span.record("vex.outcome", "dead_lettered");
            span.record("vex.reason", reason.as_str());
            DeadLettered { source: &name, correlation_id: Some(&correlation), reason, detail: &detail }.emit();
            if let Some(s) = &ctx.seen {
                let d = DeadLetter {
                    source: name.clone(),
                    reason,
                    detail,
                    at_ms: arrived,
                    correlation_id: Some(correlation.clone()),
                };
                if let Err(e) = s.put_dead_letter(&d).await {
                    crate::warn_event!(crate::telemetry::events::LogEvent::DeadLetterNotStored, error = %e, "dead letter not stored");
                }
            }
            true
        }
        IngestOutcome::Observations { observations, format, diagnostics, .. } => {
            let n = observations.len();
            span.record("vex.observations", n);
            let route = tracing::info_span!("vex.route", vex.observations = n);
            match ctx.pipeline.route_all_durable(observations).instrument(route).await {
                Ok(true) => {
                    span.record("vex.outcome", "ingested");
                    DocumentIngested {
                        source: &name,
                        correlation_id: Some(&correlation),
                        format,
                        observations: n,
                        diagnostics,
                    }
                    .emit();
                    true
                }
                Ok(false) | Err(_) => {
                    span.record("vex.outcome", "not_durable");
                    false
                }
            }
        }
    }
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
pub async fn run(
    pipeline: Pipeline,
    seen: Option<EmbeddedStore>,
    settings: SourceSettings,
    mut shutdown: watch::Receiver<bool>,
) {
    let ctx = Ctx { pipeline, seen, settings: Arc::new(settings) };
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
                    process(&ctx, format!("stdin:{n}"), Ok(line.into_bytes())).await;
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
                if let Some(s) = &ctx.seen {
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
                    let read = tokio::task::spawn_blocking(move || crate::input::read_limited(&p, limit)).await;
                    let bytes = match read {
                        Ok(r) => r.map_err(|e| match e {
                            crate::input::InputError::TooLarge { .. } => (DeadLetterReason::TooLarge, e.to_string()),
                            crate::input::InputError::Io { .. } => (DeadLetterReason::Unreadable, e.to_string()),
                        }),
                        Err(e) => Err((DeadLetterReason::Unreadable, e.to_string())),
                    };
                    if process(&ctx, key.clone(), bytes).await {
                        if let Some(s) = &ctx.seen {
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
