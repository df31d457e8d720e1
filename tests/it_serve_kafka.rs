//! `vex-lens serve` end to end against the real Kafka and MongoDB-wire server: kcat (an
//! independent producer) writes VEX documents to a fresh topic, serve runs as a child
//! process, and the results are read back from MongoDB.
//!
//! Scenarios (issue 3): the corpus gives the same records as `vex-lens consensus`, digest
//! for digest; poison messages go to the DLQ with reason headers while the good ones
//! around them are processed; kill -9 in the middle of a large produce and a restart give
//! the state of a clean run; two instances in one consumer group share the partitions and
//! one takes over when the other stops. (The MongoDB outage is in it_serve_mongo_outage.rs:
//! it stops the shared server, so it runs on its own.)

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{Serve, ServeSetup};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use vex_lens::domain::consensus::ConsensusRecord;

/// The scenarios run one at a time: four pipelines (plus the other test binaries) on
/// two cores slow each other past their deadlines.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

const READY: Duration = Duration::from_secs(90);
const CONVERGE: Duration = Duration::from_secs(300);

/// A short session timeout so a stopped member's partitions move quickly.
const SHORT_SESSION: &[(&str, &str)] =
    &[("VEXLENS_KAFKA__SESSION_TIMEOUT_MS", "6000"), ("VEXLENS_KAFKA__DRAIN_TIMEOUT_MS", "3000")];

fn setup(test: &str) -> Option<(ServeSetup, std::sync::MutexGuard<'static, ()>)> {
    let services = common::services()?;
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    Some((ServeSetup::fresh(&services, test), guard))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime")
}

