//! Offline verification of an export bundle: every file of the manifest is re-hashed and
//! re-measured, files beside them that the manifest does not list are reported, and the
//! DSSE envelope over the manifest is checked against a public key when one is given.
//!
//! Invariants: the signature is checked over the manifest file's exact bytes (before any
//! parsing), and the envelope's payload must be exactly those bytes with payloadType
//! [`MANIFEST_PAYLOAD_TYPE`]; nothing here trusts the manifest's own claims about itself.
//! Exit codes ([`BundleReport::exit_code`]): 0 ok; 4 when a key is given and the
//! signature is missing or does not verify (this wins: an unverified manifest's hashes
//! prove nothing); else 3 for a missing, malformed or mismatching manifest or file.

use super::{envelope_path, MANIFEST_PAYLOAD_TYPE};
use crate::crypto::{verify_envelope, Envelope, PublicKey};
use ring::digest;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Exit code: all good.
pub const EXIT_OK: u8 = 0;
/// Exit code: a hash or size mismatch, a missing file, or a missing/malformed manifest.
pub const EXIT_INTEGRITY: u8 = 3;
/// Exit code: the signature is missing or bad (only when a key is given).
pub const EXIT_SIGNATURE: u8 = 4;
/// Exit code: an unexpected error (I/O other than a missing file, unreadable key).
pub const EXIT_UNEXPECTED: u8 = 5;

/// What is wrong with one listed file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileProblem {
    Missing,
    /// Absolute, empty, or otherwise unusable path.
    BadPath,
    SizeMismatch {
        expected: u64,
        actual: u64,
    },
    HashMismatch {
        expected: String,
        actual: String,
    },
    Unreadable(String),
}

/// One listed file's check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileCheck {
    pub path: String,
    pub bytes: u64,
    pub problem: Option<FileProblem>,
}

/// The signature's check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureState {
    /// No key was given; `envelope_present` says whether there was something to check.
    NotChecked { envelope_present: bool },
    /// Verified by the given key.
    Verified { keyid: String },
    /// A key was given but there is no envelope.
    Missing,
    /// A key was given and the envelope does not verify (`reason` is a stable token:
    /// `malformed_envelope`, `wrong_payload_type`, `payload_mismatch`, `unknown_key`,
    /// `bad_signature`, `wrong_key`, ...).
    Failed { reason: String, detail: String },
}

/// The result of verifying a bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleReport {
    pub manifest: PathBuf,
    pub envelope: PathBuf,
    /// Set when the manifest is missing or cannot be parsed, or its `bundle_id` is not
    /// the hash of its `files`.
    pub manifest_problem: Option<String>,
    pub info: BundleInfo,
    pub files: Vec<FileCheck>,
    /// Files beside the listed ones that the manifest does not list (reported, not fatal).
    pub extra: Vec<String>,
    pub signature: SignatureState,
}

impl BundleReport {
    pub fn files_ok(&self) -> bool {
        self.manifest_problem.is_none() && self.files.iter().all(|f| f.problem.is_none())
    }

    pub fn signature_failed(&self) -> bool {
        matches!(self.signature, SignatureState::Missing | SignatureState::Failed { .. })
    }

    pub fn exit_code(&self) -> u8 {
        if self.signature_failed() {
            EXIT_SIGNATURE
        } else if !self.files_ok() {
            EXIT_INTEGRITY
        } else {
            EXIT_OK
        }
    }
}

/// An error that is not a verification failure (exit code 5).
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct VerifyError {
    pub path: String,
    pub source: std::io::Error,
}

#[derive(Deserialize)]
struct ListedFile {
    path: String,
    sha256: String,
    bytes: u64,
}

#[derive(Deserialize)]
struct ManifestFiles {
    files: Vec<ListedFile>,
    #[serde(default)]
    bundle_id: Option<String>,
    #[serde(default)]
    created_at: Option<String>,
    #[serde(default)]
    tool: Option<super::ToolInfo>,
    #[serde(default)]
    counts: Option<super::Counts>,
}

/// What the manifest says about itself (as claimed; trustworthy only when the signature
/// verified).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BundleInfo {
    pub bundle_id: Option<String>,
    pub created_at: Option<String>,
    pub tool: Option<super::ToolInfo>,
    pub records: Option<u64>,
}

/// Streams a file through SHA-256; returns (hex, size).
fn hash_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0u8; 1 << 16];
    let mut n_total = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hex::encode(ctx.finish().as_ref()), n_total))
}

