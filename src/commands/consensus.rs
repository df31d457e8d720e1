//! `vex-lens consensus` and `vex-lens normalise`: files in, records or observations out.

use crate::cli::{ConsensusArgs, InputArgs, NormaliseArgs, OutputFormat};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use vex_lens::domain::consensus::{batch, batch_each, ConsensusRecord};
use vex_lens::domain::model::{DiagnosticCode, IngestContext, Observation, Provenance};
use vex_lens::domain::normalise::normalise_bytes;
use vex_lens::domain::timestamp::Timestamp;
use vex_lens::domain::trust::{IssuerDirectory, Knobs, Policy};
use vex_lens::input;
use vex_lens::progress::{self, Progress, Summary};

/// What [`load_observations`] read.
pub struct Loaded {
    pub observations: Vec<Observation>,
    /// Input documents (those that failed included).
    pub documents: usize,
    /// Documents skipped by `--keep-going` (could not be read or normalised).
    pub failed: usize,
    /// Diagnostics by code.
    pub diagnostics: BTreeMap<String, u64>,
    /// Observations of the documents read (`observations` may be taken by the caller).
    pub observation_count: u64,
}

impl Loaded {
    /// The run's summary with the records it wrote (`None`: it writes no records).
    pub fn summary(&self, command: &'static str, records: Option<u64>, progress: &Progress) -> Summary {
        Summary {
            command,
            documents: Some(self.documents as u64),
            observations: Some(self.observation_count),
            records,
            diagnostics: Some(self.diagnostics.clone()),
            dead_letters: Some(self.failed as u64),
            elapsed: progress.elapsed(),
        }
    }
}

/// Reads and normalises every input document, counting documents and observations on
/// `progress`. Fails on the first bad document unless `--keep-going`. A `<document>.asc`
/// beside a document is its detached OpenPGP signature, judged against `directory`'s
/// certificates as the service judges it (`verifier::verify_openpgp`), so a document
/// gives the same observations here as through the watched directory or Kafka.
pub fn load_observations(args: &InputArgs, directory: &IssuerDirectory, progress: &Progress) -> anyhow::Result<Loaded> {
    let keys = vex_lens::crypto::KeyDirectory::from_directory(directory)?;
    let files = input::expand(&args.paths)?;
    if files.is_empty() {
        bail!(
            "no *.json documents found in {}",
            args.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        );
    }
    progress.set_length(files.len() as u64);
    let mut observations = Vec::new();
    let mut failed = 0usize;
    let mut diag_counts: BTreeMap<DiagnosticCode, u64> = BTreeMap::new();
    // Documents are read and normalised on every core, then taken in the order given
    // (the first bad one, in that order, is the one reported).
    use rayon::prelude::*;
    let normalised: Vec<_> = files
        .par_iter()
        .map(|f| {
            let name = f.display().to_string();
            let res = input::read_limited(f, args.max_document_bytes).map_err(anyhow::Error::from).and_then(|bytes| {
                let mut ctx = IngestContext {
                    tenant: Some(args.tenant.clone()),
                    provenance: Provenance { source: Some(name.clone()), ..Default::default() },
                    ..Default::default()
                };
                if let Some(asc) = input::read_signature_beside(f) {
                    let (signature, signed_issuer, _) = vex_lens::actors::verifier::verify_openpgp(&bytes, &asc, &keys);
                    ctx.signature = signature;
                    ctx.signed_issuer = signed_issuer;
                }
                normalise_bytes(&name, &bytes, &ctx, args.max_document_bytes).map_err(anyhow::Error::from)
            });
            if let Ok(doc) = &res {
                progress.observations(doc.observations.len() as u64);
            }
            progress.documents_read(1);
            (name, res)
        })
        .collect();
    for (name, res) in normalised {
        match res {
            Ok(doc) => {
                for d in &doc.diagnostics {
                    if args.verbose {
                        progress::suspend(|| eprintln!("warning: {name}: {}: {}", d.code, d.message));
                    }
                    *diag_counts.entry(d.code).or_default() += 1;
                }
                observations.extend(doc.observations);
            }
            Err(e) if args.keep_going => {
                progress::suspend(|| eprintln!("error: {e:#} (skipped)"));
                failed += 1;
            }
            Err(e) => return Err(e.context("use --keep-going to skip bad documents")),
        }
    }
    if !args.verbose && !diag_counts.is_empty() {
        progress::suspend(|| eprintln!("note: -v lists each diagnostic"));
    }
    let observation_count = observations.len() as u64;
    Ok(Loaded {
        observations,
        documents: files.len(),
        failed,
        diagnostics: diag_counts.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        observation_count,
    })
}

/// The policy of a CLI run: the knobs of the configuration file (`--config`, else
/// `$VEXLENS_CONFIG`, else `./config/default.toml`, else built-in defaults) and the issuer
/// directory (`--issuers`, else `./config/issuers.toml`, else none); says on stderr which
/// it used, since another configuration gives other weights, digests and answers.
pub fn cli_policy(
    mode: vex_lens::domain::trust::Mode,
    issuers: Option<&Path>,
    config: Option<&Path>,
) -> anyhow::Result<Policy> {
    let location = vex_lens::config::Config::locate(config)?;
    let knobs = match &location.file {
        Some(p) => load_knobs(Some(p))?,
        None => Knobs::default(),
    };
    let default = Path::new("config/issuers.toml");
    let issuers_path = issuers.or(default.exists().then_some(default));
    let directory = load_directory(issuers_path)?;
    let issuer_text = match issuers_path {
        Some(p) => format!("{} ({} issuers)", p.display(), directory.issuers.len()),
        None => "none (no --issuers, no ./config/issuers.toml: every issuer unknown)".to_string(),
    };
    eprintln!("vex-lens: configuration: {location}; issuer directory: {issuer_text}");
    Ok(Policy::new(mode, directory, knobs))
}

