//! Verifying DSSE envelopes against a set of trusted keys with a threshold policy.
//!
//! Semantics (each signature is checked against `PAE(payloadType, payload)`):
//! * a signature whose `keyid` names one or more trusted keys is checked against those
//!   keys only: it is `verified` if one verifies it, else `bad_signature`;
//! * a signature whose `keyid` names no trusted key is `unknown_key` (it is not tried
//!   against other keys, as in securesystemslib);
//! * a signature with an empty/absent `keyid` is tried against every trusted key (e.g. all
//!   keys of the claimed issuer): `verified` if one verifies it, `wrong_key` if none does,
//!   `unknown_key` if the key set is empty.
//!
//! The envelope verdict, with `threshold` = how many *distinct* trusted keys must have a
//! verified signature (0 is treated as 1):
//! 1. no signatures → `unsigned`/`no_signatures`;
//! 2. distinct verified keys ≥ threshold → `verified` (other, failing signatures do not
//!    spoil it; they stay visible in the per-signature results);
//! 3. otherwise, any `bad_signature` → `failed`/`bad_signature`;
//! 4. otherwise, any `wrong_key` → `failed`/`wrong_key`;
//! 5. otherwise, at least one verified key → `failed`/`threshold_not_met`;
//! 6. otherwise (all `unknown_key`) → `unsigned`/`unknown_key`.
//!
//! An envelope that cannot be parsed is `failed`/`malformed_envelope`
//! ([`verify_envelope_json`]). Reason strings are stable snake_case identifiers (they are
//! stored and used as metric labels).

use serde::Serialize;

use super::dsse::Envelope;
use super::keys::PublicKey;
use crate::domain::codes::SignatureReason;

/// The default threshold: one trusted key.
pub const DEFAULT_THRESHOLD: usize = 1;

/// Why an envelope counts as unsigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsignedReason {
    /// The envelope has no signatures.
    NoSignatures,
    /// No signature names (or, for keyless ones, could be tried against) a trusted key.
    UnknownKey,
}

impl UnsignedReason {
    pub fn as_str(self) -> &'static str {
        match self {
            UnsignedReason::NoSignatures => "no_signatures",
            UnsignedReason::UnknownKey => "unknown_key",
        }
    }
}

impl From<UnsignedReason> for SignatureReason {
    fn from(r: UnsignedReason) -> Self {
        match r {
            UnsignedReason::NoSignatures => SignatureReason::NoSignatures,
            UnsignedReason::UnknownKey => SignatureReason::UnknownKey,
        }
    }
}

/// Why verification failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// A signature names a trusted key but does not verify with it (tampered payload or
    /// payload type, corrupted or truncated signature).
    BadSignature,
    /// The envelope is not a valid DSSE envelope (JSON, required fields, base64).
    MalformedEnvelope,
    /// A keyless signature verifies with none of the trusted keys.
    WrongKey,
    /// Some trusted keys verified, but fewer distinct keys than the threshold.
    ThresholdNotMet,
}

impl FailureReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::BadSignature => "bad_signature",
            FailureReason::MalformedEnvelope => "malformed_envelope",
            FailureReason::WrongKey => "wrong_key",
            FailureReason::ThresholdNotMet => "threshold_not_met",
        }
    }
}

impl From<FailureReason> for SignatureReason {
    fn from(r: FailureReason) -> Self {
        match r {
            FailureReason::BadSignature => SignatureReason::BadSignature,
            FailureReason::MalformedEnvelope => SignatureReason::MalformedEnvelope,
            FailureReason::WrongKey => SignatureReason::WrongKey,
            FailureReason::ThresholdNotMet => SignatureReason::ThresholdNotMet,
        }
    }
}

/// The envelope verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// At least `threshold` distinct trusted keys verified; their key ids, in signature order.
    Verified {
        keyids: Vec<String>,
    },
    Unsigned {
        reason: UnsignedReason,
    },
    Failed {
        reason: FailureReason,
    },
}

