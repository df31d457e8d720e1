//! Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and SHA-256 helpers used for
//! every digest the product emits.
//!
//! Invariants: the bytes are RFC 8785 as produced by the maintained
//! `serde_json_canonicalizer` crate (keys sorted by UTF-16 code units at every depth, no
//! insignificant whitespace, ECMAScript number form, minimal string escaping), so any JCS
//! implementation recomputes them; a value that cannot be serialised is an error, never
//! the digest of an empty string.

use ring::digest;
use serde::Serialize;

/// Largest integer RFC 8785 (an IEEE 754 double) represents exactly: 2^53 - 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a value has no canonical form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    /// serde_json's message (its error type is neither `Clone` nor `Eq`).
    #[error("cannot serialise to canonical JSON: {0}")]
    Serialise(String),
    #[error("{field} = {value} is beyond 2^53 - 1, which RFC 8785 cannot represent exactly")]
    NumberOutOfRange { field: &'static str, value: u64 },
}

impl From<serde_json::Error> for CanonicalError {
    fn from(e: serde_json::Error) -> Self {
        CanonicalError::Serialise(e.to_string())
    }
}

/// Serialises `value` as RFC 8785 canonical JSON bytes.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json_canonicalizer::to_vec(value)
}

/// Canonical JSON as a `String`.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    serde_json_canonicalizer::to_string(value)
}

/// Checks that an integer going into a digest is exactly representable in RFC 8785.
pub fn check_safe(field: &'static str, value: u64) -> Result<(), CanonicalError> {
    if value > MAX_SAFE_INTEGER {
        return Err(CanonicalError::NumberOutOfRange { field, value });
    }
    Ok(())
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_prefixed(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sorted_at_every_depth() {
        let v = serde_json::json!({"b": 1, "a": {"z": [true, null], "y": "é\n"}});
        assert_eq!(to_string(&v).unwrap(), r#"{"a":{"y":"é\n","z":[true,null]},"b":1}"#);
    }

    /// RFC 8785 section 3.2.3: keys sort by UTF-16 code units, not UTF-8 bytes (U+1F600
    /// is the surrogate pair D83D DE00, which sorts before U+E000), and numbers take the
    /// ECMAScript form.
    #[test]
    fn rfc8785_ordering_and_numbers() {
        let v = serde_json::json!({"\u{e000}": 1, "\u{1f600}": 2, "n": 1e21, "m": 0.000001, "i": 100});
        assert_eq!(to_string(&v).unwrap(), "{\"i\":100,\"m\":0.000001,\"n\":1e+21,\"\u{1f600}\":2,\"\u{e000}\":1}");
        assert!(check_safe("x", MAX_SAFE_INTEGER).is_ok());
        assert!(matches!(check_safe("x", MAX_SAFE_INTEGER + 1), Err(CanonicalError::NumberOutOfRange { .. })));
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
