//! Public and private keys: parsing (PEM/SPKI, PKCS#8, raw hex, securesystemslib key
//! dicts), securesystemslib-compatible key ids, key generation and private-key files.
//!
//! Invariants:
//! * a [`PublicKey`]'s `keyid` is always the securesystemslib default key id — SHA-256,
//!   lower-case hex, of the securesystemslib canonical JSON of
//!   `{"keytype", "scheme", "keyval": {"public"}}` — so envelopes made by other tools
//!   (securesystemslib, in-toto, ...) name our keys the same way;
//! * for Ed25519 `keyval.public` is the lower-case hex of the 32 raw key bytes; for ECDSA
//!   P-256 it is the SubjectPublicKeyInfo PEM exactly as pyca/cryptography writes it
//!   (64 columns, LF, trailing newline), unless the key came from a key dict, in which case
//!   the dict's own string is hashed (as securesystemslib does);
//! * DER, PEM, SubjectPublicKeyInfo, PKCS#8 and SEC1 are read by the RustCrypto crates
//!   (`der` via `spki`/`pkcs8`/`sec1`, `pem-rfc7468`): strict DER (non-minimal lengths,
//!   trailing bytes and wrong tags are errors); a P-256 public key is a point on the curve
//!   (`p256`) or it does not load, so a bad key fails at start-up, not at every signature;
//!   an Ed25519 key is the canonical 32-byte encoding of a point on the curve in the
//!   prime-order subgroup (`curve25519-dalek`: decompression, re-compression, small-order
//!   and torsion checks), so an off-curve, small-order or mixed-order key (which no
//!   Ed25519 secret key produces) does not load either; `ring` only signs and verifies;
//! * private key material that passes through this module (PEM text, DER, seeds,
//!   scalars) is held in `Zeroizing` buffers and wiped when dropped (the key pairs inside
//!   `ring` are ring's own);
//! * parsing never panics on hostile input; private key material is never printed by
//!   `Debug`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use p256::elliptic_curve::sec1::ToEncodedPoint;
use pkcs8::der::asn1::OctetStringRef;
use pkcs8::der::{Decode, Encode};
use pkcs8::ObjectIdentifier;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::Value;
use zeroize::Zeroizing;

use super::pem::{self, PemError};

/// id-Ed25519 (RFC 8410).
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
/// id-ecPublicKey (RFC 5480).
const OID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
/// secp256r1 / prime256v1 (RFC 5480).
const OID_P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");

/// PEM label of a SubjectPublicKeyInfo.
pub const PEM_PUBLIC_KEY: &str = "PUBLIC KEY";
/// PEM label of an unencrypted PKCS#8 private key.
pub const PEM_PRIVATE_KEY: &str = "PRIVATE KEY";
/// PEM label of a SEC1 EC private key (read, never written).
pub const PEM_EC_PRIVATE_KEY: &str = "EC PRIVATE KEY";

/// A signature algorithm we can verify and sign with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub enum KeyAlg {
    /// Ed25519 (RFC 8032), pure (no pre-hash).
    #[serde(rename = "ed25519")]
    Ed25519,
    /// ECDSA over NIST P-256 with SHA-256.
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
}

impl KeyAlg {
    /// Stable name: `ed25519` or `ecdsa-p256` (the CLI's `--alg` values).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::EcdsaP256 => "ecdsa-p256",
        }
    }

    /// securesystemslib `keytype`.
    pub fn sslib_keytype(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::EcdsaP256 => "ecdsa",
        }
    }

    /// securesystemslib `scheme`.
    pub fn sslib_scheme(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "ed25519",
            KeyAlg::EcdsaP256 => "ecdsa-sha2-nistp256",
        }
    }
}

impl fmt::Display for KeyAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyAlg {
    type Err = KeyError;
    /// Accepts `ed25519`, `ecdsa-p256`, `ecdsa-p256-sha256`, `ecdsa-sha2-nistp256`
    /// (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, KeyError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ed25519" => Ok(KeyAlg::Ed25519),
            "ecdsa-p256" | "ecdsa-p256-sha256" | "ecdsa-sha2-nistp256" | "p256" | "p-256" => Ok(KeyAlg::EcdsaP256),
            other => Err(KeyError::UnsupportedAlgorithm(other.to_string())),
        }
    }
}

