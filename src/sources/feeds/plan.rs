//! The pure core of the CSAF feed source (OASIS CSAF 2.0 section 7, the distribution
//! directory): reads `provider-metadata.json`, `index.txt` and `changes.csv`, decides
//! which documents to fetch, checks paths, hash files, TLP labels and publishers. No IO,
//! no clock: the caller passes the time and the bytes it fetched.
//!
//! Invariants (what the rules assume, docs/feeds.md):
//! - a document path is relative, under its distribution URL: no scheme, no leading `/`,
//!   no `..` segment (also percent-encoded), no `?`, `#`, `\` or control character, and
//!   ends in `.json`; anything else is rejected, never fetched;
//! - a year folder or file name that breaks the spec's rule (section 5.1: `<YYYY>/` of the
//!   initial release date, the file name from `tracking.id`) is a counted warning only;
//! - every hash file present must match the document and name its file; a wrong or
//!   unreadable hash file always rejects; a trusted provider (`csaf_trusted_provider`)
//!   without any hash file rejects;
//! - the directory's TLP label and the document's own must both be allowed;
//! - a document is fetched when it is new, its listed time changed, or it failed and its
//!   retry is due; the watermark moves only over settled rows; a `changes.csv` whose
//!   newest row is older than the watermark, or that lists fewer rows than before, is a
//!   rewind: reconciled against `index.txt`.

use crate::config::Tlp;
use crate::domain::timestamp::Timestamp;
use crate::ports::feed_state::{DirectoryState, DocState};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Where a provider's metadata is, given a feed's `url` (a domain or the metadata URL).
pub fn metadata_url(url: &str) -> String {
    let u = url.trim();
    if u.starts_with("https://") {
        u.to_string()
    } else {
        format!("https://{}/.well-known/csaf/provider-metadata.json", u.trim_end_matches('/'))
    }
}

/// `scheme://authority` of an absolute URL (lower-cased), `None` for anything else.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if scheme.is_empty() || authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some(format!("{}://{}", scheme.to_ascii_lowercase(), authority.to_ascii_lowercase()))
}

/// The provider's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    CsafPublisher,
    CsafProvider,
    CsafTrustedProvider,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::CsafPublisher => "csaf_publisher",
            Role::CsafProvider => "csaf_provider",
            Role::CsafTrustedProvider => "csaf_trusted_provider",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        [Role::CsafPublisher, Role::CsafProvider, Role::CsafTrustedProvider].into_iter().find(|r| r.as_str() == s)
    }
}

/// What a feed needs from `provider-metadata.json`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub role: Role,
    pub namespace: String,
    /// The `directory_url`s, each ending in `/`.
    pub directories: Vec<String>,
}

/// A feed-level failure: the feed stops (the service and the other feeds go on).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("provider metadata {url}: {reason}")]
    Metadata { url: String, reason: String },
    #[error("provider metadata {url}: distribution {directory:?} is not an https:// URL of the metadata's host")]
    ForeignDirectory { url: String, directory: String },
    #[error("provider metadata {url}: no directory distribution (ROLIE feeds are not read yet)")]
    NoDirectory { url: String },
    #[error("publisher.namespace {namespace:?} does not name issuer {issuer:?} of the issuer directory")]
    PublisherMismatch { namespace: String, issuer: String },
    #[error("{0}")]
    Fetch(String),
    #[error("{0}")]
    State(String),
}

impl FeedError {
    /// The reason code of the failure (summary, logs).
    pub fn code(&self) -> &'static str {
        match self {
            FeedError::Metadata { .. } => "metadata_invalid",
            FeedError::ForeignDirectory { .. } => "foreign_directory",
            FeedError::NoDirectory { .. } => "no_directory",
            FeedError::PublisherMismatch { .. } => "publisher_mismatch",
            FeedError::Fetch(_) => "fetch_failed",
            FeedError::State(_) => "state_failed",
        }
    }
}

