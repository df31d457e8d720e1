//! Fenced writes after a rebalance, on the real Kafka and the real MongoDB-wire server.
//!
//! - `a_revoked_instances_late_write_never_replaces_a_newer_record`: two consumers of one
//!   group in this process (the same `sources::kafka::run` that `serve` runs). The first
//!   owns every partition and applies a second batch of observations, but its store
//!   writer is held inside `put_records` (a test-only layer around the real `MongoStore`:
//!   a GC pause, a slow network), so the revocation's drain times out when the second
//!   consumer joins. The new owner rebuilds from the store, applies a third batch and
//!   writes the newest records; only then is the old owner's write released. The stored
//!   records must equal the batch computation of all three batches: without the record
//!   versions, the late write replaces the new owner's newer records.
//! - `a_rebalance_mid_burst_equals_a_clean_run`: two `vex-lens serve` processes in one
//!   group; the second starts in the middle of a burst of documents and is stopped
//!   (SIGTERM) in the middle of it; the stored records equal a clean single-instance run
//!   (`vex-lens consensus` over the same documents), digest for digest, every pair.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{consumer_config, consumer_pipeline_settings, spawn_consumer, wait_committed, Serve, ServeSetup};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vex_lens::actors::writer::WriterSettings;
use vex_lens::actors::{Pipeline, PipelineSettings};
use vex_lens::domain::consensus::{batch, ConsensusRecord, PairKey};
use vex_lens::domain::model::{Observation, Status};
use vex_lens::domain::trust::Policy;
use vex_lens::ports::{ChangeEvent, RecordQuery, RecordStore, StoreError, Stores, TimedRecord, VersionedRecord};
use vex_lens::stores::contract::sample_observation;

/// The two scenarios run one at a time (each runs two pipelines).
static SERIAL: Mutex<()> = Mutex::new(());

const PARTITIONS: i32 = 4;
const PACKAGES: usize = 12;

/// The real store, with a test-only hook on `put_records`: while `hold` is set, a call
/// waits until it is cleared (then writes); every call's records are recorded.
struct HookStore {
    inner: Arc<dyn RecordStore>,
    hold: tokio::sync::watch::Receiver<bool>,
    /// Calls that were held, and how many of those have returned since.
    held: AtomicU32,
    released: AtomicU32,
    /// Records of the held calls.
    held_records: Mutex<Vec<ConsensusRecord>>,
    /// Last digest written per pair (package, pair key), by any call that returned Ok.
    written: Mutex<HashMap<PairKey, (String, String)>>,
}

