//! Right answers on a real distro CSAF feed (issue 17), from CIQ's published CSAF VEX
//! (`../shared/corpus/csaf-ciq/`) through normalisation and the batch consensus, each
//! case built by changing one real document the way a publisher could:
//! * a document listing one product in two `product_status` lists (CSAF mandatory test
//!   6.1.6) gets the more conservative status and a `status_disagreement` conflict.

use serde_json::Value;
use vex_lens::domain::consensus::{batch, ConflictReason, ConsensusRecord, ConsensusStatus};
use vex_lens::domain::model::{IngestContext, Observation};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::trust::{Mode, Policy};

const CIQ: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/corpus/csaf-ciq");

fn ciq(name: &str) -> Value {
    let path = format!("{CIQ}/{name}");
    serde_json::from_slice(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
}

fn norm(name: &str, doc: &Value) -> Vec<Observation> {
    let bytes = serde_json::to_vec(doc).unwrap();
    normalise_bytes(name, &bytes, &IngestContext::default(), DEFAULT_MAX_DOCUMENT_BYTES)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .observations
}

fn records(docs: &[(&str, &Value)]) -> Vec<ConsensusRecord> {
    let obs: Vec<Observation> = docs.iter().flat_map(|(n, d)| norm(n, d)).collect();
    let (r, errors) = batch(obs, &Policy::new(Mode::WeightedVote, Default::default(), Default::default()), false);
    assert!(errors.is_empty(), "{errors:?}");
    r
}

/// `product_status[list]` of the first vulnerability.
fn status_list<'a>(doc: &'a mut Value, list: &str) -> &'a mut Vec<Value> {
    let ps = doc["vulnerabilities"][0]["product_status"].as_object_mut().unwrap();
    ps.entry(list).or_insert_with(|| Value::Array(vec![])).as_array_mut().unwrap()
}

#[test]
fn a_product_in_two_status_lists_of_one_document_is_conservative_with_a_conflict() {
    // CVE-2024-38286: pki-servlet-engine on CIQ LTS 9.2 and 9.4, both known_not_affected.
    let mut doc = ciq("cve-2024-38286.json");
    let id = Value::from("lts-9.2:pki-servlet-engine");
    assert!(status_list(&mut doc, "known_not_affected").contains(&id));
    let plain = records(&[("plain.json", &doc)]);
    let engine = |rs: &[ConsensusRecord]| -> Vec<ConsensusRecord> {
        rs.iter().filter(|r| r.artifact.contains("pki-servlet-engine")).cloned().collect()
    };
    assert!(engine(&plain).iter().all(|r| r.status == ConsensusStatus::NotAffected && r.conflicts.is_empty()));
    // The same product also in known_affected (CSAF 6.1.6 forbids it; feeds do it).
    status_list(&mut doc, "known_affected").push(id);
    let both = engine(&records(&[("both.json", &doc)]));
    assert!(!both.is_empty());
    let on_92: Vec<&ConsensusRecord> =
        both.iter().filter(|r| r.statements.iter().any(|s| s.status.as_str() == "affected")).collect();
    assert!(!on_92.is_empty(), "{both:#?}");
    for r in on_92 {
        assert_eq!(r.status, ConsensusStatus::Affected, "{}", r.artifact);
        assert_eq!(r.confidence_ppm, 1_000_000);
        let c = r.conflicts.iter().find(|c| c.reason == ConflictReason::StatusDisagreement).expect("a conflict");
        assert!(c.detail.contains("within one document"), "{}", c.detail);
        assert!(
            c.detail.contains("affected in sha256:") && c.detail.contains("not_affected in sha256:"),
            "{}",
            c.detail
        );
    }
}
