//! Traces against a real OTLP backend (Jaeger v2, started by `scripts/services.sh` with
//! `VEXLENS_JAEGER=1`; `scripts/test.sh` does) and the real Kafka and MongoDB-wire server:
//! kcat produces documents carrying a W3C `traceparent` (the producer's span), `vex-lens
//! serve` exports its spans over OTLP/HTTP, and Jaeger's query API must then hold one trace
//! per document: the service's spans under the producer's span, every stage present
//! (intake, DSSE verification, normalisation, routing, the observation hop, apply,
//! evaluate, the store write), the attributes set, the `traceparent` of the produced
//! observations and dead letters continuing the trace, HTTP requests and export jobs
//! traced, and nothing secret (the HMAC key or tags, a bearer token) in any span; with two
//! instances in one consumer group, each document's trace is one whole tree under its
//! producer's span (exported by the test itself) with spans of both instances. With export
//! off the producer's trace context rides on unchanged; a collector that is down or
//! refusing is counted and logged, and costs no document.
//!
//! Without any service: with export disabled (the default) the service opens no
//! connection to the configured OTLP endpoint (a plain loopback listener), and with
//! export enabled it does (so the listener can tell).

#[path = "../integration-tests/common/mod.rs"]
mod common;

use common::{Serve, ServeSetup};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Jaeger's endpoints (from `scripts/services.sh env`).
struct Jaeger {
    /// OTLP/HTTP receiver, `http://127.0.0.1:<port>`.
    otlp: String,
    /// Query API `host:port`.
    query: String,
}

/// Jaeger from the environment; a failure when `VEXLENS_REQUIRE_SERVICES=1` and it is
/// missing or not answering, otherwise `None` (skipped).
fn jaeger() -> Option<Jaeger> {
    let otlp = std::env::var("VEXLENS_JAEGER_OTLP_ENDPOINT").ok().filter(|s| !s.is_empty());
    let query = std::env::var("VEXLENS_JAEGER_QUERY_URL").ok().filter(|s| !s.is_empty());
    let (Some(otlp), Some(query)) = (otlp, query) else {
        assert!(
            !common::services_required(),
            "VEXLENS_REQUIRE_SERVICES=1 but VEXLENS_JAEGER_OTLP_ENDPOINT/VEXLENS_JAEGER_QUERY_URL are unset \
             (VEXLENS_JAEGER=1 scripts/services.sh up)"
        );
        eprintln!("skipped: Jaeger not started (VEXLENS_JAEGER=1 scripts/services.sh up)");
        return None;
    };
    let query = query.trim_start_matches("http://").trim_end_matches('/').to_string();
    let answers = common::http_get(&query, "/api/services").is_some_and(|(c, _)| c == 200);
    assert!(answers, "Jaeger's query API at {query} does not answer (scripts/services.sh start-jaeger)");
    Some(Jaeger { otlp, query })
}

/// A fresh random-enough id of `hex_digits` hex digits (never all zero).
fn fresh_id(hex_digits: usize, salt: u64) -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let mut x = nanos ^ (u64::from(std::process::id()) << 32) ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut out = String::new();
    while out.len() < hex_digits {
        // splitmix64
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        out.push_str(&format!("{:016x}", z ^ (z >> 31)));
    }
    out.truncate(hex_digits);
    out.replace_range(0..1, "a");
    out
}

/// A producer's span: (trace id, span id, `traceparent`).
fn producer_span(salt: u64) -> (String, String, String) {
    let (t, s) = (fresh_id(32, salt), fresh_id(16, salt + 1000));
    let header = format!("00-{t}-{s}-01");
    (t, s, header)
}

/// One span of a Jaeger trace.
#[derive(Clone, Debug)]
struct JSpan {
    id: String,
    name: String,
    /// CHILD_OF reference (span id).
    parent: Option<String>,
    /// FOLLOWS_FROM references (trace id, span id).
    links: Vec<(String, String)>,
    tags: BTreeMap<String, Value>,
    service: String,
    /// The process's `service.instance.id` resource attribute.
    instance: Option<String>,
}

impl JSpan {
    fn tag(&self, key: &str) -> Option<String> {
        self.tags.get(key).map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
    }
}

/// The spans of trace `trace_id` in Jaeger (empty while it has none), and the raw JSON.
fn trace(j: &Jaeger, trace_id: &str) -> (Vec<JSpan>, String) {
    let Some((200, body)) = common::http_get(&j.query, &format!("/api/traces/{trace_id}")) else {
        return (Vec::new(), String::new());
    };
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let mut out = Vec::new();
    for t in v["data"].as_array().into_iter().flatten() {
        let processes = &t["processes"];
        for s in t["spans"].as_array().into_iter().flatten() {
            let refs = s["references"].as_array().cloned().unwrap_or_default();
            let parent = refs
                .iter()
                .find(|r| r["refType"] == "CHILD_OF" && r["traceID"] == trace_id)
                .and_then(|r| r["spanID"].as_str())
                .map(str::to_string);
            let links = refs
                .iter()
                .filter(|r| r["refType"] == "FOLLOWS_FROM")
                .map(|r| {
                    (r["traceID"].as_str().unwrap_or("").to_string(), r["spanID"].as_str().unwrap_or("").to_string())
                })
                .collect();
            let tags = s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| (t["key"].as_str().unwrap_or("").to_string(), t["value"].clone()))
                .collect();
            let pid = s["processID"].as_str().unwrap_or("");
            out.push(JSpan {
                id: s["spanID"].as_str().unwrap_or("").to_string(),
                name: s["operationName"].as_str().unwrap_or("").to_string(),
                parent,
                links,
                tags,
                service: processes[pid]["serviceName"].as_str().unwrap_or("").to_string(),
                instance: processes[pid]["tags"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["key"] == "service.instance.id")
                    .and_then(|t| t["value"].as_str())
                    .map(str::to_string),
            });
        }
    }
    (out, body)
}

