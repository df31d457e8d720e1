//! OpenPGP certificates and detached signatures (RFC 9580), read and checked with `pgp`
//! (rpgp, pure Rust): the keyring of the issuer directory's OpenPGP keys and the one
//! function that judges a detached signature over a document's bytes.
//!
//! [`verify_detached`]`(payload, signature, keyring)` is pure (no I/O, no clock, no
//! randomness) and decides:
//! * `verified`: a signature names (issuer fingerprint, else issuer key id, else nothing:
//!   every key is tried) a key of the keyring, primary or signing subkey, verifies over the
//!   exact payload bytes, and that key was valid at the signature's creation time; the
//!   certificate's issuer is the signer;
//! * `unsigned`/`unknown_key`: no signature names a key of the keyring (or, naming none,
//!   verifies with one);
//! * `failed`: the signature text is unreadable (`malformed_signature`), a known key does not
//!   verify it (`bad_signature`), it uses MD5, SHA-1 or RIPEMD-160 (`weak_hash`), or the key
//!   was expired (`key_expired`), revoked (`key_revoked`) or not a valid signing key
//!   (`invalid_key`: created after the signature, no valid binding, no signing flag, a
//!   signing subkey without its back-signature) at the signature's creation time.
//!
//! With several signatures in one text, the first `verified` wins, else the first `failed`,
//! else `unknown_key`.
//!
//! Invariants:
//! * validity is judged at the signature's creation time (its hashed creation-time
//!   subpacket), never the wall clock, so a replay of the same bytes gives the same answer
//!   forever; the signature's own expiration subpacket is not consulted for the same reason;
//! * a certificate's self-signatures and revocations are verified once, when it is loaded
//!   ([`Certificate::from_armored`]); verification then only looks them up;
//! * the binding in force at time `t` is the newest valid self-signature created at or
//!   before `t`, else the oldest one (key servers keep only the latest self-signatures, so
//!   a certificate re-signed after a document still vouches for its key); a revocation
//!   with reason "superseded" or "retired" applies from its own creation time, any other
//!   (no reason, "compromised", anything else) applies at every time;
//! * a fingerprint belongs to one issuer of the keyring ([`OpenPgpKeyring::insert`]);
//! * fingerprints are written as upper-case hex without spaces (as `gpg` prints them);
//! * hostile input never panics (rpgp's parsers return errors).

use std::collections::BTreeMap;
use std::fmt;

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{KeyFlags, RevocationCode, Signature, SignatureType, SubpacketData};
use pgp::types::{KeyDetails, KeyVersion, Tag};

use crate::domain::codes::SignatureReason;

/// The longest signature text read (a detached signature is a few hundred bytes; a text
/// over this is `malformed_signature` without being parsed).
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// A certificate could not be loaded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CertificateError {
    #[error("not an OpenPGP public key block: {0}")]
    Unreadable(String),
    #[error("a secret key was given; paste the public certificate (`gpg --armor --export FINGERPRINT`)")]
    SecretKey,
    #[error("{0} certificates in one block; give one certificate per key")]
    NotOne(usize),
    #[error("version {0} keys are not supported (only v4 and v6)")]
    UnsupportedVersion(u8),
    #[error("the primary key {0} has no valid self-signature")]
    NoSelfSignature(String),
    #[error("fingerprint {found} does not match the configured fingerprint {configured}")]
    FingerprintMismatch { found: String, configured: String },
}

/// Two issuers of the keyring share a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("OpenPGP key {fingerprint} belongs to both issuer {first} and issuer {second}")]
pub struct DuplicateFingerprint {
    pub fingerprint: String,
    pub first: String,
    pub second: String,
}

/// Upper-case hex, no spaces (`gpg --fingerprint` without its spaces).
fn hex_upper(bytes: &[u8]) -> String {
    hex::encode_upper(bytes)
}

/// A configured fingerprint as compared: spaces removed, upper case, `0x` prefix dropped.
pub fn normalise_fingerprint(s: &str) -> String {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    let s = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(&s);
    s.to_ascii_uppercase()
}

/// A self-signature (or binding) of one key, verified at load.
#[derive(Clone, Debug)]
struct Binding {
    created: u32,
    /// Key flags, when the signature has the subpacket.
    flags: Option<KeyFlags>,
    /// Seconds after the key's creation at which it expires (0 or absent: never).
    expires_after: Option<u32>,
}

/// A revocation of one key, verified at load.
#[derive(Clone, Debug)]
struct Revocation {
    created: u32,
    /// "superseded" or "retired": only from `created` on.
    soft: bool,
}

/// One key of a certificate (the primary or a subkey) and what its signatures say.
#[derive(Clone, Debug)]
pub struct ComponentKey {
    fingerprint: String,
    keyid: String,
    created: u32,
    primary: bool,
    /// Valid bindings, oldest first.
    bindings: Vec<Binding>,
    revocations: Vec<Revocation>,
    key: KeyRef,
}

#[derive(Clone, Debug)]
enum KeyRef {
    Primary,
    Subkey(usize),
}

impl ComponentKey {
    /// Upper-case hex fingerprint.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Whether this is the primary key.
    pub fn is_primary(&self) -> bool {
        self.primary
    }

    /// Creation time (seconds since the Unix epoch).
    pub fn created(&self) -> u32 {
        self.created
    }

    /// The binding in force at `t`: the newest created at or before `t`, else the oldest.
    fn binding_at(&self, t: u32) -> Option<&Binding> {
        self.bindings.iter().rev().find(|b| b.created <= t).or_else(|| self.bindings.first())
    }

    /// Whether the key can sign per its newest binding (for display).
    pub fn can_sign(&self) -> bool {
        self.bindings.last().is_some_and(|b| b.flags.as_ref().map_or(self.primary, KeyFlags::sign))
    }

    /// Expiry (seconds since the epoch) per the newest binding, if it sets one.
    pub fn expires(&self) -> Option<u64> {
        let b = self.bindings.last()?;
        b.expires_after.filter(|d| *d > 0).map(|d| u64::from(self.created) + u64::from(d))
    }

    /// Whether a revocation applies at some time (a hard one, or a soft one at all).
    pub fn is_revoked(&self) -> bool {
        !self.revocations.is_empty()
    }

