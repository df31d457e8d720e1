//! OpenVEX v0.2.0 and legacy v0.0.1 documents.
//!
//! Invariants: a statement's time is its own `last_updated`, else its own `timestamp`,
//! else the document's `timestamp` (else, for a document without one, its
//! `last_updated`), else the epoch with a diagnostic. A document's `last_updated` says the
//! document changed somewhere, not that every statement was re-asserted, so it never
//! outranks the document `timestamp`; versions of one document are ordered by `version`;
//! one observation per (statement, product) in document order; subcomponents narrow the
//! scope of the product's pair; a product id that is an image reference is its `pkg:oci`
//! purl, any other product id that is no key is the opaque key `id:<id>` (diagnostic
//! `opaque_key`); products with no identifier at all are reported; no id over the length
//! limit is a key.

use super::fields::{array_field, objects, raw_str, required_array, str_field, version_string, Bad};
use super::{shared_all, Claim, DocumentFacts, NormaliseError, Subject};
use crate::domain::keys::{self, ArtifactKey};
use crate::domain::model::*;
use crate::domain::names;
use crate::domain::timestamp::Timestamp;
use serde_json::Value;
use std::sync::Arc;

pub fn normalise(
    name: &str,
    v: &Value,
    digest: &str,
    ctx: &IngestContext,
) -> Result<NormalisedDocument, NormaliseError> {
    let bad = super::field_error(name, SourceFormat::Openvex);
    let mut diagnostics = Vec::new();
    let doc_id = str_field(v, "@id");
    let doc_version = version_string(v.get("version"));
    let doc_ts = read_ts(v, "timestamp", &bad)?.or(read_ts(v, "last_updated", &bad)?);
    let facts =
        DocumentFacts::new(ctx, SourceFormat::Openvex, str_field(v, "author"), doc_id, doc_version.as_deref(), digest);
    let statements = required_array(v, "statements", "", &bad)?;
    let mut observations = Vec::new();
    let mut position: u32 = 0;
    let mut resolved = Resolved::default();
    for item in objects(statements, "statements", &bad) {
        let (path, st) = item?;
        let mut ids = vulnerability_ids(st, &path, &bad)?;
        // `@id` of a vulnerability is usually an IRI; keep only id-like values as aliases.
        ids.retain(|s| !s.contains("://"));
        let missing = || bad(format!("{path}.vulnerability"), "names no vulnerability id");
        let Some((vulnerability, aliases)) = super::statement_vulnerability(ids, &path, &mut diagnostics, missing)?
        else {
            continue;
        };
        let status_token = raw_str(st, "status", &path, &bad)?;
        let status = Status::from_openvex(status_token)
            .ok_or_else(|| bad(format!("{path}.status"), &format!("unknown status {status_token:?}")))?;
        let justification_original = str_field(st, "justification");
        let justification = justification_original.and_then(Justification::from_openvex);
        if let (Some(j), None) = (justification_original, justification) {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::UnknownJustification,
                message: format!("{path}: justification {j:?} is not in the OpenVEX vocabulary; kept as original only"),
            });
        }
        let st_ts = read_ts(st, "last_updated", &bad)?.or(read_ts(st, "timestamp", &bad)?);
        let (timestamp, timestamp_source) = statement_time(st_ts, doc_ts, &path, &mut diagnostics);
        // Statement-level subcomponents (v0.0.1) apply to every product.
        let mut stmt_scope = Vec::new();
        push_subcomponents(st, &path, &mut stmt_scope, &mut resolved, &mut diagnostics);
        let products = array_field(st, "products", &path, &bad)?;
        if products.is_empty() {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::UnmatchedStatement,
                message: format!("{path}: statement for {vulnerability} names no product; it applies to nothing"),
            });
        }
        // Shared by the observations of every product of the statement.
        let subject =
            Subject { vulnerability: vulnerability.into(), aliases: shared_all(aliases), timestamp, timestamp_source };
        let claim = Claim {
            status,
            status_original: status_token.into(),
            justification,
            justification_original: justification_original.map(Arc::from),
            impact_statement: str_field(st, "impact_statement").map(Arc::from),
            action_statement: str_field(st, "action_statement").map(Arc::from),
        };
        for (pi, p) in products.iter().enumerate() {
            let ppath = format!("{path}.products[{pi}]");
            let Some(key) = product_key(p, &ppath, &mut resolved, &mut diagnostics) else {
                continue;
            };
            let mut scope = stmt_scope.clone();
            push_subcomponents(p, &ppath, &mut scope, &mut resolved, &mut diagnostics);
            scope.sort();
            scope.dedup();
            observations.push(facts.observation(&subject, key, scope, claim.clone(), position));
            position += 1;
        }
    }
    Ok(facts.document(observations, diagnostics))
}