/// Parses `provider-metadata.json` fetched from `url`: role, `publisher.namespace` and
/// the directory distributions, each an `https://` URL on the metadata's own origin.
pub fn parse_metadata(bytes: &[u8], url: &str) -> Result<Metadata, FeedError> {
    let bad = |reason: &str| FeedError::Metadata { url: url.to_string(), reason: reason.to_string() };
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| bad(&format!("not JSON: {e}")))?;
    let role = v.get("role").and_then(|r| r.as_str()).ok_or_else(|| bad("no role"))?;
    let role = Role::parse(role).ok_or_else(|| bad(&format!("unknown role {role:?}")))?;
    let namespace = v
        .pointer("/publisher/namespace")
        .and_then(|n| n.as_str())
        .filter(|n| !n.trim().is_empty())
        .ok_or_else(|| bad("no publisher.namespace"))?
        .to_string();
    let own = origin(url).ok_or_else(|| bad("not an absolute URL"))?;
    let mut directories = Vec::new();
    for d in v.get("distributions").and_then(|d| d.as_array()).map(Vec::as_slice).unwrap_or_default() {
        let Some(dir) = d.get("directory_url").and_then(|u| u.as_str()) else { continue };
        let dir = dir.trim();
        if !dir.starts_with("https://") || origin(dir).as_deref() != Some(own.as_str()) || dir.contains(['?', '#']) {
            return Err(FeedError::ForeignDirectory { url: url.to_string(), directory: dir.to_string() });
        }
        let dir = if dir.ends_with('/') { dir.to_string() } else { format!("{dir}/") };
        if !directories.contains(&dir) {
            directories.push(dir);
        }
    }
    if directories.is_empty() {
        return Err(FeedError::NoDirectory { url: url.to_string() });
    }
    Ok(Metadata { role, namespace, directories })
}

/// Whether the provider's `publisher.namespace` names the configured issuer: one of the
/// issuer's names (id, display name, aliases), compared case-insensitively, a trailing
/// `/` ignored.
pub fn namespace_names_issuer(namespace: &str, issuer_names: &[String]) -> bool {
    let norm = |s: &str| s.trim().trim_end_matches('/').to_lowercase();
    let ns = norm(namespace);
    issuer_names.iter().any(|n| norm(n) == ns)
}

/// The TLP label of a distribution directory: its last path segment when that is a label
/// (`.../csaf/white/`), else `UNLABELED`.
pub fn folder_tlp(directory: &str) -> Tlp {
    let seg = directory.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    Tlp::from_label(seg).unwrap_or(Tlp::Unlabeled)
}

/// `index.txt`: one relative path per line (blank lines ignored).
pub fn parse_index(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    text.lines().map(str::trim).filter(|l| !l.is_empty() && seen.insert(l.to_string())).map(str::to_string).collect()
}

/// One row of `changes.csv`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub path: String,
    /// As listed (RFC 3339).
    pub listed: String,
    pub listed_ms: i64,
}

/// `changes.csv` as read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Distinct paths, in file order (newest first), the first row of a path kept.
    pub rows: Vec<Row>,
    /// Rows that are not `path,time` with an RFC 3339 time (skipped).
    pub malformed: usize,
    /// Rows naming a path an earlier row named (skipped).
    pub duplicates: usize,
}

/// One CSV field (RFC 4180 quoting: `"a,b"`, `""` inside quotes), and the rest after its
/// comma.
fn csv_field(s: &str) -> Option<(String, Option<&str>)> {
    let s = s.trim_start();
    if let Some(q) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = q.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if q[i + 1..].starts_with('"') {
                    out.push('"');
                    chars.next();
                    continue;
                }
                let rest = q[i + 1..].trim_start();
                return match rest.strip_prefix(',') {
                    Some(r) => Some((out, Some(r))),
                    None if rest.is_empty() => Some((out, None)),
                    None => None,
                };
            }
            out.push(c);
        }
        None
    } else {
        match s.split_once(',') {
            Some((a, r)) => Some((a.trim().to_string(), Some(r))),
            None => Some((s.trim().to_string(), None)),
        }
    }
}

/// Parses `changes.csv`: CSAF 2.0's quoted rows (`"2023/a.json","2023-01-01T00:00:00Z"`)
/// and 2.1's unquoted ones (`2023/a.json,2023-01-01T00:00:00Z`).
pub fn parse_changes(text: &str) -> Changes {
    let mut out = Changes::default();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        let row = csv_field(line).and_then(|(path, rest)| {
            let (listed, rest) = csv_field(rest?)?;
            if rest.is_some() || path.is_empty() {
                return None;
            }
            let listed_ms = Timestamp::parse(&listed).ok()?.unix_millis();
            Some(Row { path, listed, listed_ms })
        });
        match row {
            None => out.malformed += 1,
            Some(r) if !seen.insert(r.path.clone()) => out.duplicates += 1,
            Some(r) => out.rows.push(r),
        }
    }
    out
}

/// Why a document path is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathReject {
    /// A scheme (`https://other/...`) or `//host`: not under the distribution URL.
    ForeignHost,
    /// Starts with `/`.
    Absolute,
    /// A `..` segment (also `%2e%2e`).
    DotDot,
    /// Empty, `?`, `#`, `\`, a control character or an empty segment.
    Invalid,
    /// Not a `.json` file.
    NotJson,
}