/// Waits until the stored records equal `want` digest for digest (and every serve is
/// still running); returns the time it took.
fn wait_for_records(setup: &ServeSetup, want: &[ConsensusRecord], serves: &mut [&mut Serve]) -> Duration {
    let rt = rt();
    let start = Instant::now();
    let want_set: BTreeSet<(String, String)> = want
        .iter()
        .map(|r| (format!("{}|{}|{}", r.tenant, r.artifact, r.vulnerability), r.consensus_digest.clone()))
        .collect();
    let mut last = 0usize;
    loop {
        let got = rt.block_on(common::stored_records(&setup.services.mongo_uri, &setup.db));
        let got_set: BTreeSet<(String, String)> = got
            .iter()
            .map(|r| (format!("{}|{}|{}", r.tenant, r.artifact, r.vulnerability), r.consensus_digest.clone()))
            .collect();
        if got_set == want_set {
            return start.elapsed();
        }
        last = got_set.intersection(&want_set).count().max(last);
        for s in serves.iter_mut() {
            assert!(s.is_running(), "vex-lens serve exited; log:\n{}", s.log_tail());
        }
        if start.elapsed() > CONVERGE {
            let logs: Vec<String> = serves.iter().map(|s| s.log_tail()).collect();
            common::assert_same_records(&got, want);
            panic!("records did not converge (best {last}/{}); logs:\n{}", want.len(), logs.join("\n----\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every observation of the documents is stored exactly once.
fn assert_observations(setup: &ServeSetup, files: &[PathBuf], tenant: &str) {
    let unique: BTreeSet<String> =
        common::observations_of(files, tenant).into_iter().map(|o| o.id.to_string()).collect();
    let n = rt().block_on(common::count(&setup.services.mongo_uri, &setup.db, vex_lens::stores::mongo::OBSERVATIONS));
    assert_eq!(n, unique.len() as u64, "vex_observations holds {n}, the documents have {} distinct", unique.len());
}

fn cleanup(setup: &ServeSetup) {
    rt().block_on(common::drop_db(&setup.services.mongo_uri, &setup.db));
}

#[test]
fn corpus_via_kcat_equals_cli_consensus() {
    let Some((setup, _serial)) = setup("corpus") else { return };
    let files = common::corpus_files(&["openvex", "csaf", "cyclonedx"]);
    let want = common::cli_consensus(&files, "acme");
    let mut serve = Serve::start(&setup, "a", &[]);
    serve.wait_ready(READY);
    let t0 = Instant::now();
    common::kcat_produce_files(&setup.services.brokers, &setup.topic, &[("tenant", "acme")], &files);
    let took = wait_for_records(&setup, &want, &mut [&mut serve]);
    eprintln!("{} documents -> {} records in {:?} (produce + consensus)", files.len(), want.len(), t0.elapsed());
    let _ = took;
    assert_observations(&setup, &files, "acme");
    // The bus names each observation's tenant in a `tenant` header (the observations
    // consumer dead-letters one whose header and body disagree).
    let headers = common::kcat_consume(&setup.services.brokers, &setup.observations_topic, "%h\n");
    let headers: Vec<&str> = headers.lines().filter(|l| !l.is_empty()).collect();
    assert!(!headers.is_empty(), "no observation read back from {}", setup.observations_topic);
    for h in &headers {
        let tenants: Vec<&str> = h.split(',').filter_map(|kv| kv.strip_prefix("tenant=")).collect();
        assert_eq!(tenants, ["acme"], "one tenant header, the observation's: {h}");
    }
    assert_eq!(common::kcat_count(&setup.services.brokers, &setup.dlq_topic), 0, "no document is dead-lettered");
    let metrics = serve.get("/metrics").expect("metrics").1;
    assert!(metrics.contains("vex_consensus_latency_seconds"), "metrics:\n{metrics}");
    assert!(serve.terminate(Duration::from_secs(30)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    cleanup(&setup);
}

#[test]
fn poison_messages_are_dead_lettered_with_reasons() {
    let Some((setup, _serial)) = setup("poison") else { return };
    let good = common::corpus_files(&["openvex"]);
    let (first, second) = good.split_at(good.len() / 2);
    let dir = tempfile::tempdir().expect("tempdir");
    let invalid = dir.path().join("invalid.json");
    std::fs::write(&invalid, b"{\"@context\": \"https://openvex.dev/ns\", oops").unwrap();
    let garbage = dir.path().join("garbage.bin");
    std::fs::write(&garbage, (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>())
        .unwrap();
    let big = dir.path().join("big.json");
    let mut doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&first[0]).unwrap()).unwrap();
    doc["padding"] = serde_json::Value::String("x".repeat(10 * 1024 * 1024));
    std::fs::write(&big, serde_json::to_vec(&doc).unwrap()).unwrap();
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, br#"{"hello": "world", "statements": 5}"#).unwrap();

    let mut serve = Serve::start(&setup, "a", &[]);
    serve.wait_ready(READY);
    let b = &setup.services.brokers;
    common::kcat_produce_files(b, &setup.topic, &[("tenant", "t")], first);
    for (i, f) in [&invalid, &garbage, &big, &wrong].iter().enumerate() {
        common::kcat_produce_file(
            b,
            &setup.topic,
            &format!("poison-{i}"),
            &[("tenant", "t"), ("correlation-id", "c1")],
            f,
        );
    }
    // A valid document under a tenant header the API could never name (issue 21 item 4),
    // without a correlation id: the service mints one and the dead letter carries it.
    common::kcat_produce_file(b, &setup.topic, "poison-4", &[("tenant", "bad/tenant")], &first[0]);
    common::kcat_produce_files(b, &setup.topic, &[("tenant", "t")], second);

    wait_for_records(&setup, &common::cli_consensus(&good, "t"), &mut [&mut serve]);
    assert_observations(&setup, &good, "t");

    let mut dlq = String::new();
    let ok = common::wait_until(Duration::from_secs(60), || {
        dlq = common::kcat_consume(b, &setup.dlq_topic, "%k\t%S\t%h\n");
        dlq.lines().filter(|l| !l.is_empty()).count() >= 5
    });
    assert!(ok, "DLQ holds:\n{dlq}");
    let mut reasons = std::collections::BTreeMap::new();
    for line in dlq.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, '\t');
        let (key, size, headers) = (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or(""));
        let header =
            |name: &str| headers.split(',').find_map(|h| h.strip_prefix(&format!("{name}="))).map(str::to_string);
        let reason = header("vex-lens-error").unwrap_or_else(|| panic!("{key}: no vex-lens-error header: {headers}"));
        assert!(header("vex-lens-error-detail").is_some_and(|d| !d.is_empty()), "{key}: no detail: {headers}");
        let correlation = header("correlation-id").unwrap_or_else(|| panic!("{key}: no correlation-id: {headers}"));
        if key == "poison-4" {
            assert_eq!(header("tenant").as_deref(), Some("bad/tenant"), "{key}: original headers kept: {headers}");
            assert!(correlation.len() == 32 && correlation.bytes().all(|c| c.is_ascii_hexdigit()), "minted: {headers}");
        } else {
            assert_eq!(header("tenant").as_deref(), Some("t"), "{key}: original headers kept: {headers}");
            assert_eq!(correlation, "c1", "{key}: the producer's id is kept: {headers}");
        }
        reasons.insert(key.to_string(), (reason, size.parse::<usize>().unwrap_or(0)));
    }
    eprintln!("DLQ: {reasons:?}");
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    assert_eq!(reasons["poison-4"].0, "invalid_tenant");
    assert_eq!(reasons["poison-0"].0, "invalid_json");
    assert_eq!(reasons["poison-1"].0, "invalid_json");
    assert_eq!(reasons["poison-2"].0, "too_large");
    assert!(reasons["poison-2"].1 > 10 * 1024 * 1024, "the original value is kept");
    assert_eq!(reasons["poison-3"].0, "not_vex");
    assert!(serve.terminate(Duration::from_secs(30)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    cleanup(&setup);
}

#[test]
fn kill9_mid_produce_then_restart_equals_clean_run() {
    let Some((setup, _serial)) = setup("kill9") else { return };
    // The whole vexhub corpus (56 documents, ~42k records) by default;
    // VEXLENS_IT_VEXHUB_FILES=N takes the first N documents.
    let n: usize = std::env::var("VEXLENS_IT_VEXHUB_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(usize::MAX);
    let mut files = common::corpus_files(&["vexhub"]);
    assert!(files.len() > 20, "vexhub corpus missing");
    files.truncate(n);
    let want = common::cli_consensus(&files, "default");
    let mut serve = Serve::start(&setup, "a", SHORT_SESSION);
    serve.wait_ready(READY);
    let (brokers, topic) = (setup.services.brokers.clone(), setup.topic.clone());
    let producer_files = files.clone();
    let t0 = Instant::now();
    let producer = std::thread::spawn(move || {
        for f in &producer_files {
            common::kcat_produce_file(&brokers, &topic, &f.display().to_string(), &[], f);
            std::thread::sleep(Duration::from_millis(400));
        }
    });
    // Kill once results have started to land, while documents are still arriving.
    let rt = rt();
    let started = common::wait_until(Duration::from_secs(120), || {
        rt.block_on(common::count(&setup.services.mongo_uri, &setup.db, vex_lens::stores::mongo::CONSENSUS)) > 0
    });
    assert!(started, "no record was written; log:\n{}", serve.log_tail());
    let at_kill = rt.block_on(common::count(&setup.services.mongo_uri, &setup.db, vex_lens::stores::mongo::CONSENSUS));
    serve.kill9();
    let producing = !producer.is_finished();
    eprintln!(
        "killed -9 after {:?} with {at_kill}/{} records; producer still running: {producing}",
        t0.elapsed(),
        want.len()
    );
    producer.join().expect("producer");
    let mut serve = Serve::start(&setup, "b", SHORT_SESSION);
    serve.wait_ready(READY);
    let took = wait_for_records(&setup, &want, &mut [&mut serve]);
    eprintln!("restart converged in {took:?}; total {:?}", t0.elapsed());
    assert_observations(&setup, &files, "default");
    assert!(serve.terminate(Duration::from_secs(30)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    cleanup(&setup);
}

#[test]
fn two_instances_share_partitions_and_take_over() {
    let Some((setup, _serial)) = setup("group") else { return };
    let files = common::corpus_files(&["openvex", "csaf", "cyclonedx"]);
    let (first, second) = files.split_at(files.len() / 2);
    let want = common::cli_consensus(&files, "default");
    let mut a = Serve::start(&setup, "a", SHORT_SESSION);
    let mut b = Serve::start(&setup, "b", SHORT_SESSION);
    a.wait_ready(READY);
    b.wait_ready(READY);
    let assigned = Serve::partitions_assigned;
    let both = common::wait_until(Duration::from_secs(60), || assigned(&a) > 0 && assigned(&b) > 0);
    assert!(both, "both instances must get partitions; logs:\n{}\n----\n{}", a.log_tail(), b.log_tail());
    common::kcat_produce_files(&setup.services.brokers, &setup.topic, &[], first);
    let half = common::cli_consensus(first, "default");
    wait_for_records(&setup, &half, &mut [&mut a, &mut b]);
    let before = assigned(&a);
    assert!(b.terminate(Duration::from_secs(30)), "SIGTERM: b did not exit 0; log:\n{}", b.log_tail());
    common::kcat_produce_files(&setup.services.brokers, &setup.topic, &[], second);
    wait_for_records(&setup, &want, &mut [&mut a]);
    assert!(assigned(&a) > before, "a must be reassigned b's partitions; log:\n{}", a.log_tail());
    assert_observations(&setup, &files, "default");
    assert!(a.terminate(Duration::from_secs(30)), "SIGTERM: a did not exit 0; log:\n{}", a.log_tail());
    cleanup(&setup);
}

/// Issue 17 item 4 through Kafka: version 2 of an OpenVEX and of a CSAF document (naming
/// no product of a package version 1 named) is produced first, version 1 after it: the
/// ledger (in MongoDB) owes version 2's markers on version 1's arrival, they travel on the
/// observations topic with the service's tag and are stored beside the package's
/// observations, and the stored records equal the batch over all four files (the claims
/// about the dropped packages retracted).
#[test]
fn a_version_dropping_a_package_retracts_through_kafka_in_either_order() {
    let Some((setup, _serial)) = setup("ledger") else { return };
    let fixtures = common::repo_dir().join("tests/fixtures/retraction");
    let file = |name: &str| fixtures.join(name);
    let (v2, v1) = ([file("openvex-v2.json"), file("csaf-v2.json")], [file("openvex-v1.json"), file("csaf-v1.json")]);
    let all: Vec<PathBuf> = v1.iter().chain(&v2).cloned().collect();
    let want = common::cli_consensus(&all, "t");
    let retracted: Vec<&ConsensusRecord> = want
        .iter()
        .filter(|r| r.statements.iter().any(|s| s.role == vex_lens::domain::consensus::Role::Retracted))
        .collect();
    assert_eq!(retracted.len(), 2, "the batch retracts v1's claims about the two dropped packages: {want:?}");
    let mut serve = Serve::start(&setup, "a", &[]);
    serve.wait_ready(READY);
    let b = &setup.services.brokers;
    common::kcat_produce_files(b, &setup.topic, &[("tenant", "t")], &v2);
    wait_for_records(&setup, &common::cli_consensus(&v2, "t"), &mut [&mut serve]);
    common::kcat_produce_files(b, &setup.topic, &[("tenant", "t")], &v1);
    wait_for_records(&setup, &want, &mut [&mut serve]);
    let rt = rt();
    let (uri, db) = (&setup.services.mongo_uri, &setup.db);
    let markers = rt.block_on(async {
        use futures::TryStreamExt;
        use vex_lens::ports::ObservationStore;
        let store = vex_lens::stores::mongo::MongoStore::connect(uri, db).await.expect("connect");
        let ledger = store.database().collection::<mongodb::bson::Document>(vex_lens::stores::mongo::DOCUMENT_LEDGER);
        let entries: Vec<_> =
            ledger.find(mongodb::bson::doc! {}).await.expect("find").try_collect().await.expect("read");
        let versions: Vec<usize> =
            entries.iter().map(|e| e.get_document("versions").expect("versions").len()).collect();
        assert_eq!(versions, [2, 2], "two documents in the ledger, two versions each: {entries:?}");
        let mut n = 0;
        for package in ["pkg:npm/b", "pkg:rpm/vendor/beta"] {
            let stored = store.observations_for_package("t", package).await.expect("observations");
            n += stored.iter().filter(|o| o.kind == vex_lens::domain::model::EntryKind::VersionMarker).count();
        }
        n
    });
    assert_eq!(markers, 2, "one version marker stored per dropped package");
    assert_eq!(common::kcat_count(b, &setup.dlq_topic), 0, "no document is dead-lettered");
    assert!(serve.terminate(Duration::from_secs(30)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    cleanup(&setup);
}
