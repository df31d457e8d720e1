//! Consensus records as one OpenVEX v0.2.0 document (CONSENSUS.md "Mapping for exports
//! to OpenVEX").
//!
//! Invariants: one statement per record, in record order; the output is a pure function
//! of the records and the text of the observations they name ([`joined_ids`]; no clock:
//! the document `timestamp` is the newest evaluation time);
//! every statement satisfies the v0.2.0 schema's conditional rules (`not_affected` carries
//! a `justification` or an `impact_statement`, `affected` an `action_statement`).
//!
//! Mapping:
//! * `affected`, `not_affected`, `fixed`, `under_investigation` are written as they are;
//!   `disputed` and `inconclusive` are written as `under_investigation` with
//!   `status_notes` naming the consensus status, the leading status and every conflict.
//! * `products[0]["@id"]` is the artifact key (a purl for purl artifacts) as an IRI
//!   (characters an IRI cannot hold, e.g. `>` and `|` of a version-range name key, are
//!   percent-encoded, see [`iri`]); purls are also
//!   given as `identifiers.purl`, CPE 2.3 names as `identifiers.cpe23`, `sha256:` keys as
//!   `hashes["sha-256"]`. When every counted statement of the leading status is scoped to
//!   the same subcomponents, they are listed as `subcomponents`.
//! * `justification`: the record's, else that of the heaviest counted statement of the
//!   leading status that has one. `impact_statement` / `action_statement`: the heaviest
//!   counted statement's of the leading status; when `not_affected` has neither a
//!   justification nor an impact statement, or `affected` has no action statement, a
//!   summary of the consensus is written instead (the schema requires one).
//! * statement `@id`: `urn:vex-lens:consensus:<hex of consensus_digest>`, so a statement
//!   can be traced back to its record; statement `timestamp`: the record's evaluation time.

use super::{ExportError, StatementTexts};
use crate::domain::canonical;
use crate::domain::consensus::{ConsensusRecord, ConsensusStatus, Role, StatementEntry, StatementText};
use crate::domain::model::Status;
use crate::domain::timestamp::Timestamp;
use serde_json::{json, Map, Value};

/// `@context` of OpenVEX v0.2.0.
pub const OPENVEX_CONTEXT: &str = "https://openvex.dev/ns/v0.2.0";
/// `author` of exported documents.
pub const AUTHOR: &str = "VEX Lens consensus";

/// The OpenVEX status a consensus status is written as.
pub fn openvex_status(s: ConsensusStatus) -> &'static str {
    match s {
        ConsensusStatus::Affected => "affected",
        ConsensusStatus::NotAffected => "not_affected",
        ConsensusStatus::Fixed => "fixed",
        ConsensusStatus::UnderInvestigation | ConsensusStatus::Disputed | ConsensusStatus::Inconclusive => {
            "under_investigation"
        }
    }
}

/// The newest evaluation time among `records` (the document's `timestamp`).
pub fn newest_evaluation_time(records: &[ConsensusRecord]) -> Option<Timestamp> {
    records.iter().map(|r| r.evaluation_time).max()
}

/// The observations whose text the statement of `r` reads: the counted statements of the
/// leading status (the winning side).
pub fn joined_ids(r: &ConsensusRecord) -> impl Iterator<Item = &str> {
    let lead = r.leading_status;
    r.statements.iter().filter(move |e| e.role == Role::Counted && Some(e.status) == lead).map(|e| &*e.observation_id)
}

