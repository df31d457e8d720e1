//! Issuer directory, trust tiers and the policy knobs of the consensus.
//!
//! Invariants: every weight and factor is an integer in parts per million (ppm), so sums
//! are exact and independent of order; the policy version is a SHA-256 over the
//! canonical JSON of the directory, the knobs and the crosswalk version, so any change of
//! policy changes every digest computed under it. A tenant's trust changes
//! ([`TenantTrust`]) are layered over the configuration's policy; every change raises the
//! tenant's policy epoch by exactly one (the epoch orders policies, the version names them).

use super::canonical;
use super::model::CROSSWALK_VERSION;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One million: 1.0 in ppm.
pub const PPM: u64 = 1_000_000;

/// Trust tier of an issuer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Untrusted,
    Unknown,
    Known,
    Trusted,
    Authoritative,
}

impl Tier {
    /// Default weight of the tier, in ppm.
    pub fn default_weight_ppm(self) -> u64 {
        match self {
            Tier::Authoritative => 1_000_000,
            Tier::Trusted => 800_000,
            Tier::Known => 500_000,
            Tier::Unknown => 300_000,
            Tier::Untrusted => 100_000,
        }
    }
}

/// A key of an issuer: a DSSE public key, or an OpenPGP certificate.
///
/// In `config/issuers.toml` a DSSE key is `{ public_key = "...", keyid = "<optional>" }`
/// (the form without `type`) and an OpenPGP key `{ type = "openpgp", certificate =
/// "<armored>", fingerprint = "<optional check>" }`. Serialised (also into the policy
/// version) as it is written, so a directory of DSSE keys keeps its policy version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawIssuerKey", into = "RawIssuerKey")]
pub enum IssuerKey {
    /// A DSSE verification key.
    Dsse {
        /// Key id (securesystemslib style); computed from the key when absent.
        keyid: Option<String>,
        /// SPKI PEM, securesystemslib key JSON, or hex of a raw Ed25519 / SEC1 P-256 key.
        public_key: String,
    },
    /// An OpenPGP certificate (transferable public key) verifying detached signatures.
    OpenPgp {
        /// The armored certificate (`gpg --armor --export FINGERPRINT`).
        certificate: String,
        /// The primary key's fingerprint as checked elsewhere; start-up fails when the
        /// certificate's differs (spaces and case ignored).
        fingerprint: Option<String>,
    },
}

impl IssuerKey {
    /// A DSSE key without a configured keyid.
    pub fn dsse(public_key: impl Into<String>) -> IssuerKey {
        IssuerKey::Dsse { keyid: None, public_key: public_key.into() }
    }

    /// How start-up errors name the key: its position, and its keyid or fingerprint when
    /// configured (e.g. `#1 (keyid acme-2024)`, `#0 (openpgp 83CE...)`).
    pub fn describe(&self, index: usize) -> String {
        let configured = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        match self {
            IssuerKey::Dsse { keyid, .. } => match configured(keyid) {
                Some(id) => format!("#{index} (keyid {id})"),
                None => format!("#{index}"),
            },
            IssuerKey::OpenPgp { fingerprint, .. } => match configured(fingerprint) {
                Some(fp) => format!("#{index} (openpgp {fp})"),
                None => format!("#{index} (openpgp)"),
            },
        }
    }
}

/// The key type named by `type` in issuers.toml.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeyType {
    Dsse,
    Openpgp,
}

/// The written form of an [`IssuerKey`] (every field optional; checked by `try_from`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssuerKey {
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<KeyType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    keyid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    public_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    certificate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
}

impl TryFrom<RawIssuerKey> for IssuerKey {
    type Error = String;
    fn try_from(raw: RawIssuerKey) -> Result<Self, String> {
        match raw.kind {
            None | Some(KeyType::Dsse) => {
                if raw.certificate.is_some() || raw.fingerprint.is_some() {
                    return Err(
                        "`certificate` and `fingerprint` belong to an OpenPGP key: add `type = \"openpgp\"`".into()
                    );
                }
                let public_key = raw
                    .public_key
                    .ok_or("a DSSE key needs `public_key` (an OpenPGP key: `type = \"openpgp\"`, `certificate`)")?;
                Ok(IssuerKey::Dsse { keyid: raw.keyid, public_key })
            }
            Some(KeyType::Openpgp) => {
                if raw.public_key.is_some() || raw.keyid.is_some() {
                    return Err(
                        "an OpenPGP key takes `certificate` and an optional `fingerprint`, not `public_key`/`keyid`"
                            .into(),
                    );
                }
                let certificate =
                    raw.certificate.ok_or("an OpenPGP key needs `certificate` (the armored public key)")?;
                Ok(IssuerKey::OpenPgp { certificate, fingerprint: raw.fingerprint })
            }
        }
    }
}

