//! DSSE envelopes, PAE, signing and verification (pure; built with `ring`).
//!
//! Job: parse and write DSSE v1 envelopes, compute the PAE exactly as the DSSE protocol
//! defines it, sign (Ed25519, ECDSA P-256/SHA-256 as DER) and verify (Ed25519, ECDSA
//! P-256/SHA-256 as DER or raw `r||s`) against trusted keys with a threshold policy, and
//! parse/generate keys whose key ids are the securesystemslib ones.
//!
//! Invariants: no I/O except [`keys::write_private_key`]; no panics on hostile input;
//! a key's id is always its securesystemslib key id; verification reasons are stable
//! snake_case strings (`no_signatures`, `unknown_key`, `bad_signature`,
//! `malformed_envelope`, `wrong_key`, `threshold_not_met`).

pub mod directory;
pub mod dsse;
pub mod keys;
pub mod mac;
pub mod openpgp;
pub mod pem;
pub mod sign;
pub mod verify;

pub use directory::{KeyDirectory, KeyDirectoryError};
pub use dsse::{
    decode_base64, encode_base64, openvex_statement, pae, vex_payload, DsseError, Envelope, EnvelopeSignature, Subject,
    VexPayload, IN_TOTO_PAYLOAD_TYPE, OPENVEX_PREDICATE_TYPE,
};
pub use keys::{generate_keypair, sslib_keyid, write_private_key, KeyAlg, KeyError, PublicKey, SigningKey};
pub use sign::{add_signature, sign_envelope, SignError};
pub use verify::{
    verify_envelope, verify_envelope_json, FailureReason, SignatureCheck, SignatureResult, UnsignedReason, Verdict,
    VerificationOutcome, DEFAULT_THRESHOLD,
};
