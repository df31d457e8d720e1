//! The observation model every normaliser produces and the consensus consumes.
//!
//! Invariants: an `Observation` is self-contained (it carries its tenant, keys, status,
//! timestamps and provenance) and its `id` is a deterministic function of what it says
//! and which document said it, never of where or when it was received, so replays and
//! duplicates collapse to one.

pub use super::codes::{DiagnosticCode, SignatureKind, SignatureReason};
use super::timestamp::Timestamp;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Version of the status/justification crosswalk (docs/crosswalk.md). Part of the policy
/// version, so a change of mapping changes every digest it affects.
pub const CROSSWALK_VERSION: &str = "crosswalk/v1";

/// Normalised VEX status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Affected,
    NotAffected,
    Fixed,
    UnderInvestigation,
}

impl Status {
    pub const ALL: [Status; 4] = [Status::Affected, Status::UnderInvestigation, Status::NotAffected, Status::Fixed];

    /// Conservativeness rank: higher is more conservative
    /// (`affected` > `under_investigation` > `not_affected` > `fixed`).
    pub fn conservative_rank(self) -> u8 {
        match self {
            Status::Affected => 3,
            Status::UnderInvestigation => 2,
            Status::NotAffected => 1,
            Status::Fixed => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Affected => "affected",
            Status::NotAffected => "not_affected",
            Status::Fixed => "fixed",
            Status::UnderInvestigation => "under_investigation",
        }
    }

    /// OpenVEX status tokens (v0.0.1 and v0.2.0 use the same four).
    pub fn from_openvex(token: &str) -> Option<Status> {
        match token.trim().to_ascii_lowercase().as_str() {
            "affected" => Some(Status::Affected),
            "not_affected" => Some(Status::NotAffected),
            "fixed" => Some(Status::Fixed),
            "under_investigation" => Some(Status::UnderInvestigation),
            _ => None,
        }
    }

    /// CycloneDX `analysis.state`.
    pub fn from_cyclonedx(token: &str) -> Option<Status> {
        match token.trim() {
            "exploitable" => Some(Status::Affected),
            "in_triage" => Some(Status::UnderInvestigation),
            "resolved" | "resolved_with_pedigree" => Some(Status::Fixed),
            "not_affected" | "false_positive" => Some(Status::NotAffected),
            _ => None,
        }
    }

    /// CSAF `product_status` list names (`recommended` is not a status: None).
    pub fn from_csaf(list: &str) -> Option<Status> {
        match list {
            "known_affected" | "first_affected" | "last_affected" => Some(Status::Affected),
            "fixed" | "first_fixed" => Some(Status::Fixed),
            "known_not_affected" => Some(Status::NotAffected),
            "under_investigation" => Some(Status::UnderInvestigation),
            _ => None,
        }
    }
}

/// Normalised justification (the OpenVEX / CSAF label vocabulary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Justification {
    ComponentNotPresent,
    VulnerableCodeNotPresent,
    VulnerableCodeNotInExecutePath,
    VulnerableCodeCannotBeControlledByAdversary,
    InlineMitigationsAlreadyExist,
}

impl Justification {
    /// OpenVEX justifications and CSAF flag labels (same tokens).
    pub fn from_openvex(token: &str) -> Option<Justification> {
        match token.trim().to_ascii_lowercase().as_str() {
            "component_not_present" => Some(Justification::ComponentNotPresent),
            "vulnerable_code_not_present" => Some(Justification::VulnerableCodeNotPresent),
            "vulnerable_code_not_in_execute_path" => Some(Justification::VulnerableCodeNotInExecutePath),
            "vulnerable_code_cannot_be_controlled_by_adversary" => {
                Some(Justification::VulnerableCodeCannotBeControlledByAdversary)
            }
            "inline_mitigations_already_exist" => Some(Justification::InlineMitigationsAlreadyExist),
            _ => None,
        }
    }

    /// CycloneDX `analysis.justification` (docs/crosswalk.md gives the reasoning).
    pub fn from_cyclonedx(token: &str) -> Option<Justification> {
        match token.trim() {
            "code_not_present" => Some(Justification::VulnerableCodeNotPresent),
            "code_not_reachable" => Some(Justification::VulnerableCodeNotInExecutePath),
            "requires_configuration" | "requires_environment" => {
                Some(Justification::VulnerableCodeCannotBeControlledByAdversary)
            }
            "requires_dependency" => Some(Justification::ComponentNotPresent),
            "protected_by_compiler"
            | "protected_at_runtime"
            | "protected_at_perimeter"
            | "protected_by_mitigating_control" => Some(Justification::InlineMitigationsAlreadyExist),
            _ => None,
        }
    }
}

/// Source format of a document.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    Openvex,
    Csaf,
    Cyclonedx,
}