/// A statement's vulnerability ids: a string (v0.0.1) or an object with name/@id/aliases
/// (v0.2.0).
fn vulnerability_ids(st: &Value, path: &str, bad: &Bad) -> Result<Vec<String>, NormaliseError> {
    let mut ids: Vec<String> = Vec::new();
    match st.get("vulnerability") {
        Some(Value::String(s)) => ids.push(s.clone()),
        Some(vv @ Value::Object(o)) => {
            for k in ["name", "@id"] {
                if let Some(s) = o.get(k).and_then(Value::as_str) {
                    ids.push(s.to_string());
                }
            }
            for x in array_field(vv, "aliases", &format!("{path}.vulnerability"), bad)? {
                match x.as_str() {
                    Some(s) => ids.push(s.to_string()),
                    None => return Err(bad(format!("{path}.vulnerability.aliases"), "must be strings")),
                }
            }
        }
        Some(_) => return Err(bad(format!("{path}.vulnerability"), "must be a string or an object")),
        None => return Err(bad(format!("{path}.vulnerability"), "is required")),
    }
    Ok(ids)
}

/// A statement's time: its own (`st_ts`), else the document's, else the Unix epoch
/// (diagnosed).
fn statement_time(
    st_ts: Option<Timestamp>,
    doc_ts: Option<Timestamp>,
    path: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> (Timestamp, TimestampSource) {
    match (st_ts, doc_ts) {
        (Some(t), _) => (t, TimestampSource::Statement),
        (None, Some(t)) => (t, TimestampSource::Document),
        (None, None) => {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::NoTimestamp,
                message: format!("{path}: no statement or document timestamp; the Unix epoch is used"),
            });
            (Timestamp::EPOCH, TimestampSource::Epoch)
        }
    }
}

/// Pushes the keys of `v.subcomponents[]` (those that resolve) onto `scope`.
fn push_subcomponents(
    v: &Value,
    path: &str,
    scope: &mut Vec<String>,
    resolved: &mut Resolved,
    diagnostics: &mut Vec<Diagnostic>,
) {
    if let Some(Value::Array(subs)) = v.get("subcomponents") {
        for (i, s) in subs.iter().enumerate() {
            if let Some(k) = product_key(s, &format!("{path}.subcomponents[{i}]"), resolved, diagnostics) {
                scope.push(k.key);
            }
        }
    }
}

/// What each product id of one document resolves to, found once: a document names the
/// same products in many statements (vexhub: 30,880 product ids, 8,121 distinct within
/// their documents), and parsing a key is most of the normaliser's time. It lives for one
/// document, so it holds at most that document's distinct ids.
#[derive(Default)]
struct Resolved(std::collections::HashMap<String, Result<ArtifactKey, String>>);

impl Resolved {
    /// `id` as a key (a key grammar, else an image reference's `pkg:oci` purl), or why it
    /// is none (the key grammar's error).
    fn key(&mut self, id: &str) -> &Result<ArtifactKey, String> {
        if !self.0.contains_key(id) {
            let parsed = match keys::parse_key(id) {
                Err(_) if names::looks_like_image_reference(id) => names::image_reference_key(id),
                other => other,
            };
            self.0.insert(id.to_string(), parsed.map_err(|e| e.to_string()));
        }
        &self.0[id]
    }
}

/// A timestamp field of the document or of a statement, named in errors by its key
/// alone; blank is `None`, another type than a string "must be an RFC 3339 string".
fn read_ts(v: &Value, key: &str, bad: &Bad) -> Result<Option<Timestamp>, NormaliseError> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Timestamp::parse(s).map(Some).map_err(|e| bad(key.to_string(), &e.to_string())),
        Some(_) => Err(bad(key.to_string(), "must be an RFC 3339 string")),
    }
}

