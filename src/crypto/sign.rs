//! Signing DSSE envelopes.
//!
//! Invariants: a signature is always over `PAE(payloadType, payload)` and always carries
//! the signer's securesystemslib key id; Ed25519 signatures are deterministic (RFC 8032),
//! ECDSA P-256 signatures are ASN.1 DER (the form securesystemslib/pyca-cryptography and
//! cosign verify) with a fresh random nonce.

use super::dsse::{Envelope, EnvelopeSignature};
use super::keys::{KeyError, SigningKey};

/// Signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("signing with key {keyid} failed: {source}")]
    Key { keyid: String, source: KeyError },
}

/// A new envelope over `payload` with one signature by `key`.
pub fn sign_envelope(payload_type: &str, payload: &[u8], key: &SigningKey) -> Result<Envelope, SignError> {
    let mut env = Envelope::new(payload_type, payload.to_vec());
    add_signature(&mut env, key)?;
    Ok(env)
}

/// Adds a signature by `key` to `env` (for multi-signature / threshold envelopes). A
/// previous signature with the same key id is replaced.
pub fn add_signature(env: &mut Envelope, key: &SigningKey) -> Result<(), SignError> {
    let sig = key.sign(&env.pae()).map_err(|source| SignError::Key { keyid: key.keyid().to_string(), source })?;
    env.signatures.retain(|s| s.keyid != key.keyid());
    env.signatures.push(EnvelopeSignature { keyid: key.keyid().to_string(), sig });
    Ok(())
}
