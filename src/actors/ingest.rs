//! Ingest workers: a pool of sync actors (one thread each) that turn document bytes into
//! observations with the pure normalisers. The flow of a document lives here and in the
//! pipeline that drives it: bytes -> ([`IngestStep`]) -> for a signed document, the
//! verifier pool's judgement (`verifier`, which only verifies) -> normalised here with the
//! verification's result ([`Verified`]) -> observations to publish.
//!
//! Invariants: never panics on any input; every failure becomes a dead-letter outcome
//! with a stable reason code (`NormaliseError::code`, or `invalid_envelope`); no I/O.
//! The actor runs each document inside a `vex.normalise` span under the document's span
//! (an envelope's payload under its verification's span).

use super::messages::{
    IngestOutcome, IngestStep, NormaliseDocument, SignedDocument, Verified, VerifiedDocument, VerifyDetached,
    VerifyEnvelope,
};
use super::verifier::malformed_envelope;
use crate::crypto::KeyDirectory;
use crate::crypto::{vex_payload, Envelope, VexPayload};
use crate::domain::canonical::sha256_prefixed;
use crate::domain::codes::{DeadLetterReason, SignatureKind};
use crate::domain::model::{IngestContext, IssuerSource, Signature, SignatureStatus, SourceFormat};
use crate::domain::normalise::{normalise_value, NormaliseError};
use crate::ports::VerificationRecord;
use crate::telemetry::events::{DsseVerificationFailed, OpenPgpSignatureIgnored};
use actix::{Actor, Handler, SyncContext};
use serde_json::Value;
use std::sync::Arc;

/// Reason code of an envelope whose payload cannot be read.
pub const INVALID_ENVELOPE: DeadLetterReason = DeadLetterReason::InvalidEnvelope;

/// Normalisation worker (run N of them with `SyncArbiter::start`). It holds the issuer
/// directory's keys to name whose keys a keyless signature is tried against, and to put
/// the directory's issuer id on a verification no key named.
#[derive(Default)]
pub struct IngestActor {
    keys: Arc<KeyDirectory>,
}

impl IngestActor {
    pub fn new(keys: Arc<KeyDirectory>) -> Self {
        IngestActor { keys }
    }
}

impl Actor for IngestActor {
    type Context = SyncContext<Self>;
}

impl Handler<NormaliseDocument> for IngestActor {
    type Result = IngestStep;

    fn handle(&mut self, msg: NormaliseDocument, _: &mut Self::Context) -> IngestStep {
        let span = normalise_span(&msg.span, &msg.ctx, false);
        if !span.is_disabled() {
            span.record("vex.document_digest", sha256_prefixed(&msg.bytes).as_str());
            span.record("vex.bytes", msg.bytes.len());
        }
        let _entered = span.enter();
        let mut step = ingest_document(&msg.name, &msg.bytes, msg.ctx, msg.max_bytes);
        match &mut step {
            IngestStep::Done(outcome) | IngestStep::Malformed { outcome, .. } => record_outcome(&span, outcome),
            IngestStep::Envelope(v) => {
                span.record("vex.outcome", "envelope");
                v.span = msg.span.clone();
                v.claimed_issuer = claimed_issuer(v, &self.keys);
            }
            IngestStep::Detached(v) => {
                span.record("vex.outcome", "openpgp_signed");
                v.span = msg.span.clone();
            }
        }
        step
    }
}

impl Handler<Verified> for IngestActor {
    type Result = VerifiedDocument;

    fn handle(&mut self, msg: Verified, _: &mut Self::Context) -> VerifiedDocument {
        normalise_verified(msg, &self.keys)
    }
}

/// Normalises a document the verifier has judged, with the verification's signature and
/// signed issuer (pure apart from telemetry): an envelope's payload inside a
/// `vex.normalise` span under the verification's span; then [`settle`].
pub fn normalise_verified(msg: Verified, keys: &KeyDirectory) -> VerifiedDocument {
    let Verified { name, document, ctx, record, span } = msg;
    let _verification = span.enter();
    let kind = ctx.signature.kind.unwrap_or(SignatureKind::Dsse);
    let failed = ctx.signature.status == SignatureStatus::Failed;
    let correlation_id = ctx.provenance.correlation_id.clone();
    let outcome = match document {
        SignedDocument::Envelope(envelope) => {
            let span = normalise_span(&span, &ctx, true);
            let _entered = span.enter();
            let outcome = normalise_envelope(&name, &envelope, ctx);
            record_outcome(&span, &outcome);
            outcome
        }
        SignedDocument::Detached { bytes, max_bytes } => match ingest_document(&name, &bytes, ctx, max_bytes) {
            IngestStep::Done(outcome) => outcome,
            // Not reached: the document was read as no envelope before it was verified.
            _ => IngestOutcome::DeadLetter {
                reason: INVALID_ENVELOPE,
                detail: format!("{name}: an envelope with a detached signature"),
            },
        },
    };
    settle(record, outcome, keys, kind, &name, correlation_id.as_deref(), failed)
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

/// Whose keys a keyless signature of `v` is tried against: the `issuer` header, else
/// (only when a signature is keyless and the directory has keys) the payload's own author
/// as the normaliser reads it.
pub fn claimed_issuer(v: &VerifyEnvelope, keys: &KeyDirectory) -> Option<String> {
    if let Some(h) = v.ctx.issuer_header.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        return Some(h.to_string());
    }
    if keys.is_empty() || !v.envelope.signatures.iter().any(|s| s.keyid.trim().is_empty()) {
        return None;
    }
    let probe = IngestContext { signature: Signature::default(), signed_issuer: None, ..v.ctx.clone() };
    match normalise_envelope(&v.name, &v.envelope, probe) {
        IngestOutcome::Observations { observations, .. } => observations
            .into_iter()
            .find(|o| o.issuer_source == IssuerSource::Document)
            .and_then(|o| o.issuer.map(|i| i.to_string())),
        IngestOutcome::DeadLetter { .. } => None,
    }
}