/// Waits until trace `trace_id` holds every span name of `names` (at least `min` of
/// each, default 1); returns its spans and raw JSON.
fn wait_for_trace(j: &Jaeger, trace_id: &str, names: &[(&str, usize)]) -> (Vec<JSpan>, String) {
    let start = Instant::now();
    loop {
        let (spans, raw) = trace(j, trace_id);
        let missing: Vec<String> = names
            .iter()
            .filter(|(n, min)| spans.iter().filter(|s| s.name == *n).count() < *min)
            .map(|(n, min)| format!("{n} x{min}"))
            .collect();
        if missing.is_empty() {
            return (spans, raw);
        }
        let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "trace {trace_id} in Jaeger lacks {missing:?}; it has {names:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn one<'a>(spans: &'a [JSpan], name: &str) -> &'a JSpan {
    let found: Vec<&JSpan> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "exactly one {name}: {found:?}");
    found[0]
}

fn by_id<'a>(spans: &'a [JSpan], id: &str) -> &'a JSpan {
    spans.iter().find(|s| s.id == id).unwrap_or_else(|| panic!("no span {id} in {spans:?}"))
}

fn parent_name(spans: &[JSpan], s: &JSpan) -> String {
    let p = s.parent.as_deref().unwrap_or_else(|| panic!("{} has no parent", s.name));
    by_id(spans, p).name.clone()
}

/// `name=value` pairs of kcat's `%h` output.
fn headers_of(line: &str) -> BTreeMap<String, String> {
    line.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// A document with two statements (two packages, so two observations on two partitions).
fn document(cve: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": format!("https://example.test/vex/{cve}"),
        "author": "Distro Security",
        "timestamp": "2024-06-01T00:00:00Z",
        "version": 1,
        "statements": [
            {"vulnerability": {"name": cve}, "products": [{"@id": "pkg:npm/trace-a@1.0.0"}], "status": "affected",
             "action_statement": "upgrade"},
            {"vulnerability": {"name": cve}, "products": [{"@id": "pkg:npm/trace-b@2.0.0"}], "status": "not_affected",
             "justification": "vulnerable_code_not_present"}
        ]
    }))
    .unwrap()
}

fn issuers_toml(key: &vex_lens::crypto::SigningKey) -> String {
    format!(
        r#"[[issuers]]
id = "distro"
display_name = "Distro Security"
tier = "trusted"
keys = [{{ public_key = """{}""" }}]
"#,
        key.public_key().to_pem()
    )
}

