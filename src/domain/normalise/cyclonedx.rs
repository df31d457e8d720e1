//! CycloneDX 1.4–1.6 VEX (a BOM's `vulnerabilities` with `analysis`).
//!
//! Invariants: a vulnerability without `analysis.state` is not a VEX statement (diagnostic
//! `no_analysis_state`, skipped); one observation per (vulnerability, affects entry) in
//! document order, or one per `affects[].versions[]` entry when it lists versions; a
//! bom-ref is never a key: it resolves to the referenced component or service of this
//! BOM (metadata.component, components and services, nested ones included) and from it to
//! purl > CPE > hash (SHA-256 preferred) > name key (group > supplier > publisher >
//! provider > the document's author, name, version); a BOM-Link to this BOM's own serial
//! number resolves locally first, any other BOM-Link is its own key (a purl fragment
//! gives the purl); a ref that is neither but is a purl is that purl, or an image
//! reference (registry host or digest) its `pkg:oci` purl; what resolves to nothing is
//! reported as `unmatched_product` (a bare bom-ref is never an opaque key), and a ref
//! over the length limit as `too_long`. A versions entry gives the resolved key
//! that version or `vers:` range (purl, BOM-Link and name keys; CPE and hash keys cannot
//! carry a version, are used as they are and reported as `version_not_applied`, and so is
//! a range that does not parse, e.g. of an unknown scheme); its status is
//! `affected` -> affected, `unaffected` -> the analysis status when that is not_affected
//! or fixed else not_affected, `unknown` -> under_investigation, absent -> the analysis
//! status; status_original is `<state>` or `<state>/<entry status>`. Justification and
//! `analysis.detail` (as impact statement) are kept only on not_affected observations of
//! a not_affected analysis; the action statement is the responses joined with ", " (plus
//! ": <detail>" on the other observations, or the detail alone when there is no
//! response). Timestamp: analysis.lastUpdated > analysis.firstIssued (statement) >
//! metadata.timestamp (document) > epoch. The vulnerability's `published`/`updated` date
//! the vulnerability record, not the analysis, and are not a statement's time.

use super::fields::{
    array_field, objects, opt_object, opt_str, opt_timestamp, required_array, required_str, str_field, string_list,
    version_string, Bad,
};
use super::{shared_all, Claim, DocumentFacts, NormaliseError, Subject};
use crate::domain::keys::{self, ArtifactKey, KeyKind};
use crate::domain::model::*;
use crate::domain::timestamp::Timestamp;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Deepest component/service nesting walked (serde_json already stops at 128 levels).
const MAX_COMPONENT_DEPTH: usize = 64;

pub fn normalise(
    name: &str,
    v: &Value,
    digest: &str,
    ctx: &IngestContext,
) -> Result<NormalisedDocument, NormaliseError> {
    let bad = super::field_error(name, SourceFormat::Cyclonedx);
    let mut diagnostics = Vec::new();
    let serial = opt_str(v, "serialNumber", "", &bad)?;
    let doc_version = version_string(v.get("version"));
    let (metadata, doc_ts) = read_metadata(v, &bad)?;
    let author = metadata.and_then(document_author);
    let facts = DocumentFacts::new(ctx, SourceFormat::Cyclonedx, author, serial, doc_version.as_deref(), digest);

    // bom-ref -> (component or service, its path).
    let index = index_document(v, metadata, &mut diagnostics, &bad)?;
    let own_serial = serial.map(bare_serial);
    let resolver = Resolver { index: &index, own_serial: own_serial.as_deref(), author: author.unwrap_or("") };

    let vulnerabilities = required_array(v, "vulnerabilities", "", &bad)?;
    let mut observations = Vec::new();
    let mut position: u32 = 0;
    for item in objects(vulnerabilities, "vulnerabilities", &bad) {
        let (path, vuln) = item?;
        let mut ids = vulnerability_ids(vuln, &path, &bad)?;
        ids.retain(|s| !s.contains("://"));
        let missing = || bad(format!("{path}.id"), "names no vulnerability id");
        let Some((vulnerability, aliases)) = super::statement_vulnerability(ids, &path, &mut diagnostics, missing)?
        else {
            continue;
        };

        let Some(an) = read_analysis(vuln, &path, &vulnerability, doc_ts, &mut diagnostics, &bad)? else {
            continue;
        };
        let Analysis {
            state,
            status: analysis_status,
            justification,
            justification_original,
            responses,
            detail,
            other_action,
            timestamp,
            timestamp_source,
        } = an;
        // Shared by the observations of every affected artifact.
        let subject =
            Subject { vulnerability: vulnerability.into(), aliases: shared_all(aliases), timestamp, timestamp_source };
        let [justification_original, responses, other_action] =
            [justification_original, responses, other_action].map(|s| s.map(Arc::from));
        let detail: Option<Arc<str>> = detail.map(Arc::from);
        let affects = array_field(vuln, "affects", &path, &bad)?;
        if affects.is_empty() {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::UnmatchedStatement,
                message: format!("{path}: statement for {} affects nothing (no affects[])", subject.vulnerability),
            });
        }
        for item in objects(affects, &format!("{path}.affects"), &bad) {
            let (afpath, af) = item?;
            let r = required_str(af, "ref", &afpath, &bad)?;
            // Entries are validated before the ref is resolved, so a broken document
            // fails the same way whether or not its refs resolve.
            let mut entries = version_entries(af, &afpath, &bad)?;
            let Some(key) = resolver.resolve(r, &afpath, &mut diagnostics) else {
                continue;
            };
            if entries.is_empty() {
                entries.push((None, None));
            }
            for (ei, (ver, est)) in entries.into_iter().enumerate() {
                let artifact = match ver {
                    Some(ver) => match with_version(&key, ver, &format!("{afpath}.versions[{ei}]"), &mut diagnostics) {
                        Some(k) => k,
                        None => continue,
                    },
                    None => key.clone(),
                };
                let status = version_status(est, analysis_status);
                let na = status == Status::NotAffected && analysis_status == Status::NotAffected;
                let claim = Claim {
                    status,
                    status_original: match est {
                        Some(e) => format!("{state}/{e}").into(),
                        None => state.into(),
                    },
                    justification: if na { justification } else { None },
                    justification_original: if na { justification_original.clone() } else { None },
                    impact_statement: if na { detail.clone() } else { None },
                    action_statement: if na { responses.clone() } else { other_action.clone() },
                };
                observations.push(facts.observation(&subject, artifact, Vec::new(), claim, position));
                position = position.saturating_add(1);
            }
        }
    }
    Ok(facts.document(observations, diagnostics))
}

