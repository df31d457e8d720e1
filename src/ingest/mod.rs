//! The ingest flow, written once for every source: a document (its bytes and its
//! [`IngestContext`]) is verified when it is a DSSE envelope, normalised, its version is
//! recorded in the document ledger ([`DocumentLedger`]), and its observations, with the
//! version markers the ledger says it owes ([`crate::domain::ledger::owed_on_arrival`]:
//! to packages a newer version no longer names, or that this older version names and a
//! newer one does not), are published on the observation bus ([`ObservationBus`]); input that
//! will never work is dead-lettered with its reason ([`DeadLetterSink`]). A source only
//! turns what it reads into a [`Document`] and acknowledges what [`Ingest::document`]
//! answers ([`Ack`]): the Kafka documents consumer stores the offset, the watched
//! directory remembers the file.
//!
//! Invariants: [`Ack::Done`] only once every observation of the document is durable on
//! the bus (and the verification of an envelope is durable); [`Ack::DeadLettered`] only
//! once the sink took the dead letter; transient failures are retried per the source's
//! [`RetryPolicy`] ([`settle`]); the flow reads the time only from its [`Clock`] (the
//! arrival time a source did not give) and touches no store or broker except through
//! the pipeline and its ports. Signatures travel in the context, so every source gets
//! the same verdict for the same bytes. The observations are published first, then the
//! version is recorded in the ledger and the markers it owes are published (a retry does
//! both again: idempotent), so the ledger's round trip is not on the way of a document's
//! own records (issue 20: it was the latency at 500 observations/s), and a document
//! acknowledged has told every package it retracts. Markers arriving after the
//! observations are one more order of arrival (incremental = batch in any order). A
//! document the ledger refuses for good (`store_rejected`) may have had its observations
//! published: its dead letter replays them as duplicates.

pub mod settle;

use crate::actors::messages::IngestOutcome;
use crate::actors::{Pipeline, PipelineError};
use crate::domain::codes::DeadLetterReason;
use crate::domain::ledger::{owed_on_arrival, DocumentVersion};
use crate::domain::model::{IngestContext, Observation, Provenance};
use crate::ports::{Clock, DeadLetterSink, DocumentLedger, ObservationBus, Origin};
use crate::telemetry::events::DocumentIngested;
use crate::telemetry::trace::bounded;
pub use settle::{Ack, Exhausted, Failure, Input, RetryPolicy, RETRIES_EXHAUSTED};
use std::sync::Arc;
use tokio::sync::watch;

/// Reason code of a document whose verification (or observation) the store rejected
/// permanently.
pub const STORE_REJECTED: DeadLetterReason = DeadLetterReason::StoreRejected;

/// One document as a source read it.
#[derive(Clone, Debug)]
pub struct Document {
    /// Names the document in errors, logs and provenance (path, `stdin:<line>`,
    /// `kafka:<topic>/<partition>@<offset>`).
    pub name: String,
    /// The bytes as received, or why none could be read (dead-lettered with that reason).
    pub bytes: Result<Vec<u8>, Unreadable>,
    /// Tenant, provenance, claimed issuer and any signature that came beside the bytes.
    /// A `provenance.received_at_ms` the source leaves empty is the flow's clock at
    /// intake; a `provenance.correlation_id` it leaves empty is minted by the flow.
    pub ctx: IngestContext,
    /// The trace context the document came with, passed on to its observations when
    /// this service exports no spans.
    pub trace: Vec<(&'static str, String)>,
}

/// A document the source could not read, or refuses (e.g. a tenant that is no tenant name).
#[derive(Clone, Debug)]
pub struct Unreadable {
    pub reason: DeadLetterReason,
    pub detail: String,
}

impl Document {
    /// A document read from `name`.
    pub fn new(name: impl Into<String>, bytes: Vec<u8>, ctx: IngestContext) -> Document {
        Document { name: name.into(), bytes: Ok(bytes), ctx, trace: Vec::new() }
    }
}

/// The ingest flow (cheap to clone).
#[derive(Clone)]
pub struct Ingest {
    pipeline: Pipeline,
    bus: Arc<dyn ObservationBus>,
    ledger: Arc<dyn DocumentLedger>,
    clock: Arc<dyn Clock>,
    max_bytes: usize,
    retry: RetryPolicy,
    shutdown: watch::Receiver<bool>,
}

impl Ingest {
    /// The flow over `pipeline` (normalisation and verification), recording document
    /// versions in `ledger`, publishing on `bus`; documents larger than `max_bytes` are
    /// dead-lettered (`too_large`).
    pub fn new(
        pipeline: Pipeline,
        bus: Arc<dyn ObservationBus>,
        ledger: Arc<dyn DocumentLedger>,
        clock: Arc<dyn Clock>,
        max_bytes: usize,
        retry: RetryPolicy,
        shutdown: watch::Receiver<bool>,
    ) -> Ingest {
        Ingest { pipeline, bus, ledger, clock, max_bytes, retry, shutdown }
    }

