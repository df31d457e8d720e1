//! Export jobs run inside the service: a supervised actor that writes an export bundle
//! from the store (`list_records`, the observations an OpenVEX snapshot joins, then `export::write_bundle` on the blocking pool), times it into
//! `vex_export_duration_seconds`, counts it in `vex_export_jobs_total{result}` and records
//! the job in the store (`vex_export_jobs`).
//!
//! Invariants: every job, successful or not, is counted and recorded once; a job never
//! overwrites another one's files (each writes under `<dir>/<job id>/`); the actor is
//! restarted by its supervisor if it ever stops, and holds no state a restart loses; job
//! ids are `<start ms>-<16 hex digits from the OS's CSPRNG>`, so instances sharing one
//! store (and one export directory) never collide (64 random bits per millisecond). Each
//! job is a `vex.export.job` span under the span of the request that asked for it.
//! Retention: after each job, the bundles of its tenant beyond the newest
//! `export.keep_per_tenant` or older than `export.max_age_secs` are deleted (their job
//! records stay, with no files), so bundles never pile up without bound.

use crate::crypto::SigningKey;
use crate::domain::timestamp::Timestamp;
use crate::export::{texts_from_store, write_bundle, ExportError, ExportFormat, ExportRequest, StatementTexts};
use crate::ports::{ExportJobRecord, ExportJobStore, JobResult, ObservationStore, RecordStore};
use crate::telemetry::events::ExportJobFinished;
use actix::{Actor, Context, Handler, Message, ResponseFuture, Supervised};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Runs one export job; answers with its record (`result` says whether it succeeded)
/// and, when it failed, why.
#[derive(Message, Debug, Clone)]
#[rtype(result = "ExportJobOutcome")]
pub struct RunExportJob {
    pub format: ExportFormat,
    pub tenant: Option<String>,
    pub since: Option<Timestamp>,
    /// The span of the request that asked for the job (the job's span hangs under it).
    pub span: tracing::Span,
}

/// Why a job failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobFailure {
    /// No record matched and the format cannot be empty (OpenVEX): the request's fault.
    NothingToExport,
    /// The store, a file write or signing failed: the service's fault.
    Failed,
}

/// What a job run answers.
#[derive(Clone, Debug)]
pub struct ExportJobOutcome {
    pub job: ExportJobRecord,
    /// `None` when the job succeeded.
    pub failure: Option<JobFailure>,
}

/// The export-job actor (start it with `actix::Supervisor::start`).
pub struct ExportJobActor {
    /// The records exported.
    records: Arc<dyn RecordStore>,
    /// The observations whose statement text an OpenVEX snapshot joins.
    observations: Arc<dyn ObservationStore>,
    /// Where each job's record goes.
    jobs: Arc<dyn ExportJobStore>,
    dir: PathBuf,
    signer: Option<Arc<SigningKey>>,
    /// `mongodb` or `embedded` (recorded in the manifest).
    source: String,
    retention: Retention,
}

/// How many bundles a tenant keeps and for how long (`export.keep_per_tenant`,
/// `export.max_age_secs`; 0 turns either off).
#[derive(Clone, Copy, Debug)]
pub struct Retention {
    pub keep_per_tenant: usize,
    pub max_age_ms: i64,
}

/// The jobs whose bundles go: `jobs` (id, start ms) of one tenant, the newest
/// `keep` kept (0: all by count), those started `max_age_ms` or longer before `now_ms`
/// deleted (0: none by age).
pub fn bundles_to_prune(jobs: &[(String, i64)], r: Retention, now_ms: i64) -> Vec<String> {
    let mut by_age: Vec<&(String, i64)> = jobs.iter().collect();
    by_age.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    by_age
        .into_iter()
        .enumerate()
        .filter(|(i, (_, started))| {
            (r.keep_per_tenant > 0 && *i >= r.keep_per_tenant) || (r.max_age_ms > 0 && now_ms - started >= r.max_age_ms)
        })
        .map(|(_, (id, _))| id.clone())
        .collect()
}

