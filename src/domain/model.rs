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
        Ok(super::canonical::sha256_hex_ordered(&Content::of(self))?)
    }

    /// The RFC 8785 canonical JSON of everything the observation says (all fields but
    /// `id` and `provenance`): the input of its id and of the internal hop's HMAC tag.
    pub fn content_bytes(&self) -> Result<Vec<u8>, super::canonical::CanonicalError> {
        Ok(super::canonical::write_ordered(Vec::with_capacity(512), &Content::of(self))?)
    }

    /// Sets `id` from the content.
    pub fn with_id(mut self) -> Result<Self, super::canonical::CanonicalError> {
        self.id = self.compute_id()?.into();
        Ok(self)
    }
}

/// What an observation says (all its fields but `id` and `provenance`), borrowed, with
/// its members declared in RFC 8785 key order and the same names and omissions as
/// `Observation`'s serde form: serde_json's compact writer gives its canonical bytes
/// directly (no `serde_json::Value` in between, no sorting). The tests check the bytes
/// against the RFC 8785 form of the `Observation` itself on generated observations.
#[derive(Serialize)]
struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    action_statement: &'a Option<Arc<str>>,
    aliases: &'a [Arc<str>],
    artifact: &'a str,
    document_digest: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    document_id: &'a Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    document_version: &'a Option<Arc<str>>,
    format: SourceFormat,
    #[serde(skip_serializing_if = "Option::is_none")]
    impact_statement: &'a Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    issuer: &'a Option<Arc<str>>,
    issuer_source: IssuerSource,
    #[serde(skip_serializing_if = "Option::is_none")]
    justification: Option<Justification>,
    #[serde(skip_serializing_if = "Option::is_none")]
    justification_original: &'a Option<Arc<str>>,
    #[serde(skip_serializing_if = "EntryKind::is_statement")]
    kind: EntryKind,
    package: &'a str,
    position: u32,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    scope: &'a [Arc<str>],
    signature: SignatureContent<'a>,
    status: Status,
    status_original: &'a str,
    tenant: &'a str,
    timestamp: &'a Timestamp,
    timestamp_source: TimestampSource,
    vulnerability: &'a str,
}

/// `Signature`'s serde form with its members in RFC 8785 key order.
#[derive(Serialize)]
struct SignatureContent<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    keyid: &'a Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<SignatureKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<SignatureReason>,
    status: SignatureStatus,
}

impl<'a> Content<'a> {
    fn of(o: &'a Observation) -> Self {
        // Destructured, so that a field added to `Observation` fails to compile here
        // until it is placed in the content (or, like `id` and `provenance`, left out).
        let Observation {
            id: _,
            kind,
            tenant,
            issuer,
            issuer_source,
            artifact,
            package,
            scope,
            vulnerability,
            aliases,
            status,
            status_original,
            justification,
            justification_original,
            impact_statement,
            action_statement,
            timestamp,
            timestamp_source,
            document_id,
            document_version,
            document_digest,
            position,
            format,
            signature: Signature { kind: signature_kind, status: signature_status, reason, keyid },
            provenance: _,
        } = o;
        Content {
            action_statement,
            aliases,
            artifact,
            document_digest,
            document_id,
            document_version,
            format: *format,
            impact_statement,
            issuer,
            issuer_source: *issuer_source,
            justification: *justification,
            justification_original,
            kind: *kind,
            package,
            position: *position,
            scope,
            signature: SignatureContent { keyid, kind: *signature_kind, reason: *reason, status: *signature_status },
            status: *status,
            status_original,
            tenant,
            timestamp,
            timestamp_source: *timestamp_source,
            vulnerability,
        }
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

    /// The content bytes as they were made before `Content`: the observation through a
    /// `serde_json::Value`, `id` and `provenance` removed, written by the RFC 8785 crate.
    fn content_bytes_via_value(o: &Observation) -> Vec<u8> {
        let mut v = serde_json::to_value(o).unwrap();
        let m = v.as_object_mut().unwrap();
        m.remove("id");
        m.remove("provenance");
        crate::domain::canonical::to_vec(&v).unwrap()
    }

    /// Text with what JSON escapes (quotes, backslashes, control characters), what it
    /// does not (DEL, U+2028, non-BMP characters) and plain ASCII.
    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let unit = prop_oneof![
            "[a-zA-Z0-9:/@.%+-]{1,8}",
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("\u{7f}\u{2028}\u{2029}".to_string()),
            Just("😀𝄞é中".to_string()),
            proptest::char::range('\u{0}', '\u{1f}').prop_map(String::from),
            any::<char>().prop_map(String::from),
        ];
        proptest::collection::vec(unit, 0..6).prop_map(|v| v.concat())
    }

