//! The document ledger role on redb (`vex_document_versions`, keyed
//! `tenant \0 issuer \0 document id \0 digest`, so a document's versions are one key-range
//! scan; a version is inserted once and never overwritten).

use super::{err, json_err, EmbeddedStore, DOCUMENT_VERSIONS};
use crate::domain::ledger::{DocumentKey, DocumentVersion};
use crate::ports::{DocumentLedger, StoreError};
use redb::ReadableTable;

/// The key prefix of a document's versions (`\u{1}` marks a missing issuer, which no
/// issuer name starts with after the separator).
fn prefix(k: &DocumentKey) -> String {
    let issuer = k.issuer.as_deref().map_or_else(|| "\u{1}".to_string(), |i| format!("\u{2}{i}"));
    format!("{}\u{0}{issuer}\u{0}{}\u{0}", k.tenant, k.document_id)
}

#[async_trait::async_trait]
impl DocumentLedger for EmbeddedStore {
    /// One write (shared transaction): insert if absent, then read the document's range.
    async fn record_version(&self, version: &DocumentVersion) -> Result<Vec<DocumentVersion>, StoreError> {
        let start = prefix(&version.key);
        let key = format!("{start}{}", version.digest);
        let value = serde_json::to_vec(version).map_err(json_err)?;
        let mut out = self
            .write(move |tx, tally| {
                let mut out = Vec::new();
                let mut t = tx.open_table(DOCUMENT_VERSIONS).map_err(err)?;
                if t.get(key.as_str()).map_err(err)?.is_none() {
                    t.insert(key.as_str(), value.as_slice()).map_err(err)?;
                    tally.rows(&DOCUMENT_VERSIONS, 1);
                }
                // The range of keys starting with `start` (its last byte is \0).
                let end = format!("{}\u{1}", &start[..start.len() - 1]);
                for r in t.range(start.as_str()..end.as_str()).map_err(err)? {
                    let (_, v) = r.map_err(err)?;
                    out.push(serde_json::from_slice::<DocumentVersion>(v.value()).map_err(json_err)?);
                }
                Ok(out)
            })
            .await?;
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }
}
