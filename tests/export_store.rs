//! `vex_lens::export::export_from_store`: the store path of an export (what the export
//! actor runs), over any `ConsensusStore`; here an in-memory one, so the tenant and
//! `since` filters are the store's (`changed_at`), not the evaluation time.

use std::sync::Mutex;
use vex_lens::domain::consensus::{batch, ConsensusRecord, PairKey};
use vex_lens::domain::model::{IngestContext, Observation};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::timestamp::Timestamp;
use vex_lens::domain::trust::Policy;
use vex_lens::export::verify::verify_bundle;
use vex_lens::export::{export_from_store, ExportFormat, ExportRequest};
use vex_lens::ports::{ConsensusStore, StoreError, VerificationRecord};

#[derive(Default)]
struct MemStore {
    records: Mutex<Vec<(ConsensusRecord, i64)>>,
}

#[async_trait::async_trait]
impl ConsensusStore for MemStore {
    async fn init(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn put_observations(&self, _: &[Observation]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn observations_for_package(&self, _: &str, _: &str) -> Result<Vec<Observation>, StoreError> {
        Ok(Vec::new())
    }
    async fn put_records(&self, records: &[ConsensusRecord], changed_at_ms: i64) -> Result<(), StoreError> {
        let mut all = self.records.lock().unwrap();
        for r in records {
            all.retain(|(x, _)| x.pair() != r.pair());
            all.push((r.clone(), changed_at_ms));
        }
        Ok(())
    }
    async fn get_record(&self, pair: &PairKey) -> Result<Option<ConsensusRecord>, StoreError> {
        Ok(self.records.lock().unwrap().iter().find(|(r, _)| r.pair() == *pair).map(|(r, _)| r.clone()))
    }
    async fn list_records(
        &self,
        tenant: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<Vec<ConsensusRecord>, StoreError> {
        let mut out: Vec<ConsensusRecord> = self
            .records
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, at)| tenant.map_or(true, |t| r.tenant == t) && since_ms.map_or(true, |s| *at >= s))
            .map(|(r, _)| r.clone())
            .collect();
        out.sort_by(|a, b| {
            a.artifact.cmp(&b.artifact).then(a.vulnerability.cmp(&b.vulnerability)).then(a.tenant.cmp(&b.tenant))
        });
        Ok(out)
    }
    async fn conflict_queue_depth(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn put_verification(&self, _: &VerificationRecord) -> Result<(), StoreError> {
        Ok(())
    }
}

fn corpus_records(tenant: &str) -> Vec<ConsensusRecord> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/openvex");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let mut obs = Vec::new();
    for f in files {
        let ctx = IngestContext { tenant: Some(tenant.into()), ..Default::default() };
        let doc =
            normalise_bytes(&f.display().to_string(), &std::fs::read(&f).unwrap(), &ctx, DEFAULT_MAX_DOCUMENT_BYTES)
                .unwrap();
        obs.extend(doc.observations);
    }
    batch(obs, &Policy::default(), false).0
}

#[tokio::test]
async fn export_from_store_filters_by_tenant_and_changed_at() {
    let store = MemStore::default();
    let a = corpus_records("acme");
    let b = corpus_records("globex");
    store.put_records(&a, 1_000).await.unwrap();
    store.put_records(&b[..3], 5_000).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let req = |name: &str, tenant: Option<&str>, since_ms: Option<i64>| ExportRequest {
        format: ExportFormat::Openvex,
        manifest: dir.path().join(name).join("manifest.json"),
        out_dir: None,
        tenant: tenant.map(String::from),
        since: since_ms.map(|ms| Timestamp::from_unix_nanos(ms as i128 * 1_000_000, 3)),
        source: "embedded".into(),
        created_at: None,
    };
    let all = export_from_store(&store, &req("all", None, None), None).await.unwrap();
    assert_eq!(all.counts.records as usize, a.len() + 3);
    let acme = export_from_store(&store, &req("acme", Some("acme"), None), None).await.unwrap();
    assert_eq!(acme.counts.records as usize, a.len());
    let recent = export_from_store(&store, &req("recent", None, Some(2_000)), None).await.unwrap();
    assert_eq!(recent.counts.records, 3);
    // as a trait object too (what an actor holding Arc<dyn ConsensusStore> passes)
    let dynstore: &dyn ConsensusStore = &store;
    let (pem, public) = vex_lens::crypto::generate_keypair(vex_lens::crypto::KeyAlg::Ed25519).unwrap();
    let signer = vex_lens::crypto::SigningKey::from_pem(&pem).unwrap();
    let signed = export_from_store(dynstore, &req("signed", Some("globex"), None), Some(&signer)).await.unwrap();
    assert_eq!(signed.keyid.as_deref(), Some(public.keyid()));
    let report = verify_bundle(&signed.manifest, Some(&public)).unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&signed.manifest).unwrap()).unwrap();
    assert_eq!(m["source"], "embedded");
    assert_eq!(m["tenant"], "globex");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&recent.manifest).unwrap()).unwrap();
    assert_eq!(m["since"], "1970-01-01T00:00:02.000Z");
}
