//! The `/v1` HTTP API of `vex-lens serve` (the built binary, embedded pipeline and store):
//! auth (401/403 with JSON errors), tenancy through every endpoint (two tenants' data in
//! one store), consensus reads with filters and cursor paging, purl spellings, explain,
//! history and `as_of`, conflicts, exports (run, list, get, download), request limits, the
//! loopback-only mode without tokens, and the OpenAPI document naming every route.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::KillOnDrop;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");
const READ: &str = "read-secret-acme";
const EXPORT: &str = "export-secret-acme";
const GLOBEX: &str = "read-export-secret-globex";
const MULTI: &str = "read-secret-both";

/// One HTTP/1.0 request: (status, body as JSON or a string value).
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value, String) {
    let (code, body) = common::http_request(&format!("127.0.0.1:{port}"), method, path, headers, body);
    (code, serde_json::from_str(&body).unwrap_or(Value::Null), body)
}

fn get(port: u16, path: &str, token: Option<&str>, tenant: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    if let Some(t) = tenant {
        h.push(("X-Tenant", t));
    }
    let (code, v, _) = request(port, "GET", path, &h, "");
    (code, v)
}

fn sha(s: &str) -> String {
    vex_lens::domain::canonical::sha256_hex(s.as_bytes())
}

/// Asserts the error shape and code.
fn assert_error(r: &(u16, Value), status: u16, code: &str) {
    assert_eq!(r.0, status, "{:?}", r.1);
    assert_eq!(r.1["error"]["code"], code, "{:?}", r.1);
    assert!(r.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{:?}", r.1);
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Ingests `files` for `tenant` into the store under `data` (serve --once).
fn ingest(tmp: &Path, data: &Path, tenant: &str, files: &[&str]) {
    let inbox = tmp.join(format!("in-{tenant}"));
    std::fs::create_dir_all(&inbox).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    for f in files {
        std::fs::copy(repo.join("examples").join(f), inbox.join(f)).unwrap();
    }
    let out = Command::new(BIN)
        .args(["serve", "--once", "--ingest-dir", inbox.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--tenant", tenant, "--listen", "127.0.0.1:0"])
        .current_dir(repo)
        .output()
        .expect("serve --once");
    assert!(out.status.success(), "serve --once failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn start(tmp: &Path, data: &Path, config: &str) -> (KillOnDrop, u16, PathBuf) {
    let cfg = tmp.join(format!("config-{}.toml", sha(config)));
    std::fs::write(&cfg, config).unwrap();
    static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let log = tmp.join(format!("serve-{}.log", STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst)));
    let exports = tmp.join("exports");
    let (child, port) = common::start_embedded_serve(
        &["--config", cfg.to_str().unwrap(), "--data-dir", data.to_str().unwrap()],
        &[("VEXLENS_EXPORT__DIR", exports.to_str().unwrap())],
        &log,
        Duration::from_secs(60),
    );
    (child, port, log)
}

fn tokens_config() -> String {
    format!(
        r#"[consensus]
issuers_file = "config/issuers.toml"
[api]
max_body_bytes = 2048
[[api.tokens]]
name = "acme-reader"
sha256 = "{}"
scopes = ["vex:read"]
tenants = ["acme"]
[[api.tokens]]
name = "acme-exporter"
sha256 = "{}"
scopes = ["vex:export"]
tenants = ["acme"]
[[api.tokens]]
name = "globex"
sha256 = "{}"
scopes = ["vex:read", "vex:export"]
tenants = ["globex"]
[[api.tokens]]
name = "both"
sha256 = "{}"
scopes = ["vex:read"]
tenants = ["acme", "globex"]
"#,
        sha(READ),
        sha(EXPORT),
        sha(GLOBEX),
        sha(MULTI)
    )
}

#[test]
fn api_serves_each_tenant_its_own_records_with_auth_paging_explain_history_conflicts_and_exports() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest(tmp.path(), &data, "acme", &["acme-vendor.openvex.json", "distro.csaf.json", "scanner.cdx.json"]);
    ingest(tmp.path(), &data, "globex", &["scanner.cdx.json"]);
    let (_child, port, log) = start(tmp.path(), &data, &tokens_config());
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("api_tokens"), "start-up says tokens are configured: {logs}");

    check_auth(port);
    let items = check_listing(port);
    let (artifact, vuln, rec) = check_one_pair(port, &items);
    check_filters(port);
    check_explain_and_history(port, &artifact, &vuln, &rec);
    check_conflicts(port, &artifact, &vuln);
    check_exports(port, tmp.path());
    check_openapi(port);
}

/// Auth: 401 / 403, JSON errors; health stays open.
fn check_auth(port: u16) {
    assert_eq!(common::get(port, "/health/liveness").map(|r| r.0), Some(200), "health needs no token");
    assert_eq!(common::get(port, "/metrics").map(|r| r.0), Some(200), "metrics need no token");
    let c = "/v1/vex/consensus";
    assert_error(&get(port, c, None, None), 401, "missing_token");
    assert_error(&get(port, c, Some("wrong"), None), 401, "invalid_token");
    assert_error(&get(port, c, Some(READ), Some("globex")), 403, "tenant_forbidden");
    assert_error(&get(port, "/v1/vex/exports", Some(READ), None), 403, "insufficient_scope");
    assert_error(&get(port, c, Some(EXPORT), None), 403, "insufficient_scope");
    assert_error(&get(port, c, Some(MULTI), None), 400, "invalid_parameter");
    assert_error(&get(port, "/v1/vex/nothing-here", Some(READ), None), 404, "not_found");
    let r = request(port, "DELETE", c, &[("Authorization", &format!("Bearer {READ}"))], "");
    assert_error(&(r.0, r.1), 405, "method_not_allowed");
}

/// Consensus: list, tenancy, paging; returns acme's records.
fn check_listing(port: u16) -> Vec<Value> {
    let c = "/v1/vex/consensus";
    let (code, all) = get(port, c, Some(READ), None);
    assert_eq!(code, 200, "{all}");
    let items = all["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 4, "acme has the four pairs of the examples: {all}");
    assert!(items.iter().all(|r| r["tenant"] == "acme"), "only the caller's tenant");
    assert!(items.iter().all(|r| r["changed_at_ms"].as_i64().is_some_and(|t| t > 0)));
    let (code, globex) = get(port, c, Some(GLOBEX), None);
    assert_eq!(code, 200);
    let globex_items = globex["items"].as_array().unwrap();
    assert!(!globex_items.is_empty() && globex_items.iter().all(|r| r["tenant"] == "globex"));
    assert_eq!(get(port, c, Some(MULTI), Some("globex")).1["items"], globex["items"], "X-Tenant picks the tenant");

    let mut paged = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..10 {
        let path = match &token {
            None => format!("{c}?page_size=1"),
            Some(t) => format!("{c}?page_size=1&page_token={t}"),
        };
        let (code, page) = get(port, &path, Some(READ), None);
        assert_eq!(code, 200, "{page}");
        paged.extend(page["items"].as_array().unwrap().iter().cloned());
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, items, "paging one by one walks the same records in the same order");
    items
}

/// One pair: any purl spelling; other tenant cannot see it. Returns the disputed pair's
/// artifact and vulnerability, and its record.
fn check_one_pair(port: u16, items: &[Value]) -> (String, String, Value) {
    let c = "/v1/vex/consensus";
    let disputed = items.iter().find(|r| r["status"] == "disputed").expect("a disputed pair").clone();
    let (artifact, vuln) = (disputed["artifact"].as_str().unwrap(), disputed["vulnerability"].as_str().unwrap());
    assert_eq!(artifact, "pkg:npm/acme-widget@2.4.1");
    let one = format!("{c}?artifact={}&vulnerability={vuln}", enc("pkg:NPM/acme-widget@2.4.1"));
    let (code, rec) = get(port, &one, Some(READ), None);
    assert_eq!(code, 200, "{rec}");
    assert_eq!(rec, disputed, "another spelling of the purl reads the same record");
    assert!(
        rec["statements"].as_array().is_some_and(|s| s.len() >= 3) && !rec["conflicts"].as_array().unwrap().is_empty()
    );
    let (code, theirs) = get(port, &one, Some(GLOBEX), None);
    assert_eq!(code, 200, "{theirs}");
    assert_eq!(theirs["tenant"], "globex", "the same pair of another tenant is that tenant's own record");
    assert_ne!(theirs["consensus_digest"], rec["consensus_digest"]);
    let none = format!("{c}?artifact={}&vulnerability=CVE-2023-44487", enc(artifact));
    assert_error(&get(port, &none, Some(GLOBEX), None), 404, "not_found");
    assert_error(
        &get(port, &format!("{c}?artifact=nonsense&vulnerability=CVE-1"), Some(READ), None),
        400,
        "invalid_parameter",
    );
    (artifact.to_string(), vuln.to_string(), rec)
}

/// Filters and bad parameters (400 naming the parameter).
fn check_filters(port: u16) {
    let c = "/v1/vex/consensus";
    let (_, f) = get(port, &format!("{c}?status=disputed"), Some(READ), None);
    assert_eq!(f["items"].as_array().unwrap().len(), 1);
    let (_, f) = get(port, &format!("{c}?vulnerability=CVE-2024-21626"), Some(READ), None);
    assert_eq!(f["items"].as_array().unwrap().len(), 2);
    let (_, f) = get(port, &format!("{c}?issuer=example-scanner"), Some(READ), None);
    assert_eq!(f["items"].as_array().unwrap().len(), 2, "{f}");
    let (_, f) = get(port, &format!("{c}?package={}", enc("pkg:npm/acme-widget@9.9.9")), Some(READ), None);
    assert_eq!(f["items"].as_array().unwrap().len(), 4, "package of any version");
    let (_, f) = get(port, &format!("{c}?since=2999-01-01T00:00:00Z"), Some(READ), None);
    assert!(f["items"].as_array().unwrap().is_empty(), "since compares the write time");
    for (q, name) in [
        ("page_size=0", "page_size"),
        ("page_size=1001", "page_size"),
        ("since=yesterday", "since"),
        ("status=maybe", "status"),
        ("bogus=1", "bogus"),
        ("page_token=forged", "page_token"),
    ] {
        let r = get(port, &format!("{c}?{q}"), Some(READ), None);
        assert_error(&r, 400, "invalid_parameter");
        assert!(r.1["error"]["message"].as_str().unwrap().starts_with(name), "{q}: {:?}", r.1);
    }
    let long = format!("{c}?issuer={}", "x".repeat(5000));
    assert_error(&get(port, &long, Some(READ), None), 414, "query_too_long");
}

/// Explain, history, as_of of the pair whose record is `rec`.
fn check_explain_and_history(port: u16, artifact: &str, vuln: &str, rec: &Value) {
    let c = "/v1/vex/consensus";
    let pair = format!("artifact={}&vulnerability={vuln}", enc(artifact));
    let (code, ex) = get(port, &format!("{c}/explain?{pair}"), Some(READ), None);
    assert_eq!(code, 200, "{ex}");
    assert_eq!(ex["trace_matches_record"], true, "{ex}");
    assert!(ex["trace"].as_array().is_some_and(|t| !t.is_empty()));
    assert!(ex["statements"].as_array().unwrap().iter().all(|s| s["factors"].is_object() && s["role"].is_string()));
    // Each statement's observation joined back (issue 20); removing it gives the stored record.
    let mut joined = ex.clone();
    for s in joined["statements"].as_array_mut().unwrap() {
        let o = s.as_object_mut().unwrap().remove("observation").expect("explain joins the observation");
        assert!(o["document_digest"].as_str().unwrap().starts_with("sha256:"), "{o}");
        assert!(o["status_original"].is_string(), "{o}");
    }
    assert_eq!(joined["statements"], rec["statements"], "explain = the stored record + observations");
    assert!(rec["statements"].as_array().unwrap().iter().all(|s| s.get("observation").is_none()));
    assert_eq!(ex["policy_version"], rec["policy_version"]);
    assert_error(
        &get(port, &format!("{c}/explain?artifact={}", enc(artifact)), Some(READ), None),
        400,
        "invalid_parameter",
    );
    let (code, h) = get(port, &format!("{c}/history?{pair}"), Some(READ), None);
    assert_eq!(code, 200, "{h}");
    let versions = h["items"].as_array().unwrap();
    assert!(!versions.is_empty());
    assert_eq!(versions.last().unwrap()["consensus_digest"], rec["consensus_digest"]);
    let (code, then) = get(port, &format!("{c}/history?{pair}&as_of=2999-01-01T00:00:00Z"), Some(READ), None);
    assert_eq!((code, &then["consensus_digest"]), (200, &rec["consensus_digest"]));
    assert_error(
        &get(port, &format!("{c}/history?{pair}&as_of=1971-01-01T00:00:00Z"), Some(READ), None),
        404,
        "not_found",
    );
    let (_, gh) = get(port, &format!("{c}/history?{pair}"), Some(GLOBEX), None);
    assert!(gh["items"].as_array().unwrap().iter().all(|v| v["tenant"] == "globex"), "{gh}");
}

/// Conflicts: the open one is the pair of `artifact` and `vuln`.
fn check_conflicts(port: u16, artifact: &str, vuln: &str) {
    let (code, cf) = get(port, "/v1/vex/conflicts", Some(READ), None);
    assert_eq!(code, 200, "{cf}");
    let open = cf["items"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{cf}");
    assert_eq!(open[0]["artifact"], artifact);
    let c0 = &open[0]["conflicts"][0];
    assert_eq!(c0["reason"], "status_disagreement");
    let sides = c0["sides"].as_array().unwrap();
    assert!(sides.len() >= 2 && sides.iter().all(|s| s["weight_ppm"].as_u64().is_some_and(|w| w > 0)), "{c0}");
    assert!(get(port, "/v1/vex/conflicts?reason=scope_mismatch", Some(READ), None).1["items"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        get(port, "/v1/vex/conflicts?reason=status_disagreement", Some(READ), None).1["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // An unknown reason is a 400 naming the parameter and the reasons (it was 200, empty).
    let r = get(port, "/v1/vex/conflicts?reason=bogus", Some(READ), None);
    assert_error(&r, 400, "invalid_parameter");
    let msg = r.1["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("reason") && msg.contains("missing_provenance, scope_mismatch, status_disagreement"),
        "{msg}"
    );
    let (_, gcf) = get(port, "/v1/vex/conflicts", Some(GLOBEX), None);
    assert!(gcf["items"].as_array().unwrap().iter().all(|x| x["artifact"] != artifact || x["vulnerability"] != vuln));
}

/// Exports: run, list, get, download; other tenant sees nothing (`tmp`: serve's directory).
fn check_exports(port: u16, tmp: &Path) {
    let bearer = format!("Bearer {EXPORT}");
    let h = [("Authorization", bearer.as_str())];
    let r = request(port, "POST", "/v1/vex/export", &h, r#"{"format":"json","tenant":"globex"}"#);
    assert_error(&(r.0, r.1), 403, "tenant_forbidden");
    let r = request(port, "POST", "/v1/vex/export", &h, r#"{"format":"yaml"}"#);
    assert_error(&(r.0, r.1), 400, "invalid_parameter");
    let r = request(port, "POST", "/v1/vex/export", &h, "{not json");
    assert_error(&(r.0, r.1), 400, "invalid_body");
    let big = format!(r#"{{"format":"json","since":"{}"}}"#, "x".repeat(4000));
    let r = request(port, "POST", "/v1/vex/export", &h, &big);
    assert_error(&(r.0, r.1), 413, "body_too_large");
    let (code, job, _) = request(port, "POST", "/v1/vex/export", &h, r#"{"format":"json"}"#);
    assert_eq!(code, 200, "{job}");
    assert_eq!((job["tenant"].as_str(), job["records"].as_u64()), (Some("acme"), Some(4)), "{job}");
    let id = job["job_id"].as_str().unwrap();
    let (code, list) = get(port, "/v1/vex/exports", Some(EXPORT), None);
    assert_eq!(code, 200);
    assert_eq!(list["items"][0]["job_id"], id);
    let (code, detail) = get(port, &format!("/v1/vex/exports/{id}"), Some(EXPORT), None);
    assert_eq!(code, 200, "{detail}");
    assert!(detail["manifest"].is_object(), "{detail}");
    let files: Vec<String> = serde_json::from_value(detail["files"].clone()).unwrap();
    assert!(files.contains(&"manifest.json".to_string()), "{files:?}");
    let (code, _, body) = request(port, "GET", &format!("/v1/vex/exports/{id}/files/manifest.json"), &h, "");
    assert_eq!(code, 200);
    let on_disk = std::fs::read_to_string(tmp.join("exports").join(id).join("manifest.json")).unwrap();
    assert_eq!(body, on_disk, "the download is the file");
    assert!(get(port, "/v1/vex/exports", Some(GLOBEX), None).1["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|j| j["job_id"] != id));
    assert_error(&get(port, &format!("/v1/vex/exports/{id}"), Some(GLOBEX), None), 404, "not_found");
    assert_error(
        &get(port, &format!("/v1/vex/exports/{id}/files/manifest.json"), Some(GLOBEX), None),
        404,
        "not_found",
    );
    for bad in ["..%2F..%2Fconfig.toml", ".hidden", "%2e%2e"] {
        let r = get(port, &format!("/v1/vex/exports/{id}/files/{bad}"), Some(EXPORT), None);
        assert!(r.0 == 404 || r.0 == 400, "{bad}: {:?}", r);
        assert!(r.1["error"]["code"].is_string(), "{bad}: {:?}", r);
    }
}

/// The OpenAPI document names every route the test called.
fn check_openapi(port: u16) {
    let (code, doc) = common::get(port, "/openapi.json").unwrap();
    assert_eq!(code, 200);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/vex/consensus",
        "/v1/vex/consensus/explain",
        "/v1/vex/consensus/history",
        "/v1/vex/conflicts",
        "/v1/vex/export",
        "/v1/vex/exports",
        "/v1/vex/exports/{id}",
        "/v1/vex/exports/{id}/files/{name}",
        "/health/liveness",
        "/metrics",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing from /openapi.json");
    }
}

#[test]
fn without_tokens_the_api_answers_loopback_for_the_default_tenant_or_x_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ingest(tmp.path(), &data, "default", &["acme-vendor.openvex.json"]);
    ingest(tmp.path(), &data, "other", &["scanner.cdx.json"]);
    let (_child, port, log) = start(tmp.path(), &data, "[consensus]\nissuers_file = \"config/issuers.toml\"\n");
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("api_loopback_only"), "start-up says the API is loopback-only: {logs}");
    let c = "/v1/vex/consensus";
    let (code, d) = get(port, c, None, None);
    assert_eq!(code, 200, "{d}");
    let d = d["items"].as_array().unwrap().clone();
    assert!(!d.is_empty() && d.iter().all(|r| r["tenant"] == "default"));
    let (code, o) = get(port, c, None, Some("other"));
    assert_eq!(code, 200);
    let o = o["items"].as_array().unwrap();
    assert!(!o.is_empty() && o.iter().all(|r| r["tenant"] == "other"));
    assert_error(&get(port, c, Some("anything"), None), 401, "invalid_token");
    assert_error(&get(port, c, None, Some("bad/tenant")), 400, "invalid_parameter");
}

/// `POST /v1/vex/simulate` = apply, then compare: the same change written into the issuer
/// directory and evaluated by `vex-lens consensus` over the same documents gives exactly
/// the `after` side of every pair simulate reports, and no other pair changes.
#[test]
fn simulate_equals_applying_the_change_then_recomputing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let docs = ["acme-vendor.openvex.json", "distro.csaf.json", "scanner.cdx.json"];
    ingest(tmp.path(), &data, "acme", &docs);
    let (_child, port, _) = start(tmp.path(), &data, "[consensus]\nissuers_file = \"config/issuers.toml\"\n");

    let (code, w) = get(port, "/v1/vex/trust/weights", None, Some("acme"));
    assert_eq!(code, 200, "{w}");
    let acme = w["issuers"].as_array().unwrap().iter().find(|i| i["id"] == "acme").expect("acme listed").clone();
    assert_eq!((acme["tier"].as_str(), acme["weight_ppm"].as_u64()), (Some("authoritative"), Some(1_000_000)));

    let change = r#"{"issuer": {"id": "acme", "tier": "untrusted"}}"#;
    let (code, sim, _) = request(port, "POST", "/v1/vex/simulate", &[("X-Tenant", "acme")], change);
    assert_eq!(code, 200, "{sim}");
    assert_eq!(sim["applied"], false);
    let changed = sim["changed"].as_array().unwrap();
    assert!(!changed.is_empty(), "demoting the vendor changes something: {sim}");
    let r = request(
        port,
        "POST",
        "/v1/vex/simulate",
        &[("X-Tenant", "acme")],
        r#"{"issuer": {"id": "acme", "weight": 7}}"#,
    );
    assert_error(&(r.0, r.1), 400, "invalid_parameter");

    // Nothing was applied.
    let (_, now) = get(port, "/v1/vex/consensus", None, Some("acme"));
    let current = now["items"].as_array().unwrap().clone();
    assert_eq!(current.len(), 4);
    assert_eq!(get(port, "/v1/vex/trust/weights", None, Some("acme")).1, w, "simulate changes no weight");

    // Apply the same change to a copy of the directory and recompute with the CLI.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dir: toml::Value =
        toml::from_str(&std::fs::read_to_string(repo.join("config/issuers.toml")).unwrap()).unwrap();
    let issuers = dir.get_mut("issuers").and_then(|v| v.as_array_mut()).unwrap();
    let vendor = issuers.iter_mut().find(|i| i.get("id").and_then(|v| v.as_str()) == Some("acme")).unwrap();
    let tenants = vendor.as_table_mut().unwrap().entry("tenants").or_insert(toml::Value::Table(Default::default()));
    tenants.as_table_mut().unwrap().insert("acme".into(), toml::Value::Table(toml::toml! { tier = "untrusted" }));
    let applied = tmp.path().join("issuers-applied.json");
    std::fs::write(&applied, serde_json::to_string(&dir).unwrap()).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["consensus", "--tenant", "acme", "--issuers", applied.to_str().unwrap()]).current_dir(repo);
    for d in docs {
        cmd.arg(repo.join("examples").join(d));
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let recomputed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recomputed.len(), current.len());
    for after in &recomputed {
        let key = (after["artifact"].clone(), after["vulnerability"].clone());
        let before = current.iter().find(|r| (r["artifact"].clone(), r["vulnerability"].clone()) == key).unwrap();
        let reported = changed.iter().find(|c| (c["artifact"].clone(), c["vulnerability"].clone()) == key);
        let differs = before["status"] != after["status"] || before["confidence_ppm"] != after["confidence_ppm"];
        match reported {
            Some(c) => {
                assert!(differs, "{key:?} reported but applying does not change it");
                assert_eq!(c["before"]["consensus_digest"], before["consensus_digest"], "{key:?}");
                assert_eq!(c["after"]["status"], after["status"], "{key:?}");
                assert_eq!(c["after"]["confidence_ppm"], after["confidence_ppm"], "{key:?}");
                assert_eq!(c["after"]["consensus_digest"], after["consensus_digest"], "{key:?}: the same record");
            }
            None => assert!(!differs, "{key:?} changes when applied but simulate did not report it"),
        }
    }
}

const ADMIN: &str = "admin-secret-acme";

fn admin_config() -> String {
    format!(
        r#"[consensus]
issuers_file = "config/issuers.toml"
[api]
admin_changes_per_minute = 3
[[api.tokens]]
name = "acme-reader"
sha256 = "{}"
scopes = ["vex:read"]
tenants = ["acme"]
[[api.tokens]]
name = "acme-admin"
sha256 = "{}"
scopes = ["vex:admin"]
tenants = ["acme"]
[[api.tokens]]
name = "globex"
sha256 = "{}"
scopes = ["vex:read", "vex:export"]
tenants = ["globex"]
"#,
        sha(READ),
        sha(ADMIN),
        sha(GLOBEX)
    )
}

fn send(port: u16, method: &str, path: &str, token: Option<&str>, tenant: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    if let Some(t) = tenant {
        h.push(("X-Tenant", t));
    }
    let (code, v, _) = request(port, method, path, &h, body);
    (code, v)
}

type Pair = (String, String);

fn by_pair(items: &Value) -> std::collections::BTreeMap<Pair, Value> {
    items["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|r| ((r["artifact"].as_str().unwrap().into(), r["vulnerability"].as_str().unwrap().into()), r.clone()))
        .collect()
}

/// The status the weighted vote of a record's counted statements gives (docs/consensus.md,
/// default knobs: minimum weight 0.1, conflict threshold 0.3), from their weights alone.
fn weighted_vote(record: &Value) -> String {
    let mut score: std::collections::BTreeMap<String, u64> = Default::default();
    for s in record["statements"].as_array().unwrap() {
        if s["role"] == "counted" {
            *score.entry(s["status"].as_str().unwrap().to_string()).or_default() += s["weight_ppm"].as_u64().unwrap();
        }
    }
    let total: u64 = score.values().sum();
    // Highest score; a tie goes to the more conservative status.
    let conservative = ["affected", "under_investigation", "not_affected", "fixed"];
    let max = score.values().copied().max().unwrap_or(0);
    let leader = conservative.iter().find(|s| score.get(**s) == Some(&max)).expect("a counted status").to_string();
    let runner_up = score.iter().filter(|(s, _)| **s != leader).map(|(_, v)| *v).max().unwrap_or(0);
    if total < 100_000 {
        "inconclusive".into()
    } else if runner_up > 0 && runner_up * 1_000_000 >= 300_000 * total {
        "disputed".into()
    } else {
        leader
    }
}

/// `PUT /v1/vex/trust/issuers/{id}` and `PUT /v1/vex/trust/policy` on the embedded
/// service: admin scope only (401/403), bad bodies named (400), simulate = apply-then-
/// compare (the pairs that changed are exactly the simulated ones, record for record),
/// a status flips exactly as the new weights say, the recompute metric and the log line,
/// the other tenant untouched, the rate limit (429), and after a restart the store's
/// settings win over the file's, with every change audited.
#[test]
fn trust_changes_are_admin_only_simulated_exactly_applied_audited_and_per_tenant() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let docs = ["acme-vendor.openvex.json", "distro.csaf.json", "scanner.cdx.json"];
    ingest(tmp.path(), &data, "acme", &docs);
    ingest(tmp.path(), &data, "globex", &docs);
    let config = admin_config();
    let (child, port, log) = start(tmp.path(), &data, &config);
    let c = "/v1/vex/consensus";
    let before = by_pair(&get(port, c, Some(READ), None).1);
    let globex_before = by_pair(&get(port, c, Some(GLOBEX), None).1);
    assert_eq!((before.len(), globex_before.len()), (4, 4));
    let put = "/v1/vex/trust/issuers/acme";
    let change = r#"{"tier": "untrusted", "reason": "drill"}"#;

    check_trust_auth_and_bodies(port, put, change);
    check_apply_equals_simulation(port, &before, put, change);

    // The other tenant: same pairs, untouched records and weights.
    assert_eq!(by_pair(&get(port, c, Some(GLOBEX), None).1), globex_before, "globex's records are unchanged");
    let (_, gw) = get(port, "/v1/vex/trust/weights", Some(GLOBEX), None);
    let gacme = gw["issuers"].as_array().unwrap().iter().find(|i| i["id"] == "acme").unwrap().clone();
    assert_eq!((gacme["tier"].as_str(), gw["epoch"].as_u64()), (Some("authoritative"), Some(0)));

    check_issuer_change_metric_and_log(port, &log);

    // A policy knob, then the rate limit (3 changes per minute per tenant).
    let (code, p) =
        send(port, "PUT", "/v1/vex/trust/policy", Some(ADMIN), None, r#"{"knobs": {"conflict_threshold": 0.45}}"#);
    assert_eq!(
        (code, p["epoch"].as_u64(), p["knobs"]["conflict_threshold"].as_f64()),
        (200, Some(2), Some(0.45)),
        "{p}"
    );
    let (_, metrics) = common::get(port, "/metrics").unwrap();
    assert!(
        common::metric(&metrics, "vex_recompute_duration_seconds_count{reason=\"policy_knob\"}").unwrap_or(0.0) >= 1.0
    );
    let line = common::wait_for("the trust_policy_changed log line", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["event"] == "trust_policy_changed").then_some(v)
        })
    });
    let minted = line["correlationId"].as_str().unwrap_or_default();
    assert!(minted.len() == 32 && minted.bytes().all(|b| b.is_ascii_hexdigit()), "a minted correlation id: {line}");
    let (code, third) =
        send(port, "PUT", "/v1/vex/trust/issuers/example-scanner", Some(ADMIN), None, r#"{"weight": 0.35}"#);
    assert_eq!((code, third["epoch"].as_u64()), (200, Some(3)), "{third}");
    let limited = send(port, "PUT", put, Some(ADMIN), None, r#"{"tier": "known"}"#);
    assert_error(&limited, 429, "rate_limited");
    let (_, w3) = get(port, "/v1/vex/trust/weights", Some(READ), None);
    assert_eq!(w3["epoch"], 3, "a refused change changes nothing");

    // Restart: the store's settings win over the file's; every change is audited.
    drop(child);
    let (child, port, _) = start(tmp.path(), &data, &config);
    let (_, again) = get(port, "/v1/vex/trust/weights", Some(READ), None);
    assert_eq!((&again["policy_version"], &again["epoch"]), (&w3["policy_version"], &w3["epoch"]), "{again}");
    assert_eq!(by_pair(&get(port, c, Some(GLOBEX), None).1), globex_before);
    drop(child);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let audit = rt.block_on(async {
        use vex_lens::ports::TrustStore;
        let store = vex_lens::stores::embedded::EmbeddedStore::open(&data).unwrap();
        (store.trust_audit("acme").await.unwrap(), store.trust_audit("globex").await.unwrap())
    });
    assert!(audit.1.is_empty(), "no change of globex");
    let audit = audit.0;
    assert_eq!(
        audit.iter().map(|e| (e.epoch, e.who.as_str(), e.kind.as_str())).collect::<Vec<_>>(),
        vec![(1, "acme-admin", "issuer"), (2, "acme-admin", "policy"), (3, "acme-admin", "issuer")]
    );
    assert_eq!(audit[0].issuer.as_deref(), Some("acme"));
    assert_eq!((audit[0].before.epoch, audit[0].after.epoch), (0, 1));
    assert_eq!(audit[2].issuer.as_deref(), Some("example-scanner"));
    assert_eq!(audit[1].after, audit[2].before, "each entry starts where the previous ended");
    assert!(audit.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
}

/// Trust changes: admin scope, own tenant; bad bodies are a 400 naming the field.
fn check_trust_auth_and_bodies(port: u16, put: &str, change: &str) {
    assert_error(&send(port, "PUT", put, None, None, change), 401, "missing_token");
    assert_error(&send(port, "PUT", put, Some("wrong"), None, change), 401, "invalid_token");
    assert_error(&send(port, "PUT", put, Some(READ), None, change), 403, "insufficient_scope");
    assert_error(
        &send(port, "PUT", "/v1/vex/trust/policy", Some(READ), None, r#"{"mode":"lattice"}"#),
        403,
        "insufficient_scope",
    );
    assert_error(&send(port, "PUT", put, Some(ADMIN), Some("globex"), change), 403, "tenant_forbidden");
    // Bad bodies: 400 naming the field (and not counted against the rate limit).
    for (path, body, name) in [
        (put, r#"{"tier": "godlike"}"#, "tier"),
        (put, r#"{"weight": 1.5}"#, "issuer.weight"),
        (put, r#"{"weight": "heavy"}"#, "weight"),
        (put, r#"{}"#, "issuer"),
        (put, r#"{"colour": "red"}"#, "colour"),
        ("/v1/vex/trust/policy", r#"{"knobs": {"nope": 1}}"#, "policy.knobs.nope"),
        ("/v1/vex/trust/policy", r#"{"knobs": {"freshness_floor": 2}}"#, "policy.knobs"),
        ("/v1/vex/trust/policy", r#"{"mode": "dictator"}"#, "mode"),
    ] {
        let r = send(port, "PUT", path, Some(ADMIN), None, body);
        assert_error(&r, 400, "invalid_parameter");
        assert!(r.1["error"]["message"].as_str().unwrap().starts_with(name), "{body}: {:?}", r.1);
    }
    let r = send(port, "PUT", put, Some(ADMIN), None, "{not json");
    assert_error(&r, 400, "invalid_body");
}

/// Simulates `change` (acme's vendor untrusted), then applies it through `put`: the records
/// recomputed are the simulated ones (`before`: acme's records before), the weights and explain
/// follow the tenant's new policy.
fn check_apply_equals_simulation(port: u16, before: &std::collections::BTreeMap<Pair, Value>, put: &str, change: &str) {
    let c = "/v1/vex/consensus";
    let (code, sim) =
        send(port, "POST", "/v1/vex/simulate", Some(ADMIN), None, r#"{"issuer": {"id": "acme", "tier": "untrusted"}}"#);
    assert_eq!(code, 200, "{sim}");
    let auth = format!("Bearer {ADMIN}");
    let headers = [("Authorization", auth.as_str()), ("X-Correlation-Id", "trust-drill-1")];
    let (code, applied, _) = request(port, "PUT", put, &headers, change);
    assert_eq!(code, 200, "{applied}");
    assert_eq!((applied["applied"].as_bool(), applied["epoch"].as_u64()), (Some(true), Some(1)), "{applied}");
    assert_eq!(applied["issuer"]["tier"], "untrusted");
    assert_eq!(applied["issuer"]["weight_ppm"], 100_000);
    assert_eq!(applied["recomputed"]["pairs"], 4, "every pair of the tenant: {applied}");
    assert_eq!(applied["policy_version"], sim["policy_version_after"], "the simulated policy is the applied one");
    let after = by_pair(&get(port, c, Some(READ), None).1);
    let changed: std::collections::BTreeMap<Pair, &Value> = sim["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| ((x["artifact"].as_str().unwrap().into(), x["vulnerability"].as_str().unwrap().into()), x))
        .collect();
    assert!(!changed.is_empty(), "{sim}");
    let mut flipped = 0;
    for (pair, now) in &after {
        let was = &before[pair];
        assert_eq!(now["policy_version"], applied["policy_version"], "{pair:?}: recomputed under the new policy");
        let differs = was["status"] != now["status"] || was["confidence_ppm"] != now["confidence_ppm"];
        match changed.get(pair) {
            Some(s) => {
                assert!(differs, "{pair:?}: simulated as changing, but applying did not change it");
                assert_eq!(s["before"]["consensus_digest"], was["consensus_digest"], "{pair:?}");
                assert_eq!(s["after"]["consensus_digest"], now["consensus_digest"], "{pair:?}: the same record");
            }
            None => assert!(!differs, "{pair:?}: changed when applied, not simulated"),
        }
        for s in now["statements"].as_array().unwrap().iter().filter(|s| s["issuer"] == "acme") {
            assert_eq!((s["tier"].as_str(), s["factors"]["issuer_ppm"].as_u64()), (Some("untrusted"), Some(100_000)));
        }
        if was["status"] != now["status"] {
            flipped += 1;
            assert_eq!(now["status"].as_str().unwrap(), weighted_vote(now), "{pair:?}: as the weights say: {now}");
        }
    }
    assert!(flipped > 0, "demoting the vendor flips at least one status: {sim}");
    let (_, w) = get(port, "/v1/vex/trust/weights", Some(READ), None);
    let acme = w["issuers"].as_array().unwrap().iter().find(|i| i["id"] == "acme").unwrap().clone();
    assert_eq!(
        (acme["tier"].as_str(), acme["weight_ppm"].as_u64(), acme["tenant_override"].as_bool()),
        (Some("untrusted"), Some(100_000), Some(true))
    );
    assert_eq!((w["epoch"].as_u64(), &w["policy_version"]), (Some(1), &applied["policy_version"]));
    let pair = changed.keys().next().unwrap();
    let (_, ex) =
        get(port, &format!("{c}/explain?artifact={}&vulnerability={}", enc(&pair.0), pair.1), Some(READ), None);
    assert_eq!(ex["trace_matches_record"], true, "explain recomputes with the tenant's policy: {ex}");
}

/// The recompute metric and the `issuer_trust_changed` log line of the applied change.
fn check_issuer_change_metric_and_log(port: u16, log: &Path) {
    let (_, metrics) = common::get(port, "/metrics").unwrap();
    let count = |reason: &str| {
        common::metric(&metrics, &format!("vex_recompute_duration_seconds_count{{reason=\"{reason}\"}}")).unwrap_or(0.0)
    };
    assert!(count("issuer_update") >= 1.0, "{metrics}");
    assert_eq!(count("policy_knob"), 0.0, "pre-created at 0");
    assert_eq!(common::metric(&metrics, "vex_issuer_trust_changes_total"), Some(1.0));
    let line = common::wait_for("the issuer_trust_changed log line", Duration::from_secs(10), || {
        std::fs::read_to_string(log).unwrap().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["event"] == "issuer_trust_changed").then_some(v)
        })
    });
    assert_eq!(
        (
            &line["issuer"],
            &line["trustTier"],
            &line["weightBefore"],
            &line["weightAfter"],
            &line["tenant"],
            &line["who"]
        ),
        (
            &Value::from("acme"),
            &Value::from("untrusted"),
            &Value::from(1.0),
            &Value::from(0.1),
            &Value::from("acme"),
            &Value::from("acme-admin")
        ),
        "{line}"
    );
    assert_eq!(line["justification"], "drill");
    assert_eq!(line["correlationId"], "trust-drill-1", "the request's correlation id: {line}");
}

/// A raw GET: (status, headers lower-cased, body).
fn get_with_headers(port: u16, path: &str) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, head.to_ascii_lowercase(), body.to_string())
}

/// Issue 17 item 5: a scanner asking about its concrete package (a version and arch no
/// one stated, on a platform) gets the consensus of every stored statement that applies
/// to it, derived on request and marked so; another platform's package gets 404; a stated
/// pair is the stored record, unmarked.
#[test]
fn a_scanners_concrete_package_gets_the_record_derived_from_the_statements_that_apply() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let inbox = tmp.path().join("in");
    std::fs::create_dir_all(&inbox).unwrap();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // CVE-2024-38286: pki-servlet-engine (a source package) known_not_affected on CIQ LTS
    // for Rocky Linux 9.2 and 9.4.
    std::fs::copy(repo.join("../shared/corpus/csaf-ciq/cve-2024-38286.json"), inbox.join("ciq.json")).unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--once", "--ingest-dir", inbox.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
        .args(["--listen", "127.0.0.1:0"])
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The CLI answers the same (`records --artifact --vulnerability`), before serve holds
    // the store.
    let concrete = "pkg:rpm/rocky/pki-servlet-engine@10.0.0-1.el9_2?arch=noarch&distro=rocky-9.2";
    let cli = Command::new(BIN)
        .args(["records", "--data-dir", data.to_str().unwrap(), "--artifact", concrete])
        .args(["--vulnerability", "CVE-2024-38286"])
        .current_dir(repo)
        .output()
        .unwrap();
    assert!(cli.status.success(), "{}", String::from_utf8_lossy(&cli.stderr));
    assert!(String::from_utf8_lossy(&cli.stderr).contains("derived"), "{}", String::from_utf8_lossy(&cli.stderr));
    let cli_record: Value = serde_json::from_slice(&cli.stdout).unwrap();
    let (_child, port, _log) = start(tmp.path(), &data, "[consensus]\nissuers_file = \"config/issuers.toml\"\n");
    let q = |artifact: &str| format!("/v1/vex/consensus?artifact={}&vulnerability=CVE-2024-38286", enc(artifact));
    let stated = "pkg:rpm/rocky/pki-servlet-engine?distro=rocky-9.2";
    let (code, head, body) = get_with_headers(port, &q(stated));
    assert_eq!(code, 200, "{body}");
    assert!(!head.contains("vexlens-derived"), "{head}");
    let (code, head, body) = get_with_headers(port, &q(concrete));
    assert_eq!(code, 200, "{body}");
    assert!(head.contains("vexlens-derived: true"), "{head}");
    let r: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(r["artifact"], concrete);
    assert_eq!(r["status"], "not_affected");
    assert_eq!(r["statements"][0]["artifact"], stated);
    // Recomputable like any record: the digest covers the derived record too.
    let mut bare = r.clone();
    bare.as_object_mut().unwrap().remove("consensus_digest");
    let jcs = serde_json_canonicalizer::to_string(&bare).unwrap();
    assert_eq!(r["consensus_digest"], format!("sha256:{}", sha(&jcs)));
    assert_eq!(r, cli_record, "the API and the CLI derive the same record");
    // A platform no statement is about: nothing applies.
    let elsewhere = "pkg:rpm/rocky/pki-servlet-engine@10.0.0-1.el9_2?arch=noarch&distro=rocky-9.6";
    assert_error(&get(port, &q(elsewhere), None, None), 404, "not_found");
}