impl From<IssuerKey> for RawIssuerKey {
    fn from(k: IssuerKey) -> Self {
        match k {
            IssuerKey::Dsse { keyid, public_key } => {
                RawIssuerKey { kind: None, keyid, public_key: Some(public_key), certificate: None, fingerprint: None }
            }
            IssuerKey::OpenPgp { certificate, fingerprint } => RawIssuerKey {
                kind: Some(KeyType::Openpgp),
                keyid: None,
                public_key: None,
                certificate: Some(certificate),
                fingerprint,
            },
        }
    }
}

/// A per-tenant override of an issuer's trust.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TenantOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Weight in [0, 1] replacing the tier's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

/// An issuer of the directory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    /// Stable id used in records (e.g. `redhat`).
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub display_name: String,
    pub tier: Tier,
    /// Weight in [0, 1] replacing the tier's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Other names documents use for this issuer (author strings, CSAF publisher
    /// namespaces, CycloneDX supplier names). Matched case-insensitively.
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub keys: Vec<IssuerKey>,
    /// Per-tenant overrides.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantOverride>,
}

impl Issuer {
    /// Its tier and weight (ppm) for a tenant: the tenant's override when it sets one (a
    /// tier override without a weight takes that tier's default weight).
    pub fn weight_for(&self, tenant: &str) -> (Tier, u64) {
        let ov = self.tenants.get(tenant);
        let tier = ov.and_then(|o| o.tier).unwrap_or(self.tier);
        let weight = ov.and_then(|o| o.weight).or(if ov.and_then(|o| o.tier).is_some() { None } else { self.weight });
        (tier, weight.map(to_ppm).unwrap_or_else(|| tier.default_weight_ppm()))
    }
}

/// The issuer directory (config/issuers.toml).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct IssuerDirectory {
    #[serde(default)]
    pub issuers: Vec<Issuer>,
}

/// An issuer as resolved for one statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedIssuer {
    pub id: String,
    pub tier: Tier,
    pub weight_ppm: u64,
    /// Whether the directory knows it.
    pub known: bool,
}

/// Directory errors (load and validation).
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("issuer directory {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("issuer directory: {0}")]
    Invalid(String),
}

/// The issuer id used when a statement names no issuer at all.
pub const UNKNOWN_ISSUER: &str = "unknown";

