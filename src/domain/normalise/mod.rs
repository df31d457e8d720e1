//! Turns VEX documents (OpenVEX, CSAF VEX, CycloneDX VEX) into observations.
//!
//! Invariants: pure; never panics on any input (size and nesting are bounded, every
//! field is read defensively); every failure is a typed [`NormaliseError`] naming the
//! document and the problem; a product that resolves to no global key is reported as a
//! diagnostic, never dropped silently; no vulnerability id, product id or key longer than
//! [`MAX_KEY_BYTES`] reaches an observation (a `too_long` diagnostic instead).

pub mod csaf;
pub mod cyclonedx;
mod fields;
pub mod openvex;

use super::canonical::sha256_prefixed;
use super::codes::DeadLetterReason;
use super::keys::ArtifactKey;
use super::keys::MAX_KEY_BYTES;
use super::model::{
    vulnerability_key, Diagnostic, DiagnosticCode, EntryKind, IngestContext, IssuerSource, Justification,
    NormalisedDocument, Observation, SourceFormat, Status, TimestampSource,
};
use super::timestamp::Timestamp;
pub use fields::{str_field, version_string};
use serde_json::Value;
use std::sync::Arc;

/// Largest document accepted by default (bytes); the service and CLI may lower it.
pub const DEFAULT_MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

/// Why a document could not be normalised.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NormaliseError {
    #[error("{document}: not valid JSON: {reason}")]
    NotJson { document: String, reason: String },
    #[error("{document}: document is {size} bytes, over the {limit}-byte limit")]
    TooLarge { document: String, size: usize, limit: usize },
    #[error("{document}: not a VEX document (no OpenVEX @context, CSAF document.category csaf_vex/csaf_security_advisory, or CycloneDX bomFormat with vulnerabilities)")]
    UnknownFormat { document: String },
    #[error("{document}: {format:?}: field {field}: {reason}")]
    InvalidField { document: String, format: SourceFormat, field: String, reason: String },
    #[error("{document}: statement {position} has no canonical form: {source}")]
    Unidentifiable { document: String, position: u32, source: crate::domain::canonical::CanonicalError },
}

impl NormaliseError {
    /// Stable reason code (used as the DLQ `vex-lens-error` header).
    pub fn code(&self) -> DeadLetterReason {
        match self {
            NormaliseError::NotJson { .. } => DeadLetterReason::InvalidJson,
            NormaliseError::TooLarge { .. } => DeadLetterReason::TooLarge,
            NormaliseError::UnknownFormat { .. } => DeadLetterReason::NotVex,
            NormaliseError::InvalidField { .. } | NormaliseError::Unidentifiable { .. } => {
                DeadLetterReason::InvalidDocument
            }
        }
    }
}

/// The constructor of a document's `InvalidField` errors: `bad(field_path, reason)`.
pub(crate) fn field_error(document: &str, format: SourceFormat) -> impl Fn(String, &str) -> NormaliseError + '_ {
    move |field, reason| NormaliseError::InvalidField {
        document: document.to_string(),
        format,
        field,
        reason: reason.to_string(),
    }
}

/// Detects the format of a parsed document.
pub fn detect(v: &Value) -> Option<SourceFormat> {
    let obj = v.as_object()?;
    if let Some(ctx) = obj.get("@context").and_then(Value::as_str) {
        if ctx.starts_with("https://openvex.dev/ns") {
            return Some(SourceFormat::Openvex);
        }
    }
    if obj.get("bomFormat").and_then(Value::as_str) == Some("CycloneDX") {
        return Some(SourceFormat::Cyclonedx);
    }
    if let Some(doc) = obj.get("document").and_then(Value::as_object) {
        if doc.get("csaf_version").is_some()
            || doc.get("category").and_then(Value::as_str).is_some_and(|c| c.starts_with("csaf_"))
        {
            return Some(SourceFormat::Csaf);
        }
    }
    None
}

/// Normalises one document given as bytes. `name` names it in errors (a path, or
/// `topic/partition@offset`).
pub fn normalise_bytes(
    name: &str,
    bytes: &[u8],
    ctx: &IngestContext,
    max_bytes: usize,
) -> Result<NormalisedDocument, NormaliseError> {
    if bytes.len() > max_bytes {
        return Err(NormaliseError::TooLarge { document: name.to_string(), size: bytes.len(), limit: max_bytes });
    }
    // serde_json limits nesting to 128 levels and reports it as an error.
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| NormaliseError::NotJson { document: name.to_string(), reason: e.to_string() })?;
    let digest = sha256_prefixed(bytes);
    normalise_value(name, &value, &digest, ctx)
}