/// Result of signature verification for the envelope an observation arrived in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SignatureStatus {
    Verified,
    #[default]
    Unsigned,
    Failed,
}

impl SignatureStatus {
    /// `verified`, `unsigned` or `failed` (the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureStatus::Verified => "verified",
            SignatureStatus::Unsigned => "unsigned",
            SignatureStatus::Failed => "failed",
        }
    }
}

/// Where the claimed issuer identity came from (CONSENSUS.md "Issuer identity").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IssuerSource {
    Signature,
    Header,
    Document,
    #[default]
    None,
}

/// Where a statement's timestamp came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampSource {
    /// The statement's own timestamp (OpenVEX statement `timestamp`/`last_updated`,
    /// CycloneDX `analysis.lastUpdated`/`firstIssued`, CSAF vulnerability `release_date`).
    Statement,
    /// The document's timestamp (OpenVEX `last_updated`/`timestamp`, CSAF
    /// `tracking.current_release_date`, CycloneDX `metadata.timestamp`).
    Document,
    /// None anywhere: the Unix epoch, with a diagnostic.
    Epoch,
}

/// Signature information carried with an observation (filled by the DSSE verifier).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// `openpgp` for a detached OpenPGP signature; absent for a DSSE envelope or no
    /// signature (so observations written before OpenPGP keep their bytes and ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SignatureKind>,
    pub status: SignatureStatus,
    /// Why it is unsigned/failed (`unknown_key`, `bad_signature`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<SignatureReason>,
    /// Key id that verified (or was claimed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
}

/// Where an observation was received from. Not part of its identity or of any digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// e.g. a file path, or `kafka:<topic>/<partition>@<offset>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// When it was received (ms since epoch), for latency metrics only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received_at_ms: Option<i64>,
    /// Its position in the observation stream, set on receipt whatever a message says:
    /// its offset on the observations topic (Kafka mode; one package is always on one
    /// partition) or the embedded arrival sequence. Orders record writes
    /// (`ports::RecordVersion`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence: Option<i64>,
}

/// What an entry of the observation stream is (CONSENSUS.md "Which statements count",
/// retraction; [`crate::domain::ledger`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A statement a document makes (every observation a normaliser gives).
    #[default]
    Statement,
    /// The document ledger's marker: a version of a document (its tenant, issuer,
    /// `document_id`, `document_version`, `document_digest`, and its newest statement time
    /// as `timestamp`) names no product of `package`, whose state holds statements of an
    /// older version. It states nothing: `artifact` is the package key and the statement
    /// fields are empty; a package state only orders it among the document's versions.
    VersionMarker,
}

impl EntryKind {
    pub fn is_statement(&self) -> bool {
        *self == EntryKind::Statement
    }
}

/// One statement about one (artifact, vulnerability), as normalised from a document.
/// This is also the documented JSON form producers may publish to the observations topic
/// (schemas/observation.schema.json). Its strings are shared (`Arc<str>`): the statements
/// of a document repeat most of them, so normalisers and package states hold each once
/// and a record's statement entries point at them instead of copying (serialised as
/// plain strings either way).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// Deterministic id: see [`Observation::compute_id`]. Recomputed on receipt.
    #[serde(default)]
    pub id: Arc<str>,
    /// A statement (absent in its JSON form) or a version marker of the document ledger.
    #[serde(default, skip_serializing_if = "EntryKind::is_statement")]
    pub kind: EntryKind,
    #[serde(default = "default_tenant")]
    pub tenant: Arc<str>,
    /// The claimed issuer name (signature issuer, header, or document author); `None`
    /// when nothing names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<Arc<str>>,
    #[serde(default)]
    pub issuer_source: IssuerSource,
    /// Normalised artifact key (purl > BOM-Link > CPE > hash > name key).
    pub artifact: Arc<str>,
    /// Package key (routing): artifact key without version and qualifiers.
    pub package: Arc<str>,
    /// Subcomponents (OpenVEX) or containing product (CSAF relationships) that narrow
    /// the statement; sorted, unique.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope: Vec<Arc<str>>,
    /// Vulnerability key (CVE when any id names one, else the smallest id).
    pub vulnerability: Arc<str>,
    /// Every id the statement gave for the vulnerability (sorted, unique, incl. the key).
    #[serde(default)]
    pub aliases: Vec<Arc<str>>,
    pub status: Status,
    /// The source's own status token (e.g. CycloneDX `false_positive`, CSAF `first_fixed`).
    pub status_original: Arc<str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification: Option<Justification>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub justification_original: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact_statement: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action_statement: Option<Arc<str>>,
    /// Effective timestamp of the statement (inheritance applied).
    pub timestamp: Timestamp,
    pub timestamp_source: TimestampSource,
    /// Document id (`@id`, CSAF tracking id, CycloneDX serialNumber) when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_id: Option<Arc<str>>,
    /// Document version as written (numbers compared numerically, CSAF segment-wise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document_version: Option<Arc<str>>,
    /// `sha256:<hex>` of the document bytes as received (the payload, for DSSE).
    pub document_digest: Arc<str>,
    /// Position of the statement in the document (0-based, in document order).
    pub position: u32,
    pub format: SourceFormat,
    #[serde(default)]
    pub signature: Signature,
    #[serde(default)]
    pub provenance: Provenance,
}