/// The `vex.normalise` span of a document, under `parent`.
pub fn normalise_span(parent: &tracing::Span, ctx: &IngestContext, enveloped: bool) -> tracing::Span {
    tracing::info_span!(
        parent: parent,
        "vex.normalise",
        vex.tenant = ctx.tenant.as_deref().map(crate::telemetry::trace::bounded),
        vex.enveloped = enveloped,
        vex.bytes = tracing::field::Empty,
        vex.document_digest = tracing::field::Empty,
        vex.format = tracing::field::Empty,
        vex.issuer = tracing::field::Empty,
        vex.observations = tracing::field::Empty,
        vex.outcome = tracing::field::Empty,
        vex.reason = tracing::field::Empty,
    )
}

/// Records what became of a document on its `vex.normalise` span.
pub fn record_outcome(span: &tracing::Span, outcome: &IngestOutcome) {
    if span.is_disabled() {
        return;
    }
    match outcome {
        IngestOutcome::Observations { observations, format, .. } => {
            span.record("vex.outcome", "normalised");
            span.record("vex.format", *format);
            span.record("vex.observations", observations.len());
            if let Some(o) = observations.first() {
                span.record("vex.document_digest", &*o.document_digest);
                if let Some(i) = &o.issuer {
                    span.record("vex.issuer", crate::telemetry::trace::bounded(i));
                }
            }
        }
        IngestOutcome::DeadLetter { reason, .. } => {
            span.record("vex.outcome", "dead_lettered");
            span.record("vex.reason", reason.as_str());
        }
    }
}

fn format_name(f: SourceFormat) -> &'static str {
    match f {
        SourceFormat::Openvex => "openvex",
        SourceFormat::Csaf => "csaf",
        SourceFormat::Cyclonedx => "cyclonedx",
    }
}

fn dead(e: NormaliseError) -> IngestOutcome {
    IngestOutcome::DeadLetter { reason: e.code(), detail: e.to_string() }
}

/// The pure ingest step: bytes (a VEX document or a DSSE envelope around one) to
/// observations or a dead-letter reason; an envelope is handed on for verification
/// ([`IngestStep::Envelope`], see `verifier`), and so is a document the context carries a
/// detached OpenPGP signature for ([`IngestStep::Detached`]; beside an envelope the
/// detached signature is ignored, with a warn line).
pub fn ingest_document(name: &str, bytes: &[u8], mut ctx: IngestContext, max_bytes: usize) -> IngestStep {
    let detached = ctx.openpgp_signature.take();
    if bytes.len() > max_bytes {
        return IngestStep::Done(dead(NormaliseError::TooLarge {
            document: name.to_string(),
            size: bytes.len(),
            limit: max_bytes,
        }));
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return IngestStep::Done(dead(NormaliseError::NotJson {
                document: name.to_string(),
                reason: e.to_string(),
            }))
        }
    };
    if Envelope::looks_like_envelope(&value) {
        if detached.is_some() {
            // The envelope's own signatures decide; a detached one beside it is ignored.
            OpenPgpSignatureIgnored { source: name, correlation_id: ctx.provenance.correlation_id.as_deref() }.emit();
        }
        return match Envelope::from_value(&value) {
            Ok(envelope) => IngestStep::Envelope(VerifyEnvelope {
                name: name.to_string(),
                envelope,
                envelope_digest: sha256_prefixed(bytes),
                claimed_issuer: None,
                ctx,
                span: tracing::Span::none(),
            }),
            Err(e) => IngestStep::Malformed {
                record: malformed_envelope(name, bytes, &ctx),
                outcome: IngestOutcome::DeadLetter { reason: INVALID_ENVELOPE, detail: format!("{name}: {e}") },
            },
        };
    }
    if let Some(signature) = detached {
        return IngestStep::Detached(VerifyDetached {
            name: name.to_string(),
            bytes: bytes.to_vec(),
            signature,
            ctx,
            max_bytes,
            span: tracing::Span::none(),
        });
    }
    IngestStep::Done(normalise(name, &value, &sha256_prefixed(bytes), &ctx, false))
}