#[test]
fn a_document_is_one_trace_from_its_producer_to_the_consensus_write() {
    let Some(services) = common::services() else { return };
    let Some(j) = jaeger() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let setup = ServeSetup::fresh(&services, "traces");
    let service_name = format!("vex-lens-{}", setup.db);
    let tmp = tempfile::tempdir().unwrap();
    let key = vex_lens::crypto::SigningKey::from_pem(
        &vex_lens::crypto::generate_keypair(vex_lens::crypto::KeyAlg::Ed25519).unwrap().0,
    )
    .unwrap();
    let issuers = tmp.path().join("issuers.toml");
    std::fs::write(&issuers, issuers_toml(&key)).unwrap();
    let exports = tmp.path().join("exports");
    let env = [
        ("VEXLENS_TELEMETRY__EXPORT_ENABLED", "true"),
        ("VEXLENS_TELEMETRY__OTLP_ENDPOINT", j.otlp.as_str()),
        ("VEXLENS_TELEMETRY__SERVICE_NAME", service_name.as_str()),
        ("VEXLENS_CONSENSUS__ISSUERS_FILE", issuers.to_str().unwrap()),
        ("VEXLENS_EXPORT__DIR", exports.to_str().unwrap()),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let mut serve = Serve::start(&setup, "traced", &env);
    serve.wait_ready(Duration::from_secs(90));

    // A: a signed envelope around a two-statement document, with the producer's span.
    // Upper case: the normalised spelling (the spans carry the observation's).
    let cve = format!("CVE-2099-{}", &fresh_id(8, 7)[..5]).to_ascii_uppercase();
    let doc = document(&cve);
    let envelope = vex_lens::crypto::sign_envelope("application/openvex+json", &doc, &key).unwrap();
    let a_file = tmp.path().join("a.dsse.json");
    std::fs::write(&a_file, envelope.to_json()).unwrap();
    let (a_trace, a_parent, a_header) = producer_span(1);
    let headers = [("traceparent", a_header.as_str()), ("tenant", "acme"), ("correlation-id", "corr-trace-a")];
    common::kcat_produce_file(&services.brokers, &setup.topic, "a", &headers, &a_file);
    // B: not JSON: dead-lettered, in its own trace.
    let b_file = tmp.path().join("b.json");
    std::fs::write(&b_file, b"\x00 not json").unwrap();
    let (b_trace, b_parent, b_header) = producer_span(2);
    common::kcat_produce_file(&services.brokers, &setup.topic, "b", &[("traceparent", b_header.as_str())], &b_file);

    common::wait_for_stored_records(&mut serve, &services.mongo_uri, &setup.db, 2);
    common::wait_for("the dead letter", Duration::from_secs(60), || {
        (common::kcat_count(&services.brokers, &setup.dlq_topic) == 1).then_some(())
    });

    // An API request and an export job, each with its own caller span; a request with a
    // bearer token (refused: no tokens are configured) whose token must not be recorded.
    let (c_trace, c_parent, c_header) = producer_span(3);
    let (code, body) = common::http_request(
        &serve.listen,
        "POST",
        "/v1/vex/export",
        &[("X-Tenant", "acme"), ("traceparent", c_header.as_str())],
        r#"{"format":"json"}"#,
    );
    assert_eq!(code, 200, "{body}");
    let (d_trace, d_parent, d_header) = producer_span(4);
    let token = "secret-bearer-token-that-must-not-be-traced";
    let bearer = format!("Bearer {token}");
    let (code, _) = common::http_request(
        &serve.listen,
        "GET",
        &format!("/v1/vex/consensus?vulnerability={cve}"),
        &[("Authorization", bearer.as_str()), ("traceparent", d_header.as_str())],
        "",
    );
    assert_eq!(code, 401);

    // The headers of what the service produced, read before SIGTERM.
    let observation_headers: Vec<BTreeMap<String, String>> =
        common::kcat_consume(&services.brokers, &setup.observations_topic, "%h\n")
            .lines()
            .filter(|l| !l.is_empty())
            .map(headers_of)
            .collect();
    let dlq_headers: Vec<BTreeMap<String, String>> =
        common::kcat_consume(&services.brokers, &setup.dlq_topic, "%h\n").lines().map(headers_of).collect();
    // SIGTERM flushes the spans still queued.
    assert!(serve.terminate(Duration::from_secs(60)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());

    // --- A: one trace from the producer's span to the consensus write -----------------
    let (spans, raw_a) = wait_for_trace(
        &j,
        &a_trace,
        &[
            ("vex.document", 1),
            ("vex.dsse.verify", 1),
            ("vex.normalise", 2),
            ("vex.route", 1),
            ("vex.observation", 2),
            ("vex.artifact.apply", 2),
            ("vex.artifact.evaluate", 1),
            ("vex.store.write", 3),
        ],
    );
    assert!(spans.iter().all(|s| s.service == service_name), "every span from the service: {spans:?}");
    let digest = check_document_spans(&spans, &a_parent, &setup, &doc, &envelope);
    let document = one(&spans, "vex.document");
    check_observation_spans(&spans, &a_trace, &setup, &observation_headers, &cve, &digest);
    // The verification's write hangs under the document, the observations' under theirs.
    assert!(spans.iter().filter(|s| s.name == "vex.store.write").any(|w| w.parent.as_deref() == Some(&document.id)));
    // The batch spans the writes link to are in Jaeger, in their own traces.
    let w = spans.iter().find(|s| s.name == "vex.store.write").unwrap();
    let (batch_trace, batch_id) = &w.links[0];
    let (batch_spans, _) = wait_for_trace(&j, batch_trace, &[("vex.store.batch", 1)]);
    let batch = by_id(&batch_spans, batch_id);
    assert_eq!(batch.name, "vex.store.batch");
    assert_eq!(batch.tag("vex.outcome").as_deref(), Some("durable"));

    // --- B: the dead letter continues its document's trace -----------------------------
    let raw_b = check_dead_letter_trace(&j, &b_trace, &b_parent, &dlq_headers);

    // --- C, D: HTTP requests and the export job ---------------------------------------
    let (c_spans, raw_c) = wait_for_trace(&j, &c_trace, &[("POST /v1/vex/export", 1), ("vex.export.job", 1)]);
    let req = one(&c_spans, "POST /v1/vex/export");
    assert_eq!(req.parent.as_deref(), Some(c_parent.as_str()));
    assert_eq!(req.tag("span.kind").as_deref(), Some("server"));
    assert_eq!(req.tag("http.route").as_deref(), Some("/v1/vex/export"));
    assert_eq!(req.tag("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(req.tag("vex.tenant").as_deref(), Some("acme"));
    let job = one(&c_spans, "vex.export.job");
    assert_eq!(job.parent.as_deref(), Some(req.id.as_str()));
    assert_eq!(job.tag("vex.outcome").as_deref(), Some("success"));
    assert_eq!(job.tag("vex.records").as_deref(), Some("2"));
    let (d_spans, raw_d) = wait_for_trace(&j, &d_trace, &[("GET /v1/vex/consensus", 1)]);
    let refused = one(&d_spans, "GET /v1/vex/consensus");
    assert_eq!(refused.parent.as_deref(), Some(d_parent.as_str()));
    assert_eq!(refused.tag("http.response.status_code").as_deref(), Some("401"));

    // --- nothing secret in any span -----------------------------------------------------
    let everything = [raw_a, raw_b, raw_c, raw_d].join("\n");
    assert!(!everything.contains(common::TEST_HMAC_KEY), "the HMAC key is in a span");
    for h in &observation_headers {
        let tag = h.get("vex-lens-mac").expect("observations carry their HMAC tag");
        assert!(!everything.contains(tag.as_str()), "an HMAC tag is in a span");
    }
    assert!(!everything.contains(token), "the bearer token is in a span");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}

/// A's document span (the producer's child), the verification's and the two normalise
/// spans (the envelope's and the payload's); returns the payload's digest.
fn check_document_spans(
    spans: &[JSpan],
    a_parent: &str,
    setup: &ServeSetup,
    doc: &[u8],
    envelope: &vex_lens::crypto::Envelope,
) -> String {
    let document = one(spans, "vex.document");
    assert_eq!(document.parent.as_deref(), Some(a_parent), "the document's span is the producer's child");
    assert_eq!(document.tag("span.kind").as_deref(), Some("consumer"));
    assert_eq!(document.tag("vex.tenant").as_deref(), Some("acme"));
    assert_eq!(document.tag("vex.correlation_id").as_deref(), Some("corr-trace-a"));
    assert_eq!(document.tag("vex.outcome").as_deref(), Some("ingested"));
    assert_eq!(document.tag("vex.observations").as_deref(), Some("2"));
    assert_eq!(document.tag("messaging.destination.name").as_deref(), Some(setup.topic.as_str()));
    let digest = vex_lens::domain::canonical::sha256_prefixed(doc);
    assert_eq!(document.tag("vex.document_digest"), Some(digest.clone()), "the payload's digest");
    assert_eq!(document.tag("vex.issuer").as_deref(), Some("distro"), "the signer");

    let verify = one(spans, "vex.dsse.verify");
    assert_eq!(parent_name(spans, verify), "vex.document");
    assert_eq!(verify.tag("vex.outcome").as_deref(), Some("verified"));
    assert_eq!(verify.tag("vex.issuer").as_deref(), Some("distro"));
    let envelope_digest = vex_lens::domain::canonical::sha256_prefixed(envelope.to_json().as_bytes());
    assert_eq!(verify.tag("vex.envelope_digest"), Some(envelope_digest));
    let normalised: Vec<&JSpan> = spans.iter().filter(|s| s.name == "vex.normalise").collect();
    let payload = normalised.iter().find(|s| s.tag("vex.enveloped").as_deref() == Some("true")).expect("payload");
    assert_eq!(parent_name(spans, payload), "vex.dsse.verify");
    assert_eq!(payload.tag("vex.outcome").as_deref(), Some("normalised"));
    assert_eq!(payload.tag("vex.format").as_deref(), Some("openvex"));
    assert_eq!(payload.tag("vex.document_digest"), Some(digest.clone()));
    let outer = normalised.iter().find(|s| s.tag("vex.enveloped").as_deref() == Some("false")).expect("envelope");
    assert_eq!(parent_name(spans, outer), "vex.document");
    assert_eq!(outer.tag("vex.outcome").as_deref(), Some("envelope"));
    digest
}

/// The routing span of A (its trace context carried by the observations produced), each
/// observation's span continuing it, and the apply, evaluate and write spans under them.
fn check_observation_spans(
    spans: &[JSpan],
    a_trace: &str,
    setup: &ServeSetup,
    observation_headers: &[BTreeMap<String, String>],
    cve: &str,
    digest: &str,
) {
    let route = one(spans, "vex.route");
    assert_eq!(parent_name(spans, route), "vex.document");
    assert_eq!(route.tag("span.kind").as_deref(), Some("producer"));
    assert_eq!(route.tag("messaging.destination.name").as_deref(), Some(setup.observations_topic.as_str()));
    // The produced observations carry the routing span's trace context.
    assert_eq!(observation_headers.len(), 2, "{observation_headers:?}");
    for h in observation_headers {
        assert_eq!(h.get("traceparent"), Some(&format!("00-{a_trace}-{}-01", route.id)), "{h:?}");
    }

    let mut artifacts = Vec::new();
    for o in spans.iter().filter(|s| s.name == "vex.observation") {
        assert_eq!(o.parent.as_deref(), Some(route.id.as_str()), "an observation continues the routing span");
        assert_eq!(o.tag("span.kind").as_deref(), Some("consumer"));
        assert_eq!(o.tag("vex.outcome").as_deref(), Some("applied"));
        assert_eq!(o.tag("vex.tenant").as_deref(), Some("acme"));
        assert_eq!(o.tag("vex.vulnerability"), Some(cve.to_string()));
        assert_eq!(o.tag("vex.issuer").as_deref(), Some("distro"));
        assert_eq!(o.tag("vex.document_digest"), Some(digest.to_string()));
        assert_eq!(o.tag("vex.signature").as_deref(), Some("Verified"), "the tag verified on the internal hop");
        artifacts.push(o.tag("vex.artifact").expect("artifact"));
        let children: Vec<&str> =
            spans.iter().filter(|s| s.parent.as_deref() == Some(o.id.as_str())).map(|s| s.name.as_str()).collect();
        assert!(children.contains(&"vex.artifact.apply"), "{children:?}");
        assert!(children.contains(&"vex.store.write"), "the consensus write ends the observation: {children:?}");
    }
    artifacts.sort();
    assert_eq!(artifacts, ["pkg:npm/trace-a@1.0.0", "pkg:npm/trace-b@2.0.0"]);
    for a in spans.iter().filter(|s| s.name == "vex.artifact.apply") {
        assert_eq!(parent_name(spans, a), "vex.observation");
        assert_eq!(a.tag("vex.outcome").as_deref(), Some("applied"));
        assert_eq!(a.tag("vex.vulnerability"), Some(cve.to_string()));
    }
    for e in spans.iter().filter(|s| s.name == "vex.artifact.evaluate") {
        assert_eq!(parent_name(spans, e), "vex.observation");
        assert!(e.tag("vex.records").is_some_and(|n| n != "0"), "{e:?}");
    }
    for w in spans.iter().filter(|s| s.name == "vex.store.write") {
        assert_eq!(w.tag("vex.outcome").as_deref(), Some("durable"), "{w:?}");
        assert_eq!(w.links.len(), 1, "linked to its batch: {w:?}");
    }
}

/// B: the dead letter continues its document's trace; returns the trace's raw JSON.
fn check_dead_letter_trace(
    j: &Jaeger,
    b_trace: &str,
    b_parent: &str,
    dlq_headers: &[BTreeMap<String, String>],
) -> String {
    let (b_spans, raw_b) = wait_for_trace(j, b_trace, &[("vex.document", 1), ("vex.dead_letter", 1)]);
    let b_doc = one(&b_spans, "vex.document");
    assert_eq!(b_doc.parent.as_deref(), Some(b_parent));
    assert_eq!(b_doc.tag("vex.outcome").as_deref(), Some("dead_lettered"));
    assert_eq!(b_doc.tag("vex.reason").as_deref(), Some("invalid_json"));
    let dl = one(&b_spans, "vex.dead_letter");
    assert_eq!(dl.parent.as_deref(), Some(b_doc.id.as_str()));
    assert_eq!(dl.tag("vex.reason").as_deref(), Some("invalid_json"));
    assert_eq!(dlq_headers.len(), 1, "{dlq_headers:?}");
    assert_eq!(
        dlq_headers[0].get("traceparent"),
        Some(&format!("00-{b_trace}-{}-01", dl.id)),
        "the dead letter carries the service's span, not the producer's: {:?}",
        dlq_headers[0]
    );
    raw_b
}

/// A loopback listener standing in for an OTLP collector: counts connections, keeps
/// what was sent, answers 200.
struct Listener {
    port: u16,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<u8>>>,
}

impl Listener {
    fn start() -> Listener {
        Listener::answering("200 OK")
    }

    /// A listener answering every request with `status` (e.g. `503 Service Unavailable`).
    fn answering(status: &'static str) -> Listener {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (c, r) = (connections.clone(), received.clone());
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(mut s) = stream else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let mut buf = [0u8; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => r.lock().unwrap().extend_from_slice(&buf[..n]),
                    }
                }
                let answer =
                    format!("HTTP/1.1 {status}\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
                let _ = s.write_all(answer.as_bytes());
            }
        });
        Listener { port, connections, received }
    }
}

/// `vex-lens serve --once` over one document in the embedded mode with `env`; waits for
/// it to exit 0; its log (stderr).
fn serve_once(dir: &std::path::Path, env: &[(&str, &str)]) -> String {
    let input = dir.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("doc.json"), document("CVE-2099-0001")).unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_vex-lens"));
    cmd.current_dir(common::repo_dir())
        .arg("serve")
        .arg("--once")
        .arg("--ingest-dir")
        .arg(&input)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .env_remove("VEXLENS_TELEMETRY__EXPORT_ENABLED")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run vex-lens serve --once");
    assert!(out.status.success(), "serve --once failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn with_export_disabled_nothing_is_sent_and_enabled_it_is() {
    let listener = Listener::start();
    let endpoint = format!("http://127.0.0.1:{}", listener.port);
    let off = tempfile::tempdir().unwrap();
    // Off by default: the endpoint is configured, export_enabled is not.
    serve_once(off.path(), &[("VEXLENS_TELEMETRY__OTLP_ENDPOINT", &endpoint)]);
    let explicit = tempfile::tempdir().unwrap();
    serve_once(
        explicit.path(),
        &[("VEXLENS_TELEMETRY__OTLP_ENDPOINT", &endpoint), ("VEXLENS_TELEMETRY__EXPORT_ENABLED", "false")],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(listener.connections.load(Ordering::SeqCst), 0, "export disabled, yet the OTLP endpoint was contacted");

    // The same run with export enabled does reach the listener (so the check above can fail).
    let on = tempfile::tempdir().unwrap();
    serve_once(
        on.path(),
        &[
            ("VEXLENS_TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("VEXLENS_TELEMETRY__EXPORT_ENABLED", "true"),
            ("VEXLENS_TELEMETRY__SERVICE_NAME", "vex-lens-listener-check"),
        ],
    );
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let got = common::wait_for("an OTLP export at the listener", Duration::from_secs(10), || {
        let r = listener.received.lock().unwrap().clone();
        (contains(&r, b"vex.document") && contains(&r, b"vex.store.write")).then_some(r)
    });
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("POST /v1/traces "), "{}", &text[..text.len().min(200)]);
    assert!(text.contains("application/x-protobuf"), "OTLP/HTTP protobuf");
    assert!(text.contains("vex-lens-listener-check"), "the configured service name");
}

/// Export off (the default): no spans, yet the producer's trace context passes through
/// unchanged, so a downstream consumer (or another instance exporting spans) continues
/// the producer's trace: the observations of a document carry its valid `traceparent`
/// and `tracestate` as they came, an invalid or missing one is not passed on, a dead
/// letter keeps the headers it came with; and the configured endpoint is never contacted.
#[test]
fn without_export_the_producers_trace_context_passes_on_unchanged() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let setup = ServeSetup::fresh(&services, "trace_forward");
    let listener = Listener::start();
    let endpoint = format!("http://127.0.0.1:{}", listener.port);
    let env = [("VEXLENS_TELEMETRY__EXPORT_ENABLED", "false"), ("VEXLENS_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str())];
    let mut serve = Serve::start(&setup, "untraced", &env);
    serve.wait_ready(Duration::from_secs(90));
    let tmp = tempfile::tempdir().unwrap();
    let (_, _, a_parent) = producer_span(11);
    let state = "congo=t61rcWkgMzE";
    let docs: [(&str, Vec<(&str, &str)>); 3] = [
        ("a", vec![("traceparent", a_parent.as_str()), ("tracestate", state)]),
        ("b", vec![("traceparent", "00-00000000000000000000000000000000-00f067aa0ba902b7-01"), ("tracestate", state)]),
        ("c", vec![]),
    ];
    for (i, (name, headers)) in docs.iter().enumerate() {
        let file = tmp.path().join(format!("{name}.json"));
        std::fs::write(&file, document(&format!("CVE-2099-{}", 7100 + i))).unwrap();
        let correlation = format!("corr-{name}");
        let mut headers = headers.clone();
        headers.push(("correlation-id", correlation.as_str()));
        common::kcat_produce_file(&services.brokers, &setup.topic, name, &headers, &file);
    }
    // Not JSON: dead-lettered with the headers it came with.
    let d_file = tmp.path().join("d.json");
    std::fs::write(&d_file, b"\x00 not json").unwrap();
    let (_, _, d_parent) = producer_span(12);
    common::kcat_produce_file(&services.brokers, &setup.topic, "d", &[("traceparent", d_parent.as_str())], &d_file);

    common::wait_for_stored_records(&mut serve, &services.mongo_uri, &setup.db, 6);
    common::wait_for("the dead letter", Duration::from_secs(60), || {
        (common::kcat_count(&services.brokers, &setup.dlq_topic) == 1).then_some(())
    });
    let observations: Vec<BTreeMap<String, String>> =
        common::kcat_consume(&services.brokers, &setup.observations_topic, "%h\n")
            .lines()
            .filter(|l| !l.is_empty())
            .map(headers_of)
            .collect();
    let of = |c: &str| -> Vec<&BTreeMap<String, String>> {
        observations.iter().filter(|h| h.get("correlation-id").map(String::as_str) == Some(c)).collect()
    };
    assert_eq!(observations.len(), 6, "{observations:?}");
    for h in of("corr-a") {
        assert_eq!(h.get("traceparent"), Some(&a_parent), "the producer's traceparent, unchanged: {h:?}");
        assert_eq!(h.get("tracestate").map(String::as_str), Some(state), "{h:?}");
        assert!(h.contains_key("vex-lens-mac"), "{h:?}");
    }
    for c in ["corr-b", "corr-c"] {
        assert_eq!(of(c).len(), 2, "{observations:?}");
        for h in of(c) {
            assert!(
                !h.contains_key("traceparent") && !h.contains_key("tracestate"),
                "nothing invalid passed on: {h:?}"
            );
        }
    }
    assert_eq!(of("corr-a").len(), 2, "{observations:?}");
    let dead: Vec<BTreeMap<String, String>> =
        common::kcat_consume(&services.brokers, &setup.dlq_topic, "%h\n").lines().map(headers_of).collect();
    assert_eq!(dead[0].get("traceparent"), Some(&d_parent), "{dead:?}");
    assert!(serve.terminate(Duration::from_secs(60)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    assert_eq!(listener.connections.load(Ordering::SeqCst), 0, "export off, yet the OTLP endpoint was contacted");

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}

/// Log lines (JSON) of `log` whose `event` is `event`.
fn events(log: &str, event: &str) -> Vec<Value> {
    log.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()).filter(|v| v["event"] == event).collect()
}

/// Export on, the collector down (a closed loopback port): every failed export counts in
/// `vex_trace_export_errors_total` (0 at start-up), the `trace_export_failed` warn line
/// appears once (rate-limited: at most one a minute), and ingestion goes on and loses
/// nothing.
#[test]
fn a_collector_that_is_down_is_visible_and_costs_no_document() {
    let Some(services) = common::services() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let closed = common::free_port();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let setup = ServeSetup::fresh(&services, "trace_down");
    let env = [
        ("VEXLENS_TELEMETRY__EXPORT_ENABLED", "true"),
        ("VEXLENS_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
        ("VEXLENS_TELEMETRY__EXPORT_TIMEOUT_MS", "1000"),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ];
    let mut serve = Serve::start(&setup, "collector_down", &env);
    serve.wait_ready(Duration::from_secs(90));
    let listen = serve.listen.clone();
    let metrics = || common::http_get(&listen, "/metrics").map(|(_, m)| m).unwrap_or_default();
    let at_start = common::metric(&metrics(), "vex_trace_export_errors_total");
    assert!(at_start.is_some(), "the series exists from start-up:\n{}", metrics());

    // Documents one at a time, so their spans leave in several batches (several failures).
    let tmp = tempfile::tempdir().unwrap();
    let docs = 5;
    for d in 0..docs {
        let file = tmp.path().join(format!("{d}.json"));
        std::fs::write(&file, document(&format!("CVE-2099-{}", 7300 + d))).unwrap();
        let (_, _, parent) = producer_span(200 + d as u64);
        common::kcat_produce_file(&services.brokers, &setup.topic, "k", &[("traceparent", parent.as_str())], &file);
        std::thread::sleep(Duration::from_millis(400));
    }
    let records = common::wait_for_stored_records(&mut serve, &services.mongo_uri, &setup.db, docs * 2);
    assert_eq!(records.len(), docs * 2, "every document's records, export failing or not");
    let text = common::wait_for("two failed exports counted", Duration::from_secs(30), || {
        let m = metrics();
        (common::metric(&m, "vex_trace_export_errors_total").unwrap_or(0.0) >= 2.0).then_some(m)
    });
    assert_eq!(common::metric(&text, "vex_documents_total{outcome=\"ingested\"}"), Some(docs as f64), "{text}");
    assert_eq!(common::metric(&text, "vex_observations_total{outcome=\"applied\"}"), Some(docs as f64 * 2.0));
    assert_eq!(common::metric_sum(&text, "vex_dead_letter_total"), Some(0.0), "nothing dead-lettered");
    let warn = "vex_log_events_total{level=\"warn\",event=\"trace_export_failed\"}";
    assert_eq!(common::metric(&text, warn), Some(1.0), "one line a minute at most: {text}");
    assert!(serve.terminate(Duration::from_secs(60)), "SIGTERM: serve did not exit 0; log:\n{}", serve.log_tail());
    let log = std::fs::read_to_string(&serve.log).unwrap();
    let lines = events(&log, "trace_export_failed");
    assert_eq!(lines.len(), 1, "rate-limited to one line in this short run: {lines:?}");
    assert_eq!(lines[0]["level"], "WARN");
    assert_eq!(lines[0]["endpoint"], format!("{endpoint}/v1/traces"));
    assert!(lines[0]["spans_lost"].as_u64().is_some_and(|n| n > 0), "{:?}", lines[0]);
    assert!(lines[0]["error"].as_str().is_some_and(|e| !e.is_empty()), "{:?}", lines[0]);

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}

/// Export on, a collector answering 503: the export failure is logged (`trace_export_failed`
/// with the status) and the run still completes.
#[test]
fn a_collector_answering_an_error_status_is_logged() {
    let listener = Listener::answering("503 Service Unavailable");
    let endpoint = format!("http://127.0.0.1:{}", listener.port);
    let dir = tempfile::tempdir().unwrap();
    let log = serve_once(
        dir.path(),
        &[
            ("VEXLENS_TELEMETRY__OTLP_ENDPOINT", &endpoint),
            ("VEXLENS_TELEMETRY__EXPORT_ENABLED", "true"),
            ("VEXLENS_TELEMETRY__EXPORT_TIMEOUT_MS", "1500"),
        ],
    );
    assert!(listener.connections.load(Ordering::SeqCst) > 0, "the collector was asked");
    let lines = events(&log, "trace_export_failed");
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0]["error"].as_str().is_some_and(|e| e.contains("503")), "{:?}", lines[0]);
}

/// A document with one `affected` statement per package of `packages` (one observation
/// each, keyed by its package, so spread over the observations topic's partitions).
fn document_for(cve: &str, packages: &[String]) -> Vec<u8> {
    let statements: Vec<Value> = packages
        .iter()
        .map(|p| json!({"vulnerability": {"name": cve}, "products": [{"@id": p}], "status": "affected", "action_statement": "upgrade"}))
        .collect();
    serde_json::to_vec(&json!({
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": format!("https://example.test/vex/{cve}"),
        "author": "Distro Security",
        "timestamp": "2024-06-01T00:00:00Z",
        "version": 1,
        "statements": statements
    }))
    .unwrap()
}

/// Exports the producer's span itself to Jaeger (OTLP/HTTP JSON, a root span of kind
/// producer), so that the trace's root is in the backend like any instrumented producer's.
fn export_producer_span(j: &Jaeger, service: &str, trace_id: &str, span_id: &str) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    let body = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"scope": {"name": "it_traces"}, "spans": [{
            "traceId": trace_id, "spanId": span_id, "name": "produce vex.documents", "kind": 4,
            "startTimeUnixNano": (now - 2_000_000).to_string(), "endTimeUnixNano": now.to_string()
        }]}]
    }]});
    let addr = j.otlp.trim_start_matches("http://").trim_end_matches('/');
    let (code, answer) = common::http_request(addr, "POST", "/v1/traces", &[], &body.to_string());
    assert_eq!(code, 200, "Jaeger refused the producer's span: {answer}");
}