/// A key could not be parsed, generated or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("PEM: {0}")]
    Pem(#[from] PemError),
    #[error("no {expected} PEM block (found: {found})")]
    MissingPemBlock { expected: &'static str, found: String },
    #[error("unsupported key algorithm: {0}")]
    UnsupportedAlgorithm(String),
    #[error("malformed {what}: {reason}")]
    MalformedDer { what: &'static str, reason: String },
    #[error("invalid public key: {0}")]
    InvalidPublicKey(String),
    #[error("invalid private key: {0}")]
    InvalidPrivateKey(String),
    #[error("encrypted private keys are not supported")]
    EncryptedPrivateKey,
    #[error("invalid securesystemslib key dict: {0}")]
    KeyDict(String),
    #[error("unrecognised key format (expected PEM, securesystemslib JSON, or hex)")]
    Unrecognised,
    #[error("random number generator failure")]
    Rng,
    #[error("signing failed")]
    Signing,
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}

// ---------------------------------------------------------------------------------------
// securesystemslib canonical JSON and key ids

/// securesystemslib `encode_canonical` (securesystemslib.formats): keys sorted, no
/// whitespace, strings escaped by doubling backslashes and escaping double quotes ONLY (a
/// PEM's newlines stay raw), integers only. Returns `None` for floats, which it rejects.
pub fn sslib_canonical_json(value: &Value) -> Option<String> {
    let mut out = String::new();
    write_canonical(value, &mut out)?;
    Some(out)
}

fn canonical_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

fn write_canonical(value: &Value, out: &mut String) -> Option<()> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_f64() {
                return None;
            }
            out.push_str(&n.to_string());
        }
        Value::String(s) => canonical_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Python sorts str keys by code point, which is UTF-8 byte order.
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_string(k, out);
                out.push(':');
                write_canonical(v, out)?;
            }
            out.push('}');
        }
    }
    Some(())
}

/// The securesystemslib default key id (`compute_default_keyid`): SHA-256, lower-case hex,
/// of the canonical JSON of `{"keytype": keytype, "scheme": scheme, "keyval": {"public": public}}`.
pub fn sslib_keyid(keytype: &str, scheme: &str, public: &str) -> String {
    let mut s = String::with_capacity(public.len() + 96);
    // Keys in sorted order: keytype < keyval < scheme.
    s.push_str("{\"keytype\":");
    canonical_string(keytype, &mut s);
    s.push_str(",\"keyval\":{\"public\":");
    canonical_string(public, &mut s);
    s.push_str("},\"scheme\":");
    canonical_string(scheme, &mut s);
    s.push('}');
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

// ---------------------------------------------------------------------------------------
// Public keys

/// A public key we trust for verification.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    alg: KeyAlg,
    keyid: String,
    spki_der: Vec<u8>,
    /// The raw key: 32 bytes (Ed25519) or the 65-byte uncompressed SEC1 point (P-256).
    raw: Vec<u8>,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey").field("alg", &self.alg).field("keyid", &self.keyid).finish()
    }
}