/// Normalises an already parsed document whose bytes hashed to `digest`.
pub fn normalise_value(
    name: &str,
    value: &Value,
    digest: &str,
    ctx: &IngestContext,
) -> Result<NormalisedDocument, NormaliseError> {
    let format = detect(value).ok_or_else(|| NormaliseError::UnknownFormat { document: name.to_string() })?;
    let mut doc = match format {
        SourceFormat::Openvex => openvex::normalise(name, value, digest, ctx)?,
        SourceFormat::Csaf => csaf::normalise(name, value, digest, ctx)?,
        SourceFormat::Cyclonedx => cyclonedx::normalise(name, value, digest, ctx)?,
    };
    doc.observations = split_by_cve(std::mem::take(&mut doc.observations));
    // The last guard of the length limit: whatever a normaliser made, no over-long key,
    // package or scope entry reaches an observation.
    let diagnostics = &mut doc.diagnostics;
    doc.observations.retain(|o| {
        let long = [&o.artifact, &o.package, &o.vulnerability]
            .into_iter()
            .chain(o.scope.iter())
            .find(|s| s.len() > MAX_KEY_BYTES);
        match long {
            Some(s) => {
                diagnostics.push(too_long_diagnostic("key", &format!("statement {}", o.position), s));
                false
            }
            None => true,
        }
    });
    for o in &mut doc.observations {
        o.id = o
            .compute_id()
            .map_err(|source| NormaliseError::Unidentifiable {
                document: name.to_string(),
                position: o.position,
                source,
            })?
            .into();
    }
    Ok(doc)
}

/// One observation per CVE a statement names (CONSENSUS.md "Keys"): a statement whose id
/// and aliases name several CVEs (e.g. a `GO-`/`GHSA-` advisory aliasing two) counts in
/// the pair of each; `vulnerability` is that CVE and `aliases` stays the full list.
fn split_by_cve(observations: Vec<crate::domain::model::Observation>) -> Vec<crate::domain::model::Observation> {
    let mut out = Vec::with_capacity(observations.len());
    for o in observations {
        let mut cves: Vec<String> = o
            .aliases
            .iter()
            .filter(|a| a.to_ascii_uppercase().starts_with("CVE-"))
            .map(|a| a.to_ascii_uppercase())
            .collect();
        cves.sort();
        cves.dedup();
        if cves.len() <= 1 {
            out.push(o);
            continue;
        }
        for cve in cves {
            let mut c = o.clone();
            c.vulnerability = cve.into();
            out.push(c);
        }
    }
    out
}

fn too_long_diagnostic(what: &str, path: &str, s: &str) -> Diagnostic {
    let head: String = s.chars().take(64).collect();
    Diagnostic {
        code: DiagnosticCode::TooLong,
        message: format!(
            "{path}: {what} of {} bytes ({head:?}...) is over the {MAX_KEY_BYTES}-byte limit; not a key",
            s.len()
        ),
    }
}

/// Reports `s` (a `what` at `path`) when it is over the length limit; true when it is.
pub(crate) fn too_long(what: &str, path: &str, s: &str, diagnostics: &mut Vec<Diagnostic>) -> bool {
    let long = s.len() > MAX_KEY_BYTES;
    if long {
        diagnostics.push(too_long_diagnostic(what, path, s));
    }
    long
}

/// The vulnerability key and aliases ([`vulnerability_key`]) of the statement at `path`
/// from its `ids`. Ids over the length limit are dropped, each reported: `Ok(None)` when
/// ids were given but none is left (the statement is skipped); `missing()` when no id
/// names a vulnerability.
pub(crate) fn statement_vulnerability(
    mut ids: Vec<String>,
    path: &str,
    diagnostics: &mut Vec<Diagnostic>,
    missing: impl FnOnce() -> NormaliseError,
) -> Result<Option<(String, Vec<String>)>, NormaliseError> {
    let before = ids.len();
    ids.retain(|id| !too_long("vulnerability id", path, id, diagnostics));
    if before > 0 && ids.is_empty() {
        return Ok(None);
    }
    vulnerability_key(ids).ok_or_else(missing).map(Some)
}

/// Resolves the claimed issuer (CONSENSUS.md "Issuer identity"): signature, else header,
/// else the document's own author, else none.
pub fn resolve_issuer(ctx: &IngestContext, document_author: Option<&str>) -> (Option<String>, IssuerSource) {
    let clean = |s: &str| {
        let t = s.trim();
        (!t.is_empty()).then(|| t.to_string())
    };
    if let Some(s) = ctx.signed_issuer.as_deref().and_then(clean) {
        return (Some(s), IssuerSource::Signature);
    }
    if let Some(s) = ctx.issuer_header.as_deref().and_then(clean) {
        return (Some(s), IssuerSource::Header);
    }
    if let Some(s) = document_author.and_then(clean) {
        return (Some(s), IssuerSource::Document);
    }
    (None, IssuerSource::None)
}

/// Tenant from the context, `default` when absent or blank.
pub fn tenant_of(ctx: &IngestContext) -> String {
    ctx.tenant
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| super::model::default_tenant().to_string())
}

/// What every observation of one document repeats (its tenant, claimed issuer, id,
/// version, digest, format, signature and provenance), made once per document so that its
/// observations share the strings instead of each holding a copy. [`Self::observation`]
/// is the one place a normaliser makes an observation.
pub struct DocumentFacts<'c> {
    pub tenant: Arc<str>,
    pub issuer: Option<Arc<str>>,
    pub issuer_source: IssuerSource,
    pub document_id: Option<Arc<str>>,
    pub document_version: Option<Arc<str>>,
    pub document_digest: Arc<str>,
    pub format: SourceFormat,
    ctx: &'c IngestContext,
}

