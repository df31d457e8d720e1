//! `vex-lens feed run --once` against a real HTTPS CSAF provider on loopback (hyper over
//! rustls, certificate from a test CA given through the feed's `ca_file`), serving a
//! provider directory built here from `../shared/corpus/csaf-ciq` (files named per the
//! spec, year folders, `.sha256`/`.sha512`, `index.txt`, `changes.csv`, metadata). No
//! other host is ever contacted.
//!
//! Invariants checked: the records stored equal `vex-lens consensus` on the same files; a
//! second run makes only conditional requests, all answered 304, and emits nothing; one
//! changed document (listed in a CSAF 2.1 unquoted `changes.csv`) is fetched and emitted
//! exactly once; a wrong `.sha512` beside a right `.sha256` rejects the document
//! (`hash_mismatch`) and it is retried (emitted once fixed); `../` and foreign-host paths
//! are rejected and never requested; a bare domain is discovered through its well-known
//! URL; `GET /v1/vex/feeds` shows an admin its tenant's feeds and their state; `serve`'s
//! `/metrics` counts each rewind of `changes.csv` once, and its per-feed requests by
//! status, bytes and documents equal what the provider answered.

#[path = "../integration-tests/common/mod.rs"]
mod common;
#[path = "../integration-tests/common/csaf_provider.rs"]
mod csaf_provider;
#[path = "../integration-tests/common/openpgp.rs"]
mod openpgp;

use common::{repo_dir, vex_lens};
use csaf_provider::{feed_state, Directory, Fixture, Provider};
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");

fn write_config(tmp: &Path, provider: &Provider, extra: &str) -> PathBuf {
    let ca = csaf_provider::write_ca(tmp, provider);
    let issuers = tmp.join("issuers.toml");
    std::fs::write(
        &issuers,
        "[[issuers]]\nid = \"ciq\"\ndisplay_name = \"CIQ\"\ntier = \"trusted\"\naliases = [\"https://www.ciq.com\"]\n\n\
         [[issuers]]\nid = \"other\"\ntier = \"known\"\naliases = [\"https://other.example\"]\n",
    )
    .unwrap();
    let cfg = tmp.join("vex-lens.toml");
    std::fs::write(
        &cfg,
        format!(
            "[consensus]\nissuers_file = {:?}\n\n[store]\ndata_dir = {:?}\n\n[[feeds]]\nname = \"ciq\"\nkind = \"csaf\"\n\
             url = \"{}\"\nissuer = \"ciq\"\nrate = 500.0\ntimeout = \"10s\"\n\
             ca_file = {:?}\n{extra}",
            issuers.display().to_string(),
            tmp.join("data").display().to_string(),
            provider.metadata_url(),
            ca.display().to_string()
        ),
    )
    .unwrap();
    cfg
}

