//! The stable codes the core reports (diagnostics of a document, reasons of a conflict,
//! the source of an evaluation time), as enums instead of free strings.
//!
//! Invariants:
//! * every variant serialises (serde) to exactly its [`as_str`](DiagnosticCode::as_str)
//!   name, a snake_case identifier, and parses back from it: records, observations and
//!   golden outputs keep the bytes the strings had, so no digest changes;
//! * variants are declared in the byte order of their names, so the derived `Ord` (which
//!   sorts conflicts and keys maps) orders them as the strings did;
//! * every variant is documented (diagnostics and conflict reasons in
//!   `docs/consensus.md`, dead-letter reasons in README.md; a test checks it), and names
//!   never change: they are stored, queried (`?reason=`) and used as metric labels.

use std::fmt;
use std::str::FromStr;

/// A name that is not one of a code enum's.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind}: {value:?}")]
pub struct UnknownCode {
    pub kind: &'static str,
    pub value: String,
}

/// Declares a code enum: serde renames, `as_str`, `ALL`, `Display` and `FromStr`, all
/// from one list of `Variant => "name"`.
macro_rules! codes {
    ($(#[$meta:meta])* $vis:vis enum $name:ident ($kind:literal) { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
        $vis enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// Every variant, in declaration (= name) order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The stable snake_case name (also the serde form).
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownCode;
            fn from_str(s: &str) -> Result<Self, UnknownCode> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownCode { kind: $kind, value: s.to_string() }),
                }
            }
        }
    };
}

codes! {
    /// What a [`Diagnostic`](super::model::Diagnostic) reports about a document: something
    /// worth telling the user that is not an error (nothing is dropped silently).
    pub enum DiagnosticCode ("diagnostic code") {
        /// CycloneDX: a `bom-ref` defined more than once; the first definition is used.
        DuplicateBomRef => "duplicate_bom_ref",
        /// CSAF: a product id defined more than once; the first definition is used.
        DuplicateProductId => "duplicate_product_id",
        /// A purl / CPE / identifier of a product that does not parse; it is ignored.
        InvalidIdentifier => "invalid_identifier",
        /// CSAF: a `product_version_range` that is neither `vers:` nor a common operator
        /// form (or an empty interval); the product is not matched.
        InvalidVersionRange => "invalid_version_range",
        /// CycloneDX: a vulnerability without `analysis.state`: not a VEX statement, skipped.
        NoAnalysisState => "no_analysis_state",
        /// No statement or document date: the Unix epoch is used.
        NoTimestamp => "no_timestamp",
        /// CSAF: a `product_status` list that is not a VEX status (e.g. `recommended`).
        NotAStatus => "not_a_status",
        /// OpenVEX: a product id that is no purl, CPE, hash or image reference (a plain
        /// name, an IRI): keyed `id:<string>`, matched exactly.
        OpaqueKey => "opaque_key",
        /// CSAF: two platforms of one document that the platform table maps to one
        /// `distro` value: both are keyed `platform=<their own key>` instead.
        PlatformAmbiguous => "platform_ambiguous",
        /// A vulnerability id, product id or key over the length limit: never a key.
        TooLong => "too_long",
        /// CSAF: a product group id that is not defined in the product tree.
        UnknownGroup => "unknown_group",
        /// A justification outside the vocabulary: kept as `justification_original` only.
        UnknownJustification => "unknown_justification",
        /// CSAF: a `product_status` key that is not a CSAF status list; ignored.
        UnknownStatus => "unknown_status",
        /// A product that resolves to no global key.
        UnmatchedProduct => "unmatched_product",
        /// A statement that names no product: it applies to nothing.
        UnmatchedStatement => "unmatched_statement",
        /// CSAF: a product under an `architecture` branch whose name is no unambiguous
        /// RPM NEVRA or Debian `name_version_arch`: a name key, version and arch outside
        /// its package key.
        UnparsedPackageName => "unparsed_package_name",
        /// CycloneDX: an `affects[].versions[]` entry that cannot be applied to its
        /// reference (e.g. a range of an unknown scheme); the entry is skipped.
        VersionNotApplied => "version_not_applied",
    }
}

codes! {
    /// Why a consensus record carries a [`Conflict`](super::consensus::Conflict).
    pub enum ConflictReason ("conflict reason") {
        /// A counted statement names no issuer, or a statement's signature failed.
        MissingProvenance => "missing_provenance",
        /// A disagreement between statements of different scope (version-less or range
        /// against exact, or different subcomponents).
        ScopeMismatch => "scope_mismatch",
        /// Counted statements with different statuses, or one issuer contradicting itself
        /// in different documents with the same time.
        StatusDisagreement => "status_disagreement",
    }
}

