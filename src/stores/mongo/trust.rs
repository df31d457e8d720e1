//! The trust role on MongoDB (`vex_trust_policies`, `vex_trust_audit`).
//!
//! Invariants: a tenant's policy changes by compare-and-set on its epoch in one
//! single-document write that also carries the change's audit entry (`audit`,
//! `audit_written: false`); the entry is then copied to `vex_trust_audit` (idempotent by
//! its `_id`) and the flag set, so a crash in between leaves a change whose entry
//! `repair_trust_audit` copies, never a change without its entry.

use super::{int_field, map_err, only_duplicate_keys, rejected, MongoStore, TRUST_AUDIT, TRUST_POLICIES};
use crate::domain::trust::TenantTrust;
use crate::ports::{trust_audit_id, StoreError, TrustAudit, TrustStore};
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};

impl MongoStore {
    /// Copies the audit entry of `tenant`'s policy write at `epoch` to `vex_trust_audit`
    /// (idempotent by its `_id`), then sets the policy's `audit_written` if the policy is
    /// still at that epoch.
    async fn copy_audit(&self, tenant: &str, epoch: u64, entry: Document) -> Result<(), StoreError> {
        self.insert_ignoring_duplicates(TRUST_AUDIT, vec![entry]).await?;
        self.coll(TRUST_POLICIES)
            .update_one(doc! { "_id": tenant, "epoch": epoch as i64 }, doc! { "$set": { "audit_written": true } })
            .await
            .map_err(map_err)?;
        Ok(())
    }
}

/// Reads an audit entry back (see `put_trust_policy`).
fn audit_from_doc(d: &Document) -> Result<TrustAudit, StoreError> {
    let text = |k: &str| d.get_str(k).map(str::to_string).map_err(rejected("stored trust audit"));
    let opt = |k: &str| d.get_str(k).ok().map(str::to_string);
    let trust = |k: &str| -> Result<TenantTrust, StoreError> {
        serde_json::from_str(d.get_str(k).map_err(rejected("stored trust audit"))?)
            .map_err(rejected("decoding trust audit"))
    };
    Ok(TrustAudit {
        tenant: text("tenant")?,
        epoch: d.get_i64("epoch").map_err(rejected("stored trust audit"))? as u64,
        at_ms: d.get_i64("at_ms").map_err(rejected("stored trust audit"))?,
        who: text("who")?,
        kind: text("kind")?.parse().map_err(rejected("stored trust audit"))?,
        issuer: opt("issuer"),
        reason: opt("reason"),
        before: trust("before_json")?,
        after: trust("after_json")?,
    })
}

#[async_trait::async_trait]
impl TrustStore for MongoStore {
    async fn trust_policies(&self) -> Result<Vec<TenantTrust>, StoreError> {
        let mut cursor = self.coll(TRUST_POLICIES).find(doc! {}).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let json = d.get_str("trust_json").map_err(rejected("stored trust policy"))?;
            out.push(serde_json::from_str(json).map_err(rejected("decoding stored trust policy"))?);
        }
        Ok(out)
    }

    /// Compare-and-set on the epoch: the first change of a tenant inserts its document
    /// (a duplicate `_id` means another writer came first), a later one updates with
    /// filter `{_id: tenant, epoch: next - 1}` (no match: another writer came first).
    /// No multi-document transaction on a standalone server, so the audit entry rides in
    /// the same single-document write (`audit`, with `audit_written: false`) and is then
    /// copied to `vex_trust_audit` (idempotent by its `_id`) and the flag set: a crash in
    /// between leaves a change whose entry [`TrustStore::repair_trust_audit`] copies
    /// (start-up and every trust poll), never a change without its entry. Before/after
    /// are stored as JSON strings (issuer ids may hold `.`).
    async fn put_trust_policy(&self, next: &TenantTrust, audit: &TrustAudit) -> Result<bool, StoreError> {
        let expected = next.epoch.checked_sub(1).ok_or_else(|| StoreError::Rejected("epoch 0 is the seed".into()))?;
        let json = serde_json::to_string(next).map_err(rejected("encoding trust policy"))?;
        let entry = doc! {
            "_id": trust_audit_id(&audit.tenant, audit.epoch),
            "tenant": &audit.tenant,
            "epoch": audit.epoch as i64,
            "at_ms": audit.at_ms,
            "who": &audit.who,
            "kind": audit.kind.as_str(),
            "issuer": audit.issuer.as_deref(),
            "reason": audit.reason.as_deref(),
            "before_json": serde_json::to_string(&audit.before).map_err(rejected("encoding trust audit"))?,
            "after_json": serde_json::to_string(&audit.after).map_err(rejected("encoding trust audit"))?,
        };
        let coll = self.coll(TRUST_POLICIES);
        if expected == 0 {
            let d = doc! {
                "_id": &next.tenant, "epoch": next.epoch as i64, "trust_json": &json, "updated_at_ms": audit.at_ms,
                "audit": entry.clone(), "audit_written": false,
            };
            match coll.insert_one(d).await {
                Ok(_) => {}
                Err(e) if only_duplicate_keys(&e) => return Ok(false),
                Err(e) => return Err(map_err(e)),
            }
        } else {
            let filter = doc! { "_id": &next.tenant, "epoch": expected as i64 };
            let update = doc! { "$set": {
                "epoch": next.epoch as i64, "trust_json": &json, "updated_at_ms": audit.at_ms,
                "audit": entry.clone(), "audit_written": false,
            } };
            let r = coll.update_one(filter, update).await.map_err(map_err)?;
            if r.matched_count != 1 {
                return Ok(false);
            }
        }
        self.copy_audit(&next.tenant, next.epoch, entry).await?;
        Ok(true)
    }

    async fn trust_audit(&self, tenant: &str) -> Result<Vec<TrustAudit>, StoreError> {
        let mut cursor =
            self.coll(TRUST_AUDIT).find(doc! { "tenant": tenant }).sort(doc! { "epoch": 1 }).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            out.push(audit_from_doc(&d)?);
        }
        Ok(out)
    }

    async fn trust_recomputed(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut cursor = self.coll(TRUST_POLICIES).find(doc! {}).await.map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let tenant = d.get_str("_id").map_err(rejected("stored trust policy _id"))?.to_string();
            out.push((tenant, int_field(&d, "recomputed_epoch").max(0) as u64));
        }
        Ok(out)
    }

    async fn mark_trust_recomputed(&self, tenant: &str, epoch: u64) -> Result<(), StoreError> {
        let update = doc! { "$max": { "recomputed_epoch": epoch as i64 } };
        self.coll(TRUST_POLICIES).update_one(doc! { "_id": tenant }, update).await.map_err(map_err)?;
        Ok(())
    }

    async fn repair_trust_audit(&self) -> Result<usize, StoreError> {
        let mut cursor = self.coll(TRUST_POLICIES).find(doc! { "audit_written": false }).await.map_err(map_err)?;
        let mut pending = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let tenant = d.get_str("_id").map_err(rejected("stored trust policy _id"))?.to_string();
            let entry = d.get_document("audit").map_err(rejected("stored trust policy audit"))?.clone();
            pending.push((tenant, int_field(&d, "epoch") as u64, entry));
        }
        let n = pending.len();
        for (tenant, epoch, entry) in pending {
            self.copy_audit(&tenant, epoch, entry).await?;
        }
        Ok(n)
    }
}
