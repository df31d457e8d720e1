//! `GET /v1/vex/trust/weights` (the issuer weights and policy the caller's tenant is
//! evaluated with) and `POST /v1/vex/simulate` (what-if: a changed issuer tier/weight or
//! policy knob, for the caller's tenant, recomputed over the tenant's stored observations
//! and compared with the current policy, without applying anything).
//!
//! Invariants: simulate writes nothing; a change is built exactly as an applied one
//! would be (a per-tenant override in the issuer directory, knobs merged field by field
//! and validated), so "simulate" equals "apply, then compare"; both sides are evaluated
//! from the same observations, so every reported difference is the change's doing.

use super::auth::{Admin, Authorized, Read};
use super::error::ApiError;
use super::State;
use crate::domain::consensus::{ConsensusRecord, PackageState, PairKey};
use crate::domain::trust::{Issuer, IssuerDirectory, Knobs, Mode, Policy, TenantOverride, Tier};
use crate::ports::RecordQuery;
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
    let p = &state.policy;
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

/// The policy after `body`'s change for `tenant` (400 naming the bad field).
pub fn changed_policy(current: &Policy, tenant: &str, body: &SimulateBody) -> Result<Policy, ApiError> {
    if body.issuer.is_none() && body.policy.is_none() {
        return Err(ApiError::param("body", "name an `issuer` change, a `policy` change, or both"));
    }
    let mut directory: IssuerDirectory = current.directory.clone();
    let mut mode = current.mode;
    let mut knobs: Knobs = current.knobs.clone();
    if let Some(c) = &body.issuer {
        let id = c.id.trim();
        if id.is_empty() || id.len() > 256 {
            return Err(ApiError::param("issuer.id", "must be 1 to 256 characters"));
        }
        if c.tier.is_none() && c.weight.is_none() {
            return Err(ApiError::param("issuer", "name a `tier`, a `weight`, or both"));
        }
        if let Some(w) = c.weight {
            if !(0.0..=1.0).contains(&w) {
                return Err(ApiError::param("issuer.weight", "must be within [0, 1]"));
            }
        }
        let canonical = directory.find(id).map(|i| i.id.clone());
        let issuer = match canonical {
            Some(cid) => directory.issuers.iter_mut().find(|i| i.id == cid).expect("found above"),
            None => {
                directory.issuers.push(Issuer {
                    id: id.to_string(),
                    display_name: String::new(),
                    tier: Tier::Unknown,
                    weight: None,
                    aliases: Vec::new(),
                    keys: Vec::new(),
                    tenants: BTreeMap::new(),
                });
                directory.issuers.last_mut().expect("just pushed")
            }
        };
        issuer.tenants.insert(tenant.to_string(), TenantOverride { tier: c.tier, weight: c.weight });
    }
    if let Some(p) = &body.policy {
        if let Some(m) = p.mode {
            mode = m;
        }
        let mut v = serde_json::to_value(&knobs).map_err(|e| ApiError::param("policy.knobs", e))?;
        let obj = v.as_object_mut().ok_or_else(|| ApiError::param("policy.knobs", "not an object"))?;
        for (k, val) in &p.knobs {
            if !obj.contains_key(k) {
                return Err(ApiError::param(&format!("policy.knobs.{k}"), "unknown knob"));
            }
            obj.insert(k.clone(), val.clone());
        }
        knobs = serde_json::from_value(v).map_err(|e| ApiError::param("policy.knobs", e))?;
        knobs.validate().map_err(|e| ApiError::param("policy.knobs", e))?;
    }
    Ok(Policy::new(mode, directory, knobs))
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
/// the change would alter, before and after.
pub async fn simulate(
    caller: Authorized<Admin>,
    state: web::Data<State>,
    body: web::Json<SimulateBody>,
) -> Result<HttpResponse, ApiError> {
    let after_policy = changed_policy(&state.policy, &caller.tenant, &body)?;
    // The tenant's pairs, grouped by package.
    let mut by_package: BTreeMap<String, Vec<PairKey>> = BTreeMap::new();
    let mut after = None;
    let mut evaluated = 0usize;
    let mut truncated = false;
    loop {
        let q = RecordQuery { tenant: caller.tenant.clone(), after: after.clone(), limit: 1000, ..Default::default() };
        let page = state.store.query_records(&q).await?;
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
        let observations = state.store.observations_for_package(&caller.tenant, &package).await?;
        let mut st = PackageState::new();
        for o in observations {
            st.apply(o).map_err(|e| ApiError::from(crate::ports::StoreError::Rejected(e.to_string())))?;
        }
        for pair in pairs {
            let undigestible = |e: crate::domain::consensus::ApplyError| {
                ApiError::from(crate::ports::StoreError::Rejected(e.to_string()))
            };
            let before = st.evaluate(&pair, &state.policy, false).map_err(undigestible)?;
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
        "policy_version_before": state.policy.version(),
        "policy_version_after": after_policy.version(),
        "evaluated_pairs": evaluated,
        "truncated": truncated,
        "changed": changes,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> SimulateBody {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn an_issuer_change_is_a_tenant_override_and_knobs_merge() {
        let p = Policy::default();
        let changed =
            changed_policy(&p, "acme", &body(serde_json::json!({"issuer": {"id": "vendor", "tier": "untrusted"}})))
                .unwrap();
        assert_eq!(changed.directory.resolve(Some("vendor"), "acme").tier, Tier::Untrusted);
        assert_eq!(changed.directory.resolve(Some("vendor"), "other").tier, Tier::Unknown, "only the caller's tenant");
        assert_ne!(changed.version(), p.version());
        let changed = changed_policy(
            &p,
            "acme",
            &body(serde_json::json!({"policy": {"mode": "lattice", "knobs": {"conflict_threshold": 0.2}}})),
        )
        .unwrap();
        assert_eq!((changed.mode, changed.knobs.conflict_threshold), (Mode::Lattice, 0.2));
        assert_eq!(changed.knobs.half_life_days, p.knobs.half_life_days, "other knobs keep their values");
    }

    #[test]
    fn bad_changes_name_the_field() {
        let p = Policy::default();
        let e = |j| changed_policy(&p, "t", &body(j)).unwrap_err().message;
        assert!(e(serde_json::json!({})).starts_with("body"));
        assert!(e(serde_json::json!({"issuer": {"id": "x", "weight": 2.0}})).starts_with("issuer.weight"));
        assert!(e(serde_json::json!({"issuer": {"id": "x"}})).starts_with("issuer"));
        assert!(e(serde_json::json!({"policy": {"knobs": {"nope": 1}}})).starts_with("policy.knobs.nope"));
        assert!(e(serde_json::json!({"policy": {"knobs": {"freshness_floor": 3.0}}})).starts_with("policy.knobs"));
    }
}