/// DER SPKI prefix of an Ed25519 key (RFC 8410); the 32 raw key bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
/// DER SPKI prefix of a P-256 key; the 65-byte uncompressed point (`0x04 || X || Y`) follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
    0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl PublicKey {
    fn build(alg: KeyAlg, raw: Vec<u8>, sslib_public: Option<(&str, &str, &str)>) -> PublicKey {
        let spki_der = match alg {
            KeyAlg::Ed25519 => [&ED25519_SPKI_PREFIX[..], &raw[..]].concat(),
            KeyAlg::EcdsaP256 => [&P256_SPKI_PREFIX[..], &raw[..]].concat(),
        };
        let keyid = match sslib_public {
            Some((keytype, scheme, public)) => sslib_keyid(keytype, scheme, public),
            None => {
                let public = match alg {
                    KeyAlg::Ed25519 => hex::encode(&raw),
                    KeyAlg::EcdsaP256 => pem::encode(PEM_PUBLIC_KEY, &spki_der),
                };
                sslib_keyid(alg.sslib_keytype(), alg.sslib_scheme(), &public)
            }
        };
        PublicKey { alg, keyid, spki_der, raw }
    }

    /// A raw 32-byte Ed25519 public key (RFC 8032 section 5.1.3 encoding): a point on
    /// the curve, canonically encoded, of prime order. A key that is not (off the curve,
    /// `y >= p`, a small-order point such as the identity, or a point with a torsion
    /// component) can never be `[s]B` for a secret `s`: it is refused here, at load,
    /// instead of failing (or, for small-order keys, accepting forged signatures in some
    /// verifiers) at every signature.
    pub fn from_ed25519_bytes(raw: &[u8]) -> Result<PublicKey, KeyError> {
        let bytes: [u8; 32] = raw.try_into().map_err(|_| {
            KeyError::InvalidPublicKey(format!("Ed25519 public key is {} bytes, expected 32", raw.len()))
        })?;
        let point = curve25519_dalek::edwards::CompressedEdwardsY(bytes)
            .decompress()
            .ok_or_else(|| KeyError::InvalidPublicKey("Ed25519 public key is not a point on the curve".into()))?;
        if point.compress().as_bytes() != &bytes {
            return Err(KeyError::InvalidPublicKey("Ed25519 public key is not canonically encoded".into()));
        }
        if point.is_small_order() {
            return Err(KeyError::InvalidPublicKey("Ed25519 public key is a small-order point".into()));
        }
        if !point.is_torsion_free() {
            return Err(KeyError::InvalidPublicKey(
                "Ed25519 public key is not in the prime-order subgroup (it has a torsion component)".into(),
            ));
        }
        Ok(PublicKey::build(KeyAlg::Ed25519, raw.to_vec(), None))
    }

    /// An uncompressed SEC1 P-256 point (65 bytes, `0x04 || X || Y`) on the curve.
    pub fn from_p256_sec1(point: &[u8]) -> Result<PublicKey, KeyError> {
        if point.len() != 65 || point[0] != 0x04 {
            return Err(KeyError::InvalidPublicKey(
                "P-256 public key must be an uncompressed SEC1 point (65 bytes, 0x04...)".into(),
            ));
        }
        p256::PublicKey::from_sec1_bytes(point)
            .map_err(|_| KeyError::InvalidPublicKey("P-256 public key is not a point on the curve".into()))?;
        Ok(PublicKey::build(KeyAlg::EcdsaP256, point.to_vec(), None))
    }

    /// A DER SubjectPublicKeyInfo (RFC 5280; Ed25519 per RFC 8410, P-256 per RFC 5480).
    pub fn from_spki_der(der_bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let (alg, raw) = parse_spki(der_bytes)?;
        match alg {
            KeyAlg::Ed25519 => PublicKey::from_ed25519_bytes(raw),
            KeyAlg::EcdsaP256 => PublicKey::from_p256_sec1(raw),
        }
    }

    /// The first `PUBLIC KEY` block of a PEM text.
    pub fn from_pem(text: &str) -> Result<PublicKey, KeyError> {
        let blocks = pem::decode_all(text)?;
        match blocks.iter().find(|b| b.label == PEM_PUBLIC_KEY) {
            Some(b) => PublicKey::from_spki_der(&b.der),
            None => Err(KeyError::MissingPemBlock {
                expected: PEM_PUBLIC_KEY,
                found: blocks.iter().map(|b| b.label.as_str()).collect::<Vec<_>>().join(", "),
            }),
        }
    }

    /// Hex: 32 bytes is a raw Ed25519 key, 65 bytes starting `04` an uncompressed P-256
    /// point. Whitespace and a `0x` prefix are ignored.
    pub fn from_hex(text: &str) -> Result<PublicKey, KeyError> {
        let cleaned: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let cleaned = cleaned.strip_prefix("0x").unwrap_or(&cleaned);
        let bytes = hex::decode(cleaned).map_err(|_| KeyError::InvalidPublicKey("not valid hex".into()))?;
        match bytes.len() {
            32 => PublicKey::from_ed25519_bytes(&bytes),
            65 => PublicKey::from_p256_sec1(&bytes),
            n => Err(KeyError::InvalidPublicKey(format!(
                "{n} hex-decoded bytes: expected 32 (Ed25519) or 65 (uncompressed P-256)"
            ))),
        }
    }

    /// A securesystemslib key dict:
    /// `{"keytype":"ed25519","scheme":"ed25519","keyval":{"public":"<hex>"}}` or
    /// `{"keytype":"ecdsa","scheme":"ecdsa-sha2-nistp256","keyval":{"public":"<PEM>"}}`
    /// (the deprecated keytype `ecdsa-sha2-nistp256` is accepted too). The key id is
    /// computed from the dict's own strings, as securesystemslib does; any `keyid` member
    /// of the dict is ignored. Other members are ignored.
    pub fn from_sslib_dict(dict: &Value) -> Result<PublicKey, KeyError> {
        let field = |name: &str| -> Result<&str, KeyError> {
            dict.get(name).and_then(Value::as_str).ok_or_else(|| KeyError::KeyDict(format!("missing string {name:?}")))
        };
        let keytype = field("keytype")?;
        let scheme = field("scheme")?;
        let public = dict
            .get("keyval")
            .and_then(|kv| kv.get("public"))
            .and_then(Value::as_str)
            .ok_or_else(|| KeyError::KeyDict("missing string keyval.public".into()))?;
        let alg = match (keytype, scheme) {
            ("ed25519", "ed25519") => KeyAlg::Ed25519,
            ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => KeyAlg::EcdsaP256,
            _ => return Err(KeyError::UnsupportedAlgorithm(format!("{keytype}/{scheme}"))),
        };
        let key = match alg {
            KeyAlg::Ed25519 => {
                let raw = hex::decode(public.trim())
                    .map_err(|_| KeyError::KeyDict("ed25519 keyval.public is not hex".into()))?;
                PublicKey::from_ed25519_bytes(&raw)?
            }
            KeyAlg::EcdsaP256 => PublicKey::from_pem(public)?,
        };
        Ok(PublicKey::build(alg, key.raw, Some((keytype, scheme, public))))
    }

    /// A securesystemslib key dict as JSON text.
    pub fn from_sslib_json(text: &str) -> Result<PublicKey, KeyError> {
        let v: Value = serde_json::from_str(text).map_err(|e| KeyError::KeyDict(e.to_string()))?;
        PublicKey::from_sslib_dict(&v)
    }

    /// Any supported textual form, detected by shape: PEM (`-----BEGIN`), securesystemslib
    /// JSON key dict (`{`), or hex (raw Ed25519 / uncompressed P-256).
    pub fn parse(text: &str) -> Result<PublicKey, KeyError> {
        let t = text.trim_start();
        if t.starts_with("-----BEGIN") {
            PublicKey::from_pem(text)
        } else if t.starts_with('{') {
            PublicKey::from_sslib_json(text)
        } else if !t.is_empty() && t.trim_end().chars().all(|c| c.is_ascii_hexdigit() || c.is_whitespace()) {
            PublicKey::from_hex(t)
        } else if let Some(hexpart) = t.strip_prefix("0x") {
            PublicKey::from_hex(hexpart)
        } else {
            Err(KeyError::Unrecognised)
        }
    }

    pub fn alg(&self) -> KeyAlg {
        self.alg
    }

    /// The securesystemslib key id (64 lower-case hex characters).
    pub fn keyid(&self) -> &str {
        &self.keyid
    }

    /// DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// Raw key bytes: 32 (Ed25519) or the 65-byte uncompressed point (P-256).
    pub fn raw_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// SubjectPublicKeyInfo PEM (as OpenSSL / pyca/cryptography write it).
    pub fn to_pem(&self) -> String {
        pem::encode(PEM_PUBLIC_KEY, &self.spki_der)
    }

    /// The securesystemslib key dict (`keytype`, `scheme`, `keyval.public`).
    pub fn to_sslib_dict(&self) -> Value {
        let public = match self.alg {
            KeyAlg::Ed25519 => hex::encode(&self.raw),
            KeyAlg::EcdsaP256 => self.to_pem(),
        };
        serde_json::json!({
            "keytype": self.alg.sslib_keytype(),
            "scheme": self.alg.sslib_scheme(),
            "keyval": {"public": public},
        })
    }

    /// Verifies `sig` over `message`. Ed25519: the 64-byte signature. ECDSA P-256/SHA-256:
    /// ASN.1 DER (`Ecdsa-Sig-Value`) or raw fixed-width `r || s` (64 bytes); both are tried.
    /// Never panics; any malformed signature is simply `false`.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> bool {
        match self.alg {
            KeyAlg::Ed25519 => UnparsedPublicKey::new(&signature::ED25519, &self.raw).verify(message, sig).is_ok(),
            KeyAlg::EcdsaP256 => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, &self.raw).verify(message, sig).is_ok()
                    || (sig.len() == 64
                        && UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, &self.raw)
                            .verify(message, sig)
                            .is_ok())
            }
        }
    }
}

