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

/// An OpenVEX document of `n` statements, one product each (a long history for a stream).
fn many_statements(n: usize) -> String {
    let statements: Vec<Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "vulnerability": { "name": format!("CVE-2024-{:05}", 10_000 + i) },
                // Long names: the record (which names the artifact, not the statement's
                // text) must stay large enough that the stall test fills the socket buffers.
                "products": [ { "@id": format!("pkg:npm/bulk-{i}-{}@1.0.{i}", "x".repeat(300)) } ],
                "status": "affected",
                "action_statement": format!("Upgrade bulk-{i}: {}", "x".repeat(600)),
            })
        })
        .collect();
    serde_json::json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://acme.example/vex/bulk",
        "author": "ACME Product Security <psirt@acme.example>",
        "timestamp": "2024-06-01T09:00:00Z",
        "version": 1,
        "statements": statements,
    })
    .to_string()
}

/// Issue 21 item 2: one tenant's streams (clients that never read included) cannot take
/// every slot: a tenant holding `api.max_streams_per_tenant` gets 429 while another
/// tenant is served; a stream ends after `api.stream_max_age_secs` and resumes with
/// `Last-Event-ID`; a client that stops reading is dropped after `api.stream_stall_secs`
/// and its slot freed.
#[test]
fn per_tenant_caps_max_age_and_stalled_clients() {
    use std::io::{Read, Write};
    const BULK: usize = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let (data, inbox) = (tmp.path().join("data"), tmp.path().join("inbox"));
    std::fs::create_dir_all(&inbox).unwrap();
    std::fs::write(inbox.join("bulk.openvex.json"), many_statements(BULK)).unwrap();
    let cfg = tmp.path().join("config.toml");
    std::fs::write(
        &cfg,
        "[consensus]\nissuers_file = \"config/issuers.toml\"\n[ingest]\npoll_interval_ms = 100\nmax_message_bytes = 16777216\n\
         [api]\nstream_poll_ms = 100\nstream_heartbeat_secs = 1\nmax_streams = 8\nmax_streams_per_tenant = 2\n\
         stream_max_age_secs = 6\nstream_stall_secs = 2\n",
    )
    .unwrap();
    let log = tmp.path().join("serve.log");
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
            "--log-format",
            "json",
        ],
        &[],
        &log,
        Duration::from_secs(60),
    );
    let addr = format!("127.0.0.1:{port}");
    wait_for("the bulk document's records", Duration::from_secs(180), || {
        let (_, m) = common::get(port, "/metrics")?;
        (common::metric(&m, "vex_observations_applied_total")? >= BULK as f64).then_some(())
    });

    // acme holds its cap of 2: a third acme stream is 429 (with Retry-After), globex is served.
    let started = std::time::Instant::now();
    let mut first = open(&addr, "acme", "", None);
    let second = open(&addr, "acme", "", None);
    let mut third = SseClient::connect(&addr, STREAM, &[("X-Tenant", "acme")]);
    let body = third.rest();
    assert_eq!(third.status, 429, "{body}");
    assert!(body.contains("max_streams_per_tenant"), "{body}");
    assert!(third.head.to_ascii_lowercase().contains("retry-after:"), "{}", third.head);
    let mut globex = open(&addr, "globex", "", None);
    assert!(matches!(globex.next_item(Duration::from_secs(5)), Some(SseItem::Comment(_))), "globex is served");

    // The stream reaches its age: a closing comment, then the end of the body.
    let rest = first.rest();
    let age = started.elapsed();
    assert!(rest.contains("stream_max_age_secs"), "{rest}");
    assert!(age >= Duration::from_secs(5) && age < Duration::from_secs(15), "ended after {age:?}");
    drop((second, globex));
    // Resuming from an id sent before is served (the slot was freed by the end).
    let mut resumed = open(&addr, "acme", "", Some("0"));
    assert!(resumed.next_event(Duration::from_secs(10)).is_some_and(|(id, _)| id == 1));
    drop(resumed);

    // A client that sends its request and never reads: once the server's buffers are
    // full it takes no frame; after stream_stall_secs it is dropped and its slot freed.
    let mut stalled = std::net::TcpStream::connect(&addr).unwrap();
    write!(stalled, "GET {STREAM}?last_event_id=0 HTTP/1.1\r\nHost: {addr}\r\nX-Tenant: acme\r\n\r\n").unwrap();
    let other = open(&addr, "acme", "", None);
    // acme's 2 slots: the stalled client's and `other`.
    wait_for("the stalled client dropped", Duration::from_secs(60), || {
        let c = SseClient::connect(&addr, STREAM, &[("X-Tenant", "acme")]);
        (c.status == 200).then_some(c)
    });
    let line = wait_for("the stream_client_stalled line", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).unwrap().lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["event"] == "stream_client_stalled").then_some(v)
        })
    });
    assert_eq!((line["tenant"].as_str(), line["level"].as_str()), (Some("acme"), Some("WARN")), "{line}");
    // Its connection was shut down: reading it to the end finishes (no hang).
    stalled.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut sink = Vec::new();
    let r = stalled.read_to_end(&mut sink);
    assert!(r.is_ok() || r.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset), "{r:?}");
    assert!(sink.len() < BULK * 1500, "the connection ended before the whole history ({} bytes)", sink.len());
    drop(other);
}