/// Runs `feed run --once` (the feeds named, default every enabled one); the exit code
/// and the summaries.
fn feed_run_all(cfg: &Path, names: &[&str]) -> (i32, Vec<serde_json::Value>) {
    let mut args = vec!["feed", "run", "--once", "--log-format", "json", "--config", cfg.to_str().unwrap()];
    args.extend_from_slice(names);
    let out = vex_lens(&args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summaries: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(!summaries.is_empty(), "no summary: {}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), summaries)
}

/// Runs `feed run --once ciq`, which must succeed; its summary.
fn feed_run(cfg: &Path) -> serde_json::Value {
    let (code, mut s) = feed_run_all(cfg, &["ciq"]);
    assert_eq!(code, 0, "feed run failed: {s:?}");
    assert_eq!(s[0]["feed"], "ciq");
    s.remove(0)
}

fn lines(out: std::process::Output, what: &str) -> Vec<String> {
    assert!(out.status.success(), "{what} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
}

fn records(tmp: &Path) -> Vec<String> {
    lines(vex_lens(&["records", "--data-dir", tmp.join("data").to_str().unwrap()]), "records")
}

fn consensus(tmp: &Path, cfg: &Path, plain: &Path) -> Vec<String> {
    let issuers = tmp.join("issuers.toml");
    let args = [
        "consensus",
        "--issuers",
        issuers.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
        plain.to_str().unwrap(),
    ];
    lines(vex_lens(&args), "consensus")
}

fn count(v: &serde_json::Value, map: &str, key: &str) -> u64 {
    v[map][key].as_u64().unwrap_or(0)
}

#[test]
fn a_feed_is_pulled_incrementally_and_stores_what_consensus_computes() {
    let Fixture { tmp, root, plain, provider, mut dir } = Fixture::start(usize::MAX);
    let tmp = tmp.path();
    let n = dir.rows.len() as u64;
    assert!(n >= 40, "the CIQ corpus has {n} documents");
    let cfg = write_config(tmp, &provider, "");

    // First sync: metadata, changes.csv, index.txt, then every document and its hashes.
    let s = feed_run(&cfg);
    assert_eq!(
        (s["ok"].as_bool(), s["fetched"].as_u64(), s["emitted"].as_u64()),
        (Some(true), Some(n), Some(n)),
        "{s}"
    );
    assert_eq!(s["rejected"], serde_json::json!({}), "{s}");
    assert_eq!(count(&s, "warnings", "no_signature"), n, "no .asc published: counted: {s}");
    let seen = provider.seen();
    assert!(seen.iter().any(|r| r.path.ends_with("/index.txt")), "the first sync reads index.txt");
    assert!(seen.iter().all(|r| !r.conditional()), "nothing known yet: no conditional request");
    let want = consensus(tmp, &cfg, &plain);
    assert!(want.len() > 100, "the CIQ corpus gives many records ({})", want.len());
    assert_eq!(records(tmp), want, "feed run --once then records equals consensus on the same files");

    // Second run: only conditional requests (metadata, changes.csv), all 304; nothing emitted.
    provider.clear();
    let s = feed_run(&cfg);
    assert_eq!((s["fetched"].as_u64(), s["emitted"].as_u64()), (Some(0), Some(0)), "{s}");
    let seen = provider.seen();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/.well-known/csaf/provider-metadata.json", "/.well-known/csaf/white/changes.csv"], "{seen:?}");
    assert!(seen.iter().all(|r| r.conditional() && r.status == 304), "{seen:?}");
    assert!(seen.iter().all(|r| r.if_none_match.is_some() && r.if_modified_since.is_some()), "{seen:?}");

    // One changed document, listed in a CSAF 2.1 (unquoted) changes.csv: exactly one emit.
    let (rel, _) = dir.rows[n as usize / 2].clone();
    let path = dir.dir.join(&rel);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    v["document"]["tracking"]["current_release_date"] = "2026-09-01T00:00:00Z".into();
    v["document"]["notes"] = serde_json::json!([{"category": "general", "text": "revised", "title": "Revision"}]);
    let changed = serde_json::to_vec_pretty(&v).unwrap();
    dir.put(&rel, &changed, None);
    // The store keeps both versions (the newer retracts what the older said): so does
    // the copy `consensus` reads.
    std::fs::write(plain.join(rel.replace('/', "_").replace(".json", ".v2.json")), &changed).unwrap();
    dir.relist(&rel, "2026-09-01T00:00:00Z");
    dir.write_lists(false);
    // `feed check`: a dry run names the changed document, fetches none, changes no state.
    let state_file = tmp.join("data/feeds/ciq.json");
    let state_before = std::fs::read(&state_file).unwrap();
    provider.clear();
    let out = vex_lens(&["feed", "check", "ciq", "--config", cfg.to_str().unwrap()]);
    let check: serde_json::Value = serde_json::from_str(&lines(out, "feed check")[0]).unwrap();
    let dir_url = provider.white_url();
    assert_eq!(check["would_fetch"], serde_json::json!([format!("{dir_url}{rel}")]), "{check}");
    assert_eq!(check["emitted"].as_u64(), Some(0));
    let seen = provider.seen();
    assert!(seen.iter().all(|r| !r.path.contains("/20")), "no document fetched by a dry run: {seen:?}");
    assert_eq!(std::fs::read(&state_file).unwrap(), state_before, "a dry run saves no state");

    provider.clear();
    let s = feed_run(&cfg);
    assert_eq!((s["fetched"].as_u64(), s["emitted"].as_u64()), (Some(1), Some(1)), "{s}");
    let docs: Vec<String> = provider.seen().iter().map(|r| r.path.clone()).filter(|p| p.ends_with(".json")).collect();
    assert_eq!(docs.len(), 2, "the metadata and the one changed document: {docs:?}");
    assert_eq!(records(tmp), consensus(tmp, &cfg, &plain), "still equal after the change");

    // A wrong sha512 beside a right sha256: rejected (hash_mismatch), not emitted; retried
    // and emitted once the hash is right. `../` and foreign-host rows are rejected unfetched.
    let (rel2, _) = dir.rows[n as usize - 1].clone();
    let path2 = dir.dir.join(&rel2);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path2).unwrap()).unwrap();
    v["document"]["tracking"]["current_release_date"] = "2026-09-02T00:00:00Z".into();
    v["document"]["notes"] = serde_json::json!([{"category": "general", "text": "revised too", "title": "Revision"}]);
    let changed2 = serde_json::to_vec_pretty(&v).unwrap();
    dir.put(&rel2, &changed2, Some(&"ab".repeat(64)));
    dir.relist(&rel2, "2026-09-02T00:00:00Z");
    let outside = root.join(".well-known/csaf/outside.json");
    std::fs::write(&outside, std::fs::read(&path).unwrap()).unwrap();
    dir.relist("../outside.json", "2026-09-03T00:00:00Z");
    dir.relist("https://evil.example/csaf/white/2026/x.json", "2026-09-03T00:00:00Z");
    dir.relist("//evil.example/csaf/white/2026/y.json", "2026-09-03T00:00:00Z");
    dir.write_lists(false);
    provider.clear();
    let before = records(tmp);
    let s = feed_run(&cfg);
    assert_eq!(s["ok"].as_bool(), Some(true), "{s}");
    assert_eq!((s["fetched"].as_u64(), s["emitted"].as_u64()), (Some(1), Some(0)), "{s}");
    assert_eq!(count(&s, "rejected", "hash_mismatch"), 1, "{s}");
    assert_eq!(count(&s, "rejected", "path_dot_dot"), 1, "{s}");
    assert_eq!(count(&s, "rejected", "path_foreign_host"), 2, "{s}");
    let seen = provider.seen();
    assert!(seen.iter().all(|r| !r.path.contains("outside") && !r.path.contains("evil")), "{seen:?}");
    assert_eq!(records(tmp), before, "a rejected document changes nothing");
    let state: serde_json::Value = feed_state(&tmp.join("data"), "ciq");
    let doc = &state["directories"][provider.white_url()]["documents"][&rel2];
    assert_eq!((doc["outcome"].as_str(), doc["reason"].as_str()), (Some("failed"), Some("hash_mismatch")), "{doc}");
    assert!(doc["next_retry_ms"].as_i64().is_some(), "{doc}");

    dir.put(&rel2, &changed2, None);
    std::fs::write(plain.join(rel2.replace('/', "_").replace(".json", ".v2.json")), &changed2).unwrap();
    provider.clear();
    let s = feed_run(&cfg);
    assert_eq!((s["fetched"].as_u64(), s["emitted"].as_u64()), (Some(1), Some(1)), "retried and emitted: {s}");
    assert_eq!(records(tmp), consensus(tmp, &cfg, &plain), "equal again");
    // The rejected paths stay rejected: not retried, never requested.
    assert!(provider.seen().iter().all(|r| !r.path.contains("outside") && !r.path.contains("evil")));

    // `feed list` and `feed status` read the state; `feed reset` forgets it.
    let c = cfg.to_str().unwrap();
    let list: serde_json::Value =
        serde_json::from_str(&lines(vex_lens(&["feed", "list", "--config", c]), "list")[0]).unwrap();
    assert_eq!(
        (list["name"].as_str(), list["issuer"].as_str(), list["enabled"].as_bool()),
        (Some("ciq"), Some("ciq"), Some(true))
    );
    assert_eq!(list["documents"]["emitted"].as_u64(), Some(n), "{list}");
    assert_eq!(list["documents"]["rejected"].as_u64(), Some(3), "the three bad paths: {list}");
    assert!(list["last_success_ms"].as_i64().is_some(), "{list}");
    assert_eq!(list["last_attempt_ms"], list["last_success_ms"], "the last run succeeded: {list}");
    assert!(list["last_error"].is_null(), "{list}");
    let status: serde_json::Value =
        serde_json::from_str(&lines(vex_lens(&["feed", "status", "ciq", "--config", c]), "status")[0]).unwrap();
    assert_eq!(status["directories"][&dir_url]["documents"][&rel2]["outcome"], "emitted", "{status}");
    lines(vex_lens(&["feed", "reset", "ciq", "--config", c]), "reset");
    let status: serde_json::Value =
        serde_json::from_str(&lines(vex_lens(&["feed", "status", "ciq", "--config", c]), "status")[0]).unwrap();
    assert_eq!(status["never_run"].as_bool(), Some(true), "{status}");
    let out = vex_lens(&["feed", "status", "nope", "--config", c]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no feed \"nope\""));
}

