//! `GET /v1/vex/trust/weights` (the issuer weights and policy the caller's tenant is
//! evaluated with), `PUT /v1/vex/trust/issuers/{id}` and `PUT /v1/vex/trust/policy`
//! (`vex:admin`: change the tenant's issuer tier/weight or mode/knobs: persisted, audited,
//! recomputed; see `crate::trust`) and `POST /v1/vex/simulate` (what-if: the same change,
//! recomputed over the tenant's stored observations and compared with the current policy,
//! without applying anything).
//!
//! Invariants: simulate writes nothing; simulate and the PUTs build a change with the same
//! function (`TenantTrust::changed`, over the tenant's current settings), so "simulate"
//! equals "apply, then compare"; both sides of a simulation are evaluated from the same
//! observations, so every reported difference is the change's doing; a bad body is a 400
//! naming the field.

use super::auth::{Admin, Authorized, Read};
use super::error::{ApiError, ErrorCode};
use super::State;
use crate::domain::consensus::{ConsensusRecord, PackageState, PairKey};
use crate::domain::trust::{Mode, Policy, TenantTrust, Tier, TrustChange};
use crate::ports::RecordQuery;
use crate::trust::TrustError;
use actix_web::http::StatusCode;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most pairs one simulation evaluates (the answer says when it stopped there).
pub const MAX_SIMULATED_PAIRS: usize = 20_000;

#[derive(Serialize)]
struct IssuerWeight {
    id: String,
    display_name: String,
    tier: Tier,
    /// Effective weight for the caller's tenant (ppm).
    weight_ppm: u64,
    /// Whether a per-tenant override applies.
    tenant_override: bool,
}

/// `GET /v1/vex/trust/weights`.
pub async fn weights(caller: Authorized<Read>, state: web::Data<State>) -> HttpResponse {
    let p = state.policy_for(&caller.tenant);
    let issuers: Vec<IssuerWeight> = p
        .directory
        .issuers
        .iter()
        .map(|i| {
            let r = p.directory.resolve(Some(&i.id), &caller.tenant);
            IssuerWeight {
                id: i.id.clone(),
                display_name: i.display_name.clone(),
                tier: r.tier,
                weight_ppm: r.weight_ppm,
                tenant_override: i.tenants.contains_key(&caller.tenant),
            }
        })
        .collect();
    let tiers: BTreeMap<Tier, u64> = [Tier::Authoritative, Tier::Trusted, Tier::Known, Tier::Unknown, Tier::Untrusted]
        .into_iter()
        .map(|t| (t, t.default_weight_ppm()))
        .collect();
    HttpResponse::Ok().json(serde_json::json!({
        "tenant": caller.tenant,
        "mode": p.mode,
        "policy_version": p.version(),
        "epoch": p.epoch(),
        "knobs": p.knobs,
        "tier_weights_ppm": tiers,
        "issuers": issuers,
    }))
}

/// An issuer change: its tier and/or weight for the caller's tenant.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerChange {
    pub id: String,
    pub tier: Option<Tier>,
    /// In [0, 1]; replaces the tier's weight.
    pub weight: Option<f64>,
}

/// A policy change: the mode and/or some knobs (the others keep their values).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyChange {
    pub mode: Option<Mode>,
    #[serde(default)]
    pub knobs: serde_json::Map<String, serde_json::Value>,
}

/// Body of `POST /v1/vex/simulate`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateBody {
    pub issuer: Option<IssuerChange>,
    pub policy: Option<PolicyChange>,
}

impl SimulateBody {
    /// The changes the body names, issuer first.
    fn changes(&self) -> Result<Vec<TrustChange>, ApiError> {
        if self.issuer.is_none() && self.policy.is_none() {
            return Err(ApiError::param("body", "name an `issuer` change, a `policy` change, or both"));
        }
        let mut out = Vec::new();
        if let Some(c) = &self.issuer {
            out.push(TrustChange::Issuer { id: c.id.clone(), tier: c.tier, weight: c.weight });
        }
        if let Some(p) = &self.policy {
            out.push(TrustChange::Policy { mode: p.mode, knobs: p.knobs.clone() });
        }
        Ok(out)
    }
}