/// What a statement says of its vulnerability and when, the same for every artifact it
/// names.
pub struct Subject {
    pub vulnerability: Arc<str>,
    /// Every id given for it (sorted, unique, the key included).
    pub aliases: Vec<Arc<str>>,
    pub timestamp: Timestamp,
    pub timestamp_source: TimestampSource,
}

/// What a statement claims of one artifact: its status and the texts that go with it.
#[derive(Clone)]
pub struct Claim {
    pub status: Status,
    /// The source's own status token.
    pub status_original: Arc<str>,
    pub justification: Option<Justification>,
    pub justification_original: Option<Arc<str>>,
    pub impact_statement: Option<Arc<str>>,
    pub action_statement: Option<Arc<str>>,
}

impl<'c> DocumentFacts<'c> {
    /// The facts of a document of `format` with these id, version and digest, and the
    /// claimed issuer [`resolve_issuer`] gives for `author` (the document's own author).
    pub fn new(
        ctx: &'c IngestContext,
        format: SourceFormat,
        author: Option<&str>,
        document_id: Option<&str>,
        document_version: Option<&str>,
        digest: &str,
    ) -> Self {
        let (issuer, issuer_source) = resolve_issuer(ctx, author);
        DocumentFacts {
            tenant: tenant_of(ctx).into(),
            issuer: issuer.map(Arc::from),
            issuer_source,
            document_id: document_id.map(Arc::from),
            document_version: document_version.map(Arc::from),
            document_digest: digest.into(),
            format,
            ctx,
        }
    }

    /// The observation (without its id, set by [`normalise_value`]) of what `subject` and
    /// `claim` say of the artifact `key` narrowed to `scope`, at `position` in the
    /// document.
    pub fn observation(
        &self,
        subject: &Subject,
        key: ArtifactKey,
        scope: Vec<String>,
        claim: Claim,
        position: u32,
    ) -> Observation {
        Observation {
            id: Arc::from(""),
            kind: EntryKind::Statement,
            tenant: self.tenant.clone(),
            issuer: self.issuer.clone(),
            issuer_source: self.issuer_source,
            artifact: key.key.into(),
            package: key.package.into(),
            scope: shared_all(scope),
            vulnerability: subject.vulnerability.clone(),
            aliases: subject.aliases.clone(),
            status: claim.status,
            status_original: claim.status_original,
            justification: claim.justification,
            justification_original: claim.justification_original,
            impact_statement: claim.impact_statement,
            action_statement: claim.action_statement,
            timestamp: subject.timestamp,
            timestamp_source: subject.timestamp_source,
            document_id: self.document_id.clone(),
            document_version: self.document_version.clone(),
            document_digest: self.document_digest.clone(),
            position,
            format: self.format,
            signature: self.ctx.signature.clone(),
            provenance: self.ctx.provenance.clone(),
        }
    }

    /// The normalised document of these observations and diagnostics.
    pub fn document(&self, observations: Vec<Observation>, diagnostics: Vec<Diagnostic>) -> NormalisedDocument {
        NormalisedDocument {
            format: self.format,
            document_id: self.document_id.as_deref().map(str::to_string),
            document_digest: self.document_digest.to_string(),
            observations,
            diagnostics,
        }
    }
}

/// Each string of a list as a shared string.
pub fn shared_all(v: Vec<String>) -> Vec<Arc<str>> {
    v.into_iter().map(Arc::from).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Normalises `base` with each node (object member or array element, at any depth)
    /// whose path `keep` accepts replaced, one at a time, by each of `hostile`: the
    /// normaliser must answer (a document or a typed error), never panic. A path is the
    /// keys (strings) and indexes (numbers) from the root.
    pub(crate) fn normalise_each_node_replaced(base: &Value, hostile: &[Value], keep: impl Fn(&[Value]) -> bool) {
        fn paths(v: &Value, cur: Vec<Value>, out: &mut Vec<Vec<Value>>) {
            out.push(cur.clone());
            match v {
                Value::Object(o) => o.iter().for_each(|(k, x)| {
                    let mut p = cur.clone();
                    p.push(Value::String(k.clone()));
                    paths(x, p, out)
                }),
                Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| {
                    let mut p = cur.clone();
                    p.push(Value::from(i));
                    paths(x, p, out)
                }),
                _ => {}
            }
        }
        fn at<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
            path.iter().fold(v, |v, k| match k {
                Value::String(s) => &mut v[s.as_str()],
                _ => &mut v[k.as_u64().unwrap_or(0) as usize],
            })
        }
        let mut all = Vec::new();
        paths(base, Vec::new(), &mut all);
        for p in all.iter().filter(|p| keep(p)) {
            for h in hostile {
                let mut doc = base.clone();
                *at(&mut doc, p) = h.clone();
                let _ = normalise_value("t.json", &doc, "sha256:00", &IngestContext::default());
            }
        }
    }
}