/// The result for one signature.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum SignatureResult {
    /// Verified by the trusted key `keyid`.
    Verified { keyid: String },
    /// The claimed keyid is not trusted (or there are no trusted keys).
    UnknownKey,
    /// The claimed keyid is trusted but the signature does not verify.
    BadSignature,
    /// Keyless, and no trusted key verifies it.
    WrongKey,
}

impl SignatureResult {
    pub fn as_str(&self) -> &'static str {
        match self {
            SignatureResult::Verified { .. } => "verified",
            SignatureResult::UnknownKey => "unknown_key",
            SignatureResult::BadSignature => "bad_signature",
            SignatureResult::WrongKey => "wrong_key",
        }
    }
}

/// One signature's check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SignatureCheck {
    /// Position in the envelope's `signatures`.
    pub index: usize,
    /// The keyid the signature claims (`""` if none).
    pub claimed_keyid: String,
    pub result: SignatureResult,
}

/// The verdict plus every signature's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerificationOutcome {
    pub verdict: Verdict,
    /// The threshold applied (≥ 1).
    pub threshold: usize,
    pub signatures: Vec<SignatureCheck>,
}

impl VerificationOutcome {
    /// `verified`, `unsigned` or `failed`.
    pub fn status(&self) -> &'static str {
        match self.verdict {
            Verdict::Verified { .. } => "verified",
            Verdict::Unsigned { .. } => "unsigned",
            Verdict::Failed { .. } => "failed",
        }
    }

    /// The reason for `unsigned`/`failed`; `None` when verified.
    pub fn reason(&self) -> Option<&'static str> {
        match self.verdict {
            Verdict::Verified { .. } => None,
            Verdict::Unsigned { reason } => Some(reason.as_str()),
            Verdict::Failed { reason } => Some(reason.as_str()),
        }
    }

    /// The reason for `unsigned`/`failed` as a code; `None` when verified.
    pub fn reason_code(&self) -> Option<SignatureReason> {
        match self.verdict {
            Verdict::Verified { .. } => None,
            Verdict::Unsigned { reason } => Some(reason.into()),
            Verdict::Failed { reason } => Some(reason.into()),
        }
    }

    pub fn is_verified(&self) -> bool {
        matches!(self.verdict, Verdict::Verified { .. })
    }

    /// The key ids that verified (empty unless verified).
    pub fn verified_keyids(&self) -> &[String] {
        match &self.verdict {
            Verdict::Verified { keyids } => keyids,
            _ => &[],
        }
    }

    /// The key id to record: the first verified key, else the first claimed keyid.
    pub fn keyid(&self) -> Option<&str> {
        self.verified_keyids()
            .first()
            .map(String::as_str)
            .or_else(|| self.signatures.iter().map(|s| s.claimed_keyid.as_str()).find(|k| !k.is_empty()))
    }

    fn malformed(threshold: usize) -> VerificationOutcome {
        VerificationOutcome {
            verdict: Verdict::Failed { reason: FailureReason::MalformedEnvelope },
            threshold,
            signatures: Vec::new(),
        }
    }
}

