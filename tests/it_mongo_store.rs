//! `MongoStore` against the real MongoDB-wire server (SecantusDB in tests): exact
//! round trips (digest recomputes after storage, ppm integers up to 2^53 - 1),
//! idempotent history, the conflict queue, first-provenance-wins observations, and the
//! mapping of an unreachable server to a retriable error. Each test uses a fresh database
//! and drops it at the end.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};
use vex_lens::domain::consensus::{Conflict, ConflictReason, ConsensusRecord};
use vex_lens::domain::model::Status;
use vex_lens::ports::{
    ConflictQueue, ObservationStore, RecordStore, RecordVersion, StoreAdmin, StoreError, TrustStore,
    VerificationRecord, VerificationStore, VersionedRecord,
};
use vex_lens::stores::mongo::{MongoStore, CONFLICT_QUEUE, CONSENSUS, DSSE_VERIFICATIONS, HISTORY, OBSERVATIONS};

/// A fresh store, or None when the services are not configured (skipped).
async fn fresh_store(test: &str) -> Option<(MongoStore, String, String)> {
    let services = common::services()?;
    let db = common::fresh_name(test);
    // Unreachable is a failure here (the env says the server is there).
    common::mongo_client(&services.mongo_uri).await;
    let store = MongoStore::connect(&services.mongo_uri, &db).await.expect("connect");
    store.init().await.expect("init");
    Some((store, services.mongo_uri, db))
}

fn corpus_records(tenant: &str) -> Vec<ConsensusRecord> {
    let files = common::corpus_files(&["openvex", "csaf", "cyclonedx"]);
    common::batch_records(common::observations_of(&files, tenant))
}

fn unversioned(records: &[ConsensusRecord]) -> Vec<VersionedRecord> {
    records.iter().cloned().map(VersionedRecord::unversioned).collect()
}

fn with_digest(mut r: ConsensusRecord) -> ConsensusRecord {
    r.consensus_digest = r.compute_digest().expect("record digests");
    r
}