impl IssuerDirectory {
    /// Parses TOML (`[[issuers]]` tables) or JSON (`{"issuers": [...]}`), then validates.
    pub fn from_str(path: &str, text: &str) -> Result<Self, DirectoryError> {
        let dir: IssuerDirectory = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)
                .map_err(|e| DirectoryError::Parse { path: path.into(), reason: e.to_string() })?
        } else {
            toml::from_str(text).map_err(|e| DirectoryError::Parse { path: path.into(), reason: e.to_string() })?
        };
        dir.validate()?;
        Ok(dir)
    }

    /// Ids unique and non-empty, weights in [0, 1], no alias shared by two issuers. The
    /// keys are checked where they are parsed, `crypto::KeyDirectory::from_directory` (the
    /// loader builds one).
    pub fn validate(&self) -> Result<(), DirectoryError> {
        let mut names: BTreeMap<String, &str> = BTreeMap::new();
        for i in &self.issuers {
            if i.id.trim().is_empty() {
                return Err(DirectoryError::Invalid("an issuer has an empty id".into()));
            }
            let ws = std::iter::once(i.weight).chain(i.tenants.values().map(|t| t.weight));
            for w in ws.flatten() {
                if !(0.0..=1.0).contains(&w) || w.is_nan() {
                    return Err(DirectoryError::Invalid(format!("issuer {}: weight {w} is outside [0, 1]", i.id)));
                }
            }
            for n in std::iter::once(&i.id).chain(std::iter::once(&i.display_name)).chain(i.aliases.iter()) {
                let k = n.trim().to_lowercase();
                if k.is_empty() {
                    continue;
                }
                if let Some(other) = names.insert(k.clone(), &i.id) {
                    if other != i.id {
                        return Err(DirectoryError::Invalid(format!(
                            "name {n:?} belongs to both issuer {other} and issuer {}",
                            i.id
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Finds the directory entry a claimed name refers to (id, display name or alias,
    /// case-insensitive).
    pub fn find(&self, name: &str) -> Option<&Issuer> {
        let k = name.trim().to_lowercase();
        self.issuers.iter().find(|i| {
            i.id.to_lowercase() == k
                || (!i.display_name.is_empty() && i.display_name.trim().to_lowercase() == k)
                || i.aliases.iter().any(|a| a.trim().to_lowercase() == k)
        })
    }

    /// Resolves a claimed issuer name for a tenant. A name the directory does not know is
    /// its own issuer id with tier `unknown`; no name at all is issuer `unknown`.
    pub fn resolve(&self, claimed: Option<&str>, tenant: &str) -> ResolvedIssuer {
        let Some(name) = claimed.map(str::trim).filter(|s| !s.is_empty()) else {
            return ResolvedIssuer {
                id: UNKNOWN_ISSUER.into(),
                tier: Tier::Unknown,
                weight_ppm: Tier::Unknown.default_weight_ppm(),
                known: false,
            };
        };
        match self.find(name) {
            Some(i) => {
                let (tier, weight_ppm) = i.weight_for(tenant);
                ResolvedIssuer { id: i.id.clone(), tier, weight_ppm, known: true }
            }
            None => ResolvedIssuer {
                id: name.to_string(),
                tier: Tier::Unknown,
                weight_ppm: Tier::Unknown.default_weight_ppm(),
                known: false,
            },
        }
    }
}

/// Rounds a factor in [0, 1] to ppm.
pub fn to_ppm(x: f64) -> u64 {
    if x.is_nan() || x <= 0.0 {
        0
    } else {
        (x.min(1.0) * PPM as f64).round() as u64
    }
}

/// Consensus mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    #[default]
    WeightedVote,
    Lattice,
    HighestWeight,
    AuthoritativeFirst,
    MostRecent,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Mode::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| format!("unknown mode {s:?}; expected one of: {}", Mode::ALL.map(Mode::as_str).join(", ")))
    }
}

impl Mode {
    pub const ALL: [Mode; 5] =
        [Mode::WeightedVote, Mode::Lattice, Mode::HighestWeight, Mode::AuthoritativeFirst, Mode::MostRecent];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::WeightedVote => "weighted_vote",
            Mode::Lattice => "lattice",
            Mode::HighestWeight => "highest_weight",
            Mode::AuthoritativeFirst => "authoritative_first",
            Mode::MostRecent => "most_recent",
        }
    }
}

/// The knobs of the consensus (CONSENSUS.md "Weight of a statement" and "Modes").
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Knobs {
    /// Penalty for an unsigned statement: factor `1 - unsigned_penalty`.
    pub unsigned_penalty: f64,
    /// Freshness half-life in days.
    pub half_life_days: f64,
    /// Lowest freshness factor.
    pub freshness_floor: f64,
    /// Factor of a `not_affected` statement with neither justification nor impact statement.
    pub unjustified_not_affected_factor: f64,
    /// Exclude such statements instead of down-weighting them.
    pub require_justification_for_not_affected: bool,
    /// Total weight below which the result is `inconclusive`.
    pub minimum_weight: f64,
    /// Runner-up share of the total at or above which the result is `disputed`.
    pub conflict_threshold: f64,
}

impl Default for Knobs {
    fn default() -> Self {
        Knobs {
            unsigned_penalty: 0.3,
            half_life_days: 90.0,
            freshness_floor: 0.3,
            unjustified_not_affected_factor: 0.5,
            require_justification_for_not_affected: false,
            minimum_weight: 0.1,
            conflict_threshold: 0.3,
        }
    }
}

impl Knobs {
    pub fn validate(&self) -> Result<(), DirectoryError> {
        let unit = [
            ("unsigned_penalty", self.unsigned_penalty),
            ("freshness_floor", self.freshness_floor),
            ("unjustified_not_affected_factor", self.unjustified_not_affected_factor),
            ("minimum_weight", self.minimum_weight),
            ("conflict_threshold", self.conflict_threshold),
        ];
        for (k, v) in unit {
            if !(0.0..=1.0).contains(&v) || v.is_nan() {
                return Err(DirectoryError::Invalid(format!("consensus.{k} = {v} must be within [0, 1]")));
            }
        }
        if !(self.half_life_days.is_finite() && self.half_life_days > 0.0) {
            return Err(DirectoryError::Invalid(format!(
                "consensus.half_life_days = {} must be > 0",
                self.half_life_days
            )));
        }
        Ok(())
    }
}

/// Everything the consensus needs besides the observations.
#[derive(Clone, Debug)]
pub struct Policy {
    pub mode: Mode,
    pub directory: IssuerDirectory,
    pub knobs: Knobs,
    /// Evaluate freshness at this time instead of the pair's own evaluation time.
    pub as_of: Option<super::timestamp::Timestamp>,
    version: String,
    /// The tenant's policy epoch this policy is in force at: 0 for the seed of
    /// `config/issuers.toml`, raised by every persisted trust or policy change. Not part
    /// of [`Policy::version`] or of any digest; it orders record writes
    /// (`ports::RecordVersion`), so a recompute under a new epoch replaces every record
    /// written before it.
    epoch: u64,
    /// The directory's names, built with the policy (as its version is): see
    /// [`Policy::resolve`].
    names: Arc<NameIndex>,
}

/// Every name of the directory's issuers as [`IssuerDirectory::find`] compares them (the
/// id lower-cased, display name and aliases trimmed and lower-cased) -> the first issuer
/// with that name (its position and id); and the id of statements that name no issuer.
/// Resolving a statement's issuer is then one map lookup, without a copy of any string.
/// The policy's directory is not meant to change after [`Policy::new`] (its version would
/// not follow either); one that did gain or lose issuers, or rename one, is resolved
/// through [`IssuerDirectory::resolve`] instead.
#[derive(Debug)]
struct NameIndex {
    names: HashMap<String, (usize, Arc<str>)>,
    unknown: Arc<str>,
    /// How many issuers the directory had (a directory changed in place since is
    /// resolved directly, never through a stale index).
    issuers: usize,
}

impl NameIndex {
    fn of(directory: &IssuerDirectory) -> Self {
        let mut names: HashMap<String, (usize, Arc<str>)> = HashMap::new();
        for (pos, i) in directory.issuers.iter().enumerate() {
            let id: Arc<str> = Arc::from(i.id.as_str());
            let display = Some(&i.display_name).filter(|d| !d.is_empty()).map(|d| d.trim().to_lowercase());
            let aliases = i.aliases.iter().map(|a| a.trim().to_lowercase());
            for k in std::iter::once(i.id.to_lowercase()).chain(display).chain(aliases) {
                names.entry(k).or_insert_with(|| (pos, id.clone()));
            }
        }
        NameIndex { names, unknown: Arc::from(UNKNOWN_ISSUER), issuers: directory.issuers.len() }
    }
}

impl Policy {
    pub fn new(mode: Mode, directory: IssuerDirectory, knobs: Knobs) -> Self {
        let version = format!(
            "sha256:{}",
            canonical::sha256_hex(
                &canonical::to_vec(&serde_json::json!({
                    "crosswalk": CROSSWALK_VERSION,
                    "directory": directory,
                    "knobs": knobs,
                }))
                .unwrap_or_default()
            )
        );
        let names = Arc::new(NameIndex::of(&directory));
        Policy { mode, directory, knobs, as_of: None, version, epoch: 0, names }
    }

    /// The same policy at `epoch` (the tenant's policy epoch: 0 = the configuration's).
    pub fn with_epoch(mut self, epoch: u64) -> Self {
        self.epoch = epoch;
        self
    }

    /// The tenant's policy epoch this policy was built at (raised by every trust change;
    /// 0 = the configuration's seed). Orders policies; not part of [`Self::version`].
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    pub fn with_as_of(mut self, as_of: Option<super::timestamp::Timestamp>) -> Self {
        self.as_of = as_of;
        self
    }

    /// Hash of the directory, knobs and crosswalk version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// [`IssuerDirectory::resolve`] of a statement's claimed issuer for a tenant, as
    /// (issuer id, tier, weight in ppm), through the names indexed when the policy was
    /// built: the id is shared (the directory's, the claim itself when it names an issuer
    /// the directory does not know, or `unknown`), never copied. Equal to `resolve`
    /// (test `policy_resolve_equals_the_directory_resolve`).
    pub fn resolve(&self, claimed: Option<&Arc<str>>, tenant: &str) -> (Arc<str>, Tier, u64) {
        let unknown = (Tier::Unknown, Tier::Unknown.default_weight_ppm());
        let Some(c) = claimed else {
            return (self.names.unknown.clone(), unknown.0, unknown.1);
        };
        let name = c.trim();
        if name.is_empty() {
            return (self.names.unknown.clone(), unknown.0, unknown.1);
        }
        // A directory changed after the policy was built is resolved directly.
        let direct = || {
            let r = self.directory.resolve(Some(name), tenant);
            (Arc::from(r.id), r.tier, r.weight_ppm)
        };
        if self.names.issuers != self.directory.issuers.len() {
            return direct();
        }
        let key: std::borrow::Cow<str> = if name.bytes().any(|b| !b.is_ascii() || b.is_ascii_uppercase()) {
            name.to_lowercase().into()
        } else {
            name.into()
        };
        match self.names.names.get(key.as_ref()) {
            Some((pos, id)) => match self.directory.issuers.get(*pos) {
                Some(i) if i.id == **id => {
                    let (tier, weight) = i.weight_for(tenant);
                    (id.clone(), tier, weight)
                }
                _ => direct(),
            },
            None if name.len() == c.len() => (c.clone(), unknown.0, unknown.1),
            None => (Arc::from(name), unknown.0, unknown.1),
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Mode::WeightedVote, IssuerDirectory::default(), Knobs::default())
    }
}

/// A tenant's trust settings changed through the API (persisted per tenant; the store
/// wins over the configuration once a tenant has changed something): issuer overrides,
/// mode, knobs, and the tenant's policy epoch. Keys never live here: they always come from
/// the issuer directory file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantTrust {
    pub tenant: String,
    /// Raised by one on every change; 0 = never changed (the configuration's seed).
    pub epoch: u64,
    /// Issuer id -> this tenant's override (replaces the directory's override for the tenant).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub issuers: BTreeMap<String, TenantOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Every knob (a change merges into the effective knobs and stores them all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knobs: Option<Knobs>,
}

/// One trust change of one tenant.
#[derive(Clone, Debug, PartialEq)]
pub enum TrustChange {
    /// An issuer's tier and/or weight (in [0, 1]) for the tenant; replaces its override.
    Issuer { id: String, tier: Option<Tier>, weight: Option<f64> },
    /// The mode and/or some knobs (named knobs replace their values, the others keep theirs).
    Policy { mode: Option<Mode>, knobs: serde_json::Map<String, serde_json::Value> },
}

/// What a trust change touches (the audit entry's `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustChangeKind {
    /// One issuer's tier, weight or per-tenant override.
    Issuer,
    /// The tenant's policy knobs.
    Policy,
}

impl TrustChangeKind {
    /// `issuer` or `policy` (the serde form).
    pub fn as_str(self) -> &'static str {
        match self {
            TrustChangeKind::Issuer => "issuer",
            TrustChangeKind::Policy => "policy",
        }
    }
}