/// Resolves an OpenVEX product (a string in v0.0.1, an object in v0.2.0) to its most
/// global key: purl (an image reference's `pkg:oci` purl included) > BOM-Link > CPE >
/// hash, else its `@id` as an opaque key. Reports and skips what resolves to nothing.
fn product_key(
    p: &Value,
    path: &str,
    resolved: &mut Resolved,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<ArtifactKey> {
    let mut candidates: Vec<String> = Vec::new();
    let mut id: Option<&str> = None;
    match p {
        Value::String(s) => {
            id = Some(s);
            candidates.push(s.clone());
        }
        Value::Object(o) => {
            if let Some(s) = o.get("@id").and_then(Value::as_str) {
                id = Some(s);
                candidates.push(s.to_string());
            }
            if let Some(Value::Object(ids)) = o.get("identifiers") {
                for k in ["purl", "cpe23", "cpe22"] {
                    if let Some(s) = ids.get(k).and_then(Value::as_str) {
                        candidates.push(s.to_string());
                    }
                }
            }
            if let Some(Value::Object(h)) = o.get("hashes") {
                let mut hs: Vec<(&String, &Value)> = h.iter().collect();
                hs.sort_by(|a, b| a.0.cmp(b.0));
                for (alg, val) in hs {
                    if let Some(val) = val.as_str() {
                        candidates.push(format!("{alg}:{val}"));
                    }
                }
            }
        }
        _ => {}
    }
    let mut best: Option<ArtifactKey> = None;
    let mut errors = Vec::new();
    candidates.retain(|c| !super::too_long("product id", path, c, diagnostics));
    for c in &candidates {
        match resolved.key(c) {
            Ok(k) => {
                if best.as_ref().map_or(true, |b| k.kind < b.kind) {
                    best = Some(k.clone());
                }
            }
            Err(e) => errors.push(e.clone()),
        }
    }
    // An id in a key grammar that does not parse (a broken purl, CPE or BOM-Link) is a
    // broken key, not a name: it stays unmatched rather than matching by its spelling.
    let key_grammar = |s: &str| {
        let t = s.trim().to_ascii_lowercase();
        ["pkg:", "cpe:", "urn:cdx:", "name:", "id:"].iter().any(|p| t.starts_with(p))
    };
    if let (None, Some(id)) = (&best, id.filter(|s| s.len() <= keys::MAX_KEY_BYTES && !key_grammar(s))) {
        if let Ok(k) = keys::opaque_key(id) {
            diagnostics.push(Diagnostic {
                code: DiagnosticCode::OpaqueKey,
                message: format!(
                    "{path}: product {:?} is no purl, CPE, hash or image reference{}; keyed {:?}, matched exactly",
                    id.chars().take(200).collect::<String>(),
                    if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) },
                    k.key
                ),
            });
            return Some(k);
        }
    }
    if best.is_none() {
        diagnostics.push(Diagnostic {
            code: DiagnosticCode::UnmatchedProduct,
            message: format!(
                "{path}: product {} has no package URL, BOM-Link, CPE or hash{}",
                serde_json::to_string(p).unwrap_or_default().chars().take(200).collect::<String>(),
                if errors.is_empty() { String::new() } else { format!(" ({})", errors.join("; ")) }
            ),
        });
    }
    best
}

#[cfg(test)]
mod tests {
    use super::super::normalise_bytes;
    use super::*;

    fn norm(s: &str) -> Result<NormalisedDocument, NormaliseError> {
        normalise_bytes("t.json", s.as_bytes(), &IngestContext::default(), 1 << 20)
    }