fn check_signature(manifest_bytes: &[u8], env_path: &Path, key: &PublicKey) -> Result<SignatureState, VerifyError> {
    let env_bytes = match std::fs::read(env_path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(SignatureState::Missing),
        Err(source) => return Err(VerifyError { path: env_path.display().to_string(), source }),
    };
    let failed = |reason: &str, detail: String| SignatureState::Failed { reason: reason.into(), detail };
    let env = match Envelope::from_json(&env_bytes) {
        Ok(e) => e,
        Err(e) => return Ok(failed("malformed_envelope", e.to_string())),
    };
    if env.payload_type != MANIFEST_PAYLOAD_TYPE {
        return Ok(failed(
            "wrong_payload_type",
            format!("payloadType is {:?}, expected {MANIFEST_PAYLOAD_TYPE:?}", env.payload_type),
        ));
    }
    if env.payload != manifest_bytes {
        return Ok(failed("payload_mismatch", "the envelope signs other bytes than the manifest file".into()));
    }
    let outcome = verify_envelope(&env, std::slice::from_ref(key), 1);
    if outcome.is_verified() {
        return Ok(SignatureState::Verified { keyid: key.keyid().to_string() });
    }
    let reason = outcome.reason().unwrap_or("failed").to_string();
    let claimed: Vec<&str> = env.signatures.iter().map(|s| s.keyid.as_str()).collect();
    let detail = match reason.as_str() {
        "unknown_key" => {
            format!("signed by key id(s) {claimed:?}, not by the given key {} (wrong key?)", key.keyid())
        }
        "no_signatures" => "the envelope has no signatures".to_string(),
        _ => format!("the signature does not verify with key {} ({reason})", key.keyid()),
    };
    Ok(failed(&reason, detail))
}

/// Verifies the bundle whose manifest is at `manifest`, checking the signature with `key`
/// when given.
pub fn verify_bundle(manifest: &Path, key: Option<&PublicKey>) -> Result<BundleReport, VerifyError> {
    let env_path = envelope_path(manifest);
    let mut report = BundleReport {
        manifest: manifest.to_path_buf(),
        envelope: env_path.clone(),
        manifest_problem: None,
        info: BundleInfo::default(),
        files: Vec::new(),
        extra: Vec::new(),
        signature: SignatureState::NotChecked { envelope_present: env_path.exists() },
    };
    let manifest_bytes = match std::fs::read(manifest) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.manifest_problem = Some("manifest not found".into());
            if key.is_some() {
                report.signature = SignatureState::Failed {
                    reason: "no_manifest".into(),
                    detail: "there is no manifest to check the signature of".into(),
                };
            }
            return Ok(report);
        }
        Err(source) => return Err(VerifyError { path: manifest.display().to_string(), source }),
    };
    if let Some(k) = key {
        report.signature = check_signature(&manifest_bytes, &env_path, k)?;
    }
    let listed: ManifestFiles = match serde_json::from_slice(&manifest_bytes) {
        Ok(m) => m,
        Err(e) => {
            report.manifest_problem = Some(format!("malformed manifest: {e}"));
            return Ok(report);
        }
    };
    report.info = BundleInfo {
        bundle_id: listed.bundle_id.clone(),
        created_at: listed.created_at.clone(),
        tool: listed.tool.clone(),
        records: listed.counts.as_ref().map(|c| c.records),
    };
    // bundle_id is derived from files[]: an edited list with a stale id is tampering.
    let files_value: Vec<super::ManifestFile> = listed
        .files
        .iter()
        .map(|f| super::ManifestFile { path: f.path.clone(), sha256: f.sha256.clone(), bytes: f.bytes })
        .collect();
    if let (Some(claimed), Ok(actual)) = (&listed.bundle_id, super::bundle_id(&files_value)) {
        if *claimed != actual {
            report.manifest_problem = Some(format!("bundle_id {claimed} is not the hash of files[] ({actual})"));
        }
    }
    let base = match manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut listed_abs: BTreeSet<PathBuf> = BTreeSet::new();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    dirs.insert(base.clone());
    for f in &listed.files {
        let rel = Path::new(&f.path);
        let problem = if f.path.is_empty() || rel.is_absolute() || f.path.contains('\\') {
            Some(FileProblem::BadPath)
        } else {
            let p = base.join(rel);
            if let Some(parent) = p.parent() {
                dirs.insert(parent.to_path_buf());
            }
            listed_abs.insert(std::fs::canonicalize(&p).unwrap_or(p.clone()));
            match hash_file(&p) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(FileProblem::Missing),
                Err(e) => Some(FileProblem::Unreadable(e.to_string())),
                Ok((_, n)) if n != f.bytes => Some(FileProblem::SizeMismatch { expected: f.bytes, actual: n }),
                Ok((h, _)) if !h.eq_ignore_ascii_case(&f.sha256) => {
                    Some(FileProblem::HashMismatch { expected: f.sha256.clone(), actual: h })
                }
                Ok(_) => None,
            }
        };
        report.files.push(FileCheck { path: f.path.clone(), bytes: f.bytes, problem });
    }
    // Extra files: regular files in the bundle's directories that nothing lists.
    let own: BTreeSet<PathBuf> =
        [manifest, env_path.as_path()].iter().filter_map(|p| std::fs::canonicalize(p).ok()).collect();
    for d in &dirs {
        let Ok(rd) = std::fs::read_dir(d) else {
            continue;
        };
        let mut names: Vec<PathBuf> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.path())
            .collect();
        names.sort();
        for p in names {
            let abs = std::fs::canonicalize(&p).unwrap_or(p.clone());
            if !listed_abs.contains(&abs) && !own.contains(&abs) {
                report.extra.push(p.display().to_string());
            }
        }
    }
    report.extra.sort();
    report.extra.dedup();
    Ok(report)
}
