//! `/health/liveness`, `/health/readiness`, `/metrics`, `/status`: open without auth.
//!
//! Invariants: liveness answers 200 whenever the process serves requests; readiness is
//! 200 only when the store answers a ping and, in Kafka mode, the broker answers a
//! metadata request (each check bounded by a timeout); no handler blocks the server.

use super::State;
use crate::telemetry::metrics;
use actix_web::{web, HttpResponse};
use std::time::Duration;

pub async fn liveness() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

pub async fn readiness(state: web::Data<State>) -> HttpResponse {
    let store = match tokio::time::timeout(Duration::from_secs(2), state.stores.admin.ping()).await {
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
    let ok = store.is_ok() && broker.as_ref().map_or(true, |r| r.is_ok());
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

pub async fn metrics_text() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(metrics().encode())
}

pub async fn status(state: web::Data<State>) -> HttpResponse {
    HttpResponse::Ok().json(&state.status)
}