    /// Judges the key at time `t` for signing.
    fn valid_for_signing_at(&self, t: u32) -> Result<(), OpenPgpFailure> {
        if self.revocations.iter().any(|r| !r.soft || r.created <= t) {
            return Err(OpenPgpFailure::KeyRevoked);
        }
        if t < self.created {
            return Err(OpenPgpFailure::InvalidKey);
        }
        let Some(b) = self.binding_at(t) else {
            return Err(OpenPgpFailure::InvalidKey);
        };
        match &b.flags {
            Some(f) if !f.sign() => return Err(OpenPgpFailure::InvalidKey),
            None if !self.primary => return Err(OpenPgpFailure::InvalidKey),
            _ => {}
        }
        if let Some(d) = b.expires_after.filter(|d| *d > 0) {
            if u64::from(t) >= u64::from(self.created) + u64::from(d) {
                return Err(OpenPgpFailure::KeyExpired);
            }
        }
        Ok(())
    }

    /// Judges the key as the primary of a certificate whose subkey signed at `t`:
    /// revoked or expired then makes the subkey invalid too.
    fn valid_as_primary_at(&self, t: u32) -> Result<(), OpenPgpFailure> {
        if self.revocations.iter().any(|r| !r.soft || r.created <= t) {
            return Err(OpenPgpFailure::KeyRevoked);
        }
        if t < self.created {
            return Err(OpenPgpFailure::InvalidKey);
        }
        if let Some(d) = self.binding_at(t).and_then(|b| b.expires_after).filter(|d| *d > 0) {
            if u64::from(t) >= u64::from(self.created) + u64::from(d) {
                return Err(OpenPgpFailure::KeyExpired);
            }
        }
        Ok(())
    }
}

/// An OpenPGP certificate (transferable public key) whose self-signatures were checked.
#[derive(Clone, Debug)]
pub struct Certificate {
    cert: SignedPublicKey,
    /// The primary first, then every subkey with at least one valid binding.
    keys: Vec<ComponentKey>,
    user_ids: Vec<String>,
}

fn is_revocation_soft(sig: &Signature) -> bool {
    matches!(sig.revocation_reason_code(), Some(RevocationCode::KeySuperseded | RevocationCode::KeyRetired))
}

fn binding_of(sig: &Signature) -> Option<Binding> {
    let created = sig.created()?.as_secs();
    let has_flags =
        sig.config().is_some_and(|c| c.hashed_subpackets().any(|p| matches!(p.data, SubpacketData::KeyFlags(_))));
    Some(Binding {
        created,
        flags: has_flags.then(|| sig.key_flags()),
        expires_after: sig.key_expiration_time().map(|d| d.as_secs()),
    })
}

impl Certificate {
    /// Reads one armored (or binary) public certificate and verifies its self-signatures:
    /// the primary key needs at least one valid self-signature (direct-key or user id
    /// certification); a subkey without a valid binding is left out (it can sign nothing).
    pub fn from_armored(text: &str) -> Result<Certificate, CertificateError> {
        let trimmed = text.trim_start();
        if trimmed.starts_with("-----BEGIN PGP PRIVATE KEY BLOCK-----") {
            return Err(CertificateError::SecretKey);
        }
        let blocks = trimmed.matches("-----BEGIN PGP PUBLIC KEY BLOCK-----").count();
        if blocks > 1 {
            return Err(CertificateError::NotOne(blocks));
        }
        let certs: Vec<SignedPublicKey> = if trimmed.starts_with("-----BEGIN") {
            let (iter, _headers) =
                SignedPublicKey::from_string_many(trimmed).map_err(|e| CertificateError::Unreadable(e.to_string()))?;
            iter.collect::<Result<_, _>>().map_err(|e| CertificateError::Unreadable(e.to_string()))?
        } else {
            SignedPublicKey::from_bytes_many(trimmed.as_bytes())
                .map_err(|e| CertificateError::Unreadable(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| CertificateError::Unreadable(e.to_string()))?
        };
        if certs.len() != 1 {
            return Err(CertificateError::NotOne(certs.len()));
        }
        let cert = certs.into_iter().next().expect("one certificate");
        Certificate::from_cert(cert)
    }

    fn from_cert(cert: SignedPublicKey) -> Result<Certificate, CertificateError> {
        let primary = &cert.primary_key;
        match primary.version() {
            KeyVersion::V4 | KeyVersion::V6 => {}
            v => return Err(CertificateError::UnsupportedVersion(u8::from(v))),
        }
        let fingerprint = hex_upper(primary.fingerprint().as_bytes());
        let mut bindings: Vec<Binding> = Vec::new();
        for sig in &cert.details.direct_signatures {
            if sig.typ() == Some(SignatureType::Key) && sig.verify_key(primary).is_ok() {
                bindings.extend(binding_of(sig));
            }
        }
        let mut user_ids = Vec::new();
        for user in &cert.details.users {
            let mut valid = false;
            for sig in &user.signatures {
                let certification = matches!(
                    sig.typ(),
                    Some(
                        SignatureType::CertGeneric
                            | SignatureType::CertPersona
                            | SignatureType::CertCasual
                            | SignatureType::CertPositive
                    )
                );
                if certification && sig.verify_certification(primary, Tag::UserId, &user.id).is_ok() {
                    bindings.extend(binding_of(sig));
                    valid = true;
                }
            }
            if valid {
                user_ids.push(String::from_utf8_lossy(user.id.id()).into_owned());
            }
        }
        if bindings.is_empty() {
            return Err(CertificateError::NoSelfSignature(fingerprint));
        }
        bindings.sort_by_key(|b| b.created);
        let revocations = cert
            .details
            .revocation_signatures
            .iter()
            .filter(|s| s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok())
            .filter_map(|s| Some(Revocation { created: s.created()?.as_secs(), soft: is_revocation_soft(s) }))
            .collect();
        let mut keys = vec![ComponentKey {
            fingerprint,
            keyid: hex_upper(primary.legacy_key_id().as_ref()),
            created: primary.created_at().as_secs(),
            primary: true,
            bindings,
            revocations,
            key: KeyRef::Primary,
        }];
        for (index, sub) in cert.public_subkeys.iter().enumerate() {
            let mut bindings = Vec::new();
            let mut revocations = Vec::new();
            for sig in &sub.signatures {
                match sig.typ() {
                    Some(SignatureType::SubkeyBinding) => {
                        if sig.verify_subkey_binding(primary, &sub.key).is_err() {
                            continue;
                        }
                        // A signing subkey must sign the primary back (RFC 9580 5.2.1),
                        // or anyone could claim someone else's signing subkey.
                        if sig.key_flags().sign() {
                            let backsig_ok = sig
                                .embedded_signature()
                                .is_some_and(|b| b.verify_primary_key_binding(&sub.key, primary).is_ok());
                            if !backsig_ok {
                                continue;
                            }
                        }
                        bindings.extend(binding_of(sig));
                    }
                    Some(SignatureType::SubkeyRevocation) if sig.verify_subkey_binding(primary, &sub.key).is_ok() => {
                        if let Some(created) = sig.created() {
                            revocations.push(Revocation { created: created.as_secs(), soft: is_revocation_soft(sig) });
                        }
                    }
                    _ => {}
                }
            }
            if bindings.is_empty() {
                continue;
            }
            bindings.sort_by_key(|b| b.created);
            keys.push(ComponentKey {
                fingerprint: hex_upper(sub.key.fingerprint().as_bytes()),
                keyid: hex_upper(sub.key.legacy_key_id().as_ref()),
                created: sub.key.created_at().as_secs(),
                primary: false,
                bindings,
                revocations,
                key: KeyRef::Subkey(index),
            });
        }
        Ok(Certificate { cert, keys, user_ids })
    }

    /// The primary key's fingerprint (upper-case hex).
    pub fn fingerprint(&self) -> &str {
        &self.keys[0].fingerprint
    }

    /// Checks an optional configured fingerprint against the primary's.
    pub fn check_fingerprint(&self, configured: &str) -> Result<(), CertificateError> {
        let configured = normalise_fingerprint(configured);
        if configured == self.fingerprint() {
            Ok(())
        } else {
            Err(CertificateError::FingerprintMismatch { found: self.fingerprint().to_string(), configured })
        }
    }

    /// The user ids with a valid self-certification.
    pub fn user_ids(&self) -> &[String] {
        &self.user_ids
    }

    /// The primary key, then each bound subkey.
    pub fn keys(&self) -> &[ComponentKey] {
        &self.keys
    }

    /// The certificate as one armored public key block (for a configuration snippet).
    pub fn to_armored(&self) -> Result<String, CertificateError> {
        self.cert
            .to_armored_string(pgp::composed::ArmorOptions::default())
            .map_err(|e| CertificateError::Unreadable(e.to_string()))
    }

    fn primary(&self) -> &ComponentKey {
        &self.keys[0]
    }

    /// Verifies `sig` over `payload` with one of this certificate's keys (crypto only).
    fn verify_with(&self, key: &ComponentKey, sig: &Signature, payload: &[u8]) -> bool {
        match key.key {
            KeyRef::Primary => sig.verify(&self.cert.primary_key, payload).is_ok(),
            KeyRef::Subkey(i) => self.cert.public_subkeys.get(i).is_some_and(|s| sig.verify(&s.key, payload).is_ok()),
        }
    }
}

/// Why a detached signature failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OpenPgpFailure {
    /// A known key does not verify the signature over these bytes.
    BadSignature,
    /// The key (or its primary) was past its expiry at the signature's creation time.
    KeyExpired,
    /// The key (or its primary) was revoked at the signature's creation time.
    KeyRevoked,
    /// The key could not sign at that time (not yet created, no valid binding, no signing
    /// flag).
    InvalidKey,
    /// The signature text is no OpenPGP detached signature (armor, packets, type, no
    /// creation time, unknown critical subpacket, too long).
    MalformedSignature,
    /// MD5, SHA-1 or RIPEMD-160.
    WeakHash,
}

