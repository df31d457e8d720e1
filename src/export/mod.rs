//! Export bundles: a consensus snapshot (`consensus.json`, `consensus.ndjson` or
//! `consensus.openvex.json`), a manifest listing every file with its SHA-256 and size,
//! and optionally a DSSE envelope over the manifest; and their offline verification
//! ([`verify`]).
//!
//! Invariants:
//! * deterministic: the same records give byte-identical data files and a manifest that
//!   differs only in `created_at` (which is the clock, or `SOURCE_DATE_EPOCH` when set);
//!   no timestamp inside a data file comes from the clock;
//! * the manifest is canonical JSON (keys sorted, no whitespace, no trailing newline), and
//!   the envelope (`<manifest stem>.dsse.json`, i.e. `manifest.dsse.json`) signs exactly
//!   the manifest file's bytes with payloadType [`MANIFEST_PAYLOAD_TYPE`];
//! * `files[].path` is relative to the manifest's directory, `/`-separated;
//!   `bundle_id` is `sha256:` + SHA-256 hex of the canonical JSON of `files`;
//! * files are written to a temporary name and renamed, data files first, then the
//!   manifest, then the envelope; a stale envelope from an earlier export is removed when
//!   the new bundle is not signed;
//! * `json`/`ndjson` snapshots hold the records as stored (lean: each statement by its
//!   observation id); the OpenVEX snapshot joins the statement text it writes (impact and
//!   action statements, subcomponents) from the observations ([`StatementTexts`]) and
//!   fails, naming the observation, rather than write a statement without it.

pub mod openvex;
pub mod verify;

use crate::crypto::{sign_envelope, SignError, SigningKey};
use crate::domain::canonical;
use crate::domain::consensus::{ConsensusRecord, StatementText};
use crate::domain::model::Observation;
use crate::domain::timestamp::Timestamp;
use crate::ports::{ObservationStore, RecordStore, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// payloadType of the DSSE envelope over a manifest.
pub const MANIFEST_PAYLOAD_TYPE: &str = "application/vnd.vex-lens.manifest+json";
/// Version of the manifest layout.
pub const MANIFEST_VERSION: u32 = 1;
/// The tool's version (Cargo package version).
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from (build.rs; `VEXLENS_GIT_COMMIT` overrides it),
/// or `unknown` when built outside a git checkout.
pub fn tool_commit() -> &'static str {
    match option_env!("VEXLENS_GIT_COMMIT") {
        Some(c) if !c.is_empty() => c,
        _ => "unknown",
    }
}

pub use crate::domain::export_format::ExportFormat;