/// The OpenVEX document for `records`; `None` when there are none (OpenVEX requires at
/// least one statement). `texts` holds the text of every observation [`joined_ids`] names
/// (else [`ExportError::MissingObservation`]); `tooling` goes to the document's `tooling`.
pub fn document(
    records: &[ConsensusRecord],
    texts: &StatementTexts,
    tooling: &str,
) -> Result<Option<Value>, ExportError> {
    let Some(timestamp) = newest_evaluation_time(records) else {
        return Ok(None);
    };
    let mut digests = String::new();
    for r in records {
        digests.push_str(&r.consensus_digest);
        digests.push('\n');
    }
    let id = format!("urn:vex-lens:export:sha256:{}", canonical::sha256_hex(digests.as_bytes()));
    let statements: Vec<Value> = records.iter().map(|r| statement(r, texts)).collect::<Result<_, _>>()?;
    Ok(Some(json!({
        "@context": OPENVEX_CONTEXT,
        "@id": id,
        "author": AUTHOR,
        "role": "aggregator",
        "timestamp": timestamp.to_string(),
        "version": 1,
        "tooling": tooling,
        "statements": statements,
    })))
}

/// Counted statements of the leading status, heaviest first (ties: newer, then id), each
/// with its observation's text.
fn winning_side<'a>(
    r: &'a ConsensusRecord,
    texts: &'a StatementTexts,
) -> Result<Vec<(&'a StatementEntry, &'a StatementText)>, ExportError> {
    let Some(lead) = r.leading_status else {
        return Ok(Vec::new());
    };
    let mut side: Vec<&StatementEntry> =
        r.statements.iter().filter(|e| e.role == Role::Counted && e.status == lead).collect();
    side.sort_by(|a, b| {
        b.weight_ppm
            .cmp(&a.weight_ppm)
            .then(b.timestamp.cmp(&a.timestamp))
            .then(a.observation_id.cmp(&b.observation_id))
    });
    side.into_iter()
        .map(|e| match texts.get(&e.observation_id).or(e.observation.as_ref()) {
            Some(t) => Ok((e, t)),
            None => Err(ExportError::MissingObservation {
                record: r.consensus_digest.clone(),
                observation: e.observation_id.to_string(),
            }),
        })
        .collect()
}

fn summary(r: &ConsensusRecord) -> String {
    let counted = r.statements.iter().filter(|e| e.role == Role::Counted).count();
    let mut issuers: Vec<&str> = r.statements.iter().filter(|e| e.role == Role::Counted).map(|e| &*e.issuer).collect();
    issuers.sort_unstable();
    issuers.dedup();
    format!(
        "VEX Lens consensus ({} mode) of {counted} counted statement(s) by {}: {}{}, confidence {}; record {}",
        r.mode.as_str(),
        if issuers.is_empty() { "no issuer".to_string() } else { issuers.join(", ") },
        r.status.as_str(),
        match (r.status, r.leading_status) {
            (ConsensusStatus::Disputed | ConsensusStatus::Inconclusive, Some(l)) =>
                format!(" (leading {})", l.as_str()),
            _ => String::new(),
        },
        r.confidence_decimal(3),
        r.consensus_digest
    )
}

fn status_notes(r: &ConsensusRecord) -> String {
    let mut notes = summary(r);
    if matches!(r.status, ConsensusStatus::Disputed | ConsensusStatus::Inconclusive) {
        notes = format!(
            "consensus status {} written as under_investigation; leading status: {}. {notes}",
            r.status.as_str(),
            r.leading_status.map(Status::as_str).unwrap_or("none"),
        );
    }
    if !r.conflicts.is_empty() {
        let c: Vec<String> = r.conflicts.iter().map(|c| format!("{}: {}", c.reason, c.detail)).collect();
        notes.push_str(&format!(". Conflicts: {}", c.join("; ")));
    }
    notes
}