#[tokio::test]
async fn records_round_trip_digest_for_digest() {
    let Some((store, uri, db)) = fresh_store("roundtrip").await else { return };
    let records = corpus_records("acme");
    assert!(records.len() > 20, "corpus gave {} records", records.len());
    store.put_records(&unversioned(&records), 1_000).await.expect("put");
    let back = store.list_records(None, None).await.expect("list");
    assert_eq!(back.len(), records.len());
    for (got, want) in back.iter().zip(&records) {
        assert_eq!(got, want, "record differs after a round trip");
        assert_eq!(got.compute_digest().unwrap(), want.consensus_digest);
    }
    let one = store.get_record(&records[3].pair()).await.expect("get").expect("present");
    assert_eq!(one, records[3]);

    // The largest ppm integers RFC 8785 represents exactly (2^53 - 1) round-trip; one
    // beyond has no digest at all (an error, not a rounded number).
    let mut big = records[0].clone();
    big.vulnerability = "CVE-2099-0001".into();
    big.total_weight_ppm = (1u64 << 53) - 1;
    big.scores_ppm.insert(Status::Affected, (1u64 << 53) - 2);
    for (i, confidence_ppm) in [0u64, 1, 333_333, 999_999, 1_000_000].into_iter().enumerate() {
        let mut r = big.clone();
        r.vulnerability = format!("CVE-2099-{i:04}");
        r.confidence_ppm = confidence_ppm;
        let r = with_digest(r);
        store.put_records(&unversioned(std::slice::from_ref(&r)), 2_000).await.expect("put big");
        let got = store.get_record(&r.pair()).await.expect("get big").expect("present");
        assert_eq!(got.confidence_ppm, confidence_ppm);
        assert_eq!(got.total_weight_ppm, (1u64 << 53) - 1);
        assert_eq!(got.compute_digest().unwrap(), r.consensus_digest);
        assert_eq!(got, r);
    }
    big.total_weight_ppm = 1u64 << 53;
    assert!(big.compute_digest().is_err(), "2^53 has no exact RFC 8785 form");
    common::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn history_is_written_once_per_change() {
    let Some((store, uri, db)) = fresh_store("history").await else { return };
    let records = corpus_records("default");
    let n = records.len() as u64;
    store.put_records(&unversioned(&records), 10).await.expect("put");
    // A replay changes nothing, not even changed_at_ms.
    store.put_records(&unversioned(&records), 20).await.expect("replay");
    assert_eq!(common::count(&uri, &db, HISTORY).await, n);
    assert_eq!(common::count(&uri, &db, CONSENSUS).await, n);
    assert_eq!(store.list_records(None, Some(11)).await.expect("since").len(), 0);

    // One record changes: one more history entry, stamped.
    let mut changed = records[0].clone();
    changed.status = vex_lens::domain::consensus::ConsensusStatus::Disputed;
    let changed = with_digest(changed);
    store.put_records(&unversioned(std::slice::from_ref(&changed)), 30).await.expect("change");
    store.put_records(&unversioned(std::slice::from_ref(&changed)), 40).await.expect("change replay");
    assert_eq!(common::count(&uri, &db, HISTORY).await, n + 1);
    let since = store.list_records(None, Some(30)).await.expect("since");
    assert_eq!(since, vec![changed.clone()]);
    assert_eq!(store.list_records(Some("other"), None).await.expect("tenant").len(), 0);
    assert_eq!(store.list_records(Some("default"), None).await.expect("tenant").len() as u64, n);
    common::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn conflict_queue_tracks_open_conflicts() {
    let Some((store, uri, db)) = fresh_store("conflicts").await else { return };
    let records = corpus_records("default");
    let with_conflicts = records.iter().filter(|r| !r.conflicts.is_empty()).count() as u64;
    store.put_records(&unversioned(&records), 1).await.expect("put");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), with_conflicts);

    let mut r = records.iter().find(|r| r.conflicts.is_empty()).expect("a record without conflicts").clone();
    r.conflicts = vec![Conflict {
        reason: ConflictReason::StatusDisagreement,
        detail: "a vs b".into(),
        issuers: vec!["a".into(), "b".into()],
        statuses: vec![Status::Affected, Status::NotAffected],
    }];
    let opened = with_digest(r.clone());
    store.put_records(&unversioned(std::slice::from_ref(&opened)), 2).await.expect("open");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), with_conflicts + 1);
    r.conflicts.clear();
    let resolved = with_digest(r);
    store.put_records(&unversioned(std::slice::from_ref(&resolved)), 3).await.expect("resolve");
    assert_eq!(store.conflict_queue_depth().await.expect("depth"), with_conflicts);
    assert_eq!(common::count(&uri, &db, CONFLICT_QUEUE).await, with_conflicts);
    common::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn observations_keep_first_provenance_and_rebuild_packages() {
    let Some((store, uri, db)) = fresh_store("observations").await else { return };
    let files = common::corpus_files(&["openvex", "csaf", "cyclonedx"]);
    let mut first = common::observations_of(&files, "t1");
    for (i, o) in first.iter_mut().enumerate() {
        o.provenance.source = Some(format!("kafka:docs/{}@{}", i % 6, i));
    }
    store.put_observations(&first).await.expect("put");
    let mut second = first.clone();
    for o in &mut second {
        o.provenance.source = Some("kafka:docs/0@999999".into());
    }
    store.put_observations(&second).await.expect("replay");
    let unique: std::collections::BTreeSet<&str> = first.iter().map(|o| &*o.id).collect();
    assert_eq!(common::count(&uri, &db, OBSERVATIONS).await, unique.len() as u64);

    // Every package is rebuilt by one indexed find.
    let mut per_package: std::collections::BTreeMap<&str, Vec<&vex_lens::domain::model::Observation>> =
        Default::default();
    for o in &first {
        per_package.entry(&*o.package).or_default().push(o);
    }
    let packages: Vec<&str> = per_package.keys().copied().collect();
    for p in &packages {
        let rebuilt = store.observations_for_package("t1", p).await.expect("rebuild");
        let mut want: Vec<&vex_lens::domain::model::Observation> = per_package[p].clone();
        want.sort_by(|a, b| a.id.cmp(&b.id));
        want.dedup_by(|a, b| a.id == b.id);
        assert_eq!(rebuilt.iter().collect::<Vec<_>>(), want, "package {p}: rebuilt observations differ");
        // Rebuilt state gives the same records.
        let want_owned: Vec<_> = want.into_iter().cloned().collect();
        assert_eq!(common::batch_records(rebuilt), common::batch_records(want_owned));
    }
    assert!(store.observations_for_package("t2", packages[0]).await.expect("other tenant").is_empty());
    common::drop_db(&uri, &db).await;
}