/// What a vulnerability's `analysis` says (the statement's status and texts, and its
/// time: lastUpdated > firstIssued > the document's > the epoch, with a diagnostic).
struct Analysis<'a> {
    state: &'a str,
    status: Status,
    justification: Option<Justification>,
    justification_original: Option<String>,
    responses: Option<String>,
    detail: Option<&'a str>,
    other_action: Option<String>,
    timestamp: Timestamp,
    timestamp_source: TimestampSource,
}

/// Reads `vuln.analysis`; `None` (with a diagnostic) when it has no state: not a VEX
/// statement.
fn read_analysis<'a>(
    vuln: &'a Value,
    path: &str,
    vulnerability: &str,
    doc_ts: Option<Timestamp>,
    diagnostics: &mut Vec<Diagnostic>,
    bad: &Bad,
) -> Result<Option<Analysis<'a>>, NormaliseError> {
    let apath = format!("{path}.analysis");
    let analysis = opt_object(vuln, "analysis", path, bad)?;
    let Some(state) = analysis.map(|a| opt_str(a, "state", &apath, bad)).transpose()?.flatten() else {
        diagnostics.push(Diagnostic {
            code: DiagnosticCode::NoAnalysisState,
            message: format!("{path}: {vulnerability} has no analysis.state; not a VEX statement, skipped"),
        });
        return Ok(None);
    };
    let analysis = analysis.unwrap_or(&Value::Null);
    let analysis_status = Status::from_cyclonedx(state)
        .ok_or_else(|| bad(format!("{apath}.state"), &format!("unknown analysis state {state:?}")))?;
    let justification_original = opt_str(analysis, "justification", &apath, bad)?.map(str::to_string);
    let justification = justification_original.as_deref().and_then(Justification::from_cyclonedx);
    if let (Some(j), None) = (&justification_original, justification) {
        diagnostics.push(Diagnostic {
            code: DiagnosticCode::UnknownJustification,
            message: format!("{apath}.justification: {j:?} is not in the CycloneDX vocabulary; kept as original only"),
        });
    }
    let responses = string_list(analysis, "response", &apath, bad)?;
    let detail = opt_str(analysis, "detail", &apath, bad)?;
    let responses = (!responses.is_empty()).then(|| responses.join(", "));
    let other_action = match (&responses, detail) {
        (Some(r), Some(d)) => Some(format!("{r}: {d}")),
        (Some(r), None) => Some(r.clone()),
        (None, Some(d)) => Some(d.to_string()),
        (None, None) => None,
    };

    let st_ts = match opt_timestamp(analysis, "lastUpdated", &apath, bad)? {
        Some(t) => Some(t),
        None => opt_timestamp(analysis, "firstIssued", &apath, bad)?,
    };
    let (timestamp, timestamp_source) = match (st_ts, doc_ts) {
        (Some(t), _) => (t, TimestampSource::Statement),
        (None, Some(t)) => (t, TimestampSource::Document),
        (None, None) => {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::NoTimestamp,
                message: format!("{path}: no analysis or metadata timestamp; the Unix epoch is used"),
            });
            (Timestamp::EPOCH, TimestampSource::Epoch)
        }
    };

    Ok(Some(Analysis {
        state,
        status: analysis_status,
        justification,
        justification_original,
        responses,
        detail,
        other_action,
        timestamp,
        timestamp_source,
    }))
}