impl PathReject {
    pub fn code(self) -> &'static str {
        match self {
            PathReject::ForeignHost => "path_foreign_host",
            PathReject::Absolute => "path_absolute",
            PathReject::DotDot => "path_dot_dot",
            PathReject::Invalid => "path_invalid",
            PathReject::NotJson => "path_not_json",
        }
    }
}

/// A warning about a path or document that is still processed (real feeds vary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Warning {
    /// The path is not `<YYYY>/<file>`, or the year is not the initial release date's.
    YearFolder,
    /// The file name is not the one the spec derives from `tracking.id`.
    FileName,
    /// No hash file at all (from a provider that is not a trusted provider).
    NoHash,
    /// No `.asc` (404): the document goes on unsigned.
    NoSignature,
}

impl Warning {
    pub fn code(self) -> &'static str {
        match self {
            Warning::YearFolder => "year_folder",
            Warning::FileName => "file_name",
            Warning::NoHash => "no_hash",
            Warning::NoSignature => "no_signature",
        }
    }
}

/// Checks a listed path and resolves it under `directory` (ending in `/`).
pub fn resolve(directory: &str, path: &str) -> Result<String, PathReject> {
    if path.is_empty() || path.contains(['?', '#', '\\']) || path.chars().any(char::is_control) {
        return Err(PathReject::Invalid);
    }
    if path.contains("://") || path.starts_with("//") {
        return Err(PathReject::ForeignHost);
    }
    if path.starts_with('/') {
        return Err(PathReject::Absolute);
    }
    let lower = path.to_ascii_lowercase();
    for seg in lower.split('/') {
        let decoded = seg.replace("%2e", ".");
        if decoded == ".." || decoded == "." {
            return Err(PathReject::DotDot);
        }
        if seg.is_empty() {
            return Err(PathReject::Invalid);
        }
    }
    if lower.contains("%2f") || lower.contains("%5c") {
        return Err(PathReject::Invalid);
    }
    if !lower.ends_with(".json") {
        return Err(PathReject::NotJson);
    }
    Ok(format!("{directory}{path}"))
}

/// The spec's file name for a `tracking.id` (section 5.1): lower case, every character
/// other than `+`, `-`, `a-z`, `0-9` replaced by `_`, then `.json`.
pub fn file_name_for(tracking_id: &str) -> String {
    let base: String = tracking_id
        .to_lowercase()
        .chars()
        .map(|c| if c == '+' || c == '-' || c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '_' })
        .collect();
    format!("{base}.json")
}

/// The warnings a path earns before its document is read: a first segment that is not a
/// four-digit year, or more than one folder.
pub fn path_warnings(path: &str) -> Vec<Warning> {
    let segs: Vec<&str> = path.split('/').collect();
    let year_ok = segs.len() == 2 && segs[0].len() == 4 && segs[0].bytes().all(|b| b.is_ascii_digit());
    if year_ok {
        Vec::new()
    } else {
        vec![Warning::YearFolder]
    }
}

/// Why a fetched document is rejected (and retried with backoff).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HashReject {
    /// A hash file's digest differs from the document's, or it names another file.
    Mismatch,
    /// A hash file that is not `<hex digest> [*]<file name>`.
    Malformed,
    /// A trusted provider published neither `.sha256` nor `.sha512`.
    Missing,
}

impl HashReject {
    pub fn code(self) -> &'static str {
        match self {
            HashReject::Mismatch => "hash_mismatch",
            HashReject::Malformed => "hash_malformed",
            HashReject::Missing => "hash_missing",
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes))
}

/// Checks one hash file (`sha256sum` format: `<hex>  <name>` or `<hex> *<name>`; a
/// digest alone is accepted only when it is the whole file) against the document.
fn check_hash_file(
    text: &[u8],
    algorithm: &'static ring::digest::Algorithm,
    document: &[u8],
    file_name: &str,
) -> Result<(), HashReject> {
    let text = std::str::from_utf8(text).map_err(|_| HashReject::Malformed)?;
    let line = text.lines().find(|l| !l.trim().is_empty()).ok_or(HashReject::Malformed)?;
    if text.lines().filter(|l| !l.trim().is_empty()).count() != 1 {
        return Err(HashReject::Malformed);
    }
    let mut parts = line.trim().splitn(2, char::is_whitespace);
    let digest = parts.next().unwrap_or("");
    let name = parts.next().map(|n| n.trim_start().trim_start_matches('*'));
    let want_len = algorithm.output_len() * 2;
    if digest.len() != want_len || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HashReject::Malformed);
    }
    let actual = hex::encode(ring::digest::digest(algorithm, document));
    if !digest.eq_ignore_ascii_case(&actual) {
        return Err(HashReject::Mismatch);
    }
    match name {
        Some(n) if n.trim() != file_name => Err(HashReject::Mismatch),
        _ => Ok(()),
    }
}