impl From<OpenPgpFailure> for SignatureReason {
    fn from(f: OpenPgpFailure) -> Self {
        match f {
            OpenPgpFailure::BadSignature => SignatureReason::BadSignature,
            OpenPgpFailure::KeyExpired => SignatureReason::KeyExpired,
            OpenPgpFailure::KeyRevoked => SignatureReason::KeyRevoked,
            OpenPgpFailure::InvalidKey => SignatureReason::InvalidKey,
            OpenPgpFailure::MalformedSignature => SignatureReason::MalformedSignature,
            OpenPgpFailure::WeakHash => SignatureReason::WeakHash,
        }
    }
}

/// The decision on a detached signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpenPgpVerdict {
    /// `fingerprint` (a primary key or signing subkey of `issuer`'s certificate) verified.
    Verified { issuer: String, fingerprint: String, created: u32 },
    /// No signature names a key of the keyring; `claimed` is the first issuer fingerprint
    /// (else key id) a signature names, if any.
    UnknownKey { claimed: Option<String> },
    /// The first failing signature: the issuer and key it named, when known.
    Failed { reason: OpenPgpFailure, issuer: Option<String>, fingerprint: Option<String> },
}

impl OpenPgpVerdict {
    /// The reason for `unsigned`/`failed` as a code; `None` when verified.
    pub fn reason_code(&self) -> Option<SignatureReason> {
        match self {
            OpenPgpVerdict::Verified { .. } => None,
            OpenPgpVerdict::UnknownKey { .. } => Some(SignatureReason::UnknownKey),
            OpenPgpVerdict::Failed { reason, .. } => Some((*reason).into()),
        }
    }

    /// The key to record: the verifying key, else the key the signature named.
    pub fn keyid(&self) -> Option<&str> {
        match self {
            OpenPgpVerdict::Verified { fingerprint, .. } => Some(fingerprint),
            OpenPgpVerdict::UnknownKey { claimed } => claimed.as_deref(),
            OpenPgpVerdict::Failed { fingerprint, .. } => fingerprint.as_deref(),
        }
    }

    /// The issuer the signature proves (verified only).
    pub fn signed_issuer(&self) -> Option<&str> {
        match self {
            OpenPgpVerdict::Verified { issuer, .. } => Some(issuer),
            _ => None,
        }
    }

    /// The issuer owning the named key (verified or failed with a known key).
    pub fn key_owner(&self) -> Option<&str> {
        match self {
            OpenPgpVerdict::Verified { issuer, .. } => Some(issuer),
            OpenPgpVerdict::Failed { issuer, .. } => issuer.as_deref(),
            OpenPgpVerdict::UnknownKey { .. } => None,
        }
    }
}

/// The issuer directory's OpenPGP certificates, looked up by the fingerprint and key id
/// of every primary key and bound subkey.
#[derive(Clone, Debug, Default)]
pub struct OpenPgpKeyring {
    /// (issuer id, certificate), in insertion order.
    certs: Vec<(String, Certificate)>,
    /// Upper-case fingerprint -> (certificate index, key index).
    by_fingerprint: BTreeMap<String, (usize, usize)>,
    /// Upper-case 16-hex key id -> every (certificate index, key index) with it.
    by_keyid: BTreeMap<String, Vec<(usize, usize)>>,
}

impl fmt::Display for OpenPgpKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} OpenPGP certificate(s)", self.certs.len())
    }
}