/// A version (or range) of an `affects[]` entry and its own status.
type VersionEntry<'a> = (Option<&'a str>, Option<&'a str>);

/// An `affects[]` entry's `versions[]`: (version or range, its status), each checked.
fn version_entries<'a>(af: &'a Value, afpath: &str, bad: &Bad) -> Result<Vec<VersionEntry<'a>>, NormaliseError> {
    let mut entries: Vec<VersionEntry> = Vec::new();
    for item in objects(array_field(af, "versions", afpath, bad)?, &format!("{afpath}.versions"), bad) {
        let (epath, e) = item?;
        let ver = opt_str(e, "version", &epath, bad)?;
        let range = opt_str(e, "range", &epath, bad)?;
        let Some(ver) = ver.or(range) else {
            return Err(bad(epath, "needs a version or a range"));
        };
        let est = opt_str(e, "status", &epath, bad)?;
        if let Some(s) = est {
            if !matches!(s, "affected" | "unaffected" | "unknown") {
                return Err(bad(format!("{epath}.status"), &format!("unknown version status {s:?}")));
            }
        }
        entries.push((Some(ver), est));
    }
    Ok(entries)
}

/// Every component and service of the document (metadata.component, components[],
/// services[], nested ones included) by bom-ref, with its path.
fn index_document<'a>(
    v: &'a Value,
    metadata: Option<&'a Value>,
    diagnostics: &mut Vec<Diagnostic>,
    bad: &Bad,
) -> Result<BTreeMap<&'a str, (&'a Value, String)>, NormaliseError> {
    let mut index: BTreeMap<&str, (&Value, String)> = BTreeMap::new();
    if let Some(m) = metadata {
        if let Some(c) = opt_object(m, "component", "metadata", bad)? {
            let component = std::slice::from_ref(c);
            index_items(component, "metadata.component", "components", 0, &mut index, diagnostics, bad)?;
        }
    }
    index_items(array_field(v, "components", "", bad)?, "components", "components", 0, &mut index, diagnostics, bad)?;
    index_items(array_field(v, "services", "", bad)?, "services", "services", 0, &mut index, diagnostics, bad)?;
    Ok(index)
}

/// A vulnerability's `id` and its `references[].id`, in that order.
fn vulnerability_ids(vuln: &Value, path: &str, bad: &Bad) -> Result<Vec<String>, NormaliseError> {
    let mut ids: Vec<String> = opt_str(vuln, "id", path, bad)?.into_iter().map(str::to_string).collect();
    for item in objects(array_field(vuln, "references", path, bad)?, &format!("{path}.references"), bad) {
        let (rpath, r) = item?;
        if let Some(id) = opt_str(r, "id", &rpath, bad)? {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

/// The BOM's serial number as other BOMs' `urn:cdx:` links name it (lower case, without
/// `urn:uuid:`).
fn bare_serial(serial: &str) -> String {
    let s = serial.to_ascii_lowercase();
    s.strip_prefix("urn:uuid:").unwrap_or(&s).to_string()
}

/// `metadata` (an object, or absent) and its timestamp.
fn read_metadata<'a>(v: &'a Value, bad: &Bad) -> Result<(Option<&'a Value>, Option<Timestamp>), NormaliseError> {
    let metadata = opt_object(v, "metadata", "", bad)?;
    let doc_ts = match metadata {
        Some(m) => opt_timestamp(m, "timestamp", "metadata", bad)?,
        None => None,
    };
    Ok((metadata, doc_ts))
}

/// The status of one version of an affected component: its own `status` refines the
/// analysis state (`unaffected` keeps a not_affected/fixed analysis, else not_affected;
/// `unknown` is under investigation); none: the analysis state.
fn version_status(est: Option<&str>, analysis_status: Status) -> Status {
    match est {
        Some("affected") => Status::Affected,
        Some("unaffected") if matches!(analysis_status, Status::NotAffected | Status::Fixed) => analysis_status,
        Some("unaffected") => Status::NotAffected,
        Some(_) => Status::UnderInvestigation,
        None => analysis_status,
    }
}

/// The document's own author: metadata.supplier > manufacturer (1.6) / manufacture
/// (1.4–1.5) > authors[0] > metadata.component.supplier (names).
fn document_author(m: &Value) -> Option<&str> {
    fn named(v: Option<&Value>) -> Option<&str> {
        v.and_then(|x| str_field(x, "name"))
    }
    named(m.get("supplier"))
        .or_else(|| named(m.get("manufacturer")))
        .or_else(|| named(m.get("manufacture")))
        .or_else(|| named(m.get("authors").and_then(|a| a.get(0))))
        .or_else(|| named(m.get("component").and_then(|c| c.get("supplier"))))
}

/// Indexes components (or services) by bom-ref, nested ones included; the first
/// definition of a bom-ref wins.
fn index_items<'a>(
    items: &'a [Value],
    path: &str,
    child_key: &str,
    depth: usize,
    index: &mut BTreeMap<&'a str, (&'a Value, String)>,
    diagnostics: &mut Vec<Diagnostic>,
    bad: &Bad,
) -> Result<(), NormaliseError> {
    if depth >= MAX_COMPONENT_DEPTH && !items.is_empty() {
        return Err(bad(path.to_string(), &format!("{child_key} nested deeper than {MAX_COMPONENT_DEPTH} levels")));
    }
    let single = path == "metadata.component";
    for (i, c) in items.iter().enumerate() {
        let cpath = if single { path.to_string() } else { format!("{path}[{i}]") };
        if !c.is_object() {
            return Err(bad(cpath, "must be an object"));
        }
        if let Some(r) = opt_str(c, "bom-ref", &cpath, bad)? {
            if index.contains_key(r) {
                diagnostics.push(Diagnostic {
                    code: DiagnosticCode::DuplicateBomRef,
                    message: format!("{cpath}: bom-ref {r:?} is defined more than once; the first definition is used"),
                });
            } else {
                index.insert(r, (c, cpath.clone()));
            }
        }
        let children = array_field(c, child_key, &cpath, bad)?;
        index_items(children, &format!("{cpath}.{child_key}"), child_key, depth + 1, index, diagnostics, bad)?;
    }
    Ok(())
}

