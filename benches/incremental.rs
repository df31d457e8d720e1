//! `cargo bench --bench incremental [-- --copies K --docs N]`: the per-package state as the
//! artifact actors hold it, at scale. Figures, not pass/fail.
//!
//! Workload: the vexhub corpus (`../shared/corpus/vexhub`, or `$VEXLENS_CORPUS/vexhub`)
//! normalised once, then `K` copies of its observations with the package names rewritten
//! (copy `k` of package `P` is `P-c<k/G>-b<b>`, where `b` splits each package in four by
//! vulnerability, so 66 copies make >= 10 k packages) and, so that grouped copies stay distinct
//! statements, the vulnerability ids too (`<id>.<k%G>`). With G = 1 every copy is its own
//! package (the 1x workload: K x the corpus's packages); with G = 10 ten copies share a
//! package, so each package holds 10x the statements and 10x the pairs (the 10x workload)
//! while each pair keeps the corpus's statements. Observations are generated on the fly
//! (the workload never sits in memory) in copy order, each applied to its package state,
//! then every pair it changed evaluated (no explain), as `ArtifactActor` does.
//!
//! Printed: per changed pair, the median and p99 of (apply + evaluations) / pairs changed,
//! for both workloads and their ratio (flat: 10x / 1x <= 1.5); and the memory per live
//! pair: the RSS growth over the 1x run divided by the pairs the states hold.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;
use vex_lens::domain::consensus::PackageState;
use vex_lens::domain::model::{IngestContext, Observation};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::trust::Policy;

struct Args {
    copies: usize,
    docs: usize,
}

fn args() -> Args {
    let mut a = Args { copies: 66, docs: usize::MAX };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--copies" => a.copies = it.next().and_then(|v| v.parse().ok()).expect("--copies N"),
            "--docs" => a.docs = it.next().and_then(|v| v.parse().ok()).expect("--docs N"),
            _ => {} // cargo bench passes --bench
        }
    }
    a
}

/// Resident set size of this process, in bytes (Linux `/proc/self/statm`).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn corpus() -> Vec<Observation> {
    let root = std::env::var_os("VEXLENS_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    let mut paths: Vec<_> =
        std::fs::read_dir(root.join("vexhub")).expect("vexhub corpus").map(|e| e.unwrap().path()).collect();
    paths.sort();
    let mut obs = Vec::new();
    for p in paths.iter().take(args().docs) {
        let bytes = std::fs::read(p).unwrap();
        let name = p.display().to_string();
        obs.extend(
            normalise_bytes(&name, &bytes, &IngestContext::default(), DEFAULT_MAX_DOCUMENT_BYTES).unwrap().observations,
        );
    }
    obs
}

/// Packages each corpus package is split into, by vulnerability (vexhub has 54 packages:
/// 66 copies x 4 give >= 10 k packages at 1x).
const SPLIT: usize = 4;

/// Copy `k` of `o` for group size `g` (see the module docs), with its id computed.
fn rewrite(o: &Observation, k: usize, g: usize) -> Observation {
    let mut c = o.clone();
    let bucket = o.vulnerability.bytes().map(usize::from).sum::<usize>() % SPLIT;
    let package = format!("{}-c{}-b{bucket}", o.package, k / g);
    c.artifact = match o.artifact.strip_prefix(&*o.package) {
        Some(rest) => format!("{package}{rest}").into(),
        None => panic!("artifact {} does not start with its package {}", o.artifact, o.package),
    };
    c.package = package.into();
    let s = k % g;
    c.vulnerability = format!("{}.{s}", o.vulnerability).into();
    c.aliases = o.aliases.iter().map(|a| format!("{a}.{s}").into()).collect();
    c.id = c.compute_id().expect("identifiable").into();
    c
}

struct Run {
    observations: usize,
    packages: usize,
    pairs_changed: usize,
    per_pair_ns: Vec<u64>,
    pairs_held: usize,
    rss_growth: u64,
    seconds: f64,
}

fn run(corpus: &[Observation], copies: usize, group: usize, policy: &Policy) -> Run {
    // Touched before the baseline, so the samples are not counted as state.
    let mut per_pair_ns: Vec<u64> = vec![1; corpus.len() * copies];
    per_pair_ns.clear();
    let rss0 = rss_bytes();
    let mut states: HashMap<String, PackageState> = HashMap::new();
    let mut pairs_changed = 0usize;
    let t = Instant::now();
    for k in 0..copies {
        for o in corpus {
            let c = rewrite(o, k, group);
            let t0 = Instant::now();
            let s = states.entry(c.package.to_string()).or_default();
            let changed = s.apply(c).expect("applies");
            for p in &changed {
                let _ = std::hint::black_box(s.evaluate(p, policy, false));
            }
            let dt = t0.elapsed().as_nanos() as u64;
            if !changed.is_empty() {
                per_pair_ns.push(dt / changed.len() as u64);
                pairs_changed += changed.len();
            }
        }
    }
    let seconds = t.elapsed().as_secs_f64();
    let rss_growth = rss_bytes().saturating_sub(rss0);
    let pairs_held = states.values().map(|s| s.pairs().len()).sum();
    Run {
        observations: corpus.len() * copies,
        packages: states.len(),
        pairs_changed,
        per_pair_ns,
        pairs_held,
        rss_growth,
        seconds,
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a = args();
    let corpus = corpus();
    let policy = Policy::default();
    println!(
        "incremental: {} corpus observations x {} copies; 1x = one package per copy, 10x = ten copies per package",
        corpus.len(),
        a.copies
    );
    let mut medians = Vec::new();
    for group in [1usize, 10] {
        let mut r = run(&corpus, a.copies, group, &policy);
        r.per_pair_ns.sort_unstable();
        let median = percentile(&r.per_pair_ns, 0.5);
        medians.push(median);
        println!(
            "{}x: {} observations over {} packages in {:.1} s; {} pair evaluations; per changed pair median {:.1} us, p99 {:.1} us (target median <= 20 us)",
            group,
            r.observations,
            r.packages,
            r.seconds,
            r.pairs_changed,
            median as f64 / 1e3,
            percentile(&r.per_pair_ns, 0.99) as f64 / 1e3
        );
        if group == 1 {
            println!(
                "memory: {} pairs held, RSS growth {:.1} MiB = {:.0} bytes per live pair (target <= 1024)",
                r.pairs_held,
                r.rss_growth as f64 / 1048576.0,
                r.rss_growth as f64 / r.pairs_held.max(1) as f64
            );
        }
        drop(r);
    }
    println!(
        "flat: median at 10x / median at 1x = {:.2} (target <= 1.5)",
        medians[1] as f64 / medians[0].max(1) as f64
    );
}