/// `key` as an IRI: ASCII characters an IRI cannot contain (controls, space, `"`, `<`,
/// `>`, `\`, `^`, backtick, `{`, `|`, `}`, and a `%` that does not start an escape) are
/// percent-encoded; anything else, including non-ASCII, is kept. A valid purl is unchanged.
pub fn iri(key: &str) -> String {
    let bytes = key.as_bytes();
    let mut out = String::with_capacity(key.len());
    for (i, c) in key.char_indices() {
        let escape = match c {
            '%' => {
                !(bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                    && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
            }
            ' ' | '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}' => true,
            c => c.is_ascii_control(),
        };
        if escape {
            out.push_str(&format!("%{:02X}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

fn product(artifact: &str) -> Value {
    let mut p = Map::new();
    p.insert("@id".into(), Value::String(iri(artifact)));
    if artifact.starts_with("pkg:") {
        p.insert("identifiers".into(), json!({ "purl": artifact }));
    } else if artifact.starts_with("cpe:2.3:") {
        p.insert("identifiers".into(), json!({ "cpe23": artifact }));
    } else if let Some(hex) = artifact.strip_prefix("sha256:") {
        p.insert("hashes".into(), json!({ "sha-256": hex }));
    }
    Value::Object(p)
}

fn statement(r: &ConsensusRecord, texts: &StatementTexts) -> Result<Value, ExportError> {
    let status = openvex_status(r.status);
    let side = winning_side(r, texts)?;
    let mut s = Map::new();
    s.insert("@id".into(), Value::String(format!("urn:vex-lens:consensus:{}", digest_hex(&r.consensus_digest))));
    let mut vuln = Map::new();
    vuln.insert("name".into(), Value::String(r.vulnerability.clone()));
    let aliases: Vec<&String> = {
        let mut a: Vec<&String> = r.aliases.iter().filter(|a| **a != r.vulnerability).collect();
        a.sort();
        a.dedup();
        a
    };
    if !aliases.is_empty() {
        vuln.insert("aliases".into(), json!(aliases));
    }
    s.insert("vulnerability".into(), Value::Object(vuln));
    let mut prod = product(&r.artifact);
    // Subcomponents when the whole winning side is scoped identically.
    if let Some((_, first)) = side.first() {
        if !first.scope.is_empty() && side.iter().all(|(_, t)| t.scope == first.scope) {
            let subs: Vec<Value> = first.scope.iter().map(|k| product(k)).collect();
            if let Value::Object(m) = &mut prod {
                m.insert("subcomponents".into(), Value::Array(subs));
            }
        }
    }
    s.insert("products".into(), json!([prod]));
    s.insert("status".into(), Value::String(status.into()));
    s.insert("timestamp".into(), Value::String(r.evaluation_time.to_string()));
    s.insert("status_notes".into(), Value::String(status_notes(r)));
    match status {
        "not_affected" => {
            let justification = r.justification.or_else(|| side.iter().find_map(|(e, _)| e.justification));
            if let Some(j) = justification {
                s.insert("justification".into(), serde_json::to_value(j).unwrap_or(Value::Null));
            }
            let impact = side.iter().find_map(|(_, t)| t.impact_statement.clone());
            match (impact, justification) {
                (Some(i), _) => {
                    s.insert("impact_statement".into(), Value::String(i.to_string()));
                }
                (None, None) => {
                    s.insert("impact_statement".into(), Value::String(summary(r)));
                }
                (None, Some(_)) => {}
            }
        }
        "affected" => {
            let action =
                side.iter().find_map(|(_, t)| t.action_statement.as_deref().map(str::to_string)).unwrap_or_else(|| {
                    format!("No action statement was given by the contributing issuers. {}", summary(r))
                });
            s.insert("action_statement".into(), Value::String(action));
        }
        _ => {}
    }
    Ok(Value::Object(s))
}

fn digest_hex(d: &str) -> &str {
    d.strip_prefix("sha256:").unwrap_or(d)
}

#[cfg(test)]
mod tests {
    use super::iri;

    #[test]
    fn iri_escapes_only_what_an_iri_cannot_hold() {
        assert_eq!(iri("pkg:npm/%40angular/core@1.0.0?arch=x86_64"), "pkg:npm/%40angular/core@1.0.0?arch=x86_64");
        assert_eq!(iri("name:/abc@vers:generic/>=1.0|<=2.3"), "name:/abc@vers:generic/%3E=1.0%7C%3C=2.3");
        assert_eq!(iri("name:a b/100%"), "name:a%20b/100%25");
        assert_eq!(iri("name:é"), "name:é");
    }
}