    /// Records `versions` (those of one document's observations) and returns the version
    /// markers owed on their arrival, with the document's `provenance`.
    async fn markers_owed(
        &self,
        versions: &[DocumentVersion],
        provenance: Option<&Provenance>,
    ) -> Result<Vec<Observation>, Failure> {
        let mut markers = Vec::new();
        for v in versions {
            let known = self.ledger.record_version(v).await.map_err(|e| match e.is_retriable() {
                true => Failure::Transient(format!("document version not recorded: {e}")),
                false => Failure::Permanent { reason: STORE_REJECTED, detail: format!("document version: {e}") },
            })?;
            markers.extend(owed_on_arrival(v, &known));
        }
        if let Some(p) = provenance {
            for m in &mut markers {
                m.provenance = Provenance { sequence: None, ..p.clone() };
            }
        }
        Ok(markers)
    }

    /// Takes one document to the end: published, dead-lettered into `dead_letters`, or
    /// not done (see [`Ack`]). Records the document's outcome (`vex.outcome`,
    /// `vex.reason`, `vex.observations`, ...) on the current span, the source's span of
    /// the document.
    pub async fn document(&self, mut doc: Document, dead_letters: &dyn DeadLetterSink) -> Ack {
        let at_ms = *doc.ctx.provenance.received_at_ms.get_or_insert_with(|| self.clock.now_ms());
        // A document names its correlation id, or the service mints one (files, stdin).
        doc.ctx.provenance.correlation_id.get_or_insert_with(crate::telemetry::correlation::mint);
        let span = tracing::Span::current();
        if let Some(t) = &doc.ctx.tenant {
            span.record("vex.tenant", bounded(t));
        }
        let input = Input { name: &doc.name, correlation_id: doc.ctx.provenance.correlation_id.as_deref(), at_ms };
        let ack = settle::to_the_end(input, &self.retry, dead_letters, &self.shutdown, || self.attempt(&doc)).await;
        span.record(
            "vex.outcome",
            match ack {
                Ack::Done => "ingested",
                Ack::DeadLettered => "dead_lettered",
                Ack::NotDone => "not_durable",
            },
        );
        ack
    }

    /// One attempt: normalise (verify), publish.
    async fn attempt(&self, doc: &Document) -> Result<(), Failure> {
        let bytes = match &doc.bytes {
            Ok(b) => b.clone(),
            Err(u) => return Err(Failure::Permanent { reason: u.reason, detail: u.detail.clone() }),
        };
        let outcome = match self.pipeline.normalise(doc.name.clone(), bytes, doc.ctx.clone(), self.max_bytes).await {
            Ok(o) => o,
            Err(PipelineError::Rejected(r)) => {
                return Err(Failure::Permanent { reason: STORE_REJECTED, detail: r.to_string() })
            }
            Err(e) => return Err(Failure::Transient(format!("document not processed: {e}"))),
        };
        let (observations, format, diagnostics) = match outcome {
            IngestOutcome::DeadLetter { reason, detail } => return Err(Failure::Permanent { reason, detail }),
            IngestOutcome::Observations { observations, format, diagnostics, .. } => {
                (observations, format, diagnostics)
            }
        };
        let n = observations.len();
        let span = tracing::Span::current();
        span.record("vex.observations", n);
        if let Some(o) = observations.first() {
            span.record("vex.document_digest", bounded(&o.document_digest));
            if let Some(i) = &o.issuer {
                span.record("vex.issuer", bounded(i));
            }
        }
        let versions = DocumentVersion::of(&observations);
        let provenance = observations.first().map(|o| o.provenance.clone());
        let correlation_id = doc.ctx.provenance.correlation_id.as_deref();
        let origin = Origin { correlation_id, trace: &doc.trace };
        self.bus.publish(observations, &origin).await?;
        let markers = self.markers_owed(&versions, provenance.as_ref()).await?;
        if !markers.is_empty() {
            self.bus.publish(markers, &origin).await?;
        }
        DocumentIngested { source: &doc.name, correlation_id, format, observations: n, diagnostics: &diagnostics }
            .emit();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::PipelineSettings;
    use crate::domain::trust::Policy;
    use crate::ports::{DeadLetter, DeadLetterError, RecordStore, Stores};
    use crate::stores::embedded::EmbeddedStore;
    use std::sync::Mutex;

    const DOC: &str = r#"{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example.com/vex/1","author":"Acme","timestamp":"2024-01-01T00:00:00Z","version":1,"statements":[{"vulnerability":{"name":"CVE-2024-1"},"products":[{"@id":"pkg:npm/a@1.0.0"}],"status":"affected","action_statement":"upgrade"}]}"#;

    struct FixedClock;
    impl Clock for FixedClock {
        fn now_ms(&self) -> i64 {
            42
        }
    }

    #[derive(Default)]
    struct Letters(Mutex<Vec<DeadLetter>>);
    #[async_trait::async_trait]
    impl DeadLetterSink for Letters {
        async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), DeadLetterError> {
            self.0.lock().unwrap().push(letter.clone());
            Ok(())
        }
    }

