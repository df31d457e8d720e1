//! At least once, really, on the real Kafka and the real MongoDB-wire server: the
//! observations consumer runs in-process (the same `sources::kafka::run` that `serve`
//! runs) over the real `MongoStore` wrapped in a test-only fault layer that makes
//! `put_records` fail retriably a few times and rejects (permanently) every
//! `put_observations` holding one poisoned observation. kcat publishes good
//! observations, the poisoned one and a message that is not JSON. Then: the writer is
//! not wedged (every good observation and its records become durable and equal the batch
//! computation, also those written in the same batch as the poisoned one), the two bad
//! messages are in the DLQ with their reasons (`store_rejected`, `invalid_json`), and the
//! group's committed offsets reach the end of every partition (nothing holds commits back).
//! And the byte bound on in-flight work (`kafka.max_in_flight_bytes`): large messages
//! are held one at a time under a small bound, nothing is lost.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{consumer_config, consumer_pipeline_settings, spawn_consumer, wait_committed, ServeSetup};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use vex_lens::actors::writer::WriterSettings;
use vex_lens::actors::{Pipeline, PipelineSettings};
use vex_lens::domain::consensus::{batch, ConsensusRecord, PairKey};
use vex_lens::domain::model::{Observation, Status};
use vex_lens::domain::trust::Policy;
use vex_lens::ports::{
    ChangeEvent, ObservationStore, RecordQuery, RecordStore, StoreError, Stores, TimedRecord, VersionedRecord,
};
use vex_lens::stores::contract::sample_observation;

const POISON: &str = "CVE-2099-0666";

/// The tests of this file one at a time (the in-flight gauge is process-wide).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The real store, with injected failures (test-only).
struct FaultStore {
    inner: Stores,
    /// `put_records` calls still to fail with a retriable error.
    record_failures: AtomicU32,
    rejected: AtomicU32,
}

/// Faults in the observations role: a poisoned observation is rejected.
#[async_trait::async_trait]
impl ObservationStore for FaultStore {
    async fn put_observations(&self, o: &[Observation]) -> Result<(), StoreError> {
        if o.iter().any(|o| *o.vulnerability == *POISON) {
            self.rejected.fetch_add(1, Ordering::SeqCst);
            return Err(StoreError::Rejected("injected: poisoned observation".into()));
        }
        self.inner.observations.put_observations(o).await
    }
    async fn observations_for_package(&self, t: &str, p: &str) -> Result<Vec<Observation>, StoreError> {
        self.inner.observations.observations_for_package(t, p).await
    }
    async fn tenant_packages(&self, t: &str) -> Result<Vec<String>, StoreError> {
        self.inner.observations.tenant_packages(t).await
    }
}

/// Faults in the records role: the first `record_failures` writes fail retriably.
#[async_trait::async_trait]
impl RecordStore for FaultStore {
    async fn put_records(&self, r: &[VersionedRecord], at: i64) -> Result<(), StoreError> {
        if self.record_failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
            return Err(StoreError::Unavailable("injected: store unavailable".into()));
        }
        self.inner.records.put_records(r, at).await
    }
    async fn get_record(&self, p: &PairKey) -> Result<Option<ConsensusRecord>, StoreError> {
        self.inner.records.get_record(p).await
    }
    async fn list_records(&self, t: Option<&str>, s: Option<i64>) -> Result<Vec<ConsensusRecord>, StoreError> {
        self.inner.records.list_records(t, s).await
    }
    async fn query_records(&self, q: &RecordQuery) -> Result<Vec<TimedRecord>, StoreError> {
        self.inner.records.query_records(q).await
    }
    async fn record_history(&self, p: &PairKey) -> Result<Vec<TimedRecord>, StoreError> {
        self.inner.records.record_history(p).await
    }
    async fn changes_after(&self, t: &str, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        self.inner.records.changes_after(t, after, limit).await
    }
    async fn change_tail(&self, t: &str) -> Result<u64, StoreError> {
        self.inner.records.change_tail(t).await
    }
}

fn good_observations() -> Vec<Observation> {
    let mut v = Vec::new();
    for (i, pkg) in ["alpha", "beta", "gamma"].iter().enumerate() {
        for j in 0..8 {
            let st = [Status::Affected, Status::NotAffected, Status::Fixed][(i + j) % 3];
            let artifact = format!("pkg:npm/{pkg}@1.{}.0", j % 3);
            v.push(sample_observation("t", &format!("issuer{}", j % 4), &artifact, &format!("CVE-2024-{}", j % 5), st));
        }
    }
    v
}