/// The hash files of a document: `None` when absent (404).
#[derive(Clone, Copy, Debug, Default)]
pub struct HashFiles<'a> {
    pub sha256: Option<&'a [u8]>,
    pub sha512: Option<&'a [u8]>,
}

/// Checks every hash file present against `document` (named `file_name`); a trusted
/// provider must publish at least one. `Ok(true)`: some hash checked; `Ok(false)`: none
/// published (a warning).
pub fn check_hashes(document: &[u8], file_name: &str, files: HashFiles<'_>, role: Role) -> Result<bool, HashReject> {
    if let Some(t) = files.sha256 {
        check_hash_file(t, &ring::digest::SHA256, document, file_name)?;
    }
    if let Some(t) = files.sha512 {
        check_hash_file(t, &ring::digest::SHA512, document, file_name)?;
    }
    let any = files.sha256.is_some() || files.sha512.is_some();
    if !any && role == Role::CsafTrustedProvider {
        return Err(HashReject::Missing);
    }
    Ok(any)
}

/// What to do with a fetched document whose hashes passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it to the ingest flow (with these warnings).
    Emit(Vec<Warning>),
    /// Do not emit it; settled until its listing changes.
    Skip(SkipReason),
    /// Older than its listing (a stale cache): fetch it again later.
    Defer,
}

/// Why a document is skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its own TLP label (or its directory's) is not allowed.
    TlpNotAllowed,
    /// Its `publisher.namespace` is not the provider's.
    PublisherMismatch,
}

impl SkipReason {
    pub fn code(self) -> &'static str {
        match self {
            SkipReason::TlpNotAllowed => "tlp_not_allowed",
            SkipReason::PublisherMismatch => "publisher_mismatch",
        }
    }
}

/// Judges a fetched document: its TLP label against `allowed`, its publisher against the
/// provider's namespace, its `current_release_date` against the listed time (older: a
/// stale cache, deferred), its year folder and file name against the spec's rule. A
/// document that is not a readable CSAF document is emitted as it is: the ingest flow
/// dead-letters it with its reason.
pub fn inspect(
    document: &[u8],
    path: &str,
    provider_namespace: &str,
    allowed: &[Tlp],
    listed_ms: Option<i64>,
) -> Verdict {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(document) else {
        return Verdict::Emit(path_warnings(path));
    };
    let Some(d) = v.get("document") else { return Verdict::Emit(path_warnings(path)) };
    let label =
        d.pointer("/distribution/tlp/label").and_then(|l| l.as_str()).map_or(Some(Tlp::Unlabeled), Tlp::from_label);
    if !label.is_some_and(|l| allowed.contains(&l)) {
        return Verdict::Skip(SkipReason::TlpNotAllowed);
    }
    let ns = d.pointer("/publisher/namespace").and_then(|n| n.as_str()).unwrap_or("");
    if !namespace_names_issuer(ns, &[provider_namespace.to_string()]) {
        return Verdict::Skip(SkipReason::PublisherMismatch);
    }
    let time = |p: &str| d.pointer(p).and_then(|t| t.as_str()).and_then(|t| Timestamp::parse(t).ok());
    if let (Some(listed), Some(current)) = (listed_ms, time("/tracking/current_release_date")) {
        if current.unix_millis() < listed {
            return Verdict::Defer;
        }
    }
    let mut warnings = Vec::new();
    let (folder, file) = path.rsplit_once('/').unwrap_or(("", path));
    let year = time("/tracking/initial_release_date").map(|t| t.text().to_string());
    let year_ok = folder.len() == 4
        && folder.bytes().all(|b| b.is_ascii_digit())
        && year.as_deref().map_or(true, |y| y.starts_with(folder));
    if !year_ok {
        warnings.push(Warning::YearFolder);
    }
    if let Some(id) = d.pointer("/tracking/id").and_then(|i| i.as_str()) {
        if file_name_for(id) != file {
            warnings.push(Warning::FileName);
        }
    }
    Verdict::Emit(warnings)
}

/// A document to fetch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub path: String,
    /// Listed time (none: only `index.txt` names it).
    pub listed: Option<String>,
    pub listed_ms: Option<i64>,
}

/// What one directory needs this run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub fetch: Vec<Candidate>,
    /// `changes.csv` went back (newest row older than the watermark, or fewer rows than
    /// before): reconcile against `index.txt`.
    pub rewound: bool,
    /// Rows older than `since` on a first sync (not fetched).
    pub before_since: usize,
}

