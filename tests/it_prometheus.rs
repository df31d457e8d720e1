//! The dashboards and alerts against a real Prometheus (Debian's `prometheus`, started on
//! 127.0.0.1) scraping a running `vex-lens serve` (Kafka + the MongoDB-wire server)
//! while it ingests the corpus:
//! * every alert is inactive after a clean ingest, then each alert's condition is made to
//!   happen ONCE (one dead letter, one DSSE failure, three failed export jobs (the export
//!   directory made unwritable: the service's fault; a client error before them pages
//!   nothing), one tenant's conflict queue over 500, one late document, and at the end the
//!   service stopped) and that alert, and only it, goes pending: the labelled series exist
//!   at 0 from start-up, so `increase()`/`rate()` count the first event. The absent-target
//!   and crash-loop alerts are left to the promtool unit tests (dashboards/alerts.test.yml:
//!   they need no target, or three restarts); here their series parse and return data;
//! * then every panel query of every dashboard and the left-hand side of every alert
//!   expression parse and return data through Prometheus's HTTP API.
//!
//! The rules are a test copy of dashboards/alerts.yml with `for: 10m` on every rule (so
//! an alert whose condition holds shows as pending) and a 1 s evaluation interval.
//! Prometheus listens on `VEXLENS_PROMETHEUS_PORT` (default: a free port).

#[path = "../integration-tests/common/mod.rs"]
mod common;

#[path = "dsse_fixtures/mod.rs"]
mod dsse_fixtures;

#[path = "../integration-tests/common/csaf_provider.rs"]
mod csaf_provider;

use common::{free_port, repo_dir, services, wait_for, KillOnDrop, Serve, ServeSetup};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const LATENCY: &str = "VexLensConsensusLatencyHigh";
/// The alerts this test makes fire.
const ALERTS: [&str; 6] = [
    "VexLensConsensusLatencyHigh",
    "VexLensConflictQueueDeep",
    "VexLensDsseVerificationFailures",
    "VexLensExportFailureRate",
    "VexLensDeadLettering",
    "VexLensDown",
];
/// The alerts left to the promtool unit tests (no target at all; three restarts; a feed
/// with no success in 3 intervals and a 5 minute hold, whose left-hand side this test
/// still queries on the feed the service runs).
const PROMTOOL_ONLY: [&str; 3] = ["VexLensAbsent", "VexLensCrashLooping", "VexLensFeedStale"];

/// URL-encodes a query parameter.
fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn prom_get(port: u16, path: &str) -> Value {
    let (code, body) = common::get(port, path).unwrap_or((0, String::new()));
    assert!(code == 200 || code == 400 || code == 422, "Prometheus {path}: HTTP {code}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("Prometheus {path}: {e}: {body}"))
}

fn query(port: u16, expr: &str) -> Value {
    prom_get(port, &format!("/api/v1/query?query={}", enc(expr)))
}

/// Alerts pending or firing, by name.
fn active_alerts(port: u16) -> BTreeSet<String> {
    let v = prom_get(port, "/api/v1/alerts");
    v["data"]["alerts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["labels"]["alertname"].as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// The rules with `for: 10m` on every rule (a holding condition shows as pending).
fn test_rules(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(repo_dir().join("dashboards/alerts.yml")).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("for:") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("expr:") {
            let indent = &line[..line.len() - line.trim_start().len()];
            out.push_str(&format!("{indent}for: 10m\n"));
        }
    }
    let p = dir.join("alerts.yml");
    std::fs::write(&p, out).unwrap();
    p
}

fn start_prometheus(dir: &Path, target: &str) -> Option<(KillOnDrop, u16)> {
    let port: u16 =
        std::env::var("VEXLENS_PROMETHEUS_PORT").ok().and_then(|p| p.parse().ok()).unwrap_or_else(free_port);
    let rules = test_rules(dir);
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: vex-lens\n    static_configs:\n      - targets: [\"{target}\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
    let child = match Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            assert!(!common::services_required(), "prometheus not found ({e}): run scripts/install-system-deps.sh");
            eprintln!("skipped: prometheus not found ({e})");
            return None;
        }
    };
    Some((KillOnDrop(child), port))
}

struct Producer {
    inner: FutureProducer,
    topic: String,
    rt: tokio::runtime::Runtime,
}

impl Producer {
    fn new(brokers: &str, topic: &str) -> Producer {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let inner = rt.block_on(async {
            ClientConfig::new().set("bootstrap.servers", brokers).set("acks", "all").create().expect("producer")
        });
        Producer { inner, topic: topic.to_string(), rt }
    }

    /// Produces `payload` with a `tenant` header; `age` back-dates the Kafka timestamp.
    fn send(&self, key: &str, tenant: &str, payload: &[u8], age: Duration) {
        let ts = (SystemTime::now() - age).duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
        let headers = OwnedHeaders::new().insert(Header { key: "tenant", value: Some(tenant) });
        let rec = FutureRecord::to(&self.topic).key(key).payload(payload).headers(headers).timestamp(ts);
        self.rt.block_on(self.inner.send(rec, Duration::from_secs(30))).map_err(|(e, _)| e).expect("produce");
    }
}

/// An OpenVEX document by `author` with one statement per CVE on one package.
fn bulk_doc(author: &str, id: &str, status: &str, cves: usize) -> Vec<u8> {
    let statements: Vec<Value> = (0..cves)
        .map(|i| {
            let mut s = json!({
                "vulnerability": {"name": format!("CVE-2031-{:05}", i + 1)},
                "products": [{"@id": format!("pkg:npm/bulk-{id}@1.0.0")}],
                "status": status,
            });
            if status == "not_affected" {
                s["justification"] = json!("component_not_present");
            }
            if status == "affected" {
                s["action_statement"] = json!("upgrade");
            }
            s
        })
        .collect();
    serde_json::to_vec(&json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": format!("https://example.test/vex/{id}/{author}"),
        "author": author,
        "timestamp": "2031-01-01T00:00:00Z",
        "version": 1,
        "statements": statements,
    }))
    .unwrap()
}

