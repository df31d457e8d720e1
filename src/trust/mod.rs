//! Trust changes of a tenant (`PUT /v1/vex/trust/issuers/{id}`, `PUT /v1/vex/trust/policy`):
//! validate, persist with compare-and-set on the tenant's policy epoch together with the
//! audit entry, install, log, and recompute every pair of the tenant (live actors and
//! packages rebuilt from the store); and convergence of several instances: each polls the
//! store's per-tenant trust settings and installs a newer epoch, re-evaluating its live
//! actors of that tenant.
//!
//! Invariants: a change is installed (seen by evaluations) only once it is durable; the
//! epoch rises by exactly one per change and never goes back on any instance (a change
//! made from a stale epoch loses the compare-and-set and is re-applied on the newer
//! settings); the configuration's issuer keys are never touched.

pub mod policies;

pub use policies::Policies;

use crate::domain::trust::{ChangeError, TenantTrust, TrustChange};
use crate::ports::{ObservationStore, StoreError, TrustAudit, TrustStore};
use crate::telemetry::events::{IssuerTrustChanged, LogEvent, TrustPolicyChanged, TrustPolicyInstalled};
use crate::telemetry::{RECOMPUTE_ISSUER_UPDATE, RECOMPUTE_POLICY_KNOB};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A boxed, sendable future.
pub type BoxFut<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What trust changes need from the actors (implemented by `actors::Pipeline`).
pub trait Recompute: Send + Sync {
    /// Re-evaluates every pair of (tenant, package) with the tenant's installed policy
    /// (rebuilt from the store); resolves once the records are durable, with the number of
    /// records written.
    fn recompute_package(&self, tenant: &str, package: &str, reason: &'static str) -> BoxFut<Result<usize, String>>;
    /// Packages of `tenant` with a live artifact actor on this instance.
    fn live_packages(&self, tenant: &str) -> BoxFut<Result<Vec<String>, String>>;
}

/// Packages recomputed at once during a trust change.
const RECOMPUTE_CONCURRENCY: usize = 4;
/// Polls a tenant must owe the same recompute before the poller does it
/// ([`TrustService::finish_pending`]; start-up does it at once).
const OWED_GRACE_POLLS: u32 = 15;
/// Attempts of a change that loses the compare-and-set to another instance.
const CAS_ATTEMPTS: usize = 3;

/// A trust change could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The change itself is invalid (400 naming the field).
    #[error(transparent)]
    Invalid(#[from] ChangeError),
    /// Too many changes for the tenant in the last minute (429).
    #[error("at most {limit} trust changes per minute per tenant; retry in {retry_after_secs} s")]
    RateLimited { limit: u32, retry_after_secs: u64 },
    /// Other instances kept changing the tenant first (409: retry).
    #[error("tenant {0}: trust settings changed concurrently; retry")]
    Conflict(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change is durable and installed, but some pairs were not recomputed yet (they
    /// are on their next observation or restart; retrying the same change is harmless).
    #[error("the change is applied but recomputing failed: {0}")]
    Recompute(String),
}

/// An applied change.
#[derive(Clone, Debug)]
pub struct Applied {
    pub before: TenantTrust,
    pub after: TenantTrust,
    pub policy_version_before: String,
    pub policy_version: String,
    /// Packages recomputed and the records written.
    pub packages: usize,
    pub pairs: usize,
    pub duration: Duration,
}

/// Applies trust changes and keeps this instance's [`Policies`] in step with the store.
pub struct TrustService {
    /// The tenants' settings, their audit and the recompute marks.
    trust: Arc<dyn TrustStore>,
    /// Which packages a tenant has (a change recomputes them all).
    observations: Arc<dyn ObservationStore>,
    policies: Arc<Policies>,
    recompute: Option<Arc<dyn Recompute>>,
    /// Most changes per tenant per minute (0: no limit).
    per_minute: u32,
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    /// One change at a time on this instance (others are fenced by the epoch).
    serial: tokio::sync::Mutex<()>,
    /// Tenants seen owing a recompute: (epoch owed, first seen) ([`Self::finish_pending`]).
    pending_since: Mutex<HashMap<String, (u64, Instant)>>,
}

/// The recompute reason of going from `before` to `after`.
fn reason_of(before: &TenantTrust, after: &TenantTrust) -> &'static str {
    if before.mode != after.mode || before.knobs != after.knobs {
        RECOMPUTE_POLICY_KNOB
    } else {
        RECOMPUTE_ISSUER_UPDATE
    }
}

fn label<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

impl TrustService {
    pub fn new(
        trust: Arc<dyn TrustStore>,
        observations: Arc<dyn ObservationStore>,
        policies: Arc<Policies>,
        recompute: Option<Arc<dyn Recompute>>,
        per_minute: u32,
    ) -> TrustService {
        TrustService {
            trust,
            observations,
            policies,
            recompute,
            per_minute,
            recent: Mutex::new(HashMap::new()),
            serial: tokio::sync::Mutex::new(()),
            pending_since: Mutex::new(HashMap::new()),
        }
    }

    pub fn policies(&self) -> &Arc<Policies> {
        &self.policies
    }

    /// Counts one change of `tenant` against the per-minute limit.
    fn admit(&self, tenant: &str) -> Result<(), TrustError> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let window = Duration::from_secs(60);
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let q = recent.entry(tenant.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= window) {
            q.pop_front();
        }
        if q.len() >= self.per_minute as usize {
            let oldest = q.front().copied().unwrap_or(now);
            let wait = window.saturating_sub(now.duration_since(oldest));
            return Err(TrustError::RateLimited { limit: self.per_minute, retry_after_secs: wait.as_secs().max(1) });
        }
        q.push_back(now);
        Ok(())
    }

    /// Applies `change` for `tenant` on behalf of `who`: persisted (compare-and-set on the
    /// epoch) with its audit entry, installed, logged, and every pair of the tenant
    /// recomputed; returns once the recomputed records are durable. `correlation_id` (the
    /// request's) is on the change's log line.
    pub async fn apply(
        &self,
        who: &str,
        tenant: &str,
        change: &TrustChange,
        reason: Option<&str>,
        correlation_id: Option<&str>,
    ) -> Result<Applied, TrustError> {
        // An invalid change is refused before it counts against the limit.
        self.policies.trust(tenant).changed(self.policies.base(), change)?;
        self.admit(tenant)?;
        let _one = self.serial.lock().await;
        let t0 = Instant::now();
        for _ in 0..CAS_ATTEMPTS {
            let before = self.policies.trust(tenant);
            let after = before.changed(self.policies.base(), change)?;
            let audit = TrustAudit {
                tenant: tenant.to_string(),
                epoch: after.epoch,
                at_ms: crate::ports::now_ms(),
                who: who.to_string(),
                kind: change.kind(),
                issuer: match change {
                    TrustChange::Issuer { id, .. } => Some(before.issuer_id(self.policies.base(), id)),
                    TrustChange::Policy { .. } => None,
                },
                reason: reason.map(str::to_string),
                before: before.clone(),
                after: after.clone(),
            };
            let policy_before = self.policies.for_tenant(tenant);
            let written = match self.trust.put_trust_policy(&after, &audit).await {
                Ok(w) => w,
                // The outcome is unknown (e.g. the policy was written, then the audit
                // insert failed): the store says whether the change is in force.
                Err(e) => match self.refresh().await {
                    Ok(_) if self.policies.trust(tenant) == after => true,
                    _ => return Err(e.into()),
                },
            };
            if !written {
                // Another instance changed the tenant first: take its settings, re-apply.
                self.refresh().await?;
                continue;
            }
            if let Some(p) = self.policies.install(after.clone()) {
                TrustPolicyInstalled { tenant, epoch: after.epoch, policy_version: p.version(), origin: "api" }.emit();
            }
            let policy_after = self.policies.for_tenant(tenant);
            let justification = reason.unwrap_or("");
            match change {
                TrustChange::Issuer { .. } => {
                    let issuer = audit.issuer.as_deref().unwrap_or_default();
                    let b = policy_before.directory.resolve(Some(issuer), tenant);
                    let a = policy_after.directory.resolve(Some(issuer), tenant);
                    IssuerTrustChanged {
                        correlation_id,
                        tenant,
                        who,
                        issuer: &a.id,
                        trust_tier: &label(&a.tier),
                        weight_before: b.weight_ppm as f64 / 1e6,
                        weight_after: a.weight_ppm as f64 / 1e6,
                        justification,
                        epoch: after.epoch,
                    }
                    .emit();
                }
                TrustChange::Policy { .. } => TrustPolicyChanged {
                    correlation_id,
                    tenant,
                    who,
                    mode_before: policy_before.mode.as_str(),
                    mode_after: policy_after.mode.as_str(),
                    knobs_before: &serde_json::to_string(&policy_before.knobs).unwrap_or_default(),
                    knobs_after: &serde_json::to_string(&policy_after.knobs).unwrap_or_default(),
                    justification,
                    epoch: after.epoch,
                }
                .emit(),
            }
            let (packages, pairs) = self.recompute_tenant(tenant, reason_of(&before, &after)).await?;
            // Every pair is durable under the new epoch: the recompute is no longer owed
            // (without the mark, start-up or the poller redoes it: harmless).
            if let Err(e) = self.trust.mark_trust_recomputed(tenant, after.epoch).await {
                crate::warn_event!(LogEvent::TrustPollFailed, tenant, error = %e, "recompute not marked done; it will be redone");
            }
            return Ok(Applied {
                before,
                after,
                policy_version_before: policy_before.version().to_string(),
                policy_version: policy_after.version().to_string(),
                packages,
                pairs,
                duration: t0.elapsed(),
            });
        }
        Err(TrustError::Conflict(tenant.to_string()))
    }

    /// Re-evaluates every package of `tenant` (those with stored observations and those
    /// live here) with its installed policy; (packages, records written).
    async fn recompute_tenant(&self, tenant: &str, reason: &'static str) -> Result<(usize, usize), TrustError> {
        let Some(r) = &self.recompute else { return Ok((0, 0)) };
        let mut packages: BTreeSet<String> = self.observations.tenant_packages(tenant).await?.into_iter().collect();
        packages.extend(r.live_packages(tenant).await.map_err(TrustError::Recompute)?);
        let pairs = Arc::new(AtomicUsize::new(0));
        let failures: Vec<String> = futures::stream::iter(packages.iter().cloned())
            .map(|p| {
                let f = r.recompute_package(tenant, &p, reason);
                let pairs = pairs.clone();
                async move {
                    let n = f.await.map_err(|e| format!("{p}: {e}"))?;
                    pairs.fetch_add(n, Ordering::Relaxed);
                    Ok::<(), String>(())
                }
            })
            .buffer_unordered(RECOMPUTE_CONCURRENCY)
            .filter_map(|x| async move { x.err() })
            .collect()
            .await;
        if let Some(first) = failures.first() {
            crate::error_event!(LogEvent::TrustRecomputeFailed, tenant, failed = failures.len(), error = %first, "packages not recomputed after a trust change");
            return Err(TrustError::Recompute(format!("{} package(s), first: {first}", failures.len())));
        }
        Ok((packages.len(), pairs.load(Ordering::Relaxed)))
    }

    /// Finishes what trust changes still owe after a crash: writes audit entries the
    /// store left uncopied, and recomputes every tenant whose stored policy epoch is
    /// above its recomputed mark (the change is durable but its recompute was cut short),
    /// under its installed policy, then marks it. With `grace`, a tenant is recomputed
    /// only once it has owed the same epoch that long on this instance's polls (the
    /// instance that made the change is likely still at it; doing it twice is harmless,
    /// only costly). Returns the tenants recomputed.
    pub async fn finish_pending(&self, grace: Option<Duration>) -> Result<usize, TrustError> {
        let repaired = self.trust.repair_trust_audit().await?;
        if repaired > 0 {
            tracing::info!(
                event = "trust_audit_repaired",
                entries = repaired,
                "audit entries of applied trust changes written"
            );
        }
        let owed = self.owed().await?;
        let now = Instant::now();
        let due: Vec<(String, u64)> = {
            let mut seen = self.pending_since.lock().unwrap_or_else(|e| e.into_inner());
            seen.retain(|t, _| owed.contains_key(t));
            owed.into_iter()
                .filter(|(tenant, epoch)| {
                    let since = seen.entry(tenant.clone()).or_insert((*epoch, now));
                    if since.0 != *epoch {
                        *since = (*epoch, now);
                    }
                    grace.map_or(true, |g| now.duration_since(since.1) >= g)
                })
                .collect()
        };
        let mut done = 0;
        for (tenant, epoch) in due {
            let _one = self.serial.lock().await;
            // A change applied here meanwhile may have paid it.
            if !self.owed().await?.get(&tenant).is_some_and(|e| *e >= epoch) {
                continue;
            }
            self.refresh().await?;
            let reason = match self.trust.trust_audit(&tenant).await?.last() {
                Some(a) if a.kind == crate::domain::trust::TrustChangeKind::Issuer => RECOMPUTE_ISSUER_UPDATE,
                _ => RECOMPUTE_POLICY_KNOB,
            };
            let t0 = Instant::now();
            let (packages, pairs) = self.recompute_tenant(&tenant, reason).await?;
            self.trust.mark_trust_recomputed(&tenant, epoch).await?;
            self.pending_since.lock().unwrap_or_else(|e| e.into_inner()).remove(&tenant);
            tracing::info!(
                event = "trust_recompute_finished",
                tenant = %tenant,
                epoch,
                packages,
                pairs,
                duration_ms = t0.elapsed().as_millis() as u64,
                "finished the recompute a trust change still owed"
            );
            done += 1;
        }
        Ok(done)
    }

    /// Tenants whose stored policy epoch is above their recomputed mark, with that epoch.
    async fn owed(&self) -> Result<HashMap<String, u64>, StoreError> {
        let marks: HashMap<String, u64> = self.trust.trust_recomputed().await?.into_iter().collect();
        Ok(self
            .trust
            .trust_policies()
            .await?
            .into_iter()
            .filter(|t| t.epoch > marks.get(&t.tenant).copied().unwrap_or(0))
            .map(|t| (t.tenant, t.epoch))
            .collect())
    }

    /// Reads every tenant's stored trust settings and installs the newer ones; returns
    /// (tenant, recompute reason) of each tenant whose policy changed here.
    pub async fn refresh(&self) -> Result<Vec<(String, &'static str)>, StoreError> {
        let mut changed = Vec::new();
        for t in self.trust.trust_policies().await? {
            let before = self.policies.trust(&t.tenant);
            let (tenant, epoch, reason) = (t.tenant.clone(), t.epoch, reason_of(&before, &t));
            if let Some(p) = self.policies.install(t) {
                TrustPolicyInstalled { tenant: &tenant, epoch, policy_version: p.version(), origin: "store" }.emit();
                changed.push((tenant, reason));
            }
        }
        Ok(changed)
    }

    /// One convergence step: installs newer stored settings and re-evaluates this
    /// instance's live actors of each such tenant (the instance that made the change
    /// recomputed the stored pairs; these hold observations it may not have seen).
    pub async fn converge(&self) -> Result<(), StoreError> {
        for (tenant, reason) in self.refresh().await? {
            let Some(r) = &self.recompute else { continue };
            let live = match r.live_packages(&tenant).await {
                Ok(l) => l,
                Err(e) => {
                    crate::error_event!(LogEvent::TrustRecomputeFailed, tenant = %tenant, error = %e, "live actors not listed");
                    continue;
                }
            };
            for p in live {
                if let Err(e) = r.recompute_package(&tenant, &p, reason).await {
                    crate::error_event!(LogEvent::TrustRecomputeFailed, tenant = %tenant, package = %p, error = %e, "live package not recomputed");
                }
            }
        }
        Ok(())
    }

    /// Polls the store every `every` until `shutdown` (several instances converge on the
    /// same settings within about one interval), and finishes recomputes owed for
    /// [`OWED_GRACE_POLLS`] intervals (an instance that crashed mid-recompute and did not
    /// come back).
    pub async fn run_poll(self: Arc<Self>, every: Duration, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = self.converge().await {
                crate::warn_event!(LogEvent::TrustPollFailed, error = %e, "trust settings not read; retrying at the next poll");
            }
            if let Err(e) = self.finish_pending(Some(every * OWED_GRACE_POLLS)).await {
                crate::warn_event!(LogEvent::TrustPollFailed, error = %e, "owed trust recompute not finished; retrying at the next poll");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::trust::{Policy, Tier};
    use crate::stores::embedded::EmbeddedStore;

    fn issuer(tier: Tier) -> TrustChange {
        TrustChange::Issuer { id: "vendor".into(), tier: Some(tier), weight: None }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn changes_persist_audit_rate_limit_and_converge() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let a = TrustService::new(store.clone(), store.clone(), Arc::new(Policies::new(Policy::default())), None, 2);
        let b = TrustService::new(store.clone(), store.clone(), Arc::new(Policies::new(Policy::default())), None, 2);
        let bad = TrustChange::Issuer { id: "vendor".into(), tier: None, weight: Some(3.0) };
        assert!(matches!(a.apply("alice", "t", &bad, None, None).await, Err(TrustError::Invalid(_))));
        let applied = a.apply("alice", "t", &issuer(Tier::Trusted), Some("vetted"), None).await.unwrap();
        assert_eq!((applied.before.epoch, applied.after.epoch), (0, 1));
        assert_ne!(applied.policy_version, applied.policy_version_before);
        // b has not seen it; its change from the stale epoch loses the compare-and-set,
        // takes a's settings and is re-applied on top of them.
        assert_eq!(b.policies().for_tenant("t").epoch(), 0);
        let k = serde_json::json!({"conflict_threshold": 0.4}).as_object().cloned().unwrap();
        let on_b = b.apply("bob", "t", &TrustChange::Policy { mode: None, knobs: k }, None, None).await.unwrap();
        assert_eq!(on_b.after.epoch, 2);
        assert!(on_b.after.issuers.contains_key("vendor"), "a's change is kept: {:?}", on_b.after);
        // a converges on b's.
        a.converge().await.unwrap();
        assert_eq!(a.policies().for_tenant("t").version(), b.policies().for_tenant("t").version());
        assert_eq!(a.policies().for_tenant("t").epoch(), 2);
        assert_eq!(a.policies().for_tenant("other").epoch(), 0, "another tenant is untouched");
        // Audit: who, when, before, after.
        let audit = store.trust_audit("t").await.unwrap();
        assert_eq!(audit.iter().map(|e| (e.epoch, e.who.as_str())).collect::<Vec<_>>(), vec![(1, "alice"), (2, "bob")]);
        assert_eq!(audit[0].issuer.as_deref(), Some("vendor"));
        assert_eq!(audit[0].reason.as_deref(), Some("vetted"));
        assert_eq!(audit[1].before, audit[0].after);
        // Rate limit: a allows 2 per minute per tenant (the invalid change did not count).
        a.apply("alice", "t", &issuer(Tier::Known), None, None).await.unwrap();
        assert!(matches!(
            a.apply("alice", "t", &issuer(Tier::Untrusted), None, None).await,
            Err(TrustError::RateLimited { limit: 2, .. })
        ));
        a.apply("alice", "u", &issuer(Tier::Untrusted), None, None).await.expect("the limit is per tenant");
    }

    /// Recomputes packages (recording which), failing every package after the first
    /// `crash_after` (a process that died mid-recompute).
    struct Recorder {
        done: Mutex<Vec<String>>,
        crash_after: Option<usize>,
    }

    impl Recompute for Recorder {
        fn recompute_package(
            &self,
            _tenant: &str,
            package: &str,
            _reason: &'static str,
        ) -> BoxFut<Result<usize, String>> {
            let mut done = self.done.lock().unwrap();
            let crashed = self.crash_after.is_some_and(|k| done.len() >= k);
            if !crashed {
                done.push(package.to_string());
            }
            Box::pin(async move {
                if crashed {
                    Err("crashed".into())
                } else {
                    Ok(1)
                }
            })
        }
        fn live_packages(&self, _tenant: &str) -> BoxFut<Result<Vec<String>, String>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    /// A change whose recompute was cut short stays owed (durable, not marked) until
    /// start-up finishes it: every package recomputed, then marked; nothing owed after.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_recompute_cut_short_is_finished_at_start_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let packages: Vec<String> = (0..6).map(|i| format!("pkg:npm/owed-{i}")).collect();
        let obs: Vec<_> = packages
            .iter()
            .map(|p| {
                crate::stores::contract::sample_observation(
                    "t",
                    "vendor",
                    &format!("{p}@1.0.0"),
                    "CVE-2024-0001",
                    crate::domain::model::Status::Affected,
                )
            })
            .collect();
        store.put_observations(&obs).await.unwrap();
        let crashing = Arc::new(Recorder { done: Mutex::new(Vec::new()), crash_after: Some(2) });
        let policies = || Arc::new(Policies::new(Policy::default()));
        let a = TrustService::new(store.clone(), store.clone(), policies(), Some(crashing.clone()), 0);
        assert!(matches!(
            a.apply("alice", "t", &issuer(Tier::Trusted), None, None).await,
            Err(TrustError::Recompute(_))
        ));
        assert_eq!(crashing.done.lock().unwrap().len(), 2);
        assert_eq!(a.owed().await.unwrap().get("t"), Some(&1), "the change is durable, its recompute owed");

        // "Restart": a new service on the same store.
        let fine = Arc::new(Recorder { done: Mutex::new(Vec::new()), crash_after: None });
        let b = TrustService::new(store.clone(), store.clone(), policies(), Some(fine.clone()), 0);
        b.refresh().await.unwrap();
        assert_eq!(b.finish_pending(Some(Duration::from_secs(3600))).await.unwrap(), 0, "the poller waits its grace");
        assert_eq!(b.finish_pending(None).await.unwrap(), 1, "start-up finishes it");
        let mut done = fine.done.lock().unwrap().clone();
        done.sort();
        assert_eq!(done, packages, "every package of the tenant is recomputed");
        assert!(b.owed().await.unwrap().is_empty(), "nothing owed once finished");
        assert_eq!(b.finish_pending(None).await.unwrap(), 0, "finished once");
        // A change that completes is marked at once: nothing owed.
        b.apply("alice", "t", &issuer(Tier::Known), None, None).await.unwrap();
        assert!(b.owed().await.unwrap().is_empty());
        assert_eq!(store.trust_recomputed().await.unwrap(), vec![("t".to_string(), 2)]);
    }

    /// The trust role over the real store, but a policy write fails after writing (as
    /// when the audit insert fails after the policy).
    struct FailsAfterWriting(Arc<EmbeddedStore>);

    #[async_trait::async_trait]
    impl TrustStore for FailsAfterWriting {
        async fn trust_policies(&self) -> Result<Vec<TenantTrust>, StoreError> {
            self.0.trust_policies().await
        }
        async fn put_trust_policy(&self, next: &TenantTrust, audit: &TrustAudit) -> Result<bool, StoreError> {
            self.0.put_trust_policy(next, audit).await?;
            Err(StoreError::Unavailable("connection reset after the write".into()))
        }
        async fn trust_audit(&self, tenant: &str) -> Result<Vec<TrustAudit>, StoreError> {
            self.0.trust_audit(tenant).await
        }
        async fn trust_recomputed(&self) -> Result<Vec<(String, u64)>, StoreError> {
            self.0.trust_recomputed().await
        }
        async fn mark_trust_recomputed(&self, tenant: &str, epoch: u64) -> Result<(), StoreError> {
            self.0.mark_trust_recomputed(tenant, epoch).await
        }
        async fn repair_trust_audit(&self) -> Result<usize, StoreError> {
            self.0.repair_trust_audit().await
        }
    }

    /// A store error after the change was written: the store says it is in force, so the
    /// change is installed and answered as applied (not a 503 for a change that holds).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_change_whose_write_succeeded_before_an_error_is_in_force() {
        let dir = tempfile::tempdir().unwrap();
        let inner = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
        let store = Arc::new(FailsAfterWriting(inner.clone()));
        let s = TrustService::new(store, inner, Arc::new(Policies::new(Policy::default())), None, 0);
        let applied = s.apply("alice", "t", &issuer(Tier::Trusted), None, None).await.expect("in force");
        assert_eq!(applied.after.epoch, 1);
        assert_eq!(s.policies().for_tenant("t").epoch(), 1);
        assert_ne!(applied.policy_version, applied.policy_version_before);
    }
}
