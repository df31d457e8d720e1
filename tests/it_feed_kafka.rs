//! A CSAF feed in Kafka mode against the real broker and MongoDB-wire server (from
//! `scripts/services.sh env`): `vex-lens feed run --once` produces each document of a
//! loopback HTTPS provider (built from `../shared/corpus/csaf-ciq`) to the documents
//! topic, acknowledged by the broker (`acks=all`), with the headers `tenant`,
//! `correlation-id` and `provenance`; a second run produces nothing; `vex-lens serve`
//! then ingests them through `vex.documents` into MongoDB, and the stored records equal
//! `vex-lens consensus` on the same files. One document is served with an `.asc` by the
//! issuer's key: it travels in the `openpgp-signature` header and its statements are
//! `verified` in MongoDB as in `consensus`. And `serve` alone, with the feed in its
//! configuration, pulls the provider, produces to `vex.documents` and consumes into
//! MongoDB (records = `consensus`; a disabled feed is not run).

#[path = "../integration-tests/common/mod.rs"]
mod common;
#[path = "../integration-tests/common/csaf_provider.rs"]
mod csaf_provider;
#[path = "../integration-tests/common/openpgp.rs"]
mod openpgp;

use common::{Serve, ServeSetup};
use csaf_provider::Fixture;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");