/// An export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("nothing to export: no consensus record matches (an OpenVEX document needs at least one statement)")]
    Empty,
    #[error("reading the consensus store: {0}")]
    Store(#[from] StoreError),
    #[error("signing the manifest: {0}")]
    Sign(#[from] SignError),
    #[error("serialising: {0}")]
    Json(#[from] serde_json::Error),
    /// A record names an observation the export was not given (the store lost it, or
    /// the caller did not join it).
    #[error("record {record}: observation {observation} is not in the store (its statement text is needed for the OpenVEX export)")]
    MissingObservation { record: String, observation: String },
}

/// The statement text of observations, by observation id: what an OpenVEX export joins to
/// the lean records (their impact and action statements and scope).
pub type StatementTexts = HashMap<Arc<str>, StatementText>;

/// The texts of `observations` that `records`' OpenVEX statements read.
pub fn texts_of<'a>(
    records: &[ConsensusRecord],
    observations: impl IntoIterator<Item = &'a Observation>,
) -> StatementTexts {
    let want: BTreeSet<&str> = records.iter().flat_map(openvex::joined_ids).collect();
    observations.into_iter().filter(|o| want.contains(&*o.id)).map(|o| (o.id.clone(), StatementText::from(o))).collect()
}

/// The texts `records`' OpenVEX statements read, from the store (one read per package).
pub async fn texts_from_store<S: ObservationStore + ?Sized>(
    store: &S,
    records: &[ConsensusRecord],
) -> Result<StatementTexts, StoreError> {
    let mut packages: BTreeSet<(&str, &str)> = BTreeSet::new();
    for r in records {
        if openvex::joined_ids(r).next().is_some() {
            packages.insert((&r.tenant, &r.package));
        }
    }
    let mut out = StatementTexts::new();
    for (tenant, package) in packages {
        let obs = store.observations_for_package(tenant, package).await?;
        out.extend(texts_of(records, &obs));
    }
    Ok(out)
}

impl ExportError {
    pub fn io(path: &Path, source: std::io::Error) -> ExportError {
        ExportError::Io { path: path.display().to_string(), source }
    }
}

/// What to export and where.
#[derive(Clone, Debug)]
pub struct ExportRequest {
    pub format: ExportFormat,
    /// Path of `manifest.json`.
    pub manifest: PathBuf,
    /// Directory of the data files; default: the manifest's directory.
    pub out_dir: Option<PathBuf>,
    /// Only this tenant's records: recorded in the manifest; [`export_from_store`] asks
    /// the store for them, [`write_bundle`] writes the records it is given.
    pub tenant: Option<String>,
    /// Only records changed at or after this time: recorded in the manifest;
    /// [`export_from_store`] passes it to the store as `since_ms`.
    pub since: Option<Timestamp>,
    /// Where the records came from: `files`, `mongodb`, `embedded`.
    pub source: String,
    /// `created_at` of the manifest; default: `SOURCE_DATE_EPOCH` when set, else the clock.
    pub created_at: Option<Timestamp>,
}

/// A file of a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestFile {
    /// Relative to the manifest's directory, `/`-separated.
    pub path: String,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    pub bytes: u64,
}

/// Record counts of a bundle.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub records: u64,
    /// By consensus status (`disputed`/`inconclusive` as such, even in OpenVEX).
    pub by_status: BTreeMap<String, u64>,
    /// Records with at least one conflict.
    pub conflicts: u64,
    /// Conflicts by reason (a record can have several).
    pub conflicts_by_reason: BTreeMap<String, u64>,
}

impl Counts {
    pub fn of(records: &[ConsensusRecord]) -> Counts {
        let mut c = Counts { records: records.len() as u64, ..Default::default() };
        for r in records {
            *c.by_status.entry(r.status.as_str().to_string()).or_default() += 1;
            if !r.conflicts.is_empty() {
                c.conflicts += 1;
            }
            for k in &r.conflicts {
                *c.conflicts_by_reason.entry(k.reason.as_str().to_string()).or_default() += 1;
            }
        }
        c
    }
}

/// Tool that wrote a bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolInfo {
    pub name: String,
    pub version: String,
    pub commit: String,
}

impl ToolInfo {
    pub fn current() -> ToolInfo {
        ToolInfo { name: "vex-lens".into(), version: TOOL_VERSION.into(), commit: tool_commit().into() }
    }
}

/// `manifest.json` (canonical JSON; field docs in docs/export.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub manifest_version: u32,
    /// `sha256:` + SHA-256 hex of the canonical JSON of `files`.
    pub bundle_id: String,
    pub created_at: String,
    pub tool: ToolInfo,
    pub format: ExportFormat,
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Newest evaluation time among the records (absent when there are none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_time: Option<String>,
    pub counts: Counts,
    pub files: Vec<ManifestFile>,
}

/// What an export wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExportSummary {
    pub bundle_id: String,
    pub manifest: PathBuf,
    /// The DSSE envelope, when signed.
    pub envelope: Option<PathBuf>,
    /// Key id of the signing key, when signed.
    pub keyid: Option<String>,
    pub files: Vec<ManifestFile>,
    pub counts: Counts,
}

/// `<stem>.dsse.json` beside the manifest (`manifest.json` -> `manifest.dsse.json`).
pub fn envelope_path(manifest: &Path) -> PathBuf {
    let stem = manifest.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "manifest".into());
    manifest.with_file_name(format!("{stem}.dsse.json"))
}

