//! The trust role on redb (`vex_trust_policies`, `vex_trust_audit`,
//! `vex_trust_recomputed`).
//!
//! Invariant: the epoch check, the policy and its audit entry commit in one write
//! transaction, so there is never a change without its entry (nothing to repair).

use super::{err, json_err, EmbeddedStore, TRUST_AUDIT, TRUST_POLICIES, TRUST_RECOMPUTED};
use crate::domain::trust::TenantTrust;
use crate::ports::{trust_audit_id, StoreError, TrustAudit, TrustStore};
use redb::ReadableTable;

#[async_trait::async_trait]
impl TrustStore for EmbeddedStore {
    async fn trust_policies(&self) -> Result<Vec<TenantTrust>, StoreError> {
        self.read_all(TRUST_POLICIES).await
    }

    /// The epoch check, the policy and the audit entry in one write transaction.
    async fn put_trust_policy(&self, next: &TenantTrust, audit: &TrustAudit) -> Result<bool, StoreError> {
        let tenant = next.tenant.clone();
        let expected = next.epoch.checked_sub(1).ok_or_else(|| StoreError::Rejected("epoch 0 is the seed".into()))?;
        let policy = serde_json::to_vec(next).map_err(json_err)?;
        let entry = serde_json::to_vec(audit).map_err(json_err)?;
        let audit_id = trust_audit_id(&audit.tenant, audit.epoch);
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut t = tx.open_table(TRUST_POLICIES).map_err(err)?;
                let stored = match t.get(tenant.as_str()).map_err(err)? {
                    Some(v) => serde_json::from_slice::<TenantTrust>(v.value()).map_err(json_err)?.epoch,
                    None => 0,
                };
                if stored != expected {
                    return Ok(false);
                }
                t.insert(tenant.as_str(), policy.as_slice()).map_err(err)?;
                tx.open_table(TRUST_AUDIT).map_err(err)?.insert(audit_id.as_str(), entry.as_slice()).map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(true)
        })
        .await
    }

    async fn trust_audit(&self, tenant: &str) -> Result<Vec<TrustAudit>, StoreError> {
        let start = format!("{tenant}:");
        let end = format!("{tenant};");
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(TRUST_AUDIT).map_err(err)?;
            let mut out = Vec::new();
            for r in t.range(start.as_str()..end.as_str()).map_err(err)? {
                let (_, v) = r.map_err(err)?;
                out.push(serde_json::from_slice(v.value()).map_err(json_err)?);
            }
            Ok(out)
        })
        .await
    }

    async fn trust_recomputed(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.blocking(|db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(TRUST_RECOMPUTED).map_err(err)?;
            let mut out = Vec::new();
            for r in t.iter().map_err(err)? {
                let (k, v) = r.map_err(err)?;
                out.push((k.value().to_string(), v.value()));
            }
            Ok(out)
        })
        .await
    }

    async fn mark_trust_recomputed(&self, tenant: &str, epoch: u64) -> Result<(), StoreError> {
        let tenant = tenant.to_string();
        self.blocking(move |db| {
            let tx = db.begin_write().map_err(err)?;
            {
                let mut t = tx.open_table(TRUST_RECOMPUTED).map_err(err)?;
                let stored = t.get(tenant.as_str()).map_err(err)?.map_or(0, |v| v.value());
                if epoch > stored {
                    t.insert(tenant.as_str(), epoch).map_err(err)?;
                }
            }
            tx.commit().map_err(err)
        })
        .await
    }

    /// Nothing to repair: the policy and its audit entry commit in one write transaction.
    async fn repair_trust_audit(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}
