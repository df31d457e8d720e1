//! `vex_lens::export::export_from_store`: the store path of an export (what the export
//! actor runs), over any `RecordStore`; here an in-memory one, so the tenant and
//! `since` filters are the store's (`changed_at`), not the evaluation time. The OpenVEX
//! snapshot joins the statement text from the observations (an `ObservationStore`):
//! without them the export fails, naming the observation.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use std::sync::Mutex;
use vex_lens::domain::consensus::{batch, ConsensusRecord, PairKey};
use vex_lens::domain::model::{IngestContext, Observation};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::timestamp::Timestamp;
use vex_lens::domain::trust::Policy;
use vex_lens::export::verify::verify_bundle;
use vex_lens::export::{export_from_store, ExportError, ExportFormat, ExportRequest};
use vex_lens::ports::{
    ChangeEvent, ObservationStore, RecordQuery, RecordStore, StoreError, TimedRecord, VersionedRecord,
};

#[derive(Default)]
struct MemStore {
    records: Mutex<Vec<(ConsensusRecord, i64)>>,
    observations: Mutex<Vec<Observation>>,
}

/// The observations role in memory.
#[async_trait::async_trait]
impl ObservationStore for MemStore {
    async fn put_observations(&self, observations: &[Observation]) -> Result<(), StoreError> {
        let mut all = self.observations.lock().unwrap();
        for o in observations {
            if !all.iter().any(|x| x.id == o.id) {
                all.push(o.clone());
            }
        }
        Ok(())
    }
    async fn observations_for_package(&self, tenant: &str, package: &str) -> Result<Vec<Observation>, StoreError> {
        let all = self.observations.lock().unwrap();
        Ok(all.iter().filter(|o| &*o.tenant == tenant && &*o.package == package).cloned().collect())
    }
    async fn tenant_packages(&self, tenant: &str) -> Result<Vec<String>, StoreError> {
        let all = self.observations.lock().unwrap();
        let p: std::collections::BTreeSet<String> =
            all.iter().filter(|o| &*o.tenant == tenant).map(|o| o.package.to_string()).collect();
        Ok(p.into_iter().collect())
    }
}

/// The records role in memory (no history, no change stream).
#[async_trait::async_trait]
impl RecordStore for MemStore {
    async fn put_records(&self, records: &[VersionedRecord], changed_at_ms: i64) -> Result<(), StoreError> {
        let mut all = self.records.lock().unwrap();
        for VersionedRecord { record: r, .. } in records {
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
    async fn query_records(&self, q: &RecordQuery) -> Result<Vec<TimedRecord>, StoreError> {
        let all = self.records.lock().unwrap();
        let mut out: Vec<TimedRecord> = all
            .iter()
            .map(|(r, at)| TimedRecord { record: r.clone(), changed_at_ms: *at })
            .filter(|t| q.matches(t))
            .collect();
        out.sort_by(|a, b| {
            (&a.record.artifact, &a.record.vulnerability).cmp(&(&b.record.artifact, &b.record.vulnerability))
        });
        out.truncate(q.limit);
        Ok(out)
    }
    async fn record_history(&self, _: &PairKey) -> Result<Vec<TimedRecord>, StoreError> {
        Ok(Vec::new())
    }
    async fn changes_after(&self, _: &str, _: u64, _: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        Err(StoreError::Rejected("this store has no change stream".into()))
    }
    async fn change_tail(&self, _: &str) -> Result<u64, StoreError> {
        Err(StoreError::Rejected("this store has no change stream".into()))
    }
}

fn corpus_records(tenant: &str) -> (Vec<ConsensusRecord>, Vec<Observation>) {
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
    (batch(obs.clone(), &Policy::default(), false).0, obs)
}

fn unversioned(records: &[ConsensusRecord]) -> Vec<VersionedRecord> {
    records.iter().cloned().map(VersionedRecord::unversioned).collect()
}

#[tokio::test]
async fn export_from_store_filters_by_tenant_and_changed_at() {
    let store = MemStore::default();
    let (a, a_obs) = corpus_records("acme");
    let (b, b_obs) = corpus_records("globex");
    // No observations yet: the OpenVEX snapshot cannot be written without their text.
    store.put_records(&unversioned(&a), 1_000).await.unwrap();
    let dir0 = tempfile::tempdir().unwrap();
    let lost = ExportRequest {
        format: ExportFormat::Openvex,
        manifest: dir0.path().join("manifest.json"),
        out_dir: None,
        tenant: None,
        since: None,
        source: "embedded".into(),
        created_at: None,
    };
    let e = export_from_store(&store, &store, &lost, None).await.unwrap_err();
    assert!(matches!(e, ExportError::MissingObservation { .. }), "{e}");
    store.put_observations(&a_obs).await.unwrap();
    store.put_observations(&b_obs).await.unwrap();
    store.put_records(&unversioned(&b[..3]), 5_000).await.unwrap();
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
    let all = export_from_store(&store, &store, &req("all", None, None), None).await.unwrap();
    assert_eq!(all.counts.records as usize, a.len() + 3);
    let acme = export_from_store(&store, &store, &req("acme", Some("acme"), None), None).await.unwrap();
    assert_eq!(acme.counts.records as usize, a.len());
    let recent = export_from_store(&store, &store, &req("recent", None, Some(2_000)), None).await.unwrap();
    assert_eq!(recent.counts.records, 3);
    // as a trait object too (what an actor holding Arc<dyn RecordStore> passes)
    let dynstore: &dyn RecordStore = &store;
    let (pem, public) = vex_lens::crypto::generate_keypair(vex_lens::crypto::KeyAlg::Ed25519).unwrap();
    let signer = vex_lens::crypto::SigningKey::from_pem(&pem).unwrap();
    let signed =
        export_from_store(dynstore, &store, &req("signed", Some("globex"), None), Some(&signer)).await.unwrap();
    assert_eq!(signed.keyid.as_deref(), Some(public.keyid()));
    let report = verify_bundle(&signed.manifest, Some(&public)).unwrap();
    assert_eq!(report.exit_code(), 0, "{report:?}");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&signed.manifest).unwrap()).unwrap();
    assert_eq!(m["source"], "embedded");
    assert_eq!(m["tenant"], "globex");
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(&recent.manifest).unwrap()).unwrap();
    assert_eq!(m["since"], "1970-01-01T00:00:02.000Z");
}

