//! Reading a consumed message: its headers, the name it has in logs and provenance
//! (`kafka:<topic>/<partition>@<offset>`), its timestamp.
//!
//! Invariant: pure reads of the message; a missing or non-UTF-8 header reads as absent.

use rdkafka::message::{Headers, Message, OwnedMessage};

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