/// `(alg, raw key)` from a DER SubjectPublicKeyInfo (strict DER, by `spki`).
fn parse_spki(input: &[u8]) -> Result<(KeyAlg, &[u8]), KeyError> {
    const WHAT: &str = "SubjectPublicKeyInfo";
    let spki = spki::SubjectPublicKeyInfoRef::try_from(input)
        .map_err(|e| KeyError::MalformedDer { what: WHAT, reason: e.to_string() })?;
    let alg = algorithm(&spki.algorithm)?;
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or_else(|| KeyError::MalformedDer { what: WHAT, reason: "key bit string has unused bits".into() })?;
    Ok((alg, key))
}

/// The [`KeyAlg`] an `AlgorithmIdentifier` names: Ed25519 (no parameters) or
/// id-ecPublicKey with the named curve P-256.
fn algorithm(alg_id: &spki::AlgorithmIdentifierRef<'_>) -> Result<KeyAlg, KeyError> {
    const WHAT: &str = "AlgorithmIdentifier";
    if alg_id.oid == OID_ED25519 {
        if alg_id.parameters.is_some() {
            return Err(KeyError::MalformedDer { what: WHAT, reason: "Ed25519 takes no parameters".into() });
        }
        Ok(KeyAlg::Ed25519)
    } else if alg_id.oid == OID_EC_PUBLIC_KEY {
        let curve =
            alg_id.parameters_oid().map_err(|e| KeyError::MalformedDer { what: WHAT, reason: e.to_string() })?;
        if curve != OID_P256 {
            return Err(KeyError::UnsupportedAlgorithm(format!("EC curve {curve}")));
        }
        Ok(KeyAlg::EcdsaP256)
    } else {
        Err(KeyError::UnsupportedAlgorithm(format!("OID {}", alg_id.oid)))
    }
}

// ---------------------------------------------------------------------------------------
// Private keys

enum Inner {
    Ed25519(Ed25519KeyPair),
    EcdsaP256(EcdsaKeyPair),
}