/// Lines "partitions assigned" of a serve's log that name a partition of `topic`.
fn assigned(s: &Serve, topic: &str) -> usize {
    let needle = format!("{topic}/");
    std::fs::read_to_string(&s.log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("partitions assigned") && l.contains(&needle))
        .count()
}

/// Two `serve` instances in one consumer group, export on: each document's trace is one
/// whole tree (every span's parent in the trace) under its producer's span, and the
/// observation hop crosses instances (told apart by `service.instance.id`).
#[test]
fn two_instances_one_whole_trace_per_document() {
    let Some(services) = common::services() else { return };
    let Some(j) = jaeger() else { return };
    assert!(common::kcat_available(), "kcat not found: run scripts/install-system-deps.sh");
    let started = Instant::now();
    let setup = ServeSetup::fresh(&services, "traces_two");
    let service_name = format!("vex-lens-{}", setup.db);
    let producer_service = format!("producer-{}", setup.db);
    let env = [
        ("VEXLENS_TELEMETRY__EXPORT_ENABLED", "true"),
        ("VEXLENS_TELEMETRY__OTLP_ENDPOINT", j.otlp.as_str()),
        ("VEXLENS_TELEMETRY__SERVICE_NAME", service_name.as_str()),
        ("VEXLENS_KAFKA__CREATE_PARTITIONS", "4"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ];
    let mut a = Serve::start(&setup, "a", &env);
    let mut b = Serve::start(&setup, "b", &env);
    a.wait_ready(Duration::from_secs(60));
    b.wait_ready(Duration::from_secs(60));
    // Both instances hold partitions of both topics before anything is produced.
    let topics = [setup.topic.as_str(), setup.observations_topic.as_str()];
    let shared = common::wait_until(Duration::from_secs(30), || {
        topics.iter().all(|t| assigned(&a, t) > 0 && assigned(&b, t) > 0)
    });
    assert!(
        shared,
        "both instances must hold partitions of {topics:?}; logs:\n{}\n----\n{}",
        a.log_tail(),
        b.log_tail()
    );

    // Six documents, each with six packages (six observations) and its own producer span.
    let tmp = tempfile::tempdir().unwrap();
    let (docs, packages) = (6usize, 6usize);
    let mut traces = Vec::new();
    for d in 0..docs {
        let cve = format!("CVE-2099-{}", 7200 + d);
        let pkgs: Vec<String> = (0..packages).map(|p| format!("pkg:npm/two-{d}-{p}@1.0.0")).collect();
        let file = tmp.path().join(format!("{d}.json"));
        std::fs::write(&file, document_for(&cve, &pkgs)).unwrap();
        let (trace_id, span_id, header) = producer_span(100 + d as u64);
        export_producer_span(&j, &producer_service, &trace_id, &span_id);
        let key = format!("doc-{d}");
        common::kcat_produce_file(&services.brokers, &setup.topic, &key, &[("traceparent", header.as_str())], &file);
        traces.push((trace_id, span_id));
    }
    let stored = common::wait_for_stored_records(&mut a, &services.mongo_uri, &setup.db, docs * packages);
    assert_eq!(stored.len(), docs * packages);
    // SIGTERM flushes each instance's queued spans.
    assert!(a.terminate(Duration::from_secs(60)), "SIGTERM: a did not exit 0; log:\n{}", a.log_tail());
    assert!(b.terminate(Duration::from_secs(60)), "SIGTERM: b did not exit 0; log:\n{}", b.log_tail());

    let mut instances_seen = BTreeSet::new();
    let mut crossing = 0;
    for (trace_id, root_id) in &traces {
        let want = [
            ("produce vex.documents", 1),
            ("vex.document", 1),
            ("vex.route", 1),
            ("vex.observation", packages),
            ("vex.artifact.apply", packages),
            ("vex.store.write", packages),
        ];
        // Wait until the expected spans are there and every parent is in the trace.
        let deadline = Instant::now() + Duration::from_secs(30);
        let spans = loop {
            let (spans, _) = wait_for_trace(&j, trace_id, &want);
            let ids: BTreeSet<&str> = spans.iter().map(|s| s.id.as_str()).collect();
            let orphans: Vec<&JSpan> =
                spans.iter().filter(|s| s.parent.as_deref().is_some_and(|p| !ids.contains(p))).collect();
            if orphans.is_empty() {
                break spans;
            }
            assert!(Instant::now() < deadline, "trace {trace_id}: spans whose parent is not in the trace: {orphans:?}");
            std::thread::sleep(Duration::from_millis(500));
        };
        let roots: Vec<&JSpan> = spans.iter().filter(|s| s.parent.is_none()).collect();
        assert_eq!(roots.len(), 1, "trace {trace_id}: one root: {roots:?}");
        assert_eq!(roots[0].id, *root_id, "the producer's span is the root");
        assert_eq!(roots[0].service, producer_service);
        let document = one(&spans, "vex.document");
        assert_eq!(document.parent.as_deref(), Some(root_id.as_str()));
        let route = one(&spans, "vex.route");
        assert_eq!(parent_name(&spans, route), "vex.document");
        for o in spans.iter().filter(|s| s.name == "vex.observation") {
            assert_eq!(o.parent.as_deref(), Some(route.id.as_str()), "{o:?}");
        }
        let mut here = BTreeSet::new();
        for s in spans.iter().filter(|s| s.service == service_name) {
            let id = s.instance.clone().unwrap_or_else(|| panic!("no service.instance.id on {s:?}"));
            here.insert(id);
        }
        if here.len() > 1 {
            crossing += 1;
        }
        let by_name = |n: &str| {
            let ids: BTreeSet<String> =
                spans.iter().filter(|s| s.name == n).filter_map(|s| s.instance.clone()).collect();
            ids.into_iter().collect::<Vec<_>>().join("+")
        };
        eprintln!(
            "trace {trace_id}: {} spans; document on {}, observations on {}",
            spans.len(),
            by_name("vex.document"),
            by_name("vex.observation")
        );
        instances_seen.extend(here);
    }
    assert_eq!(instances_seen.len(), 2, "spans from exactly the two instances: {instances_seen:?}");
    assert!(crossing >= 1, "no trace holds spans of both instances (of {} traces)", traces.len());
    eprintln!("{crossing} of {} traces cross instances; {:?}", traces.len(), started.elapsed());

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(common::drop_db(&services.mongo_uri, &setup.db));
}

/// A loopback OTLP collector over TLS (rustls with ring): answers every request 200 and
/// keeps what it was sent; counts the handshakes that failed.
struct TlsCollector {
    port: u16,
    received: Arc<Mutex<Vec<u8>>>,
    failed_handshakes: Arc<AtomicUsize>,
}

impl TlsCollector {
    fn start(cert: rustls::pki_types::CertificateDer<'static>, key: rustls::pki_types::PrivateKeyDer<'static>) -> Self {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let config = Arc::new(config);
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let failed_handshakes = Arc::new(AtomicUsize::new(0));
        let (r, f) = (received.clone(), failed_handshakes.clone());
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let (r, f) = (r.clone(), f.clone());
                std::thread::spawn(move || {
                    // Requests on this connection: headers, then content-length bytes.
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 65536];
                    loop {
                        let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n");
                        if let Some(end) = head_end {
                            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                r.lock().unwrap().extend(buf.drain(..end + 4 + len));
                                let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                                if tls.write_all(ok).and_then(|_| tls.flush()).is_err() {
                                    return;
                                }
                                continue;
                            }
                        }
                        match tls.read(&mut chunk) {
                            Ok(0) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            Err(_) => {
                                if !tls.conn.is_handshaking() {
                                    return;
                                }
                                f.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        }
                    }
                });
            }
        });
        TlsCollector { port, received, failed_handshakes }
    }
}