impl std::str::FromStr for TrustChangeKind {
    type Err = crate::domain::codes::UnknownCode;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "issuer" => Ok(TrustChangeKind::Issuer),
            "policy" => Ok(TrustChangeKind::Policy),
            _ => Err(crate::domain::codes::UnknownCode { kind: "trust change kind", value: s.to_string() }),
        }
    }
}

impl TrustChange {
    /// `issuer` or `policy`.
    pub fn kind(&self) -> TrustChangeKind {
        match self {
            TrustChange::Issuer { .. } => TrustChangeKind::Issuer,
            TrustChange::Policy { .. } => TrustChangeKind::Policy,
        }
    }
}

/// A change that cannot be applied; `field` names the offending part of the request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ChangeError {
    pub field: String,
    pub reason: String,
}

fn change_error(field: &str, reason: impl std::fmt::Display) -> ChangeError {
    ChangeError { field: field.to_string(), reason: reason.to_string() }
}

impl TenantTrust {
    /// A tenant that changed nothing (epoch 0).
    pub fn new(tenant: &str) -> TenantTrust {
        TenantTrust { tenant: tenant.to_string(), epoch: 0, issuers: BTreeMap::new(), mode: None, knobs: None }
    }

    /// The tenant's effective policy: `base` (the configuration's) with this tenant's
    /// overrides, mode and knobs, at this epoch. Other tenants' changes are not in it, so
    /// one tenant's change never alters another tenant's policy version.
    pub fn policy(&self, base: &Policy) -> Policy {
        let mut directory = base.directory.clone();
        for (id, ov) in &self.issuers {
            let at = match directory.issuers.iter().position(|i| i.id == *id) {
                Some(at) => at,
                None => {
                    directory.issuers.push(Issuer {
                        id: id.clone(),
                        display_name: String::new(),
                        tier: Tier::Unknown,
                        weight: None,
                        aliases: Vec::new(),
                        keys: Vec::new(),
                        tenants: BTreeMap::new(),
                    });
                    directory.issuers.len() - 1
                }
            };
            directory.issuers[at].tenants.insert(self.tenant.clone(), ov.clone());
        }
        let knobs = self.knobs.clone().unwrap_or_else(|| base.knobs.clone());
        Policy::new(self.mode.unwrap_or(base.mode), directory, knobs).with_epoch(self.epoch)
    }