struct Resolver<'a> {
    index: &'a BTreeMap<&'a str, (&'a Value, String)>,
    /// This BOM's serial number, lower-case, without `urn:uuid:`.
    own_serial: Option<&'a str>,
    /// The document's author, the vendor of last resort for name keys.
    author: &'a str,
}

impl Resolver<'_> {
    /// Resolves an `affects[].ref`; reports and returns `None` when nothing resolves.
    fn resolve(&self, r: &str, path: &str, diagnostics: &mut Vec<Diagnostic>) -> Option<ArtifactKey> {
        let unmatched = |diagnostics: &mut Vec<Diagnostic>, why: String| {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::UnmatchedProduct,
                message: format!("{path}.ref: {r:?} {why}"),
            });
            None
        };
        if super::too_long("affects ref", &format!("{path}.ref"), r, diagnostics) {
            return None;
        }
        if let Some(rest) = r.strip_prefix("urn:cdx:") {
            let (doc, fragment) = rest.split_once('#').unwrap_or((rest, ""));
            let serial = doc.split('/').next().unwrap_or(doc).to_ascii_lowercase();
            if self.own_serial == Some(serial.as_str()) && !fragment.is_empty() {
                let fragment = percent_encoding::percent_decode_str(fragment).decode_utf8_lossy();
                if let Some((c, cpath)) = self.index.get(fragment.as_ref()) {
                    return self.component_key(c, cpath, path, diagnostics);
                }
            }
            return match keys::normalise_bomlink(r) {
                Ok(k) => Some(k),
                Err(e) => unmatched(diagnostics, format!("is not a valid BOM-Link ({e})")),
            };
        }
        if let Some((c, cpath)) = self.index.get(r) {
            return self.component_key(c, cpath, path, diagnostics);
        }
        if r.starts_with("pkg:") {
            return match keys::normalise_purl(r) {
                Ok(k) => Some(k),
                Err(e) => {
                    unmatched(diagnostics, format!("names no component of this BOM and is not a valid purl ({e})"))
                }
            };
        }
        if crate::domain::names::looks_like_image_reference(r) {
            return match crate::domain::names::image_reference_key(r) {
                Ok(k) => Some(k),
                Err(e) => unmatched(
                    diagnostics,
                    format!("names no component of this BOM and is not a valid image reference ({e})"),
                ),
            };
        }
        unmatched(diagnostics, "names no component or service of this BOM".to_string())
    }

    /// purl > CPE > hash (SHA-256 preferred) > name key; invalid identifiers are reported.
    fn component_key(
        &self,
        c: &Value,
        cpath: &str,
        path: &str,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Option<ArtifactKey> {
        let mut invalid = |what: &str, e: String| {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::InvalidIdentifier,
                message: format!("{cpath}.{what}: {e}; ignored"),
            });
        };
        if let Some(p) = str_field(c, "purl") {
            match keys::normalise_purl(p) {
                Ok(k) => return Some(k),
                Err(e) => invalid("purl", e.to_string()),
            }
        }
        if let Some(p) = str_field(c, "cpe") {
            match keys::normalise_cpe(p) {
                Ok(k) => return Some(k),
                Err(e) => invalid("cpe", e.to_string()),
            }
        }
        let mut hashes: Vec<(&str, &str)> = Vec::new();
        if let Some(Value::Array(hs)) = c.get("hashes") {
            for (i, h) in hs.iter().enumerate() {
                match (str_field(h, "alg"), str_field(h, "content")) {
                    (Some(a), Some(v)) if v.chars().all(|ch| ch.is_ascii_hexdigit()) => hashes.push((a, v)),
                    _ => invalid(&format!("hashes[{i}]"), "needs alg and hexadecimal content".to_string()),
                }
            }
        }
        let pick =
            hashes.iter().find(|(a, _)| a.to_ascii_lowercase().replace(['-', '_'], "") == "sha256").or(hashes.first());
        if let Some((a, v)) = pick {
            return Some(keys::normalise_hash(a, v));
        }
        let named = |k: &str| c.get(k).and_then(|x| str_field(x, "name"));
        match str_field(c, "name") {
            Some(n) => {
                let vendor = str_field(c, "group")
                    .or_else(|| named("supplier"))
                    .or_else(|| str_field(c, "publisher"))
                    .or_else(|| named("provider"))
                    .unwrap_or(self.author);
                Some(keys::name_key(vendor, n, str_field(c, "version")))
            }
            None => {
                diagnostics.push(Diagnostic {
                    code: DiagnosticCode::UnmatchedProduct,
                    message: format!("{path}.ref: {cpath} has no purl, CPE, hash or name"),
                });
                None
            }
        }
    }
}