codes! {
    /// Why an input was dead-lettered (the DLQ header `vex-lens-error`, the embedded
    /// store's dead letters, the label of `vex_dead_letter_total`).
    pub enum DeadLetterReason ("dead-letter reason") {
        /// A document that is JSON but not a valid document of its format.
        InvalidDocument => "invalid_document",
        /// A DSSE envelope that does not parse (its verification is `malformed_envelope`).
        InvalidEnvelope => "invalid_envelope",
        /// Not JSON (or an empty message).
        InvalidJson => "invalid_json",
        /// A message on the observations topic that is JSON but not a valid observation
        /// (or whose message key is not its `<tenant>/<package>`).
        InvalidObservation => "invalid_observation",
        /// A `tenant` header (Kafka) that is not a tenant name (1 to 128 of
        /// `A-Z a-z 0-9 . _ -`, the API's rule).
        InvalidTenant => "invalid_tenant",
        /// JSON, but no OpenVEX, CSAF or CycloneDX VEX document.
        NotVex => "not_vex",
        /// One of the document's observations is larger than the broker accepts.
        ObservationTooLarge => "observation_too_large",
        /// Handling failed transiently on every attempt.
        RetriesExhausted => "retries_exhausted",
        /// The store rejected the message's observation or verification for good.
        StoreRejected => "store_rejected",
        /// A message on the observations topic whose `tenant` header names another
        /// tenant than its observation (and its message key).
        TenantMismatch => "tenant_mismatch",
        /// Over the size limit.
        TooLarge => "too_large",
        /// A document that could not be read (a watched file that cannot be opened is
        /// skipped and retried instead, never dead-lettered).
        Unreadable => "unreadable",
    }
}

codes! {
    /// Why a signature status is `unsigned` or `failed` (an observation's
    /// `signature.reason`, a DSSE verification's `reason`).
    pub enum SignatureReason ("signature reason") {
        /// A signature names a trusted key but does not verify with it.
        BadSignature => "bad_signature",
        /// OpenPGP: the key could not sign at the signature's creation time (created later,
        /// no valid binding, no signing flag).
        InvalidKey => "invalid_key",
        /// OpenPGP: the key (or its primary) had expired at the signature's creation time.
        KeyExpired => "key_expired",
        /// OpenPGP: the key (or its primary) was revoked at the signature's creation time.
        KeyRevoked => "key_revoked",
        /// The envelope is not a valid DSSE envelope.
        MalformedEnvelope => "malformed_envelope",
        /// OpenPGP: the signature text is no readable detached signature.
        MalformedSignature => "malformed_signature",
        /// The envelope has no signatures.
        NoSignatures => "no_signatures",
        /// Some trusted keys verified, but fewer distinct keys than the threshold.
        ThresholdNotMet => "threshold_not_met",
        /// An observation claimed `verified` or `failed` without the internal hop's tag:
        /// read as `unsigned`.
        UnauthenticatedClaim => "unauthenticated_claim",
        /// No signature names (or could be tried against) a trusted key.
        UnknownKey => "unknown_key",
        /// OpenPGP: the signature hashes with MD5, SHA-1 or RIPEMD-160.
        WeakHash => "weak_hash",
        /// A keyless signature verifies with none of the trusted keys.
        WrongKey => "wrong_key",
    }
}

codes! {
    /// What kind of signature an observation's `signature` judged (absent: a DSSE envelope,
    /// or no signature at all, the form written before OpenPGP signatures were read).
    pub enum SignatureKind ("signature kind") {
        /// A DSSE envelope (the metric label of envelope verifications).
        Dsse => "dsse",
        /// A detached OpenPGP signature beside the document.
        Openpgp => "openpgp",
    }
}

