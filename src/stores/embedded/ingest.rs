//! What the embedded sources remember beside the store roles: the files already
//! processed (by path and fingerprint, [`ProcessedFiles`]) and the dead-lettered inputs
//! ([`DeadLetterSink`]).

use super::err;
use super::{EmbeddedStore, DEAD_LETTERS, FILES};
use crate::ports::{DeadLetter, DeadLetterError, DeadLetterSink, ProcessedFiles, StoreError};

#[async_trait::async_trait]
impl ProcessedFiles for EmbeddedStore {
    /// Whether a file (by path, size and modification time) was already fully processed.
    async fn file_seen(&self, path: &str, fingerprint: &str) -> Result<bool, StoreError> {
        let (path, fingerprint) = (path.to_string(), fingerprint.to_string());
        self.blocking(move |db| {
            let tx = db.begin_read().map_err(err)?;
            let t = tx.open_table(FILES).map_err(err)?;
            Ok(t.get(path.as_str()).map_err(err)?.is_some_and(|v| v.value() == fingerprint))
        })
        .await
    }

    /// Remembers that a file was fully processed.
    async fn mark_file(&self, path: &str, fingerprint: &str) -> Result<(), StoreError> {
        let (path, fingerprint) = (path.to_string(), fingerprint.to_string());
        self.write(move |tx, tally| {
            tx.open_table(FILES).map_err(err)?.insert(path.as_str(), fingerprint.as_str()).map_err(err)?;
            tally.rows(&FILES, 1);
            Ok(())
        })
        .await
    }
}

#[async_trait::async_trait]
impl DeadLetterSink for EmbeddedStore {
    /// Records a dead-lettered input (a store failure leaves it counted and logged only).
    async fn dead_letter(&self, d: &DeadLetter) -> Result<(), DeadLetterError> {
        self.put_json(&DEAD_LETTERS, &format!("{:020}:{}:{}", d.at_ms, d.source, d.reason), d)
            .await
            .map_err(|e| DeadLetterError::NotStored(e.to_string()))
    }
}

impl EmbeddedStore {
    /// Every dead letter, oldest first.
    pub async fn dead_letters(&self) -> Result<Vec<DeadLetter>, StoreError> {
        self.read_all(DEAD_LETTERS).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn files_and_dead_letters_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = EmbeddedStore::open(dir.path()).unwrap();
            assert!(!store.file_seen("/a.json", "1:2").await.unwrap());
            store.mark_file("/a.json", "1:2").await.unwrap();
            let d = DeadLetter {
                source: "/b.json".into(),
                reason: crate::domain::codes::DeadLetterReason::InvalidJson,
                detail: "x".into(),
                at_ms: 5,
                correlation_id: Some("c-1".into()),
            };
            store.dead_letter(&d).await.unwrap();
        }
        let store = EmbeddedStore::open(dir.path()).unwrap();
        assert!(store.file_seen("/a.json", "1:2").await.unwrap());
        assert!(!store.file_seen("/a.json", "1:3").await.unwrap(), "a changed file is processed again");
        assert_eq!(store.dead_letters().await.unwrap().len(), 1);
    }
}