/// The key `key` with `version` (a version or a `vers:` range) in place of its own.
/// Purl, BOM-Link and name keys carry a version; CPE and hash keys are returned as they
/// are, reported. A version or range that cannot be applied (e.g. a range of an unknown
/// scheme) is reported and gives `None`: the entry is skipped, never widened to every
/// version.
fn with_version(
    key: &ArtifactKey,
    version: &str,
    path: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ArtifactKey> {
    let not_applied = |diagnostics: &mut Vec<Diagnostic>, e: String| {
        diagnostics.push(Diagnostic {
            code: DiagnosticCode::VersionNotApplied,
            message: format!("{path}: version {version:?} cannot be applied to {}: {e}; the entry is skipped", key.key),
        });
        None
    };
    match key.kind {
        KeyKind::Purl | KeyKind::BomLink => match purl_with_version(key, version) {
            Ok(k) => Some(k),
            Err(e) => not_applied(diagnostics, e),
        },
        KeyKind::Name => {
            // Same form as keys::name_key (its package is already clean).
            let v = version.trim().to_string();
            if v.starts_with("vers:") {
                if let Err(e) = crate::domain::vers::validate(&v) {
                    return not_applied(diagnostics, e.to_string());
                }
            }
            Some(ArtifactKey {
                kind: KeyKind::Name,
                package: key.package.clone(),
                version: Some(v.clone()),
                qualifiers: BTreeMap::new(),
                key: format!("{}@{v}", key.package),
            })
        }
        _ => {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::VersionNotApplied,
                message: format!(
                    "{path}: a {:?} key cannot carry version {version:?}; {} is used as it is",
                    key.kind, key.key
                ),
            });
            Some(key.clone())
        }
    }
}