/// Deletes the bundles of `tenant` that [`bundles_to_prune`] names (a directory already
/// gone is fine); returns how many directories were removed.
async fn prune(jobs: &dyn ExportJobStore, dir: &std::path::Path, tenant: &str, r: Retention) -> usize {
    let Ok(list) = jobs.list_export_jobs(tenant).await else {
        return 0;
    };
    let ids: Vec<(String, i64)> = list.into_iter().map(|j| (j.job_id, j.started_at_ms)).collect();
    let mut removed = 0;
    for id in bundles_to_prune(&ids, r, crate::ports::now_ms()) {
        // Job ids are ours (`<ms>-<hex>`): never a path of more than one component.
        if id.is_empty() || id.contains(['/', '\\']) || id.starts_with('.') {
            continue;
        }
        match tokio::fs::remove_dir_all(dir.join(&id)).await {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                crate::warn_event!(crate::telemetry::events::LogEvent::ExportBundleNotDeleted, job = %id, error = %e, "expired export bundle not deleted");
            }
        }
    }
    if removed > 0 {
        tracing::info!(event = "export_bundles_pruned", tenant, removed, "expired export bundles deleted");
    }
    removed
}

impl ExportJobActor {
    pub fn new(
        records: Arc<dyn RecordStore>,
        observations: Arc<dyn ObservationStore>,
        jobs: Arc<dyn ExportJobStore>,
        dir: PathBuf,
        signer: Option<Arc<SigningKey>>,
        source: &str,
        retention: Retention,
    ) -> Self {
        ExportJobActor { records, observations, jobs, dir, signer, source: source.to_string(), retention }
    }
}

impl Actor for ExportJobActor {
    type Context = Context<Self>;
}

impl Supervised for ExportJobActor {
    fn restarting(&mut self, _: &mut Context<Self>) {
        crate::warn_event!(crate::telemetry::events::LogEvent::ExportJobActorRestarting, "export job actor restarting");
    }
}