/// A private key we sign with (Ed25519 or ECDSA P-256/SHA-256).
pub struct SigningKey {
    inner: Inner,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.public.alg)
            .field("keyid", &self.public.keyid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// An Ed25519 key from its 32-byte seed (the RFC 8032 private key).
    pub fn from_ed25519_seed(seed: &[u8]) -> Result<SigningKey, KeyError> {
        let kp = Ed25519KeyPair::from_seed_unchecked(seed)
            .map_err(|e| KeyError::InvalidPrivateKey(format!("Ed25519 seed: {e}")))?;
        let public = PublicKey::from_ed25519_bytes(kp.public_key().as_ref())?;
        Ok(SigningKey { inner: Inner::Ed25519(kp), public })
    }

    /// An ECDSA P-256 key from its 32-byte private scalar and its uncompressed public point
    /// (ring checks that they match).
    pub fn from_p256_scalar(private_scalar: &[u8], public_sec1: &[u8]) -> Result<SigningKey, KeyError> {
        let rng = SystemRandom::new();
        let kp = EcdsaKeyPair::from_private_key_and_public_key(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            private_scalar,
            public_sec1,
            &rng,
        )
        .map_err(|e| KeyError::InvalidPrivateKey(format!("P-256 key: {e}")))?;
        let public = PublicKey::from_p256_sec1(kp.public_key().as_ref())?;
        Ok(SigningKey { inner: Inner::EcdsaP256(kp), public })
    }

    /// A DER PKCS#8 `PrivateKeyInfo` (v1 or v2; RFC 5208/5958, Ed25519 per RFC 8410,
    /// P-256 per RFC 5915 inside), read strictly by `pkcs8` / `sec1`.
    pub fn from_pkcs8_der(der_bytes: &[u8]) -> Result<SigningKey, KeyError> {
        const WHAT: &str = "PKCS#8 PrivateKeyInfo";
        let info = pkcs8::PrivateKeyInfo::try_from(der_bytes)
            .map_err(|e| KeyError::MalformedDer { what: WHAT, reason: e.to_string() })?;
        match algorithm(&info.algorithm)? {
            KeyAlg::Ed25519 => {
                // CurvePrivateKey ::= OCTET STRING (the 32-byte seed).
                let seed = OctetStringRef::from_der(info.private_key)
                    .map_err(|e| KeyError::MalformedDer { what: "Ed25519 CurvePrivateKey", reason: e.to_string() })?;
                let seed = Zeroizing::new(seed.as_bytes().to_vec());
                let key = SigningKey::from_ed25519_seed(&seed)?;
                if let Some(public) = info.public_key {
                    if public != key.public.raw.as_slice() {
                        return Err(KeyError::InvalidPrivateKey("Ed25519 public key does not match the seed".into()));
                    }
                }
                Ok(key)
            }
            KeyAlg::EcdsaP256 => SigningKey::from_sec1_der(info.private_key),
        }
    }

    /// A DER SEC1 `ECPrivateKey` (RFC 5915) on P-256. The public key is derived from the
    /// private scalar; one written in the structure must match it.
    pub fn from_sec1_der(der_bytes: &[u8]) -> Result<SigningKey, KeyError> {
        let ec = sec1::EcPrivateKey::try_from(der_bytes)
            .map_err(|e| KeyError::MalformedDer { what: "SEC1 ECPrivateKey", reason: e.to_string() })?;
        if let Some(curve) = ec.parameters.and_then(|p| p.named_curve()) {
            if curve != OID_P256 {
                return Err(KeyError::UnsupportedAlgorithm(format!("EC curve {curve}")));
            }
        }
        let secret = p256::SecretKey::from_slice(ec.private_key)
            .map_err(|_| KeyError::InvalidPrivateKey("P-256 private scalar is out of range".into()))?;
        let point = secret.public_key().to_encoded_point(false);
        if let Some(public) = ec.public_key {
            if public != point.as_bytes() {
                return Err(KeyError::InvalidPrivateKey("P-256 public key does not match the private key".into()));
            }
        }
        let scalar = Zeroizing::new(secret.to_bytes().to_vec());
        SigningKey::from_p256_scalar(&scalar, point.as_bytes())
    }

    /// The first private key block of a PEM text: `PRIVATE KEY` (PKCS#8) or
    /// `EC PRIVATE KEY` (SEC1, P-256 only). `ENCRYPTED PRIVATE KEY` is rejected.
    pub fn from_pem(text: &str) -> Result<SigningKey, KeyError> {
        let blocks = pem::decode_all(text)?;
        for b in &blocks {
            match b.label.as_str() {
                PEM_PRIVATE_KEY => return SigningKey::from_pkcs8_der(&b.der),
                PEM_EC_PRIVATE_KEY => return SigningKey::from_sec1_der(&b.der),
                "ENCRYPTED PRIVATE KEY" => return Err(KeyError::EncryptedPrivateKey),
                _ => {}
            }
        }
        Err(KeyError::MissingPemBlock {
            expected: PEM_PRIVATE_KEY,
            found: blocks.iter().map(|b| b.label.as_str()).collect::<Vec<_>>().join(", "),
        })
    }

    pub fn alg(&self) -> KeyAlg {
        self.public.alg
    }

    pub fn keyid(&self) -> &str {
        &self.public.keyid
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `message`. Ed25519: the deterministic 64-byte RFC 8032 signature. ECDSA
    /// P-256/SHA-256: an ASN.1 DER `Ecdsa-Sig-Value` with a random nonce — DER is what
    /// securesystemslib (pyca/cryptography) and cosign/sigstore-go expect.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        match &self.inner {
            Inner::Ed25519(kp) => Ok(kp.sign(message).as_ref().to_vec()),
            Inner::EcdsaP256(kp) => {
                let rng = SystemRandom::new();
                kp.sign(&rng, message).map(|s| s.as_ref().to_vec()).map_err(|_| KeyError::Signing)
            }
        }
    }
}