/// The purl `key` (qualifiers and subpath kept) with `version` in place of its own.
fn purl_with_version(key: &ArtifactKey, version: &str) -> Result<ArtifactKey, String> {
    key.with_version(version).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::super::{normalise_bytes, normalise_value};
    use super::*;

    fn norm(s: &str) -> Result<NormalisedDocument, NormaliseError> {
        normalise_bytes("t.json", s.as_bytes(), &IngestContext::default(), 1 << 20)
    }

    const BOM: &str = r#"{
      "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 3,
      "serialNumber": "urn:uuid:3E671687-395b-41f5-a30f-a58921a69b79",
      "metadata": {"timestamp": "2024-03-01T00:00:00Z", "manufacturer": {"name": "Acme"},
        "component": {"bom-ref": "app", "name": "Acme App", "version": "5.0", "components": [
          {"bom-ref": "fw", "name": "firmware", "hashes": [{"alg": "SHA-1", "content": "aa"}, {"alg": "SHA-256", "content": "BEEF"}]}]}},
      "components": [
        {"bom-ref": "lib", "name": "jackson-databind", "group": "com.fasterxml", "version": "2.10.0",
         "purl": "pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.10.0?type=jar",
         "components": [{"bom-ref": "inner", "name": "inner", "cpe": "cpe:2.3:a:acme:inner:1.0:*:*:*:*:*:*:*"}]},
        {"bom-ref": "nameless"}],
      "services": [{"bom-ref": "svc", "name": "api", "provider": {"name": "Acme Cloud"}}],
      "vulnerabilities": [
        {"id": "GHSA-1", "references": [{"id": "CVE-2024-9"}], "updated": "2024-04-01T00:00:00Z",
         "analysis": {"state": "not_affected", "justification": "code_not_reachable", "response": ["will_not_fix"],
                      "detail": "Never called.", "lastUpdated": "2024-05-01T00:00:00.5Z"},
         "affects": [{"ref": "lib"}, {"ref": "urn:cdx:3e671687-395b-41f5-a30f-a58921a69b79/2#inner"}, {"ref": "fw"},
                     {"ref": "svc"}, {"ref": "app"}, {"ref": "ghost"}, {"ref": "nameless"},
                     {"ref": "urn:cdx:0000/1#pkg:npm/left-pad@1.3.0"}, {"ref": "urn:cdx:0000/1#thing"}]},
        {"id": "CVE-2024-10", "published": "2024-01-15T00:00:00Z",
         "analysis": {"state": "exploitable", "response": ["update", "workaround_available"], "detail": "Upgrade."},
         "affects": [{"ref": "lib", "versions": [{"version": "2.9.0", "status": "affected"},
                                                 {"range": "vers:maven/>=2.10.0|<2.10.5", "status": "unaffected"},
                                                 {"version": "3.0", "status": "unknown"}, {"version": "3.1"}]},
                     {"ref": "app", "versions": [{"range": "vers:semver/<5.0.0"}]},
                     {"ref": "fw", "versions": [{"version": "9"}]}]},
        {"id": "CVE-2024-11", "affects": [{"ref": "lib"}]},
        {"id": "CVE-2024-12", "analysis": {"state": "resolved"}},
        {"id": "CVE-2024-13", "analysis": {"state": "resolved", "firstIssued": "2023-01-01T00:00:00Z"}, "affects": [{"ref": "lib", "versions": [{"version": "2.11", "status": "unaffected"}]}]}
      ]
    }"#;

    #[test]
    fn versions_apply_to_bomlink_refs() {
        let d = norm(r#"{"bomFormat":"CycloneDX","specVersion":"1.6","metadata":{"timestamp":"2024-01-01T00:00:00Z"},
            "vulnerabilities":[{"id":"CVE-2024-20","analysis":{"state":"not_affected","justification":"code_not_present"},
              "affects":[{"ref":"urn:cdx:0000/1#thing","versions":[
                {"range":"vers:npm/<2.0.0","status":"unaffected"},{"version":"2.0.0-rc1","status":"affected"},
                {"range":"vers:nuget/<1.0","status":"unaffected"}]}]}]}"#)
        .unwrap();
        let arts: Vec<&str> = d.observations.iter().map(|o| &*o.artifact).collect();
        assert_eq!(arts, vec!["urn:cdx:0000/1#thing@vers:npm/<2.0.0", "urn:cdx:0000/1#thing@2.0.0-rc1"]);
        assert!(d.observations.iter().all(|o| &*o.package == "urn:cdx:0000#thing"));
        let range = keys::parse_key(arts[0]).unwrap();
        assert!(range.applies_to(&keys::parse_key(arts[1]).unwrap()), "2.0.0-rc1 is before 2.0.0");
        let codes: Vec<&str> = d.diagnostics.iter().map(|x| x.code.as_str()).collect();
        assert_eq!(codes, vec!["version_not_applied"]);
        assert!(d.diagnostics[0].message.contains("nuget"), "{}", d.diagnostics[0].message);
    }

    #[test]
    fn resolves_refs_bomlinks_and_versions() {
        let d = norm(BOM).unwrap();
        let arts: Vec<(&str, &str)> = d.observations.iter().map(|o| (&*o.artifact, &*o.status_original)).collect();
        assert_eq!(
            arts,
            vec![
                ("pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.10.0?type=jar", "not_affected"),
                ("cpe:2.3:a:acme:inner:1.0:*:*:*:*:*:*:*", "not_affected"),
                ("sha256:beef", "not_affected"),
                ("name:acme cloud/api", "not_affected"),
                ("name:acme/Acme App@5.0", "not_affected"),
                ("pkg:npm/left-pad@1.3.0", "not_affected"),
                ("urn:cdx:0000/1#thing", "not_affected"),
                ("pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.9.0?type=jar", "exploitable/affected"),
                (
                    "pkg:maven/com.fasterxml.jackson.core/jackson-databind@vers:maven/>=2.10.0|<2.10.5?type=jar",
                    "exploitable/unaffected"
                ),
                ("pkg:maven/com.fasterxml.jackson.core/jackson-databind@3.0?type=jar", "exploitable/unknown"),
                ("pkg:maven/com.fasterxml.jackson.core/jackson-databind@3.1?type=jar", "exploitable"),
                ("name:acme/Acme App@vers:semver/<5.0.0", "exploitable"),
                ("sha256:beef", "exploitable"),
                ("pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.11?type=jar", "resolved/unaffected"),
            ]
        );
        let st: Vec<Status> = d.observations.iter().map(|o| o.status).collect();
        use Status::*;
        assert_eq!(
            st,
            vec![
                NotAffected,
                NotAffected,
                NotAffected,
                NotAffected,
                NotAffected,
                NotAffected,
                NotAffected,
                Affected,
                NotAffected,
                UnderInvestigation,
                Affected,
                Affected,
                Affected,
                Fixed
            ]
        );
        assert_eq!(d.observations.iter().map(|o| o.position).collect::<Vec<_>>(), (0..14).collect::<Vec<u32>>());
        // The purl range round-trips through the key parser with its vers: version.
        let k = keys::parse_key(&d.observations[8].artifact).unwrap();
        assert_eq!(k.version.as_deref(), Some("vers:maven/>=2.10.0|<2.10.5"));
        assert_eq!(k.package, "pkg:maven/com.fasterxml.jackson.core/jackson-databind");
        assert!(k.applies_to(
            &keys::parse_key("pkg:maven/com.fasterxml.jackson.core/jackson-databind@2.10.3?type=jar").unwrap()
        ));

        let o = &d.observations[0];
        assert_eq!(&*o.vulnerability, "CVE-2024-9");
        assert_eq!(o.aliases.iter().map(|a| &**a).collect::<Vec<_>>(), vec!["CVE-2024-9", "GHSA-1"]);
        assert_eq!(o.justification, Some(Justification::VulnerableCodeNotInExecutePath));
        assert_eq!(o.justification_original.as_deref(), Some("code_not_reachable"));
        assert_eq!(o.impact_statement.as_deref(), Some("Never called."));
        assert_eq!(o.action_statement.as_deref(), Some("will_not_fix"));
        assert_eq!(o.timestamp.to_string(), "2024-05-01T00:00:00.5Z");
        assert_eq!(o.timestamp_source, TimestampSource::Statement);
        assert_eq!(o.issuer.as_deref(), Some("Acme"));
        assert_eq!(o.document_id.as_deref(), Some("urn:uuid:3E671687-395b-41f5-a30f-a58921a69b79"));
        assert_eq!(o.document_version.as_deref(), Some("3"));
        let o = &d.observations[8];
        assert_eq!(o.justification, None);
        assert_eq!(o.impact_statement, None);
        assert_eq!(o.action_statement.as_deref(), Some("update, workaround_available: Upgrade."));
        assert_eq!(
            o.timestamp.to_string(),
            "2024-03-01T00:00:00Z",
            "metadata.timestamp: `published` is not the analysis time"
        );
        assert_eq!(d.observations[13].timestamp.to_string(), "2023-01-01T00:00:00Z");

        let codes: Vec<&str> = d.diagnostics.iter().map(|x| x.code.as_str()).collect();
        assert_eq!(
            codes,
            vec![
                "unmatched_product",
                "unmatched_product",
                "version_not_applied",
                "no_analysis_state",
                "unmatched_statement"
            ]
        );
        assert!(d.diagnostics[0].message.contains("affects[5]") && d.diagnostics[0].message.contains("ghost"));
        assert!(d.diagnostics[1].message.contains("affects[6]"));
    }

    #[test]
    fn timestamps_fall_back_to_metadata_then_epoch_and_empty_affects_is_reported() {
        let d = norm(r#"{"bomFormat":"CycloneDX","metadata":{"timestamp":"2022-01-13T00:00:00Z","component":{"bom-ref":"p","name":"P"}},
            "vulnerabilities":[{"id":"CVE-1","analysis":{"state":"in_triage"},"affects":[{"ref":"p"}]},
                               {"id":"CVE-2","analysis":{"state":"false_positive"}}]}"#)
        .unwrap();
        assert_eq!(d.observations.len(), 1);
        assert_eq!(d.observations[0].timestamp_source, TimestampSource::Document);
        assert_eq!(&*d.observations[0].artifact, "name:/P");
        assert_eq!(d.observations[0].issuer, None);
        assert_eq!(d.diagnostics[0].code, DiagnosticCode::UnmatchedStatement);
        let d = norm(r#"{"bomFormat":"CycloneDX","metadata":{"authors":[{"name":"Ann"}]},
            "vulnerabilities":[{"id":"CVE-1","analysis":{"state":"false_positive"},"affects":[{"ref":"pkg:pypi/x@1"}]}]}"#)
        .unwrap();
        let o = &d.observations[0];
        assert_eq!(
            (&*o.artifact, o.status, o.timestamp_source),
            ("pkg:pypi/x@1", Status::NotAffected, TimestampSource::Epoch)
        );
        assert_eq!(o.issuer.as_deref(), Some("Ann"));
        assert_eq!(d.diagnostics[0].code, DiagnosticCode::NoTimestamp);
    }

    #[test]
    fn typed_errors_name_the_field() {
        let field = |s: &str| match norm(s) {
            Err(NormaliseError::InvalidField { field, format: SourceFormat::Cyclonedx, .. }) => field,
            other => panic!("expected InvalidField, got {other:?}"),
        };
        let doc = |vulns: &str| format!(r#"{{"bomFormat":"CycloneDX","vulnerabilities":{vulns}}}"#);
        assert_eq!(field(&doc(r#"{}"#)), "vulnerabilities");
        assert_eq!(field(r#"{"bomFormat":"CycloneDX"}"#), "vulnerabilities");
        assert_eq!(field(&doc(r#"[{"analysis":{"state":"exploitable"}}]"#)), "vulnerabilities[0].id");
        assert_eq!(
            field(&doc(r#"[{"id":"CVE-1","analysis":{"state":"maybe"}}]"#)),
            "vulnerabilities[0].analysis.state"
        );
        assert_eq!(field(&doc(r#"[{"id":"CVE-1","analysis":{"state":7}}]"#)), "vulnerabilities[0].analysis.state");
        assert_eq!(field(&doc(r#"[{"id":"CVE-1","analysis":[]}]"#)), "vulnerabilities[0].analysis");
        assert_eq!(
            field(&doc(
                r#"[{"id":"CVE-1","analysis":{"state":"resolved"},"affects":[{"ref":"x","versions":[{"status":"affected"}]}]}]"#
            )),
            "vulnerabilities[0].affects[0].versions[0]"
        );
        assert_eq!(
            field(&doc(
                r#"[{"id":"CVE-1","analysis":{"state":"resolved"},"affects":[{"ref":"x","versions":[{"version":"1","status":"bad"}]}]}]"#
            )),
            "vulnerabilities[0].affects[0].versions[0].status"
        );
        assert_eq!(
            field(&doc(r#"[{"id":"CVE-1","analysis":{"state":"resolved"},"affects":[{}]}]"#)),
            "vulnerabilities[0].affects[0].ref"
        );
        assert_eq!(
            field(&doc(r#"[{"id":"CVE-1","analysis":{"state":"resolved","response":[1]}}]"#)),
            "vulnerabilities[0].analysis.response[0]"
        );
        assert_eq!(
            field(&doc(r#"[{"id":"CVE-1","analysis":{"state":"resolved","lastUpdated":"soon"}}]"#)),
            "vulnerabilities[0].analysis.lastUpdated"
        );
        assert_eq!(
            field(r#"{"bomFormat":"CycloneDX","components":[{"components":{}}],"vulnerabilities":[]}"#),
            "components[0].components"
        );
        assert_eq!(field(r#"{"bomFormat":"CycloneDX","serialNumber":1,"vulnerabilities":[]}"#), "serialNumber");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut c = serde_json::json!({"bom-ref": "x", "name": "x"});
        for _ in 0..200 {
            c = serde_json::json!({"name": "n", "components": [c]});
        }
        let doc = serde_json::json!({"bomFormat": "CycloneDX", "components": [c], "vulnerabilities": []});
        let e = normalise_value("t.json", &doc, "sha256:00", &IngestContext::default()).unwrap_err();
        assert!(matches!(e, NormaliseError::InvalidField { .. }), "{e}");
        let deep = format!(r#"{{"bomFormat":"CycloneDX","vulnerabilities":[{}{}]}}"#, "[".repeat(500), "]".repeat(500));
        assert!(matches!(norm(&deep), Err(NormaliseError::NotJson { .. })));
    }

    /// Replaces every node of a valid document, one at a time, by hostile values: the
    /// normaliser must answer (a document or a typed error), never panic.
    #[test]
    fn hostile_values_anywhere_never_panic() {
        let base: Value = serde_json::from_str(BOM).unwrap();
        let hostile = [
            Value::Null,
            serde_json::json!(-1.5),
            serde_json::json!("urn:cdx:#%ZZ"),
            serde_json::json!("pkg:"),
            serde_json::json!([]),
            serde_json::json!({}),
            serde_json::json!([[[[{}]]]]),
            serde_json::json!({"bom-ref": "lib", "components": {}}),
        ];
        super::super::tests::normalise_each_node_replaced(&base, &hostile, |p| {
            (p.len() > 1 || p.first() != Some(&Value::from("bomFormat"))) && !p.is_empty()
        });
        for garbage in [
            r#"{"bomFormat":"CycloneDX","vulnerabilities":null}"#,
            r#"{"bomFormat":"CycloneDX","metadata":7,"vulnerabilities":[]}"#,
        ] {
            assert!(norm(garbage).is_err(), "{garbage}");
        }
    }
}
