//! Correlation ids (the runbook's `correlationId`): the producer's (`correlation-id`
//! Kafka header, `X-Correlation-Id` HTTP header) when it is usable, else one the service
//! mints, carried onto the document's observations, dead letters and log lines.
//!
//! Invariants: an accepted or minted id is 1..=128 visible ASCII characters (safe in a
//! header, a log field and a span attribute); a Kafka message without one gets an id
//! derived from its position, so every retry, the dead letter and the log lines of one
//! message carry the same id; ids are never part of an observation's identity or digest.

use ring::digest::{digest, SHA256};
use ring::rand::{SecureRandom, SystemRandom};

/// The longest correlation id kept.
pub const MAX_LEN: usize = 128;

/// `value` (trimmed) when it is a usable correlation id: 1..=[`MAX_LEN`] visible ASCII
/// characters; `None` otherwise (the caller mints one).
pub fn accept(value: &str) -> Option<String> {
    let v = value.trim();
    (!v.is_empty() && v.len() <= MAX_LEN && v.bytes().all(|b| b.is_ascii_graphic())).then(|| v.to_string())
}

/// A new random id (128 bits, 32 lower-case hex digits).
pub fn mint() -> String {
    let mut bytes = [0u8; 16];
    if SystemRandom::new().fill(&mut bytes).is_err() {
        // No system randomness: the time keeps ids distinct enough to correlate lines.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        bytes = now.to_be_bytes();
    }
    hex::encode(bytes)
}

/// The id of a Kafka message that carries none: derived from its position (32 hex
/// digits of SHA-256 over `topic/partition@offset`), the same at every retry.
pub fn for_position(topic: &str, partition: i32, offset: i64) -> String {
    let d = digest(&SHA256, format!("{topic}/{partition}@{offset}").as_bytes());
    hex::encode(&d.as_ref()[..16])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_ids_are_kept_when_usable() {
        assert_eq!(accept(" req-42 ").as_deref(), Some("req-42"));
        assert_eq!(accept(""), None);
        assert_eq!(accept("has space"), None);
        assert_eq!(accept("ctl\u{7}"), None);
        assert_eq!(accept("é"), None);
        assert_eq!(accept(&"a".repeat(MAX_LEN)).map(|s| s.len()), Some(MAX_LEN));
        assert_eq!(accept(&"a".repeat(MAX_LEN + 1)), None);
    }

    #[test]
    fn minted_ids_are_distinct_and_accepted() {
        let (a, b) = (mint(), mint());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(accept(&a), Some(a.clone()));
        let p = for_position("vex.documents", 3, 17);
        assert_eq!(p, for_position("vex.documents", 3, 17), "one message, one id");
        assert_ne!(p, for_position("vex.documents", 3, 18));
        assert_eq!(accept(&p), Some(p.clone()));
    }
}
