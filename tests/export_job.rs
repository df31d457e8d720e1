//! Export jobs inside the service (`POST /v1/vex/export` on `vex-lens serve`, the built
//! binary, embedded pipeline): a job writes a bundle that `vex-lens verify` accepts, a
//! job with nothing to export answers 422 (a schemathesis finding: it was a 500) with its
//! error, both are timed and counted in the metrics and recorded in the store
//! (`vex_export_jobs`).

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{free_port, get, metric, repo_dir, vex_lens, wait_for, KillOnDrop};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");

fn post(port: u16, path: &str, tenant: &str, body: &str) -> (u16, serde_json::Value) {
    let (code, body) = common::http_request(&format!("127.0.0.1:{port}"), "POST", path, &[("X-Tenant", tenant)], body);
    (code, serde_json::from_str(&body).unwrap_or(serde_json::Value::Null))
}

/// `serve` over `inbox` (the three examples) into `data` with `env`, on a free port, once
/// the examples' 7 observations are durable.
fn serve_examples(inbox: &Path, data: &Path, env: &[(&str, &str)]) -> (KillOnDrop, u16) {
    let port = free_port();
    let child = KillOnDrop(
        Command::new(BIN)
            .args(["serve", "--ingest-dir", inbox.to_str().unwrap(), "--data-dir", data.to_str().unwrap()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .envs(env.iter().copied())
            .current_dir(repo_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start serve"),
    );
    wait_for("the examples to be durable", Duration::from_secs(60), || {
        let (_, m) = get(port, "/metrics")?;
        (metric(&m, "vex_observations_applied_total")? >= 7.0).then_some(())
    });
    (child, port)
}

#[test]
fn export_jobs_write_verifiable_bundles_and_are_timed_counted_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, data, exports) = (tmp.path().join("in"), tmp.path().join("data"), tmp.path().join("exports"));
    common::copy_dir(&repo_dir().join("examples"), &inbox);
    let key = tmp.path().join("lens.key");
    let public = tmp.path().join("lens.pub");
    let out = vex_lens(&["keygen", "--out", key.to_str().unwrap(), "--public-out", public.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let env = [("VEXLENS_EXPORT__DIR", exports.to_str().unwrap()), ("VEXLENS_EXPORT__SIGN_KEY", key.to_str().unwrap())];
    let (mut child, port) = serve_examples(&inbox, &data, &env);

    let (code, job) = post(port, "/v1/vex/export", "default", r#"{"format":"openvex"}"#);
    assert_eq!(code, 200, "{job}");
    assert_eq!(job["result"], "success");
    assert_eq!(job["records"], 4);
    assert_eq!(job["tenant"], "default", "the job exports the caller's tenant");
    let manifest = exports.join(job["job_id"].as_str().unwrap()).join("manifest.json").to_str().unwrap().to_string();
    let v = vex_lens(&["verify", "--manifest", &manifest, "--public-key", public.to_str().unwrap()]);
    assert_eq!(v.status.code(), Some(0), "{}", String::from_utf8_lossy(&v.stdout));

    let (code, failed) = post(port, "/v1/vex/export", "nobody", r#"{"format":"openvex"}"#);
    assert_eq!(code, 422, "nothing to export is the request's fault, not a server error: {failed}");
    assert_eq!(failed["error"]["code"], "nothing_to_export");
    assert_eq!(failed["job"]["result"], "failure");
    assert!(failed["job"]["error"].as_str().unwrap().contains("nothing to export"), "{failed}");
    assert_ne!(failed["job"]["job_id"], job["job_id"]);

    let (code, bad) = post(port, "/v1/vex/export", "default", r#"{"format":"xml"}"#);
    assert_eq!(code, 400);
    assert_eq!(bad["error"]["code"], "invalid_parameter");

    let (_, m) = get(port, "/metrics").unwrap();
    assert_eq!(metric(&m, r#"vex_export_jobs_total{result="success"}"#), Some(1.0), "{m}");
    // The 422 is the request's fault: counted apart, outside the failure-rate alert.
    assert_eq!(metric(&m, r#"vex_export_jobs_total{result="failure"}"#), Some(0.0), "{m}");
    assert_eq!(metric(&m, r#"vex_export_jobs_total{result="client_error"}"#), Some(1.0), "{m}");
    assert_eq!(metric(&m, "vex_export_duration_seconds_count"), Some(2.0), "{m}");

    // Stop serve (SIGTERM drains and exits 0), then read the job records back.
    let status = child.terminate(Duration::from_secs(30));
    assert!(status.success(), "serve exited with {status}");
    let out = vex_lens(&["records", "--export-jobs", "--data-dir", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let jobs: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut results: Vec<&str> = jobs.iter().map(|j| j["result"].as_str().unwrap()).collect();
    results.sort();
    assert_eq!(results, vec!["failure", "success"]);
    assert!(jobs.iter().any(|j| j["bundle_id"] == job["bundle_id"] && j["manifest"].as_str() == Some(&manifest)));
}

/// Issue 21 item 4: export bundles are kept per tenant up to `export.keep_per_tenant`
/// (older ones deleted after each job, their records kept without files); export jobs and
/// simulations are rate-limited per tenant (429 with `Retry-After`), another tenant unaffected.
#[test]
fn export_retention_and_per_tenant_rates() {
    let tmp = tempfile::tempdir().unwrap();
    let (inbox, data, exports) = (tmp.path().join("in"), tmp.path().join("data"), tmp.path().join("exports"));
    common::copy_dir(&repo_dir().join("examples"), &inbox);
    let env = [
        ("VEXLENS_EXPORT__DIR", exports.to_str().unwrap()),
        ("VEXLENS_EXPORT__KEEP_PER_TENANT", "2"),
        ("VEXLENS_API__EXPORT_JOBS_PER_MINUTE", "3"),
        ("VEXLENS_API__SIMULATIONS_PER_MINUTE", "2"),
    ];
    let (_child, port) = serve_examples(&inbox, &data, &env);
    let bundles = || -> usize { std::fs::read_dir(&exports).map_or(0, |d| d.count()) };

    // Three jobs: only the newest two bundles stay; the first job is still listed, without files.
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (code, job) = post(port, "/v1/vex/export", "default", r#"{"format":"json"}"#);
        assert_eq!(code, 200, "{job}");
        ids.push(job["job_id"].as_str().unwrap().to_string());
    }
    assert_eq!(bundles(), 2, "keep_per_tenant = 2");
    assert!(!exports.join(&ids[0]).exists() && exports.join(&ids[2]).exists());
    let (code, first) = common::http_request(
        &format!("127.0.0.1:{port}"),
        "GET",
        &format!("/v1/vex/exports/{}", ids[0]),
        &[("X-Tenant", "default")],
        "",
    );
    let first: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!((code, &first["files"]), (200, &serde_json::json!([])), "{first}");

    // The fourth job this minute is refused before any work: 429 with Retry-After.
    let addr = format!("127.0.0.1:{port}");
    let raw = |path: &str, tenant: &str, body: &str| -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(
            s,
            "POST {path} HTTP/1.0\r\nHost: x\r\nX-Tenant: {tenant}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let refused = raw("/v1/vex/export", "default", r#"{"format":"json"}"#);
    assert!(refused.starts_with("HTTP/1.0 429"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after:"), "{refused}");
    assert!(refused.contains("api.export_jobs_per_minute"), "{refused}");
    assert_eq!(bundles(), 2, "no job ran");
    // Another tenant has its own minute (422: it has nothing to export, but it ran).
    assert_eq!(post(port, "/v1/vex/export", "globex", r#"{"format":"openvex"}"#).0, 422);

    // Simulate: 2 a minute for the tenant; a bad body is 400 and not counted.
    let change = r#"{"issuer": {"id": "acme", "tier": "untrusted"}}"#;
    assert!(raw("/v1/vex/simulate", "default", r#"{"issuer": 5}"#).starts_with("HTTP/1.0 400"));
    for _ in 0..2 {
        let ok = raw("/v1/vex/simulate", "default", change);
        assert!(ok.starts_with("HTTP/1.0 200"), "{ok}");
    }
    let refused = raw("/v1/vex/simulate", "default", change);
    assert!(refused.starts_with("HTTP/1.0 429") && refused.contains("api.simulations_per_minute"), "{refused}");
    assert!(raw("/v1/vex/simulate", "globex", change).starts_with("HTTP/1.0 200"), "another tenant");
}
