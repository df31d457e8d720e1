//! The trust role (`vex_trust_policies`, `vex_trust_audit`): each tenant's trust
//! settings, the audit of every change, and how far each tenant's changes are
//! recomputed.
//!
//! Invariants: a tenant's settings change only by compare-and-set on its epoch (epochs
//! never skip, two writers from one epoch cannot both win); every applied change has
//! exactly one audit entry (id [`trust_audit_id`]); the recompute mark never goes back.

use super::StoreError;
use crate::domain::trust::{TenantTrust, TrustChangeKind};
use serde::{Deserialize, Serialize};

/// One applied trust change, as audited (`vex_trust_audit`): who, when, what before and after.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrustAudit {
    pub tenant: String,
    /// The tenant's policy epoch the change produced (the entry's id is `tenant:epoch`).
    pub epoch: u64,
    /// When it was applied (ms since the epoch).
    pub at_ms: i64,
    /// Who: the API token's name (`loopback` without tokens).
    pub who: String,
    /// `issuer` or `policy`.
    pub kind: TrustChangeKind,
    /// The issuer id (issuer changes).
    pub issuer: Option<String>,
    /// The caller's stated reason, if any.
    pub reason: Option<String>,
    /// The tenant's trust settings before and after.
    pub before: TenantTrust,
    pub after: TenantTrust,
}

/// Id of an audit entry: `<tenant>:<epoch, 20 digits>` (entries of a tenant sort by epoch).
pub fn trust_audit_id(tenant: &str, epoch: u64) -> String {
    format!("{tenant}:{epoch:020}")
}

/// Persistence of trust settings, their audit and the recompute marks.
#[async_trait::async_trait]
pub trait TrustStore: Send + Sync + 'static {
    /// Every tenant's stored trust settings (tenants that never changed anything are absent).
    async fn trust_policies(&self) -> Result<Vec<TenantTrust>, StoreError>;
    /// Stores `next` only if the stored epoch of its tenant is `next.epoch - 1` (no
    /// document counts as epoch 0), together with its audit entry; `Ok(false)` (nothing
    /// written) when another writer changed the tenant first. Retrying an audit entry
    /// already written is harmless (idempotent by [`trust_audit_id`]).
    async fn put_trust_policy(&self, next: &TenantTrust, audit: &TrustAudit) -> Result<bool, StoreError>;
    /// A tenant's audited trust changes, oldest first.
    async fn trust_audit(&self, tenant: &str) -> Result<Vec<TrustAudit>, StoreError>;
    /// The epoch up to which each tenant's trust changes are recomputed
    /// ([`Self::mark_trust_recomputed`]; a tenant absent counts as 0). A stored policy
    /// epoch above it is a recompute still owed (interrupted by a crash): start-up and the
    /// trust poller finish it.
    async fn trust_recomputed(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Records that every pair of `tenant` was recomputed, durably, under policy epoch
    /// `epoch` or newer; never lowers the mark.
    async fn mark_trust_recomputed(&self, tenant: &str, epoch: u64) -> Result<(), StoreError>;
    /// Writes every audit entry a policy write carries but the audit log lacks (a store
    /// that cannot write both at once writes the entry inside the policy's
    /// compare-and-set and copies it after; a crash in between leaves it to this);
    /// idempotent; returns the number written.
    async fn repair_trust_audit(&self) -> Result<usize, StoreError>;
}
