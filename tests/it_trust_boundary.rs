//! The trust boundary of the observations topic on the real Kafka and MongoDB-wire
//! server: kcat (a producer we did not write, holding no key) publishes observations
//! that claim `signature.status = verified`; without the service's HMAC tag, or with a
//! tag made with another key, they count as unsigned (signature factor 1 - penalty),
//! issuer kept as claimed; the same claim with a valid tag (made with the service's key,
//! as the ingest stage does) counts as verified.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{Serve, ServeSetup, TEST_HMAC_KEY};
use serde_json::Value;
use std::time::Duration;
use vex_lens::crypto::mac::{ObservationMac, HEADER_MAC};
use vex_lens::domain::model::{Observation, SignatureStatus, Status};
use vex_lens::stores::contract::sample_observation;

fn claimed_verified(vuln: &str) -> Observation {
    let mut o = sample_observation("t", "acme", "pkg:npm/trusted-lib@1.0.0", vuln, Status::NotAffected);
    o.signature.status = SignatureStatus::Verified;
    o.signature.keyid = Some("acme-key".into());
    o.with_id().unwrap()
}

#[test]
fn a_forged_verified_observation_counts_as_unsigned() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let setup = ServeSetup::fresh(&services, "trust");
    let tmp = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(&setup, "a", &[]);
    serve.wait_ready(Duration::from_secs(90));

    let key = "t/pkg:npm/trusted-lib";
    let good = ObservationMac::new(TEST_HMAC_KEY.as_bytes()).unwrap();
    let other = ObservationMac::new(b"an attacker's guess at the key, 32+ bytes").unwrap();
    let cases = [
        ("CVE-2024-0001", None),
        ("CVE-2024-0002", Some(other.tag(key.as_bytes(), &claimed_verified("CVE-2024-0002").content_bytes().unwrap()))),
        ("CVE-2024-0003", Some(good.tag(key.as_bytes(), &claimed_verified("CVE-2024-0003").content_bytes().unwrap()))),
        // A valid tag of another observation does not transfer.
        ("CVE-2024-0004", Some(good.tag(key.as_bytes(), &claimed_verified("CVE-2024-0003").content_bytes().unwrap()))),
    ];
    for (vuln, tag) in &cases {
        let path = tmp.path().join(format!("{vuln}.json"));
        std::fs::write(&path, serde_json::to_vec(&claimed_verified(vuln)).unwrap()).unwrap();
        let headers: Vec<(&str, &str)> = tag.iter().map(|t| (HEADER_MAC, t.as_str())).collect();
        common::kcat_produce_file(&services.brokers, &setup.observations_topic, key, &headers, &path);
    }

    let records = common::wait_for_stored_records(&mut serve, &services.mongo_uri, &setup.db, cases.len());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let entry = |vuln: &str| -> Value {
        let r = records.iter().find(|r| r["vulnerability"] == vuln).unwrap_or_else(|| panic!("no record for {vuln}"));
        assert_eq!(r["statements"].as_array().map(Vec::len), Some(1), "{r}");
        r["statements"][0].clone()
    };
    for vuln in ["CVE-2024-0001", "CVE-2024-0002", "CVE-2024-0004"] {
        let e = entry(vuln);
        assert_eq!(e["signature"], "unsigned", "{vuln}: a claim without a valid tag is unsigned: {e}");
        assert_eq!(e["factors"]["signature_ppm"], 700_000, "{vuln}: {e}");
        assert_eq!(e["issuer"], "acme", "{vuln}: the issuer stays as claimed: {e}");
        assert_ne!(e["observation_id"], &*claimed_verified(vuln).id, "{vuln}: a marked-down id");
    }
    let e = entry("CVE-2024-0003");
    assert_eq!(e["signature"], "verified", "a validly tagged claim stands: {e}");
    assert_eq!(e["factors"]["signature_ppm"], 1_000_000, "{e}");
    assert_eq!(e["observation_id"], &*claimed_verified("CVE-2024-0003").id);
    assert!(serve.terminate(Duration::from_secs(30)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}
