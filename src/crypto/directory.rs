//! The issuer directory's keys, parsed: what every signature check looks keys up in.
//!
//! Job: turn the keys written in `issuers.toml` (`domain::trust::IssuerKey`: DSSE public
//! keys in PEM, securesystemslib JSON or hex; OpenPGP certificates) into a
//! [`KeyDirectory`] indexed by key id, by issuer and (OpenPGP) by fingerprint. This is the
//! one place keys are parsed and their uniqueness checked: loading the directory
//! (`app::load_policy`) builds one, so a bad key stops start-up here.
//!
//! Invariants: pure; a key that does not parse, a configured fingerprint that does not
//! match its certificate, a keyid or an OpenPGP key (primary or subkey) shared by two
//! issuers is an error naming the issuer and the key; key ids match case-insensitively.

use super::openpgp::{Certificate, OpenPgpKeyring};
use super::PublicKey;
use crate::domain::trust::{IssuerDirectory, IssuerKey};
use std::collections::BTreeMap;

/// A key of the directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyDirectoryError {
    #[error("issuer directory: issuer {issuer}: key {key} does not load: {reason}")]
    BadKey {
        issuer: String,
        /// The key's position in the issuer's `keys` and its configured keyid or
        /// fingerprint, if any (e.g. `#1 (keyid acme-2024)`, `#0 (openpgp 83CE...)`).
        key: String,
        reason: String,
    },
    #[error("issuer directory: keyid {keyid} belongs to both issuer {first} and issuer {second}")]
    DuplicateKeyid { keyid: String, first: String, second: String },
    #[error("issuer directory: OpenPGP key {fingerprint} belongs to both issuer {first} and issuer {second}")]
    DuplicateFingerprint { fingerprint: String, first: String, second: String },
}

/// Every issuer key of the directory, parsed: DSSE keys by key id, OpenPGP certificates in
/// a keyring looked up by fingerprint.
#[derive(Clone, Debug, Default)]
pub struct KeyDirectory {
    /// Lower-case keyid (computed, and the configured one when it differs) -> (issuer id, key).
    by_keyid: BTreeMap<String, (String, PublicKey)>,
    /// Issuer id -> its keys, in directory order.
    by_issuer: BTreeMap<String, Vec<PublicKey>>,
    /// The OpenPGP certificates (detached signatures: `crypto::openpgp::verify_detached`).
    openpgp: OpenPgpKeyring,
    directory: IssuerDirectory,
}

