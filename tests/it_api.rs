//! The `/v1` API of `vex-lens serve` in the Kafka + MongoDB configuration (real broker,
//! real MongoDB-wire server): documents produced with kcat for two tenants are read back
//! through the API (one pair under another purl spelling, lists, paging, explain,
//! history, conflicts, an export job and its download), each tenant seeing only its own.
//! No tokens are configured: the loopback-only mode, tenant from `X-Tenant`.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{Serve, ServeSetup};
use serde_json::Value;
use std::time::Duration;

fn request(listen: &str, method: &str, path: &str, tenant: &str, body: &str) -> (u16, Value, String) {
    let (code, body) = common::http_request(listen, method, path, &[("X-Tenant", tenant)], body);
    (code, serde_json::from_str(&body).unwrap_or(Value::Null), body)
}

fn get(listen: &str, path: &str, tenant: &str) -> (u16, Value) {
    let (c, v, _) = request(listen, "GET", path, tenant, "");
    (c, v)
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[test]
fn api_reads_kafka_ingested_records_from_mongodb_per_tenant() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let setup = ServeSetup::fresh(&services, "api");
    let exports = tempfile::tempdir().unwrap();
    let export_dir = exports.path().to_str().unwrap().to_string();
    let mut serve = Serve::start(&setup, "api", &[("VEXLENS_EXPORT__DIR", &export_dir)]);
    serve.wait_ready(Duration::from_secs(90));
    let examples = common::repo_dir().join("examples");
    let files: Vec<_> =
        ["acme-vendor.openvex.json", "distro.csaf.json", "scanner.cdx.json"].iter().map(|f| examples.join(f)).collect();
    common::kcat_produce_files(&services.brokers, &setup.topic, &[("tenant", "acme")], &files);
    common::kcat_produce_files(&services.brokers, &setup.topic, &[("tenant", "globex")], &files[2..]);
    let l = serve.listen.clone();
    let c = "/v1/vex/consensus";

    let items = common::wait_for("acme's four records through the API", Duration::from_secs(180), || {
        let (code, v) = get(&l, c, "acme");
        let items = v["items"].as_array().cloned().unwrap_or_default();
        // Four pairs exist before the last document's observations reach them, and the
        // disputed pair is disputed by two documents before the third reaches it: wait
        // for the pair all three documents dispute.
        let settled =
            items.iter().any(|r| r["status"] == "disputed" && r["statements"].as_array().is_some_and(|s| s.len() == 3));
        (code == 200 && items.len() == 4 && settled && items.iter().all(|r| r["tenant"] == "acme")).then_some(items)
    });
    let globex = common::wait_for("globex's records", Duration::from_secs(120), || {
        let (_, v) = get(&l, c, "globex");
        v["items"].as_array().filter(|i| !i.is_empty()).cloned()
    });
    assert!(globex.iter().all(|r| r["tenant"] == "globex"));

    // One pair, another spelling; the other tenant cannot read it.
    let disputed = items.iter().find(|r| r["status"] == "disputed").expect("a disputed pair");
    let vuln = disputed["vulnerability"].as_str().unwrap();
    let one = format!("{c}?artifact={}&vulnerability={vuln}", enc("pkg:NPM/acme-widget@2.4.1"));
    let (code, rec) = get(&l, &one, "acme");
    assert_eq!((code, &rec), (200, disputed), "{rec}");
    let (code, theirs) = get(&l, &one, "globex");
    assert_eq!((code, &theirs["tenant"]), (200, &Value::from("globex")), "{theirs}");
    assert_ne!(theirs["consensus_digest"], rec["consensus_digest"], "globex reads its own record of the pair");
    let none = format!("{c}?artifact={}&vulnerability=CVE-2023-44487", enc("pkg:npm/acme-widget@2.4.1"));
    let (code, e) = get(&l, &none, "globex");
    assert_eq!((code, e["error"]["code"].as_str()), (404, Some("not_found")), "{e}");

    // Paging and filters on the MongoDB indexes.
    let (_, p1) = get(&l, &format!("{c}?page_size=3"), "acme");
    let token = p1["next_page_token"].as_str().expect("a next page").to_string();
    let (_, p2) = get(&l, &format!("{c}?page_size=3&page_token={token}"), "acme");
    let walked: Vec<Value> =
        p1["items"].as_array().unwrap().iter().chain(p2["items"].as_array().unwrap()).cloned().collect();
    assert_eq!(walked, items, "two pages give the list");
    let (_, f) = get(&l, &format!("{c}?status=disputed&issuer=example-scanner"), "acme");
    assert_eq!(f["items"].as_array().unwrap().len(), 1, "{f}");
    let (_, f) = get(&l, &format!("{c}?package={}", enc("pkg:npm/acme-widget")), "acme");
    assert_eq!(f["items"].as_array().unwrap().len(), 4);

    // Explain, history, conflicts.
    let pair = format!("artifact={}&vulnerability={vuln}", enc("pkg:npm/acme-widget@2.4.1"));
    let (code, ex) = get(&l, &format!("{c}/explain?{pair}"), "acme");
    assert_eq!(code, 200, "{ex}");
    assert_eq!(ex["trace_matches_record"], true, "{ex}");
    let (code, h) = get(&l, &format!("{c}/history?{pair}"), "acme");
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["items"].as_array().unwrap().last().unwrap()["consensus_digest"], rec["consensus_digest"]);
    let (code, then) = get(&l, &format!("{c}/history?{pair}&as_of=2999-01-01T00:00:00Z"), "acme");
    assert_eq!((code, &then["consensus_digest"]), (200, &rec["consensus_digest"]));
    let (code, cf) = get(&l, "/v1/vex/conflicts", "acme");
    assert_eq!(code, 200);
    assert_eq!(cf["items"].as_array().unwrap().len(), 1, "{cf}");
    assert_eq!(cf["items"][0]["conflicts"][0]["reason"], "status_disagreement");

    // An export job of acme, its listing and download; globex sees none of it.
    let (code, job, _) = request(&l, "POST", "/v1/vex/export", "acme", r#"{"format":"json"}"#);
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["records"], 4);
    let id = job["job_id"].as_str().unwrap();
    let (_, list) = get(&l, "/v1/vex/exports", "acme");
    assert_eq!(list["items"][0]["job_id"], id);
    let (code, _, body) = request(&l, "GET", &format!("/v1/vex/exports/{id}/files/manifest.json"), "acme", "");
    assert_eq!(code, 200);
    assert_eq!(body, std::fs::read_to_string(exports.path().join(id).join("manifest.json")).unwrap());
    assert_eq!(get(&l, &format!("/v1/vex/exports/{id}"), "globex").0, 404);
    assert!(get(&l, "/v1/vex/exports", "globex").1["items"].as_array().unwrap().is_empty());

    assert!(serve.terminate(Duration::from_secs(60)), "serve exits cleanly; log:\n{}", serve.log_tail());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}
