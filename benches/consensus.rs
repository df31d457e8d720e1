//! `cargo bench --bench consensus`: prints throughput figures of the pure core on the
//! shared corpus (normalisation, batch consensus, incremental application as the
//! per-package actors do it). Figures, not pass/fail: compare runs on one machine.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use vex_lens::domain::consensus::{batch, PackageState};
use vex_lens::domain::model::{IngestContext, Observation};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::trust::Policy;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus");
    let mut docs: Vec<(String, Vec<u8>)> = Vec::new();
    for dir in ["openvex", "csaf", "cyclonedx", "vexhub"] {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir)).expect("corpus").map(|e| e.unwrap().path()).collect();
        paths.sort();
        for p in paths {
            docs.push((p.display().to_string(), std::fs::read(&p).unwrap()));
        }
    }
    let bytes: usize = docs.iter().map(|d| d.1.len()).sum();
    let policy = Policy::default();

    let t = Instant::now();
    let mut obs: Vec<Observation> = Vec::new();
    for (name, b) in &docs {
        obs.extend(
            normalise_bytes(name, b, &IngestContext::default(), DEFAULT_MAX_DOCUMENT_BYTES).unwrap().observations,
        );
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "normalise: {} documents, {:.1} MiB, {} observations in {:.3} s ({:.0} observations/s, {:.1} MiB/s)",
        docs.len(),
        bytes as f64 / 1048576.0,
        obs.len(),
        dt,
        obs.len() as f64 / dt,
        bytes as f64 / 1048576.0 / dt
    );

    let t = Instant::now();
    let (records, _) = batch(obs.clone(), &policy, false);
    let dt = t.elapsed().as_secs_f64();
    println!("batch consensus: {} records in {:.3} s ({:.0} records/s)", records.len(), dt, records.len() as f64 / dt);

    // Incremental, as the actors do it: apply, then re-evaluate only the changed pairs.
    let t = Instant::now();
    let mut states: BTreeMap<String, PackageState> = BTreeMap::new();
    let mut evaluations = 0usize;
    for o in &obs {
        let s = states.entry(o.package.to_string()).or_default();
        for pair in s.apply(o.clone()).unwrap() {
            let _ = s.evaluate(&pair, &policy, false);
            evaluations += 1;
        }
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "incremental: {} observations, {} pair evaluations in {:.3} s ({:.0} observations/s, {:.1} us/observation)",
        obs.len(),
        evaluations,
        dt,
        obs.len() as f64 / dt,
        dt * 1e6 / obs.len() as f64
    );
}