/// POST as tenant `tenant` (the loopback API takes the tenant from `X-Tenant`).
fn post(listen: &str, path: &str, tenant: &str, body: &str) -> u16 {
    common::http_request(listen, "POST", path, &[("X-Tenant", tenant)], body).0
}

/// Every dashboard panel query (`panels[].targets[].expr`) and every alert's left-hand
/// side (the expression without its final threshold comparison).
fn queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo_dir().join("dashboards")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for p in v["panels"].as_array().unwrap() {
                for t in p["targets"].as_array().unwrap() {
                    // Grafana's variables, as Grafana would fill them in for this target.
                    let expr = t["expr"]
                        .as_str()
                        .unwrap()
                        .replace("$__rate_interval", "1m")
                        .replace("$job", "vex-lens")
                        .replace("$instance", ".*");
                    out.push((format!("{}: {}", path.file_name().unwrap().to_string_lossy(), p["title"]), expr));
                }
            }
        }
    }
    let rules = std::fs::read_to_string(repo_dir().join("dashboards/alerts.yml")).unwrap();
    let names: BTreeSet<&str> =
        rules.lines().filter_map(|l| l.trim().strip_prefix("- alert:")).map(str::trim).collect();
    assert_eq!(
        names,
        ALERTS.into_iter().chain(PROMTOOL_ONLY).collect(),
        "this test makes each alert of alerts.yml fire, or names it as left to promtool"
    );
    let mut alert = String::new();
    for line in rules.lines() {
        let line = line.trim();
        if let Some(a) = line.strip_prefix("- alert:") {
            alert = a.trim().to_string();
        } else if let Some(expr) = line.strip_prefix("expr:") {
            for lhs in left_hand_sides(expr) {
                out.push((format!("alert {alert}"), lhs));
            }
        }
    }
    out
}

/// The series an alert expression compares: each `and` operand without its final
/// threshold comparison (`> x`, `>= x`, `== x`), `absent(e)` as `e`.
fn left_hand_sides(expr: &str) -> Vec<String> {
    expr.split(" and ")
        .map(|part| {
            let mut p = part.trim();
            if p.starts_with('(') && p.ends_with(')') {
                p = &p[1..p.len() - 1];
            }
            for op in [" >= ", " > ", " == "] {
                if let Some((lhs, rhs)) = p.rsplit_once(op) {
                    if rhs.trim().parse::<f64>().is_ok() {
                        p = lhs.trim();
                        break;
                    }
                }
            }
            if let Some(inner) = p.strip_prefix("absent(").and_then(|x| x.strip_suffix(')')) {
                p = inner;
            }
            p.to_string()
        })
        .collect()
}

#[test]
fn alert_left_hand_sides() {
    assert_eq!(left_hand_sides("up{job=\"a\"} == 0"), ["up{job=\"a\"}"]);
    assert_eq!(left_hand_sides("absent(up{job=\"a\"})"), ["up{job=\"a\"}"]);
    assert_eq!(left_hand_sides("(sum(a) / sum(b) > 0.02) and sum(c) >= 3"), ["sum(a) / sum(b)", "sum(c)"]);
    assert_eq!(left_hand_sides("changes(p[15m]) > 2"), ["changes(p[15m])"]);
}