#[test]
fn failing_store_calls_and_a_poisoned_message_neither_lose_data_nor_freeze_commits() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let setup = ServeSetup::fresh(&services, "alo");
    let mut cfg = consumer_config(&setup, 3, 3_000);
    cfg.kafka.handler_max_attempts = 3;
    cfg.kafka.handler_retry_initial_ms = 50;
    cfg.kafka.handler_retry_max_ms = 200;
    cfg.validate().unwrap();
    let obs_dlq = cfg.kafka.observations_dlq();
    let good = good_observations();

    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, o) in good.iter().enumerate() {
        let path = tmp.path().join(format!("{i:03}.json"));
        std::fs::write(&path, serde_json::to_vec(o).unwrap()).unwrap();
        files.push((format!("t/{}", o.package), path));
    }
    let poison = sample_observation("t", "issuer0", "pkg:npm/beta@1.1.0", POISON, Status::Affected);
    let poison_path = tmp.path().join("poison.json");
    std::fs::write(&poison_path, serde_json::to_vec(&poison).unwrap()).unwrap();
    files.insert(7, ("t/pkg:npm/beta".into(), poison_path));
    let junk = tmp.path().join("junk.bin");
    std::fs::write(&junk, b"\x00\x01not json at all").unwrap();
    files.insert(3, ("t/pkg:npm/alpha".into(), junk));
    let produced = files.len() as i64;

    let sys = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    });
    let cfg = Arc::new(cfg);
    let (mongo_uri, db) = (services.mongo_uri.clone(), setup.db.clone());
    let (records, rejected, left) = sys.block_on(async move {
        let inner = vex_lens::stores::connect_mongo(&mongo_uri, &db).await.expect("connect");
        inner.admin.init().await.expect("init");
        let store = Arc::new(FaultStore { inner: inner.clone(), record_failures: 4.into(), rejected: 0.into() });
        let stores = Stores { observations: store.clone(), records: store.clone(), ..inner.clone() };
        let pipeline = Pipeline::start(stores, Arc::new(Policy::default()), consumer_pipeline_settings());
        vex_lens::sources::kafka::ensure_topics(&cfg).await.unwrap();
        let (stop, run) = spawn_consumer(&cfg, &pipeline, inner.ledger.clone());
        for (key, path) in &files {
            common::kcat_produce_file(
                &cfg.kafka.brokers.clone().unwrap(),
                &cfg.kafka.observations_topic,
                key,
                &[],
                path,
            );
        }
        let committed = wait_committed(&cfg, 3, produced, Duration::from_secs(120)).await;
        assert_eq!(committed, produced, "the group's commits reach the end of the topic");
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), run).await.expect("consumer stops").unwrap().unwrap();
        pipeline.drain().await.unwrap();
        (
            inner.records.list_records(None, None).await.unwrap(),
            store.rejected.load(Ordering::SeqCst),
            store.record_failures.load(Ordering::SeqCst),
        )
    });
    assert_eq!(left, 0, "the injected retriable failures happened (and were retried)");
    assert!(rejected >= 1, "the poisoned observation reached the store");
    let (want, _) = batch(good, &Policy::default(), false);
    common::assert_same_records(&records, &want);
    // Both bad messages are dead-lettered with their reasons, nothing else.
    let dlq = common::kcat_consume(&services.brokers, &obs_dlq, "%h\n");
    let lines: Vec<&str> = dlq.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "{dlq}");
    assert!(lines.iter().any(|l| l.contains("vex-lens-error=invalid_json")), "{dlq}");
    assert!(lines.iter().any(|l| l.contains("vex-lens-error=store_rejected")), "{dlq}");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}