    fn observation() -> impl proptest::strategy::Strategy<Value = Observation> {
        use proptest::prelude::*;
        let arc = || text().prop_map(Arc::<str>::from);
        let opt = move || proptest::option::of(arc());
        let list = move || proptest::collection::vec(arc(), 0..3);
        let timestamp = (0u32..3000, 1u32..13, 1u32..29, 0u32..24, 0usize..10, 0u64..1_000_000_000, -12i32..13)
            .prop_map(|(y, mo, d, h, digits, frac, off)| {
                let frac = if digits == 0 { String::new() } else { format!(".{:0>9}", frac)[..digits + 1].to_string() };
                let off = if off == 0 { "Z".to_string() } else { format!("{:+03}:30", off) };
                Timestamp::parse(&format!("{y:04}-{mo:02}-{d:02}T{h:02}:07:59{frac}{off}")).unwrap()
            });
        let signature = (
            proptest::option::of(proptest::sample::select(SignatureKind::ALL)),
            proptest::sample::select(vec![
                SignatureStatus::Verified,
                SignatureStatus::Unsigned,
                SignatureStatus::Failed,
            ]),
            proptest::option::of(proptest::sample::select(SignatureReason::ALL)),
            proptest::option::of(text()),
        )
            .prop_map(|(kind, status, reason, keyid)| Signature { kind, status, reason, keyid });
        let justification = proptest::sample::select(vec![
            Justification::ComponentNotPresent,
            Justification::VulnerableCodeNotPresent,
            Justification::VulnerableCodeNotInExecutePath,
            Justification::VulnerableCodeCannotBeControlledByAdversary,
            Justification::InlineMitigationsAlreadyExist,
        ]);
        let source = proptest::sample::select(vec![
            IssuerSource::Signature,
            IssuerSource::Header,
            IssuerSource::Document,
            IssuerSource::None,
        ]);
        let stamp_source = proptest::sample::select(vec![
            TimestampSource::Statement,
            TimestampSource::Document,
            TimestampSource::Epoch,
        ]);
        let format = proptest::sample::select(vec![SourceFormat::Openvex, SourceFormat::Csaf, SourceFormat::Cyclonedx]);
        let kind = proptest::sample::select(vec![EntryKind::Statement, EntryKind::VersionMarker]);
        (
            (arc(), kind, arc(), opt(), source, arc(), arc(), list()),
            (arc(), list(), proptest::sample::select(Status::ALL.to_vec()), arc(), proptest::option::of(justification)),
            (opt(), opt(), opt(), timestamp, stamp_source, opt(), opt(), arc()),
            (any::<u32>(), format, signature, opt()),
        )
            .prop_map(|(a, b, c, d)| {
                let (id, kind, tenant, issuer, issuer_source, artifact, package, scope) = a;
                let (vulnerability, aliases, status, status_original, justification) = b;
                let (justification_original, impact_statement, action_statement, timestamp, timestamp_source) =
                    (c.0, c.1, c.2, c.3, c.4);
                let (document_id, document_version, document_digest) = (c.5, c.6, c.7);
                let (position, format, signature, source) = d;
                Observation {
                    id,
                    kind,
                    tenant,
                    issuer,
                    issuer_source,
                    artifact,
                    package,
                    scope,
                    vulnerability,
                    aliases,
                    status,
                    status_original,
                    justification,
                    justification_original,
                    impact_statement,
                    action_statement,
                    timestamp,
                    timestamp_source,
                    document_id,
                    document_version,
                    document_digest,
                    position,
                    format,
                    signature,
                    provenance: Provenance {
                        source: source.map(|s| s.to_string()),
                        correlation_id: Some("c".into()),
                        received_at_ms: Some(1),
                        sequence: None,
                    },
                }
            })
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// `Content` (declared in RFC 8785 order, written without sorting) gives exactly
        /// the bytes, and so the ids, of the observation's RFC 8785 form.
        #[test]
        fn content_bytes_are_the_rfc8785_form(o in observation()) {
            let want = content_bytes_via_value(&o);
            proptest::prop_assert_eq!(String::from_utf8(o.content_bytes().unwrap()).unwrap(), String::from_utf8(want.clone()).unwrap());
            proptest::prop_assert_eq!(o.compute_id().unwrap(), crate::domain::canonical::sha256_hex(&want));
        }
    }

    /// A known observation's content bytes, spelled out (ids are stored and compared
    /// across versions, so these bytes never change).
    #[test]
    fn content_bytes_of_a_known_observation() {
        let o = Observation {
            id: Arc::from(""),
            kind: EntryKind::Statement,
            tenant: "default".into(),
            issuer: Some("Ex \"Corp\"\n".into()),
            issuer_source: IssuerSource::Document,
            artifact: "pkg:npm/a@1".into(),
            package: "pkg:npm/a".into(),
            scope: vec![],
            vulnerability: "CVE-2024-1".into(),
            aliases: vec!["CVE-2024-1".into(), "GHSA-é😀".into()],
            status: Status::NotAffected,
            status_original: "not_affected".into(),
            justification: Some(Justification::ComponentNotPresent),
            justification_original: Some("component_not_present".into()),
            impact_statement: None,
            action_statement: Some("\u{1}\u{7f}\u{2028}".into()),
            timestamp: Timestamp::parse("2024-01-02T03:04:05.120Z").unwrap(),
            timestamp_source: TimestampSource::Statement,
            document_id: Some("doc".into()),
            document_version: None,
            document_digest: "sha256:00".into(),
            position: 7,
            format: SourceFormat::Openvex,
            signature: Signature::default(),
            provenance: Provenance::default(),
        };
        let bytes = o.content_bytes().unwrap();
        assert_eq!(bytes, content_bytes_via_value(&o));
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "{\"action_statement\":\"\\u0001\u{7f}\u{2028}\",\"aliases\":[\"CVE-2024-1\",\"GHSA-é😀\"],\"artifact\":\"pkg:npm/a@1\",\"document_digest\":\"sha256:00\",\"document_id\":\"doc\",\"format\":\"openvex\",\"issuer\":\"Ex \\\"Corp\\\"\\n\",\"issuer_source\":\"document\",\"justification\":\"component_not_present\",\"justification_original\":\"component_not_present\",\"package\":\"pkg:npm/a\",\"position\":7,\"signature\":{\"status\":\"unsigned\"},\"status\":\"not_affected\",\"status_original\":\"not_affected\",\"tenant\":\"default\",\"timestamp\":\"2024-01-02T03:04:05.120Z\",\"timestamp_source\":\"statement\",\"vulnerability\":\"CVE-2024-1\"}"
        );
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