/// The policy of `tenant` (currently `current`) after `changes` (400 naming the bad field).
pub fn changed_policy(base: &Policy, current: &TenantTrust, changes: &[TrustChange]) -> Result<Policy, ApiError> {
    let mut t = current.clone();
    for c in changes {
        t = t.changed(base, c).map_err(|e| ApiError::param(&e.field, e.reason))?;
    }
    Ok(t.policy(base))
}

#[derive(Serialize)]
struct Outcome {
    status: crate::domain::consensus::ConsensusStatus,
    confidence_ppm: u64,
    consensus_digest: String,
}

impl Outcome {
    fn of(r: &ConsensusRecord) -> Outcome {
        Outcome { status: r.status, confidence_ppm: r.confidence_ppm, consensus_digest: r.consensus_digest.clone() }
    }
}

#[derive(Serialize)]
struct Change {
    artifact: String,
    vulnerability: String,
    before: Outcome,
    after: Outcome,
}

/// `POST /v1/vex/simulate`: the pairs of the caller's tenant whose status or confidence
/// the change would alter, before and after (at most `api.simulations_per_minute` per
/// tenant, 429 above; a bad body is 400 and not counted).
pub async fn simulate(
    caller: Authorized<Admin>,
    state: web::Data<State>,
    body: web::Json<SimulateBody>,
) -> Result<HttpResponse, ApiError> {
    let policies = state.trust.policies();
    let before_policy = policies.for_tenant(&caller.tenant);
    let after_policy = changed_policy(policies.base(), &policies.trust(&caller.tenant), &body.changes()?)?;
    let per_minute = state.api.simulations_per_minute;
    let now = std::time::Instant::now();
    state.rates.admit(super::limits::Operation::Simulate, &caller.tenant, per_minute, now).map_err(|wait| {
        ApiError::rate_limited(
            format!("tenant {} ran {per_minute} simulations this minute (api.simulations_per_minute)", caller.tenant),
            wait,
        )
    })?;
    // The tenant's pairs, grouped by package.
    let mut by_package: BTreeMap<String, Vec<PairKey>> = BTreeMap::new();
    let mut after = None;
    let mut evaluated = 0usize;
    let mut truncated = false;
    loop {
        let q = RecordQuery { tenant: caller.tenant.clone(), after: after.clone(), limit: 1000, ..Default::default() };
        let page = state.stores.records.query_records(&q).await?;
        let full = page.len() == q.limit;
        for t in page {
            if evaluated == MAX_SIMULATED_PAIRS {
                truncated = true;
                break;
            }
            evaluated += 1;
            after = Some((t.record.artifact.clone(), t.record.vulnerability.clone()));
            by_package.entry(t.record.package.clone()).or_default().push(t.record.pair());
        }
        if !full || truncated {
            break;
        }
    }
    let mut changes = Vec::new();
    for (package, pairs) in by_package {
        let observations = state.stores.observations.observations_for_package(&caller.tenant, &package).await?;
        let (st, errors) = PackageState::rebuild(observations);
        if let Some(e) = errors.into_iter().next() {
            return Err(ApiError::from(crate::ports::StoreError::Rejected(e.to_string())));
        }
        for pair in pairs {
            let undigestible = |e: crate::domain::consensus::ApplyError| {
                ApiError::from(crate::ports::StoreError::Rejected(e.to_string()))
            };
            let before = st.evaluate(&pair, &before_policy, false).map_err(undigestible)?;
            let after = st.evaluate(&pair, &after_policy, false).map_err(undigestible)?;
            let (Some(b), Some(a)) = (before, after) else {
                continue;
            };
            if b.status != a.status || b.confidence_ppm != a.confidence_ppm {
                changes.push(Change {
                    artifact: pair.artifact,
                    vulnerability: pair.vulnerability,
                    before: Outcome::of(&b),
                    after: Outcome::of(&a),
                });
            }
        }
    }
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "tenant": caller.tenant,
        "applied": false,
        "policy_version_before": before_policy.version(),
        "policy_version_after": after_policy.version(),
        "evaluated_pairs": evaluated,
        "truncated": truncated,
        "changed": changes,
    })))
}