/// Each fault with its expected outcome: 404 (rejected `not_found`, retried), 503 twice
/// then 200 (emitted once), 429 with `Retry-After` (waited, emitted), a redirect (not
/// followed: rejected `redirect`, retried), a truncated body (retried; still truncated on
/// every attempt: rejected, retried next run), a garbage `.sha256` (rejected
/// `hash_malformed`, retried, emitted once fixed), an AMBER document in the WHITE folder
/// (skipped `tlp_not_allowed`), another publisher (skipped `publisher_mismatch`), a stale
/// document (deferred, emitted once fresh), duplicate and malformed rows (counted,
/// skipped), a rewinding `changes.csv` (reconciled against `index.txt`), and a feed whose
/// configured issuer the provider's namespace does not name (that feed stops, exit 1, the
/// other feed goes on).
#[test]
fn faults_are_rejected_retried_skipped_or_deferred_as_the_rules_say() {
    use csaf_provider::Fault;
    let Fixture { tmp, provider, mut dir, .. } = Fixture::start(10);
    let tmp = tmp.path();
    let cfg = write_config(
        tmp,
        &provider,
        &format!(
            "\n[[feeds]]\nname = \"wrong-issuer\"\nkind = \"csaf\"\nurl = \"{}/.well-known/csaf/provider-metadata.json\"\n\
             issuer = \"other\"\nca_file = {:?}\n",
            provider.origin(),
            tmp.join("ca.pem").display().to_string()
        ),
    );
    let rel = |i: usize| dir.rows.iter().map(|r| r.0.clone()).collect::<Vec<_>>()[i].clone();
    let url = |r: &str| format!("/.well-known/csaf/white/{r}");
    let (a, b, c, d, e, f, g, h) = (rel(0), rel(1), rel(2), rel(3), rel(4), rel(5), rel(6), rel(7));
    let i = rel(8);
    let i_sha256 = dir.dir.join(format!("{i}.sha256"));
    let right_sha256 = std::fs::read(&i_sha256).unwrap();
    std::fs::write(&i_sha256, "not a hash at all\n").unwrap();
    provider.fault(&url(&a), Fault::Status(404), 1);
    provider.fault(&url(&b), Fault::Status(503), 2);
    provider.fault(&url(&c), Fault::TooMany(1), 1);
    provider.fault(&url(&d), Fault::Redirect(format!("{}/elsewhere/{d}", provider.origin())), 1);
    provider.fault(&url(&e), Fault::Truncated, 4);
    let edit = |dir: &Directory, r: &str, change: &dyn Fn(&mut serde_json::Value)| {
        let p = dir.dir.join(r);
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        change(&mut v);
        dir.put(r, &serde_json::to_vec_pretty(&v).unwrap(), None);
    };
    edit(&dir, &f, &|v| v["document"]["distribution"]["tlp"]["label"] = "AMBER".into());
    edit(&dir, &g, &|v| v["document"]["publisher"]["namespace"] = "https://impostor.example".into());
    // Listed later than the document says it was released: a stale cache.
    dir.relist(&h, "2026-09-05T00:00:00Z");
    dir.write_lists(true);
    let mut changes = std::fs::read_to_string(dir.dir.join("changes.csv")).unwrap();
    let first_row = changes.lines().next().unwrap().to_string();
    changes.push_str(&format!("{first_row}\n\"2026/bad.json\"\nnot,a,row\n"));
    std::fs::write(dir.dir.join("changes.csv"), changes).unwrap();

    let started = std::time::Instant::now();
    let (code, s) = feed_run_all(&cfg, &[]);
    assert_eq!(code, 1, "a failed feed makes the run fail: {s:?}");
    let other = s.iter().find(|x| x["feed"] == "wrong-issuer").unwrap();
    assert_eq!(
        (other["ok"].as_bool(), other["error_code"].as_str()),
        (Some(false), Some("publisher_mismatch")),
        "{other}"
    );
    assert_eq!(other["fetched"].as_u64(), Some(0), "{other}");
    let s = s.iter().find(|x| x["feed"] == "ciq").unwrap().clone();
    assert_eq!(s["ok"].as_bool(), Some(true), "the other feed goes on: {s}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "Retry-After: 1 was waited for");
    for (k, want) in [("not_found", 1), ("redirect", 1), ("fetch_failed", 1), ("hash_malformed", 1)] {
        assert_eq!(count(&s, "rejected", k), want, "{k}: {s}");
    }
    assert_eq!(count(&s, "skipped", "tlp_not_allowed"), 1, "{s}");
    assert_eq!(count(&s, "skipped", "publisher_mismatch"), 1, "{s}");
    assert_eq!(
        (s["deferred"].as_u64(), s["malformed_rows"].as_u64(), s["duplicate_rows"].as_u64()),
        (Some(1), Some(2), Some(1)),
        "{s}"
    );
    // 10 documents: a, d, e, i rejected, f, g skipped, h deferred; b (after two 503s), c
    // (after a 429) and the other one emitted.
    assert_eq!(s["emitted"].as_u64(), Some(3), "{s}");
    assert_eq!(
        (count(&s, "requests", "503"), count(&s, "requests", "429"), count(&s, "requests", "302")),
        (2, 1, 1),
        "{s}"
    );
    assert!(provider.seen().iter().all(|r| !r.path.starts_with("/elsewhere")), "the redirect was not followed");

    // The faults are gone, i's hash file is right and h is fresh: the rejected and the
    // deferred are retried and emitted once; the skipped ones are settled and not fetched
    // again.
    edit(&dir, &h, &|v| v["document"]["tracking"]["current_release_date"] = "2026-09-05T00:00:00Z".into());
    std::fs::write(&i_sha256, right_sha256).unwrap();
    provider.clear();
    let s = feed_run(&cfg);
    assert_eq!((s["fetched"].as_u64(), s["emitted"].as_u64()), (Some(5), Some(5)), "{s}");
    let docs: Vec<String> = provider.seen().iter().map(|r| r.path.clone()).filter(|p| p.ends_with(".json")).collect();
    for r in [&f, &g] {
        assert!(!docs.contains(&url(r)), "skipped documents are not fetched again: {docs:?}");
    }
    let s = feed_run(&cfg);
    assert_eq!((s["fetched"].as_u64(), s["emitted"].as_u64()), (Some(0), Some(0)), "{s}");

    // changes.csv rewinds (rows gone, its newest row older than the watermark) while
    // index.txt gains a document: reconciled, only that document fetched.
    let extra = "2026/cve-2026-00001.json";
    let bytes = std::fs::read(dir.dir.join(&a)).unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    v["document"]["tracking"]["id"] = "CVE-2026-00001".into();
    v["document"]["tracking"]["initial_release_date"] = "2026-01-01T00:00:00Z".into();
    dir.put(extra, &serde_json::to_vec_pretty(&v).unwrap(), None);
    let mut index = std::fs::read_to_string(dir.dir.join("index.txt")).unwrap();
    index.push_str(&format!("{extra}\n"));
    std::fs::write(dir.dir.join("index.txt"), index).unwrap();
    let rows: Vec<String> = dir.rows.iter().skip(3).map(|(p, _)| format!("{p},2020-01-01T00:00:00Z")).collect();
    std::fs::write(dir.dir.join("changes.csv"), rows.join("\n") + "\n").unwrap();
    provider.clear();
    let s = feed_run(&cfg);
    assert_eq!(s["rewinds"].as_u64(), Some(1), "{s}");
    assert_eq!((s["fetched"].as_u64(), s["emitted"].as_u64()), (Some(1), Some(1)), "{s}");
    assert!(provider.seen().iter().any(|r| r.path.ends_with(extra) && r.status == 200));
}

/// `serve` runs the enabled feeds: the documents become records (equal to `consensus` on
/// the same files), `/status` names the feed and its health only, `/metrics` counts its
/// requests, documents and last success; SIGTERM stops it cleanly.
#[test]
fn serve_runs_the_enabled_feeds() {
    let Fixture { tmp, plain, provider, dir, .. } = Fixture::start(12);
    let tmp = tmp.path();
    let n = dir.rows.len();
    let cfg = write_config(tmp, &provider, "");
    let (mut serve, port) = common::start_embedded_serve(
        &["--config", cfg.to_str().unwrap()],
        &[],
        &tmp.join("serve.log"),
        std::time::Duration::from_secs(60),
    );
    let status = common::wait_for("the feed's first run", std::time::Duration::from_secs(60), || {
        let (_, body) = common::get(port, "/status")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["feeds"][0]["health"] == "ok").then_some(v)
    });
    assert_eq!(status["feeds"], serde_json::json!([{"name": "ciq", "health": "ok"}]), "names and health only");
    let (_, metrics) = common::get(port, "/metrics").unwrap();
    let emitted = common::metric(&metrics, "vex_feed_documents_total{feed=\"ciq\",outcome=\"emitted\",reason=\"\"}");
    assert_eq!(emitted, Some(n as f64), "{metrics}");
    assert!(
        common::metric(&metrics, "vex_feed_requests_total{feed=\"ciq\",status=\"200\"}").unwrap() >= 3.0 * n as f64
    );
    assert!(common::metric(&metrics, "vex_feed_last_success_timestamp_seconds{feed=\"ciq\"}").unwrap() > 1.7e9);
    assert!(common::metric_sum(&metrics, "vex_feed_bytes_total").unwrap() > 10_000.0);
    assert_eq!(common::metric(&metrics, "vex_feed_interval_seconds{feed=\"ciq\"}"), Some(3600.0), "for the alert");
    let exit = serve.terminate(std::time::Duration::from_secs(30));
    assert!(exit.success(), "SIGTERM: clean exit ({exit})");
    assert_eq!(records(tmp), consensus(tmp, &cfg, &plain), "serve's feed records equal consensus");
}