impl OpenPgpKeyring {
    /// Adds `issuer`'s certificate. A key (primary or subkey) already held by another
    /// issuer is an error; the same certificate twice for one issuer is kept once.
    pub fn insert(&mut self, issuer: &str, cert: Certificate) -> Result<(), DuplicateFingerprint> {
        for k in cert.keys() {
            if let Some(&(ci, _)) = self.by_fingerprint.get(k.fingerprint()) {
                let first = &self.certs[ci].0;
                if first != issuer {
                    return Err(DuplicateFingerprint {
                        fingerprint: k.fingerprint().to_string(),
                        first: first.clone(),
                        second: issuer.to_string(),
                    });
                }
            }
        }
        if self.by_fingerprint.contains_key(cert.fingerprint()) {
            return Ok(());
        }
        let ci = self.certs.len();
        for (ki, k) in cert.keys().iter().enumerate() {
            self.by_fingerprint.entry(k.fingerprint.clone()).or_insert((ci, ki));
            self.by_keyid.entry(k.keyid.clone()).or_default().push((ci, ki));
        }
        self.certs.push((issuer.to_string(), cert));
        Ok(())
    }

    /// Number of certificates.
    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The issuer owning a fingerprint (primary or subkey), if any.
    pub fn issuer_of(&self, fingerprint: &str) -> Option<&str> {
        let (ci, _) = self.by_fingerprint.get(&normalise_fingerprint(fingerprint))?;
        Some(&self.certs[*ci].0)
    }

    /// The keys a signature names: by issuer fingerprint, else by issuer key id, else (it
    /// names none) every key; and the name it gave.
    fn candidates(&self, sig: &Signature) -> (Vec<(usize, usize)>, Option<String>) {
        let fps = sig.issuer_fingerprint();
        if let Some(fp) = fps.first() {
            let named = hex_upper(fp.as_bytes());
            let found = fps
                .iter()
                .filter_map(|fp| self.by_fingerprint.get(&hex_upper(fp.as_bytes())).copied())
                .collect::<Vec<_>>();
            return (dedup(found), Some(named));
        }
        let ids = sig.issuer_key_id();
        if let Some(id) = ids.first() {
            let named = hex_upper(id.as_ref());
            let found = ids
                .iter()
                .flat_map(|id| self.by_keyid.get(&hex_upper(id.as_ref())).cloned().unwrap_or_default())
                .collect::<Vec<_>>();
            return (dedup(found), Some(named));
        }
        let all = self.certs.iter().enumerate().flat_map(|(ci, (_, c))| (0..c.keys.len()).map(move |ki| (ci, ki)));
        (all.collect(), None)
    }
}

fn dedup(mut v: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    let mut seen = Vec::with_capacity(v.len());
    v.retain(|x| {
        if seen.contains(x) {
            false
        } else {
            seen.push(*x);
            true
        }
    });
    v
}

/// Parses every signature of a detached signature text (armored, or binary packets).
fn parse_signatures(text: &[u8]) -> Result<Vec<Signature>, OpenPgpFailure> {
    if text.len() > MAX_SIGNATURE_BYTES {
        return Err(OpenPgpFailure::MalformedSignature);
    }
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let text = &text[start..];
    let sigs: Vec<DetachedSignature> = if text.starts_with(b"-----BEGIN") {
        let s = std::str::from_utf8(text).map_err(|_| OpenPgpFailure::MalformedSignature)?;
        let (iter, _headers) =
            DetachedSignature::from_string_many(s).map_err(|_| OpenPgpFailure::MalformedSignature)?;
        iter.collect::<Result<_, _>>().map_err(|_| OpenPgpFailure::MalformedSignature)?
    } else {
        DetachedSignature::from_bytes_many(text)
            .map_err(|_| OpenPgpFailure::MalformedSignature)?
            .collect::<Result<_, _>>()
            .map_err(|_| OpenPgpFailure::MalformedSignature)?
    };
    if sigs.is_empty() {
        return Err(OpenPgpFailure::MalformedSignature);
    }
    Ok(sigs.into_iter().map(|d| d.signature).collect())
}

/// What one signature of the text decided.
enum OneResult {
    Verified { issuer: String, fingerprint: String, created: u32 },
    Unknown { claimed: Option<String> },
    Failed { reason: OpenPgpFailure, issuer: Option<String>, fingerprint: Option<String> },
}

fn check_one(sig: &Signature, payload: &[u8], ring: &OpenPgpKeyring) -> OneResult {
    let (candidates, claimed) = ring.candidates(sig);
    let malformed = |reason| OneResult::Failed { reason, issuer: None, fingerprint: claimed.clone() };
    if !matches!(sig.typ(), Some(SignatureType::Binary | SignatureType::Text)) {
        return malformed(OpenPgpFailure::MalformedSignature);
    }
    let Some(created) = sig.created().map(|t| t.as_secs()) else {
        return malformed(OpenPgpFailure::MalformedSignature);
    };
    // A critical subpacket we do not understand makes the signature invalid (RFC 9580 5.2.3.7).
    let unknown_critical = sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| p.is_critical && matches!(p.data, SubpacketData::Other(..) | SubpacketData::Experimental(..)))
    });
    if unknown_critical {
        return malformed(OpenPgpFailure::MalformedSignature);
    }
    if candidates.is_empty() {
        return OneResult::Unknown { claimed };
    }
    let named = claimed.is_some();
    let first_owner = || {
        let (ci, ki) = candidates[0];
        (ring.certs[ci].0.clone(), ring.certs[ci].1.keys[ki].fingerprint.clone())
    };
    if matches!(sig.hash_alg(), Some(HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160) | None) {
        if !named {
            return OneResult::Unknown { claimed };
        }
        let (issuer, fingerprint) = first_owner();
        return OneResult::Failed {
            reason: OpenPgpFailure::WeakHash,
            issuer: Some(issuer),
            fingerprint: Some(fingerprint),
        };
    }
    for &(ci, ki) in &candidates {
        let (issuer, cert) = &ring.certs[ci];
        let key = &cert.keys[ki];
        if !cert.verify_with(key, sig, payload) {
            continue;
        }
        let validity = if key.primary {
            key.valid_for_signing_at(created)
        } else {
            cert.primary().valid_as_primary_at(created).and_then(|()| key.valid_for_signing_at(created))
        };
        return match validity {
            Ok(()) => OneResult::Verified { issuer: issuer.clone(), fingerprint: key.fingerprint.clone(), created },
            Err(reason) => {
                OneResult::Failed { reason, issuer: Some(issuer.clone()), fingerprint: Some(key.fingerprint.clone()) }
            }
        };
    }
    if !named {
        // Tried against every key because it named none: nobody we know signed it.
        return OneResult::Unknown { claimed };
    }
    let (issuer, fingerprint) = first_owner();
    OneResult::Failed { reason: OpenPgpFailure::BadSignature, issuer: Some(issuer), fingerprint: Some(fingerprint) }
}