/// Takes the object body apart: only `allowed` keys (400 naming an unknown one).
fn object(body: &serde_json::Value, allowed: &[&str]) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    let obj = body.as_object().ok_or_else(|| ApiError::param("body", "must be a JSON object"))?;
    if let Some(k) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ApiError::param(k, format!("unknown field; expected one of: {}", allowed.join(", "))));
    }
    Ok(obj.clone())
}

/// Field `name` of `obj` as a `T` (absent or null: `None`; 400 naming it otherwise).
fn field<T: serde::de::DeserializeOwned>(
    obj: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<T>, ApiError> {
    match obj.get(name) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone()).map(Some).map_err(|e| ApiError::param(name, e)),
    }
}

/// Longest `reason` a change may carry (it is audited and logged).
pub const MAX_REASON_CHARS: usize = 1024;

fn reason(obj: &serde_json::Map<String, serde_json::Value>) -> Result<Option<String>, ApiError> {
    let r: Option<String> = field(obj, "reason")?;
    if r.as_ref().is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
        return Err(ApiError::param("reason", format!("longer than {MAX_REASON_CHARS} characters")));
    }
    Ok(r)
}

impl From<TrustError> for ApiError {
    fn from(e: TrustError) -> Self {
        match e {
            TrustError::Invalid(c) => ApiError::param(&c.field, c.reason),
            TrustError::RateLimited { retry_after_secs, .. } => ApiError::rate_limited(e.to_string(), retry_after_secs),
            TrustError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, ErrorCode::Conflict, e.to_string()),
            TrustError::Store(s) => s.into(),
            TrustError::Recompute(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Unavailable, e.to_string())
            }
        }
    }
}

async fn apply(
    req: &actix_web::HttpRequest,
    caller: &Authorized<Admin>,
    state: &State,
    change: TrustChange,
    reason: Option<String>,
) -> Result<HttpResponse, ApiError> {
    use actix_web::HttpMessage;
    let correlation = req.extensions().get::<super::CorrelationId>().map(|c| c.0.clone());
    let applied =
        state.trust.apply(&caller.name, &caller.tenant, &change, reason.as_deref(), correlation.as_deref()).await?;
    let p = state.policy_for(&caller.tenant);
    let mut out = serde_json::json!({
        "tenant": caller.tenant,
        "applied": true,
        "epoch": applied.after.epoch,
        "policy_version_before": applied.policy_version_before,
        "policy_version": applied.policy_version,
        "mode": p.mode,
        "knobs": p.knobs,
        "before": applied.before,
        "after": applied.after,
        "recomputed": { "packages": applied.packages, "pairs": applied.pairs },
        "duration_ms": applied.duration.as_millis() as u64,
    });
    if let TrustChange::Issuer { id, .. } = &change {
        let r = p.directory.resolve(Some(id), &caller.tenant);
        out["issuer"] = serde_json::json!({ "id": r.id, "tier": r.tier, "weight_ppm": r.weight_ppm });
    }
    Ok(HttpResponse::Ok().json(out))
}

/// `PUT /v1/vex/trust/issuers/{id}` (`vex:admin`): `{"tier"?, "weight"?, "reason"?}`
/// replaces the issuer's override for the caller's tenant.
pub async fn put_issuer(
    req: actix_web::HttpRequest,
    caller: Authorized<Admin>,
    state: web::Data<State>,
    id: web::Path<String>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let obj = object(&body, &["tier", "weight", "reason"])?;
    let tier: Option<Tier> = field(&obj, "tier")?;
    let weight: Option<f64> = field(&obj, "weight")?;
    let reason = reason(&obj)?;
    apply(&req, &caller, &state, TrustChange::Issuer { id: id.into_inner(), tier, weight }, reason).await
}

