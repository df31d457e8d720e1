//! The JSON schemas in schemas/ describe exactly what the code emits: every record and
//! observation of the corpus and the examples validates (additionalProperties is false,
//! so an undocumented field fails too).

use std::path::Path;
use vex_lens::domain::consensus::batch;
use vex_lens::domain::model::IngestContext;
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::trust::Policy;

fn schema(name: &str) -> jsonschema::Validator {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas").join(name);
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    jsonschema::validator_for(&v).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn records_and_observations_validate_against_their_schemas() {
    let records = schema("consensus-record.schema.json");
    let observations = schema("observation.schema.json");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<std::path::PathBuf> = Vec::new();
    for dir in ["examples", "../shared/corpus/openvex", "../shared/corpus/csaf", "../shared/corpus/cyclonedx"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            files.push(e.unwrap().path());
        }
    }
    files.sort();
    let mut obs = Vec::new();
    for f in &files {
        let doc = normalise_bytes(
            &f.display().to_string(),
            &std::fs::read(f).unwrap(),
            &IngestContext::default(),
            DEFAULT_MAX_DOCUMENT_BYTES,
        )
        .unwrap();
        obs.extend(doc.observations);
    }
    for o in &obs {
        let v = serde_json::to_value(o).unwrap();
        if let Err(e) = observations.validate(&v) {
            panic!("observation {} does not match its schema: {e}", o.id);
        }
    }
    let (out, _) = batch(obs, &Policy::default(), true);
    assert!(out.len() > 100);
    for r in &out {
        let v = serde_json::to_value(r).unwrap();
        if let Err(e) = records.validate(&v) {
            panic!("record {} {} does not match its schema: {e}", r.artifact, r.vulnerability);
        }
    }
    // A record with an undocumented field must fail.
    let mut v = serde_json::to_value(&out[0]).unwrap();
    v["surprise"] = serde_json::json!(1);
    assert!(records.validate(&v).is_err());
}
