//! The dead-letter port: where the ingest flow puts an input it will never process, with
//! the reason, so that its source can acknowledge it (Kafka: the topic's dead-letter
//! topic; embedded: the store's dead-letter table).
//!
//! Invariant: `Ok` and [`DeadLetterError::NotStored`] both let the source acknowledge
//! the input (the `dead_lettered` event and metric, emitted by the flow, record it in any
//! case); [`DeadLetterError::Abandoned`] leaves it unacknowledged, so it is processed
//! again after a restart.

use crate::domain::codes::DeadLetterReason;
use serde::{Deserialize, Serialize};

/// One dead-lettered input.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Names the input (path, `stdin:<line>`, `kafka:<topic>/<partition>@<offset>`).
    pub source: String,
    pub reason: DeadLetterReason,
    pub detail: String,
    /// When the input arrived (milliseconds since the epoch).
    pub at_ms: i64,
    /// The document's correlation id (minted by the service for files and stdin).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
}

/// A dead letter was not kept.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// Not stored; the input may still be acknowledged (its event and metric record it).
    #[error("dead letter not stored: {0}")]
    NotStored(String),
    /// Not sent because the service is stopping: leave the input unacknowledged.
    #[error("dead letter not sent: shutting down")]
    Abandoned,
}

/// Where dead letters go.
#[async_trait::async_trait]
pub trait DeadLetterSink: Send + Sync {
    /// Keeps `letter`; see the module documentation for what the result allows.
    async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), DeadLetterError>;
}

/// No place to keep dead letters (the embedded sources over MongoDB): the event and
/// metric are their only record.
#[derive(Clone, Copy, Debug, Default)]
pub struct EventOnly;

#[async_trait::async_trait]
impl DeadLetterSink for EventOnly {
    async fn dead_letter(&self, _: &DeadLetter) -> Result<(), DeadLetterError> {
        Ok(())
    }
}