/// `PUT /v1/vex/trust/policy` (`vex:admin`): `{"mode"?, "knobs"?: {...}, "reason"?}` for
/// the caller's tenant (named knobs replace their values, the others keep theirs).
pub async fn put_policy(
    req: actix_web::HttpRequest,
    caller: Authorized<Admin>,
    state: web::Data<State>,
    body: web::Json<serde_json::Value>,
) -> Result<HttpResponse, ApiError> {
    let obj = object(&body, &["mode", "knobs", "reason"])?;
    let mode: Option<Mode> = field(&obj, "mode")?;
    let knobs: Option<serde_json::Map<String, serde_json::Value>> = field(&obj, "knobs")?;
    let reason = reason(&obj)?;
    apply(&req, &caller, &state, TrustChange::Policy { mode, knobs: knobs.unwrap_or_default() }, reason).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> Vec<TrustChange> {
        serde_json::from_value::<SimulateBody>(json).unwrap().changes().unwrap()
    }

    #[test]
    fn an_issuer_change_is_a_tenant_override_and_knobs_merge() {
        let p = Policy::default();
        let t = TenantTrust::new("acme");
        let changed =
            changed_policy(&p, &t, &body(serde_json::json!({"issuer": {"id": "vendor", "tier": "untrusted"}})))
                .unwrap();
        assert_eq!(changed.directory.resolve(Some("vendor"), "acme").tier, Tier::Untrusted);
        assert_eq!(changed.directory.resolve(Some("vendor"), "other").tier, Tier::Unknown, "only the caller's tenant");
        assert_ne!(changed.version(), p.version());
        let changed = changed_policy(
            &p,
            &t,
            &body(serde_json::json!({"policy": {"mode": "lattice", "knobs": {"conflict_threshold": 0.2}}})),
        )
        .unwrap();
        assert_eq!((changed.mode, changed.knobs.conflict_threshold), (Mode::Lattice, 0.2));
        assert_eq!(changed.knobs.half_life_days, p.knobs.half_life_days, "other knobs keep their values");
    }

    #[test]
    fn bad_changes_name_the_field() {
        let p = Policy::default();
        let t = TenantTrust::new("t");
        let e = |j: serde_json::Value| {
            let b: SimulateBody = serde_json::from_value(j).unwrap();
            b.changes().and_then(|c| changed_policy(&p, &t, &c)).unwrap_err().message
        };
        assert!(e(serde_json::json!({})).starts_with("body"));
        assert!(e(serde_json::json!({"issuer": {"id": "x", "weight": 2.0}})).starts_with("issuer.weight"));
        assert!(e(serde_json::json!({"issuer": {"id": "x"}})).starts_with("issuer"));
        assert!(e(serde_json::json!({"policy": {"knobs": {"nope": 1}}})).starts_with("policy.knobs.nope"));
        assert!(e(serde_json::json!({"policy": {"knobs": {"freshness_floor": 3.0}}})).starts_with("policy.knobs"));
    }

    #[test]
    fn put_bodies_name_the_bad_field() {
        let msg = |j: serde_json::Value, allowed: &[&str]| {
            let obj = match object(&j, allowed) {
                Ok(o) => o,
                Err(e) => return e.message,
            };
            field::<Tier>(&obj, "tier")
                .and_then(|_| field::<f64>(&obj, "weight"))
                .and_then(|_| reason(&obj))
                .map(|_| String::new())
                .unwrap_or_else(|e| e.message)
        };
        let issuer = &["tier", "weight", "reason"];
        assert!(msg(serde_json::json!([1]), issuer).starts_with("body"));
        assert!(msg(serde_json::json!({"tier": "godlike"}), issuer).starts_with("tier"));
        assert!(msg(serde_json::json!({"weight": "heavy"}), issuer).starts_with("weight"));
        assert!(msg(serde_json::json!({"colour": 1}), issuer).starts_with("colour"));
        assert!(msg(serde_json::json!({"reason": "x".repeat(2000)}), issuer).starts_with("reason"));
        assert_eq!(msg(serde_json::json!({"tier": "known", "weight": 0.5, "reason": "ok"}), issuer), "");
    }
}
