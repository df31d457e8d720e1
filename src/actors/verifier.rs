//! DSSE verification of incoming envelopes against the issuer directory's keys, and the
//! pool of sync actors that runs it (with the payload's normalisation) off the async
//! runtime.
//!
//! Semantics (CONSENSUS.md "Issuer identity" and signature_factor; crypto::verify):
//! * a signature with a keyid is checked against the directory key with that id (the key's
//!   securesystemslib id, or the `keyid` written for it in issuers.toml);
//! * a signature without a keyid is tried against every key of the *claimed* issuer (the
//!   `issuer` header, else the document's author, resolved through the directory);
//! * `verified`: the issuer owning the (first) verifying key becomes the signed issuer,
//!   whatever the document claims; `unsigned`: no signatures (`no_signatures`) or no
//!   directory key has the id (`unknown_key`); `failed`: `bad_signature`, `wrong_key`,
//!   `malformed_envelope` or `threshold_not_met` (the statement is then excluded with
//!   conflict `missing_provenance`).
//!
//! A detached OpenPGP signature carried beside a plain document ([`VerifyDetached`]) is
//! judged by [`verify_openpgp`] (`crypto::openpgp::verify_detached`, docs/openpgp.md)
//! with the same three outcomes; the result is `kind: openpgp` on the observations and the
//! record. A signature is never a reason to dead-letter the document.
//!
//! Invariants: [`KeyDirectory`], [`verify`] and [`verify_openpgp`] are pure; a key of the directory that does
//! not parse is a startup error naming the issuer. [`DsseVerifierActor`] runs as a
//! `SyncArbiter` pool; actix restarts a sync actor whose handler panics (the message in
//! flight is lost: its sender gets a mailbox error, so the source never acknowledges the
//! document and it is processed again).