/// `vex-lens export --data-dir`: after `vex-lens serve --once` has put the corpus's
/// consensus into the embedded store, exporting the store gives the same data file as
/// exporting straight from the files, and the bundle verifies.
#[test]
fn export_from_embedded_store_equals_export_from_files() {
    use std::process::Command;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let input = root.join("in");
    common::copy_dir(&common::corpus_dir().join("openvex"), &input);
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vex-lens"))
            .current_dir(root)
            .env_remove("SOURCE_DATE_EPOCH")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "vex-lens {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };
    run(&["serve", "--once", "--ingest-dir", "in", "--data-dir", "data", "--listen", "127.0.0.1:0"]);
    // The same knobs as serve used: none of the repository's config (we run outside it).
    run(&["export", "--format", "ndjson", "--manifest", "files/manifest.json", "--from", "in"]);
    run(&["keygen", "--out", "k.pem", "--public-out", "k.pub"]);
    run(&[
        "export",
        "--format",
        "ndjson",
        "--manifest",
        "store/manifest.json",
        "--data-dir",
        "data",
        "--sign-key",
        "k.pem",
    ]);
    let a = std::fs::read(root.join("files/consensus.ndjson")).unwrap();
    let b = std::fs::read(root.join("store/consensus.ndjson")).unwrap();
    assert!(!a.is_empty());
    assert_eq!(String::from_utf8_lossy(&a), String::from_utf8_lossy(&b), "store export differs from files export");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("store/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["source"], "embedded");
    run(&["verify", "store", "--public-key", "k.pub"]);
    run(&["export", "--format", "openvex", "--manifest", "ov/manifest.json", "--data-dir", "data"]);
    // --since is the store's changed_at: everything changed just now, nothing in the future.
    run(&[
        "export",
        "--format",
        "json",
        "--manifest",
        "later/manifest.json",
        "--data-dir",
        "data",
        "--since",
        "2999-01-01T00:00:00Z",
    ]);
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("later/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["counts"]["records"], 0);
    // A directory without a store is an error, not an empty export.
    let out = Command::new(env!("CARGO_BIN_EXE_vex-lens"))
        .current_dir(root)
        .args(["export", "--manifest", "x/manifest.json", "--data-dir", "nothing-here"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no embedded store"));
}

/// `vex-lens export --mongo-uri`: the same, through MongoDB (SecantusDB in scripts/test.sh).
/// Skipped when `VEXLENS_MONGODB_URI` is unset, unless `VEXLENS_REQUIRE_SERVICES=1`.
#[test]
fn export_from_mongodb_equals_export_from_files() {
    use std::process::Command;
    let Some(uri) = std::env::var("VEXLENS_MONGODB_URI").ok().filter(|s| !s.is_empty()) else {
        assert!(
            std::env::var("VEXLENS_REQUIRE_SERVICES").map_or(true, |v| v != "1"),
            "VEXLENS_REQUIRE_SERVICES=1 but VEXLENS_MONGODB_URI is unset"
        );
        eprintln!("skipped: run scripts/test.sh (VEXLENS_MONGODB_URI unset)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let input = root.join("in");
    common::copy_dir(&common::corpus_dir().join("openvex"), &input);
    let db = format!("vexlens_export_test_{}_{}", std::process::id(), root.file_name().unwrap().to_string_lossy());
    let db: String = db.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vex-lens")).current_dir(root).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "vex-lens {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["serve", "--once", "--ingest-dir", "in", "--mongo-uri", &uri, "--mongo-db", &db, "--listen", "127.0.0.1:0"]);
    run(&["export", "--format", "ndjson", "--manifest", "files/manifest.json", "--from", "in"]);
    run(&["export", "--format", "ndjson", "--manifest", "mongo/manifest.json", "--mongo-uri", &uri, "--mongo-db", &db]);
    let a = std::fs::read_to_string(root.join("files/consensus.ndjson")).unwrap();
    let b = std::fs::read_to_string(root.join("mongo/consensus.ndjson")).unwrap();
    assert!(!a.is_empty());
    assert_eq!(a, b, "MongoDB export differs from files export");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("mongo/manifest.json")).unwrap()).unwrap();
    assert_eq!(m["source"], "mongodb");
    run(&["verify", "mongo"]);
    // Leave nothing behind in the shared server.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
        client.database(&db).drop().await.unwrap();
    });
}