/// Judges a detached OpenPGP signature `signature` (armored text as served, or binary)
/// over the exact `payload` bytes against `keyring` (see the module documentation).
/// Pure and deterministic; never panics.
pub fn verify_detached(payload: &[u8], signature: &[u8], keyring: &OpenPgpKeyring) -> OpenPgpVerdict {
    let sigs = match parse_signatures(signature) {
        Ok(s) => s,
        Err(reason) => return OpenPgpVerdict::Failed { reason, issuer: None, fingerprint: None },
    };
    let mut failed = None;
    let mut unknown = None;
    for sig in &sigs {
        match check_one(sig, payload, keyring) {
            OneResult::Verified { issuer, fingerprint, created } => {
                return OpenPgpVerdict::Verified { issuer, fingerprint, created }
            }
            OneResult::Failed { reason, issuer, fingerprint } => {
                failed.get_or_insert(OpenPgpVerdict::Failed { reason, issuer, fingerprint });
            }
            OneResult::Unknown { claimed } => {
                if unknown.is_none() || matches!(unknown, Some(None)) {
                    unknown = Some(claimed);
                }
            }
        }
    }
    failed.unwrap_or(OpenPgpVerdict::UnknownKey { claimed: unknown.flatten() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgp::composed::{
        ArmorOptions, KeyType, SecretKeyParamsBuilder, SignedSecretKey, SubkeyParamsBuilder, SubpacketConfig,
    };
    use pgp::crypto::ecc_curve::ECCCurve;
    use pgp::packet::{SignatureConfig, Subpacket};
    use pgp::types::{Duration as PgpDuration, Password, SigningKey, Timestamp};

    /// 2024-01-01T00:00:00Z: every test key is created then.
    const T0: u32 = 1_704_067_200;
    const DAY: u32 = 86_400;
    const DOC: &[u8] = br#"{"document":{"category":"csaf_vex","title":"signed"}}"#;

    fn sp(data: SubpacketData) -> Subpacket {
        Subpacket::regular(data).unwrap()
    }

    fn ts(t: u32) -> Timestamp {
        Timestamp::from_secs(t)
    }

    /// A key created at T0; with `sub`, a cert-only primary and a signing subkey of that type.
    fn keygen(kt: KeyType, sub: Option<KeyType>) -> SignedSecretKey {
        let mut b = SecretKeyParamsBuilder::default();
        b.key_type(kt)
            .can_certify(true)
            .can_sign(sub.is_none())
            .primary_user_id("Test Signer <signer@example.com>".into())
            .created_at(ts(T0));
        if let Some(st) = sub {
            b.subkey(SubkeyParamsBuilder::default().key_type(st).can_sign(true).created_at(ts(T0)).build().unwrap());
        }
        b.build().unwrap().generate(rand::thread_rng()).unwrap()
    }

    fn ed() -> SignedSecretKey {
        keygen(KeyType::Ed25519Legacy, None)
    }

    /// A detached binary signature by `key` made at `t`, SHA-256, armored.
    fn sign_with(key: &impl SigningKey, payload: &[u8], t: u32, hash: HashAlgorithm) -> Vec<u8> {
        let hashed = vec![
            sp(SubpacketData::SignatureCreationTime(ts(t))),
            sp(SubpacketData::IssuerFingerprint(key.fingerprint())),
        ];
        let unhashed = vec![sp(SubpacketData::IssuerKeyId(key.legacy_key_id()))];
        DetachedSignature::sign_binary_data_with_subpackets(
            rand::thread_rng(),
            key,
            &Password::empty(),
            hash,
            payload,
            SubpacketConfig::UserDefined { hashed, unhashed },
        )
        .unwrap()
        .to_armored_string(ArmorOptions::default())
        .unwrap()
        .into_bytes()
    }

    fn sign_at(key: &impl SigningKey, payload: &[u8], t: u32) -> Vec<u8> {
        sign_with(key, payload, t, HashAlgorithm::Sha256)
    }

    fn flags(sign: bool) -> KeyFlags {
        let mut f = KeyFlags::default();
        f.set_certify(true);
        f.set_sign(sign);
        f
    }

    /// A positive self-certification of the first user id made at `created`.
    fn uid_binding(sk: &SignedSecretKey, created: u32, expires_after: Option<u32>, sign: bool) -> Signature {
        let mut config =
            SignatureConfig::v4(SignatureType::CertPositive, sk.primary_key.algorithm(), HashAlgorithm::Sha256);
        config.hashed_subpackets = vec![
            sp(SubpacketData::SignatureCreationTime(ts(created))),
            sp(SubpacketData::IssuerFingerprint(sk.primary_key.fingerprint())),
            sp(SubpacketData::KeyFlags(flags(sign))),
        ];
        if let Some(d) = expires_after {
            config.hashed_subpackets.push(sp(SubpacketData::KeyExpirationTime(PgpDuration::from_secs(d))));
        }
        config
            .sign_certification(
                &sk.primary_key,
                sk.primary_key.public_key(),
                &Password::empty(),
                Tag::UserId,
                &sk.details.users[0].id,
            )
            .unwrap()
    }

    fn key_revocation(sk: &SignedSecretKey, created: u32, code: RevocationCode) -> Signature {
        let mut config =
            SignatureConfig::v4(SignatureType::KeyRevocation, sk.primary_key.algorithm(), HashAlgorithm::Sha256);
        config.hashed_subpackets = vec![
            sp(SubpacketData::SignatureCreationTime(ts(created))),
            sp(SubpacketData::IssuerFingerprint(sk.primary_key.fingerprint())),
            sp(SubpacketData::RevocationReason(code, pgp::bytes::Bytes::from_static(b"test"))),
        ];
        config.sign_key(&sk.primary_key, &Password::empty(), sk.primary_key.public_key()).unwrap()
    }

    /// A binding of the first secret subkey made at `created` (signing flag, optional
    /// expiry, back-signature when `backsig`), or its revocation.
    fn subkey_sig(
        sk: &SignedSecretKey,
        typ: SignatureType,
        created: u32,
        expires_after: Option<u32>,
        backsig: bool,
    ) -> Signature {
        let sub = &sk.secret_subkeys[0].key;
        let mut config = SignatureConfig::v4(typ, sk.primary_key.algorithm(), HashAlgorithm::Sha256);
        config.hashed_subpackets = vec![
            sp(SubpacketData::SignatureCreationTime(ts(created))),
            sp(SubpacketData::IssuerFingerprint(sk.primary_key.fingerprint())),
        ];
        if typ == SignatureType::SubkeyRevocation {
            config.hashed_subpackets.push(sp(SubpacketData::RevocationReason(
                RevocationCode::KeyCompromised,
                pgp::bytes::Bytes::from_static(b""),
            )));
        } else {
            let mut f = KeyFlags::default();
            f.set_sign(true);
            config.hashed_subpackets.push(sp(SubpacketData::KeyFlags(f)));
        }
        if let Some(d) = expires_after {
            config.hashed_subpackets.push(sp(SubpacketData::KeyExpirationTime(PgpDuration::from_secs(d))));
        }
        if backsig {
            let mut back = SignatureConfig::v4(SignatureType::KeyBinding, sub.algorithm(), HashAlgorithm::Sha256);
            back.hashed_subpackets = vec![
                sp(SubpacketData::SignatureCreationTime(ts(created))),
                sp(SubpacketData::IssuerFingerprint(sub.fingerprint())),
            ];
            let back = back
                .sign_primary_key_binding(sub, sub.public_key(), &Password::empty(), sk.primary_key.public_key())
                .unwrap();
            config.hashed_subpackets.push(sp(SubpacketData::EmbeddedSignature(Box::new(back))));
        }
        config
            .sign_subkey_binding(&sk.primary_key, sk.primary_key.public_key(), &Password::empty(), sub.public_key())
            .unwrap()
    }

    fn armored(public: &SignedPublicKey) -> String {
        public.to_armored_string(ArmorOptions::default()).unwrap()
    }

    fn ring_of(entries: &[(&str, &str)]) -> OpenPgpKeyring {
        let mut ring = OpenPgpKeyring::default();
        for (issuer, cert) in entries {
            ring.insert(issuer, Certificate::from_armored(cert).unwrap()).unwrap();
        }
        ring
    }

    fn fp(key: &impl KeyDetails) -> String {
        hex_upper(key.fingerprint().as_bytes())
    }

    fn reason(v: &OpenPgpVerdict) -> Option<&'static str> {
        v.reason_code().map(|r| r.as_str())
    }

    #[test]
    fn good_signatures_verify_and_name_the_certificates_issuer() {
        for kt in [KeyType::Ed25519Legacy, KeyType::Ed25519, KeyType::Rsa(2048), KeyType::ECDSA(ECCCurve::P256)] {
            let sk = keygen(kt.clone(), None);
            let ring = ring_of(&[("acme", &armored(&sk.to_public_key()))]);
            let sig = sign_at(&sk.primary_key, DOC, T0 + DAY);
            let v = verify_detached(DOC, &sig, &ring);
            assert_eq!(
                v,
                OpenPgpVerdict::Verified { issuer: "acme".into(), fingerprint: fp(&sk.primary_key), created: T0 + DAY },
                "{kt:?}"
            );
            assert_eq!(
                (v.signed_issuer(), v.keyid(), reason(&v)),
                (Some("acme"), Some(fp(&sk.primary_key).as_str()), None)
            );
            // The same signature over other bytes: a known key that fails.
            let v = verify_detached(b"{\"document\":{}}", &sig, &ring);
            assert_eq!(reason(&v), Some("bad_signature"), "{kt:?}");
            assert_eq!(v.key_owner(), Some("acme"));
            assert_eq!(v.signed_issuer(), None);
        }
    }

    #[test]
    fn another_keys_signature_is_unsigned_unknown_key() {
        let known = ed();
        let stranger = ed();
        let ring = ring_of(&[("acme", &armored(&known.to_public_key()))]);
        let v = verify_detached(DOC, &sign_at(&stranger.primary_key, DOC, T0 + DAY), &ring);
        assert_eq!(v, OpenPgpVerdict::UnknownKey { claimed: Some(fp(&stranger.primary_key)) });
        assert_eq!(reason(&v), Some("unknown_key"));
        // An empty keyring knows nobody.
        let v = verify_detached(DOC, &sign_at(&known.primary_key, DOC, T0 + DAY), &OpenPgpKeyring::default());
        assert_eq!(reason(&v), Some("unknown_key"));
    }

    #[test]
    fn unreadable_signatures_are_malformed() {
        let sk = ed();
        let ring = ring_of(&[("acme", &armored(&sk.to_public_key()))]);
        let sig = String::from_utf8(sign_at(&sk.primary_key, DOC, T0 + DAY)).unwrap();
        let truncated = &sig[..sig.len() / 2];
        let no_end = sig.replace("-----END PGP SIGNATURE-----", "");
        let public_key_block = armored(&sk.to_public_key());
        for text in [truncated, &no_end, "", "   ", "not a signature", &public_key_block] {
            let v = verify_detached(DOC, text.as_bytes(), &ring);
            assert_eq!(reason(&v), Some("malformed_signature"), "{text:?}: {v:?}");
        }
        assert_eq!(
            reason(&verify_detached(DOC, &vec![b'a'; MAX_SIGNATURE_BYTES + 1], &ring)),
            Some("malformed_signature")
        );
        // Binary (unarmored) signatures are read too.
        let (bin, _) = DetachedSignature::from_string(&sig).unwrap();
        let mut bytes = Vec::new();
        pgp::ser::Serialize::to_writer(&bin, &mut bytes).unwrap();
        assert_eq!(reason(&verify_detached(DOC, &bytes, &ring)), None);
    }

    #[test]
    fn weak_hashes_fail() {
        // rpgp refuses to make an Ed25519 signature over SHA-1; GnuPG makes an RSA one
        // (tests/fixtures/openpgp/csaf-signed.json.sha1.asc).
        let ring = ring_of(&[("rsa", &fixture_text("gpg-rsa-sha1-cert.asc"))]);
        let v = verify_detached(GPG_DOC, &fixture("csaf-signed.json.sha1.asc"), &ring);
        assert_eq!(reason(&v), Some("weak_hash"));
        assert_eq!((v.key_owner(), v.keyid()), (Some("rsa"), Some("2AA7A94C421577644CCD0170DC7F0EC1B936638C")));
        let sk = ed();
        let ring = ring_of(&[("acme", &armored(&sk.to_public_key()))]);
        let v = verify_detached(DOC, &sign_with(&sk.primary_key, DOC, T0 + DAY, HashAlgorithm::Sha512), &ring);
        assert_eq!(reason(&v), None);
    }

    #[test]
    fn expiry_is_judged_at_the_signatures_creation_time() {
        let sk = ed();
        let mut public = sk.to_public_key();
        // Re-signed at T0 + 1 s with an expiry two days after the key's creation.
        public.details.users[0].signatures = vec![uid_binding(&sk, T0 + 1, Some(2 * DAY), true)];
        let ring = ring_of(&[("acme", &armored(&public))]);
        assert_eq!(reason(&verify_detached(DOC, &sign_at(&sk.primary_key, DOC, T0 + DAY), &ring)), None);
        assert_eq!(
            reason(&verify_detached(DOC, &sign_at(&sk.primary_key, DOC, T0 + 2 * DAY), &ring)),
            Some("key_expired")
        );
        // Extended later (a newer self-signature without expiry): signatures made between
        // the old expiry and the extension stay expired, later ones verify.
        public.details.users[0].signatures.push(uid_binding(&sk, T0 + 10 * DAY, None, true));
        let ring = ring_of(&[("acme", &armored(&public))]);
        assert_eq!(
            reason(&verify_detached(DOC, &sign_at(&sk.primary_key, DOC, T0 + 5 * DAY), &ring)),
            Some("key_expired")
        );
        assert_eq!(reason(&verify_detached(DOC, &sign_at(&sk.primary_key, DOC, T0 + 11 * DAY), &ring)), None);
        // Before the key existed: not a valid signing key then.
        assert_eq!(reason(&verify_detached(DOC, &sign_at(&sk.primary_key, DOC, T0 - DAY), &ring)), Some("invalid_key"));
    }

    #[test]
    fn revocation_is_judged_at_the_signatures_creation_time() {
        let sk = ed();
        let early = sign_at(&sk.primary_key, DOC, T0 + 5 * DAY);
        let late = sign_at(&sk.primary_key, DOC, T0 + 11 * DAY);
        // Retired at T0 + 10 days: earlier signatures stay good.
        let mut public = sk.to_public_key();
        public.details.revocation_signatures = vec![key_revocation(&sk, T0 + 10 * DAY, RevocationCode::KeyRetired)];
        let ring = ring_of(&[("acme", &armored(&public))]);
        assert_eq!(reason(&verify_detached(DOC, &early, &ring)), None);
        assert_eq!(reason(&verify_detached(DOC, &late, &ring)), Some("key_revoked"));
        // Compromised: no signature of the key counts, whenever it claims to be made.
        for code in [RevocationCode::KeyCompromised, RevocationCode::NoReason] {
            let mut public = sk.to_public_key();
            public.details.revocation_signatures = vec![key_revocation(&sk, T0 + 10 * DAY, code)];
            let ring = ring_of(&[("acme", &armored(&public))]);
            assert_eq!(reason(&verify_detached(DOC, &early, &ring)), Some("key_revoked"), "{code:?}");
        }
        // A revocation made by another key is not a revocation.
        let other = ed();
        let mut public = sk.to_public_key();
        public.details.revocation_signatures = vec![key_revocation(&other, T0 + DAY, RevocationCode::KeyCompromised)];
        let ring = ring_of(&[("acme", &armored(&public))]);
        assert_eq!(reason(&verify_detached(DOC, &late, &ring)), None);
    }

    #[test]
    fn signing_subkeys_verify_for_their_primarys_issuer() {
        let sk = keygen(KeyType::Ed25519Legacy, Some(KeyType::Ed25519Legacy));
        let sub = &sk.secret_subkeys[0].key;
        let ring = ring_of(&[("distro", &armored(&sk.to_public_key()))]);
        let v = verify_detached(DOC, &sign_at(sub, DOC, T0 + DAY), &ring);
        assert_eq!(v, OpenPgpVerdict::Verified { issuer: "distro".into(), fingerprint: fp(sub), created: T0 + DAY });
        assert_eq!(ring.issuer_of(&fp(sub)), Some("distro"));
        // The cert-only primary cannot sign documents.
        assert_eq!(reason(&verify_detached(DOC, &sign_at(&sk.primary_key, DOC, T0 + DAY), &ring)), Some("invalid_key"));

        // A subkey binding with an expiry, judged at creation time.
        let mut public = sk.to_public_key();
        public.public_subkeys[0].signatures =
            vec![subkey_sig(&sk, SignatureType::SubkeyBinding, T0 + 1, Some(2 * DAY), true)];
        let ring = ring_of(&[("distro", &armored(&public))]);
        assert_eq!(reason(&verify_detached(DOC, &sign_at(sub, DOC, T0 + DAY), &ring)), None);
        assert_eq!(reason(&verify_detached(DOC, &sign_at(sub, DOC, T0 + 3 * DAY), &ring)), Some("key_expired"));

        // A subkey revoked (compromised): every signature of it fails, the issuer is known.
        let mut public = sk.to_public_key();
        public.public_subkeys[0].signatures.push(subkey_sig(
            &sk,
            SignatureType::SubkeyRevocation,
            T0 + 10 * DAY,
            None,
            false,
        ));
        let ring = ring_of(&[("distro", &armored(&public))]);
        let v = verify_detached(DOC, &sign_at(sub, DOC, T0 + DAY), &ring);
        assert_eq!((reason(&v), v.key_owner()), (Some("key_revoked"), Some("distro")));

        // The primary revoked: its subkeys fall with it.
        let mut public = sk.to_public_key();
        public.details.revocation_signatures = vec![key_revocation(&sk, T0 + DAY, RevocationCode::KeyCompromised)];
        let ring = ring_of(&[("distro", &armored(&public))]);
        assert_eq!(reason(&verify_detached(DOC, &sign_at(sub, DOC, T0 + 2 * DAY), &ring)), Some("key_revoked"));

        // A signing subkey bound without its back-signature is not part of the
        // certificate (anyone could bind someone else's subkey): nobody we know.
        let mut public = sk.to_public_key();
        public.public_subkeys[0].signatures = vec![subkey_sig(&sk, SignatureType::SubkeyBinding, T0 + 1, None, false)];
        let ring = ring_of(&[("distro", &armored(&public))]);
        assert_eq!(reason(&verify_detached(DOC, &sign_at(sub, DOC, T0 + DAY), &ring)), Some("unknown_key"));
        assert_eq!(Certificate::from_armored(&armored(&public)).unwrap().keys().len(), 1);
    }

    #[test]
    fn several_signatures_first_verified_then_first_failed() {
        let a = ed();
        let stranger = ed();
        let ring = ring_of(&[("acme", &armored(&a.to_public_key()))]);
        let good = String::from_utf8(sign_at(&a.primary_key, DOC, T0 + DAY)).unwrap();
        let unknown = String::from_utf8(sign_at(&stranger.primary_key, DOC, T0 + DAY)).unwrap();
        let bad = String::from_utf8(sign_at(&a.primary_key, b"other", T0 + DAY)).unwrap();
        let both = |x: &str, y: &str| {
            let (x, _) = DetachedSignature::from_string(x).unwrap();
            let (y, _) = DetachedSignature::from_string(y).unwrap();
            let mut bytes = Vec::new();
            pgp::ser::Serialize::to_writer(&x, &mut bytes).unwrap();
            pgp::ser::Serialize::to_writer(&y, &mut bytes).unwrap();
            bytes
        };
        assert_eq!(reason(&verify_detached(DOC, &both(&unknown, &good), &ring)), None);
        assert_eq!(reason(&verify_detached(DOC, &both(&bad, &good), &ring)), None);
        assert_eq!(reason(&verify_detached(DOC, &both(&unknown, &bad), &ring)), Some("bad_signature"));
    }

    #[test]
    fn text_signatures_hash_canonical_line_ends() {
        let sk = ed();
        let ring = ring_of(&[("acme", &armored(&sk.to_public_key()))]);
        let sig = DetachedSignature::sign_text_data(
            rand::thread_rng(),
            &sk.primary_key,
            &Password::empty(),
            HashAlgorithm::Sha256,
            &b"a\nb\n"[..],
        )
        .unwrap()
        .to_armored_string(ArmorOptions::default())
        .unwrap();
        assert_eq!(reason(&verify_detached(b"a\r\nb\r\n", sig.as_bytes(), &ring)), None);
        assert_eq!(reason(&verify_detached(b"a\nc\n", sig.as_bytes(), &ring)), Some("bad_signature"));
    }

    #[test]
    fn certificates_load_strictly() {
        let a = ed();
        let b = ed();
        let a_pub = armored(&a.to_public_key());
        let cert = Certificate::from_armored(&a_pub).unwrap();
        assert_eq!(cert.fingerprint(), fp(&a.primary_key));
        assert_eq!(cert.user_ids(), ["Test Signer <signer@example.com>"]);
        // The configured fingerprint: spaces and case do not matter, another one is an error.
        let spaced = cert
            .fingerprint()
            .to_lowercase()
            .as_bytes()
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(cert.check_fingerprint(&spaced).is_ok());
        assert!(matches!(
            cert.check_fingerprint(&fp(&b.primary_key)),
            Err(CertificateError::FingerprintMismatch { .. })
        ));
        // A secret key, two certificates, garbage.
        let secret = a.to_armored_string(ArmorOptions::default()).unwrap();
        assert_eq!(Certificate::from_armored(&secret).unwrap_err(), CertificateError::SecretKey);
        let two = format!("{a_pub}{}", armored(&b.to_public_key()));
        assert_eq!(Certificate::from_armored(&two).unwrap_err(), CertificateError::NotOne(2));
        assert!(matches!(
            Certificate::from_armored(
                "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nAAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"
            ),
            Err(CertificateError::Unreadable(_))
        ));
        assert!(Certificate::from_armored("").is_err());
        // A primary without any valid self-signature.
        let mut unsigned = a.to_public_key();
        unsigned.details.users[0].signatures = vec![uid_binding(&b, T0, None, true)];
        assert!(matches!(Certificate::from_armored(&armored(&unsigned)), Err(CertificateError::NoSelfSignature(_))));
        // One key, two issuers: refused; twice for one issuer: kept once.
        let mut ring = OpenPgpKeyring::default();
        ring.insert("acme", cert.clone()).unwrap();
        ring.insert("acme", cert.clone()).unwrap();
        assert_eq!(ring.len(), 1);
        let e = ring.insert("evil", cert).unwrap_err();
        assert_eq!((e.first.as_str(), e.second.as_str()), ("acme", "evil"));
    }

    const GPG_DOC: &[u8] = include_bytes!("../../tests/fixtures/openpgp/csaf-signed.json");

    fn fixture(f: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/fixtures/openpgp/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    fn fixture_text(f: &str) -> String {
        String::from_utf8(fixture(f)).unwrap()
    }

    #[test]
    fn gnupg_signatures_verify() {
        let dir =
            |f: &str| std::fs::read(format!("{}/tests/fixtures/openpgp/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let text = |f: &str| String::from_utf8(dir(f)).unwrap();
        // Signed by an Ed25519 signing subkey that expired two days after it was made (gpg
        // says "This key has expired" today): verified, judged at the creation time.
        let ring = ring_of(&[("csaf-provider", &text("gpg-cert.asc"))]);
        let cert = Certificate::from_armored(&text("gpg-cert.asc")).unwrap();
        assert_eq!(cert.fingerprint(), "83CE4271738064E61937449E1C2DCBED1F913457");
        assert_eq!(cert.keys()[1].expires(), Some(1_704_067_200 + 2 * DAY as u64));
        let v = verify_detached(GPG_DOC, &dir("csaf-signed.json.asc"), &ring);
        assert_eq!(
            v,
            OpenPgpVerdict::Verified {
                issuer: "csaf-provider".into(),
                fingerprint: "1CF50DC0DA1FF33563EAA5130B1B63D36A182FDE".into(),
                created: 1_704_110_400,
            }
        );
        let mut tampered = GPG_DOC.to_vec();
        tampered.push(b'\n');
        assert_eq!(reason(&verify_detached(&tampered, &dir("csaf-signed.json.asc"), &ring)), Some("bad_signature"));
        // RSA-3072 primary: verified with the certificate, key_revoked once its (reasonless,
        // hence hard) revocation is part of it.
        let ring = ring_of(&[("rsa", &text("gpg-rsa-cert.asc"))]);
        assert_eq!(reason(&verify_detached(GPG_DOC, &dir("csaf-signed.json.revoked-key.asc"), &ring)), None);
        let ring = ring_of(&[("rsa", &text("gpg-rsa-cert-revoked.asc"))]);
        let v = verify_detached(GPG_DOC, &dir("csaf-signed.json.revoked-key.asc"), &ring);
        assert_eq!((reason(&v), v.key_owner()), (Some("key_revoked"), Some("rsa")));
        // The Ed25519 signature is nobody's for the RSA keyring.
        assert_eq!(reason(&verify_detached(GPG_DOC, &dir("csaf-signed.json.asc"), &ring)), Some("unknown_key"));
    }

    proptest::proptest! {
        #[test]
        fn hostile_signature_text_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400), s in ".{0,300}") {
            let ring = OpenPgpKeyring::default();
            let _ = verify_detached(DOC, &bytes, &ring);
            let _ = verify_detached(DOC, s.as_bytes(), &ring);
            let armored = format!("-----BEGIN PGP SIGNATURE-----\n\n{s}\n-----END PGP SIGNATURE-----\n");
            let _ = verify_detached(DOC, armored.as_bytes(), &ring);
            let _ = Certificate::from_armored(&s);
        }
    }
}