pub fn default_tenant() -> Arc<str> {
    Arc::from("default")
}

impl Observation {
    /// The deterministic id: SHA-256 (hex) of the RFC 8785 canonical JSON of everything
    /// the observation says (all fields but `id` and `provenance`), so only an exact
    /// repeat of a statement from the same document is a duplicate. An observation that
    /// cannot be serialised is an error (never the hash of an empty string).
    pub fn compute_id(&self) -> Result<String, super::canonical::CanonicalError> {
        Ok(super::canonical::sha256_hex(&self.content_bytes()?))
    }

    /// The RFC 8785 canonical JSON of everything the observation says (all fields but
    /// `id` and `provenance`): the input of its id and of the internal hop's HMAC tag.
    pub fn content_bytes(&self) -> Result<Vec<u8>, super::canonical::CanonicalError> {
        let mut v = serde_json::to_value(self)?;
        if let Some(o) = v.as_object_mut() {
            o.remove("id");
            o.remove("provenance");
        }
        Ok(super::canonical::to_vec(&v)?)
    }

    /// Sets `id` from the content.
    pub fn with_id(mut self) -> Result<Self, super::canonical::CanonicalError> {
        self.id = self.compute_id()?.into();
        Ok(self)
    }
}

/// Something worth telling the user about a document that is not an error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Diagnostic {
    /// Stable code (serialised as its snake_case name, e.g. `no_timestamp`).
    pub code: DiagnosticCode,
    pub message: String,
}

/// The result of normalising one document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NormalisedDocument {
    pub format: SourceFormat,
    pub document_id: Option<String>,
    pub document_digest: String,
    pub observations: Vec<Observation>,
    /// Unmatched products, unknown tokens, missing timestamps.
    pub diagnostics: Vec<Diagnostic>,
}

/// Context a normaliser needs from outside the document.
#[derive(Clone, Debug, Default)]
pub struct IngestContext {
    /// Tenant (header or flag); `default` when `None`.
    pub tenant: Option<String>,
    /// Issuer claimed by the transport (e.g. the `issuer` message header).
    pub issuer_header: Option<String>,
    /// Issuer proven by a verified signature (overrides everything).
    pub signed_issuer: Option<String>,
    pub signature: Signature,
    pub provenance: Provenance,
    /// A detached OpenPGP signature over the document's bytes, as the transport carried
    /// it (Kafka header `openpgp-signature`, a `<document>.asc` beside a file); the
    /// verifier judges it and sets `signature` and `signed_issuer`.
    pub openpgp_signature: Option<Vec<u8>>,
}

/// Picks the vulnerability key: the first CVE id (smallest CVE in byte order), else the
/// smallest id; returns the key and the sorted, unique alias list (including the key).
pub fn vulnerability_key<I: IntoIterator<Item = String>>(ids: I) -> Option<(String, Vec<String>)> {
    let mut all: Vec<String> = ids.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
    all.sort();
    all.dedup();
    let key = all.iter().find(|s| s.to_ascii_uppercase().starts_with("CVE-")).or_else(|| all.first())?.clone();
    let key = if key.to_ascii_uppercase().starts_with("CVE-") { key.to_ascii_uppercase() } else { key };
    Some((key, all))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vulnerability_key_prefers_cve() {
        let (k, a) = vulnerability_key(["GO-2024-3321".into(), "GHSA-v778".into(), "CVE-2024-45337".into()]).unwrap();
        assert_eq!(k, "CVE-2024-45337");
        assert_eq!(a, vec!["CVE-2024-45337", "GHSA-v778", "GO-2024-3321"]);
        let (k, _) = vulnerability_key(["GO-2".into(), "GHSA-1".into()]).unwrap();
        assert_eq!(k, "GHSA-1");
        assert!(vulnerability_key(Vec::<String>::new()).is_none());
    }

    #[test]
    fn crosswalk_anchors() {
        assert_eq!(Status::from_cyclonedx("exploitable"), Some(Status::Affected));
        assert_eq!(Status::from_cyclonedx("false_positive"), Some(Status::NotAffected));
        assert_eq!(Status::from_cyclonedx("resolved_with_pedigree"), Some(Status::Fixed));
        assert_eq!(Status::from_csaf("last_affected"), Some(Status::Affected));
        assert_eq!(Status::from_csaf("first_fixed"), Some(Status::Fixed));
        assert_eq!(Status::from_csaf("recommended"), None);
    }
}