use super::ingest::normalise_envelope;
use super::messages::IngestOutcome;
use crate::crypto::openpgp::{verify_detached, Certificate, OpenPgpKeyring, OpenPgpVerdict};
use crate::crypto::{verify_envelope, Envelope, PublicKey};
use crate::domain::canonical::sha256_prefixed;
use crate::domain::codes::SignatureKind;
use crate::domain::model::{IngestContext, IssuerSource, Signature, SignatureStatus};
use crate::domain::trust::{IssuerDirectory, IssuerKey};
use crate::ports::VerificationRecord;
use crate::telemetry::events::DsseVerificationFailed;
use actix::{Actor, Handler, Message, SyncContext};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A key of the directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyDirectoryError {
    #[error("issuer directory: key {key} of issuer {issuer} does not load: {reason}")]
    BadKey {
        issuer: String,
        /// The key's position in the issuer's `keys` and its configured keyid or
        /// fingerprint, if any (e.g. `#1 (keyid acme-2024)`, `#0 (openpgp 83CE...)`).
        key: String,
        reason: String,
    },
    #[error("issuer directory: keyid {keyid} is used by issuer {first} and issuer {second}")]
    DuplicateKeyid { keyid: String, first: String, second: String },
    #[error("issuer directory: OpenPGP key {fingerprint} is used by issuer {first} and issuer {second}")]
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

/// Verifies `env` against the directory (see the module documentation). Returns the
/// signature to put on its observations, the signed issuer id (when verified) and the
/// record to persist. The record's `envelope_digest` is the SHA-256 of the envelope's
/// compact JSON, `verified_at_ms` is 0 and `source` empty: the caller sets them (the
/// actor uses the digest of the bytes as received).
pub fn verify(
    env: &Envelope,
    claimed_issuer: Option<&str>,
    keys: &KeyDirectory,
    threshold: usize,
) -> (Signature, Option<String>, VerificationRecord) {
    let claimed = claimed_issuer.map(str::trim).filter(|s| !s.is_empty());
    // Signatures name keys by id: map configured aliases to the keys' own ids and collect
    // the keys they name; keyless signatures are tried against the claimed issuer's keys.
    let mut env = env.clone();
    let mut trusted: Vec<PublicKey> = Vec::new();
    let mut push = |k: &PublicKey| {
        if !trusted.iter().any(|t| t.keyid() == k.keyid()) {
            trusted.push(k.clone());
        }
    };
    let mut keyless = false;
    for s in &mut env.signatures {
        if s.keyid.trim().is_empty() {
            keyless = true;
        } else if let Some((_, k)) = keys.by_keyid(&s.keyid) {
            s.keyid = k.keyid().to_string();
            push(k);
        }
    }
    if keyless {
        for k in claimed.map(|c| keys.issuer_keys(c)).unwrap_or(&[]) {
            push(k);
        }
    }
    let outcome = verify_envelope(&env, &trusted, threshold);
    let keyid = outcome.keyid().map(str::to_string);
    let signed_issuer =
        outcome.verified_keyids().first().and_then(|k| keys.by_keyid(k)).map(|(issuer, _)| issuer.to_string());
    let status = match outcome.verdict {
        crate::crypto::Verdict::Verified { .. } => SignatureStatus::Verified,
        crate::crypto::Verdict::Unsigned { .. } => SignatureStatus::Unsigned,
        crate::crypto::Verdict::Failed { .. } => SignatureStatus::Failed,
    };
    let reason = outcome.reason_code();
    // The issuer on the record: the signer, else the owner of the claimed key, else the
    // claimed issuer (its directory id when known).
    let issuer = signed_issuer
        .clone()
        .or_else(|| keyid.as_deref().and_then(|k| keys.by_keyid(k)).map(|(i, _)| i.to_string()))
        .or_else(|| claimed.map(|c| keys.issuer_id(c).unwrap_or(c).to_string()));
    let record = VerificationRecord {
        envelope_digest: sha256_prefixed(env.to_json().as_bytes()),
        kind: None,
        issuer,
        keyid: keyid.clone(),
        result: status,
        reason,
        verified_at_ms: 0,
        source: None,
    };
    (Signature { kind: None, status, reason, keyid }, signed_issuer, record)
}

/// The id of an OpenPGP verification record: `sha256:` of the document's SHA-256 (hex) and
/// the signature's, joined by `:`, so the same signature over the same bytes is one record
/// and a replay overwrites it.
pub fn openpgp_record_id(document: &[u8], signature: &[u8]) -> String {
    let doc = crate::domain::canonical::sha256_hex(document);
    let sig = crate::domain::canonical::sha256_hex(signature);
    sha256_prefixed(format!("{doc}:{sig}").as_bytes())
}

/// Judges a detached OpenPGP signature over a document's exact bytes against the
/// directory's certificates (`crypto::openpgp::verify_detached`; pure). Returns the
/// signature to put on its observations (`kind: openpgp`, the signing key's fingerprint as
/// `keyid`), the signed issuer (when verified) and the record to persist (issuer: the
/// certificate's owner when the key is known; `verified_at_ms` 0 and `source` empty: the
/// caller sets them).
pub fn verify_openpgp(
    document: &[u8],
    signature: &[u8],
    keys: &KeyDirectory,
) -> (Signature, Option<String>, VerificationRecord) {
    let verdict = verify_detached(document, signature, keys.openpgp());
    let status = match verdict {
        OpenPgpVerdict::Verified { .. } => SignatureStatus::Verified,
        OpenPgpVerdict::UnknownKey { .. } => SignatureStatus::Unsigned,
        OpenPgpVerdict::Failed { .. } => SignatureStatus::Failed,
    };
    let reason = verdict.reason_code();
    let keyid = verdict.keyid().map(str::to_string);
    let record = VerificationRecord {
        envelope_digest: openpgp_record_id(document, signature),
        kind: Some(SignatureKind::Openpgp),
        issuer: verdict.key_owner().map(str::to_string),
        keyid: keyid.clone(),
        result: status,
        reason,
        verified_at_ms: 0,
        source: None,
    };
    let signature = Signature { kind: Some(SignatureKind::Openpgp), status, reason, keyid };
    (signature, verdict.signed_issuer().map(str::to_string), record)
}

/// To the verifier pool: judge a detached OpenPGP signature, then normalise the document.
#[derive(Debug, Message)]
#[rtype(result = "VerifiedDocument")]
pub struct VerifyDetached {
    /// Names the document (path, or `kafka:topic/partition@offset`).
    pub name: String,
    /// The document's bytes as received (what the signature is over).
    pub bytes: Vec<u8>,
    /// The signature text as carried (armored, or binary).
    pub signature: Vec<u8>,
    pub ctx: IngestContext,
    pub max_bytes: usize,
    /// The intake span of the document.
    pub span: tracing::Span,
}

/// What the actor does for a detached signature (pure apart from the clock and
/// telemetry): the verification, then the document normalised with its result.
pub fn verify_detached_and_normalise(msg: VerifyDetached, keys: &KeyDirectory) -> VerifiedDocument {
    let VerifyDetached { name, bytes, signature: sig, mut ctx, max_bytes, .. } = msg;
    let (signature, signed_issuer, mut record) = verify_openpgp(&bytes, &sig, keys);
    record.verified_at_ms = crate::ports::now_ms();
    record.source = ctx.provenance.source.clone().or(Some(name.clone()));
    let correlation_id = ctx.provenance.correlation_id.clone();
    let failed = signature.status == SignatureStatus::Failed;
    ctx.signature = signature;
    ctx.signed_issuer = signed_issuer;
    ctx.openpgp_signature = None;
    let outcome = match super::ingest::ingest_document(&name, &bytes, ctx, max_bytes) {
        super::messages::IngestStep::Done(outcome) => outcome,
        // Not reached: the document was read as no envelope before it came here.
        _ => IngestOutcome::DeadLetter {
            reason: super::ingest::INVALID_ENVELOPE,
            detail: format!("{name}: an envelope with a detached signature"),
        },
    };
    settle(record, outcome, keys, SignatureKind::Openpgp, &name, correlation_id.as_deref(), failed)
}

/// The verification of an envelope that does not parse (`failed`/`malformed_envelope`;
/// the document itself is dead-lettered): counted and logged like every failure.
pub fn malformed_envelope(name: &str, bytes: &[u8], ctx: &IngestContext) -> VerificationRecord {
    let record = VerificationRecord {
        envelope_digest: sha256_prefixed(bytes),
        kind: None,
        issuer: ctx.issuer_header.clone(),
        keyid: None,
        result: SignatureStatus::Failed,
        reason: Some(crate::crypto::FailureReason::MalformedEnvelope.into()),
        verified_at_ms: crate::ports::now_ms(),
        source: ctx.provenance.source.clone().or(Some(name.to_string())),
    };
    DsseVerificationFailed {
        kind: SignatureKind::Dsse,
        source: name,
        correlation_id: ctx.provenance.correlation_id.as_deref(),
        issuer: record.issuer.as_deref(),
        keyid: None,
        reason: record.reason.map_or("", |r| r.as_str()),
    }
    .emit();
    record
}

/// To the verifier pool: verify an envelope, then normalise its payload.
#[derive(Debug, Message)]
#[rtype(result = "VerifiedDocument")]
pub struct VerifyEnvelope {
    /// Names the document (path, or `kafka:topic/partition@offset`).
    pub name: String,
    pub envelope: Envelope,
    /// `sha256:<hex>` of the envelope bytes as received.
    pub envelope_digest: String,
    pub ctx: IngestContext,
    /// The intake span of the document (the verification's span hangs under it).
    pub span: tracing::Span,
}

/// The payload's observations (signature applied) and the verification to persist.
#[derive(Debug, actix::MessageResponse)]
pub struct VerifiedDocument {
    pub outcome: IngestOutcome,
    pub record: VerificationRecord,
}

/// A verification worker (run N with `SyncArbiter::start`; actix restarts one that panics).
pub struct DsseVerifierActor {
    keys: Arc<KeyDirectory>,
    threshold: usize,
}

impl DsseVerifierActor {
    pub fn new(keys: Arc<KeyDirectory>, threshold: usize) -> Self {
        DsseVerifierActor { keys, threshold }
    }
}

impl Actor for DsseVerifierActor {
    type Context = SyncContext<Self>;
}

impl Handler<VerifyEnvelope> for DsseVerifierActor {
    type Result = VerifiedDocument;

    fn handle(&mut self, msg: VerifyEnvelope, _: &mut Self::Context) -> VerifiedDocument {
        let span = tracing::info_span!(
            parent: &msg.span,
            "vex.dsse.verify",
            vex.envelope_digest = %msg.envelope_digest,
            vex.tenant = msg.ctx.tenant.as_deref().map(crate::telemetry::trace::bounded),
            vex.issuer = tracing::field::Empty,
            vex.keyid = tracing::field::Empty,
            vex.outcome = tracing::field::Empty,
            vex.reason = tracing::field::Empty,
        );
        let _entered = span.enter();
        let verified = verify_and_normalise(msg, &self.keys, self.threshold);
        record_on_span(&span, &verified.record);
        verified
    }
}

impl Handler<VerifyDetached> for DsseVerifierActor {
    type Result = VerifiedDocument;

    fn handle(&mut self, msg: VerifyDetached, _: &mut Self::Context) -> VerifiedDocument {
        let span = tracing::info_span!(
            parent: &msg.span,
            "vex.openpgp.verify",
            vex.tenant = msg.ctx.tenant.as_deref().map(crate::telemetry::trace::bounded),
            vex.issuer = tracing::field::Empty,
            vex.keyid = tracing::field::Empty,
            vex.outcome = tracing::field::Empty,
            vex.reason = tracing::field::Empty,
        );
        let _entered = span.enter();
        let verified = verify_detached_and_normalise(msg, &self.keys);
        record_on_span(&span, &verified.record);
        verified
    }
}

/// What a verification decided, on its span.
fn record_on_span(span: &tracing::Span, r: &VerificationRecord) {
    span.record("vex.outcome", r.result.as_str());
    if let Some(i) = &r.issuer {
        span.record("vex.issuer", crate::telemetry::trace::bounded(i));
    }
    if let Some(k) = &r.keyid {
        span.record("vex.keyid", crate::telemetry::trace::bounded(k));
    }
    if let Some(reason) = &r.reason {
        span.record("vex.reason", reason.as_str());
    }
}

/// What the actor does (pure apart from the clock and telemetry).
pub fn verify_and_normalise(msg: VerifyEnvelope, keys: &KeyDirectory, threshold: usize) -> VerifiedDocument {
    let VerifyEnvelope { name, envelope, envelope_digest, mut ctx, .. } = msg;
    let claimed = claimed_issuer(&name, &envelope, &ctx, keys);
    let (signature, signed_issuer, mut record) = verify(&envelope, claimed.as_deref(), keys, threshold);
    record.envelope_digest = envelope_digest;
    record.verified_at_ms = crate::ports::now_ms();
    record.source = ctx.provenance.source.clone().or(Some(name.clone()));
    let correlation_id = ctx.provenance.correlation_id.clone();
    let failed = signature.status == SignatureStatus::Failed;
    ctx.signature = signature;
    ctx.signed_issuer = signed_issuer;
    let outcome = {
        let span = super::ingest::normalise_span(&tracing::Span::current(), &ctx, true);
        let _entered = span.enter();
        let outcome = normalise_envelope(&name, &envelope, ctx);
        super::ingest::record_outcome(&span, &outcome);
        outcome
    };
    settle(record, outcome, keys, SignatureKind::Dsse, &name, correlation_id.as_deref(), failed)
}

/// The end of a verification of either kind: a record whose signatures named no issuer
/// (the key is nobody's) gets the issuer the document claims; a failure is counted and
/// logged.
fn settle(
    mut record: VerificationRecord,
    outcome: IngestOutcome,
    keys: &KeyDirectory,
    kind: SignatureKind,
    name: &str,
    correlation_id: Option<&str>,
    failed: bool,
) -> VerifiedDocument {
    if record.issuer.is_none() {
        if let IngestOutcome::Observations { observations, .. } = &outcome {
            record.issuer = observations
                .iter()
                .find_map(|o| o.issuer.as_deref())
                .map(|c| keys.issuer_id(c).unwrap_or(c).to_string());
        }
    }
    if failed {
        DsseVerificationFailed {
            kind,
            source: name,
            correlation_id,
            issuer: record.issuer.as_deref(),
            keyid: record.keyid.as_deref(),
            reason: record.reason.map_or("", |r| r.as_str()),
        }
        .emit();
    }
    VerifiedDocument { outcome, record }
}

/// The claimed issuer: the `issuer` header, else (only needed for keyless signatures)
/// the document's own author as the normaliser reads it.
fn claimed_issuer(name: &str, env: &Envelope, ctx: &IngestContext, keys: &KeyDirectory) -> Option<String> {
    if let Some(h) = ctx.issuer_header.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        return Some(h.to_string());
    }
    if keys.is_empty() || !env.signatures.iter().any(|s| s.keyid.trim().is_empty()) {
        return None;
    }
    let probe = IngestContext { signature: Signature::default(), signed_issuer: None, ..ctx.clone() };
    match normalise_envelope(name, env, probe) {
        IngestOutcome::Observations { observations, .. } => observations
            .into_iter()
            .find(|o| o.issuer_source == IssuerSource::Document)
            .and_then(|o| o.issuer.map(|i| i.to_string())),
        IngestOutcome::DeadLetter { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{generate_keypair, sign_envelope, KeyAlg, SigningKey};
    use crate::domain::trust::{Issuer, Tier};

    fn key(alg: KeyAlg) -> SigningKey {
        SigningKey::from_pem(&generate_keypair(alg).unwrap().0).unwrap()
    }

    fn issuer(id: &str, aliases: &[&str], keys: &[&SigningKey]) -> Issuer {
        Issuer {
            id: id.into(),
            display_name: String::new(),
            tier: Tier::Trusted,
            weight: None,
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            keys: keys.iter().map(|k| IssuerKey::dsse(k.public_key().to_pem())).collect(),
            tenants: Default::default(),
        }
    }

    struct Fixture {
        acme: SigningKey,
        acme2: SigningKey,
        distro: SigningKey,
        stranger: SigningKey,
        keys: KeyDirectory,
    }

    fn fixture() -> Fixture {
        let acme = key(KeyAlg::Ed25519);
        let acme2 = key(KeyAlg::EcdsaP256);
        let distro = key(KeyAlg::EcdsaP256);
        let stranger = key(KeyAlg::Ed25519);
        let dir = IssuerDirectory {
            issuers: vec![
                issuer("acme", &["ACME PSIRT"], &[&acme, &acme2]),
                issuer("distro", &["https://distro.example"], &[&distro]),
                issuer("nokeys", &[], &[]),
            ],
        };
        let keys = KeyDirectory::from_directory(&dir).unwrap();
        Fixture { acme, acme2, distro, stranger, keys }
    }

    const BODY: &[u8] = br#"{"hello":"vex"}"#;

    fn check(sig: &Signature, status: SignatureStatus, reason: Option<&str>) {
        assert_eq!((sig.status, sig.reason.map(|r| r.as_str())), (status, reason), "{sig:?}");
    }

    #[test]
    fn verified_sets_the_signer_as_issuer_whatever_the_document_claims() {
        let f = fixture();
        let env = sign_envelope("application/openvex+json", BODY, &f.distro).unwrap();
        let (sig, signed, rec) = verify(&env, Some("ACME PSIRT"), &f.keys, 1);
        check(&sig, SignatureStatus::Verified, None);
        assert_eq!(sig.keyid.as_deref(), Some(f.distro.keyid()));
        assert_eq!(signed.as_deref(), Some("distro"));
        assert_eq!((rec.result.as_str(), rec.reason.map(|r| r.as_str())), ("verified", None));
        assert_eq!(rec.issuer.as_deref(), Some("distro"));
        assert_eq!(rec.keyid.as_deref(), Some(f.distro.keyid()));
        assert!(rec.envelope_digest.starts_with("sha256:"));
        // The second key of an issuer verifies too; keyids match case-insensitively.
        let mut env = sign_envelope("t", BODY, &f.acme2).unwrap();
        env.signatures[0].keyid = env.signatures[0].keyid.to_uppercase();
        let (sig, signed, _) = verify(&env, None, &f.keys, 1);
        check(&sig, SignatureStatus::Verified, None);
        assert_eq!(signed.as_deref(), Some("acme"));
    }

    #[test]
    fn keyless_signatures_are_tried_against_the_claimed_issuers_keys() {
        let f = fixture();
        let mut env = sign_envelope("t", BODY, &f.acme2).unwrap();
        env.signatures[0].keyid.clear();
        let (sig, signed, _) = verify(&env, Some("acme psirt"), &f.keys, 1);
        check(&sig, SignatureStatus::Verified, None);
        assert_eq!((signed.as_deref(), sig.keyid.as_deref()), (Some("acme"), Some(f.acme2.keyid())));
        // Claimed by an issuer whose keys did not sign it: wrong key.
        let (sig, signed, rec) = verify(&env, Some("https://distro.example"), &f.keys, 1);
        check(&sig, SignatureStatus::Failed, Some("wrong_key"));
        assert_eq!(signed, None);
        assert_eq!(
            (rec.result.as_str(), rec.reason.map(|r| r.as_str()), rec.issuer.as_deref()),
            ("failed", Some("wrong_key"), Some("distro"))
        );
        // No claimed issuer, or one without keys: nothing to try, unsigned/unknown_key.
        check(&verify(&env, None, &f.keys, 1).0, SignatureStatus::Unsigned, Some("unknown_key"));
        check(&verify(&env, Some("nokeys"), &f.keys, 1).0, SignatureStatus::Unsigned, Some("unknown_key"));
    }

    #[test]
    fn tampered_payload_is_a_bad_signature() {
        let f = fixture();
        let mut env = sign_envelope("t", BODY, &f.acme).unwrap();
        env.payload.extend_from_slice(b" ");
        let (sig, signed, rec) = verify(&env, Some("acme"), &f.keys, 1);
        check(&sig, SignatureStatus::Failed, Some("bad_signature"));
        assert_eq!(signed, None);
        assert_eq!((rec.issuer.as_deref(), rec.keyid.as_deref()), (Some("acme"), Some(f.acme.keyid())));
    }

    #[test]
    fn truncated_signature_is_a_bad_signature() {
        let f = fixture();
        for signer in [&f.acme, &f.distro] {
            let mut env = sign_envelope("t", BODY, signer).unwrap();
            let n = env.signatures[0].sig.len();
            env.signatures[0].sig.truncate(n / 2);
            check(&verify(&env, None, &f.keys, 1).0, SignatureStatus::Failed, Some("bad_signature"));
        }
    }

    #[test]
    fn a_key_the_directory_does_not_have_is_unsigned_unknown_key() {
        let f = fixture();
        let env = sign_envelope("t", BODY, &f.stranger).unwrap();
        let (sig, signed, rec) = verify(&env, Some("acme"), &f.keys, 1);
        check(&sig, SignatureStatus::Unsigned, Some("unknown_key"));
        assert_eq!(signed, None);
        assert_eq!(sig.keyid.as_deref(), Some(f.stranger.keyid()));
        assert_eq!((rec.result.as_str(), rec.issuer.as_deref()), ("unsigned", Some("acme")));
    }

    #[test]
    fn no_signatures_is_unsigned_no_signatures() {
        let f = fixture();
        let (sig, signed, rec) = verify(&Envelope::new("t", BODY.to_vec()), Some("acme"), &f.keys, 1);
        check(&sig, SignatureStatus::Unsigned, Some("no_signatures"));
        assert_eq!((signed, sig.keyid), (None, None));
        assert_eq!(rec.result, SignatureStatus::Unsigned);
    }

    #[test]
    fn threshold_counts_distinct_directory_keys() {
        let f = fixture();
        let mut env = sign_envelope("t", BODY, &f.acme).unwrap();
        check(&verify(&env, None, &f.keys, 2).0, SignatureStatus::Failed, Some("threshold_not_met"));
        crate::crypto::add_signature(&mut env, &f.acme2).unwrap();
        check(&verify(&env, None, &f.keys, 2).0, SignatureStatus::Verified, None);
    }

    #[test]
    fn configured_keyids_are_aliases_and_bad_keys_name_the_issuer() {
        let f = fixture();
        let mut dir = IssuerDirectory { issuers: vec![issuer("acme", &[], &[&f.acme])] };
        dir.issuers[0].keys[0] =
            IssuerKey::Dsse { keyid: Some("acme-2024".into()), public_key: f.acme.public_key().to_pem() };
        let keys = KeyDirectory::from_directory(&dir).unwrap();
        let mut env = sign_envelope("t", BODY, &f.acme).unwrap();
        env.signatures[0].keyid = "acme-2024".into();
        let (sig, signed, _) = verify(&env, None, &keys, 1);
        check(&sig, SignatureStatus::Verified, None);
        assert_eq!((signed.as_deref(), sig.keyid.as_deref()), (Some("acme"), Some(f.acme.keyid())));

        dir.issuers.push(issuer("broken", &[], &[]));
        dir.issuers[1].keys.push(IssuerKey::dsse("not a key"));
        let e = KeyDirectory::from_directory(&dir).unwrap_err().to_string();
        assert!(e.contains("issuer broken"), "{e}");
        let dup = IssuerDirectory { issuers: vec![issuer("a", &[], &[&f.acme]), issuer("b", &[], &[&f.acme])] };
        assert!(KeyDirectory::from_directory(&dup).is_err());
    }

    #[test]
    fn openpgp_certificates_join_the_directory() {
        let cert = include_str!("../../tests/fixtures/openpgp/gpg-cert.asc");
        let mut dir = IssuerDirectory { issuers: vec![issuer("csaf", &[], &[])] };
        dir.issuers[0].keys.push(IssuerKey::OpenPgp { certificate: cert.into(), fingerprint: None });
        let keys = KeyDirectory::from_directory(&dir).unwrap();
        assert_eq!(keys.openpgp().len(), 1);
        // The signing subkey is the issuer's too.
        assert_eq!(keys.openpgp().issuer_of("1CF50DC0DA1FF33563EAA5130B1B63D36A182FDE"), Some("csaf"));
        // A wrong configured fingerprint names issuer and key.
        dir.issuers[0].keys[0] = IssuerKey::OpenPgp { certificate: cert.into(), fingerprint: Some("AB".into()) };
        let e = KeyDirectory::from_directory(&dir).unwrap_err().to_string();
        assert!(e.contains("issuer csaf") && e.contains("#0 (openpgp AB)"), "{e}");
        // One certificate for two issuers.
        let openpgp = IssuerKey::OpenPgp { certificate: cert.into(), fingerprint: None };
        let mut dup = IssuerDirectory { issuers: vec![issuer("a", &[], &[]), issuer("b", &[], &[])] };
        dup.issuers[0].keys.push(openpgp.clone());
        dup.issuers[1].keys.push(openpgp);
        let e = KeyDirectory::from_directory(&dup).unwrap_err().to_string();
        assert!(e.contains("used by issuer a and issuer b"), "{e}");
    }

    #[test]
    fn detached_openpgp_signatures_are_judged_then_the_document_normalised() {
        let cert = include_str!("../../tests/fixtures/openpgp/gpg-cert.asc");
        let doc: &[u8] = include_bytes!("../../tests/fixtures/openpgp/csaf-signed.json");
        let asc: &[u8] = include_bytes!("../../tests/fixtures/openpgp/csaf-signed.json.asc");
        let mut dir = IssuerDirectory { issuers: vec![issuer("csaf", &["https://psirt.example.com"], &[])] };
        dir.issuers[0].keys.push(IssuerKey::OpenPgp { certificate: cert.into(), fingerprint: None });
        let keys = KeyDirectory::from_directory(&dir).unwrap();
        let run = |bytes: &[u8], sig: &[u8]| {
            verify_detached_and_normalise(
                VerifyDetached {
                    name: "doc".into(),
                    bytes: bytes.to_vec(),
                    signature: sig.to_vec(),
                    ctx: IngestContext { tenant: Some("t".into()), ..Default::default() },
                    max_bytes: 1 << 24,
                    span: tracing::Span::none(),
                },
                &keys,
            )
        };
        let VerifiedDocument { outcome: IngestOutcome::Observations { observations, .. }, record } = run(doc, asc)
        else {
            panic!("expected observations")
        };
        assert!(!observations.is_empty());
        for o in &observations {
            assert_eq!((o.issuer.as_deref(), o.issuer_source), (Some("csaf"), IssuerSource::Signature));
            assert_eq!(
                o.signature,
                Signature {
                    kind: Some(SignatureKind::Openpgp),
                    status: SignatureStatus::Verified,
                    reason: None,
                    keyid: Some("1CF50DC0DA1FF33563EAA5130B1B63D36A182FDE".into()),
                }
            );
        }
        assert_eq!(
            (record.kind, record.result, record.issuer.as_deref()),
            (Some(SignatureKind::Openpgp), SignatureStatus::Verified, Some("csaf"))
        );
        assert_eq!(record.envelope_digest, openpgp_record_id(doc, asc));
        assert!(record.verified_at_ms > 0);
        // Over other bytes: failed, the document's own claim stays its issuer, not dead-lettered.
        let other = DOC.as_bytes();
        let VerifiedDocument { outcome: IngestOutcome::Observations { observations, .. }, record } = run(other, asc)
        else {
            panic!("expected observations")
        };
        assert_eq!(observations[0].signature.status, SignatureStatus::Failed);
        assert_eq!(observations[0].signature.reason.map(|r| r.as_str()), Some("bad_signature"));
        assert_eq!(observations[0].issuer.as_deref(), Some("ACME PSIRT"));
        assert_eq!(record.issuer.as_deref(), Some("csaf"), "the key's owner");
        // Unreadable: failed/malformed_signature, still normalised.
        let VerifiedDocument { outcome: IngestOutcome::Observations { observations, .. }, .. } = run(doc, b"garbage")
        else {
            panic!("a signature never dead-letters its document")
        };
        assert_eq!(observations[0].signature.reason.map(|r| r.as_str()), Some("malformed_signature"));
        // Not JSON: dead-lettered for the document, as without a signature.
        assert!(matches!(run(b"not json", asc).outcome, IngestOutcome::DeadLetter { .. }));

        // The ingest step hands a signed document to the verifier; beside a DSSE envelope
        // the detached signature is dropped (the envelope's signatures decide).
        let ctx = IngestContext { openpgp_signature: Some(asc.to_vec()), ..Default::default() };
        assert!(matches!(
            super::super::ingest::ingest_document("doc", doc, ctx.clone(), 1 << 24),
            super::super::messages::IngestStep::Detached(_)
        ));
        let env = crate::crypto::Envelope::new("application/openvex+json", DOC.as_bytes().to_vec()).to_json();
        match super::super::ingest::ingest_document("env", env.as_bytes(), ctx, 1 << 24) {
            super::super::messages::IngestStep::Envelope(v) => assert_eq!(v.ctx.openpgp_signature, None),
            other => panic!("{other:?}"),
        }
    }

    const DOC: &str = r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example.com/vex/1","author":"ACME PSIRT","timestamp":"2024-01-01T00:00:00Z","version":1,"statements":[{"vulnerability":{"name":"CVE-2024-1"},"products":[{"@id":"pkg:npm/a@1.0.0"}],"status":"affected","action_statement":"upgrade"}]}"#;

    fn run(env: &Envelope, keys: &KeyDirectory) -> VerifiedDocument {
        let msg = VerifyEnvelope {
            name: "doc".into(),
            envelope: env.clone(),
            envelope_digest: sha256_prefixed(env.to_json().as_bytes()),
            ctx: IngestContext { tenant: Some("t".into()), ..Default::default() },
            span: tracing::Span::none(),
        };
        verify_and_normalise(msg, keys, 1)
    }

    #[test]
    fn the_actor_step_applies_the_signature_to_the_observations() {
        let f = fixture();
        // Signed by distro, authored "ACME PSIRT": the observations are distro's, verified.
        let env = sign_envelope("application/openvex+json", DOC.as_bytes(), &f.distro).unwrap();
        let VerifiedDocument { outcome: IngestOutcome::Observations { observations, enveloped, .. }, record } =
            run(&env, &f.keys)
        else {
            panic!("expected observations")
        };
        assert!(enveloped);
        assert_eq!(observations.len(), 1);
        assert_eq!(observations[0].issuer.as_deref(), Some("distro"));
        assert_eq!(observations[0].issuer_source, IssuerSource::Signature);
        assert_eq!(observations[0].signature.status, SignatureStatus::Verified);
        assert_eq!(record.result, SignatureStatus::Verified);
        assert!(record.verified_at_ms > 0);
        assert_eq!(record.source.as_deref(), Some("doc"));

        // Keyless, by acme's key: the author claim picks acme's keys.
        let mut env = sign_envelope("application/openvex+json", DOC.as_bytes(), &f.acme).unwrap();
        env.signatures[0].keyid.clear();
        let VerifiedDocument { outcome: IngestOutcome::Observations { observations, .. }, .. } = run(&env, &f.keys)
        else {
            panic!("expected observations")
        };
        assert_eq!(observations[0].issuer.as_deref(), Some("acme"));
        assert_eq!(observations[0].signature.status, SignatureStatus::Verified);

        // Tampered: failed, the claimed author stays the issuer.
        let mut env = sign_envelope("application/openvex+json", DOC.as_bytes(), &f.acme).unwrap();
        env.payload = DOC.replace("affected", "fixed").into_bytes();
        let VerifiedDocument { outcome: IngestOutcome::Observations { observations, .. }, record } = run(&env, &f.keys)
        else {
            panic!("expected observations")
        };
        assert_eq!(observations[0].signature.status, SignatureStatus::Failed);
        assert_eq!(observations[0].signature.reason.map(|r| r.as_str()), Some("bad_signature"));
        assert_eq!(observations[0].issuer.as_deref(), Some("ACME PSIRT"));
        assert_eq!(record.reason.map(|r| r.as_str()), Some("bad_signature"));
    }
}