/// The feed `ciq`'s series in `serve`'s `/metrics` (a scrape `m`), and what the provider
/// answered, for [`serve_counts_a_rewinding_changes_csv_in_its_metrics`].
mod ciq_metrics {
    use super::common;
    use super::csaf_provider::{Provider, Seen};
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    pub fn scrape(port: u16) -> String {
        common::get(port, "/metrics").expect("GET /metrics").1
    }

    pub fn value(m: &str, sample: &str) -> Option<f64> {
        common::metric(m, &format!("vex_feed_{sample}"))
    }

    pub fn docs(m: &str, outcome: &str) -> Option<f64> {
        value(m, &format!("documents_total{{feed=\"ciq\",outcome=\"{outcome}\",reason=\"\"}}"))
    }

    pub fn rewinds(m: &str) -> Option<f64> {
        value(m, "rewinds_total{feed=\"ciq\"}")
    }

    pub fn now_s() -> f64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
    }

    /// The feed's requests by status (the non-zero series).
    pub fn by_status(m: &str) -> BTreeMap<String, f64> {
        let prefix = "vex_feed_requests_total{feed=\"ciq\",status=\"";
        m.lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|l| {
                let (status, v) = l.split_once("\"} ").unwrap();
                (status.to_string(), v.parse().unwrap())
            })
            .filter(|(_, v)| *v > 0.0)
            .collect()
    }

    /// The requests the provider answered, by status.
    pub fn served(seen: &[Seen]) -> BTreeMap<String, f64> {
        let mut m = BTreeMap::new();
        for r in seen {
            *m.entry(r.status.to_string()).or_default() += 1.0;
        }
        m
    }

    /// Body bytes of the 200s in `seen`, at the files' current sizes under `root` (a list
    /// is rewritten only between two checkpoints, where the feed's polls are answered 304).
    pub fn body_bytes(root: &Path, seen: &[Seen]) -> f64 {
        seen.iter()
            .filter(|r| r.status == 200)
            .map(|r| std::fs::metadata(root.join(r.path.trim_start_matches('/'))).unwrap().len() as f64)
            .sum()
    }

    /// A scrape between two polls: the requests the provider answered are all counted and
    /// none is under way (the provider records a request before answering it).
    pub fn settled(provider: &Provider, port: u16) -> (String, Vec<Seen>) {
        let mut last = String::new();
        for _ in 0..300 {
            let before = provider.seen();
            let m = scrape(port);
            let total: f64 = by_status(&m).values().sum();
            if provider.seen() == before && total == before.len() as f64 {
                return (m, before);
            }
            last = m;
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("metrics never settled on the provider's {} requests:\n{last}", provider.seen().len());
    }

    /// The first scrape that meets `cond` (30 s at most; `log`: serve's log, shown if none does).
    pub fn wait_for(port: u16, log: &dyn Fn() -> String, what: &str, cond: &dyn Fn(&str) -> bool) -> String {
        let mut last = String::new();
        let ok = common::wait_until(Duration::from_secs(30), || {
            last = scrape(port);
            cond(&last)
        });
        assert!(ok, "timed out waiting for {what}; metrics:\n{last}\nlog:\n{}", log());
        last
    }
}