/// Generates a new key pair: returns the private key as unencrypted PKCS#8 PEM
/// (`-----BEGIN PRIVATE KEY-----`, readable by OpenSSL, pyca/cryptography and
/// securesystemslib's `CryptoSigner`; zeroised when dropped) and its public key.
/// Ed25519 keys are written in PKCS#8 v1 form (RFC 8410), as OpenSSL does.
pub fn generate_keypair(alg: KeyAlg) -> Result<(Zeroizing<String>, PublicKey), KeyError> {
    let rng = SystemRandom::new();
    let encode_err =
        |e: pkcs8::der::Error| KeyError::MalformedDer { what: "PKCS#8 PrivateKeyInfo", reason: e.to_string() };
    let pkcs8: Zeroizing<Vec<u8>> = match alg {
        KeyAlg::Ed25519 => {
            let mut seed = Zeroizing::new([0u8; 32]);
            rng.fill(seed.as_mut()).map_err(|_| KeyError::Rng)?;
            let inner =
                Zeroizing::new(OctetStringRef::new(seed.as_ref()).and_then(|o| o.to_der()).map_err(encode_err)?);
            let alg_id = spki::AlgorithmIdentifierRef { oid: OID_ED25519, parameters: None };
            Zeroizing::new(pkcs8::PrivateKeyInfo::new(alg_id, &inner).to_der().map_err(encode_err)?)
        }
        KeyAlg::EcdsaP256 => Zeroizing::new(
            EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
                .map_err(|_| KeyError::Rng)?
                .as_ref()
                .to_vec(),
        ),
    };
    let key = SigningKey::from_pkcs8_der(&pkcs8)?;
    Ok((Zeroizing::new(pem::encode(PEM_PRIVATE_KEY, &pkcs8)), key.public))
}

