//! The live per-tenant policies of this instance: the configuration's policy
//! (`config/issuers.toml` + `[consensus]`) with each tenant's stored trust changes layered
//! over it, read by the artifact actors at every evaluation and by the HTTP API.
//!
//! Invariants: a tenant's installed epoch only rises (an older or equal [`TenantTrust`]
//! is ignored), so a late poll can never roll a change back; a tenant that never changed
//! anything is evaluated with the configuration's policy itself (epoch 0).

use crate::domain::trust::{Policy, TenantTrust};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The policies of every tenant (cheap reads: one map lookup and an `Arc` clone).
#[derive(Debug)]
pub struct Policies {
    base: Arc<Policy>,
    tenants: RwLock<HashMap<String, (TenantTrust, Arc<Policy>)>>,
}

impl Policies {
    /// Every tenant on `base` until a change is installed.
    pub fn new(base: Policy) -> Policies {
        Policies { base: Arc::new(base), tenants: RwLock::new(HashMap::new()) }
    }

    /// The configuration's policy.
    pub fn base(&self) -> &Policy {
        &self.base
    }

    /// The policy `tenant` is evaluated with now.
    pub fn for_tenant(&self, tenant: &str) -> Arc<Policy> {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants.get(tenant).map_or_else(|| self.base.clone(), |(_, p)| p.clone())
    }

    /// The tenant's installed trust settings (epoch 0 and no change when none).
    pub fn trust(&self, tenant: &str) -> TenantTrust {
        let tenants = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        tenants.get(tenant).map_or_else(|| TenantTrust::new(tenant), |(t, _)| t.clone())
    }

    /// Installs `t` when its epoch is higher than the tenant's installed one; returns the
    /// new policy when it did.
    pub fn install(&self, t: TenantTrust) -> Option<Arc<Policy>> {
        let mut tenants = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        let installed = tenants.get(&t.tenant).map_or(0, |(x, _)| x.epoch);
        if t.epoch <= installed {
            return None;
        }
        let policy = Arc::new(t.policy(&self.base));
        tenants.insert(t.tenant.clone(), (t, policy.clone()));
        Some(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::trust::{Tier, TrustChange};

    #[test]
    fn epochs_only_rise_and_tenants_are_separate() {
        let p = Policies::new(Policy::default());
        assert_eq!(p.for_tenant("a").version(), p.base().version());
        let change = TrustChange::Issuer { id: "vendor".into(), tier: Some(Tier::Trusted), weight: None };
        let a1 = p.trust("a").changed(p.base(), &change).unwrap();
        let installed = p.install(a1.clone()).expect("epoch 1 > 0");
        assert_eq!((installed.epoch(), p.for_tenant("a").epoch()), (1, 1));
        assert_ne!(p.for_tenant("a").version(), p.base().version());
        assert_eq!(p.for_tenant("b").version(), p.base().version(), "another tenant keeps the configuration's");
        assert!(p.install(a1.clone()).is_none(), "the same epoch again changes nothing");
        let a2 =
            a1.changed(p.base(), &TrustChange::Issuer { id: "vendor".into(), tier: None, weight: Some(0.4) }).unwrap();
        assert!(p.install(a2.clone()).is_some());
        assert!(p.install(a1).is_none(), "an older epoch never rolls back");
        assert_eq!(p.trust("a"), a2);
    }
}