fn feed_run(cfg: &Path) -> serde_json::Value {
    let out = Command::new(BIN)
        .args(["feed", "run", "--once", "--log-format", "json", "--config", cfg.to_str().unwrap()])
        .current_dir(common::repo_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "feed run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().next().unwrap()).unwrap()
}

/// The records `vex-lens consensus --issuers ISSUERS PLAIN` prints, as JSON.
fn consensus(issuers: &Path, plain: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(BIN)
        .args(["consensus", "--issuers", issuers.to_str().unwrap(), plain.to_str().unwrap()])
        .current_dir(common::repo_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// "artifact vulnerability digest" of each record, sorted.
fn digests(v: &[serde_json::Value]) -> Vec<String> {
    let mut d: Vec<String> =
        v.iter().map(|r| format!("{} {} {}", r["artifact"], r["vulnerability"], r["consensus_digest"])).collect();
    d.sort();
    d
}

#[test]
fn feed_documents_reach_mongodb_through_the_documents_topic() {
    let Some(services) = common::services() else { return };
    let setup = ServeSetup::fresh(&services, "feed_kafka");
    let Fixture { tmp, plain, provider, dir, .. } = Fixture::start(usize::MAX);
    let tmp = tmp.path();
    let n = dir.rows.len();
    let ca = csaf_provider::write_ca(tmp, &provider);
    // The first document is signed by the issuer's OpenPGP key (.asc beside it, as
    // served and as `consensus` reads it).
    let key = openpgp::keygen("CIQ PSIRT <psirt@ciq.example>");
    let rel = &dir.rows[0].0;
    let asc = openpgp::sign(&key, &std::fs::read(dir.dir.join(rel)).unwrap(), openpgp::T0 + 3600);
    csaf_provider::put_asc(&dir, &plain, rel, &asc);
    let issuers = tmp.join("issuers.toml");
    std::fs::write(
        &issuers,
        format!(
            "[[issuers]]\nid = \"ciq\"\ntier = \"trusted\"\naliases = [\"https://www.ciq.com\"]\n\
             keys = [{{ type = \"openpgp\", certificate = \"\"\"\n{}\"\"\" }}]\n",
            openpgp::certificate(&key)
        ),
    )
    .unwrap();
    let cfg = tmp.join("vex-lens.toml");
    std::fs::write(
        &cfg,
        format!(
            "[consensus]\nissuers_file = {:?}\n\n[store]\ndata_dir = {:?}\n\n[kafka]\nbrokers = {:?}\ntopic = {:?}\n\
             observations_topic = {:?}\ndlq_topic = {:?}\ngroup_id = {:?}\nobservations_hmac_key = {:?}\n\n\
             [[feeds]]\nname = \"ciq\"\nkind = \"csaf\"\nurl = \"{}\"\n\
             issuer = \"ciq\"\nrate = 500.0\nca_file = {:?}\n",
            issuers.display().to_string(),
            tmp.join("data").display().to_string(),
            services.brokers,
            setup.topic,
            setup.observations_topic,
            setup.dlq_topic,
            setup.group_id,
            common::TEST_HMAC_KEY,
            provider.metadata_url(),
            ca.display().to_string()
        ),
    )
    .unwrap();

    let s = feed_run(&cfg);
    assert_eq!((s["ok"].as_bool(), s["emitted"].as_u64()), (Some(true), Some(n as u64)), "{s}");
    // One entry per message ("@@" ends it: an armored header value spans lines).
    let produced = common::kcat_consume(&services.brokers, &setup.topic, "%h|%k@@\n");
    let lines: Vec<&str> = produced.split("@@\n").filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), n, "one message per document:\n{produced}");
    for l in &lines {
        assert!(
            l.contains("tenant=default") && l.contains("provenance=feed:ciq") && l.contains("correlation-id="),
            "{l}"
        );
        assert!(l.contains(&format!("|{}/.well-known/csaf/white/", provider.origin())), "keyed by URL: {l}");
    }
    let with_signature = lines.iter().filter(|l| l.contains("openpgp-signature=-----BEGIN PGP SIGNATURE-----")).count();
    assert_eq!(with_signature, 1, "the one .asc travels in its document's header:\n{produced}");
    let s = feed_run(&cfg);
    assert_eq!((s["fetched"].as_u64(), s["emitted"].as_u64()), (Some(0), Some(0)), "{s}");
    assert_eq!(common::kcat_count(&services.brokers, &setup.topic), n, "a second run produces nothing");

    // serve consumes vex.documents into MongoDB: the records equal consensus on the files.
    let want = consensus(&issuers, &plain);
    let issuers_env = issuers.to_str().unwrap().to_string();
    let mut serve = Serve::start(&setup, "feed", &[("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers_env.as_str())]);
    serve.wait_ready(Duration::from_secs(60));
    let got = common::wait_for_stored_records(&mut serve, &services.mongo_uri, &setup.db, want.len());
    assert_eq!(digests(&got), digests(&want), "records through Kafka = consensus on the same files");
    let verified =
        got.iter().flat_map(|r| r["statements"].as_array().unwrap()).filter(|s| s["signature"] == "verified").count();
    assert!(verified > 0, "the signed document's statements are verified");
    assert!(serve.terminate(Duration::from_secs(30)));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}

/// `serve` in Kafka mode runs the enabled feeds itself (no `feed run`): at start it
/// produces each document of the provider to the documents topic (acknowledged by the
/// broker, headers `tenant` and `provenance`), its own consumers ingest them, and the
/// records stored in MongoDB equal `vex-lens consensus` on the same files; `/status` shows
/// the feed `ok`, its state holds every document emitted, and a disabled feed is not run.
#[test]
fn serve_runs_the_enabled_feeds_into_mongodb_through_the_documents_topic() {
    let Some(services) = common::services() else { return };
    let setup = ServeSetup::fresh(&services, "feed_serve");
    let Fixture { tmp, plain, provider, dir, .. } = Fixture::start(12);
    let tmp = tmp.path();
    let n = dir.rows.len();
    let ca = csaf_provider::write_ca(tmp, &provider);
    let issuers = tmp.join("issuers.toml");
    std::fs::write(&issuers, "[[issuers]]\nid = \"ciq\"\ntier = \"trusted\"\naliases = [\"https://www.ciq.com\"]\n")
        .unwrap();
    let cfg = tmp.join("vex-lens.toml");
    let feed = |name: &str, enabled: bool| {
        format!(
            "[[feeds]]\nname = \"{name}\"\nkind = \"csaf\"\nurl = \"{}\"\n\
             issuer = \"ciq\"\nrate = 500.0\nca_file = {:?}\nenabled = {enabled}\n\n",
            provider.metadata_url(),
            ca.display().to_string()
        )
    };
    std::fs::write(
        &cfg,
        format!(
            "[consensus]\nissuers_file = {:?}\n\n[store]\ndata_dir = {:?}\n\n{}{}",
            issuers.display().to_string(),
            tmp.join("data").display().to_string(),
            feed("ciq", true),
            feed("off", false)
        ),
    )
    .unwrap();
    let want = consensus(&issuers, &plain);
    assert!(want.len() > n, "{} records from {n} documents", want.len());

    let mut serve = Serve::start(&setup, "feed-serve", &[("VEXLENS_CONFIG", cfg.to_str().unwrap())]);
    serve.wait_ready(Duration::from_secs(60));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let stored = || -> Vec<serde_json::Value> {
        rt.block_on(common::stored_records(&services.mongo_uri, &setup.db))
            .iter()
            .map(|r| serde_json::to_value(r).unwrap())
            .collect()
    };
    let converged = common::wait_until(Duration::from_secs(120), || {
        assert!(serve.is_running(), "serve exited; log:\n{}", serve.log_tail());
        digests(&stored()) == digests(&want)
    });
    assert!(converged, "records through the feed, Kafka and MongoDB = consensus; log:\n{}", serve.log_tail());
    let status = common::wait_for("the feed's health", Duration::from_secs(30), || {
        let (_, body) = serve.get("/status")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["feeds"][0]["health"] != "pending").then_some(v)
    });
    assert_eq!(status["mode"], "kafka");
    assert_eq!(status["feeds"], serde_json::json!([{"name": "ciq", "health": "ok"}]), "the disabled feed is not run");
    let produced = common::kcat_consume(&services.brokers, &setup.topic, "%h@@\n");
    let headers: Vec<&str> = produced.split("@@\n").filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(headers.len(), n, "one message per document:\n{produced}");
    assert!(headers.iter().all(|h| h.contains("tenant=default") && h.contains("provenance=feed:ciq")), "{produced}");
    let state = csaf_provider::feed_state(&tmp.join("data"), "ciq");
    let emitted = provider.emitted_in(&state);
    assert_eq!(emitted, n, "{state}");
    assert!(!tmp.join("data/feeds/off.json").exists(), "a disabled feed has no state");
    assert!(serve.terminate(Duration::from_secs(30)), "SIGTERM: clean exit; log:\n{}", serve.log_tail());
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}
