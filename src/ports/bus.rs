//! The observation bus port: where the ingest flow publishes a document's observations
//! (Kafka: the observations topic, keyed and so partitioned by `<tenant>/<package>`;
//! embedded: the artifact actors through the registry's mailbox).
//!
//! Invariant: `Ok` only once every observation is durable on the bus (acknowledged by the
//! broker; in embedded mode applied and its records durable), so that the source may
//! then acknowledge the document; a failure says whether retrying can help.

use crate::domain::codes::DeadLetterReason;
use crate::domain::model::Observation;

/// Where a document's observations come from, for the messages that carry them.
#[derive(Clone, Debug, Default)]
pub struct Origin<'a> {
    pub correlation_id: Option<&'a str>,
    /// The trace context the document came with (`traceparent`, `tracestate`), passed on
    /// when this service exports no spans of its own.
    pub trace: &'a [(&'static str, String)],
}

/// Observations not published.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Worth another attempt (the broker or the pipeline did not make them durable).
    #[error("{0}")]
    Transient(String),
    /// Will never work: dead-letter the document with this reason.
    #[error("{reason}: {detail}")]
    Permanent { reason: DeadLetterReason, detail: String },
}

/// Publishes observations.
#[async_trait::async_trait]
pub trait ObservationBus: Send + Sync {
    /// Publishes every observation of one document; returns once all are durable.
    async fn publish(&self, observations: Vec<Observation>, origin: &Origin<'_>) -> Result<(), PublishError>;
}
