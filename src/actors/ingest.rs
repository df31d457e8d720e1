//! Ingest workers: a pool of sync actors (one thread each) that turn document bytes into
//! observations with the pure normalisers; DSSE envelopes are parsed here and handed to
//! the verifier pool (`verifier`), which verifies them and normalises their payload.
//!
//! Invariants: never panics on any input; every failure becomes a dead-letter outcome
//! with a stable reason code (`NormaliseError::code`, or `invalid_envelope`); no I/O.
//! The actor runs each document inside a `vex.normalise` span under the document's span.

use super::messages::{IngestOutcome, IngestStep, NormaliseDocument};
use super::verifier::{malformed_envelope, VerifyDetached, VerifyEnvelope};
use crate::crypto::{vex_payload, Envelope, VexPayload};
use crate::domain::canonical::sha256_prefixed;
use crate::domain::codes::DeadLetterReason;
use crate::domain::model::{IngestContext, SourceFormat};
use crate::domain::normalise::{normalise_value, NormaliseError};
use crate::telemetry::events::OpenPgpSignatureIgnored;
use actix::{Actor, Handler, SyncContext};
use serde_json::Value;

/// Reason code of an envelope whose payload cannot be read.
pub const INVALID_ENVELOPE: DeadLetterReason = DeadLetterReason::InvalidEnvelope;

/// Normalisation worker (run N of them with `SyncArbiter::start`).
#[derive(Default)]
pub struct IngestActor;

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
            }
            IngestStep::Detached(v) => {
                span.record("vex.outcome", "openpgp_signed");
                v.span = msg.span.clone();
            }
        }
        step
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