/// Normalises the VEX document inside a (verified) envelope; `ctx` carries the
/// verification's signature and signed issuer. The document digest is the payload's.
pub fn normalise_envelope(name: &str, env: &Envelope, ctx: IngestContext) -> IngestOutcome {
    let digest = sha256_prefixed(&env.payload);
    let value = match vex_payload(env) {
        Ok(VexPayload::Bare { document, .. }) => match serde_json::from_slice::<Value>(&document) {
            Ok(v) => v,
            Err(e) => {
                return dead(NormaliseError::NotJson {
                    document: format!("{name} (envelope payload)"),
                    reason: e.to_string(),
                })
            }
        },
        Ok(VexPayload::InToto { document, .. }) => document,
        Err(e) => return IngestOutcome::DeadLetter { reason: INVALID_ENVELOPE, detail: format!("{name}: {e}") },
    };
    normalise(name, &value, &digest, &ctx, true)
}

fn normalise(name: &str, value: &Value, digest: &str, ctx: &IngestContext, enveloped: bool) -> IngestOutcome {
    match normalise_value(name, value, digest, ctx) {
        Ok(doc) => IngestOutcome::Observations {
            format: format_name(doc.format),
            diagnostics: doc.diagnostics.iter().map(|d| d.code).collect(),
            observations: doc.observations,
            enveloped,
        },
        Err(e) => dead(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::SignatureStatus;
    use crate::domain::normalise::normalise_bytes;

    const DOC: &str = r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example.com/vex/1","author":"Acme","timestamp":"2024-01-01T00:00:00Z","version":1,"statements":[{"vulnerability":{"name":"CVE-2024-1"},"products":[{"@id":"pkg:npm/a@1.0.0"}],"status":"affected","action_statement":"upgrade"}]}"#;

    fn ctx() -> IngestContext {
        IngestContext { tenant: Some("t".into()), ..Default::default() }
    }

    #[test]
    fn plain_document_equals_the_cli_normalisation() {
        let IngestStep::Done(IngestOutcome::Observations { observations, format, enveloped, .. }) =
            ingest_document("d", DOC.as_bytes(), ctx(), 1 << 20)
        else {
            panic!("expected observations")
        };
        assert_eq!(format, "openvex");
        assert!(!enveloped);
        let reference = normalise_bytes("d", DOC.as_bytes(), &ctx(), 1 << 20).unwrap();
        assert_eq!(observations, reference.observations);
    }

    #[test]
    fn envelope_is_handed_to_the_verifier_and_its_payload_normalised() {
        let env = Envelope::new("application/openvex+json", DOC.as_bytes().to_vec());
        let bytes = env.to_json();
        let IngestStep::Envelope(v) = ingest_document("e", bytes.as_bytes(), ctx(), 1 << 20) else {
            panic!("expected an envelope to verify")
        };
        assert_eq!((v.name.as_str(), &v.envelope), ("e", &env));
        assert_eq!(v.envelope_digest, sha256_prefixed(bytes.as_bytes()));
        let IngestOutcome::Observations { observations, enveloped, .. } = normalise_envelope("e", &env, v.ctx) else {
            panic!("expected observations")
        };
        assert!(enveloped);
        assert_eq!(observations.len(), 1);
        assert_eq!(observations[0].signature.status, SignatureStatus::Unsigned);
        assert_eq!(*observations[0].document_digest, sha256_prefixed(DOC.as_bytes()));
    }

    #[test]
    fn bad_inputs_dead_letter_with_reason_codes() {
        let code = |b: &[u8], max: usize| match ingest_document("x", b, ctx(), max) {
            IngestStep::Done(IngestOutcome::DeadLetter { reason, .. }) => reason,
            other => panic!("expected dead letter, got {other:?}"),
        };
        assert_eq!(code(b"\x00\xff garbage", 1 << 20), DeadLetterReason::InvalidJson);
        assert_eq!(code(br#"{"hello":"world"}"#, 1 << 20), DeadLetterReason::NotVex);
        assert_eq!(code(DOC.as_bytes(), 10), DeadLetterReason::TooLarge);
        let bad_envelope = br#"{"payload":"!!","payloadType":"x","signatures":[]}"#;
        let IngestStep::Malformed { outcome: IngestOutcome::DeadLetter { reason, .. }, record } =
            ingest_document("x", bad_envelope, ctx(), 1 << 20)
        else {
            panic!("expected a malformed envelope")
        };
        assert_eq!(reason, INVALID_ENVELOPE);
        assert_eq!((record.result.as_str(), record.reason.map(|r| r.as_str())), ("failed", Some("malformed_envelope")));
        assert_eq!(record.envelope_digest, sha256_prefixed(bad_envelope));
    }
}