fn listed_ms(d: &DocState) -> Option<i64> {
    d.listed.as_deref().and_then(|l| Timestamp::parse(l).ok()).map(|t| t.unix_millis())
}

/// Whether a known document is owed a fetch for a row listed at `row_ms`.
fn owed(d: &DocState, row_ms: Option<i64>, now_ms: i64, retry_all: bool) -> bool {
    let known = listed_ms(d);
    match (row_ms, known) {
        // Listed later than what was handled: changed.
        (Some(r), Some(k)) if r > k => return true,
        (Some(_), None) => return true,
        _ => {}
    }
    !d.outcome.settled() && (retry_all || d.next_retry_ms.map_or(true, |t| t <= now_ms))
}

/// Plans a directory: `changes` when `changes.csv` was read this run (`None`: not
/// modified), `index` when `index.txt` was (first sync or reconciliation), the
/// directory's state (its first sync is over once `synced`), `since` (first sync only),
/// the time and whether every failed document is retried now (`feed run --once`) rather
/// than when its retry is due.
pub fn plan(
    changes: Option<&Changes>,
    index: Option<&[String]>,
    dir: &DirectoryState,
    since_ms: Option<i64>,
    now_ms: i64,
    retry_all: bool,
) -> Plan {
    let mut out = Plan::default();
    let first_sync = !dir.synced;
    let mut planned = BTreeSet::new();
    let rows = changes.map(|c| c.rows.as_slice()).unwrap_or_default();
    if let Some(c) = changes {
        let newest = c.rows.first().map(|r| r.listed_ms);
        out.rewound = !first_sync
            && (dir.watermark_ms.is_some_and(|w| newest.map_or(true, |n| n < w)) || c.rows.len() < dir.rows_seen);
    }
    let by_path: BTreeMap<&str, &Row> = rows.iter().map(|r| (r.path.as_str(), r)).collect();
    for r in rows {
        let due = match dir.documents.get(&r.path) {
            None => {
                if first_sync && since_ms.is_some_and(|s| r.listed_ms < s) {
                    out.before_since += 1;
                    false
                } else {
                    true
                }
            }
            Some(d) => owed(d, Some(r.listed_ms), now_ms, retry_all),
        };
        if due && planned.insert(r.path.clone()) {
            out.fetch.push(Candidate {
                path: r.path.clone(),
                listed: Some(r.listed.clone()),
                listed_ms: Some(r.listed_ms),
            });
        }
    }
    for p in index.unwrap_or_default() {
        // A listed path was decided by its row; a known one by its state.
        if planned.contains(p) || by_path.contains_key(p.as_str()) || dir.documents.contains_key(p) {
            continue;
        }
        if first_sync && since_ms.is_some() {
            // No listed time: not part of a first sync from `since`.
            out.before_since += 1;
            continue;
        }
        planned.insert(p.clone());
        out.fetch.push(Candidate { path: p.clone(), listed: None, listed_ms: None });
    }
    // Failed documents due for a retry that no row names this run (changes.csv not
    // modified, or the row is gone).
    for (p, d) in &dir.documents {
        if planned.contains(p) || by_path.contains_key(p.as_str()) {
            continue;
        }
        if !d.outcome.settled() && (retry_all || d.next_retry_ms.map_or(true, |t| t <= now_ms)) {
            planned.insert(p.clone());
            out.fetch.push(Candidate { path: p.clone(), listed: d.listed.clone(), listed_ms: listed_ms(d) });
        }
    }
    out
}

