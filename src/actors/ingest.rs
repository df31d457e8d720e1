//! Ingest workers: a pool of sync actors (one thread each) that turn document bytes into
//! observations with the pure normalisers, unwrapping DSSE envelopes on the way.
//!
//! Invariants: never panics on any input; every failure becomes a dead-letter outcome
//! with a stable reason code (`NormaliseError::code`, or `invalid_envelope`); no I/O.

use super::messages::{IngestOutcome, NormaliseDocument};
use crate::crypto::{vex_payload, Envelope, VexPayload};
use crate::domain::canonical::sha256_prefixed;
use crate::domain::model::{IngestContext, Signature, SignatureStatus, SourceFormat};
use crate::domain::normalise::{normalise_value, NormaliseError};
use actix::{Actor, Handler, SyncContext};
use serde_json::Value;

/// Reason code of an envelope whose payload cannot be read.
pub const INVALID_ENVELOPE: &str = "invalid_envelope";

/// Normalisation worker (run N of them with `SyncArbiter::start`).
#[derive(Default)]
pub struct IngestActor;

impl Actor for IngestActor {
    type Context = SyncContext<Self>;
}

impl Handler<NormaliseDocument> for IngestActor {
    type Result = IngestOutcome;

    fn handle(&mut self, msg: NormaliseDocument, _: &mut Self::Context) -> IngestOutcome {
        ingest_document(&msg.name, &msg.bytes, msg.ctx, msg.max_bytes)
    }
}

/// DSSE hook: decides the signature status of an envelope's statements. Until the DSSE
/// verifier lands every envelope counts as unsigned (CONSENSUS.md: `unsigned`, with the
/// unsigned penalty). The verifier replaces this body: verify against the issuer
/// directory's keys and set `ctx.signature` / `ctx.signed_issuer`.
pub fn verify_envelope_hook(_envelope: &Envelope, ctx: &mut IngestContext) {
    ctx.signature = Signature { status: SignatureStatus::Unsigned, reason: None, keyid: None };
    ctx.signed_issuer = None;
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
/// observations, or a dead-letter reason.
pub fn ingest_document(name: &str, bytes: &[u8], mut ctx: IngestContext, max_bytes: usize) -> IngestOutcome {
    if bytes.len() > max_bytes {
        return dead(NormaliseError::TooLarge { document: name.to_string(), size: bytes.len(), limit: max_bytes });
    }
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => return dead(NormaliseError::NotJson { document: name.to_string(), reason: e.to_string() }),
    };
    let (value, digest, enveloped) = if Envelope::looks_like_envelope(&value) {
        let env = match Envelope::from_value(&value) {
            Ok(e) => e,
            Err(e) => return IngestOutcome::DeadLetter { reason: INVALID_ENVELOPE, detail: format!("{name}: {e}") },
        };
        verify_envelope_hook(&env, &mut ctx);
        let digest = sha256_prefixed(&env.payload);
        match vex_payload(&env) {
            Ok(VexPayload::Bare { document, .. }) => match serde_json::from_slice::<Value>(&document) {
                Ok(v) => (v, digest, true),
                Err(e) => {
                    return dead(NormaliseError::NotJson {
                        document: format!("{name} (envelope payload)"),
                        reason: e.to_string(),
                    })
                }
            },
            Ok(VexPayload::InToto { document, .. }) => (document, digest, true),
            Err(e) => return IngestOutcome::DeadLetter { reason: INVALID_ENVELOPE, detail: format!("{name}: {e}") },
        }
    } else {
        let digest = sha256_prefixed(bytes);
        (value, digest, false)
    };
    match normalise_value(name, &value, &digest, &ctx) {
        Ok(doc) => IngestOutcome::Observations {
            format: format_name(doc.format),
            diagnostics: doc.diagnostics.len(),
            observations: doc.observations,
            enveloped,
        },
        Err(e) => dead(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::normalise::normalise_bytes;

    const DOC: &str = r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example.com/vex/1","author":"Acme","timestamp":"2024-01-01T00:00:00Z","version":1,"statements":[{"vulnerability":{"name":"CVE-2024-1"},"products":[{"@id":"pkg:npm/a@1.0.0"}],"status":"affected","action_statement":"upgrade"}]}"#;

    fn ctx() -> IngestContext {
        IngestContext { tenant: Some("t".into()), ..Default::default() }
    }

    #[test]
    fn plain_document_equals_the_cli_normalisation() {
        let IngestOutcome::Observations { observations, format, enveloped, .. } =
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
    fn envelope_is_unwrapped_and_counts_as_unsigned() {
        let env = Envelope::new("application/openvex+json", DOC.as_bytes().to_vec());
        let IngestOutcome::Observations { observations, enveloped, .. } =
            ingest_document("e", env.to_json().as_bytes(), ctx(), 1 << 20)
        else {
            panic!("expected observations")
        };
        assert!(enveloped);
        assert_eq!(observations.len(), 1);
        assert_eq!(observations[0].signature.status, SignatureStatus::Unsigned);
        assert_eq!(observations[0].document_digest, sha256_prefixed(DOC.as_bytes()));
    }

    #[test]
    fn bad_inputs_dead_letter_with_reason_codes() {
        let code = |b: &[u8], max: usize| match ingest_document("x", b, ctx(), max) {
            IngestOutcome::DeadLetter { reason, .. } => reason,
            other => panic!("expected dead letter, got {other:?}"),
        };
        assert_eq!(code(b"\x00\xff garbage", 1 << 20), "invalid_json");
        assert_eq!(code(br#"{"hello":"world"}"#, 1 << 20), "not_vex");
        assert_eq!(code(DOC.as_bytes(), 10), "too_large");
        assert_eq!(code(br#"{"payload":"!!","payloadType":"x","signatures":[]}"#, 1 << 20), INVALID_ENVELOPE);
    }
}
