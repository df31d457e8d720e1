//! `/v1/vex/consensus`, `/v1/vex/consensus/explain`, `/v1/vex/consensus/history`: the
//! durable consensus records of the caller's tenant.
//!
//! Invariants: every read is scoped to the caller's tenant (the store query carries it);
//! artifact parameters are normalised with the domain's key parser, so every spelling of
//! one purl reads the same pair; reads serve what the store holds (durable), never an
//! actor's unwritten state; `as_of` and `since` compare the time a record was written. A
//! pair the store holds no record of, whose artifact some stored statements apply to (a
//! scanner's concrete package), is answered with the record derived from them on request,
//! marked by the `vexlens-derived: true` header, and never stored.

use super::auth::{Authorized, Read};
use super::error::ApiError;
use super::params::{self, encode_cursor, PageSize};
use super::State;
use crate::domain::consensus::{ConsensusStatus, PackageState, PairKey};
use crate::ports::{RecordQuery, TimedRecord};
use actix_web::http::header::ContentType;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

/// A page of records.
#[derive(Serialize)]
pub struct Page<T: Serialize> {
    pub items: Vec<T>,
    /// Present when more may follow: pass it as `page_token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Builds a page from a store result of at most `limit` items.
pub fn page_of(items: Vec<TimedRecord>, limit: usize) -> Page<TimedRecord> {
    let next_page_token = (items.len() == limit)
        .then(|| items.last().map(|t| encode_cursor(&t.record.artifact, &t.record.vulnerability)))
        .flatten();
    Page { items, next_page_token }
}

/// The parameters of `GET /v1/vex/consensus`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsensusQuery {
    #[serde(default, deserialize_with = "params::artifact")]
    artifact: Option<String>,
    #[serde(default, deserialize_with = "params::vulnerability")]
    vulnerability: Option<String>,
    #[serde(default, deserialize_with = "params::package")]
    package: Option<String>,
    #[serde(default, deserialize_with = "params::status")]
    status: Option<ConsensusStatus>,
    #[serde(default, deserialize_with = "params::issuer")]
    issuer: Option<String>,
    #[serde(default, deserialize_with = "params::since")]
    since: Option<i64>,
    #[serde(default, deserialize_with = "params::page_size")]
    page_size: Option<PageSize>,
    #[serde(default, deserialize_with = "params::page_token")]
    page_token: Option<(String, String)>,
}

impl ConsensusQuery {
    /// `artifact` and `vulnerability` and nothing else: one pair's record, not a page.
    fn names_one_pair(&self) -> bool {
        self.artifact.is_some()
            && self.vulnerability.is_some()
            && self.package.is_none()
            && self.status.is_none()
            && self.issuer.is_none()
            && self.since.is_none()
            && self.page_size.is_none()
            && self.page_token.is_none()
    }
}

/// The parameters of `GET /v1/vex/consensus/explain`: one pair.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairQuery {
    #[serde(default, deserialize_with = "params::artifact")]
    artifact: Option<String>,
    #[serde(default, deserialize_with = "params::vulnerability")]
    vulnerability: Option<String>,
}

/// The parameters of `GET /v1/vex/consensus/history`: one pair, and a time.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    #[serde(default, deserialize_with = "params::artifact")]
    artifact: Option<String>,
    #[serde(default, deserialize_with = "params::vulnerability")]
    vulnerability: Option<String>,
    #[serde(default, deserialize_with = "params::as_of")]
    as_of: Option<i64>,
}

/// The pair `artifact` and `vulnerability` name (both required).
fn pair_of(caller_tenant: &str, artifact: Option<String>, vulnerability: Option<String>) -> Result<PairKey, ApiError> {
    Ok(PairKey {
        tenant: caller_tenant.to_string(),
        artifact: artifact.ok_or_else(|| ApiError::param("artifact", "required"))?,
        vulnerability: vulnerability.ok_or_else(|| ApiError::param("vulnerability", "required"))?,
    })
}

/// The current record of a pair, with the time it was written.
async fn current(state: &State, pair: &PairKey) -> Result<TimedRecord, ApiError> {
    state.stores.records.query_records(&RecordQuery::pair(pair)).await?.pop().ok_or_else(|| no_record(pair))
}

fn no_record(pair: &PairKey) -> ApiError {
    ApiError::not_found(format!("no consensus for {} / {}", pair.artifact, pair.vulnerability))
}

/// `GET /v1/vex/consensus`: with `artifact` and `vulnerability` only, that pair's record;
/// otherwise a page of records filtered by artifact, package, vulnerability, status,
/// issuer and since.
pub async fn get(
    caller: Authorized<Read>,
    state: web::Data<State>,
    query: web::Query<ConsensusQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    if q.names_one_pair() {
        // The stored canonical JSON as it is (no decode and re-encode on this path).
        let pair = pair_of(&caller.tenant, q.artifact, q.vulnerability)?;
        if let Some(json) = state.stores.records.current_record_json(&pair).await? {
            return Ok(HttpResponse::Ok().content_type(ContentType::json()).body(web::Bytes::from_owner(json)));
        }
        return derived(&state, &pair).await;
    }
    let limit = PageSize::limit(q.page_size, state.api.default_page_size, state.api.max_page_size)?;
    let rq = RecordQuery {
        tenant: caller.tenant.clone(),
        artifact: q.artifact,
        package: q.package,
        vulnerability: q.vulnerability,
        status: q.status,
        issuer: q.issuer,
        since_ms: q.since,
        after: q.page_token,
        limit,
        ..Default::default()
    };
    let items = state.stores.records.query_records(&rq).await?;
    Ok(HttpResponse::Ok().json(page_of(items, limit)))
}

