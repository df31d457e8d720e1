//! Malformed or hostile input gets a typed error naming the document and the problem,
//! and never panics.

use proptest::prelude::*;
use vex_lens::domain::model::IngestContext;
use vex_lens::domain::normalise::{normalise_bytes, NormaliseError};

fn norm(bytes: &[u8]) -> Result<vex_lens::domain::model::NormalisedDocument, NormaliseError> {
    normalise_bytes("doc.json", bytes, &IngestContext::default(), 1 << 20)
}

#[test]
fn not_json() {
    let e = norm(b"\x00\x01garbage").unwrap_err();
    assert!(matches!(e, NormaliseError::NotJson { .. }));
    assert_eq!(e.code().as_str(), "invalid_json");
    assert!(e.to_string().starts_with("doc.json: not valid JSON"), "{e}");
}

#[test]
fn json_that_is_not_vex() {
    for doc in [&b"{\"hello\": 1}"[..], b"[1,2,3]", b"\"string\"", b"{\"bomFormat\": \"SPDX\"}"] {
        let e = norm(doc).unwrap_err();
        assert_eq!(e.code().as_str(), "not_vex", "{e}");
    }
}

#[test]
fn too_large() {
    let big = vec![b' '; (1 << 20) + 1];
    let e = norm(&big).unwrap_err();
    assert!(matches!(e, NormaliseError::TooLarge { size, limit, .. } if size == (1 << 20) + 1 && limit == 1 << 20));
}

#[test]
fn deeply_nested() {
    let mut s = String::from(r#"{"@context":"https://openvex.dev/ns/v0.2.0","statements":"#);
    s.push_str(&"[".repeat(100_000));
    s.push_str(&"]".repeat(100_000));
    s.push('}');
    let e = norm(s.as_bytes()).unwrap_err();
    assert!(matches!(e, NormaliseError::NotJson { .. }), "{e}");
    assert!(e.to_string().contains("recursion limit"), "{e}");
}

#[test]
fn wrong_types_and_missing_fields_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (r#"{"@context":"https://openvex.dev/ns/v0.2.0"}"#, "statements"),
        (
            r#"{"@context":"https://openvex.dev/ns/v0.2.0","statements":[{"vulnerability":{"name":"CVE-1"},"products":"pkg:npm/a","status":"fixed"}]}"#,
            "statements[0].products",
        ),
        (r#"{"@context":"https://openvex.dev/ns/v0.2.0","timestamp":12,"statements":[]}"#, "timestamp"),
        (
            r#"{"document":{"category":"csaf_vex","csaf_version":"2.0","tracking":{"current_release_date":"2024-01-01T00:00:00Z"}},"vulnerabilities":[{"cve":"CVE-1","product_status":{"fixed":"X"}}]}"#,
            "product_status",
        ),
        (
            r#"{"bomFormat":"CycloneDX","specVersion":"1.5","vulnerabilities":[{"id":"CVE-1","analysis":{"state":"exploded"},"affects":[{"ref":"x"}]}]}"#,
            "state",
        ),
        (r#"{"bomFormat":"CycloneDX","specVersion":"1.5","vulnerabilities":{"id":"CVE-1"}}"#, "vulnerabilities"),
    ];
    for (doc, field) in cases {
        let e = norm(doc.as_bytes()).unwrap_err();
        assert!(matches!(e, NormaliseError::InvalidField { .. }), "{doc}: {e}");
        assert!(e.to_string().contains(field), "{doc}: error {e} should name {field}");
        assert!(e.to_string().starts_with("doc.json:"), "{e}");
    }
}

fn corpus_doc(rel: &str) -> serde_json::Value {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus").join(rel);
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

/// Replaces the `n`-th node (pre-order) of `v` with `with`.
fn replace_nth(v: &mut serde_json::Value, n: &mut usize, with: &serde_json::Value) -> bool {
    if *n == 0 {
        *v = with.clone();
        return true;
    }
    *n -= 1;
    match v {
        serde_json::Value::Array(a) => a.iter_mut().any(|x| replace_nth(x, n, with)),
        serde_json::Value::Object(o) => o.values_mut().any(|x| replace_nth(x, n, with)),
        _ => false,
    }
}

fn hostile_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,40}".prop_map(serde_json::Value::from),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!(["pkg:", "cpe:", "urn:cdx:", "vers:x/", {"@id": 5}])),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = norm(&bytes);
    }

    #[test]
    fn mutated_real_documents_never_panic(
        which in 0..4usize,
        node in 0..400usize,
        with in hostile_value(),
    ) {
        let rel = ["openvex/go-vex_v0.2.0.json", "csaf/go-vex_csaf-relationships.json",
                   "cyclonedx/CISA-Use-Cases_Case-7_vex.json", "openvex/vexctl_sample-history.openvex.json"][which];
        let mut doc = corpus_doc(rel);
        let mut n = node;
        replace_nth(&mut doc, &mut n, &with);
        let bytes = serde_json::to_vec(&doc).unwrap();
        match norm(&bytes) {
            Ok(d) => for o in d.observations { prop_assert!(!o.id.is_empty()); },
            Err(e) => prop_assert!(e.to_string().starts_with("doc.json:")),
        }
    }
}
