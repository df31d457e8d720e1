//! `GET /v1/vex/conflicts`: the caller's tenant's open conflicts (records with at least
//! one conflict), with the statuses and counted trust weight on each side, paged.
//!
//! Invariants: the same durable records as `/v1/vex/consensus` (the conflict queue is the
//! index of the same data); tenant-scoped; `age_seconds` counts from the time the
//! record last changed.

use super::auth::{Authorized, Read};
use super::consensus::Page;
use super::error::ApiError;
use super::params::{self, encode_cursor, PageSize};
use super::State;
use crate::domain::consensus::{ConflictReason, ConsensusRecord, Role};
use crate::domain::model::Status;
use crate::ports::RecordQuery;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
struct Side {
    status: Status,
    /// Issuers whose counted statement says this status.
    issuers: Vec<String>,
    /// Sum of their counted weights (ppm).
    weight_ppm: u64,
}

#[derive(Serialize)]
struct ConflictView {
    reason: ConflictReason,
    detail: String,
    issuers: Vec<String>,
    sides: Vec<Side>,
}

#[derive(Serialize)]
struct OpenConflict {
    artifact: String,
    package: String,
    vulnerability: String,
    status: crate::domain::consensus::ConsensusStatus,
    consensus_digest: String,
    changed_at_ms: i64,
    age_seconds: i64,
    conflicts: Vec<ConflictView>,
}

fn sides(r: &ConsensusRecord, statuses: &[Status]) -> Vec<Side> {
    statuses
        .iter()
        .map(|s| {
            let mut issuers: Vec<String> = r
                .statements
                .iter()
                .filter(|e| e.role == Role::Counted && e.status == *s)
                .map(|e| e.issuer.to_string())
                .collect();
            issuers.sort();
            issuers.dedup();
            Side { status: *s, issuers, weight_ppm: r.scores_ppm.get(s).copied().unwrap_or(0) }
        })
        .collect()
}

/// The parameters of `GET /v1/vex/conflicts`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConflictsQuery {
    #[serde(default, deserialize_with = "params::reason")]
    reason: Option<ConflictReason>,
    #[serde(default, deserialize_with = "params::artifact")]
    artifact: Option<String>,
    #[serde(default, deserialize_with = "params::package")]
    package: Option<String>,
    #[serde(default, deserialize_with = "params::page_size")]
    page_size: Option<PageSize>,
    #[serde(default, deserialize_with = "params::page_token")]
    page_token: Option<(String, String)>,
}

/// `GET /v1/vex/conflicts?reason=&artifact=&package=&page_size=&page_token=` (`reason`
/// one of the conflict reasons, else 400).
pub async fn list(
    caller: Authorized<Read>,
    state: web::Data<State>,
    query: web::Query<ConflictsQuery>,
) -> Result<HttpResponse, ApiError> {
    let ConflictsQuery { reason, artifact, package, page_size, page_token } = query.into_inner();
    let limit = PageSize::limit(page_size, state.api.default_page_size, state.api.max_page_size)?;
    let q = RecordQuery {
        tenant: caller.tenant.clone(),
        artifact,
        package,
        conflicted: true,
        conflict_reason: reason,
        after: page_token,
        limit,
        ..Default::default()
    };
    let records = state.stores.records.query_records(&q).await?;
    let next_page_token = (records.len() == limit)
        .then(|| records.last().map(|t| encode_cursor(&t.record.artifact, &t.record.vulnerability)))
        .flatten();
    let now_ms = crate::ports::now_ms();
    let items = records
        .into_iter()
        .map(|t| {
            let r = &t.record;
            OpenConflict {
                artifact: r.artifact.clone(),
                package: r.package.clone(),
                vulnerability: r.vulnerability.clone(),
                status: r.status,
                consensus_digest: r.consensus_digest.clone(),
                changed_at_ms: t.changed_at_ms,
                age_seconds: ((now_ms - t.changed_at_ms) / 1000).max(0),
                conflicts: r
                    .conflicts
                    .iter()
                    .map(|c| ConflictView {
                        reason: c.reason,
                        detail: c.detail.clone(),
                        issuers: c.issuers.clone(),
                        sides: sides(r, &c.statuses),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(HttpResponse::Ok().json(Page { items, next_page_token }))
}
