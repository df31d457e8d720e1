//! Trust changes in the Kafka + MongoDB configuration (real broker, real MongoDB-wire
//! server), two `vex-lens serve` instances in one consumer group on one database: a
//! change through one instance is persisted, audited in `vex_trust_audit`, recomputes the
//! tenant's pairs (a status flips exactly as simulated), shows in the recompute metric and
//! the log line, leaves the other tenant alone, and the other instance converges on the
//! same weights (it polls the store's per-tenant epoch); a change made there converges
//! back; a document ingested afterwards is evaluated with the converged policy by
//! whichever instance owns its partition. No tokens: loopback mode, tenant from
//! `X-Tenant`, caller `loopback`.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{Serve, ServeSetup};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

fn call(listen: &str, method: &str, path: &str, tenant: &str, body: &str) -> (u16, Value) {
    let (code, body) = common::http_request(listen, method, path, &[("X-Tenant", tenant)], body);
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn records(listen: &str, tenant: &str) -> BTreeMap<(String, String), Value> {
    let (code, v) = call(listen, "GET", "/v1/vex/consensus", tenant, "");
    assert_eq!(code, 200, "{v}");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| ((r["artifact"].as_str().unwrap().into(), r["vulnerability"].as_str().unwrap().into()), r.clone()))
        .collect()
}

fn weights(listen: &str, tenant: &str) -> Value {
    let (code, w) = call(listen, "GET", "/v1/vex/trust/weights", tenant, "");
    assert_eq!(code, 200, "{w}");
    w
}

fn metric(serve: &Serve, sample: &str) -> f64 {
    let (_, text) = serve.get("/metrics").expect("metrics");
    common::metric(&text, sample).unwrap_or(0.0)
}

/// The tenant's records read through `listen` once every one of `files` has applied: the
/// snapshot is taken when the records are the ones `vex-lens consensus` computes from the
/// three files (four records, digest for digest), not merely four records, which the
/// first two documents already make.
fn settled_records(listen: &str, files: &[std::path::PathBuf], tenant: &str) -> BTreeMap<(String, String), Value> {
    let want: BTreeMap<(String, String), String> = common::cli_consensus(files, tenant)
        .into_iter()
        .map(|r| ((r.artifact, r.vulnerability), r.consensus_digest))
        .collect();
    assert_eq!(want.len(), 4, "the three examples make four records");
    common::wait_for(&format!("{tenant}'s records of all three documents"), Duration::from_secs(180), || {
        let r = records(listen, tenant);
        let digests: BTreeMap<(String, String), String> =
            r.iter().map(|(k, v)| (k.clone(), v["consensus_digest"].as_str().unwrap_or_default().into())).collect();
        (digests == want).then_some(r)
    })
}

const LATE_DOC: &str = r#"{
  "@context": "https://openvex.dev/ns/v0.2.0",
  "@id": "https://acme.example/vex/late-1",
  "author": "ACME Product Security <psirt@acme.example>",
  "timestamp": "2024-07-01T09:00:00Z",
  "version": 1,
  "statements": [
    { "vulnerability": { "name": "CVE-2024-7777" }, "products": [ { "@id": "pkg:npm/trust-late@1.0.0" } ],
      "status": "affected", "action_statement": "Upgrade." }
  ]
}"#;