/// The watermark after a run: the newest listed time such that every row listed at or
/// before it is settled (never earlier than `previous`).
pub fn watermark(changes: &Changes, dir: &DirectoryState, previous: Option<i64>) -> Option<i64> {
    let mut rows: Vec<&Row> = changes.rows.iter().collect();
    rows.sort_by_key(|r| r.listed_ms);
    let mut w = previous;
    for r in rows {
        if previous.is_some_and(|p| r.listed_ms <= p) {
            continue;
        }
        let settled = dir
            .documents
            .get(&r.path)
            .is_some_and(|d| d.outcome.settled() && listed_ms(d).is_some_and(|k| k >= r.listed_ms));
        if !settled {
            break;
        }
        w = Some(r.listed_ms);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::feed_state::DocOutcome;

    const META: &str = r#"{"canonical_url":"https://p.example/.well-known/csaf/provider-metadata.json",
        "distributions":[{"directory_url":"https://p.example/.well-known/csaf/white"},{"rolie":{"feeds":[]}}],
        "metadata_version":"2.0","publisher":{"category":"vendor","name":"P","namespace":"https://p.example"},
        "role":"csaf_trusted_provider"}"#;
    const URL: &str = "https://p.example/.well-known/csaf/provider-metadata.json";

    #[test]
    fn metadata_gives_role_namespace_and_directories_on_its_own_host() {
        assert_eq!(metadata_url("p.example"), URL);
        assert_eq!(metadata_url(URL), URL);
        let m = parse_metadata(META.as_bytes(), URL).unwrap();
        assert_eq!(m.role, Role::CsafTrustedProvider);
        assert_eq!(m.namespace, "https://p.example");
        assert_eq!(m.directories, ["https://p.example/.well-known/csaf/white/"]);
        assert_eq!(folder_tlp(&m.directories[0]), Tlp::White);
        assert_eq!(folder_tlp("https://p.example/csaf/"), Tlp::Unlabeled);
        let foreign = META.replace("https://p.example/.well-known/csaf/white", "https://evil.example/csaf/white");
        assert_eq!(parse_metadata(foreign.as_bytes(), URL).unwrap_err().code(), "foreign_directory");
        let clear = META.replace("https://p.example/.well-known", "http://p.example/.well-known");
        assert_eq!(parse_metadata(clear.as_bytes(), URL).unwrap_err().code(), "foreign_directory");
        let rolie_only = META.replace(r#"{"directory_url":"https://p.example/.well-known/csaf/white"},"#, "");
        assert_eq!(parse_metadata(rolie_only.as_bytes(), URL).unwrap_err().code(), "no_directory");
        let no_ns = META.replace(r#""namespace":"https://p.example""#, r#""namespace":"""#);
        assert_eq!(parse_metadata(no_ns.as_bytes(), URL).unwrap_err().code(), "metadata_invalid");
        assert_eq!(parse_metadata(b"<html>", URL).unwrap_err().code(), "metadata_invalid");
        let names = ["p".to_string(), "HTTPS://P.EXAMPLE/".to_string()];
        assert!(namespace_names_issuer("https://p.example", &names));
        assert!(!namespace_names_issuer("https://q.example", &names));
    }

    #[test]
    fn changes_csv_in_both_forms_with_duplicates_and_malformed_rows() {
        let text = "\"2024/b.json\",\"2024-02-01T00:00:00Z\"\n\
                    2024/a.json,2024-01-01T00:00:00.5+01:00\n\
                    \n\
                    \"2024/b.json\",\"2023-12-01T00:00:00Z\"\n\
                    2024/c.json\n\
                    2024/d.json,yesterday\n\
                    \"2024/e.json,2024-01-01T00:00:00Z\n\
                    2024/f.json,2024-01-01T00:00:00Z,extra\n";
        let c = parse_changes(text);
        let got: Vec<(&str, i64)> = c.rows.iter().map(|r| (r.path.as_str(), r.listed_ms)).collect();
        assert_eq!(got, [("2024/b.json", 1_706_745_600_000), ("2024/a.json", 1_704_063_600_500)]);
        assert_eq!((c.duplicates, c.malformed), (1, 4));
        assert_eq!(parse_index("2024/a.json\n\n 2024/b.json \n2024/a.json\n"), ["2024/a.json", "2024/b.json"]);
    }

    #[test]
    fn paths_must_stay_under_the_directory() {
        let d = "https://p.example/csaf/white/";
        assert_eq!(resolve(d, "2024/a.json").unwrap(), "https://p.example/csaf/white/2024/a.json");
        for (p, why) in [
            ("../2024/a.json", PathReject::DotDot),
            ("2024/../../a.json", PathReject::DotDot),
            ("2024/%2E%2e/a.json", PathReject::DotDot),
            ("./a.json", PathReject::DotDot),
            ("/csaf/white/2024/a.json", PathReject::Absolute),
            ("https://evil.example/a.json", PathReject::ForeignHost),
            ("//evil.example/a.json", PathReject::ForeignHost),
            ("2024//a.json", PathReject::Invalid),
            ("2024/a.json?x=1", PathReject::Invalid),
            ("2024\\a.json", PathReject::Invalid),
            ("2024%2fa.json", PathReject::Invalid),
            ("", PathReject::Invalid),
            ("2024/a.txt", PathReject::NotJson),
        ] {
            assert_eq!(resolve(d, p), Err(why), "{p}");
        }
        assert_eq!(path_warnings("2024/a.json"), []);
        assert_eq!(path_warnings("a.json"), [Warning::YearFolder]);
        assert_eq!(path_warnings("24/a.json"), [Warning::YearFolder]);
        assert_eq!(file_name_for("RHSA-2020:1358"), "rhsa-2020_1358.json");
        assert_eq!(file_name_for("CVE-2024+X Y"), "cve-2024+x_y.json");
    }

    #[test]
    fn every_hash_present_must_match_its_file_and_a_trusted_provider_must_hash() {
        let doc = b"{\"a\":1}";
        let s256 = format!("{}  a.json\n", sha256_hex(doc));
        let s512 = format!("{} *a.json\n", hex::encode(ring::digest::digest(&ring::digest::SHA512, doc)));
        fn files<'a>(a: Option<&'a str>, b: Option<&'a str>) -> HashFiles<'a> {
            HashFiles { sha256: a.map(str::as_bytes), sha512: b.map(str::as_bytes) }
        }
        assert_eq!(check_hashes(doc, "a.json", files(Some(&s256), Some(&s512)), Role::CsafTrustedProvider), Ok(true));
        assert_eq!(check_hashes(doc, "a.json", files(Some(&s256), None), Role::CsafTrustedProvider), Ok(true));
        let bare = sha256_hex(doc);
        assert_eq!(check_hashes(doc, "a.json", files(Some(&bare), None), Role::CsafProvider), Ok(true));
        // A wrong sha512 beside a right sha256 rejects.
        let wrong512 = format!("{}  a.json\n", "0".repeat(128));
        assert_eq!(
            check_hashes(doc, "a.json", files(Some(&s256), Some(&wrong512)), Role::CsafProvider),
            Err(HashReject::Mismatch)
        );
        // The right digest naming another file rejects.
        let other = format!("{}  b.json\n", sha256_hex(doc));
        assert_eq!(
            check_hashes(doc, "a.json", files(Some(&other), None), Role::CsafProvider),
            Err(HashReject::Mismatch)
        );
        for garbage in ["", "not a hash\n", "abc  a.json\n", "\u{0}\u{1}"] {
            assert_eq!(
                check_hashes(doc, "a.json", files(Some(garbage), None), Role::CsafProvider),
                Err(HashReject::Malformed),
                "{garbage:?}"
            );
        }
        let two = format!("{s256}{s256}");
        assert_eq!(
            check_hashes(doc, "a.json", files(Some(&two), None), Role::CsafProvider),
            Err(HashReject::Malformed)
        );
        assert_eq!(check_hashes(doc, "a.json", files(None, None), Role::CsafProvider), Ok(false));
        assert_eq!(check_hashes(doc, "a.json", files(None, None), Role::CsafTrustedProvider), Err(HashReject::Missing));
    }

    fn csaf(tlp: Option<&str>, ns: &str, id: &str, initial: &str, current: &str) -> Vec<u8> {
        let mut d = serde_json::json!({"document": {"publisher": {"namespace": ns},
            "tracking": {"id": id, "initial_release_date": initial, "current_release_date": current}}});
        if let Some(l) = tlp {
            d["document"]["distribution"] = serde_json::json!({"tlp": {"label": l}});
        }
        serde_json::to_vec(&d).unwrap()
    }

    #[test]
    fn documents_are_judged_by_tlp_publisher_age_and_name() {
        let ns = "https://p.example";
        let allowed = [Tlp::Clear, Tlp::White, Tlp::Unlabeled];
        let t = |s: &str| Some(Timestamp::parse(s).unwrap().unix_millis());
        let good = csaf(Some("WHITE"), ns, "CVE-2024-1", "2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z");
        assert_eq!(
            inspect(&good, "2024/cve-2024-1.json", ns, &allowed, t("2024-03-01T00:00:00Z")),
            Verdict::Emit(vec![])
        );
        assert_eq!(
            inspect(&good, "2023/x.json", ns, &allowed, None),
            Verdict::Emit(vec![Warning::YearFolder, Warning::FileName])
        );
        let amber = csaf(Some("AMBER"), ns, "CVE-2024-1", "2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z");
        assert_eq!(
            inspect(&amber, "2024/cve-2024-1.json", ns, &allowed, None),
            Verdict::Skip(SkipReason::TlpNotAllowed)
        );
        let unlabeled = csaf(None, ns, "CVE-2024-1", "2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z");
        assert_eq!(
            inspect(&unlabeled, "2024/cve-2024-1.json", ns, &[Tlp::White], None),
            Verdict::Skip(SkipReason::TlpNotAllowed)
        );
        assert_eq!(inspect(&unlabeled, "2024/cve-2024-1.json", ns, &allowed, None), Verdict::Emit(vec![]));
        let other =
            csaf(Some("WHITE"), "https://q.example", "CVE-2024-1", "2024-01-01T00:00:00Z", "2024-03-01T00:00:00Z");
        assert_eq!(
            inspect(&other, "2024/cve-2024-1.json", ns, &allowed, None),
            Verdict::Skip(SkipReason::PublisherMismatch)
        );
        // Older than its listing: a stale cache, deferred.
        assert_eq!(inspect(&good, "2024/cve-2024-1.json", ns, &allowed, t("2024-04-01T00:00:00Z")), Verdict::Defer);
        assert_eq!(inspect(b"not json", "2024/a.json", ns, &allowed, None), Verdict::Emit(vec![]));
    }

    fn doc(listed: &str, outcome: DocOutcome, next_retry_ms: Option<i64>) -> DocState {
        DocState { listed: Some(listed.into()), outcome, reason: None, digests: None, failures: 0, next_retry_ms }
    }

    #[test]
    fn plans_fetch_new_changed_and_due_documents_and_detect_rewinds() {
        let changes = parse_changes(
            "2024/c.json,2024-03-01T00:00:00Z\n2024/b.json,2024-02-01T00:00:00Z\n2024/a.json,2024-01-01T00:00:00Z\n",
        );
        let index = vec!["2024/a.json".to_string(), "2024/b.json".into(), "2024/c.json".into(), "2023/z.json".into()];
        // First sync: index and changes; `since` leaves out older rows and unlisted paths.
        let fresh = DirectoryState::default();
        let p = plan(Some(&changes), Some(&index), &fresh, None, 0, false);
        let paths: Vec<&str> = p.fetch.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["2024/c.json", "2024/b.json", "2024/a.json", "2023/z.json"]);
        assert_eq!(p.fetch[3].listed, None);
        let since = Timestamp::parse("2024-01-15T00:00:00Z").unwrap().unix_millis();
        let p = plan(Some(&changes), Some(&index), &fresh, Some(since), 0, false);
        assert_eq!(p.fetch.len(), 2);
        assert_eq!(p.before_since, 2);

        // Later: only the changed row and the failed one whose retry is due.
        let mut dir = DirectoryState { rows_seen: 3, synced: true, ..Default::default() };
        dir.documents.insert("2024/a.json".into(), doc("2024-01-01T00:00:00Z", DocOutcome::Emitted, None));
        dir.documents.insert("2024/b.json".into(), doc("2024-01-20T00:00:00Z", DocOutcome::Emitted, None));
        dir.documents.insert("2024/c.json".into(), doc("2024-03-01T00:00:00Z", DocOutcome::Failed, Some(100)));
        dir.watermark_ms = watermark(&changes, &dir, None);
        assert_eq!(dir.watermark_ms, Some(Timestamp::parse("2024-01-01T00:00:00Z").unwrap().unix_millis()));
        let p = plan(Some(&changes), None, &dir, None, 50, false);
        assert_eq!(p.fetch.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["2024/b.json"]);
        assert!(!p.rewound);
        let p = plan(Some(&changes), None, &dir, None, 100, false);
        assert_eq!(p.fetch.len(), 2, "c's retry is due");
        let p = plan(None, None, &dir, None, 50, true);
        assert_eq!(
            p.fetch.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(),
            ["2024/c.json"],
            "not modified: retries only"
        );
        // Settled everywhere: nothing to do, the watermark at the newest row.
        for d in dir.documents.values_mut() {
            d.outcome = DocOutcome::Emitted;
        }
        dir.documents.get_mut("2024/b.json").unwrap().listed = Some("2024-02-01T00:00:00Z".into());
        assert_eq!(plan(Some(&changes), None, &dir, None, 0, true), Plan::default());
        let w = watermark(&changes, &dir, dir.watermark_ms);
        assert_eq!(w, Some(Timestamp::parse("2024-03-01T00:00:00Z").unwrap().unix_millis()));
        dir.watermark_ms = w;
        // A rewind: rows gone, or the newest row older than the watermark.
        let fewer = parse_changes("2024/c.json,2024-03-01T00:00:00Z\n");
        assert!(plan(Some(&fewer), None, &dir, None, 0, false).rewound);
        let older = parse_changes(
            "2024/c.json,2024-02-15T00:00:00Z\n2024/b.json,2024-02-01T00:00:00Z\n2024/a.json,2024-01-01T00:00:00Z\n",
        );
        let p = plan(Some(&older), None, &dir, None, 0, false);
        assert!(p.rewound && p.fetch.is_empty(), "an older listing is not refetched: {p:?}");
        // Reconciled against index.txt: only what the state does not know.
        let p = plan(Some(&older), Some(&index), &dir, None, 0, false);
        assert_eq!(p.fetch.iter().map(|c| c.path.as_str()).collect::<Vec<_>>(), ["2023/z.json"]);
    }
}