/// A CSAF feed the service runs (a loopback HTTPS provider, returned: it serves while it
/// lives), so the feed panels and the feed alert's left-hand side have series: the
/// provider's issuer added to `issuers`, and the config file of the feed.
fn feed_config(tmp: &Path, issuers: &Path) -> (csaf_provider::Provider, PathBuf) {
    let www = tmp.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let provider = csaf_provider::Provider::start(&www);
    csaf_provider::build(&provider, &www, &tmp.join("plain"), 3);
    std::fs::write(tmp.join("ca.pem"), &provider.ca_pem).unwrap();
    let mut directory = std::fs::read_to_string(issuers).unwrap();
    directory.push_str("\n[[issuers]]\nid = \"ciq\"\ntier = \"trusted\"\naliases = [\"https://www.ciq.com\"]\n");
    std::fs::write(issuers, directory).unwrap();
    let feed_config = tmp.join("feeds.toml");
    std::fs::write(
        &feed_config,
        format!(
            "[[feeds]]\nname = \"ciq\"\nkind = \"csaf\"\nurl = \"{}/.well-known/csaf/provider-metadata.json\"\n\
             issuer = \"ciq\"\nrate = 500.0\nca_file = {:?}\n\n[store]\ndata_dir = {:?}\n",
            provider.origin(),
            tmp.join("ca.pem").display().to_string(),
            tmp.join("data").display().to_string()
        ),
    )
    .unwrap();
    (provider, feed_config)
}