    #[test]
    fn inherits_document_timestamp_and_reads_subcomponents() {
        let d = norm(
            r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"x","author":"A","timestamp":"2023-01-01T00:00:00Z","version":2,
            "statements":[{"vulnerability":{"name":"GO-1","aliases":["CVE-2024-1"]},"products":[{"@id":"pkg:golang/a/b","subcomponents":[{"@id":"pkg:golang/c@v1"}]}],"status":"not_affected","justification":"vulnerable_code_not_present"}]}"#,
        )
        .unwrap();
        let o = &d.observations[0];
        assert_eq!(&*o.vulnerability, "CVE-2024-1");
        assert_eq!(o.aliases.iter().map(|a| &**a).collect::<Vec<_>>(), vec!["CVE-2024-1", "GO-1"]);
        assert_eq!(o.timestamp.to_string(), "2023-01-01T00:00:00Z");
        assert_eq!(o.timestamp_source, TimestampSource::Document);
        assert_eq!(o.scope.iter().map(|a| &**a).collect::<Vec<_>>(), vec!["pkg:golang/c@v1"]);
        assert_eq!(o.issuer.as_deref(), Some("A"));
        assert_eq!(o.document_version.as_deref(), Some("2"));
        assert!(!o.id.is_empty());
    }

    #[test]
    fn typed_errors_name_the_field() {
        let e = norm(r#"{"@context":"https://openvex.dev/ns/v0.2.0","statements":[{"vulnerability":{"name":"CVE-1"},"products":[],"status":"maybe"}]}"#)
            .unwrap_err();
        assert!(e.to_string().contains("statements[0].status"), "{e}");
        let e = norm(r#"{"@context":"https://openvex.dev/ns/v0.2.0","statements":{}}"#).unwrap_err();
        assert!(matches!(e, NormaliseError::InvalidField { .. }));
        let e =
            norm(r#"{"@context":"https://openvex.dev/ns/v0.2.0","statements":[{"vulnerability":7,"status":"fixed"}]}"#)
                .unwrap_err();
        assert!(e.to_string().contains("vulnerability"), "{e}");
    }

    #[test]
    fn products_with_no_key_are_opaque_ids_and_no_id_is_unmatched() {
        let d = norm(r#"{"@context":"https://openvex.dev/ns/v0.2.0","timestamp":"2023-01-01T00:00:00Z","statements":[{"vulnerability":{"name":"CVE-1"},"products":[{"@id":"https://example.com/thing"},{"identifiers":{"purl":"not a purl"}}],"status":"fixed"}]}"#).unwrap();
        let arts: Vec<&str> = d.observations.iter().map(|o| &*o.artifact).collect();
        assert_eq!(arts, vec!["id:https://example.com/thing"]);
        assert_eq!(&*d.observations[0].package, "id:https://example.com/thing");
        let codes: Vec<DiagnosticCode> = d.diagnostics.iter().map(|x| x.code).collect();
        assert_eq!(codes, vec![DiagnosticCode::OpaqueKey, DiagnosticCode::UnmatchedProduct]);
    }

    /// A product id resolved once per document answers every later occurrence as the first:
    /// the same keys and the same diagnostics, whether it names a product or a
    /// subcomponent, as documents naming each id once give.
    #[test]
    fn a_product_id_repeated_in_a_document_resolves_and_reports_as_often_as_it_occurs() {
        let statement = |v: &str| {
            format!(
                r#"{{"vulnerability":{{"name":"{v}"}},"products":[{{"@id":"pkg:npm/a@1.0.0","subcomponents":[{{"@id":"pkg:npm/b@2"}}]}},{{"@id":"https://example.com/thing"}},{{"identifiers":{{"purl":"pkg:"}}}},{{"@id":"pkg:npm/b@2"}}],"status":"fixed"}}"#
            )
        };
        let doc = |statements: &[String]| {
            format!(
                r#"{{"@context":"https://openvex.dev/ns/v0.2.0","timestamp":"2023-01-01T00:00:00Z","statements":[{}]}}"#,
                statements.join(",")
            )
        };
        let once = norm(&doc(&[statement("CVE-1")])).unwrap();
        let twice = norm(&doc(&[statement("CVE-1"), statement("CVE-2")])).unwrap();
        let keys = |d: &NormalisedDocument, v: &str| -> Vec<(String, Vec<String>)> {
            d.observations
                .iter()
                .filter(|o| &*o.vulnerability == v)
                .map(|o| (o.artifact.to_string(), o.scope.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        let want = keys(&once, "CVE-1");
        assert_eq!(want.len(), 3, "{want:?}");
        assert_eq!(keys(&twice, "CVE-1"), want);
        assert_eq!(keys(&twice, "CVE-2"), want);
        let messages = |d: &NormalisedDocument| -> Vec<String> {
            d.diagnostics.iter().map(|x| format!("{:?} {}", x.code, x.message)).collect()
        };
        let first = messages(&once);
        assert_eq!(first.len(), 2, "{first:?}");
        let again: Vec<String> = first.iter().map(|m| m.replace("statements[0]", "statements[1]")).collect();
        assert_eq!(messages(&twice), [first, again].concat());
    }

    /// vexctl's image-reference example (its test data names images by reference and
    /// one by a plain name): one `pkg:oci` artifact per image, `id:nginx` for the name.
    #[test]
    fn image_references_are_oci_purls_and_plain_names_opaque() {
        let d = norm(r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://openvex.dev/docs/example/vex-9fb3463de1b","author":"Wolfi J Inkinson","timestamp":"2023-01-09T21:23:03.579712389-06:00","version":1,
          "statements":[{"vulnerability":{"name":"CVE-2023-1255"},"products":[
             {"@id":"registry.k8s.io/kube-apiserver:v1.26.0"},{"@id":"registry.k8s.io/kube-controller-manager:v1.26.0"},
             {"@id":"registry.k8s.io/kube-scheduler:v1.26.0"},{"@id":"registry.k8s.io/kube-proxy:v1.26.0"},
             {"@id":"nginx"}],"status":"not_affected","justification":"vulnerable_code_not_present"},
            {"vulnerability":{"name":"CVE-2023-1255"},"products":[{"@id":"pkg:oci/kube-proxy?repository_url=registry.k8s.io%2Fkube-proxy&tag=v1.26.0"}],"status":"affected"}]}"#).unwrap();
        let arts: Vec<&str> = d.observations.iter().map(|o| &*o.artifact).collect();
        let images = ["kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"];
        for (a, image) in arts.iter().zip(images) {
            let k = keys::parse_key(a).unwrap();
            assert_eq!(k.package, format!("pkg:oci/{image}"));
            assert_eq!(k.qualifiers.get("tag").map(String::as_str), Some("v1.26.0"));
            assert_eq!(k.qualifiers.get("repository_url"), Some(&format!("registry.k8s.io/{image}")));
        }
        assert_eq!(arts[4], "id:nginx");
        assert_eq!(arts[5], arts[3], "the reference and its purl spelling are one artifact");
        let distinct: std::collections::BTreeSet<&str> = arts.iter().copied().collect();
        assert_eq!(distinct.len(), 5);
        assert_eq!(d.diagnostics.iter().map(|x| x.code).collect::<Vec<_>>(), vec![DiagnosticCode::OpaqueKey]);
    }

    #[test]
    fn over_long_ids_are_never_keys() {
        let long = "x".repeat(keys::MAX_KEY_BYTES + 1);
        let doc = format!(
            r#"{{"@context":"https://openvex.dev/ns/v0.2.0","timestamp":"2023-01-01T00:00:00Z","statements":[
            {{"vulnerability":{{"name":"CVE-{long}"}},"products":[{{"@id":"pkg:npm/a@1"}}],"status":"fixed"}},
            {{"vulnerability":{{"name":"CVE-2","aliases":["GHSA-{long}"]}},"products":[{{"@id":"pkg:npm/{long}@1"}},{{"@id":"{long}"}},{{"@id":"pkg:npm/b@1"}}],"status":"fixed"}}]}}"#
        );
        let d = norm(&doc).unwrap();
        let arts: Vec<&str> = d.observations.iter().map(|o| &*o.artifact).collect();
        assert_eq!(arts, vec!["pkg:npm/b@1"]);
        assert_eq!(d.observations[0].aliases.iter().map(|a| &**a).collect::<Vec<_>>(), vec!["CVE-2"]);
        let codes: Vec<DiagnosticCode> = d.diagnostics.iter().map(|x| x.code).collect();
        assert_eq!(codes.iter().filter(|c| **c == DiagnosticCode::TooLong).count(), 4, "{codes:?}");
        assert!(d.diagnostics.iter().all(|x| x.message.len() < 600), "a diagnostic never carries the whole id");
    }

    #[test]
    fn a_range_of_an_unknown_scheme_is_reported_not_guessed() {
        let d = norm(r#"{"@context":"https://openvex.dev/ns/v0.2.0","timestamp":"2023-01-01T00:00:00Z","statements":[{"vulnerability":{"name":"CVE-1"},"products":[{"@id":"pkg:nuget/Foo@vers:nuget/<1.0"}],"status":"not_affected","justification":"component_not_present"}]}"#).unwrap();
        assert!(d.observations.is_empty());
        assert_eq!(d.diagnostics[0].code, DiagnosticCode::UnmatchedProduct);
        assert!(
            d.diagnostics[0].message.contains("unknown versioning scheme \"nuget\""),
            "{}",
            d.diagnostics[0].message
        );
    }
}
