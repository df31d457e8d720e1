//! The change stream `GET /v1/vex/consensus/stream` in the Kafka + MongoDB configuration
//! (real broker, real MongoDB-wire server), on two instances sharing one database:
//! instance A ingests, instance B only serves the API (it consumes another topic), so
//! B's stream can only come from the store. Delivery with ordered ids on both, resume
//! with `Last-Event-ID` on the other instance giving exactly the missed changes, the
//! whole stream equal to the history and the same on both instances (both sequence the
//! changes at once), another tenant seeing only heartbeats, then only its own changes.

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{all_history, assert_dense, change_key, current, open_stream, Serve, ServeSetup, SseItem};
use std::collections::BTreeSet;
use std::time::Duration;

const ENV: &[(&str, &str)] = &[("VEXLENS_API__STREAM_POLL_MS", "100"), ("VEXLENS_API__STREAM_HEARTBEAT_SECS", "1")];

#[test]
fn change_stream_on_two_instances_delivers_resumes_and_isolates_tenants() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let setup = ServeSetup::fresh(&services, "stream");
    // B: same database, its own (empty) topics and group: it makes no change itself.
    let mut setup_b = ServeSetup::fresh(&services, "streamb");
    setup_b.db = setup.db.clone();
    let mut a = Serve::start(&setup, "a", ENV);
    let mut b = Serve::start(&setup_b, "b", ENV);
    a.wait_ready(Duration::from_secs(90));
    b.wait_ready(Duration::from_secs(90));
    let (la, lb) = (a.listen.clone(), b.listen.clone());
    let examples = common::repo_dir().join("examples");
    let file = |f: &str| vec![examples.join(f)];

    // Streams open before anything is written: acme on both instances, globex on A.
    let mut on_a = open_stream(&la, "acme", "", None);
    let mut on_b = open_stream(&lb, "acme", "", None);
    let mut globex = open_stream(&la, "globex", "", None);

    common::kcat_produce_files(
        &services.brokers,
        &setup.topic,
        &[("tenant", "acme")],
        &file("acme-vendor.openvex.json"),
    );
    let first_want = common::example_digests(&["acme-vendor.openvex.json"], "acme");
    let want = first_want.clone();
    common::wait_for("acme's first records", Duration::from_secs(180), || (current(&lb, "acme") == want).then_some(()));
    let first = on_b.events_until(&want);
    assert_dense(&first, 1, "acme");
    let last = first.last().unwrap().0;

    // B's stream goes away; more changes; resuming on A gets exactly the missed ones.
    drop(on_b);
    let rest: Vec<_> = ["distro.csaf.json", "scanner.cdx.json"].iter().map(|f| examples.join(f)).collect();
    common::kcat_produce_files(&services.brokers, &setup.topic, &[("tenant", "acme")], &rest);
    let want = common::example_digests(&["acme-vendor.openvex.json", "distro.csaf.json", "scanner.cdx.json"], "acme");
    common::wait_for("acme's records of the three documents", Duration::from_secs(180), || {
        (current(&la, "acme") == want).then_some(())
    });
    // The changes of the two documents: the records whose digest differs from before.
    let changed: BTreeSet<String> = want.difference(&first_want).cloned().collect();
    let mut resumed = open_stream(&la, "acme", "", Some(&last.to_string()));
    let missed = [resumed.events_until(&changed), resumed.events_until_quiet(Duration::from_secs(3))].concat();
    assert_dense(&missed, last + 1, "acme");
    let history = all_history(&lb, "acme");
    let delivered: BTreeSet<_> = first.iter().chain(&missed).map(|(_, v)| change_key(v)).collect();
    assert_eq!(delivered.len(), first.len() + missed.len(), "no change is sent twice");
    assert_eq!(delivered, history, "the first stream and the resumed one together are exactly the history");

    // A's stream, open all along, saw the same changes with the same ids; from 0 on B too.
    let along = on_a.events_until_quiet(Duration::from_secs(3));
    let all = open_stream(&lb, "acme", "?last_event_id=0", None).events_until_quiet(Duration::from_secs(3));
    let view = |v: &[(u64, serde_json::Value)]| v.iter().map(|(i, v)| (*i, change_key(v))).collect::<Vec<_>>();
    assert_eq!(view(&along), view(&all), "every instance's stream is the same");
    assert_eq!(view(&all), view(&[first, missed].concat()));

    // globex: only heartbeats while acme changed; then its own changes only, from id 1.
    let mut heartbeats = 0;
    while heartbeats < 2 {
        match globex.next_item(Duration::from_secs(5)) {
            Some(SseItem::Comment(c)) if c == "heartbeat" => heartbeats += 1,
            other => panic!("globex received {other:?} while only acme changed"),
        }
    }
    common::kcat_produce_files(&services.brokers, &setup.topic, &[("tenant", "globex")], &file("scanner.cdx.json"));
    let want = common::example_digests(&["scanner.cdx.json"], "globex");
    common::wait_for("globex's records", Duration::from_secs(180), || (current(&lb, "globex") == want).then_some(()));
    let theirs = [globex.events_until(&want), globex.events_until_quiet(Duration::from_secs(3))].concat();
    assert_dense(&theirs, 1, "globex");
    assert_eq!(
        theirs.iter().map(|(_, v)| change_key(v)).collect::<BTreeSet<_>>(),
        all_history(&la, "globex"),
        "globex's stream is globex's history"
    );

    drop((on_a, resumed, globex));
    assert!(a.terminate(Duration::from_secs(60)), "A exits cleanly; log:\n{}", a.log_tail());
    assert!(b.terminate(Duration::from_secs(60)), "B exits cleanly; log:\n{}", b.log_tail());
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}