/// The generic port contract (src/stores/contract.rs), the same the embedded store passes.
#[tokio::test]
async fn store_contract_suite_passes() {
    let Some((store, uri, db)) = fresh_store("contract").await else { return };
    vex_lens::stores::contract::store_contract_suite(&store).await;
    common::drop_db(&uri, &db).await;
}

/// The schema role and the upgrade (src/stores/contract.rs), on a fresh database.
#[tokio::test]
async fn schema_contract_passes() {
    let Some((store, uri, db)) = fresh_store("schema").await else { return };
    vex_lens::stores::contract::schema_contract(&store).await;
    common::drop_db(&uri, &db).await;
}

#[tokio::test]
async fn verifications_upsert_by_digest() {
    let Some((store, uri, db)) = fresh_store("dsse").await else { return };
    let mut v = VerificationRecord {
        envelope_digest: "sha256:00ff".into(),
        kind: None,
        issuer: Some("acme".into()),
        keyid: None,
        result: vex_lens::domain::model::SignatureStatus::Failed,
        reason: Some(vex_lens::domain::codes::SignatureReason::BadSignature),
        verified_at_ms: 5,
        source: Some("kafka:t/0@1".into()),
    };
    store.put_verification(&v).await.expect("put");
    v.result = vex_lens::domain::model::SignatureStatus::Verified;
    store.put_verification(&v).await.expect("put again");
    assert_eq!(common::count(&uri, &db, DSSE_VERIFICATIONS).await, 1);
    store.ping().await.expect("ping");
    store.init().await.expect("init is idempotent");
    common::drop_db(&uri, &db).await;
}

/// Needs no server: nothing listens on port 1, so operations fail fast and retriably.
#[tokio::test]
async fn unreachable_server_is_unavailable_quickly() {
    let store =
        MongoStore::connect("mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1500", "x").await.expect("connect");
    let start = Instant::now();
    let err = store.ping().await.expect_err("nothing listens on port 1");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    assert!(err.is_retriable());
    assert!(start.elapsed() < Duration::from_secs(10), "took {:?}", start.elapsed());
    let err = store.put_records(&unversioned(&corpus_records("x")[..1]), 1).await.expect_err("down");
    assert!(err.is_retriable(), "{err:?}");
}

