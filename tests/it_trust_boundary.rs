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

/// An observation's tenant is the one its `tenant` header claims: a message whose header
/// names another tenant (validly tagged or not) is dead-lettered as `tenant_mismatch` and
/// counted, and changes no record; the same observation under its own tenant header is
/// applied. An observation whose tenant is no tenant name (under its own key and header)
/// is dead-lettered as `invalid_tenant`.
#[test]
fn an_observation_whose_tenant_header_disagrees_is_dead_lettered() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let setup = ServeSetup::fresh(&services, "tenant-header");
    let tmp = tempfile::tempdir().unwrap();
    let mut serve = Serve::start(&setup, "a", &[]);
    serve.wait_ready(Duration::from_secs(90));

    let key = "t/pkg:npm/trusted-lib";
    let mac = ObservationMac::new(TEST_HMAC_KEY.as_bytes()).unwrap();
    let cases = [("CVE-2024-0101", "globex", "forged"), ("CVE-2024-0102", "t", "own")];
    for (vuln, tenant, name) in cases {
        let o = claimed_verified(vuln);
        let tag = mac.tag(key.as_bytes(), &o.content_bytes().unwrap());
        let path = tmp.path().join(format!("{name}.json"));
        std::fs::write(&path, serde_json::to_vec(&o).unwrap()).unwrap();
        let headers = [(HEADER_MAC, tag.as_str()), ("tenant", tenant), ("correlation-id", name)];
        common::kcat_produce_file(&services.brokers, &setup.observations_topic, key, &headers, &path);
    }
    // A tenant that is no tenant name, consistent everywhere else.
    let bad = "no such/tenant";
    let o = sample_observation(bad, "acme", "pkg:npm/trusted-lib@1.0.0", "CVE-2024-0103", Status::NotAffected)
        .with_id()
        .unwrap();
    let bad_key = format!("{bad}/pkg:npm/trusted-lib");
    let tag = mac.tag(bad_key.as_bytes(), &o.content_bytes().unwrap());
    let path = tmp.path().join("bad-tenant.json");
    std::fs::write(&path, serde_json::to_vec(&o).unwrap()).unwrap();
    let headers = [(HEADER_MAC, tag.as_str()), ("tenant", bad), ("correlation-id", "bad-tenant")];
    common::kcat_produce_file(&services.brokers, &setup.observations_topic, &bad_key, &headers, &path);

    let records = common::wait_for_stored_records(&mut serve, &services.mongo_uri, &setup.db, 1);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["vulnerability"], "CVE-2024-0102", "only the observation under its own tenant");
    let dlq_topic = format!("{}.dlq", setup.observations_topic);
    let mut dlq = String::new();
    let ok = common::wait_until(Duration::from_secs(60), || {
        dlq = common::kcat_consume(&services.brokers, &dlq_topic, "%h\n");
        dlq.lines().filter(|l| !l.is_empty()).count() >= 2
    });
    assert!(ok, "not both dead-lettered: {dlq}; log:\n{}", serve.log_tail());
    let lines: Vec<&str> = dlq.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 2, "{dlq}");
    let forged = lines.iter().find(|l| l.contains("correlation-id=forged")).unwrap_or_else(|| panic!("{dlq}"));
    assert!(forged.contains("vex-lens-error=tenant_mismatch"), "{dlq}");
    let invalid = lines.iter().find(|l| l.contains("correlation-id=bad-tenant")).unwrap_or_else(|| panic!("{dlq}"));
    assert!(invalid.contains("vex-lens-error=invalid_tenant"), "{dlq}");
    let (_, metrics) = serve.get("/metrics").unwrap();
    assert_eq!(common::metric(&metrics, "vex_dead_letter_total{reason=\"tenant_mismatch\"}"), Some(1.0), "{metrics}");
    assert_eq!(common::metric(&metrics, "vex_dead_letter_total{reason=\"invalid_tenant\"}"), Some(1.0), "{metrics}");
    assert!(serve.terminate(Duration::from_secs(30)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}