codes! {
    /// Where a record's `evaluation_time` came from (CONSENSUS.md "Weight of a statement";
    /// the record's `evaluation_time_source`, `schemas/consensus-record.schema.json`).
    pub enum EvaluationTimeSource ("evaluation time source") {
        /// The policy's explicit `as_of`.
        AsOf => "as_of",
        /// The newest counted statement of an issuer of tier `known` or above.
        NewestKnownIssuer => "newest_known_issuer",
        /// The newest counted statement (no counted statement of a known issuer).
        NewestStatement => "newest_statement",
        /// Nothing counted: the newest statement, or the epoch.
        None => "none",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde form == `as_str`, it parses back, and `Ord` is the names' byte order.
    fn check<T>(all: &[T])
    where
        T: Copy + Ord + fmt::Debug + fmt::Display + FromStr + serde::Serialize + serde::de::DeserializeOwned,
        <T as FromStr>::Err: fmt::Debug,
    {
        for &c in all {
            let name = c.to_string();
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<T>(&format!("\"{name}\"")).unwrap(), c);
            assert_eq!(name.parse::<T>().unwrap(), c);
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
        }
        let mut by_name = all.to_vec();
        by_name.sort_by_key(|c| c.to_string());
        assert_eq!(by_name, all.to_vec(), "declare variants in name order");
        let mut by_ord = all.to_vec();
        by_ord.sort();
        assert_eq!(by_ord, all.to_vec());
    }

    #[test]
    fn codes_serialise_as_their_names_in_name_order() {
        check(DiagnosticCode::ALL);
        check(ConflictReason::ALL);
        check(DeadLetterReason::ALL);
        check(SignatureReason::ALL);
        check(SignatureKind::ALL);
        check(EvaluationTimeSource::ALL);
        assert!("nope".parse::<DiagnosticCode>().is_err());
        assert!(serde_json::from_str::<ConflictReason>("\"Status_Disagreement\"").is_err());
    }

    /// The lines of `docs/consensus.md` under the heading `heading` (to the next `## `).
    fn doc_section(heading: &str) -> String {
        let doc = include_str!("../../docs/consensus.md");
        let start = doc.find(heading).unwrap_or_else(|| panic!("docs/consensus.md has no {heading:?}"));
        let rest = &doc[start + heading.len()..];
        rest[..rest.find("\n## ").unwrap_or(rest.len())].to_string()
    }

    #[test]
    fn every_code_is_documented() {
        let diagnostics = doc_section("### Diagnostics");
        for c in DiagnosticCode::ALL {
            assert!(diagnostics.contains(&format!("| `{c}` |")), "diagnostic {c} is not in docs/consensus.md");
        }
        // And the table names no code the enum lacks.
        let rows: Vec<&str> = diagnostics.lines().filter_map(|l| l.strip_prefix("| `")?.split('`').next()).collect();
        assert_eq!(rows.len(), DiagnosticCode::ALL.len(), "{rows:?}");
        for r in rows {
            assert!(
                r.parse::<DiagnosticCode>().is_ok(),
                "docs/consensus.md documents {r:?}, which is no diagnostic code"
            );
        }
        let readme = include_str!("../../README.md");
        let start = readme.find("- **Dead-letter reasons**").expect("README.md lists the dead-letter reasons");
        let rest = &readme[start + 2..];
        let bullet = &rest[..rest.find("\n- **").unwrap_or(rest.len())];
        // The codes are the backticked words followed by their meaning in parentheses.
        let listed: Vec<&str> =
            bullet.split('`').skip(1).step_by(2).filter(|c| bullet.contains(&format!("`{c}` ("))).collect();
        for c in DeadLetterReason::ALL {
            assert!(listed.contains(&c.as_str()), "dead-letter reason {c} is not in README.md");
        }
        for c in &listed {
            assert!(c.parse::<DeadLetterReason>().is_ok(), "README.md lists {c:?}, which is no dead-letter reason");
        }
        // The observation schema (the documented form of the observations topic) allows
        // exactly the signature reasons.
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/observation.schema.json")).unwrap();
        let allowed: Vec<&str> = schema
            .pointer("/properties/signature/properties/reason/enum")
            .and_then(|v| v.as_array())
            .expect("signature.reason is an enum in schemas/observation.schema.json")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(allowed, SignatureReason::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>());
        // ...and the record schema exactly the evaluation time sources.
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/consensus-record.schema.json")).unwrap();
        let allowed: Vec<&str> = schema
            .pointer("/properties/evaluation_time_source/enum")
            .and_then(|v| v.as_array())
            .expect("evaluation_time_source is an enum in schemas/consensus-record.schema.json")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(allowed, EvaluationTimeSource::ALL.iter().map(|r| r.as_str()).collect::<Vec<_>>());
        let conflicts = doc_section("## 6. Conflicts");
        for c in ConflictReason::ALL {
            assert!(conflicts.contains(&format!("- `{c}`:")), "conflict reason {c} is not in docs/consensus.md");
        }
    }
}