/// `init` creates the secondary indexes the reads need, and a package rebuild is one
/// indexed find (the server's plan uses the (tenant, package) index, not a scan).
#[tokio::test]
async fn init_creates_indexes_and_rebuilds_use_them() {
    let Some((store, uri, db)) = fresh_store("indexes").await else { return };
    let database = store.database();
    for (collection, index) in [
        (OBSERVATIONS, "tenant_package"),
        (CONSENSUS, "tenant_changed_at"),
        (CONSENSUS, "tenant_artifact_vulnerability"),
        (CONSENSUS, "tenant_package_artifact"),
        (HISTORY, "pair_changed_at"),
        (CONFLICT_QUEUE, "tenant_reason"),
    ] {
        let names = database.collection::<mongodb::bson::Document>(collection).list_index_names().await.expect("list");
        assert!(names.iter().any(|n| n == index), "{collection} lacks index {index}: {names:?}");
    }
    // An index no query reads is dropped by `init` (each write would keep it up to date).
    let consensus = database.collection::<mongodb::bson::Document>(CONSENSUS);
    consensus
        .create_index(
            mongodb::IndexModel::builder()
                .keys(mongodb::bson::doc! { "artifact": 1, "vulnerability": 1 })
                .options(mongodb::options::IndexOptions::builder().name("artifact_vulnerability".to_string()).build())
                .build(),
        )
        .await
        .expect("old index");
    store.init().await.expect("init again");
    let names = consensus.list_index_names().await.expect("list");
    assert!(!names.iter().any(|n| n == "artifact_vulnerability"), "the unread index is still there: {names:?}");
    let files = common::corpus_files(&["openvex"]);
    let obs = common::observations_of(&files, "t1");
    store.put_observations(&obs).await.expect("put");
    let explain = database
        .run_command(mongodb::bson::doc! {
            "explain": { "find": OBSERVATIONS, "filter": { "tenant": "t1", "package": &*obs[0].package } },
            "verbosity": "queryPlanner",
        })
        .await
        .expect("explain");
    let plan = explain.to_string();
    assert!(plan.contains("IXSCAN") && plan.contains("tenant_package"), "rebuild does not use the index: {plan}");
    assert!(!plan.contains("COLLSCAN"), "rebuild scans the collection: {plan}");
    common::drop_db(&uri, &db).await;
}

