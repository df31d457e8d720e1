//! HTTP server: `/health/liveness`, `/health/readiness`, `/metrics`, `/status`.
//!
//! Invariants: liveness answers 200 whenever the process serves requests; readiness is
//! 200 only when the store answers a ping and, in Kafka mode, the broker answers a
//! metadata request (each check bounded by a timeout); no handler blocks the server.

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
) -> std::io::Result<(actix_web::dev::Server, std::net::SocketAddr)> {
    let state = web::Data::new(State { store, broker, status: status_info });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/health/liveness", web::get().to(liveness))
            .route("/health/readiness", web::get().to(readiness))
            .route("/metrics", web::get().to(metrics_text))
            .route("/status", web::get().to(status))
    })
    .workers(2)
    .disable_signals()
    .shutdown_timeout(2)
    .bind(listen)?;
    let addr = server.addrs().first().copied().ok_or_else(|| std::io::Error::other("no address bound"))?;
    Ok((server.run(), addr))
}