#[test]
fn dashboards_and_alerts_against_a_real_prometheus() {
    let Some(svc) = services() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let keys = dsse_fixtures::Keys::new();
    let issuers = tmp.path().join("issuers.toml");
    keys.write_issuers(&issuers);
    let sign_key = tmp.path().join("lens.key");
    std::fs::write(&sign_key, vex_lens::crypto::generate_keypair(vex_lens::crypto::KeyAlg::Ed25519).unwrap().0)
        .unwrap();
    let (_provider, feed_config) = feed_config(tmp.path(), &issuers);
    let setup = ServeSetup::fresh(&svc, "prometheus");
    let mut serve = Serve::start(
        &setup,
        "serve",
        &[
            ("VEXLENS_CONFIG", feed_config.to_str().unwrap()),
            ("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers.to_str().unwrap()),
            ("VEXLENS_EXPORT__DIR", tmp.path().join("exports").to_str().unwrap()),
            ("VEXLENS_EXPORT__SIGN_KEY", sign_key.to_str().unwrap()),
        ],
    );
    serve.wait_ready(Duration::from_secs(90));
    let Some((mut prom, port)) = start_prometheus(tmp.path(), &serve.listen) else { return };
    let prom_log = tmp.path().join("prometheus.log");
    let prom_tail = || std::fs::read_to_string(&prom_log).unwrap_or_default();
    wait_for("Prometheus to scrape vex-lens", Duration::from_secs(60), || {
        if let Ok(Some(s)) = prom.0.try_wait() {
            panic!("prometheus exited ({s}):\n{}", prom_tail());
        }
        let (_, body) = common::get(port, &format!("/api/v1/query?query={}", enc("up{job=\"vex-lens\"}")))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["data"]["result"][0]["value"][1] == "1").then_some(())
    });

    // The corpus (OpenVEX, CSAF, CycloneDX), produced to the documents topic.
    let producer = Producer::new(&svc.brokers, &setup.topic);
    // (Files over the broker's default 1 MB message limit are left out.)
    let files: Vec<PathBuf> = common::corpus_files(&["openvex", "csaf", "cyclonedx"])
        .into_iter()
        .filter(|f| std::fs::metadata(f).is_ok_and(|m| m.len() < 900_000))
        .collect();
    assert!(files.len() > 20, "corpus: {} files", files.len());
    for f in &files {
        producer.send(&f.display().to_string(), "default", &std::fs::read(f).unwrap(), Duration::ZERO);
    }
    let scraped =
        |expr: &str| query(port, expr)["data"]["result"][0]["value"][1].as_str().and_then(|s| s.parse::<f64>().ok());
    wait_for("the corpus to be ingested and scraped", Duration::from_secs(180), || {
        (scraped("sum(vex_documents_total)")? >= files.len() as f64).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut quiet = active_alerts(port);
    // On a loaded machine the corpus burst itself can take over 1.5 s from produce to
    // durable write: then the latency alert is rightly pending already.
    if quiet.remove(LATENCY) {
        eprintln!("note: the corpus ingest already had p99 latency over 1.5 s");
    }
    assert!(quiet.is_empty(), "alerts active after a clean corpus ingest: {quiet:?}");

    // Each alert's condition, once; only that alert goes pending.
    let mut expected = BTreeSet::new();
    let mut expect = |alert: &str, what: &str| {
        expected.insert(alert.to_string());
        let mut got = wait_for(what, Duration::from_secs(90), || {
            let a = active_alerts(port);
            a.contains(alert).then_some(a)
        });
        // Real latency depends on the machine's load (a burst of 1,000 observations can
        // take over 1.5 s here): the latency alert is checked by its own event below.
        if alert != LATENCY {
            got.remove(LATENCY);
            expected.remove(LATENCY);
        }
        assert_eq!(got, expected, "after {what}, exactly these alerts are pending");
    };

    producer.send("garbage", "default", b"\x00 not json", Duration::ZERO);
    expect("VexLensDeadLettering", "one dead letter");

    let envelopes = dsse_fixtures::envelopes(&keys);
    let tampered = &envelopes.iter().find(|(n, _)| *n == "tampered").unwrap().1;
    producer.send("tampered", "default", tampered.to_json().as_bytes(), Duration::ZERO);
    expect("VexLensDsseVerificationFailures", "one DSSE verification failure");

    // A client error (nothing to export for an empty tenant) is counted apart and pages
    // nothing; three jobs that fail on the server side (the export directory replaced
    // by a file) do.
    assert_eq!(post(&serve.listen, "/v1/vex/export", "nobody", r#"{"format":"openvex"}"#), 422);
    wait_for("the client error to be scraped", Duration::from_secs(30), || {
        (scraped("sum(vex_export_jobs_total{result=\"client_error\"})")? >= 1.0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(3));
    let mut after_client_error = active_alerts(port);
    after_client_error.remove(LATENCY);
    assert!(!after_client_error.contains("VexLensExportFailureRate"), "a client error paged: {after_client_error:?}");
    let exports = tmp.path().join("exports");
    let _ = std::fs::remove_dir_all(&exports);
    std::fs::write(&exports, b"not a directory").unwrap();
    for _ in 0..3 {
        assert_eq!(post(&serve.listen, "/v1/vex/export", "default", r#"{"format":"openvex"}"#), 500);
    }
    expect("VexLensExportFailureRate", "three failed export jobs");

    // Tenant "bulk": two issuers disagree on 501 vulnerabilities of one package.
    producer.send("bulk-a", "bulk", &bulk_doc("Vendor A", "conflicts", "affected", 501), Duration::ZERO);
    producer.send("bulk-b", "bulk", &bulk_doc("Vendor B", "conflicts", "not_affected", 501), Duration::ZERO);
    expect("VexLensConflictQueueDeep", "one tenant's conflict queue over 500");
    let deep = query(port, "vex_conflict_queue_depth > 500");
    assert_eq!(deep["data"]["result"][0]["metric"]["tenant"], "bulk", "{deep}");

    // A document that arrived 30 s ago (Kafka timestamp) with enough statements to move p99.
    let before = scraped("sum(vex_consensus_latency_seconds_count)").unwrap_or(0.0);
    producer.send("late", "late", &bulk_doc("Vendor L", "late", "not_affected", 2_000), Duration::from_secs(30));
    wait_for("the late document's writes", Duration::from_secs(90), || {
        (scraped("sum(vex_consensus_latency_seconds_count)")? >= before + 2_000.0).then_some(())
    });
    expect(LATENCY, "one late document");
    let p99 = scraped("histogram_quantile(0.99, sum by (le) (rate(vex_consensus_latency_seconds_bucket[5m])))");
    assert!(p99.is_some_and(|p| p > 8.0), "p99 {p99:?}: the 30 s old document moved it");
    expected.insert(LATENCY.to_string());

    // Every panel query and every alert's left-hand side parses and returns data.
    let mut failures = Vec::new();
    for (origin, expr) in queries() {
        let v = query(port, &expr);
        if v["status"] != "success" {
            failures.push(format!("{origin}: {expr}: {}", v["error"]));
        } else if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            failures.push(format!("{origin}: {expr}: no data"));
        }
    }
    assert!(failures.is_empty(), "queries failing against Prometheus:\n{}", failures.join("\n"));
    assert!(serve.terminate(Duration::from_secs(30)), "serve did not stop cleanly; log:\n{}", serve.log_tail());
    // The service is down: its scrapes fail and the down alert goes pending (the alerts on
    // its instant series resolve as they go stale, so only this one is checked).
    wait_for("VexLensDown after the service stopped", Duration::from_secs(60), || {
        active_alerts(port).contains("VexLensDown").then_some(())
    });
    expected.insert("VexLensDown".to_string());
    assert_eq!(expected, ALERTS.iter().map(|a| a.to_string()).collect(), "every alert of ALERTS was made to fire");
}
