//! Messages between the actors. Every message that carries work carries the completion
//! signal(s) fired once that work is durable (`Ok`) or once the store has rejected it for
//! good (`Err(Rejected)`: the source dead-letters it); dropping one unfired means "not
//! done" (the source retries it, or never acknowledges it, so it is replayed). Messages
//! that carry work also carry the `tracing` span it belongs to (disabled when traces are
//! not exported), so a stage's span hangs under the span of the document or observation.

use crate::domain::model::{IngestContext, Observation};
use crate::ports::VersionedRecord;
use actix::Message;
use tokio::sync::oneshot;

/// Fired when an observation and the records it changed are durable, or rejected.
pub type Done = oneshot::Sender<Result<(), Rejected>>;

/// The store rejected this input permanently (retrying it will not help).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("the store rejected it: {0}")]
pub struct Rejected(pub String);

/// To the ingest workers: normalise one document (or parse the DSSE envelope around one).
#[derive(Message)]
#[rtype(result = "IngestStep")]
pub struct NormaliseDocument {
    /// Names the document in errors and provenance (path, or `kafka:topic/partition@offset`).
    pub name: String,
    pub bytes: Vec<u8>,
    pub ctx: IngestContext,
    pub max_bytes: usize,
    /// The intake span of the document.
    pub span: tracing::Span,
}

/// What the ingest workers made of a document: its outcome, or a signed document the
/// verifier pool must judge before the ingest workers normalise it ([`Verified`]).
#[derive(Debug, actix::MessageResponse)]
pub enum IngestStep {
    Done(IngestOutcome),
    Envelope(VerifyEnvelope),
    /// A plain document with a detached OpenPGP signature: the verifier pool judges the
    /// signature, then the ingest workers normalise the document.
    Detached(VerifyDetached),
    /// An envelope that does not parse: dead-letter it, and persist its verification
    /// (`failed`/`malformed_envelope`).
    Malformed {
        outcome: IngestOutcome,
        record: crate::ports::VerificationRecord,
    },
}

/// To the verifier pool: judge a DSSE envelope's signatures (nothing else).
#[derive(Debug, Message)]
#[rtype(result = "Verified")]
pub struct VerifyEnvelope {
    /// Names the document (path, or `kafka:topic/partition@offset`).
    pub name: String,
    pub envelope: crate::crypto::Envelope,
    /// `sha256:<hex>` of the envelope bytes as received.
    pub envelope_digest: String,
    /// Whose keys a keyless signature is tried against: the `issuer` header, else the
    /// payload's author (set by the ingest worker; `None` when no signature is keyless).
    pub claimed_issuer: Option<String>,
    pub ctx: IngestContext,
    /// The intake span of the document (the verification's span hangs under it).
    pub span: tracing::Span,
}

/// To the verifier pool: judge a detached OpenPGP signature over a document's bytes.
#[derive(Debug, Message)]
#[rtype(result = "Verified")]
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

/// The document a verification was about, handed back for normalisation.
#[derive(Debug)]
pub enum SignedDocument {
    /// A DSSE envelope: its payload is the document.
    Envelope(crate::crypto::Envelope),
    /// A plain document whose detached signature was judged.
    Detached { bytes: Vec<u8>, max_bytes: usize },
}

/// The verifier's answer, and (as a message) the ingest workers' next job: normalise the
/// document with the verification's result on its context (`signature`, `signed_issuer`),
/// then settle the record to persist.
#[derive(Debug, actix::MessageResponse)]
pub struct Verified {
    pub name: String,
    pub document: SignedDocument,
    /// The document's context with the verification's signature and signed issuer.
    pub ctx: IngestContext,
    /// The verification to persist (`verified_at_ms` and `source` set).
    pub record: crate::ports::VerificationRecord,
    /// The verification's span (the normalisation's span hangs under it).
    pub span: tracing::Span,
}

impl Message for Verified {
    type Result = VerifiedDocument;
}

/// The payload's observations (signature applied) and the verification to persist.
#[derive(Debug, actix::MessageResponse)]
pub struct VerifiedDocument {
    pub outcome: IngestOutcome,
    pub record: crate::ports::VerificationRecord,
}

/// What became of a document.
#[derive(Debug, actix::MessageResponse)]
pub enum IngestOutcome {
    Observations {
        observations: Vec<Observation>,
        format: &'static str,
        /// The code of each diagnostic of the document.
        diagnostics: Vec<crate::domain::codes::DiagnosticCode>,
        /// Whether the document came in a DSSE envelope.
        enveloped: bool,
    },
    /// Bad input: dead-letter it with this reason code and detail.
    DeadLetter { reason: crate::domain::codes::DeadLetterReason, detail: String },
}

/// To the registry: route an observation to the actor owning its (tenant, package).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Route {
    pub observation: Observation,
    pub done: Done,
    /// The span of the observation (its intake, or its document's in embedded mode).
    pub span: tracing::Span,
}

/// To the registry: drop every artifact actor (partitions were revoked); they rebuild
/// from the store on their next observation.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ResetActors;

/// To the registry: how many artifact actors are alive.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct LiveActors;

/// To an artifact actor: apply one observation.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Apply {
    pub observation: Observation,
    pub done: Done,
    /// The span of the observation (from [`Route`]).
    pub span: tracing::Span,
}

/// To the registry: re-evaluate every pair of (tenant, package) with the tenant's
/// installed policy (a trust change); the actor is created (rebuilt from the store) when
/// none is live. `done` fires once the records are durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecomputePackage {
    pub tenant: String,
    pub package: String,
    /// `issuer_update` or `policy_knob`.
    pub reason: &'static str,
    pub done: RecomputeDone,
}

/// Fired when a recompute's records are durable (with how many were written), or rejected.
pub type RecomputeDone = oneshot::Sender<Result<usize, Rejected>>;

/// To the registry: the packages of a tenant with a live actor.
#[derive(Message)]
#[rtype(result = "Vec<String>")]
pub struct LivePackages {
    pub tenant: String,
}

/// To an artifact actor: re-evaluate every pair (see [`RecomputePackage`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Recompute {
    pub reason: &'static str,
    pub done: RecomputeDone,
}

/// To the store writer: make observations and the records they changed durable, then
/// fire `done`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Persist {
    pub observations: Vec<Observation>,
    /// Each with its version: the store keeps the newest ([`crate::ports::RecordVersion`]).
    pub records: Vec<VersionedRecord>,
    pub done: Vec<Done>,
    /// The span of each observation (aligned with `observations`).
    pub spans: Vec<tracing::Span>,
    /// The records' share of the pipeline's budget of records in flight, returned (dropped)
    /// once the batch holding them is written.
    pub share: super::budget::RecordShare,
}

/// To the store writer: persist a DSSE verification (`put_verification`, retried like
/// every write), then fire `done`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PersistVerification {
    pub record: crate::ports::VerificationRecord,
    pub done: Done,
    /// The intake span of the envelope's document.
    pub span: tracing::Span,
}

/// To the store writer: every stored observation of (tenant, package), read after every
/// earlier `Persist` of that package is durable (so a rebuilt actor sees everything
/// acknowledged); loads of other packages do not wait for the writer.
#[derive(Message)]
#[rtype(result = "Option<Vec<Observation>>")]
pub struct LoadPackage {
    pub tenant: String,
    pub package: String,
}

/// To the store writer: write everything pending; answers when it is durable.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Drain;