/// `serve` (embedded, the feed polled every second) counts a rewinding `changes.csv` in its
/// own `/metrics`. Before the first run ends (its metadata request held by a 429 with
/// `Retry-After: 2`) the feed's counter series already exist at 0, so that `increase()`
/// counts a first event after a restart. After the first sync and one not-modified poll:
/// `vex_feed_rewinds_total{feed="ciq"}` is 0, documents fetched and emitted are the
/// provider's count, requests by status (the 304s are the conditional hits) and bytes are
/// what the provider answered. Then `changes.csv` rewinds twice: first its newest row is
/// older than the watermark (all rows back in 2020) while `index.txt` gains a document
/// (reconciled: only that document fetched and emitted; rewinds 1; last success after
/// the rewind), then rows are gone (rewinds 2, nothing fetched); a later not-modified
/// poll counts no further rewind.
#[test]
fn serve_counts_a_rewinding_changes_csv_in_its_metrics() {
    use csaf_provider::{Fault, Seen};
    use std::time::Duration;
    let Fixture { tmp, root, provider, dir, .. } = Fixture::start(6);
    let tmp = tmp.path();
    let n = dir.rows.len() as f64;
    let cfg = write_config(tmp, &provider, "interval = \"1s\"\n");
    let white = "/.well-known/csaf/white/";
    provider.fault("/.well-known/csaf/provider-metadata.json", Fault::TooMany(2), 1);
    let (mut serve, port) = common::start_embedded_serve(
        &["--config", cfg.to_str().unwrap()],
        &[],
        &tmp.join("serve.log"),
        Duration::from_secs(60),
    );
    use ciq_metrics::{by_status, docs, now_s, rewinds, served, value};
    let log = || std::fs::read_to_string(tmp.join("serve.log")).unwrap_or_default();
    let scrape = || ciq_metrics::scrape(port);
    let body_bytes = |seen: &[Seen]| ciq_metrics::body_bytes(&root, seen);
    let settled = || ciq_metrics::settled(&provider, port);
    let wait_metrics = |what: &str, cond: &dyn Fn(&str) -> bool| ciq_metrics::wait_for(port, &log, what, cond);

    // Primed before the first run ends (it waits out the 429's Retry-After).
    common::wait_for("the 429 on the metadata", Duration::from_secs(30), || {
        provider.seen().iter().any(|r| r.status == 429).then_some(())
    });
    let m = scrape();
    assert_eq!(rewinds(&m), Some(0.0), "the rewinds series exists at 0 before the first run:\n{m}");
    assert_eq!((docs(&m, "fetched"), docs(&m, "emitted")), (Some(0.0), Some(0.0)), "{m}");
    assert_eq!(value(&m, "bytes_total{feed=\"ciq\"}"), Some(0.0), "{m}");
    assert_eq!(value(&m, "requests_total{feed=\"ciq\",status=\"304\"}"), Some(0.0), "{m}");

    // The first sync, then a poll that finds the lists not modified.
    wait_metrics("the first sync's documents", &|m| docs(m, "emitted") == Some(n));
    let changes = format!("{white}changes.csv");
    common::wait_for("a not-modified poll after the first sync", Duration::from_secs(30), || {
        provider.seen().iter().any(|r| r.path == changes && r.status == 304).then_some(())
    });
    let (m, seen_a) = settled();
    assert_eq!(rewinds(&m), Some(0.0), "{m}");
    assert_eq!((docs(&m, "fetched"), docs(&m, "emitted")), (Some(n), Some(n)), "{m}");
    assert_eq!(by_status(&m), served(&seen_a), "requests by status = what the provider answered:\n{m}");
    assert_eq!(served(&seen_a)["429"], 1.0);
    assert!(served(&seen_a)["304"] >= 2.0, "metadata and changes.csv, conditional: {seen_a:?}");
    assert!(seen_a.iter().filter(|r| r.status == 304).all(Seen::conditional), "{seen_a:?}");
    let bytes_a = body_bytes(&seen_a);
    assert_eq!(value(&m, "bytes_total{feed=\"ciq\"}"), Some(bytes_a), "{m}");
    let first_success = value(&m, "last_success_timestamp_seconds{feed=\"ciq\"}").unwrap();
    assert!(first_success > 1.7e9 && first_success <= now_s(), "{m}");

    // Rewind 1: every row back in 2020 (the newest older than the watermark), the same
    // rows; index.txt gains a document no row lists. Lists replaced atomically.
    let replace = |name: &str, text: String| {
        let tmp_file = dir.dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp_file, text).unwrap();
        std::fs::rename(&tmp_file, dir.dir.join(name)).unwrap();
    };
    let extra = "2026/cve-2026-00001.json";
    let mut v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.dir.join(&dir.rows[0].0)).unwrap()).unwrap();
    v["document"]["tracking"]["id"] = "CVE-2026-00001".into();
    v["document"]["tracking"]["initial_release_date"] = "2026-01-01T00:00:00Z".into();
    dir.put(extra, &serde_json::to_vec_pretty(&v).unwrap(), None);
    let index = std::fs::read_to_string(dir.dir.join("index.txt")).unwrap();
    replace("index.txt", format!("{index}{extra}\n"));
    let rows: Vec<String> =
        dir.rows.iter().enumerate().map(|(i, (p, _))| format!("{p},2020-01-{:02}T00:00:00Z", 20 - i)).collect();
    let rewound_at = now_s().floor();
    replace("changes.csv", rows.join("\n") + "\n");
    wait_metrics("the rewind's reconciliation", &|m| docs(m, "emitted") == Some(n + 1.0));
    let (m, seen_b) = settled();
    assert_eq!(rewinds(&m), Some(1.0), "the rewind is counted in serve:\n{m}");
    assert_eq!((docs(&m, "fetched"), docs(&m, "emitted")), (Some(n + 1.0), Some(n + 1.0)), "{m}");
    let after: Vec<&Seen> = seen_b[seen_a.len()..].iter().filter(|r| r.status == 200).collect();
    let fetched: Vec<&str> = after.iter().map(|r| r.path.as_str()).filter(|p| p.ends_with(".json")).collect();
    assert_eq!(fetched, [format!("{white}{extra}")], "reconciled: only the new document: {after:?}");
    assert!(after.iter().any(|r| r.path == format!("{white}index.txt")), "index.txt read: {after:?}");
    assert_eq!(by_status(&m), served(&seen_b), "{m}");
    let bytes_b = bytes_a + body_bytes(&seen_b[seen_a.len()..]);
    assert_eq!(value(&m, "bytes_total{feed=\"ciq\"}"), Some(bytes_b), "{m}");
    let success = value(&m, "last_success_timestamp_seconds{feed=\"ciq\"}").unwrap();
    assert!(success >= rewound_at && success <= now_s(), "last success {success}, rewound at {rewound_at}");

    // Rewind 2: rows gone (the two oldest), the dates as they were.
    replace("changes.csv", rows[..rows.len() - 2].join("\n") + "\n");
    let m = wait_metrics("the second rewind", &|m| rewinds(m) == Some(2.0));
    assert_eq!(docs(&m, "fetched"), Some(n + 1.0), "nothing new to fetch:\n{m}");
    // A later poll finds changes.csv not modified: no further rewind.
    let seen_c = provider.seen().len();
    common::wait_for("a not-modified poll after the second rewind", Duration::from_secs(30), || {
        provider.seen()[seen_c..].iter().any(|r| r.path == changes && r.status == 304).then_some(())
    });
    let (m, seen_d) = settled();
    assert_eq!(rewinds(&m), Some(2.0), "{m}");
    assert_eq!(by_status(&m), served(&seen_d), "{m}");
    assert_eq!(value(&m, "bytes_total{feed=\"ciq\"}"), Some(bytes_b + body_bytes(&seen_d[seen_b.len()..])), "{m}");
    let pid = serve.0.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let exit = serve.0.wait().unwrap();
    assert!(exit.success(), "SIGTERM: clean exit ({exit}); log:\n{}", log());
}

