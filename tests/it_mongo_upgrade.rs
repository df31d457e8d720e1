//! Upgrading a MongoDB store written by bafbf91 (no schema marker: version 2), run as the
//! built binary against the real MongoDB-wire server. The databases are loaded from
//! committed dumps of what the baseline binary wrote (tests/fixtures/upgrade/README.md):
//! (a) purl-keyed OpenVEX observations and a CSAF relationship stored the old way (the
//! component's key, the platform as scope: one pair for two platforms, the affected one
//! hidden) are upgraded at start-up, and the records then equal `vex-lens consensus` of
//! the same files (two records, one per platform); (b) a lower-cased `name:` key makes
//! start-up refuse, naming `vex-lens reindex`; `reindex --mongo-uri` drops it, and
//! start-up then works.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use mongodb::bson::{doc, Bson, Document};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_vex-lens");

fn fixture(name: &str) -> PathBuf {
    common::repo_dir().join("tests/fixtures/upgrade").join(name)
}

/// Loads the dump `name` (gzipped lines of `{"collection", "document"}` in MongoDB
/// canonical extended JSON) into database `db`.
async fn load(uri: &str, db: &str, name: &str) {
    let out = Command::new("gzip").arg("-dc").arg(fixture(name)).output().expect("run gzip");
    assert!(out.status.success(), "gzip: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("UTF-8 dump");
    let database = common::mongo_client(uri).await.database(db);
    let mut n = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("dump line");
        let coll = v["collection"].as_str().expect("collection");
        let Bson::Document(d) = Bson::try_from(v["document"].clone()).expect("extended JSON") else {
            panic!("not a document: {line}")
        };
        database.collection::<Document>(coll).insert_one(d).await.expect("insert");
        n += 1;
    }
    assert!(n > 3, "the fixture holds data");
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).current_dir(common::repo_dir()).output().expect("run vex-lens")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn serve_once(uri: &str, db: &str, ingest: &Path) -> Output {
    let data = tempfile::tempdir().unwrap();
    run(&[
        "serve",
        "--once",
        "--ingest-dir",
        ingest.to_str().unwrap(),
        "--mongo-uri",
        uri,
        "--mongo-db",
        db,
        "--data-dir",
        data.path().to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ])
}

fn records(uri: &str, db: &str) -> String {
    let out = run(&["records", "--mongo-uri", uri, "--mongo-db", db]);
    assert!(out.status.success(), "records: {}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

async fn marker(uri: &str, db: &str) -> Option<Document> {
    common::mongo_client(uri)
        .await
        .database(db)
        .collection::<Document>("vex_meta")
        .find_one(doc! { "_id": "schema_version" })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bafbf91_mongo_store_is_upgraded_at_start_up_to_what_consensus_computes() {
    let Some(services) = common::services() else { return };
    let (uri, db) = (services.mongo_uri.clone(), common::fresh_name("upgrade_a"));
    load(&uri, &db, "bafbf91-mongo-openvex-csaf.ndjson.gz").await;
    let before = records(&uri, &db);
    assert!(before.contains("\"schema_version\":2"), "the fixture is a version-2 store: {before}");
    assert_eq!(
        before.lines().filter(|l| l.contains("pkg:generic/acme/openssl")).count(),
        1,
        "bafbf91: one openssl pair for two platforms"
    );
    assert!(marker(&uri, &db).await.is_none(), "bafbf91 wrote no marker");

    let empty = tempfile::tempdir().unwrap();
    let out = serve_once(&uri, &db, empty.path());
    assert!(out.status.success(), "serve: {}", text(&out));
    assert!(text(&out).contains("store_upgraded"), "the upgrade is logged: {}", text(&out));
    let after = records(&uri, &db);
    let docs = [common::repo_dir().join("examples/acme-vendor.openvex.json"), fixture("relationship.csaf.json")];
    let want = run(&["consensus", docs[0].to_str().unwrap(), docs[1].to_str().unwrap()]);
    assert!(want.status.success(), "consensus: {}", text(&want));
    let want = String::from_utf8(want.stdout).unwrap();
    assert_eq!(after, want, "upgraded records equal the consensus of the same files");
    let openssl: Vec<&str> = after.lines().filter(|l| l.contains("acme/openssl")).collect();
    assert_eq!(openssl.len(), 2, "one record per platform: {openssl:?}");
    assert!(openssl.iter().any(|l| l.contains("\"status\":\"affected\"")), "the affected platform is no longer hidden");
    let m = marker(&uri, &db).await.expect("the marker is written");
    assert_eq!(m.get_i64("version").unwrap(), i64::from(vex_lens::domain::upgrade::STORE_SCHEMA_VERSION));

    // A second start changes nothing.
    let out = serve_once(&uri, &db, empty.path());
    assert!(out.status.success(), "serve again: {}", text(&out));
    assert!(!text(&out).contains("store_upgraded"), "nothing to upgrade the second time");
    assert_eq!(records(&uri, &db), want);
    common::drop_db(&uri, &db).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bafbf91_mongo_store_with_lowercased_name_keys_is_refused_until_reindexed() {
    let Some(services) = common::services() else { return };
    let (uri, db) = (services.mongo_uri.clone(), common::fresh_name("upgrade_b"));
    load(&uri, &db, "bafbf91-mongo-csaf-names.ndjson.gz").await;
    let empty = tempfile::tempdir().unwrap();
    let out = serve_once(&uri, &db, empty.path());
    assert!(!out.status.success(), "start-up must refuse: {}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("vex-lens reindex") && msg.contains("name:acme/widget server@2.4"), "{msg}");
    assert!(records(&uri, &db).contains("name:acme/widget server@2.4"), "a refusal changes nothing");
    assert!(marker(&uri, &db).await.is_none(), "a refusal writes no marker");

    let out = run(&["reindex", "--mongo-uri", &uri, "--mongo-db", &db]);
    assert!(out.status.success(), "reindex: {}", text(&out));
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(msg.contains("1 dropped") && msg.contains("ingest those documents again"), "{msg}");
    assert_eq!(records(&uri, &db), "", "the dropped observation's record is gone");

    let out = serve_once(&uri, &db, empty.path());
    assert!(out.status.success(), "start-up after reindex: {}", text(&out));
    let again = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("name.csaf.json"), again.path().join("name.csaf.json")).unwrap();
    let out = serve_once(&uri, &db, again.path());
    assert!(out.status.success(), "re-ingest: {}", text(&out));
    let want = run(&["consensus", fixture("name.csaf.json").to_str().unwrap()]);
    assert_eq!(records(&uri, &db), String::from_utf8(want.stdout).unwrap());
    common::drop_db(&uri, &db).await;
}