/// Serialises the snapshot file of `records` in `format` ([`ExportError::Empty`] for
/// OpenVEX with no records).
pub fn snapshot_bytes(
    records: &[ConsensusRecord],
    texts: &StatementTexts,
    format: ExportFormat,
) -> Result<Vec<u8>, ExportError> {
    let mut out = Vec::new();
    match format {
        ExportFormat::Ndjson => {
            for r in records {
                out.extend_from_slice(&record_bytes(r)?);
                out.push(b'\n');
            }
        }
        ExportFormat::Json => {
            out.push(b'[');
            for (i, r) in records.iter().enumerate() {
                out.extend_from_slice(if i == 0 { b"\n" } else { b",\n" });
                out.extend_from_slice(&record_bytes(r)?);
            }
            out.extend_from_slice(b"\n]\n");
        }
        ExportFormat::Openvex => {
            let tooling = format!("vex-lens {TOOL_VERSION}");
            let doc = openvex::document(records, texts, &tooling)?.ok_or(ExportError::Empty)?;
            out = serde_json::to_vec_pretty(&doc)?;
            out.push(b'\n');
        }
    }
    Ok(out)
}

/// Canonical JSON of a record as stored (without what explain adds).
fn record_bytes(r: &ConsensusRecord) -> Result<Vec<u8>, ExportError> {
    if r.is_explained() {
        let mut r = r.clone();
        r.strip_explain();
        return Ok(canonical::to_vec(&r)?);
    }
    Ok(canonical::to_vec(r)?)
}

/// `sha256:` + SHA-256 hex of the canonical JSON of `files`.
pub fn bundle_id(files: &[ManifestFile]) -> Result<String, serde_json::Error> {
    Ok(canonical::sha256_prefixed(&canonical::to_vec(&files)?))
}

fn created_at_now() -> Timestamp {
    if let Some(secs) = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.trim().parse::<i64>().ok()) {
        return Timestamp::from_unix_nanos(secs as i128 * 1_000_000_000, 0);
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    // Whole seconds: the precision a human compares; finer adds nothing to a manifest.
    Timestamp::from_unix_nanos(now - now.rem_euclid(1_000_000_000), 0)
}

/// `/`-separated path of `target` relative to `base` (both absolute, normalised).
fn relative_path(base: &Path, target: &Path) -> String {
    let b: Vec<Component> = base.components().collect();
    let t: Vec<Component> = target.components().collect();
    let common = b.iter().zip(&t).take_while(|(x, y)| x == y).count();
    let mut parts: Vec<String> = Vec::new();
    for _ in common..b.len() {
        parts.push("..".into());
    }
    for c in &t[common..] {
        parts.push(c.as_os_str().to_string_lossy().into_owned());
    }
    parts.join("/")
}

/// Writes `bytes` to `path` through a temporary file in the same directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ExportError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(ExportError::io(path, e));
    }
    Ok(())
}

fn absolute_dir(dir: &Path) -> Result<PathBuf, ExportError> {
    std::fs::create_dir_all(dir).map_err(|e| ExportError::io(dir, e))?;
    std::fs::canonicalize(dir).map_err(|e| ExportError::io(dir, e))
}

