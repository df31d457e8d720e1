//! The consensus digest is recomputable by anyone: an independent RFC 8785
//! implementation (the PyPI package `rfc8785`, Trail of Bits) gets the same canonical
//! bytes and the same SHA-256 as `consensus_digest`, for every record of the shared corpus
//! (OpenVEX, CSAF, CycloneDX and part of vexhub) and for records holding strings RFC 8785
//! treats specially (control characters, non-BMP characters, U+2028, keys-like text).
//!
//! Setup: a venv in `$CARGO_TARGET_TMPDIR/jcs-venv` with
//! `integration-tests/jcs/requirements.txt` installed (reused on later runs). If the venv
//! or pip install fails (e.g. no network), the test FAILS with the pip output: it never
//! skips. `VEX_LENS_PYTHON` overrides the `python3` used to create the venv.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use vex_lens::domain::canonical;
use vex_lens::domain::consensus::{batch, ConsensusRecord};
use vex_lens::domain::model::{IngestContext, Observation};
use vex_lens::domain::normalise::{normalise_bytes, DEFAULT_MAX_DOCUMENT_BYTES};
use vex_lens::domain::trust::{Mode, Policy};

fn jcs_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("integration-tests/jcs")
}

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus")
}

fn output_text(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// The venv's python with `rfc8785` installed (created on first use).
fn venv_python() -> PathBuf {
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("jcs-venv");
    let python = venv.join("bin/python");
    let script = jcs_dir().join("jcs_digest.py");
    let ready = |python: &Path| {
        Command::new(python).arg(&script).arg("--version").output().map(|o| o.status.success()).unwrap_or(false)
    };
    if python.exists() && ready(&python) {
        return python;
    }
    let base = std::env::var("VEX_LENS_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&base)
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {base}: {e}"));
    assert!(out.status.success(), "`{base} -m venv {}` failed:\n{}", venv.display(), output_text(&out));
    let requirements = jcs_dir().join("requirements.txt");
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&requirements)
        .output()
        .expect("run pip");
    assert!(
        out.status.success(),
        "RFC 8785 interop setup failed (is PyPI reachable?): pip install -r {}:\n{}",
        requirements.display(),
        output_text(&out)
    );
    assert!(ready(&python), "rfc8785 installed but jcs_digest.py --version fails");
    python
}

fn observations_of(dir: &str, limit: usize) -> Vec<Observation> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus().join(dir))
        .unwrap_or_else(|e| panic!("corpus {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files.truncate(limit);
    let mut out = Vec::new();
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        let name = f.display().to_string();
        let doc = normalise_bytes(&name, &bytes, &IngestContext::default(), DEFAULT_MAX_DOCUMENT_BYTES)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        out.extend(doc.observations);
    }
    out
}

/// Records whose strings exercise RFC 8785's escaping and UTF-16 ordering rules.
fn awkward_records() -> Vec<ConsensusRecord> {
    let mut o = observations_of("openvex", 1).remove(0);
    o.impact_statement =
        Some("tab\t nul\u{0} bell\u{7} del\u{7f} quote\" backslash\\ slash/ \u{2028}\u{2029} é €".into());
    o.action_statement = Some("emoji \u{1f600} private-use \u{e000} \u{fffd} surrogate-pair order".into());
    o.issuer = Some("Ünïcode Vendor \u{10ffff}".into());
    // The statement text lives in the observation (joined by explain, not digested); the
    // aliases are the record's own, so the digested bytes hold the same awkward strings.
    o.aliases.push(o.impact_statement.clone().unwrap());
    o.aliases.push(o.action_statement.clone().unwrap());
    o.id = "".into();
    let o = o.with_id().unwrap();
    let (records, errors) =
        batch(vec![o], &Policy::new(Mode::WeightedVote, Default::default(), Default::default()), true);
    assert!(errors.is_empty(), "{errors:?}");
    records
}

#[test]
fn rfc8785_python_recomputes_every_corpus_digest() {
    let mut records = Vec::new();
    for (dir, limit) in [("openvex", usize::MAX), ("csaf", usize::MAX), ("cyclonedx", usize::MAX), ("vexhub", 4)] {
        let obs = observations_of(dir, limit);
        for mode in [Mode::WeightedVote, Mode::Lattice] {
            let (r, errors) =
                batch(obs.clone(), &Policy::new(mode, Default::default(), Default::default()), mode == Mode::Lattice);
            assert!(errors.is_empty(), "{dir}: {errors:?}");
            records.extend(r);
        }
    }
    records.extend(awkward_records());
    assert!(records.len() > 1_000, "only {} records", records.len());

    // Give Python the records as ordinary (pretty, non-canonical) JSON, so it canonicalises
    // them itself rather than echoing our bytes.
    let mut input = Vec::new();
    for r in &records {
        serde_json::to_writer(&mut input, &serde_json::to_value(r).unwrap()).unwrap();
        input.push(b'\n');
    }
    let mut child = Command::new(venv_python())
        .arg(jcs_dir().join("jcs_digest.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run jcs_digest.py");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("jcs_digest.py");
    writer.join().unwrap().expect("write records to python");
    assert!(out.status.success(), "jcs_digest.py failed:\n{}", output_text(&out));
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), records.len(), "one line per record");

    for (r, line) in records.iter().zip(lines) {
        let (digest, b64) = line.split_once(' ').expect("digest and bytes");
        let theirs = base64::engine::general_purpose::STANDARD.decode(b64).unwrap();
        let mut bare = r.clone();
        bare.consensus_digest.clear();
        bare.strip_explain();
        let ours = canonical::to_vec(&bare).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "RFC 8785 bytes differ for {} / {}",
            r.artifact,
            r.vulnerability
        );
        assert_eq!(digest, r.consensus_digest, "digest of {} / {}", r.artifact, r.vulnerability);
        assert_eq!(r.compute_digest().unwrap(), r.consensus_digest);
    }
}
