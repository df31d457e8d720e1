//! `POST /v1/vex/export` (run an export job), `GET /v1/vex/exports` (the tenant's jobs),
//! `GET /v1/vex/exports/{id}` (job state, manifest, files) and
//! `GET /v1/vex/exports/{id}/files/{name}` (download one file of the bundle).
//!
//! Invariants: a job exports only the caller's tenant and is visible only to it (another
//! tenant's job id answers 404, as an unknown one); a download serves only a plain file
//! name directly inside the job's own directory (no path separators, no dot files), so
//! no request reaches outside the export directory.

use super::auth::{Authorized, Export};
use super::error::{ApiError, ErrorCode};
use super::limits::Operation;
use super::params::{self, PageSize};
use super::State;
use crate::actors::export_job::{ExportJobOutcome, JobFailure, RunExportJob};
use crate::domain::timestamp::Timestamp;
use crate::export::ExportFormat;
use crate::ports::ExportJobRecord;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use std::path::PathBuf;

/// Body of `POST /v1/vex/export`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    /// `json` (default), `ndjson` or `openvex`.
    #[serde(default)]
    format: Option<String>,
    /// Must be the caller's tenant when given (the tenant comes from the header/token).
    tenant: Option<String>,
    /// RFC 3339: only records changed at or after it.
    since: Option<String>,
}

/// A job as the API shows it: the record without the server-side manifest path.
#[derive(Serialize)]
struct JobView {
    job_id: String,
    format: crate::export::ExportFormat,
    tenant: Option<String>,
    since_ms: Option<i64>,
    started_at_ms: i64,
    duration_ms: u64,
    result: crate::ports::JobResult,
    error: Option<String>,
    bundle_id: Option<String>,
    records: u64,
    /// The bundle's manifest (job detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest: Option<serde_json::Value>,
    /// Files of the bundle, for `/files/{name}` (job detail only).
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Vec<String>>,
}

impl JobView {
    fn of(j: ExportJobRecord) -> JobView {
        JobView {
            job_id: j.job_id,
            format: j.format,
            tenant: j.tenant,
            since_ms: j.since_ms,
            started_at_ms: j.started_at_ms,
            duration_ms: j.duration_ms,
            result: j.result,
            error: j.error,
            bundle_id: j.bundle_id,
            records: j.records,
            manifest: None,
            files: None,
        }
    }
}

/// Runs an export job for the caller's tenant (at most `api.export_jobs_per_minute` per
/// tenant, 429 above): 200 with the job when it succeeded, 422
/// (`nothing_to_export`, the job in `job`) when no record matches a format that cannot be
/// empty, 500 (`export_failed`, the job in `job`) when it failed otherwise, 503 when no
/// export actor runs.
pub async fn run(
    caller: Authorized<Export>,
    state: web::Data<State>,
    body: web::Json<ExportBody>,
) -> Result<HttpResponse, ApiError> {
    let Some(addr) = state.export.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "export jobs are not enabled",
        ));
    };
    let format = match body.format.as_deref().unwrap_or("json") {
        "json" => ExportFormat::Json,
        "ndjson" => ExportFormat::Ndjson,
        "openvex" => ExportFormat::Openvex,
        other => return Err(ApiError::param("format", format!("{other:?} is not json, ndjson or openvex"))),
    };
    if let Some(t) = &body.tenant {
        if *t != caller.tenant {
            return Err(ApiError::forbidden(
                ErrorCode::TenantForbidden,
                format!("tenant: {t:?} is not the caller's tenant ({:?})", caller.tenant),
            ));
        }
    }
    let since = body.since.as_deref().map(Timestamp::parse).transpose().map_err(|e| ApiError::param("since", e))?;
    let per_minute = state.api.export_jobs_per_minute;
    state.rates.admit(Operation::ExportJob, &caller.tenant, per_minute, std::time::Instant::now()).map_err(|wait| {
        ApiError::rate_limited(
            format!("tenant {} ran {per_minute} export jobs this minute (api.export_jobs_per_minute)", caller.tenant),
            wait,
        )
    })?;
    match addr
        .send(RunExportJob { format, tenant: Some(caller.tenant.clone()), since, span: tracing::Span::current() })
        .await
    {
        Ok(ExportJobOutcome { job, failure: None }) => Ok(HttpResponse::Ok().json(JobView::of(job))),
        Ok(ExportJobOutcome { job, failure: Some(failure) }) => {
            let (status, code) = match failure {
                JobFailure::NothingToExport => (StatusCode::UNPROCESSABLE_ENTITY, ErrorCode::NothingToExport),
                JobFailure::Failed => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::ExportFailed),
            };
            let message = format!("export job {} failed: {}", job.job_id, job.error.clone().unwrap_or_default());
            let mut body = super::error::body(code, &message);
            body["job"] = serde_json::to_value(JobView::of(job)).unwrap_or_default();
            Ok(HttpResponse::build(status).json(body))
        }
        Err(e) => {
            Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, format!("export actor: {e}")))
        }
    }
}

