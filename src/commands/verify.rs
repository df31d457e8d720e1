//! `vex-lens verify`: offline check of an export bundle (see `vex_lens::export::verify`).

use crate::cli::VerifyArgs;
use std::path::PathBuf;
use std::process::ExitCode;
use vex_lens::crypto::PublicKey;
use vex_lens::export::verify::{verify_bundle, FileProblem, SignatureState, EXIT_UNEXPECTED};

/// Runs the check and maps the outcome to the exit code (errors included: 5).
pub fn run(args: VerifyArgs) -> ExitCode {
    match check(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_UNEXPECTED)
        }
    }
}

fn check(args: VerifyArgs) -> anyhow::Result<u8> {
    let manifest = match (&args.manifest, &args.dir) {
        (Some(m), _) => m.clone(),
        (None, Some(d)) => d.join("manifest.json"),
        (None, None) => PathBuf::from("manifest.json"),
    };
    let key = match &args.public_key {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            Some(PublicKey::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?)
        }
        None => None,
    };
    let report = verify_bundle(&manifest, key.as_ref())?;
    println!("manifest: {}", manifest.display());
    let i = &report.info;
    if let Some(id) = &i.bundle_id {
        println!("bundle:   {id}");
    }
    if let Some(t) = &i.tool {
        println!("tool:     {} {} (commit {})", t.name, t.version, t.commit);
    }
    if let Some(c) = &i.created_at {
        println!("created:  {c}");
    }
    if let Some(n) = i.records {
        println!("records:  {n}");
    }
    if let Some(p) = &report.manifest_problem {
        println!("FAILED    {}: {p}", manifest.display());
    }
    for f in &report.files {
        match &f.problem {
            None => println!("ok        {} ({} bytes)", f.path, f.bytes),
            Some(FileProblem::Missing) => println!("MISSING   {}", f.path),
            Some(FileProblem::BadPath) => println!("BAD PATH  {} (absolute or unusable)", f.path),
            Some(FileProblem::SizeMismatch { expected, actual }) => {
                println!("MISMATCH  {}: {actual} bytes, manifest says {expected}", f.path)
            }
            Some(FileProblem::HashMismatch { expected, actual }) => {
                println!("MISMATCH  {}: sha256 {actual}, manifest says {expected}", f.path)
            }
            Some(FileProblem::Unreadable(e)) => println!("UNREADABLE {}: {e}", f.path),
        }
    }
    for x in &report.extra {
        println!("extra     {x} (not in the manifest; ignored)");
    }
    match &report.signature {
        SignatureState::NotChecked { envelope_present } => println!(
            "signature NOT checked (no --public-key given{})",
            if *envelope_present {
                format!("; {} is present", report.envelope.display())
            } else {
                "; the bundle has no signature".to_string()
            }
        ),
        SignatureState::Verified { keyid } => {
            println!("signature ok: {} verified with key {keyid}", report.envelope.display())
        }
        SignatureState::Missing => println!("SIGNATURE MISSING: {} not found", report.envelope.display()),
        SignatureState::Failed { reason, detail } => {
            println!("SIGNATURE BAD ({reason}): {}: {detail}", report.envelope.display())
        }
    }
    let bad_files = report.files.iter().filter(|f| f.problem.is_some()).count();
    let code = report.exit_code();
    if code == 0 {
        println!("OK: {} file(s) verified", report.files.len());
    } else {
        let mut why = Vec::new();
        if report.signature_failed() {
            why.push("signature".to_string());
        }
        if report.manifest_problem.is_some() {
            why.push("manifest".to_string());
        }
        if bad_files > 0 {
            why.push(format!("{bad_files} file(s)"));
        }
        println!("FAILED: {}", why.join(", "));
    }
    Ok(code)
}
