//! Reading a consumed message: its headers, the name it has in logs and provenance
//! (`kafka:<topic>/<partition>@<offset>`), its timestamp.
//!
//! Invariant: pure reads of the message; a missing or non-UTF-8 header reads as absent.

use rdkafka::message::{Headers, Message, OwnedMessage};

/// The message's correlation id: its `correlation-id` header when usable, else one
/// derived from its position (the same at every retry and on its dead letter).
pub(super) fn correlation_of(m: &OwnedMessage) -> String {
    header_str(m, "correlation-id")
        .and_then(|c| crate::telemetry::correlation::accept(&c))
        .unwrap_or_else(|| crate::telemetry::correlation::for_position(m.topic(), m.partition(), m.offset()))
}

pub(super) fn header_str(m: &OwnedMessage, name: &str) -> Option<String> {
    let h = m.headers()?;
    h.iter()
        .find(|x| x.key.eq_ignore_ascii_case(name))
        .and_then(|x| x.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

pub(super) fn source_name(m: &OwnedMessage) -> String {
    format!("kafka:{}/{}@{}", m.topic(), m.partition(), m.offset())
}

pub(super) fn timestamp_ms(m: &OwnedMessage) -> i64 {
    m.timestamp().to_millis().unwrap_or_else(crate::ports::now_ms)
}