impl HookStore {
    fn new(inner: Arc<dyn RecordStore>, hold: tokio::sync::watch::Receiver<bool>) -> Self {
        HookStore {
            inner,
            hold,
            held: 0.into(),
            released: 0.into(),
            held_records: Mutex::new(Vec::new()),
            written: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait::async_trait]
impl RecordStore for HookStore {
    async fn put_records(&self, r: &[VersionedRecord], at: i64) -> Result<(), StoreError> {
        let mut hold = self.hold.clone();
        let was_held = *hold.borrow();
        if was_held {
            self.held.fetch_add(1, Ordering::SeqCst);
            self.held_records.lock().unwrap().extend(r.iter().map(|v| v.record.clone()));
            while *hold.borrow() {
                if hold.changed().await.is_err() {
                    break;
                }
            }
        }
        let result = self.inner.put_records(r, at).await;
        if result.is_ok() {
            let mut w = self.written.lock().unwrap();
            for v in r {
                w.insert(v.record.pair(), (v.record.package.clone(), v.record.consensus_digest.clone()));
            }
        }
        if was_held {
            self.released.fetch_add(1, Ordering::SeqCst);
        }
        result
    }
    async fn get_record(&self, p: &PairKey) -> Result<Option<ConsensusRecord>, StoreError> {
        self.inner.get_record(p).await
    }
    async fn list_records(&self, t: Option<&str>, s: Option<i64>) -> Result<Vec<ConsensusRecord>, StoreError> {
        self.inner.list_records(t, s).await
    }
    async fn query_records(&self, q: &RecordQuery) -> Result<Vec<TimedRecord>, StoreError> {
        self.inner.query_records(q).await
    }
    async fn record_history(&self, p: &PairKey) -> Result<Vec<TimedRecord>, StoreError> {
        self.inner.record_history(p).await
    }
    async fn changes_after(&self, t: &str, after: u64, limit: usize) -> Result<Vec<ChangeEvent>, StoreError> {
        self.inner.changes_after(t, after, limit).await
    }
    async fn change_tail(&self, t: &str) -> Result<u64, StoreError> {
        self.inner.change_tail(t).await
    }
}

fn package(i: usize) -> String {
    format!("pkg:npm/fence-{i}")
}

/// Batch `k` (1..=3): one more issuer's statement about every package's pair, so every
/// pair's record changes with every batch.
fn observations(k: usize) -> Vec<Observation> {
    (0..PACKAGES)
        .map(|i| {
            let st = [Status::Affected, Status::NotAffected, Status::Fixed][(i + k) % 3];
            sample_observation("t", &format!("issuer{k}"), &format!("{}@1.0.0", package(i)), "CVE-2024-1000", st)
        })
        .collect()
}

/// Produces observations keyed `<tenant>/<package>`; returns each package's partition.
async fn produce(brokers: &str, topic: &str, obs: &[Observation]) -> BTreeMap<String, i32> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    let mut partitions = BTreeMap::new();
    for o in obs {
        let key = format!("{}/{}", o.tenant, o.package);
        let value = serde_json::to_vec(o).unwrap();
        let record = FutureRecord::to(topic).key(&key).payload(&value);
        let delivery = producer.send(record, Duration::from_secs(30)).await.expect("produced");
        partitions.insert(o.package.to_string(), delivery.partition);
    }
    partitions
}

async fn wait_async(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One writer, batches of 256, retries up to 200 ms.
fn pipeline_settings() -> PipelineSettings {
    let defaults = consumer_pipeline_settings();
    let writer = WriterSettings {
        batch_max: 256,
        retry_max: Duration::from_millis(200),
        // Longer than the hold: a held call must not be abandoned and retried.
        store_timeout: Duration::from_secs(600),
        ..defaults.writer
    };
    PipelineSettings { writers: 1, writer, ..defaults }
}

#[test]
fn a_revoked_instances_late_write_never_replaces_a_newer_record() {
    let Some(services) = common::services() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let setup = ServeSetup::fresh(&services, "fence_late");
    // The revocation waits 1 s (the drain timeout) for the held write, then hands the
    // partitions over.
    let cfg = consumer_config(&setup, PARTITIONS, 1_000);
    cfg.validate().unwrap();
    let cfg = Arc::new(cfg);
    let all: Vec<Observation> = (1..=3).flat_map(observations).collect();
    let (want, _) = batch(all.clone(), &Policy::default(), false);
    let want_by_pair: HashMap<PairKey, String> = want.iter().map(|r| (r.pair(), r.consensus_digest.clone())).collect();

    let sys = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread().worker_threads(3).enable_all().build().unwrap()
    });
    let (mongo_uri, db) = (services.mongo_uri.clone(), setup.db.clone());
    let (stored, late_on_b, b_partitions) = sys.block_on(async move {
        let inner = vex_lens::stores::connect_mongo(&mongo_uri, &db).await.expect("connect");
        inner.admin.init().await.expect("init");
        vex_lens::sources::kafka::ensure_topics(&cfg).await.unwrap();
        let brokers = cfg.kafka.brokers.clone().unwrap();
        let topic = cfg.kafka.observations_topic.clone();

        // The first owner, alone: batch 1 is applied and committed.
        let (hold_a, hold_rx) = tokio::sync::watch::channel(false);
        let store_a = Arc::new(HookStore::new(inner.records.clone(), hold_rx));
        let stores_a = Stores { records: store_a.clone(), ..inner.clone() };
        let pipeline_a = Pipeline::start(stores_a, Arc::new(Policy::default()), pipeline_settings());
        let (stop_a, run_a) = spawn_consumer(&cfg, &pipeline_a, inner.ledger.clone());
        let partition_of = produce(&brokers, &topic, &observations(1)).await;
        let n = PACKAGES as i64;
        assert_eq!(wait_committed(&cfg, PARTITIONS, n, Duration::from_secs(120)).await, n, "batch 1 committed");

        // Batch 2: applied by the first owner, whose write is held.
        let _ = hold_a.send(true);
        produce(&brokers, &topic, &observations(2)).await;
        wait_async("the first owner's held write", Duration::from_secs(60), || {
            store_a.held.load(Ordering::SeqCst) >= 1
        })
        .await;

        // The second consumer joins: a rebalance while the write is held.
        let (_hold_b, hold_rx_b) = tokio::sync::watch::channel(false);
        let store_b = Arc::new(HookStore::new(inner.records.clone(), hold_rx_b));
        let stores_b = Stores { records: store_b.clone(), ..inner.clone() };
        let pipeline_b = Pipeline::start(stores_b, Arc::new(Policy::default()), pipeline_settings());
        let (stop_b, run_b) = spawn_consumer(&cfg, &pipeline_b, inner.ledger.clone());
        wait_async("the second owner's first write", Duration::from_secs(120), || {
            !store_b.written.lock().unwrap().is_empty()
        })
        .await;
        produce(&brokers, &topic, &observations(3)).await;

        // The new owner has written the final records of every package on its partitions.
        let b_done = || {
            let w = store_b.written.lock().unwrap();
            let parts: BTreeSet<i32> = w.values().map(|(p, _)| partition_of[p]).collect();
            let mine: Vec<&PairKey> =
                want_by_pair.keys().filter(|k| parts.contains(&partition_of[&package_of(&k.artifact)])).collect();
            !parts.is_empty() && mine.iter().all(|k| w.get(*k).is_some_and(|(_, d)| *d == want_by_pair[*k]))
        };
        wait_async("the new owner's final records", Duration::from_secs(180), b_done).await;
        let b_partitions: BTreeSet<i32> =
            store_b.written.lock().unwrap().values().map(|(p, _)| partition_of[p]).collect();

        // Now the old owner's write lands (late).
        let _ = hold_a.send(false);
        wait_async("the late write", Duration::from_secs(60), || {
            store_a.released.load(Ordering::SeqCst) >= store_a.held.load(Ordering::SeqCst)
        })
        .await;
        let late_on_b = store_a
            .held_records
            .lock()
            .unwrap()
            .iter()
            .filter(|r| b_partitions.contains(&partition_of[&r.package]))
            .count();
        let total = 3 * n;
        assert_eq!(
            wait_committed(&cfg, PARTITIONS, total, Duration::from_secs(180)).await,
            total,
            "every batch committed"
        );
        let _ = stop_a.send(true);
        let _ = stop_b.send(true);
        for run in [run_a, run_b] {
            tokio::time::timeout(Duration::from_secs(60), run).await.expect("consumer stops").unwrap().unwrap();
        }
        pipeline_a.drain().await.unwrap();
        pipeline_b.drain().await.unwrap();
        (inner.records.list_records(None, None).await.unwrap(), late_on_b, b_partitions)
    });
    eprintln!(
        "new owner's partitions {b_partitions:?}; the late write held {late_on_b} records of its packages (all older)"
    );
    assert!(late_on_b > 0, "the scenario must put the old owner's late write on the new owner's packages");
    common::assert_same_records(&stored, &want);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}