/// A fresh job id: `<started_at_ms>-<16 hex digits>` (64 bits from `ring`'s system
/// CSPRNG), unique across instances and restarts, sortable by start time.
pub fn new_job_id(started_at_ms: i64) -> String {
    use ring::rand::SecureRandom;
    let mut bits = [0u8; 8];
    // The OS generator does not fail on a running system; if it ever did, the clock's
    // nanoseconds still separate jobs of one process.
    if ring::rand::SystemRandom::new().fill(&mut bits).is_err() {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        bits = nanos.to_be_bytes();
    }
    format!("{started_at_ms}-{}", bits.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

impl Handler<RunExportJob> for ExportJobActor {
    type Result = ResponseFuture<ExportJobOutcome>;

    fn handle(&mut self, msg: RunExportJob, _: &mut Context<Self>) -> Self::Result {
        let started_at_ms = crate::ports::now_ms();
        let job_id = new_job_id(started_at_ms);
        let manifest = self.dir.join(&job_id).join("manifest.json");
        let req = ExportRequest {
            format: msg.format,
            manifest: manifest.clone(),
            out_dir: None,
            tenant: msg.tenant.clone(),
            since: msg.since,
            source: self.source.clone(),
            created_at: None,
        };
        let (store, observations, jobs, signer) =
            (self.records.clone(), self.observations.clone(), self.jobs.clone(), self.signer.clone());
        let (dir, retention) = (self.dir.clone(), self.retention);
        let span = tracing::info_span!(
            parent: &msg.span,
            "vex.export.job",
            vex.job_id = job_id.as_str(),
            vex.format = msg.format.as_str(),
            vex.tenant = msg.tenant.as_deref().map(crate::telemetry::trace::bounded),
            vex.records = tracing::field::Empty,
            vex.outcome = tracing::field::Empty,
        );
        let job_span = span.clone();
        Box::pin(tracing::Instrument::instrument(
            async move {
                let t = Instant::now();
                // The store read is async; encoding, hashing and file writes block: they run on
                // the blocking pool, not on the async threads.
                let outcome = match store.list_records(req.tenant.as_deref(), req.since.map(|t| t.unix_millis())).await
                {
                    Ok(records) => {
                        let texts = match req.format {
                            ExportFormat::Openvex => texts_from_store(&*observations, &records).await,
                            ExportFormat::Json | ExportFormat::Ndjson => Ok(StatementTexts::new()),
                        };
                        match texts {
                            Ok(texts) => {
                                let r = req.clone();
                                tokio::task::spawn_blocking(move || {
                                    write_bundle(&records, &texts, &r, signer.as_deref())
                                })
                                .await
                                .unwrap_or_else(|e| Err(ExportError::io(&req.manifest, std::io::Error::other(e))))
                            }
                            Err(e) => Err(e.into()),
                        }
                    }
                    Err(e) => Err(e.into()),
                };
                let duration = t.elapsed();
                let error = outcome.as_ref().err().map(|e| e.to_string());
                let failure = outcome.as_ref().err().map(|e| match e {
                    ExportError::Empty => JobFailure::NothingToExport,
                    _ => JobFailure::Failed,
                });
                let (bundle_id, records) = match &outcome {
                    Ok(s) => (Some(s.bundle_id.clone()), s.counts.records),
                    Err(_) => (None, 0),
                };
                ExportJobFinished {
                    job_id: &job_id,
                    format: msg.format.as_str(),
                    duration,
                    error: error.as_deref(),
                    client_error: failure == Some(JobFailure::NothingToExport),
                    records: records as usize,
                }
                .emit();
                let job = ExportJobRecord {
                    job_id,
                    format: msg.format,
                    tenant: msg.tenant,
                    since_ms: msg.since.map(|t| t.unix_millis()),
                    started_at_ms,
                    duration_ms: duration.as_millis() as u64,
                    result: if error.is_none() { JobResult::Success } else { JobResult::Failure },
                    error,
                    manifest: outcome.is_ok().then(|| manifest.display().to_string()),
                    bundle_id,
                    records,
                };
                if let Err(e) = jobs.put_export_job(&job).await {
                    crate::warn_event!(crate::telemetry::events::LogEvent::ExportJobNotRecorded, job = %job.job_id, error = %e, "export job record not stored");
                }
                if let Some(t) = &job.tenant {
                    prune(jobs.as_ref(), &dir, t, retention).await;
                }
                job_span.record("vex.records", job.records);
                job_span.record("vex.outcome", job.result.as_str());
                ExportJobOutcome { job, failure }
            },
            span,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_of_the_same_millisecond_do_not_collide() {
        // Two instances (or a restarted one) starting jobs in the same millisecond.
        let ids: std::collections::BTreeSet<String> = (0..10_000).map(|_| new_job_id(1_700_000_000_000)).collect();
        assert_eq!(ids.len(), 10_000, "every id is distinct");
        for id in ids.iter().take(3) {
            let (ms, random) = id.split_once('-').unwrap();
            assert_eq!(ms, "1700000000000", "the id starts with the start time");
            assert!(random.len() == 16 && random.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
    }

    #[test]
    fn retention_keeps_the_newest_and_the_young() {
        let day = 86_400_000;
        let now = 100 * day;
        let jobs: Vec<(String, i64)> = (0..6).map(|i| (format!("j{i}"), now - i * day)).collect();
        let r = |keep, max_age_ms| Retention { keep_per_tenant: keep, max_age_ms };
        assert_eq!(bundles_to_prune(&jobs, r(4, 0), now), ["j4", "j5"], "beyond the newest 4");
        assert_eq!(bundles_to_prune(&jobs, r(0, 3 * day), now), ["j3", "j4", "j5"], "3 days or older");
        assert_eq!(bundles_to_prune(&jobs, r(5, 2 * day), now), ["j2", "j3", "j4", "j5"], "either rule");
        assert!(bundles_to_prune(&jobs, r(0, 0), now).is_empty(), "both off");
        let mut shuffled = jobs.clone();
        shuffled.reverse();
        assert_eq!(bundles_to_prune(&shuffled, r(4, 0), now), ["j4", "j5"], "by start time, not list order");
    }
}
