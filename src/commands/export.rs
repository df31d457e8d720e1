//! `vex-lens export`: a consensus bundle from VEX files (`--from`), MongoDB (`--mongo-uri`)
//! or the embedded store (`--data-dir`).

use crate::cli::{ExportArgs, ExportFormatArg, InputArgs};
use crate::commands::consensus::load_observations;
use anyhow::{bail, Context};
use std::process::ExitCode;
use vex_lens::crypto::SigningKey;
use vex_lens::domain::consensus::{batch, StatementText};
use vex_lens::domain::timestamp::Timestamp;
use vex_lens::export::{
    export_from_store, filter_since, write_bundle, ExportFormat, ExportRequest, ExportSummary, StatementTexts,
};
use vex_lens::stores::embedded::EmbeddedStore;
use vex_lens::stores::mongo::MongoStore;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread().enable_all().build()?)
}

/// `--since`: RFC 3339, or milliseconds since the epoch.
pub fn parse_since(s: &str) -> anyhow::Result<Timestamp> {
    let t = s.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        let ms: i64 = t.parse().context("--since: milliseconds out of range")?;
        return Ok(Timestamp::from_unix_nanos(ms as i128 * 1_000_000, 3));
    }
    Timestamp::parse(t).with_context(|| format!("--since {s:?}: expected RFC 3339 or milliseconds since the epoch"))
}

fn load_signer(args: &ExportArgs) -> anyhow::Result<Option<SigningKey>> {
    let Some(p) = &args.sign_key else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
    Ok(Some(SigningKey::from_pem(&text).with_context(|| format!("{}: not a usable private key", p.display()))?))
}

pub fn run(args: ExportArgs) -> anyhow::Result<ExitCode> {
    let format = match args.format {
        ExportFormatArg::Json => ExportFormat::Json,
        ExportFormatArg::Ndjson => ExportFormat::Ndjson,
        ExportFormatArg::Openvex => ExportFormat::Openvex,
    };
    let since = args.since.as_deref().map(parse_since).transpose()?;
    // Load the key first: a bad key must fail before anything is written.
    let signer = load_signer(&args)?;
    let mut req = ExportRequest {
        format,
        manifest: args.manifest.clone(),
        out_dir: args.out.clone(),
        tenant: args.tenant.clone(),
        since,
        source: String::new(),
        created_at: None,
    };
    let progress = vex_lens::progress::Progress::start(None);
    // What `--from` read (an export from a store reads no document).
    let mut read = None;
    let summary = if !args.from.is_empty() {
        req.source = "files".into();
        let tenant = args.tenant.clone().unwrap_or_else(|| "default".into());
        req.tenant = Some(tenant.clone());
        let as_of = args.as_of.as_deref().map(Timestamp::parse).transpose().context("--as-of")?;
        let policy =
            crate::commands::consensus::cli_policy(args.mode, args.issuers.as_deref(), args.config.as_deref())?
                .with_as_of(as_of);
        let input = InputArgs {
            paths: args.from.clone(),
            tenant,
            keep_going: args.keep_going,
            max_document_bytes: args.max_document_bytes,
            verbose: args.verbose,
        };
        let mut loaded = load_observations(&input, &policy.directory, &progress)?;
        let observations = std::mem::take(&mut loaded.observations);
        // The statement text the OpenVEX snapshot joins (the observations go to the batch).
        let texts: StatementTexts = match format {
            ExportFormat::Openvex => observations.iter().map(|o| (o.id.clone(), StatementText::from(o))).collect(),
            ExportFormat::Json | ExportFormat::Ndjson => StatementTexts::new(),
        };
        let (records, errors) = batch(observations, &policy, false);
        for e in &errors {
            vex_lens::progress::suspend(|| eprintln!("warning: {e}"));
        }
        let records = filter_since(records, since.as_ref());
        let bundle = write_bundle(&records, &texts, &req, signer.as_ref())?;
        progress.records(bundle.counts.records as u64);
        read = Some(loaded);
        bundle
    } else if let Some(uri) = &args.mongo_uri {
        req.source = "mongodb".into();
        // One runtime for both: the client's background tasks live on it.
        runtime()?.block_on(async {
            let store = MongoStore::connect(uri, &args.mongo_db).await.context("connecting to MongoDB")?;
            anyhow::Ok(export_from_store(&store, &store, &req, signer.as_ref()).await?)
        })?
    } else if let Some(dir) = &args.data_dir {
        req.source = "embedded".into();
        let file = dir.join("vex-lens.redb");
        if !file.exists() {
            bail!("{}: no embedded store here (vex-lens serve --data-dir creates it)", file.display());
        }
        let store = EmbeddedStore::open(dir).context(
            "opening the embedded store (a running `vex-lens serve` holds it; stop it or export through the service)",
        )?;
        runtime()?.block_on(export_from_store(&store, &store, &req, signer.as_ref()))?
    } else {
        bail!("no source: give --from PATH... (VEX files), --mongo-uri URI or --data-dir DIR");
    };
    progress.finish();
    report(&summary);
    let records = Some(summary.counts.records as u64);
    match read {
        Some(loaded) => loaded.summary("export", records, &progress),
        None => vex_lens::progress::Summary {
            command: "export",
            records,
            elapsed: progress.elapsed(),
            ..Default::default()
        },
    }
    .print();
    Ok(ExitCode::SUCCESS)
}

fn report(s: &ExportSummary) {
    for f in &s.files {
        eprintln!("wrote {} ({} bytes, sha256 {})", f.path, f.bytes, f.sha256);
    }
    eprintln!("wrote {} (bundle {}, {} record(s))", s.manifest.display(), s.bundle_id, s.counts.records);
    match (&s.envelope, &s.keyid) {
        (Some(e), Some(k)) => eprintln!("wrote {} (signed by key {k})", e.display()),
        _ => eprintln!("manifest not signed (no --sign-key)"),
    }
}