/// `pkg:npm/fence-3@1.0.0` -> `pkg:npm/fence-3`.
fn package_of(artifact: &str) -> String {
    artifact.split('@').next().unwrap_or(artifact).to_string()
}

#[test]
fn a_rebalance_mid_burst_equals_a_clean_run() {
    let Some(services) = common::services() else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let setup = ServeSetup::fresh(&services, "fence_burst");
    // VEXLENS_IT_FENCE_FILES=N: the first N vexhub documents (default 24).
    let n: usize = std::env::var("VEXLENS_IT_FENCE_FILES").ok().and_then(|v| v.parse().ok()).unwrap_or(24);
    let mut files = common::corpus_files(&["vexhub"]);
    assert!(files.len() > 20, "vexhub corpus missing");
    files.truncate(n);
    let want = common::cli_consensus(&files, "default");
    let env: &[(&str, &str)] =
        &[("VEXLENS_KAFKA__SESSION_TIMEOUT_MS", "6000"), ("VEXLENS_KAFKA__DRAIN_TIMEOUT_MS", "3000")];
    let mut a = Serve::start(&setup, "a", env);
    a.wait_ready(Duration::from_secs(90));
    let (brokers, topic) = (setup.services.brokers.clone(), setup.topic.clone());
    let producer_files = files.clone();
    let producer = std::thread::spawn(move || {
        for f in &producer_files {
            common::kcat_produce_file(&brokers, &topic, &f.display().to_string(), &[], f);
            std::thread::sleep(Duration::from_millis(1000));
        }
    });
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let stored =
        || rt.block_on(common::count(&setup.services.mongo_uri, &setup.db, vex_lens::stores::mongo::CONSENSUS));
    assert!(common::wait_until(Duration::from_secs(120), || stored() > 0), "no record; log:\n{}", a.log_tail());
    // Mid-burst: a second instance joins (a rebalance) ...
    let mut b = Serve::start(&setup, "b", env);
    b.wait_ready(Duration::from_secs(90));
    let assigned = Serve::partitions_assigned;
    assert!(common::wait_until(Duration::from_secs(60), || assigned(&b) > 0), "b got no partition:\n{}", b.log_tail());
    let at_join = stored();
    let applied = |s: &Serve| {
        s.get("/metrics").and_then(|(_, m)| common::metric_sum(&m, "vex_observations_total")).unwrap_or(0.0)
    };
    let b_works = common::wait_until(Duration::from_secs(120), || applied(&b) > 0.0);
    assert!(b_works, "b applied nothing; log:\n{}", b.log_tail());
    // ... and leaves before the burst ends (another rebalance). Its shutdown drains what
    // it holds (rebuilt packages of the vexhub corpus are large: give it time).
    let producing = !producer.is_finished();
    assert!(b.terminate(Duration::from_secs(180)), "SIGTERM: b did not exit 0; log:\n{}", b.log_tail());
    eprintln!(
        "b joined with {at_join} records stored, applied observations and left; producer still running: {producing}"
    );
    producer.join().expect("producer");
    let start = Instant::now();
    let digests = |v: &[ConsensusRecord]| -> BTreeSet<(PairKey, String)> {
        v.iter().map(|r| (r.pair(), r.consensus_digest.clone())).collect()
    };
    let want_set = digests(&want);
    let mut got = Vec::new();
    let ok = common::wait_until(Duration::from_secs(300), || {
        got = rt.block_on(common::stored_records(&setup.services.mongo_uri, &setup.db));
        digests(&got) == want_set
    });
    if !ok {
        eprintln!("a's log:\n{}", a.log_tail());
    }
    common::assert_same_records(&got, &want);
    eprintln!("{} records equal the clean run; converged {:?} after the burst", want.len(), start.elapsed());
    assert!(a.terminate(Duration::from_secs(30)), "SIGTERM: a did not exit 0; log:\n{}", a.log_tail());
    rt.block_on(common::drop_db(&setup.services.mongo_uri, &setup.db));
}