/// Writes the bundle for `records` (already filtered) as `req` says, signing the manifest
/// with `signer` when given; `texts` holds the statement text an OpenVEX snapshot joins
/// ([`texts_of`], [`texts_from_store`]). Blocking file I/O.
pub fn write_bundle(
    records: &[ConsensusRecord],
    texts: &StatementTexts,
    req: &ExportRequest,
    signer: Option<&SigningKey>,
) -> Result<ExportSummary, ExportError> {
    let manifest_parent = match req.manifest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let manifest_dir = absolute_dir(&manifest_parent)?;
    let out_dir = match &req.out_dir {
        Some(d) => absolute_dir(d)?,
        None => manifest_dir.clone(),
    };
    let data = snapshot_bytes(records, texts, req.format)?;
    let data_path = out_dir.join(req.format.file_name());
    write_atomic(&data_path, &data)?;
    let files = vec![ManifestFile {
        path: relative_path(&manifest_dir, &data_path),
        sha256: canonical::sha256_hex(&data),
        bytes: data.len() as u64,
    }];
    let counts = Counts::of(records);
    let manifest = Manifest {
        manifest_version: MANIFEST_VERSION,
        bundle_id: bundle_id(&files)?,
        created_at: req.created_at.unwrap_or_else(created_at_now).to_string(),
        tool: ToolInfo::current(),
        format: req.format,
        source: req.source.clone(),
        tenant: req.tenant.clone(),
        since: req.since.map(|t| t.to_string()),
        snapshot_time: openvex::newest_evaluation_time(records).map(|t| t.to_string()),
        counts: counts.clone(),
        files: files.clone(),
    };
    let manifest_bytes = canonical::to_vec(&manifest)?;
    let manifest_path = manifest_dir.join(req.manifest.file_name().unwrap_or_else(|| "manifest.json".as_ref()));
    let env_path = envelope_path(&manifest_path);
    // Never leave an envelope that signs a previous manifest beside the new one.
    match std::fs::remove_file(&env_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ExportError::io(&env_path, e)),
    }
    write_atomic(&manifest_path, &manifest_bytes)?;
    let (envelope, keyid) = match signer {
        Some(key) => {
            let env = sign_envelope(MANIFEST_PAYLOAD_TYPE, &manifest_bytes, key)?;
            let mut text = env.to_json();
            text.push('\n');
            write_atomic(&env_path, text.as_bytes())?;
            (Some(env_path), Some(key.keyid().to_string()))
        }
        None => (None, None),
    };
    Ok(ExportSummary { bundle_id: manifest.bundle_id, manifest: manifest_path, envelope, keyid, files, counts })
}

/// Keeps the records whose evaluation time is at or after `since` (the `--from` meaning of
/// `--since`: a record computed from files last changed when its evaluation time moved).
pub fn filter_since(records: Vec<ConsensusRecord>, since: Option<&Timestamp>) -> Vec<ConsensusRecord> {
    match since {
        None => records,
        Some(s) => records.into_iter().filter(|r| r.evaluation_time >= *s).collect(),
    }
}

/// Exports the current records of a store (`req.tenant`'s, or all; changed at or after
/// `req.since`, or all), an OpenVEX snapshot joining the statement text from
/// `observations`: what the export actor runs for a job. The file writes are
/// blocking; run it where blocking is allowed (e.g. a `SyncArbiter`, `spawn_blocking`, or
/// a current-thread runtime of its own).
pub async fn export_from_store<R: RecordStore + ?Sized, O: ObservationStore + ?Sized>(
    store: &R,
    observations: &O,
    req: &ExportRequest,
    signer: Option<&SigningKey>,
) -> Result<ExportSummary, ExportError> {
    let records = store.list_records(req.tenant.as_deref(), req.since.map(|t| t.unix_millis())).await?;
    let texts = match req.format {
        ExportFormat::Openvex => texts_from_store(observations, &records).await?,
        ExportFormat::Json | ExportFormat::Ndjson => StatementTexts::new(),
    };
    write_bundle(&records, &texts, req, signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(relative_path(Path::new("/a/b"), Path::new("/a/b/c.json")), "c.json");
        assert_eq!(relative_path(Path::new("/a/b"), Path::new("/a/d/c.json")), "../d/c.json");
        assert_eq!(relative_path(Path::new("/a"), Path::new("/a/b/d/c.json")), "b/d/c.json");
    }

    #[test]
    fn envelope_beside_manifest() {
        assert_eq!(envelope_path(Path::new("out/manifest.json")), PathBuf::from("out/manifest.dsse.json"));
        assert_eq!(envelope_path(Path::new("x.json")), PathBuf::from("x.dsse.json"));
    }

    #[test]
    fn empty_snapshots() {
        assert_eq!(snapshot_bytes(&[], &StatementTexts::new(), ExportFormat::Json).unwrap(), b"[\n]\n");
        assert_eq!(snapshot_bytes(&[], &StatementTexts::new(), ExportFormat::Ndjson).unwrap(), b"");
        assert!(matches!(snapshot_bytes(&[], &StatementTexts::new(), ExportFormat::Openvex), Err(ExportError::Empty)));
    }
}
