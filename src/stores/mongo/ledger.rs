//! The document ledger role on MongoDB (`vex_document_versions`).
//!
//! Invariants: a version is one document, `_id` = SHA-256 of its (tenant, issuer,
//! document id, digest), inserted once (a duplicate `_id` is ignored); it is stored as its
//! JSON (`version_json`) beside the fields the read uses (tenant, issuer, document_id,
//! index `tenant_issuer_document`); the read after the insert is a separate query, so a
//! version stored by another instance before it is seen.

use super::{map_err, rejected, MongoStore, DOCUMENT_VERSIONS};
use crate::domain::ledger::{DocumentKey, DocumentVersion};
use crate::ports::{DocumentLedger, StoreError};
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};

/// The filter of a document's versions (a missing issuer is `null`).
fn key_filter(k: &DocumentKey) -> Document {
    let issuer = k.issuer.as_deref().map_or(Bson::Null, |i| Bson::String(i.to_string()));
    doc! { "tenant": &k.tenant, "issuer": issuer, "document_id": &k.document_id }
}

#[async_trait::async_trait]
impl DocumentLedger for MongoStore {
    async fn record_version(&self, version: &DocumentVersion) -> Result<Vec<DocumentVersion>, StoreError> {
        let json = serde_json::to_string(version).map_err(rejected("encoding document version"))?;
        let id_input = serde_json::to_vec(&(&version.key, &version.digest)).map_err(rejected("document version id"))?;
        let mut d = key_filter(&version.key);
        d.insert("_id", crate::domain::canonical::sha256_hex(&id_input));
        d.insert("digest", &version.digest);
        d.insert("version_json", json);
        self.insert_ignoring_duplicates(DOCUMENT_VERSIONS, vec![d]).await?;
        let mut cursor = self
            .coll(DOCUMENT_VERSIONS)
            .find(key_filter(&version.key))
            .projection(doc! { "version_json": 1 })
            .await
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await.map_err(map_err)? {
            let json = d.get_str("version_json").map_err(rejected("stored document version"))?;
            out.push(serde_json::from_str::<DocumentVersion>(json).map_err(rejected("decoding document version"))?);
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }
}
