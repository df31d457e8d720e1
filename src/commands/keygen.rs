//! `vex-lens keygen`: a new signing key pair.

use crate::cli::{KeygenAlg, KeygenArgs};
use anyhow::{bail, Context};
use std::process::ExitCode;
use vex_lens::crypto::{generate_keypair, write_private_key, KeyAlg};

pub fn run(args: KeygenArgs) -> anyhow::Result<ExitCode> {
    let alg = match args.alg {
        KeygenAlg::Ed25519 => KeyAlg::Ed25519,
        KeygenAlg::EcdsaP256 => KeyAlg::EcdsaP256,
    };
    for p in std::iter::once(&args.out).chain(args.public_out.as_ref()) {
        if p.exists() {
            if !args.force {
                bail!("{} exists; use --force to replace it", p.display());
            }
            // Remove rather than truncate, so the new private key never inherits a looser mode.
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    let (private_pem, public) = generate_keypair(alg)?;
    write_private_key(&args.out, &private_pem)?;
    if let Some(p) = &args.public_out {
        std::fs::write(p, public.to_pem()).with_context(|| format!("writing {}", p.display()))?;
    }
    print!("{}", public.to_pem());
    println!("keyid: {}", public.keyid());
    eprintln!("wrote {} private key to {} (mode 0600)", alg, args.out.display());
    Ok(ExitCode::SUCCESS)
}
