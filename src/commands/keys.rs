//! `vex-lens keys show FILE`: what an OpenPGP certificate says, before anyone trusts it.
//!
//! Reads one armored certificate, verifies its self-signatures exactly as start-up does
//! (`crypto::openpgp::Certificate::from_armored`), and prints the primary fingerprint, the
//! user ids, every key that can be used (creation, expiry, capability, revocation) and an
//! `issuers.toml` entry carrying the fingerprint it printed. It never changes a file: the
//! user checks the fingerprint against one the publisher gives elsewhere, then pastes the
//! entry. A detached signature given by mistake is named as such, with the key it claims.

use crate::cli::{KeysArgs, KeysCommand};
use anyhow::{bail, Context};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use vex_lens::crypto::openpgp::{verify_detached, Certificate, OpenPgpKeyring, OpenPgpVerdict};

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        KeysCommand::Show { path, issuer } => {
            let text = read_text(&path)?;
            print!("{}", show(&text, &issuer)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    let bytes = if path.as_os_str() == "-" {
        let mut b = Vec::new();
        std::io::stdin().read_to_end(&mut b).context("reading standard input")?;
        b
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} is not an armored certificate (binary OpenPGP data?): export it with `gpg --armor --export FINGERPRINT`",
            path.display()
        )
    })
}

fn when(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| secs.to_string())
}

/// Groups of four hex digits, as GnuPG prints a fingerprint.
fn grouped(fpr: &str) -> String {
    fpr.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(" ")
}

/// The report for one armored certificate (`issuer`: the id used in the snippet).
pub fn show(text: &str, issuer: &str) -> anyhow::Result<String> {
    if text.trim_start().starts_with("-----BEGIN PGP SIGNATURE-----") {
        let claimed = match verify_detached(b"", text.as_bytes(), &OpenPgpKeyring::default()) {
            OpenPgpVerdict::UnknownKey { claimed: Some(k) } => format!(" made by key {k}"),
            _ => String::new(),
        };
        bail!(
            "this is a detached signature{claimed}, not a certificate: get the signer's public key \
             (e.g. from provider-metadata.json public_openpgp_keys) and show that"
        );
    }
    let cert = Certificate::from_armored(text).context("the certificate does not load")?;
    let mut out = String::new();
    out.push_str(&format!("fingerprint: {}\n", grouped(cert.fingerprint())));
    for uid in cert.user_ids() {
        out.push_str(&format!("user id:     {uid}\n"));
    }
    for key in cert.keys() {
        let role = if key.is_primary() { "primary" } else { "subkey " };
        let expires = key.expires().map_or_else(|| "never".to_string(), when);
        let mut flags = vec![if key.can_sign() { "can sign" } else { "cannot sign" }];
        if key.is_revoked() {
            flags.push("REVOKED");
        }
        out.push_str(&format!(
            "{role}  {}  created {}  expires {}  {}\n",
            key.fingerprint(),
            when(u64::from(key.created())),
            expires,
            flags.join(", ")
        ));
    }
    let armored = cert.to_armored()?;
    if armored.contains("\"\"\"") || armored.contains('\\') {
        bail!("the certificate's armor cannot be written as a TOML string");
    }
    out.push_str(&format!(
        "\n# Check the fingerprint above against one the publisher gives elsewhere (its security\n\
         # page, provider-metadata.json, a signed e-mail), then add this key to the issuer's\n\
         # `keys` in config/issuers.toml:\n\
         # (`tier`: how much you trust this issuer; see docs/consensus.md)\n\
         [[issuers]]\nid = {}\ntier = \"trusted\"\n\
         keys = [\n  {{ type = \"openpgp\", fingerprint = \"{}\", certificate = \"\"\"\n{}\"\"\" }},\n]\n",
        toml::Value::from(issuer),
        grouped(cert.fingerprint()),
        armored.trim_end().to_string() + "\n"
    ));
    Ok(out)
}
