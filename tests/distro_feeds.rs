//! Right answers on a real distro CSAF feed (issue 17), from CIQ's published CSAF VEX
//! (`../shared/corpus/csaf-ciq/`) through normalisation and the batch consensus, each
//! case built by changing one real document the way a publisher could:
//! * a document listing one product in two `product_status` lists (CSAF mandatory test
//!   6.1.6) gets the more conservative status and a `status_disagreement` conflict;
//! * a package on a platform is its own artifact: every stated (relationship product,
//!   CVE) of the feed has its own key, no record counts statements about two platforms,
//!   and an `affected` platform is never hidden behind another platform's
//!   `not_affected`.

use serde_json::Value;
use vex_lens::domain::consensus::{batch, ConflictReason, ConsensusRecord, ConsensusStatus, Role};
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

const STATUS_LISTS: [&str; 7] = [
    "known_affected",
    "first_affected",
    "last_affected",
    "fixed",
    "first_fixed",
    "known_not_affected",
    "under_investigation",
];

fn ciq_names() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(CIQ)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    names
}

/// The platform qualifier of a key (`distro=` or `platform=`), read without the product's
/// key parser.
fn platform_of(key: &str) -> Option<&str> {
    let q = key.split_once('?')?.1;
    q.split('&').find(|kv| kv.starts_with("distro=") || kv.starts_with("platform="))
}

#[test]
fn every_stated_package_on_a_platform_is_its_own_artifact_and_no_record_mixes_platforms() {
    let mut stated = std::collections::BTreeSet::new();
    let mut keyed = std::collections::BTreeSet::new();
    let mut docs = Vec::new();
    for name in ciq_names() {
        let doc = ciq(&name);
        // Independently of the normaliser: every (relationship product id, CVE) stated.
        let rel_ids: std::collections::BTreeSet<&str> = doc["product_tree"]["relationships"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["full_product_name"]["product_id"].as_str()).collect())
            .unwrap_or_default();
        for v in doc["vulnerabilities"].as_array().unwrap() {
            let cve = v["cve"].as_str().unwrap().to_string();
            for list in STATUS_LISTS {
                for pid in v["product_status"][list].as_array().into_iter().flatten() {
                    let pid = pid.as_str().unwrap();
                    if rel_ids.contains(pid) {
                        stated.insert((name.clone(), pid.to_string(), cve.clone()));
                    }
                }
            }
        }
        for o in norm(&name, &doc) {
            if platform_of(&o.artifact).is_some() {
                keyed.insert((name.clone(), o.artifact.to_string(), o.vulnerability.to_string()));
            }
        }
        docs.push((name, doc));
    }
    assert!(stated.len() > 800, "{} stated", stated.len());
    // One key per stated (product on a platform, CVE): no two platforms collapse.
    assert_eq!(keyed.len(), stated.len());
    let refs: Vec<(&str, &Value)> = docs.iter().map(|(n, d)| (n.as_str(), d)).collect();
    let all = records(&refs);
    for r in &all {
        let own = platform_of(&r.artifact);
        for s in &r.statements {
            let theirs = platform_of(&s.artifact);
            assert!(theirs.is_none() || theirs == own, "{} counts a statement about {}", r.artifact, s.artifact);
        }
        assert!(r.statements.iter().all(|s| s.role != Role::Superseded), "{}: {:?}", r.artifact, r.statements);
    }
}

#[test]
fn an_affected_platform_is_not_hidden_by_another_platforms_not_affected() {
    // CVE-2024-38286: pki-servlet-engine known_not_affected on CIQ LTS 9.2 and 9.4; the 9.4
    // claim changed to known_affected (the case that gave not_affected at 1.000 before).
    let mut doc = ciq("cve-2024-38286.json");
    let id = Value::from("lts-9.4:pki-servlet-engine");
    status_list(&mut doc, "known_not_affected").retain(|x| *x != id);
    status_list(&mut doc, "known_affected").push(id);
    let rs: Vec<ConsensusRecord> =
        records(&[("hidden.json", &doc)]).into_iter().filter(|r| r.artifact.contains("pki-servlet-engine")).collect();
    let by_platform: Vec<(Option<&str>, ConsensusStatus, u64)> =
        rs.iter().map(|r| (platform_of(&r.artifact), r.status, r.confidence_ppm)).collect();
    assert_eq!(
        by_platform,
        [
            (Some("distro=rocky-9.2"), ConsensusStatus::NotAffected, 1_000_000),
            (Some("distro=rocky-9.4"), ConsensusStatus::Affected, 1_000_000),
        ],
        "{rs:#?}"
    );
    assert!(rs.iter().all(|r| r.conflicts.is_empty() && r.statements.len() == 1));
}