/// One run of the observations consumer over `obs` (produced by kcat), with
/// `kafka.max_in_flight_bytes = bound`: returns the stored records and the most
/// observations in flight at once (`vex_observations_in_flight`, sampled every 2 ms).
fn run_with_byte_bound(
    services: &common::Services,
    test: &str,
    obs: &[Observation],
    bound: usize,
) -> (Vec<ConsensusRecord>, i64) {
    let setup = ServeSetup::fresh(services, test);
    let mut cfg = consumer_config(&setup, 3, 3_000);
    cfg.kafka.max_in_flight_bytes = bound;
    cfg.validate().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<(String, std::path::PathBuf)> = obs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let path = tmp.path().join(format!("{i:03}.json"));
            std::fs::write(&path, serde_json::to_vec(o).unwrap()).unwrap();
            (format!("{}/{}", o.tenant, o.package), path)
        })
        .collect();
    let sys = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
    });
    let cfg = Arc::new(cfg);
    let (mongo_uri, db) = (services.mongo_uri.clone(), setup.db.clone());
    let n = obs.len() as i64;
    let out = sys.block_on(async move {
        let store = vex_lens::stores::connect_mongo(&mongo_uri, &db).await.expect("connect");
        store.admin.init().await.expect("init");
        let defaults = consumer_pipeline_settings();
        let writer = WriterSettings { flush_after: Duration::from_millis(50), ..defaults.writer };
        let settings = PipelineSettings { writer, ..defaults };
        let pipeline = Pipeline::start(store.clone(), Arc::new(Policy::default()), settings);
        vex_lens::sources::kafka::ensure_topics(&cfg).await.unwrap();
        let brokers = cfg.kafka.brokers.clone().unwrap();
        // Everything is on the topic before the consumer starts: it could fetch it all.
        for (key, path) in &files {
            common::kcat_produce_file(&brokers, &cfg.kafka.observations_topic, key, &[], path);
        }
        // The gauge is sampled every millisecond on a thread of its own (not between
        // the commit checks below, which block for a while: a burst can pass unseen).
        let base = vex_lens::telemetry::metrics().observations_in_flight.get();
        let (max, sampling) = (Arc::new(AtomicI64::new(0)), Arc::new(AtomicBool::new(true)));
        let sampler = {
            let (max, sampling) = (max.clone(), sampling.clone());
            std::thread::spawn(move || {
                let gauge = &vex_lens::telemetry::metrics().observations_in_flight;
                while sampling.load(Ordering::SeqCst) {
                    max.fetch_max(gauge.get() - base, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(1));
                }
            })
        };
        let (stop, run) = spawn_consumer(&cfg, &pipeline, store.ledger.clone());
        let committed = wait_committed(&cfg, 3, n, Duration::from_secs(120)).await;
        sampling.store(false, Ordering::SeqCst);
        sampler.join().unwrap();
        let max = max.load(Ordering::SeqCst);
        assert_eq!(committed, n, "the group's commits reach the end of the topic");
        let _ = stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), run).await.expect("consumer stops").unwrap().unwrap();
        pipeline.drain().await.unwrap();
        (store.records.list_records(None, None).await.unwrap(), max)
    });
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
    out
}

/// In-flight work is bounded by payload bytes: with a bound below two messages, one
/// message at a time is in flight (the consumer pauses its assignment until the bytes
/// are released, then resumes), and nothing is lost; with the default bound the same
/// messages are in flight together (the control: the bound is what holds them back).
#[test]
fn a_byte_bound_holds_one_large_message_at_a_time_and_loses_nothing() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const SIZE: usize = 200 * 1024;
    let obs: Vec<Observation> = (0..16)
        .map(|i| {
            let mut o = sample_observation(
                "t",
                "issuer0",
                &format!("pkg:npm/big-{i}@1.0.0"),
                "CVE-2024-7000",
                Status::NotAffected,
            );
            o.impact_statement = Some(format!("{i} {}", "x".repeat(SIZE)).into());
            o.with_id().unwrap()
        })
        .collect();
    let (want, _) = batch(obs.clone(), &Policy::default(), false);
    // 300 KiB: one 200 KiB message fits, two do not.
    let (records, bounded) = run_with_byte_bound(&services, "bytes", &obs, 300 * 1024);
    common::assert_same_records(&records, &want);
    let (records, unbounded) = run_with_byte_bound(&services, "bytes_ctl", &obs, 64 << 20);
    common::assert_same_records(&records, &want);
    eprintln!(
        "most observations in flight: {bounded} with a 300 KiB bound, {unbounded} with 64 MiB ({SIZE}-byte messages)"
    );
    assert_eq!(bounded, 1, "a bound below two messages holds one at a time");
    assert!(unbounded > 1, "without the bound they are in flight together (control)");
}