/// Export to an `https://` collector: with its CA in `telemetry.otlp_ca_file` the spans
/// arrive over TLS (rustls with ring, no aws-lc); without it the certificate is not
/// trusted, nothing is sent in clear, and the failure is logged.
#[test]
fn spans_reach_a_tls_collector_whose_ca_is_configured() {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, "vex-lens test collector CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&leaf_key, &ca).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let collector = TlsCollector::start(leaf.der().clone(), key);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let endpoint = format!("https://localhost:{}", collector.port);

    let trusted = tempfile::tempdir().unwrap();
    let log = serve_once(
        trusted.path(),
        &[
            ("VEXLENS_TELEMETRY__EXPORT_ENABLED", "true"),
            ("VEXLENS_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("VEXLENS_TELEMETRY__OTLP_CA_FILE", ca_file.to_str().unwrap()),
            ("VEXLENS_TELEMETRY__SERVICE_NAME", "vex-lens-tls-check"),
        ],
    );
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    let got = common::wait_for("an OTLP export over TLS", Duration::from_secs(10), || {
        let r = collector.received.lock().unwrap().clone();
        (contains(&r, b"vex.document") && contains(&r, b"vex-lens-tls-check")).then_some(r)
    });
    assert!(got.starts_with(b"POST /v1/traces "), "{}", String::from_utf8_lossy(&got[..got.len().min(200)]));
    assert!(events(&log, "trace_export_failed").is_empty(), "{log}");

    // The same collector, its CA not configured: the platform's roots do not trust it.
    let before = collector.received.lock().unwrap().len();
    let untrusted = tempfile::tempdir().unwrap();
    let log = serve_once(
        untrusted.path(),
        &[
            ("VEXLENS_TELEMETRY__EXPORT_ENABLED", "true"),
            ("VEXLENS_TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("VEXLENS_TELEMETRY__EXPORT_TIMEOUT_MS", "2000"),
        ],
    );
    assert!(collector.failed_handshakes.load(Ordering::SeqCst) > 0, "the client refused the certificate");
    assert_eq!(collector.received.lock().unwrap().len(), before, "nothing sent to an untrusted collector");
    assert_eq!(events(&log, "trace_export_failed").len(), 1, "{log}");
}
