//! HTTP server: `/health/liveness`, `/health/readiness`, `/metrics`, `/status`, and
//! `POST /v1/vex/export` (runs an export job on the export-job actor).
//!
//! Invariants: liveness answers 200 whenever the process serves requests; readiness is
//! 200 only when the store answers a ping and, in Kafka mode, the broker answers a
//! metadata request (each check bounded by a timeout); no handler blocks the server.

use crate::actors::export_job::{ExportJobActor, RunExportJob};
use crate::domain::timestamp::Timestamp;
use crate::export::ExportFormat;
use crate::ports::ConsensusStore;
use crate::telemetry::metrics;
use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

/// An extra readiness check (e.g. Kafka broker metadata): `Err(reason)` when not ready.
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// What `/status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct StatusInfo {
    pub version: &'static str,
    pub commit: Option<&'static str>,
    /// `kafka` or `embedded`.
    pub mode: &'static str,
    /// `mongodb` or `embedded`.
    pub store: &'static str,
    pub feature_flags: std::collections::BTreeMap<&'static str, bool>,
}

#[derive(Clone)]
struct State {
    store: Arc<dyn ConsensusStore>,
    broker: Option<ReadinessCheck>,
    status: StatusInfo,
    export: Option<actix::Addr<ExportJobActor>>,
}

/// Body of `POST /v1/vex/export`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExportBody {
    /// `json` (default), `ndjson` or `openvex`.
    #[serde(default)]
    format: Option<String>,
    tenant: Option<String>,
    /// RFC 3339: only records changed at or after it.
    since: Option<String>,
}

fn bad_request(reason: String) -> HttpResponse {
    HttpResponse::BadRequest().json(serde_json::json!({ "error": reason }))
}

/// Runs an export job: 200 with the job record when it succeeded, 500 with the job record
/// (its `error`) when it failed, 400 on a bad body, 503 when no export job actor runs.
async fn export(state: web::Data<State>, body: web::Json<ExportBody>) -> HttpResponse {
    let Some(addr) = state.export.clone() else {
        return HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": "export jobs are not enabled" }));
    };
    let format = match body.format.as_deref().unwrap_or("json") {
        "json" => ExportFormat::Json,
        "ndjson" => ExportFormat::Ndjson,
        "openvex" => ExportFormat::Openvex,
        other => return bad_request(format!("unknown format {other:?}; expected json, ndjson or openvex")),
    };
    let since = match body.since.as_deref().map(Timestamp::parse).transpose() {
        Ok(s) => s,
        Err(e) => return bad_request(format!("since: {e}")),
    };
    match addr.send(RunExportJob { format, tenant: body.tenant.clone(), since }).await {
        Ok(job) if job.result == "success" => HttpResponse::Ok().json(job),
        Ok(job) => HttpResponse::InternalServerError().json(job),
        Err(e) => HttpResponse::ServiceUnavailable().json(serde_json::json!({ "error": format!("export actor: {e}") })),
    }
}

async fn liveness() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readiness(state: web::Data<State>) -> HttpResponse {
    let store = match tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("store ping timed out".to_string()),
    };
    let broker = match &state.broker {
        None => None,
        Some(check) => Some(match tokio::time::timeout(Duration::from_secs(3), check()).await {
            Ok(r) => r,
            Err(_) => Err("broker metadata timed out".to_string()),
        }),
    };
    let ok = store.is_ok() && broker.as_ref().is_none_or_ok();
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not_ready" },
        "store": store.err().unwrap_or_else(|| "ok".into()),
        "broker": broker.map(|b| b.err().unwrap_or_else(|| "ok".into())),
    });
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

trait OptResult {
    fn is_none_or_ok(&self) -> bool;
}

impl OptResult for Option<&Result<(), String>> {
    fn is_none_or_ok(&self) -> bool {
        self.map_or(true, |r| r.is_ok())
    }
}

async fn metrics_text() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics().encode())
}

async fn status(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(&state.status)
}

/// Binds `listen` and returns the server (to spawn) and the bound address.
pub fn serve(
    listen: &str,
    store: Arc<dyn ConsensusStore>,
    broker: Option<ReadinessCheck>,
    status_info: StatusInfo,
    export_jobs: Option<actix::Addr<ExportJobActor>>,
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let state = web::Data::new(State { store, broker, status: status_info, export: export_jobs });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/health/liveness", web::get().to(liveness))
            .route("/health/readiness", web::get().to(readiness))
            .route("/metrics", web::get().to(metrics_text))
            .route("/status", web::get().to(status))
            .route("/v1/vex/export", web::post().to(export))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(listen)?;
    let addr = server.addrs().first().copied().ok_or_else(|| std::io::Error::other("no address bound"))?;
    Ok((server.run(), addr))
}