/// A crash at a deterministic failpoint between an acknowledged emit and the state save
/// (`VEXLENS_FEED_FAILPOINT=abort_after_emits:30`; the state is saved every 25
/// documents): the next run emits again only the documents not in the state, once, and
/// the records equal `consensus` on the same files, digest for digest.
#[test]
fn a_crash_between_emit_and_state_save_re_emits_once() {
    let Fixture { tmp, plain, provider, dir, .. } = Fixture::start(usize::MAX);
    let tmp = tmp.path();
    let n = dir.rows.len() as u64;
    assert!(n > 30, "{n} documents");
    let cfg = write_config(tmp, &provider, "");
    let out = Command::new(BIN)
        .args(["feed", "run", "--once", "--config", cfg.to_str().unwrap()])
        .env("VEXLENS_FEED_FAILPOINT", "abort_after_emits:30")
        .current_dir(repo_dir())
        .output()
        .unwrap();
    assert!(!out.status.success() && out.stdout.is_empty(), "the run crashed before its summary: {:?}", out.status);
    let state: serde_json::Value = feed_state(&tmp.join("data"), "ciq");
    let saved = provider.emitted_in(&state);
    assert_eq!(saved, 25, "the state holds what was saved before the crash");
    let s = feed_run(&cfg);
    assert_eq!(s["emitted"].as_u64(), Some(n - 25), "the 5 unsaved documents again, and the rest: {s}");
    assert_eq!(records(tmp), consensus(tmp, &cfg, &plain), "re-emitting changed no digest");
    let s = feed_run(&cfg);
    assert_eq!(s["emitted"].as_u64(), Some(0), "{s}");
}

