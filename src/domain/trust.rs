//! Issuer directory, trust tiers and the policy knobs of the consensus.
//!
//! Invariants: every weight and factor is an integer in parts per million (ppm), so sums
//! are exact and independent of order; the policy version is a SHA-256 over the
//! canonical JSON of the directory, the knobs and the crosswalk version, so any change of
//! policy changes every digest computed under it.

use super::canonical;
use super::model::CROSSWALK_VERSION;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

/// A public key of an issuer (used by DSSE verification).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerKey {
    /// Key id (securesystemslib style); computed from the key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyid: Option<String>,
    /// SPKI PEM, or hex of a raw Ed25519 / SEC1 P-256 public key.
    pub public_key: String,
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

    /// Ids unique and non-empty, weights in [0, 1], no alias shared by two issuers, every
    /// key parses (`crypto::PublicKey::parse`) and no keyid belongs to two issuers.
    pub fn validate(&self) -> Result<(), DirectoryError> {
        let mut names: BTreeMap<String, &str> = BTreeMap::new();
        let mut keyids: BTreeMap<String, &str> = BTreeMap::new();
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
            for (index, k) in i.keys.iter().enumerate() {
                let key = crate::crypto::PublicKey::parse(&k.public_key).map_err(|e| {
                    DirectoryError::Invalid(format!("issuer {}: key {index} does not parse: {e}", i.id))
                })?;
                let configured = k.keyid.as_deref().map(str::trim).filter(|s| !s.is_empty());
                for id in std::iter::once(key.keyid()).chain(configured) {
                    if let Some(other) = keyids.insert(id.to_ascii_lowercase(), &i.id) {
                        if other != i.id {
                            return Err(DirectoryError::Invalid(format!(
                                "keyid {id} belongs to both issuer {other} and issuer {}",
                                i.id
                            )));
                        }
                    }
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
                let ov = i.tenants.get(tenant);
                let tier = ov.and_then(|o| o.tier).unwrap_or(i.tier);
                let weight =
                    ov.and_then(|o| o.weight).or(if ov.and_then(|o| o.tier).is_some() { None } else { i.weight });
                ResolvedIssuer {
                    id: i.id.clone(),
                    tier,
                    weight_ppm: weight.map(to_ppm).unwrap_or_else(|| tier.default_weight_ppm()),
                    known: true,
                }
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
        if !(self.half_life_days > 0.0) || !self.half_life_days.is_finite() {
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
        Policy { mode, directory, knobs, as_of: None, version }
    }

    pub fn with_as_of(mut self, as_of: Option<super::timestamp::Timestamp>) -> Self {
        self.as_of = as_of;
        self
    }

    /// Hash of the directory, knobs and crosswalk version.
    pub fn version(&self) -> &str {
        &self.version
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy::new(Mode::WeightedVote, IssuerDirectory::default(), Knobs::default())
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn policy_version_changes_with_knobs() {
        let a = Policy::new(Mode::WeightedVote, dir(), Knobs::default());
        let b = Policy::new(Mode::WeightedVote, dir(), Knobs { half_life_days: 30.0, ..Knobs::default() });
        assert_ne!(a.version(), b.version());
        assert_eq!(a.version(), Policy::new(Mode::Lattice, dir(), Knobs::default()).version());
    }
}