impl KeyDirectory {
    /// Parses every key of every issuer (`PublicKey::parse`: PEM, securesystemslib JSON or
    /// hex; `Certificate::from_armored` for OpenPGP, checked against its configured
    /// fingerprint).
    pub fn from_directory(directory: &IssuerDirectory) -> Result<KeyDirectory, KeyDirectoryError> {
        let mut kd = KeyDirectory { directory: directory.clone(), ..Default::default() };
        for issuer in &directory.issuers {
            for (index, k) in issuer.keys.iter().enumerate() {
                let bad = |reason: String| KeyDirectoryError::BadKey {
                    issuer: issuer.id.clone(),
                    key: k.describe(index),
                    reason,
                };
                let (keyid, public_key) = match k {
                    IssuerKey::Dsse { keyid, public_key } => (keyid, public_key),
                    IssuerKey::OpenPgp { certificate, fingerprint } => {
                        let cert = Certificate::from_armored(certificate).map_err(|e| bad(e.to_string()))?;
                        if let Some(f) = fingerprint.as_deref().filter(|f| !f.trim().is_empty()) {
                            cert.check_fingerprint(f).map_err(|e| bad(e.to_string()))?;
                        }
                        kd.openpgp.insert(&issuer.id, cert).map_err(|e| KeyDirectoryError::DuplicateFingerprint {
                            fingerprint: e.fingerprint,
                            first: e.first,
                            second: e.second,
                        })?;
                        continue;
                    }
                };
                let key = PublicKey::parse(public_key).map_err(|e| bad(e.to_string()))?;
                let mut ids = vec![key.keyid().to_ascii_lowercase()];
                if let Some(configured) = keyid.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
                    ids.push(configured.to_ascii_lowercase());
                }
                ids.dedup();
                for id in ids {
                    if let Some((other, _)) = kd.by_keyid.get(&id) {
                        if other != &issuer.id {
                            return Err(KeyDirectoryError::DuplicateKeyid {
                                keyid: id,
                                first: other.clone(),
                                second: issuer.id.clone(),
                            });
                        }
                    }
                    kd.by_keyid.insert(id, (issuer.id.clone(), key.clone()));
                }
                kd.by_issuer.entry(issuer.id.clone()).or_default().push(key);
            }
        }
        Ok(kd)
    }

    /// The OpenPGP certificates of the directory.
    pub fn openpgp(&self) -> &OpenPgpKeyring {
        &self.openpgp
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.by_issuer.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_issuer.is_empty()
    }

    /// The issuer and key a keyid names (case-insensitive).
    pub fn by_keyid(&self, keyid: &str) -> Option<(&str, &PublicKey)> {
        self.by_keyid.get(&keyid.trim().to_ascii_lowercase()).map(|(i, k)| (i.as_str(), k))
    }

    /// The directory id of a claimed issuer name (id, display name or alias).
    pub fn issuer_id(&self, claimed: &str) -> Option<&str> {
        self.directory.find(claimed).map(|i| i.id.as_str())
    }

    /// The keys of a claimed issuer (empty when the directory does not know it).
    pub fn issuer_keys(&self, claimed: &str) -> &[PublicKey] {
        self.issuer_id(claimed).and_then(|id| self.by_issuer.get(id)).map(Vec::as_slice).unwrap_or(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<KeyDirectory, String> {
        let dir = IssuerDirectory::from_str("issuers.toml", text).map_err(|e| e.to_string())?;
        KeyDirectory::from_directory(&dir).map_err(|e| e.to_string())
    }

    #[test]
    fn a_bad_key_stops_the_load_naming_issuer_and_key() {
        // A P-256 point off the curve (the last byte of a valid key's Y flipped): it used to
        // load and then fail every signature as bad_signature.
        let off_curve = "0467cd390f77aa359cb08c2235f652270493a9ed832b0abcc01f70954c0390d2380c782bd54e269125a44f4433aff1432ce94e12bca73aa67ac80cea12608ddf75";
        let text = format!(
            "[[issuers]]\nid='acme'\ntier='trusted'\nkeys=[{{public_key='03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8'}}, {{keyid='acme-2024', public_key='{off_curve}'}}]\n"
        );
        let e = load(&text).unwrap_err();
        assert!(e.contains("issuer acme") && e.contains("key #1 (keyid acme-2024)") && e.contains("curve"), "{e}");
        // An Ed25519 key of the right length that is off the curve or of small order: it
        // used to pass the length check and then fail every signature.
        for (bad, says) in [
            ("02a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8", "not a point on the curve"),
            ("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", "small-order"),
        ] {
            let text =
                format!("[[issuers]]\nid='acme'\ntier='trusted'\nkeys=[{{keyid='acme-ed', public_key='{bad}'}}]\n");
            let e = load(&text).unwrap_err();
            assert!(e.contains("issuer acme") && e.contains("key #0 (keyid acme-ed)") && e.contains(says), "{e}");
        }
        // One key (or one configured keyid) for two issuers.
        let key = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
        let e = load(&format!(
            "[[issuers]]\nid='a'\ntier='known'\nkeys=[{{public_key='{key}'}}]\n[[issuers]]\nid='b'\ntier='known'\nkeys=[{{public_key='{key}'}}]\n"
        ))
        .unwrap_err();
        assert!(e.contains("belongs to both issuer a and issuer b"), "{e}");
    }

    use crate::domain::trust::tests::{openpgp_toml, GPG_CERT};
    const GPG_RSA_CERT: &str = include_str!("../../tests/fixtures/openpgp/gpg-rsa-cert.asc");
    const GPG_FPR: &str = "83CE4271738064E61937449E1C2DCBED1F913457";

    #[test]
    fn openpgp_keys_load_and_are_checked() {
        // The fingerprint written as gpg prints it.
        let spaced = "83CE 4271 7380 64E6 1937  449E 1C2D CBED 1F91 3457";
        let keys = load(&openpgp_toml(&[("csaf", GPG_CERT, Some(spaced))])).unwrap();
        assert_eq!(keys.openpgp().len(), 1);
        // The signing subkey is the issuer's too.
        assert_eq!(keys.openpgp().issuer_of("1CF50DC0DA1FF33563EAA5130B1B63D36A182FDE"), Some("csaf"));
        // Another fingerprint: start-up stops naming the issuer and the key.
        let e = load(&openpgp_toml(&[("csaf", GPG_CERT, Some(&GPG_FPR.replace('8', "9")))])).unwrap_err();
        assert!(e.contains("issuer csaf") && e.contains("key #0 (openpgp 93CE") && e.contains("does not match"), "{e}");
        // A certificate that does not load.
        let broken = GPG_CERT.replace("BAQdA1gh+ly0", "BAQdA2gh+ly0");
        let e = load(&openpgp_toml(&[("csaf", &broken, None)])).unwrap_err();
        assert!(e.contains("issuer csaf") && e.contains("key #0 (openpgp)"), "{e}");
        // One certificate, two issuers.
        let e = load(&openpgp_toml(&[("a", GPG_CERT, None), ("b", GPG_CERT, None)])).unwrap_err();
        assert!(e.contains(&format!("OpenPGP key {GPG_FPR} belongs to both issuer a and issuer b")), "{e}");
        assert!(load(&openpgp_toml(&[("a", GPG_CERT, None), ("b", GPG_RSA_CERT, None)])).is_ok());
    }
}