/// Verifies `env` against the trusted `keys`, requiring `threshold` distinct keys (see the
/// module documentation for the exact semantics). Never panics.
pub fn verify_envelope(env: &Envelope, keys: &[PublicKey], threshold: usize) -> VerificationOutcome {
    let threshold = threshold.max(1);
    let pae = env.pae();
    let signatures: Vec<SignatureCheck> = env
        .signatures
        .iter()
        .enumerate()
        .map(|(index, s)| {
            let result = if s.keyid.is_empty() {
                if keys.is_empty() {
                    SignatureResult::UnknownKey
                } else {
                    match keys.iter().find(|k| k.verify(&pae, &s.sig)) {
                        Some(k) => SignatureResult::Verified { keyid: k.keyid().to_string() },
                        None => SignatureResult::WrongKey,
                    }
                }
            } else {
                let mut named = keys.iter().filter(|k| k.keyid().eq_ignore_ascii_case(&s.keyid)).peekable();
                if named.peek().is_none() {
                    SignatureResult::UnknownKey
                } else {
                    match named.find(|k| k.verify(&pae, &s.sig)) {
                        Some(k) => SignatureResult::Verified { keyid: k.keyid().to_string() },
                        None => SignatureResult::BadSignature,
                    }
                }
            };
            SignatureCheck { index, claimed_keyid: s.keyid.clone(), result }
        })
        .collect();

    let mut keyids: Vec<String> = Vec::new();
    for check in &signatures {
        if let SignatureResult::Verified { keyid } = &check.result {
            if !keyids.contains(keyid) {
                keyids.push(keyid.clone());
            }
        }
    }
    let any = |r: &SignatureResult| signatures.iter().any(|c| &c.result == r);
    let verdict = if signatures.is_empty() {
        Verdict::Unsigned { reason: UnsignedReason::NoSignatures }
    } else if keyids.len() >= threshold {
        Verdict::Verified { keyids }
    } else if any(&SignatureResult::BadSignature) {
        Verdict::Failed { reason: FailureReason::BadSignature }
    } else if any(&SignatureResult::WrongKey) {
        Verdict::Failed { reason: FailureReason::WrongKey }
    } else if !keyids.is_empty() {
        Verdict::Failed { reason: FailureReason::ThresholdNotMet }
    } else {
        Verdict::Unsigned { reason: UnsignedReason::UnknownKey }
    };
    VerificationOutcome { verdict, threshold, signatures }
}