/// Issue 23 with issue 22: the `.asc` a provider serves beside a document travels with it
/// and is judged at ingest. A document signed by the issuer's key counts as `verified`,
/// one whose `.asc` is over other bytes as `failed` (never dead-lettered), one without
/// `.asc` as `unsigned`; and `records` equals `consensus` on the same files with the same
/// `.asc` beside them.
#[test]
fn signatures_served_beside_documents_are_judged_at_ingest() {
    let Fixture { tmp, plain, provider, dir, .. } = Fixture::start(3);
    let tmp = tmp.path();
    let key = openpgp::keygen("CIQ PSIRT <psirt@ciq.example>");
    let at = openpgp::T0 + 3600;
    let signed = [
        (&dir.rows[0].0, Some(true)),  // signed by the issuer's key
        (&dir.rows[1].0, Some(false)), // a signature over other bytes
        (&dir.rows[2].0, None),        // no .asc
    ];
    for (rel, good) in &signed {
        let Some(good) = good else { continue };
        let bytes = std::fs::read(dir.dir.join(rel)).unwrap();
        let asc = openpgp::sign(&key, if *good { &bytes } else { b"other bytes" }, at);
        csaf_provider::put_asc(&dir, &plain, rel, &asc);
    }
    let cfg = write_config(tmp, &provider, "");
    // The issuer directory gains the key's certificate for `ciq`.
    std::fs::write(
        tmp.join("issuers.toml"),
        format!(
            "[[issuers]]\nid = \"ciq\"\ndisplay_name = \"CIQ\"\ntier = \"trusted\"\naliases = [\"https://www.ciq.com\"]\n\
             keys = [{{ type = \"openpgp\", certificate = \"\"\"\n{}\"\"\" }}]\n",
            openpgp::certificate(&key)
        ),
    )
    .unwrap();

    let s = feed_run(&cfg);
    assert_eq!((s["ok"].as_bool(), s["emitted"].as_u64()), (Some(true), Some(3)), "{s}");
    assert_eq!(count(&s, "warnings", "no_signature"), 1, "one document without .asc: {s}");
    let stored = records(tmp);
    assert_eq!(stored, consensus(tmp, &cfg, &plain), "records = consensus with the same .asc beside the files");
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for r in &stored {
        let r: serde_json::Value = serde_json::from_str(r).unwrap();
        for st in r["statements"].as_array().unwrap() {
            *seen.entry(st["signature"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    for status in ["verified", "failed", "unsigned"] {
        assert!(seen.get(status).is_some_and(|n| *n > 0), "no {status} statement: {seen:?}");
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    // The verifications were persisted with kind openpgp: a second run emits nothing
    // (same bytes, same signature).
    let s = feed_run(&cfg);
    assert_eq!(s["emitted"].as_u64(), Some(0), "{s}");
}

/// `GET /v1/vex/feeds` (`vex:admin`) on `serve` after its first run of the feeds: the
/// feeds of the caller's tenant only, in configuration order (a disabled one included,
/// never run), each with what its state says: the last run and last success, the
/// documents tracked by outcome, the one failing (a 404) with its next retry, the
/// directory's watermark just below that document's listing; a feed stopped by a
/// publisher mismatch with its last error and no success. Every item matches the `Feed`
/// schema of docs/openapi.json. No token is 401, a reader's token 403; `/status` still
/// lists names and health only.
#[test]
fn the_feeds_endpoint_shows_an_admin_the_feeds_of_its_tenant() {
    use csaf_provider::Fault;
    let Fixture { tmp, provider, dir, .. } = Fixture::start(6);
    let tmp = tmp.path();
    let n = dir.rows.len() as u64;
    let (failing, _) = dir.rows[0].clone();
    assert!(dir.rows[0].1 > dir.rows[1].1, "the failing document is listed last: {:?}", dir.rows);
    provider.fault(&format!("/.well-known/csaf/white/{failing}"), Fault::Status(404), 1);
    let sha = |s: &str| vex_lens::domain::canonical::sha256_hex(s.as_bytes());
    let ca = tmp.join("ca.pem").display().to_string();
    let extra = format!(
        "tenant = \"acme\"\n\n\
         [[feeds]]\nname = \"wrong-issuer\"\nkind = \"csaf\"\nurl = \"{origin}/.well-known/csaf/provider-metadata.json\"\n\
         issuer = \"other\"\ntenant = \"acme\"\nca_file = {ca:?}\n\n\
         [[feeds]]\nname = \"later\"\nkind = \"csaf\"\nurl = \"csaf.example\"\nissuer = \"ciq\"\ntenant = \"acme\"\nenabled = false\n\n\
         [[feeds]]\nname = \"globex-feed\"\nkind = \"csaf\"\nurl = \"globex.example\"\nissuer = \"ciq\"\ntenant = \"globex\"\nenabled = false\n\n\
         [[api.tokens]]\nname = \"acme-admin\"\nsha256 = \"{}\"\nscopes = [\"vex:admin\"]\ntenants = [\"acme\"]\n\n\
         [[api.tokens]]\nname = \"acme-reader\"\nsha256 = \"{}\"\nscopes = [\"vex:read\", \"vex:export\"]\ntenants = [\"acme\"]\n\n\
         [[api.tokens]]\nname = \"globex-admin\"\nsha256 = \"{}\"\nscopes = [\"vex:admin\"]\ntenants = [\"globex\"]\n",
        sha("admin-secret"),
        sha("reader-secret"),
        sha("globex-secret"),
        origin = provider.origin(),
    );
    let cfg = write_config(tmp, &provider, &extra);
    let (_serve, port) = common::start_embedded_serve(
        &["--config", cfg.to_str().unwrap()],
        &[],
        &tmp.join("serve.log"),
        std::time::Duration::from_secs(60),
    );
    let status = common::wait_for("both feeds' first run", std::time::Duration::from_secs(60), || {
        let (_, body) = common::get(port, "/status")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let feeds = v["feeds"].as_array()?;
        (feeds.len() == 2 && feeds.iter().all(|f| f["health"] != "pending")).then_some(v)
    });
    assert_eq!(
        status["feeds"],
        serde_json::json!([{"name": "ciq", "health": "ok"}, {"name": "wrong-issuer", "health": "failing"}]),
        "/status: the feeds this instance runs, names and health only"
    );
    let get = |token: Option<&str>| {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
        let (code, body) = common::http_request(&format!("127.0.0.1:{port}"), "GET", "/v1/vex/feeds", &headers, "");
        (code, serde_json::from_str::<serde_json::Value>(&body).unwrap_or(serde_json::Value::Null))
    };
    let (code, body) = get(None);
    assert_eq!((code, body["error"]["code"].as_str()), (401, Some("missing_token")), "{body}");
    let (code, body) = get(Some("reader-secret"));
    assert_eq!((code, body["error"]["code"].as_str()), (403, Some("insufficient_scope")), "{body}");

    let (code, body) = get(Some("admin-secret"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["tenant"], "acme");
    let items = body["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["ciq", "wrong-issuer", "later"], "the tenant's feeds, in configuration order: {body}");
    let openapi: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo_dir().join("docs/openapi.json")).unwrap()).unwrap();
    let schema = jsonschema::validator_for(&openapi["components"]["schemas"]["Feed"]).unwrap();
    for f in items {
        let errors: Vec<String> = schema.iter_errors(f).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{f} does not match the Feed schema: {errors:?}");
    }

    let ciq = &items[0];
    assert_eq!(
        (ciq["health"].as_str(), ciq["enabled"].as_bool(), ciq["issuer"].as_str()),
        (Some("ok"), Some(true), Some("ciq"))
    );
    let attempt = ciq["last_attempt_ms"].as_i64().expect("ran");
    assert_eq!(ciq["last_success_ms"].as_i64(), Some(attempt), "its one run succeeded: {ciq}");
    assert!(ciq["last_error"].is_null(), "{ciq}");
    assert_eq!((ciq["documents"].as_u64(), ciq["failing"].as_u64()), (Some(n), Some(1)), "{ciq}");
    assert_eq!(ciq["outcomes"], serde_json::json!({"emitted": n - 1, "failed": 1}), "{ciq}");
    assert!(ciq["next_retry_ms"].as_i64().expect("a retry is owed") > attempt, "{ciq}");
    let listed = |t: &str| vex_lens::domain::timestamp::Timestamp::parse(t).unwrap().unix_millis();
    let dir_url = provider.white_url();
    assert_eq!(
        ciq["directories"],
        serde_json::json!([{"url": dir_url, "synced": true, "watermark_ms": listed(&dir.rows[1].1),
                            "documents": n, "failing": 1, "next_retry_ms": ciq["next_retry_ms"]}]),
        "the watermark stops below the failing document's listing: {ciq}"
    );
    assert_eq!(ciq["watermark_ms"].as_i64(), Some(listed(&dir.rows[1].1)));

    let wrong = &items[1];
    assert_eq!(wrong["health"], "failing", "{wrong}");
    assert!(wrong["last_attempt_ms"].as_i64().is_some() && wrong["last_success_ms"].is_null(), "{wrong}");
    assert_eq!(wrong["last_error"]["code"], "publisher_mismatch", "{wrong}");
    assert!(wrong["last_error"]["message"].as_str().unwrap().contains("https://www.ciq.com"), "{wrong}");
    assert_eq!((wrong["documents"].as_u64(), wrong["directories"].as_array().map(Vec::len)), (Some(0), Some(0)));

    let later = &items[2];
    assert_eq!(
        (later["enabled"].as_bool(), later["url"].as_str(), later["documents"].as_u64()),
        (Some(false), Some("csaf.example"), Some(0))
    );
    assert!(later["health"].is_null() && later["last_attempt_ms"].is_null(), "never run: {later}");

    let (code, body) = get(Some("globex-secret"));
    assert_eq!(code, 200, "{body}");
    let names: Vec<&str> = body["items"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
    assert_eq!((body["tenant"].as_str(), names), (Some("globex"), vec!["globex-feed"]), "{body}");
}

/// Discovery from a bare domain (OASIS CSAF 2.0 section 7.3.1, the well-known URL of
/// requirement 9): `url = "localhost:<port>"` reads
/// `https://localhost:<port>/.well-known/csaf/provider-metadata.json` first, then its
/// directory, and pulls every document as the metadata URL form does; the second run asks
/// the same URL conditionally.
#[test]
fn a_bare_domain_is_discovered_through_the_well_known_url() {
    let Fixture { tmp, provider, dir, .. } = Fixture::start(4);
    let tmp = tmp.path();
    let n = dir.rows.len() as u64;
    let cfg = write_config(tmp, &provider, "");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let metadata_url = provider.metadata_url();
    let domain = format!("localhost:{}", provider.port);
    std::fs::write(&cfg, text.replace(&format!("url = \"{metadata_url}\""), &format!("url = \"{domain}\""))).unwrap();
    assert!(std::fs::read_to_string(&cfg).unwrap().contains(&format!("url = \"{domain}\"\n")));

    let s = feed_run(&cfg);
    assert_eq!((s["ok"].as_bool(), s["emitted"].as_u64()), (Some(true), Some(n)), "{s}");
    let seen = provider.seen();
    assert_eq!(seen[0].path, "/.well-known/csaf/provider-metadata.json", "discovery asks the well-known URL first");
    assert_eq!(seen[0].status, 200);
    let state: serde_json::Value = feed_state(&tmp.join("data"), "ciq");
    assert_eq!(state["metadata"]["url"], metadata_url.as_str(), "{state}");
    provider.clear();
    let s = feed_run(&cfg);
    assert_eq!(s["emitted"].as_u64(), Some(0), "{s}");
    let seen = provider.seen();
    assert!(seen[0].path == "/.well-known/csaf/provider-metadata.json" && seen[0].status == 304, "{seen:?}");
}