    /// The directory id a change naming `name` (id, display name or alias) addresses: the
    /// known issuer's id, else `name` itself (trimmed).
    pub fn issuer_id(&self, base: &Policy, name: &str) -> String {
        let name = name.trim();
        self.policy(base).directory.find(name).map_or_else(|| name.to_string(), |i| i.id.clone())
    }

    /// This tenant's settings after `change`, at epoch + 1. An issuer named by id, display
    /// name or alias is stored under its directory id; an issuer the directory does not
    /// know is added under the given name.
    pub fn changed(&self, base: &Policy, change: &TrustChange) -> Result<TenantTrust, ChangeError> {
        let mut next = self.clone();
        next.epoch = self.epoch + 1;
        match change {
            TrustChange::Issuer { id, tier, weight } => {
                let name = id.trim();
                if name.is_empty() || name.len() > 256 {
                    return Err(change_error("issuer.id", "must be 1 to 256 characters"));
                }
                if tier.is_none() && weight.is_none() {
                    return Err(change_error("issuer", "name a `tier`, a `weight`, or both"));
                }
                if let Some(w) = weight {
                    if !(0.0..=1.0).contains(w) || w.is_nan() {
                        return Err(change_error("issuer.weight", "must be within [0, 1]"));
                    }
                }
                next.issuers.insert(self.issuer_id(base, name), TenantOverride { tier: *tier, weight: *weight });
            }
            TrustChange::Policy { mode, knobs } => {
                if mode.is_none() && knobs.is_empty() {
                    return Err(change_error("policy", "name a `mode`, some `knobs`, or both"));
                }
                if let Some(m) = mode {
                    next.mode = Some(*m);
                }
                if !knobs.is_empty() {
                    let current = self.knobs.clone().unwrap_or_else(|| base.knobs.clone());
                    let mut v = serde_json::to_value(&current).map_err(|e| change_error("policy.knobs", e))?;
                    let obj = v.as_object_mut().ok_or_else(|| change_error("policy.knobs", "not an object"))?;
                    for (k, val) in knobs {
                        if !obj.contains_key(k) {
                            return Err(change_error(&format!("policy.knobs.{k}"), "unknown knob"));
                        }
                        obj.insert(k.clone(), val.clone());
                    }
                    let merged: Knobs = serde_json::from_value(v).map_err(|e| change_error("policy.knobs", e))?;
                    merged.validate().map_err(|e| change_error("policy.knobs", e))?;
                    next.knobs = Some(merged);
                }
            }
        }
        Ok(next)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn dir() -> IssuerDirectory {
        IssuerDirectory::from_str(
            "t.toml",
            r#"
[[issuers]]
id = "redhat"
display_name = "Red Hat Product Security"
tier = "authoritative"
aliases = ["https://www.redhat.com"]
[issuers.tenants.acme]
weight = 0.2

[[issuers]]
id = "scanner"
tier = "known"
weight = 0.45
"#,
        )
        .unwrap()
    }

    #[test]
    fn policy_resolve_equals_the_directory_resolve() {
        let mut d = dir();
        d.issuers.push(Issuer {
            id: "Ärger".into(),
            display_name: "  Ünïcode Vendor ".into(),
            tier: Tier::Trusted,
            weight: None,
            aliases: vec!["ÉLAN".into()],
            keys: Vec::new(),
            tenants: BTreeMap::from([("acme".to_string(), TenantOverride { tier: Some(Tier::Known), weight: None })]),
        });
        let p = Policy::new(Mode::WeightedVote, d.clone(), Knobs::default());
        let names = [
            None,
            Some(""),
            Some("   "),
            Some("redhat"),
            Some(" RedHat "),
            Some("HTTPS://WWW.REDHAT.COM"),
            Some("red hat product security"),
            Some("scanner"),
            Some("ärger"),
            Some("ÄRGER"),
            Some("ünïcode vendor"),
            Some("élan"),
            Some("Somebody"),
            Some("  Somebody else "),
            Some("ÜNKNOWN Ünicode"),
        ];
        for name in names {
            for tenant in ["default", "acme"] {
                let want = d.resolve(name, tenant);
                let claimed: Option<Arc<str>> = name.map(Arc::from);
                let (id, tier, weight) = p.resolve(claimed.as_ref(), tenant);
                assert_eq!((&*id, tier, weight), (want.id.as_str(), want.tier, want.weight_ppm), "{name:?} / {tenant}");
            }
        }
        // A directory changed in place after the policy was built (an issuer added, one
        // renamed) is resolved as the changed directory says, not by the stale index.
        let mut changed = p.clone();
        changed.directory.issuers[0].id = "renamed".into();
        let mut late = changed.directory.issuers[1].clone();
        late.id = "late".into();
        late.aliases = vec!["Late Alias".into()];
        changed.directory.issuers.push(late);
        for name in [Some("redhat"), Some("renamed"), Some("late alias"), Some("scanner"), Some("nobody")] {
            let want = changed.directory.resolve(name, "default");
            let claimed: Option<Arc<str>> = name.map(Arc::from);
            let (id, tier, weight) = changed.resolve(claimed.as_ref(), "default");
            assert_eq!((&*id, tier, weight), (want.id.as_str(), want.tier, want.weight_ppm), "{name:?}");
        }
    }

    #[test]
    fn resolves_aliases_tiers_and_overrides() {
        let d = dir();
        let r = d.resolve(Some("HTTPS://WWW.REDHAT.COM"), "default");
        assert_eq!((r.id.as_str(), r.tier, r.weight_ppm), ("redhat", Tier::Authoritative, 1_000_000));
        assert_eq!(d.resolve(Some("Red Hat Product Security"), "acme").weight_ppm, 200_000);
        assert_eq!(d.resolve(Some("scanner"), "default").weight_ppm, 450_000);
        let u = d.resolve(Some("Somebody"), "default");
        assert_eq!((u.id.as_str(), u.tier, u.known), ("Somebody", Tier::Unknown, false));
        assert_eq!(d.resolve(None, "default").id, UNKNOWN_ISSUER);
    }

    #[test]
    fn invalid_directories_are_rejected() {
        assert!(IssuerDirectory::from_str("x", "[[issuers]]\nid='a'\ntier='bogus'\n").is_err());
        assert!(IssuerDirectory::from_str("x", "[[issuers]]\nid='a'\ntier='known'\nweight=2.0\n").is_err());
        assert!(IssuerDirectory::from_str(
            "x",
            "[[issuers]]\nid='a'\ntier='known'\naliases=['x']\n[[issuers]]\nid='b'\ntier='known'\naliases=['X']\n"
        )
        .is_err());
    }

    pub(crate) const GPG_CERT: &str = include_str!("../../tests/fixtures/openpgp/gpg-cert.asc");

    /// An `issuers.toml` of issuers with one OpenPGP key each: (id, certificate, fingerprint).
    pub(crate) fn openpgp_toml(keys: &[(&str, &str, Option<&str>)]) -> String {
        let mut text = String::new();
        for (id, cert, fp) in keys {
            let fp = fp.map(|f| format!(", fingerprint = \"{f}\"")).unwrap_or_default();
            text.push_str(&format!(
                "[[issuers]]\nid = '{id}'\ntier = 'trusted'\nkeys = [{{ type = \"openpgp\", certificate = \"\"\"\n{cert}\"\"\"{fp} }}]\n"
            ));
        }
        text
    }

    #[test]
    fn openpgp_keys_parse_as_written() {
        // The form of issuers.toml, with the fingerprint written as gpg prints it.
        let spaced = "83CE 4271 7380 64E6 1937  449E 1C2D CBED 1F91 3457";
        let dir =
            IssuerDirectory::from_str("issuers.toml", &openpgp_toml(&[("csaf", GPG_CERT, Some(spaced))])).unwrap();
        assert_eq!(
            dir.issuers[0].keys,
            [IssuerKey::OpenPgp { certificate: GPG_CERT.to_string(), fingerprint: Some(spaced.into()) }]
        );
        // Serialised as written (type, certificate, fingerprint).
        let json = serde_json::to_value(&dir.issuers[0].keys[0]).unwrap();
        assert_eq!(json, serde_json::json!({"type": "openpgp", "certificate": GPG_CERT, "fingerprint": spaced}));
        // The two forms do not mix.
        for bad in [
            "keys = [{ type = 'openpgp', public_key = 'ab' }]",
            "keys = [{ type = 'openpgp' }]",
            "keys = [{ certificate = 'x' }]",
            "keys = [{ public_key = 'ab', fingerprint = 'AB' }]",
            "keys = [{ type = 'x509', certificate = 'x' }]",
        ] {
            let text = format!("[[issuers]]\nid = 'a'\ntier = 'known'\n{bad}\n");
            assert!(matches!(IssuerDirectory::from_str("x", &text), Err(DirectoryError::Parse { .. })), "{bad}");
        }
    }

    #[test]
    fn dsse_keys_serialise_as_before() {
        // The policy version hashes the directory: a DSSE key keeps its written form.
        let k = IssuerKey::Dsse { keyid: Some("acme-2024".into()), public_key: "ab".into() };
        assert_eq!(serde_json::to_value(&k).unwrap(), serde_json::json!({"keyid": "acme-2024", "public_key": "ab"}));
        assert_eq!(serde_json::to_value(IssuerKey::dsse("ab")).unwrap(), serde_json::json!({"public_key": "ab"}));
    }

    #[test]
    fn policy_version_changes_with_knobs() {
        let a = Policy::new(Mode::WeightedVote, dir(), Knobs::default());
        let b = Policy::new(Mode::WeightedVote, dir(), Knobs { half_life_days: 30.0, ..Knobs::default() });
        assert_ne!(a.version(), b.version());
        assert_eq!(a.version(), Policy::new(Mode::Lattice, dir(), Knobs::default()).version());
    }

    fn knobs(j: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        j.as_object().unwrap().clone()
    }

    #[test]
    fn tenant_changes_layer_over_the_configuration_per_tenant() {
        let base = Policy::new(Mode::WeightedVote, dir(), Knobs::default());
        let acme = TenantTrust::new("acme");
        assert_eq!(acme.policy(&base).version(), base.version(), "no change: the configuration's policy");
        assert_eq!(acme.policy(&base).epoch(), 0);
        let change =
            TrustChange::Issuer { id: "Red Hat Product Security".into(), tier: Some(Tier::Untrusted), weight: None };
        let a1 = acme.changed(&base, &change).unwrap();
        assert_eq!(a1.epoch, 1);
        assert!(a1.issuers.contains_key("redhat"), "stored under the directory id: {a1:?}");
        let p = a1.policy(&base);
        assert_eq!(p.epoch(), 1);
        let r = p.directory.resolve(Some("redhat"), "acme");
        assert_eq!((r.tier, r.weight_ppm), (Tier::Untrusted, 100_000), "replaces the file's override (weight 0.2)");
        assert_eq!(p.directory.resolve(Some("redhat"), "globex").weight_ppm, 1_000_000, "other tenants unchanged");
        // Another tenant's effective policy does not see acme's change at all.
        assert_eq!(TenantTrust::new("globex").policy(&base).version(), base.version());
        // Knobs merge; mode changes; an unknown issuer is added.
        let a2 = a1
            .changed(
                &base,
                &TrustChange::Policy {
                    mode: Some(Mode::Lattice),
                    knobs: knobs(serde_json::json!({"half_life_days": 30.0})),
                },
            )
            .unwrap();
        let a3 =
            a2.changed(&base, &TrustChange::Issuer { id: "newcomer".into(), tier: None, weight: Some(0.9) }).unwrap();
        let p = a3.policy(&base);
        assert_eq!((a3.epoch, p.mode, p.knobs.half_life_days, p.knobs.freshness_floor), (3, Mode::Lattice, 30.0, 0.3));
        assert_eq!(p.directory.resolve(Some("NEWCOMER"), "acme").weight_ppm, 900_000);
        assert_eq!(p.directory.resolve(Some("redhat"), "acme").tier, Tier::Untrusted, "earlier changes stay");
        // Round trip (the stored form).
        let back: TenantTrust = serde_json::from_str(&serde_json::to_string(&a3).unwrap()).unwrap();
        assert_eq!(back, a3);
        assert_eq!(back.policy(&base).version(), p.version());
    }

    #[test]
    fn bad_changes_name_the_field() {
        let base = Policy::default();
        let t = TenantTrust::new("t");
        let field = |c: TrustChange| t.changed(&base, &c).unwrap_err().field;
        assert_eq!(field(TrustChange::Issuer { id: " ".into(), tier: Some(Tier::Known), weight: None }), "issuer.id");
        assert_eq!(field(TrustChange::Issuer { id: "x".into(), tier: None, weight: None }), "issuer");
        assert_eq!(field(TrustChange::Issuer { id: "x".into(), tier: None, weight: Some(1.5) }), "issuer.weight");
        assert_eq!(field(TrustChange::Policy { mode: None, knobs: Default::default() }), "policy");
        let bad = |j| field(TrustChange::Policy { mode: None, knobs: knobs(j) });
        assert_eq!(bad(serde_json::json!({"nope": 1})), "policy.knobs.nope");
        assert_eq!(bad(serde_json::json!({"freshness_floor": 3.0})), "policy.knobs");
        assert_eq!(bad(serde_json::json!({"half_life_days": "long"})), "policy.knobs");
    }
}