#[test]
fn a_trust_change_recomputes_audits_and_two_instances_converge() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let setup = ServeSetup::fresh(&services, "trust");
    let poll = [("VEXLENS_CONSENSUS__TRUST_POLL_INTERVAL_MS", "500")];
    let mut a = Serve::start(&setup, "a", &poll);
    let mut b = Serve::start(&setup, "b", &poll);
    a.wait_ready(Duration::from_secs(90));
    b.wait_ready(Duration::from_secs(90));
    let examples = common::repo_dir().join("examples");
    let files: Vec<_> =
        ["acme-vendor.openvex.json", "distro.csaf.json", "scanner.cdx.json"].iter().map(|f| examples.join(f)).collect();
    common::kcat_produce_files(&services.brokers, &setup.topic, &[("tenant", "acme")], &files);
    common::kcat_produce_files(&services.brokers, &setup.topic, &[("tenant", "globex")], &files);
    let (la, lb) = (a.listen.clone(), b.listen.clone());
    let settled = |tenant: &str| settled_records(&la, &files, tenant);
    let before = settled("acme");
    let globex = settled("globex");
    let w0 = weights(&lb, "acme");
    assert_eq!(w0["epoch"], 0, "{w0}");

    // Simulate, then apply through instance A.
    let (code, sim) =
        call(&la, "POST", "/v1/vex/simulate", "acme", r#"{"issuer": {"id": "acme", "tier": "untrusted"}}"#);
    assert_eq!(code, 200, "{sim}");
    let (code, applied) =
        call(&la, "PUT", "/v1/vex/trust/issuers/acme", "acme", r#"{"tier": "untrusted", "reason": "it drill"}"#);
    assert_eq!(code, 200, "{applied}");
    assert_eq!((applied["epoch"].as_u64(), applied["recomputed"]["pairs"].as_u64()), (Some(1), Some(4)), "{applied}");
    let version1 = applied["policy_version"].clone();
    assert_eq!(version1, sim["policy_version_after"]);

    // The stored records (read through B: the same database) are the simulated ones.
    let after = records(&lb, "acme");
    let simulated: BTreeMap<(String, String), &Value> = sim["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| ((x["artifact"].as_str().unwrap().into(), x["vulnerability"].as_str().unwrap().into()), x))
        .collect();
    let mut flipped = 0;
    for (pair, now) in &after {
        assert_eq!(now["policy_version"], version1, "{pair:?}");
        let was = &before[pair];
        let differs = was["status"] != now["status"] || was["confidence_ppm"] != now["confidence_ppm"];
        match simulated.get(pair) {
            Some(s) => assert_eq!(s["after"]["consensus_digest"], now["consensus_digest"], "{pair:?}"),
            None => assert!(!differs, "{pair:?} changed but was not simulated"),
        }
        flipped += usize::from(was["status"] != now["status"]);
    }
    assert!(flipped > 0, "a status flips: {sim}");
    assert_eq!(records(&la, "globex"), globex, "the other tenant is untouched");
    assert_eq!(weights(&la, "globex")["epoch"], 0);

    // Instance B converges on A's change.
    let wb = common::wait_for("B converges on epoch 1", Duration::from_secs(20), || {
        let w = weights(&lb, "acme");
        (w["epoch"] == 1).then_some(w)
    });
    assert_eq!(wb["policy_version"], version1);
    assert_eq!(wb, weights(&la, "acme"), "both instances report the same weights");

    // A change through B converges back to A.
    let (code, p) = call(&lb, "PUT", "/v1/vex/trust/policy", "acme", r#"{"knobs": {"conflict_threshold": 0.45}}"#);
    assert_eq!((code, p["epoch"].as_u64()), (200, Some(2)), "{p}");
    let version2 = p["policy_version"].clone();
    common::wait_for("A converges on epoch 2", Duration::from_secs(20), || {
        let w = weights(&la, "acme");
        (w["epoch"] == 2 && w["policy_version"] == version2).then_some(())
    });

    // A document ingested now is evaluated with the converged policy, whoever owns it.
    let late = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(late.path(), LATE_DOC).unwrap();
    common::kcat_produce_files(&services.brokers, &setup.topic, &[("tenant", "acme")], &[late.path().to_path_buf()]);
    let late_record = common::wait_for("the late document's record", Duration::from_secs(120), || {
        records(&la, "acme").into_iter().find(|((a, _), _)| a == "pkg:npm/trust-late@1.0.0").map(|(_, r)| r)
    });
    assert_eq!(late_record["policy_version"], version2, "{late_record}");
    assert_eq!(late_record["statements"][0]["tier"], "untrusted");

    // Metrics, log line, audit.
    assert!(metric(&a, "vex_recompute_duration_seconds_count{reason=\"issuer_update\"}") >= 1.0);
    assert!(metric(&b, "vex_recompute_duration_seconds_count{reason=\"policy_knob\"}") >= 1.0);
    let log = std::fs::read_to_string(&a.log).unwrap();
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["event"] == "issuer_trust_changed")
        .unwrap_or_else(|| panic!("no issuer_trust_changed line; log:\n{}", a.log_tail()));
    assert_eq!(
        (&line["issuer"], &line["trustTier"], &line["weightBefore"], &line["weightAfter"]),
        (&Value::from("acme"), &Value::from("untrusted"), &Value::from(1.0), &Value::from(0.1)),
        "{line}"
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let audit = rt.block_on(async {
        use vex_lens::ports::TrustStore;
        let store = vex_lens::stores::mongo::MongoStore::connect(&services.mongo_uri, &setup.db).await.unwrap();
        (store.trust_audit("acme").await.unwrap(), store.trust_policies().await.unwrap())
    });
    assert_eq!(
        audit.0.iter().map(|e| (e.epoch, e.who.as_str(), e.kind.as_str())).collect::<Vec<_>>(),
        vec![(1, "loopback", "issuer"), (2, "loopback", "policy")]
    );
    assert_eq!(audit.0[0].reason.as_deref(), Some("it drill"));
    assert_eq!(audit.0[1].before, audit.0[0].after);
    assert_eq!(audit.1.iter().map(|t| (t.tenant.as_str(), t.epoch)).collect::<Vec<_>>(), vec![("acme", 2)]);
    // The records' write version carries the tenant's epoch (fenced writes: an instance
    // still on an older epoch cannot replace them).
    let epochs = rt.block_on(async {
        use futures::TryStreamExt;
        let db = common::mongo_client(&services.mongo_uri).await.database(&setup.db);
        let docs: Vec<mongodb::bson::Document> = db
            .collection::<mongodb::bson::Document>("vex_consensus")
            .find(mongodb::bson::doc! {})
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        docs.iter()
            .map(|d| (d.get_str("tenant").unwrap().to_string(), d.get_i64("v_epoch").unwrap()))
            .collect::<std::collections::BTreeSet<_>>()
    });
    let expected: std::collections::BTreeSet<_> = [("acme".to_string(), 2), ("globex".to_string(), 0)].into();
    assert_eq!(epochs, expected, "every acme record at epoch 2, globex's at 0");

    assert!(a.terminate(Duration::from_secs(60)), "A exits cleanly; log:\n{}", a.log_tail());
    assert!(b.terminate(Duration::from_secs(60)), "B exits cleanly; log:\n{}", b.log_tail());
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}