/// The change stream with several instances at once: two writers (separate packages, one
/// writing with earlier timestamps than the other, as a late commit would) write while
/// three readers, each on its own connection as separate instances would be, sequence
/// and read concurrently. Every reader sees the same dense positions 1..=n, each history
/// entry exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn change_stream_positions_are_dense_and_agree_across_instances() {
    let Some((store, uri, db)) = fresh_store("changes").await else { return };
    let records: Vec<ConsensusRecord> = corpus_records("acme").into_iter().take(24).collect();
    let (left, right) = records.split_at(records.len() / 2);
    const ROUNDS: u64 = 3;
    let write = |part: Vec<ConsensusRecord>, base: i64| {
        let store = store.clone();
        tokio::spawn(async move {
            for k in 0..ROUNDS {
                let versions: Vec<ConsensusRecord> = part
                    .iter()
                    .map(|r| {
                        let mut v = r.clone();
                        v.confidence_ppm = k;
                        with_digest(v)
                    })
                    .collect();
                for chunk in versions.chunks(5) {
                    store.put_records(&unversioned(chunk), base + k as i64).await.expect("put_records");
                }
            }
        })
    };
    let writers = [write(left.to_vec(), 50_000), write(right.to_vec(), 1_000)];
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (uri, db, done) = (uri.clone(), db.clone(), done.clone());
        readers.push(tokio::spawn(async move {
            let store = MongoStore::connect(&uri, &db).await.expect("connect");
            let mut seen = Vec::new();
            loop {
                let finished = done.load(std::sync::atomic::Ordering::Acquire);
                let after = seen.len() as u64;
                let batch = store.changes_after("acme", after, 50).await.expect("changes_after");
                if batch.is_empty() && finished {
                    return seen;
                }
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                seen.extend(
                    batch
                        .into_iter()
                        .map(|e| (e.seq, e.entry.record.artifact, e.entry.record.vulnerability, e.entry.changed_at_ms)),
                );
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    let mut views = Vec::new();
    for r in readers {
        views.push(r.await.expect("reader"));
    }
    let n = records.len() as u64 * ROUNDS;
    assert_eq!(common::count(&uri, &db, HISTORY).await, n, "fixture: every version is a history entry");
    for v in &views {
        assert_eq!(v.iter().map(|e| e.0).collect::<Vec<_>>(), (1..=n).collect::<Vec<_>>(), "dense positions");
        let distinct: std::collections::BTreeSet<_> = v.iter().map(|e| (&e.1, &e.2, e.3)).collect();
        assert_eq!(distinct.len() as u64, n, "each history entry exactly once");
    }
    assert!(views.windows(2).all(|w| w[0] == w[1]), "every reader sees the same stream");
    assert_eq!(store.change_tail("acme").await.unwrap(), n);
    assert_eq!(store.change_tail("globex").await.unwrap(), 0, "positions are per tenant");
    common::drop_db(&uri, &db).await;
}

/// Two writers of the same new pairs at once (two instances around a rebalance): each
/// tries to insert the records it found absent; whichever comes second gets a duplicate
/// key and falls back to the conditional write, so the higher version ends stored for
/// every pair and has its history entry, whatever the interleaving.
#[tokio::test]
async fn racing_writers_of_new_pairs_leave_the_higher_version() {
    let Some((a, uri, db)) = fresh_store("race").await else { return };
    let b = MongoStore::connect(&uri, &db).await.expect("connect");
    let low = corpus_records("race");
    let high: Vec<ConsensusRecord> = low
        .iter()
        .cloned()
        .map(|mut r| {
            r.confidence_ppm = r.confidence_ppm / 2 + 1;
            with_digest(r)
        })
        .collect();
    let at = |records: &[ConsensusRecord], offset: i64| -> Vec<VersionedRecord> {
        let v = RecordVersion { epoch: 0, offset, observations: 1 };
        records.iter().cloned().map(|r| VersionedRecord::new(r, v)).collect()
    };
    let (low_v, high_v) = (at(&low, 10), at(&high, 20));
    let (ra, rb) = tokio::join!(a.put_records(&low_v, 1_000), b.put_records(&high_v, 2_000));
    ra.expect("low writer");
    rb.expect("high writer");
    for r in &high {
        let stored = a.get_record(&r.pair()).await.expect("get").expect("stored");
        assert_eq!(stored.consensus_digest, r.consensus_digest, "the higher version is stored");
        let history = a.record_history(&r.pair()).await.expect("history");
        assert!(
            history.iter().any(|t| t.record.consensus_digest == r.consensus_digest && t.changed_at_ms == 2_000),
            "the winning write has its history entry"
        );
    }
    // A late replay of the low version changes nothing.
    a.put_records(&low_v, 3_000).await.expect("late low writer");
    for r in &high {
        let stored = a.get_record(&r.pair()).await.expect("get").expect("stored");
        assert_eq!(stored.consensus_digest, r.consensus_digest, "a stale replay loses");
    }
    common::drop_db(&uri, &db).await;
}

/// A crash between the policy's compare-and-set and the copy of its audit entry (no
/// multi-document transaction on a standalone MongoDB): the policy document carries the
/// entry, so the change is never without it; `repair_trust_audit` (start-up, every trust
/// poll) writes it, exactly once.
#[tokio::test]
async fn a_trust_change_cut_short_before_its_audit_entry_is_repaired() {
    use vex_lens::domain::trust::{Policy, TenantTrust, Tier, TrustChange};
    use vex_lens::ports::TrustAudit;
    use vex_lens::stores::mongo::{TRUST_AUDIT, TRUST_POLICIES};
    let Some((store, uri, db)) = fresh_store("trust_audit_repair").await else { return };
    let seed = TenantTrust::new("t");
    let change = TrustChange::Issuer { id: "vendor.example".into(), tier: Some(Tier::Trusted), weight: None };
    let next = seed.changed(&Policy::default(), &change).expect("change applies");
    let audit = TrustAudit {
        tenant: "t".into(),
        epoch: 1,
        at_ms: 7,
        who: "alice".into(),
        kind: vex_lens::domain::trust::TrustChangeKind::Issuer,
        issuer: Some("vendor.example".into()),
        reason: Some("vetted".into()),
        before: seed,
        after: next.clone(),
    };
    assert!(store.put_trust_policy(&next, &audit).await.expect("put_trust_policy"));
    assert_eq!(store.repair_trust_audit().await.expect("repair"), 0, "nothing to repair after a whole write");
    // The state a crash after the compare-and-set leaves: the entry not yet copied.
    let database = store.database();
    let audit_coll = database.collection::<mongodb::bson::Document>(TRUST_AUDIT);
    audit_coll.delete_many(mongodb::bson::doc! {}).await.expect("delete");
    database
        .collection::<mongodb::bson::Document>(TRUST_POLICIES)
        .update_one(mongodb::bson::doc! { "_id": "t" }, mongodb::bson::doc! { "$set": { "audit_written": false } })
        .await
        .expect("update");
    assert!(store.trust_audit("t").await.expect("trust_audit").is_empty());
    assert_eq!(store.repair_trust_audit().await.expect("repair"), 1, "the carried entry is written");
    assert_eq!(store.trust_audit("t").await.expect("trust_audit"), vec![audit.clone()], "exactly the change's entry");
    assert_eq!(store.repair_trust_audit().await.expect("repair"), 0, "repaired once");
    assert_eq!(store.trust_audit("t").await.expect("trust_audit"), vec![audit]);
    common::drop_db(&uri, &db).await;
}

/// History written before the change stream existed (no `stream_seq`) is streamed: `init`
/// queues it once (`vex_meta`), and a consumer that starts from 0 gets it.
#[tokio::test]
async fn history_written_before_the_change_stream_is_streamed() {
    use vex_lens::stores::mongo::META;
    let Some((store, uri, db)) = fresh_store("stream_backfill").await else { return };
    let records = corpus_records("old");
    store.put_records(&unversioned(&records[..3]), 1_000).await.expect("put_records");
    // The state a build before the change stream left: history without positions.
    let database = store.database();
    database
        .collection::<mongodb::bson::Document>(HISTORY)
        .update_many(mongodb::bson::doc! {}, mongodb::bson::doc! { "$unset": { "stream_seq": "" } })
        .await
        .expect("unset");
    database.collection::<mongodb::bson::Document>(META).delete_many(mongodb::bson::doc! {}).await.expect("delete");
    assert!(store.changes_after("old", 0, 100).await.expect("changes").is_empty(), "not streamed before init");
    store.init().await.expect("init");
    let events = store.changes_after("old", 0, 100).await.expect("changes");
    assert_eq!(events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2, 3], "every old entry, once");
    store.init().await.expect("init again");
    assert_eq!(store.changes_after("old", 0, 100).await.expect("changes").len(), 3, "queued once");
    common::drop_db(&uri, &db).await;
}

/// A version of document `doc` of issuer `issuer` (tenant `t`) naming `packages`.
fn doc_version(
    issuer: Option<&str>,
    doc: &str,
    n: u32,
    packages: &[&str],
) -> vex_lens::domain::ledger::DocumentVersion {
    use vex_lens::domain::ledger::{DocumentKey, DocumentVersion};
    DocumentVersion {
        key: DocumentKey { tenant: "t".into(), issuer: issuer.map(Into::into), document_id: doc.into() },
        digest: format!("sha256:{}", vex_lens::domain::canonical::sha256_hex(format!("{doc}{n}").as_bytes())),
        version: Some(n.to_string()),
        format: vex_lens::domain::model::SourceFormat::Openvex,
        newest: vex_lens::domain::timestamp::Timestamp::parse("2024-01-01T00:00:00Z").unwrap(),
        packages: packages.iter().map(|p| p.to_string()).collect(),
    }
}

/// A store written with the ledger's earlier layout (one MongoDB document per version in
/// `vex_document_versions`, as 93ac526 to ec7798d wrote it) has its versions moved into
/// one ledger entry per document by `init`, which then drops the old collection; the
/// next version recorded sees them, and a second `init` changes nothing.
#[tokio::test]
async fn document_versions_of_the_earlier_layout_are_moved_into_the_ledger() {
    use mongodb::bson::{doc, Bson, Document};
    use vex_lens::ports::DocumentLedger;
    use vex_lens::stores::mongo::{DOCUMENT_LEDGER, LEGACY_DOCUMENT_VERSIONS};
    let Some((store, uri, db)) = fresh_store("ledger_move").await else { return };
    let old = [
        doc_version(Some("acme"), "a", 1, &["pkg:npm/x", "pkg:npm/y"]),
        doc_version(Some("acme"), "a", 2, &["pkg:npm/x"]),
        doc_version(None, "b", 1, &["pkg:npm/z"]),
    ];
    // The earlier layout, field for field.
    let legacy: Vec<Document> = old
        .iter()
        .map(|v| {
            let id_input = serde_json::to_vec(&(&v.key, &v.digest)).unwrap();
            let issuer = v.key.issuer.as_deref().map_or(Bson::Null, |i| Bson::String(i.to_string()));
            doc! {
                "_id": vex_lens::domain::canonical::sha256_hex(&id_input),
                "tenant": &v.key.tenant, "issuer": issuer, "document_id": &v.key.document_id,
                "digest": &v.digest, "version_json": serde_json::to_string(v).unwrap(),
            }
        })
        .collect();
    let database = store.database();
    database.collection::<Document>(LEGACY_DOCUMENT_VERSIONS).insert_many(legacy).await.expect("insert legacy");
    store.init().await.expect("init moves the versions");
    let names = database.list_collection_names().await.expect("collections");
    assert!(!names.iter().any(|n| n == LEGACY_DOCUMENT_VERSIONS), "the old collection is dropped: {names:?}");
    assert_eq!(database.collection::<Document>(DOCUMENT_LEDGER).count_documents(doc! {}).await.unwrap(), 2);
    let v3 = doc_version(Some("acme"), "a", 3, &["pkg:npm/y"]);
    let mut want = vec![old[0].clone(), old[1].clone(), v3.clone()];
    want.sort_by(|a, b| a.digest.cmp(&b.digest));
    assert_eq!(store.record_version(&v3).await.expect("record"), want, "the moved versions are seen");
    assert_eq!(store.record_version(&old[2]).await.expect("record"), [old[2].clone()], "an issuer-less document");
    store.init().await.expect("init again");
    assert_eq!(store.record_version(&v3).await.expect("record"), want, "a second init changes nothing");
    common::drop_db(&uri, &db).await;
}

/// Versions of one new document recorded at the same time by two instances (two
/// connections, 8 at once, 20 documents): every answer holds its own version, of any two
/// versions at least one answer holds the other (so the markers owed add up,
/// CONSENSUS.md), and each document is one ledger entry holding all of them. (SecantusDB
/// answers the losers of such a race with no document: `ledger.rs` asks again.)
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_versions_of_one_document_see_each_other() {
    use vex_lens::ports::DocumentLedger;
    let Some((store, uri, db)) = fresh_store("ledger_race").await else { return };
    let other = MongoStore::connect(&uri, &db).await.expect("connect");
    for d in 0..20 {
        let doc = format!("race-{d}");
        let versions: Vec<_> = (1..=8).map(|n| doc_version(Some("acme"), &doc, n, &["pkg:npm/x"])).collect();
        let tasks: Vec<_> = versions
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let (s, v) = (if i % 2 == 0 { store.clone() } else { other.clone() }, v.clone());
                tokio::spawn(async move { s.record_version(&v).await.expect("record") })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.expect("join"));
        }
        for (i, a) in answers.iter().enumerate() {
            assert!(a.contains(&versions[i]), "{doc}: answer {i} holds its own version");
            for j in 0..i {
                assert!(a.contains(&versions[j]) || answers[j].contains(&versions[i]), "{doc}: {i} and {j}");
            }
        }
        assert_eq!(store.record_version(&versions[0]).await.expect("record").len(), 8, "{doc}: every version, once");
    }
    let entries = store
        .database()
        .collection::<mongodb::bson::Document>(vex_lens::stores::mongo::DOCUMENT_LEDGER)
        .count_documents(mongodb::bson::doc! {})
        .await
        .unwrap();
    assert_eq!(entries, 20, "one entry per document");
    common::drop_db(&uri, &db).await;
}