    fn settings() -> PipelineSettings {
        use crate::actors::registry::RegistrySettings;
        use crate::actors::writer::WriterSettings;
        use std::time::Duration;
        PipelineSettings {
            workers: 1,
            writers: 1,
            artifact_threads: 1,
            writer: WriterSettings {
                batch_max: 8,
                flush_after: Duration::from_millis(2),
                retry_initial: Duration::from_millis(5),
                retry_max: Duration::from_millis(20),
                store_timeout: Duration::from_secs(10),
                mailbox_capacity: 4,
            },
            registry: RegistrySettings {
                max_live: 8,
                max_observations: 50_000,
                idle_evict: Duration::from_secs(60),
                mailbox_capacity: 4,
                max_records_in_flight: 8_192,
            },
        }
    }

    fn ctx() -> IngestContext {
        IngestContext { tenant: Some("t".into()), ..Default::default() }
    }

    /// The flow over the embedded pipeline (its own bus): a document becomes durable
    /// records, bad input and unreadable input are dead-lettered with their reasons and
    /// the clock's arrival time; every answer is settled.
    #[test]
    fn documents_are_published_or_dead_lettered_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let sys = actix::System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
        });
        let (acks, letters, records) = sys.block_on(async move {
            let store = Arc::new(EmbeddedStore::open(&path).unwrap());
            let p = Pipeline::start(Stores::of(store.clone()), Arc::new(Policy::default()), settings());
            let (_tx, shutdown) = watch::channel(false);
            let ingest = Ingest::new(
                p.clone(),
                Arc::new(p.clone()),
                store.clone(),
                Arc::new(FixedClock),
                1 << 20,
                RetryPolicy::once(),
                shutdown,
            );
            let letters = Letters::default();
            let unreadable = Document {
                bytes: Err(Unreadable { reason: DeadLetterReason::Unreadable, detail: "gone".into() }),
                ..Document::new("c", Vec::new(), ctx())
            };
            let acks = vec![
                ingest.document(Document::new("a", DOC.as_bytes().to_vec(), ctx()), &letters).await,
                ingest.document(Document::new("b", b"not json".to_vec(), ctx()), &letters).await,
                ingest.document(unreadable, &letters).await,
            ];
            p.drain().await.unwrap();
            let letters = letters.0.lock().unwrap().clone();
            (acks, letters, store.list_records(Some("t"), None).await.unwrap())
        });
        assert_eq!(acks, [Ack::Done, Ack::DeadLettered, Ack::DeadLettered]);
        assert_eq!(records.len(), 1, "the document's one statement is a durable record");
        let got: Vec<(&str, DeadLetterReason, i64)> =
            letters.iter().map(|d| (d.source.as_str(), d.reason, d.at_ms)).collect();
        assert_eq!(got, [("b", DeadLetterReason::InvalidJson, 42), ("c", DeadLetterReason::Unreadable, 42)]);
    }
}