/// Loads the consensus knobs from a TOML file's `[consensus.knobs]` table.
pub fn load_knobs(path: Option<&Path>) -> anyhow::Result<Knobs> {
    let default = Path::new("config/default.toml");
    let path = match path {
        Some(p) => p,
        None if default.exists() => default,
        None => return Ok(Knobs::default()),
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let knobs: Knobs = match file.get("consensus").and_then(|c| c.get("knobs")) {
        Some(v) => v.clone().try_into().with_context(|| format!("{}: [consensus.knobs]", path.display()))?,
        None => Knobs::default(),
    };
    knobs.validate()?;
    Ok(knobs)
}

/// Loads the issuer directory.
pub fn load_directory(path: Option<&Path>) -> anyhow::Result<IssuerDirectory> {
    let default = Path::new("config/issuers.toml");
    let path = match path {
        Some(p) => p,
        None if default.exists() => default,
        None => return Ok(IssuerDirectory::default()),
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(IssuerDirectory::from_str(&path.display().to_string(), &text)?)
}

pub fn run(args: ConsensusArgs) -> anyhow::Result<ExitCode> {
    let as_of = match &args.as_of {
        Some(s) => Some(Timestamp::parse(s).context("--as-of")?),
        None => None,
    };
    let policy = cli_policy(args.mode, args.issuers.as_deref(), args.config.as_deref())?.with_as_of(as_of);
    let progress = Progress::start(None);
    let mut loaded = load_observations(&args.input, &policy.directory, &progress)?;
    let observations = std::mem::take(&mut loaded.observations);
    let stdout = std::io::stdout();
    // Records are ~4 KiB each: a large buffer writes them in few system calls.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
    let (errors, records) = if args.format == OutputFormat::Ndjson {
        // Each record becomes its canonical JSON as soon as it is evaluated and is written
        // out in order: neither the records nor their lines are ever all held at once.
        let mut written = Ok(());
        let mut records = 0u64;
        let errors = batch_each(
            observations,
            &policy,
            args.explain,
            |r| r.into_canonical_json(),
            |_, line| {
                if written.is_ok() {
                    written = out.write_all(line.as_bytes()).and_then(|()| out.write_all(b"\n"));
                    records += 1;
                    progress.records(1);
                }
            },
        );
        written?;
        (errors, records)
    } else {
        let (records, errors) = batch(observations, &policy, args.explain);
        progress.records(records.len() as u64);
        write_records(&mut out, &records, args.format)?;
        (errors, records.len() as u64)
    };
    for e in &errors {
        progress::suspend(|| eprintln!("warning: {e}"));
    }
    out.flush()?;
    progress.finish();
    loaded.summary("consensus", Some(records), &progress).print();
    Ok(ExitCode::SUCCESS)
}

pub fn write_records<W: Write>(out: &mut W, records: &[ConsensusRecord], format: OutputFormat) -> anyhow::Result<()> {
    match format {
        OutputFormat::Ndjson => {
            for r in records {
                writeln!(out, "{}", r.to_canonical_json()?)?;
            }
        }
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, records)?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            let rows: Vec<[String; 6]> = records
                .iter()
                .map(|r| {
                    let status = match (r.status.as_str(), r.leading_status) {
                        (s @ ("disputed" | "inconclusive"), Some(l)) => format!("{s}({})", l.as_str()),
                        (s, _) => s.to_string(),
                    };
                    let conflicts: Vec<&str> = r.conflicts.iter().map(|c| c.reason.as_str()).collect();
                    [
                        r.artifact.clone(),
                        r.vulnerability.clone(),
                        status,
                        r.confidence_decimal(3),
                        r.statements.len().to_string(),
                        if conflicts.is_empty() { "-".to_string() } else { conflicts.join(",") },
                    ]
                })
                .collect();
            let header = ["ARTIFACT", "VULNERABILITY", "STATUS", "CONFIDENCE", "STMTS", "CONFLICTS"].map(String::from);
            let mut w = [0usize; 6];
            for row in std::iter::once(&header).chain(rows.iter()) {
                for (i, c) in row.iter().enumerate() {
                    w[i] = w[i].max(c.chars().count());
                }
            }
            for row in std::iter::once(&header).chain(rows.iter()) {
                writeln!(
                    out,
                    "{:<w0$}  {:<w1$}  {:<w2$}  {:>w3$}  {:>w4$}  {}",
                    row[0],
                    row[1],
                    row[2],
                    row[3],
                    row[4],
                    row[5],
                    w0 = w[0],
                    w1 = w[1],
                    w2 = w[2],
                    w3 = w[3],
                    w4 = w[4]
                )?;
            }
        }
    }
    Ok(())
}

pub fn run_normalise(args: NormaliseArgs) -> anyhow::Result<ExitCode> {
    let progress = Progress::start(None);
    // The issuer directory of ./config/issuers.toml (if any) judges `.asc` signatures.
    let mut loaded = load_observations(&args.input, &load_directory(None)?, &progress)?;
    let mut observations = std::mem::take(&mut loaded.observations);
    observations.sort_by(|a, b| a.id.cmp(&b.id));
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for o in &observations {
        let mut o = o.clone();
        o.provenance = Provenance::default();
        writeln!(out, "{}", vex_lens::domain::canonical::to_string(&o)?)?;
    }
    out.flush()?;
    progress.finish();
    loaded.summary("normalise", None, &progress).print();
    Ok(ExitCode::SUCCESS)
}