/// Response header marking a record computed on request (not stored): the consensus of
/// every statement that applies to an artifact no one stated exactly.
pub const DERIVED_HEADER: &str = "vexlens-derived";

/// The record of a pair the store holds none of, derived from the statements of its
/// package that apply to its artifact (a scanner's concrete package: version-less claims,
/// ranges containing its version, its platform's). 404 when none applies.
async fn derived(state: &State, pair: &PairKey) -> Result<HttpResponse, ApiError> {
    let package = crate::domain::keys::parse_key(&pair.artifact).map_err(|e| ApiError::param("artifact", e))?.package;
    let stored = state.stores.observations.observations_for_package(&pair.tenant, &package).await?;
    let (st, _) = PackageState::rebuild(stored);
    let record = st
        .evaluate(pair, &state.policy_for(&pair.tenant), false)
        .map_err(|e| ApiError::from(crate::ports::StoreError::Rejected(e.to_string())))?
        .ok_or_else(|| no_record(pair))?;
    let json =
        record.into_canonical_json().map_err(|e| ApiError::from(crate::ports::StoreError::Rejected(e.to_string())))?;
    Ok(HttpResponse::Ok().content_type(ContentType::json()).insert_header((DERIVED_HEADER, "true")).body(json))
}

/// The explain trace of a pair.
#[derive(Serialize)]
struct Explained {
    #[serde(flatten)]
    record: TimedRecord,
    /// The decision, step by step, recomputed from the pair's stored observations with
    /// the policy this instance runs.
    trace: Vec<String>,
    /// Whether that recomputation gives the stored record (false while a change is
    /// being applied, or after a policy change not yet recomputed).
    trace_matches_record: bool,
}

/// `GET /v1/vex/consensus/explain?artifact=&vulnerability=`: the record (every statement
/// with its weight factors, role and reason, the mode and policy version; each statement's
/// observation text joined under `observation`) and the trace.
pub async fn explain(
    caller: Authorized<Read>,
    state: web::Data<State>,
    query: web::Query<PairQuery>,
) -> Result<HttpResponse, ApiError> {
    let PairQuery { artifact, vulnerability } = query.into_inner();
    let pair = pair_of(&caller.tenant, artifact, vulnerability)?;
    let mut record = current(&state, &pair).await?;
    let observations = state.stores.observations.observations_for_package(&pair.tenant, &record.record.package).await?;
    // Each statement's observation joined back under `observation` (the stored record is
    // this without them).
    let texts: std::collections::HashMap<&str, &crate::domain::model::Observation> =
        observations.iter().map(|o| (&*o.id, o)).collect();
    for s in &mut record.record.statements {
        s.observation = texts.get(&*s.observation_id).map(|o| crate::domain::consensus::StatementText::from(*o));
    }
    drop(texts);
    let (st, errors) = PackageState::rebuild(observations);
    if let Some(e) = errors.into_iter().next() {
        return Err(ApiError::from(crate::ports::StoreError::Rejected(e.to_string())));
    }
    let recomputed = st
        .evaluate(&pair, &state.policy_for(&pair.tenant), true)
        .map_err(|e| ApiError::from(crate::ports::StoreError::Rejected(e.to_string())))?;
    let trace_matches_record =
        recomputed.as_ref().is_some_and(|r| r.consensus_digest == record.record.consensus_digest);
    let trace = recomputed.and_then(|r| r.explain).unwrap_or_default();
    Ok(HttpResponse::Ok().json(Explained { record, trace, trace_matches_record }))
}

/// `GET /v1/vex/consensus/history?artifact=&vulnerability=[&as_of=]`: every stored
/// version of the pair, oldest first; with `as_of`, the version current at that time.
pub async fn history(
    caller: Authorized<Read>,
    state: web::Data<State>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let HistoryQuery { artifact, vulnerability, as_of } = query.into_inner();
    let pair = pair_of(&caller.tenant, artifact, vulnerability)?;
    let versions = state.stores.records.record_history(&pair).await?;
    match as_of {
        None if versions.is_empty() => {
            Err(ApiError::not_found(format!("no consensus history for {} / {}", pair.artifact, pair.vulnerability)))
        }
        None => Ok(HttpResponse::Ok().json(Page { items: versions, next_page_token: None })),
        Some(t) => match versions.into_iter().filter(|v| v.changed_at_ms <= t).last() {
            Some(v) => Ok(HttpResponse::Ok().json(v)),
            None => Err(ApiError::not_found(format!(
                "no consensus for {} / {} at or before as_of",
                pair.artifact, pair.vulnerability
            ))),
        },
    }
}
