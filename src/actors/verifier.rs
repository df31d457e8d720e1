//! Signature verification of incoming documents (DSSE envelopes, detached OpenPGP
//! signatures) against the issuer directory's keys, and the pool of sync actors that runs
//! it off the async runtime. The verifier only verifies: it answers with the document, its
//! context carrying the result, and the record to persist ([`Verified`]); the ingest
//! workers normalise the document (`ingest::normalise_verified`).
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
//! Invariants: [`verify`] and [`verify_openpgp`] are pure; the keys come parsed
//! (`crypto::KeyDirectory`). [`VerifierActor`] runs as a
//! `SyncArbiter` pool; actix restarts a sync actor whose handler panics (the message in
//! flight is lost: its sender gets a mailbox error, so the source never acknowledges the
//! document and it is processed again).

use super::messages::{SignedDocument, Verified, VerifyDetached, VerifyEnvelope};
use crate::crypto::openpgp::{verify_detached, OpenPgpVerdict};
use crate::crypto::{verify_envelope, Envelope, KeyDirectory, PublicKey};
use crate::domain::canonical::sha256_prefixed;
use crate::domain::codes::SignatureKind;
use crate::domain::model::{IngestContext, Signature, SignatureStatus};
use crate::ports::VerificationRecord;
use crate::telemetry::events::DsseVerificationFailed;
use actix::{Actor, Handler, SyncContext};
use std::sync::Arc;

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

/// What the actor does for a detached signature (pure apart from the clock): the
/// verification, with its result on the document's context.
pub fn verify_detached_document(msg: VerifyDetached, keys: &KeyDirectory) -> Verified {
    let VerifyDetached { name, bytes, signature: sig, mut ctx, max_bytes, .. } = msg;
    let (signature, signed_issuer, mut record) = verify_openpgp(&bytes, &sig, keys);
    record.verified_at_ms = crate::ports::now_ms();
    record.source = ctx.provenance.source.clone().or(Some(name.clone()));
    ctx.signature = signature;
    ctx.signed_issuer = signed_issuer;
    ctx.openpgp_signature = None;
    Verified {
        name,
        document: SignedDocument::Detached { bytes, max_bytes },
        ctx,
        record,
        span: tracing::Span::current(),
    }
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

/// A verification worker (run N with `SyncArbiter::start`; actix restarts one that panics).
pub struct VerifierActor {
    keys: Arc<KeyDirectory>,
    threshold: usize,
}

impl VerifierActor {
    pub fn new(keys: Arc<KeyDirectory>, threshold: usize) -> Self {
        VerifierActor { keys, threshold }
    }
}

impl Actor for VerifierActor {
    type Context = SyncContext<Self>;
}

impl Handler<VerifyEnvelope> for VerifierActor {
    type Result = Verified;

    fn handle(&mut self, msg: VerifyEnvelope, _: &mut Self::Context) -> Verified {
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
        let verified = verify_envelope_document(msg, &self.keys, self.threshold);
        record_on_span(&span, &verified.record);
        verified
    }
}

impl Handler<VerifyDetached> for VerifierActor {
    type Result = Verified;

    fn handle(&mut self, msg: VerifyDetached, _: &mut Self::Context) -> Verified {
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
        let verified = verify_detached_document(msg, &self.keys);
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

/// What the actor does for an envelope (pure apart from the clock): the verification,
/// with its result on the document's context.
pub fn verify_envelope_document(msg: VerifyEnvelope, keys: &KeyDirectory, threshold: usize) -> Verified {
    let VerifyEnvelope { name, envelope, envelope_digest, claimed_issuer, mut ctx, .. } = msg;
    let (signature, signed_issuer, mut record) = verify(&envelope, claimed_issuer.as_deref(), keys, threshold);
    record.envelope_digest = envelope_digest;
    record.verified_at_ms = crate::ports::now_ms();
    record.source = ctx.provenance.source.clone().or(Some(name.clone()));
    ctx.signature = signature;
    ctx.signed_issuer = signed_issuer;
    Verified { name, document: SignedDocument::Envelope(envelope), ctx, record, span: tracing::Span::current() }
}

#[cfg(test)]
mod tests {
    use super::super::ingest;
    use super::super::messages::{IngestOutcome, VerifiedDocument};
    use super::*;
    use crate::crypto::{generate_keypair, sign_envelope, KeyAlg, SigningKey};
    use crate::domain::model::IssuerSource;
    use crate::domain::trust::{Issuer, IssuerDirectory, IssuerKey, Tier};

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
    fn detached_openpgp_signatures_are_judged_then_the_document_normalised() {
        let cert = include_str!("../../tests/fixtures/openpgp/gpg-cert.asc");
        let doc: &[u8] = include_bytes!("../../tests/fixtures/openpgp/csaf-signed.json");
        let asc: &[u8] = include_bytes!("../../tests/fixtures/openpgp/csaf-signed.json.asc");
        let mut dir = IssuerDirectory { issuers: vec![issuer("csaf", &["https://psirt.example.com"], &[])] };
        dir.issuers[0].keys.push(IssuerKey::OpenPgp { certificate: cert.into(), fingerprint: None });
        let keys = KeyDirectory::from_directory(&dir).unwrap();
        let run = |bytes: &[u8], sig: &[u8]| {
            let verified = verify_detached_document(
                VerifyDetached {
                    name: "doc".into(),
                    bytes: bytes.to_vec(),
                    signature: sig.to_vec(),
                    ctx: IngestContext { tenant: Some("t".into()), ..Default::default() },
                    max_bytes: 1 << 24,
                    span: tracing::Span::none(),
                },
                &keys,
            );
            ingest::normalise_verified(verified, &keys)
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
            ingest::ingest_document("doc", doc, ctx.clone(), 1 << 24),
            super::super::messages::IngestStep::Detached(_)
        ));
        let env = crate::crypto::Envelope::new("application/openvex+json", DOC.as_bytes().to_vec()).to_json();
        match ingest::ingest_document("env", env.as_bytes(), ctx, 1 << 24) {
            super::super::messages::IngestStep::Envelope(v) => assert_eq!(v.ctx.openpgp_signature, None),
            other => panic!("{other:?}"),
        }
    }

    const DOC: &str = r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example.com/vex/1","author":"ACME PSIRT","timestamp":"2024-01-01T00:00:00Z","version":1,"statements":[{"vulnerability":{"name":"CVE-2024-1"},"products":[{"@id":"pkg:npm/a@1.0.0"}],"status":"affected","action_statement":"upgrade"}]}"#;

    /// The flow of an envelope the ingest workers hand on: claimed issuer, verification,
    /// normalisation.
    fn run(env: &Envelope, keys: &KeyDirectory) -> VerifiedDocument {
        let mut msg = VerifyEnvelope {
            name: "doc".into(),
            envelope: env.clone(),
            envelope_digest: sha256_prefixed(env.to_json().as_bytes()),
            claimed_issuer: None,
            ctx: IngestContext { tenant: Some("t".into()), ..Default::default() },
            span: tracing::Span::none(),
        };
        msg.claimed_issuer = ingest::claimed_issuer(&msg, keys);
        ingest::normalise_verified(verify_envelope_document(msg, keys, 1), keys)
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