/// Parses and verifies a JSON envelope; an unparseable envelope is
/// `failed`/`malformed_envelope` (and `None`).
pub fn verify_envelope_json(
    bytes: &[u8],
    keys: &[PublicKey],
    threshold: usize,
) -> (Option<Envelope>, VerificationOutcome) {
    match Envelope::from_json(bytes) {
        Ok(env) => {
            let outcome = verify_envelope(&env, keys, threshold);
            (Some(env), outcome)
        }
        Err(_) => (None, VerificationOutcome::malformed(threshold.max(1))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::{generate_keypair, KeyAlg, SigningKey};
    use crate::crypto::sign::{add_signature, sign_envelope};

    fn key(alg: KeyAlg) -> SigningKey {
        SigningKey::from_pem(&generate_keypair(alg).unwrap().0).unwrap()
    }

    fn failed(o: &VerificationOutcome) -> Option<&'static str> {
        match o.verdict {
            Verdict::Failed { reason } => Some(reason.as_str()),
            _ => None,
        }
    }

    #[test]
    fn verdicts() {
        for alg in [KeyAlg::Ed25519, KeyAlg::EcdsaP256] {
            let a = key(alg);
            let b = key(alg);
            let c = key(KeyAlg::Ed25519);
            let trusted = [a.public_key().clone(), b.public_key().clone()];
            let env = sign_envelope("t", b"body", &a).unwrap();

            let o = verify_envelope(&env, &trusted, 1);
            assert_eq!(o.verdict, Verdict::Verified { keyids: vec![a.keyid().to_string()] });
            assert_eq!((o.status(), o.reason(), o.keyid()), ("verified", None, Some(a.keyid())));

            // threshold 2 with one signer
            let o = verify_envelope(&env, &trusted, 2);
            assert_eq!(failed(&o), Some("threshold_not_met"));
            // the same key twice still counts once
            let mut twice = env.clone();
            twice.signatures.push(twice.signatures[0].clone());
            assert_eq!(failed(&verify_envelope(&twice, &trusted, 2)), Some("threshold_not_met"));
            // two distinct keys
            let mut both = env.clone();
            add_signature(&mut both, &b).unwrap();
            assert!(verify_envelope(&both, &trusted, 2).is_verified());
            // an untrusted extra signer does not count
            let mut with_c = env.clone();
            add_signature(&mut with_c, &c).unwrap();
            let o = verify_envelope(&with_c, &trusted, 2);
            assert_eq!(failed(&o), Some("threshold_not_met"));
            assert_eq!(o.signatures[1].result, SignatureResult::UnknownKey);

            // tampered payload / payload type
            let mut t = env.clone();
            t.payload.push(b'!');
            assert_eq!(failed(&verify_envelope(&t, &trusted, 1)), Some("bad_signature"));
            let mut t = env.clone();
            t.payload_type.push('x');
            assert_eq!(failed(&verify_envelope(&t, &trusted, 1)), Some("bad_signature"));
            // truncated / empty signature
            let mut t = env.clone();
            t.signatures[0].sig.truncate(10);
            assert_eq!(failed(&verify_envelope(&t, &trusted, 1)), Some("bad_signature"));
            t.signatures[0].sig.clear();
            assert_eq!(failed(&verify_envelope(&t, &trusted, 1)), Some("bad_signature"));
            // keyid claims a trusted key but another key signed
            let mut t = sign_envelope("t", b"body", &b).unwrap();
            t.signatures[0].keyid = a.keyid().to_string();
            assert_eq!(failed(&verify_envelope(&t, &trusted, 1)), Some("bad_signature"));

            // unknown key: unsigned, not failed
            let o = verify_envelope(&env, &[c.public_key().clone()], 1);
            assert_eq!(o.verdict, Verdict::Unsigned { reason: UnsignedReason::UnknownKey });
            assert_eq!(o.keyid(), Some(a.keyid()));
            let o = verify_envelope(&env, &[], 1);
            assert_eq!(o.verdict, Verdict::Unsigned { reason: UnsignedReason::UnknownKey });

            // keyless: tried against every key
            let mut keyless = env.clone();
            keyless.signatures[0].keyid.clear();
            let o =
                verify_envelope(&keyless, &[c.public_key().clone(), b.public_key().clone(), a.public_key().clone()], 1);
            assert_eq!(o.verified_keyids(), [a.keyid().to_string()]);
            let o = verify_envelope(&keyless, &[c.public_key().clone(), b.public_key().clone()], 1);
            assert_eq!(failed(&o), Some("wrong_key"));
            let o = verify_envelope(&keyless, &[], 1);
            assert_eq!(o.verdict, Verdict::Unsigned { reason: UnsignedReason::UnknownKey });

            // no signatures
            let o = verify_envelope(&Envelope::new("t", b"body".to_vec()), &trusted, 1);
            assert_eq!(o.verdict, Verdict::Unsigned { reason: UnsignedReason::NoSignatures });

            // threshold 0 is 1
            assert!(verify_envelope(&env, &trusted, 0).is_verified());
        }
    }

    #[test]
    fn bad_signature_outranks_and_verified_wins() {
        let a = key(KeyAlg::Ed25519);
        let b = key(KeyAlg::EcdsaP256);
        let trusted = [a.public_key().clone(), b.public_key().clone()];
        let mut env = sign_envelope("t", b"body", &a).unwrap();
        add_signature(&mut env, &b).unwrap();
        env.signatures[1].sig[5] ^= 1;
        // threshold met by a: verified, the bad one visible per signature
        let o = verify_envelope(&env, &trusted, 1);
        assert!(o.is_verified());
        assert_eq!(o.signatures[1].result, SignatureResult::BadSignature);
        // threshold 2: the bad signature is the reason
        assert_eq!(failed(&verify_envelope(&env, &trusted, 2)), Some("bad_signature"));
    }

    #[test]
    fn malformed_json_is_failed() {
        let (env, o) = verify_envelope_json(b"{\"payload\":\"%%\"}", &[], 1);
        assert!(env.is_none());
        assert_eq!((o.status(), o.reason()), ("failed", Some("malformed_envelope")));
    }

    #[test]
    fn outcome_serialises_with_stable_names() {
        let o = VerificationOutcome {
            verdict: Verdict::Failed { reason: FailureReason::ThresholdNotMet },
            threshold: 2,
            signatures: vec![SignatureCheck { index: 0, claimed_keyid: "k".into(), result: SignatureResult::WrongKey }],
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            serde_json::json!({"verdict": {"status": "failed", "reason": "threshold_not_met"}, "threshold": 2,
                "signatures": [{"index": 0, "claimed_keyid": "k", "result": {"result": "wrong_key"}}]})
        );
    }
}
