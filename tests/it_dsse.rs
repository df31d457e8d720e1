//! DSSE verification end to end on the real Kafka and MongoDB-wire server: kcat writes
//! the five envelopes of tests/dsse_fixtures (verified, tampered, wrong key, truncated
//! signature, unknown key) to a fresh topic, `vex-lens serve` verifies them on the
//! verifier pool, and `vex_dsse_verifications`, `vex_consensus` and /metrics are read
//! back: each envelope has its own result and reason, the verified statement counts at
//! signature factor 1.0, the failed ones are excluded with `missing_provenance`, and
//! vex_dsse_verification_failures_total is 3.

#[path = "../integration-tests/common/mod.rs"]
mod common;
#[path = "dsse_fixtures/mod.rs"]
mod dsse_fixtures;

use common::{metric_sum, Serve, ServeSetup};
use dsse_fixtures::{check_records, check_verifications, write_envelopes, Keys};
use std::time::Duration;

#[test]
fn envelopes_over_kafka_are_verified_persisted_and_counted() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let setup = ServeSetup::fresh(&services, "dsse");
    let tmp = tempfile::tempdir().unwrap();
    let keys = Keys::new();
    let issuers = tmp.path().join("issuers.toml");
    keys.write_issuers(&issuers);
    let files = write_envelopes(&keys, tmp.path());

    let issuers_env = issuers.to_str().unwrap().to_string();
    let mut serve = Serve::start(&setup, "a", &[("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers_env.as_str())]);
    serve.wait_ready(Duration::from_secs(90));
    for (name, path) in &files {
        common::kcat_produce_file(&services.brokers, &setup.topic, name, &[("tenant", "t")], path);
    }

    let records = common::wait_for_stored_records(&mut serve, &services.mongo_uri, &setup.db, 5);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    check_records(&records);
    // Verifications are durable before the document's observations are produced.
    let verifications = rt.block_on(common::stored_verifications(&services.mongo_uri, &setup.db));
    check_verifications(&verifications, &keys, &files);
    assert!(
        verifications.iter().all(|v| v["source"].as_str().is_some_and(|s| s.starts_with("kafka:"))),
        "{verifications:?}"
    );
    let m = serve.get("/metrics").expect("metrics").1;
    assert_eq!(metric_sum(&m, "vex_dsse_verification_failures_total"), Some(3.0), "{m}");
    assert_eq!(common::kcat_count(&services.brokers, &setup.dlq_topic), 0, "no envelope is dead-lettered");
    assert!(serve.terminate(Duration::from_secs(30)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}