/// Writes a private key file with mode 0600 (on Unix), refusing to overwrite an existing
/// file (so that a pre-existing file's looser mode can never be inherited).
pub fn write_private_key(path: &Path, pem_text: &str) -> Result<(), KeyError> {
    use std::io::Write;
    let io_err = |source| KeyError::Io { path: path.display().to_string(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err)?;
    file.write_all(pem_text.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED_SEED: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const ED_PUB: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
    const ED_KEYID: &str = "63d00ee3cf4f5c61ad94efa696c68f13b608fe56ecea13fb144a6fd18e9235b9";
    const P256_PUB: &str = "0467cd390f77aa359cb08c2235f652270493a9ed832b0abcc01f70954c0390d2380c782bd54e269125a44f4433aff1432ce94e12bca73aa67ac80cea12608ddf74";

    #[test]
    fn canonical_json_escapes_only_quote_and_backslash() {
        let v = serde_json::json!({"b": "x\n\"y\\", "a": [1, true, null], "é": "é"});
        assert_eq!(sslib_canonical_json(&v).unwrap(), "{\"a\":[1,true,null],\"b\":\"x\n\\\"y\\\\\",\"é\":\"é\"}");
        assert_eq!(sslib_canonical_json(&serde_json::json!(1.5)), None);
    }

    #[test]
    fn ed25519_keyid_matches_securesystemslib_vector() {
        let k = PublicKey::from_hex(ED_PUB).unwrap();
        assert_eq!(k.alg(), KeyAlg::Ed25519);
        assert_eq!(k.keyid(), ED_KEYID);
        let sk = SigningKey::from_ed25519_seed(&hex::decode(ED_SEED).unwrap()).unwrap();
        assert_eq!(sk.public_key(), &k);
        let dict = k.to_sslib_dict();
        assert_eq!(PublicKey::from_sslib_dict(&dict).unwrap(), k);
        assert_eq!(
            sslib_keyid("ed25519", "ed25519", ED_PUB),
            hex::encode(ring::digest::digest(&ring::digest::SHA256, sslib_canonical_json(&dict).unwrap().as_bytes()))
        );
    }

    #[test]
    fn all_public_forms_agree() {
        for hexkey in [ED_PUB, P256_PUB] {
            let k = PublicKey::parse(hexkey).unwrap();
            let pem_text = k.to_pem();
            assert_eq!(PublicKey::parse(&pem_text).unwrap(), k);
            assert_eq!(PublicKey::from_spki_der(k.spki_der()).unwrap(), k);
            let json = serde_json::to_string(&k.to_sslib_dict()).unwrap();
            assert_eq!(PublicKey::parse(&json).unwrap(), k);
        }
        let p = PublicKey::parse(P256_PUB).unwrap();
        assert_eq!(p.alg(), KeyAlg::EcdsaP256);
        assert!(p.to_pem().starts_with("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE"));
        assert!(p.to_pem().ends_with("\n-----END PUBLIC KEY-----\n"));
    }

    #[test]
    fn sslib_dict_keyid_hashes_the_dicts_own_pem() {
        let p = PublicKey::parse(P256_PUB).unwrap();
        let crlf = p.to_pem().replace('\n', "\r\n");
        let dict = serde_json::json!({"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256", "keyval": {"public": crlf}});
        let k = PublicKey::from_sslib_dict(&dict).unwrap();
        assert_eq!(k.raw_bytes(), p.raw_bytes());
        assert_eq!(k.keyid(), sslib_keyid("ecdsa", "ecdsa-sha2-nistp256", &crlf));
        assert_ne!(k.keyid(), p.keyid());
    }

    #[test]
    fn rejects_bad_keys() {
        for bad in [
            "",
            "zz",
            "00",
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "{\"keytype\":\"rsa\",\"scheme\":\"rsassa-pss-sha256\",\"keyval\":{\"public\":\"x\"}}",
            "{\"keytype\":\"ed25519\",\"scheme\":\"ed25519\",\"keyval\":{\"public\":\"abcd\"}}",
            "{\"keytype\":\"ed25519\"}",
            "{not json",
            // compressed P-256 point
            "0267cd390f77aa359cb08c2235f652270493a9ed832b0abcc01f70954c0390d238",
        ] {
            assert!(PublicKey::parse(bad).is_err(), "accepted {bad:?}");
        }
        assert!(SigningKey::from_pem("garbage").is_err());
        assert!(SigningKey::from_pem("-----BEGIN PRIVATE KEY-----\nMAA=\n-----END PRIVATE KEY-----\n").is_err());
        assert!(matches!(
            SigningKey::from_pem("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n"),
            Err(KeyError::EncryptedPrivateKey)
        ));
        assert!(SigningKey::from_ed25519_seed(&[1, 2, 3]).is_err());
    }

    #[test]
    fn generate_round_trips_and_signs() {
        for alg in [KeyAlg::Ed25519, KeyAlg::EcdsaP256] {
            let (pem_text, public) = generate_keypair(alg).unwrap();
            assert!(pem_text.starts_with("-----BEGIN PRIVATE KEY-----\n"));
            let sk = SigningKey::from_pem(&pem_text).unwrap();
            assert_eq!(sk.public_key(), &public);
            assert_eq!(public.alg(), alg);
            assert_eq!(public.keyid().len(), 64);
            let sig = sk.sign(b"msg").unwrap();
            assert!(public.verify(b"msg", &sig));
            assert!(!public.verify(b"msh", &sig));
            assert!(!public.verify(b"msg", &sig[..sig.len() - 1]));
            assert!(!public.verify(b"msg", &[]));
        }
    }

    #[test]
    fn sec1_ec_private_key_pem_is_accepted() {
        let (pem_text, public) = generate_keypair(KeyAlg::EcdsaP256).unwrap();
        let pkcs8 = pem::decode_all(&pem_text).unwrap().remove(0).der;
        // Unwrap the PKCS#8 to the inner ECPrivateKey and write it as SEC1 PEM, after an
        // `EC PARAMETERS` block as `openssl ecparam -genkey` writes it.
        let sec1 = pkcs8::PrivateKeyInfo::try_from(pkcs8.as_slice()).unwrap().private_key.to_vec();
        let sec1_pem = format!(
            "{}{}",
            pem::encode("EC PARAMETERS", &OID_P256.to_der().unwrap()),
            pem::encode(PEM_EC_PRIVATE_KEY, &sec1)
        );
        assert_eq!(SigningKey::from_pem(&sec1_pem).unwrap().public_key(), &public);
        // A SEC1 key whose embedded public key is another key's is refused.
        let (other_pem, _) = generate_keypair(KeyAlg::EcdsaP256).unwrap();
        let other = pem::decode_all(&other_pem).unwrap().remove(0).der;
        let other_sec1 = pkcs8::PrivateKeyInfo::try_from(other.as_slice()).unwrap().private_key.to_vec();
        let mine = sec1::EcPrivateKey::try_from(sec1.as_slice()).unwrap();
        let theirs = sec1::EcPrivateKey::try_from(other_sec1.as_slice()).unwrap();
        let mixed = sec1::EcPrivateKey {
            private_key: mine.private_key,
            parameters: mine.parameters,
            public_key: theirs.public_key,
        };
        assert!(matches!(SigningKey::from_sec1_der(&mixed.to_der().unwrap()), Err(KeyError::InvalidPrivateKey(_))));
    }

    #[test]
    fn non_minimal_der_lengths_are_rejected() {
        let k = PublicKey::parse(P256_PUB).unwrap();
        let der_bytes = k.spki_der();
        assert_eq!(der_bytes[1], 0x59);
        // The same SPKI with its outer length in the long form (0x81 0x59): valid BER,
        // not DER. The hand-written reader accepted it.
        let long = [&[0x30, 0x81, 0x59][..], &der_bytes[2..]].concat();
        assert!(matches!(PublicKey::from_spki_der(&long), Err(KeyError::MalformedDer { .. })));
        // Trailing bytes after the structure.
        let trailing = [der_bytes, &[0][..]].concat();
        assert!(PublicKey::from_spki_der(&trailing).is_err());
        let pem_text = pem::encode(PEM_PUBLIC_KEY, &long);
        assert!(PublicKey::parse(&pem_text).is_err());
        // A PKCS#8 private key likewise.
        let (pem_text, _) = generate_keypair(KeyAlg::Ed25519).unwrap();
        let der_bytes = pem::decode_all(&pem_text).unwrap().remove(0).der;
        assert_eq!(der_bytes[1], 0x2e);
        let long = [&[0x30, 0x81, 0x2e][..], &der_bytes[2..]].concat();
        assert!(matches!(SigningKey::from_pkcs8_der(&long), Err(KeyError::MalformedDer { .. })));
    }

    #[test]
    fn p256_point_not_on_the_curve_is_rejected_at_load() {
        let mut point = hex::decode(P256_PUB).unwrap();
        *point.last_mut().unwrap() ^= 1;
        let off_curve = hex::encode(&point);
        assert!(matches!(PublicKey::parse(&off_curve), Err(KeyError::InvalidPublicKey(m)) if m.contains("curve")));
        let spki_der = [&P256_SPKI_PREFIX[..], &point[..]].concat();
        assert!(PublicKey::from_spki_der(&spki_der).is_err());
        assert!(PublicKey::parse(&pem::encode(PEM_PUBLIC_KEY, &spki_der)).is_err());
        let dict = serde_json::json!({"keytype": "ecdsa", "scheme": "ecdsa-sha2-nistp256",
            "keyval": {"public": pem::encode(PEM_PUBLIC_KEY, &spki_der)}});
        assert!(PublicKey::from_sslib_dict(&dict).is_err());
    }

    #[test]
    fn ed25519_key_not_a_prime_order_point_is_rejected_at_load() {
        // ED_PUB with the lowest bit of its first byte flipped: y is no longer the
        // y-coordinate of a curve point. It used to load (32 bytes) and then fail every
        // signature.
        let off_curve = "02a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";
        let err = |hexkey: &str| match PublicKey::parse(hexkey) {
            Err(KeyError::InvalidPublicKey(m)) => m,
            other => panic!("{hexkey}: {other:?}"),
        };
        assert!(err(off_curve).contains("not a point on the curve"));
        // The small-order points (orders 1, 2, 4 and 8) as commonly listed as weak keys.
        for small in [
            "0100000000000000000000000000000000000000000000000000000000000000",
            "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000080",
            "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
            "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        ] {
            assert!(err(small).contains("small-order"), "{small}: {}", err(small));
        }
        // y = p + 1 (a non-canonical encoding of the identity) and the identity with the
        // sign bit set (x = 0 cannot be negative).
        for noncanonical in [
            "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
            "0100000000000000000000000000000000000000000000000000000000000080",
        ] {
            assert!(err(noncanonical).contains("canonically"), "{noncanonical}: {}", err(noncanonical));
        }
        // A valid key plus a point of order 8: on the curve, not small-order, but not a
        // key any secret produces.
        let valid = curve25519_dalek::edwards::CompressedEdwardsY(hex::decode(ED_PUB).unwrap().try_into().unwrap())
            .decompress()
            .unwrap();
        let mixed = (valid + curve25519_dalek::constants::EIGHT_TORSION[1]).compress();
        assert!(err(&hex::encode(mixed.as_bytes())).contains("prime-order subgroup"));
        // Every other form the directory accepts goes through the same check.
        let spki_der = [&ED25519_SPKI_PREFIX[..], &hex::decode(off_curve).unwrap()[..]].concat();
        assert!(PublicKey::from_spki_der(&spki_der).is_err());
        assert!(PublicKey::parse(&pem::encode(PEM_PUBLIC_KEY, &spki_der)).is_err());
        let dict = serde_json::json!({"keytype": "ed25519", "scheme": "ed25519", "keyval": {"public": off_curve}});
        assert!(PublicKey::from_sslib_dict(&dict).is_err());
        // The valid key still loads.
        assert!(PublicKey::parse(ED_PUB).is_ok());
    }

    #[test]
    fn keyalg_names() {
        assert_eq!("ed25519".parse::<KeyAlg>().unwrap(), KeyAlg::Ed25519);
        assert_eq!("ecdsa-p256".parse::<KeyAlg>().unwrap(), KeyAlg::EcdsaP256);
        assert!("rsa".parse::<KeyAlg>().is_err());
        assert_eq!(serde_json::to_string(&KeyAlg::EcdsaP256).unwrap(), "\"ecdsa-p256\"");
    }

    #[cfg(unix)]
    #[test]
    fn private_key_file_is_0600_and_not_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let (pem_text, _) = generate_keypair(KeyAlg::Ed25519).unwrap();
        write_private_key(&path, &pem_text).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), *pem_text);
        assert!(matches!(write_private_key(&path, &pem_text), Err(KeyError::Io { .. })));
    }

    proptest::proptest! {
        #[test]
        fn parsing_garbage_never_panics(s in ".{0,300}", bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let _ = PublicKey::parse(&s);
            let _ = SigningKey::from_pem(&s);
            let _ = PublicKey::from_spki_der(&bytes);
            let _ = SigningKey::from_pkcs8_der(&bytes);
            let wrapped = pem::encode(PEM_PUBLIC_KEY, &bytes);
            let _ = PublicKey::parse(&wrapped);
        }

        #[test]
        fn mutated_spki_never_panics(idx in 0usize..91, byte in proptest::num::u8::ANY) {
            let mut der_bytes = PublicKey::parse(P256_PUB).unwrap().spki_der().to_vec();
            der_bytes[idx] = byte;
            if let Ok(k) = PublicKey::from_spki_der(&der_bytes) {
                let _ = k.verify(b"x", &[0u8; 64]);
            }
        }
    }
}