/// The parameters of `GET /v1/vex/exports`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default, deserialize_with = "params::page_size")]
    page_size: Option<PageSize>,
}

/// `GET /v1/vex/exports?page_size=`: the tenant's jobs, newest first.
pub async fn list(
    caller: Authorized<Export>,
    state: web::Data<State>,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = PageSize::limit(query.into_inner().page_size, state.api.default_page_size, state.api.max_page_size)?;
    let mut jobs = state.stores.export_jobs.list_export_jobs(&caller.tenant).await?;
    jobs.truncate(limit);
    let items: Vec<JobView> = jobs.into_iter().map(JobView::of).collect();
    Ok(HttpResponse::Ok().json(serde_json::json!({ "items": items })))
}

/// A plain file or job name: no separators, no leading dot, a small alphabet.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// The caller's job `id` and its directory, or 404.
async fn job_of(state: &State, tenant: &str, id: &str) -> Result<(ExportJobRecord, PathBuf), ApiError> {
    let missing = || ApiError::not_found(format!("no export job {id:?}"));
    if !plain_name(id) {
        return Err(missing());
    }
    match state.stores.export_jobs.get_export_job(id).await? {
        Some(j) if j.tenant.as_deref() == Some(tenant) => {
            let dir = state.export_dir.join(&j.job_id);
            Ok((j, dir))
        }
        _ => Err(missing()),
    }
}

/// `GET /v1/vex/exports/{id}`.
pub async fn get(
    caller: Authorized<Export>,
    state: web::Data<State>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (job, dir) = job_of(&state, &caller.tenant, &path).await?;
    let mut view = JobView::of(job);
    let manifest = tokio::fs::read(dir.join("manifest.json")).await.ok();
    view.manifest = manifest.and_then(|m| serde_json::from_slice(&m).ok());
    let mut files = Vec::new();
    if let Ok(mut rd) = tokio::fs::read_dir(&dir).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            let name = e.file_name().to_string_lossy().into_owned();
            if plain_name(&name) && e.file_type().await.is_ok_and(|t| t.is_file()) {
                files.push(name);
            }
        }
    }
    files.sort();
    view.files = Some(files);
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /v1/vex/exports/{id}/files/{name}`.
pub async fn download(
    caller: Authorized<Export>,
    state: web::Data<State>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (id, name) = path.into_inner();
    let (_, dir) = job_of(&state, &caller.tenant, &id).await?;
    if !plain_name(&name) {
        return Err(ApiError::not_found(format!("no file {name:?} in export job {id:?}")));
    }
    let bytes = tokio::fs::read(dir.join(&name))
        .await
        .map_err(|_| ApiError::not_found(format!("no file {name:?} in export job {id:?}")))?;
    let content_type = if name.ends_with(".json") {
        "application/json"
    } else if name.ends_with(".ndjson") {
        "application/x-ndjson"
    } else {
        "application/octet-stream"
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Content-Disposition", format!("attachment; filename=\"{name}\"")))
        .body(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_plain_names_are_served() {
        for ok in ["manifest.json", "records.ndjson", "1764500000000-0"] {
            assert!(super::plain_name(ok), "{ok}");
        }
        for bad in ["", "..", ".hidden", "../x", "a/b", "a\\b", "%2e%2e"] {
            assert!(!super::plain_name(bad), "{bad}");
        }
    }
}
