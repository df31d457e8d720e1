//! The change stream `GET /v1/vex/consensus/stream` of `vex-lens serve` (the built binary,
//! embedded pipeline and store, documents dropped into the watched directory while
//! streams are open): delivery of each change with ordered ids, resume with
//! `Last-Event-ID` giving exactly the missed changes, the whole stream equal to the
//! history, filters, another tenant seeing nothing but heartbeats, bad ids and the
//! stream limit.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{
    all_history, assert_dense, change_key as key, current, enc, get_as as get, open_stream as open, wait_for,
    SseClient, SseItem,
};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const ALL: &[&str] = &["acme-vendor.openvex.json", "distro.csaf.json", "scanner.cdx.json"];
use common::STREAM;

/// Drops an example document into the watched directory (written aside, then renamed,
/// so the watcher never reads half a file).
fn drop_example(inbox: &Path, name: &str) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
    let tmp = inbox.join(format!(".{name}.tmp"));
    std::fs::copy(src, &tmp).unwrap();
    std::fs::rename(&tmp, inbox.join(name)).unwrap();
}

#[test]
fn the_change_stream_delivers_resumes_filters_and_isolates_tenants() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, inbox) = (tmp.path().join("data"), tmp.path().join("inbox"));
    std::fs::create_dir_all(&inbox).unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[consensus]\nissuers_file = \"config/issuers.toml\"\n[ingest]\npoll_interval_ms = 100\n\
         [api]\nstream_poll_ms = 100\nstream_heartbeat_secs = 1\nmax_streams = 5\n",
    )
    .unwrap();
    let (_child, port) = common::start_embedded_serve(
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--ingest-dir",
            inbox.to_str().unwrap(),
            "--tenant",
            "acme",
        ],
        &[],
        &tmp.path().join("serve.log"),
        Duration::from_secs(60),
    );
    let addr = format!("127.0.0.1:{port}");

    // Two streams open before anything is written: acme's and globex's.
    let mut acme = open(&addr, "acme", "", None);
    let mut globex = open(&addr, "globex", "", None);

    // A change is delivered, with ordered ids from 1.
    drop_example(&inbox, "acme-vendor.openvex.json");
    let first_want = common::example_digests(&["acme-vendor.openvex.json"], "acme");
    let want = first_want.clone();
    wait_for("acme's first records", Duration::from_secs(60), || (current(&addr, "acme") == want).then_some(()));
    let first = acme.events_until(&want);
    assert_dense(&first, 1, "acme");
    let last = first.last().unwrap().0;

    // Disconnect; more changes; resume with Last-Event-ID gets exactly the missed ones.
    drop(acme);
    drop_example(&inbox, "distro.csaf.json");
    drop_example(&inbox, "scanner.cdx.json");
    let want = common::example_digests(ALL, "acme");
    wait_for("acme's records of the three documents", Duration::from_secs(60), || {
        (current(&addr, "acme") == want).then_some(())
    });
    // The changes of the two documents: the records whose digest differs from before.
    let changed: BTreeSet<String> = want.difference(&first_want).cloned().collect();
    let mut resumed = open(&addr, "acme", "", Some(&last.to_string()));
    let missed = resumed.events_until(&changed);
    let missed = [missed, resumed.events_until_quiet(Duration::from_secs(2))].concat();
    let history = all_history(&addr, "acme");
    assert_dense(&missed, last + 1, "acme");
    let delivered: BTreeSet<_> = first.iter().chain(&missed).map(|(_, v)| key(v)).collect();
    assert_eq!(delivered.len(), first.len() + missed.len(), "no change is sent twice");
    assert_eq!(delivered, history, "the first stream and the resumed one together are exactly the history");

    // From 0: the whole stream, equal to the history.
    let mut whole = open(&addr, "acme", "?last_event_id=0", None);
    let all = whole.events_until_quiet(Duration::from_secs(2));
    assert_dense(&all, 1, "acme");
    assert_eq!(all.iter().map(|(_, v)| key(v)).collect::<BTreeSet<_>>(), history);

    // Filters: an artifact (any spelling), a package; the ids stay the stream's.
    let artifact = format!("?artifact={}", enc("pkg:NPM/acme-widget@2.4.1"));
    let mut one = open(&addr, "acme", &artifact, Some("0"));
    let only = one.events_until_quiet(Duration::from_secs(2));
    let expected: Vec<u64> =
        all.iter().filter(|(_, v)| v["artifact"] == "pkg:npm/acme-widget@2.4.1").map(|(i, _)| *i).collect();
    assert!(!expected.is_empty() && expected.len() < all.len(), "fixture: the filter keeps some changes");
    assert_eq!(only.iter().map(|(i, _)| *i).collect::<Vec<_>>(), expected, "the artifact's changes only");
    let mut none = open(&addr, "acme", &format!("?package={}", enc("pkg:npm/nothing-here")), Some("0"));
    assert_eq!(none.next_event(Duration::from_secs(2)), None, "another package has no change");

    // globex saw no change of acme, only heartbeats.
    let mut heartbeats = 0;
    while let Some(item) = globex.next_item(Duration::from_secs(3)) {
        match item {
            SseItem::Comment(c) if c == "heartbeat" => heartbeats += 1,
            other => panic!("globex received {other:?}"),
        }
        if heartbeats >= 2 {
            break;
        }
    }
    assert!(heartbeats >= 2, "an idle stream sends heartbeats");
    assert_eq!(get(&addr, "/v1/vex/consensus", "globex").1["items"], Value::Array(vec![]));

    // Bad ids are 400 naming the header; an id ahead of the stream is refused.
    for bad in ["abc", "-1", &(all.len() as u64 + 100).to_string()] {
        let mut c = SseClient::connect(&addr, STREAM, &[("X-Tenant", "acme"), ("Last-Event-ID", bad)]);
        let body: Value = serde_json::from_str(&c.rest()).unwrap();
        assert_eq!((c.status, &body["error"]["code"]), (400, &Value::from("invalid_parameter")), "{bad}: {body}");
        assert!(body["error"]["message"].as_str().unwrap().starts_with("Last-Event-ID:"), "{body}");
    }

    // At most max_streams (5) open: globex, resumed, whole, one, none are; a sixth waits.
    let mut sixth = SseClient::connect(&addr, STREAM, &[("X-Tenant", "acme")]);
    let (status, body) = (sixth.status, sixth.rest());
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("max_streams"), "{body}");
    drop((resumed, whole));
    let seventh = wait_for("a closed stream frees its slot", Duration::from_secs(10), || {
        let c = SseClient::connect(&addr, STREAM, &[("X-Tenant", "acme")]);
        (c.status == 200).then_some(c)
    });
    drop((seventh, one, none, globex));
}
