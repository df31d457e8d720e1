//! HMAC-SHA256 tags that authenticate the internal hop (ingest -> observations topic ->
//! artifact actors): only a holder of the service's key can make an observation whose
//! signature claim counts.
//!
//! Invariants: the tag covers the Kafka message key and the content bytes of the
//! observation (RFC 8785 canonical JSON without `id` and `provenance`), framed by
//! length so that no (key, content) pair can be shifted into another; verification is
//! constant time (`ring::hmac::verify`); no I/O.

use ring::hmac;

/// The Kafka header that carries the tag (lower-case hex).
pub const HEADER_MAC: &str = "vex-lens-mac";

/// Shortest key accepted (bytes): a 256-bit key, as HMAC-SHA256 wants.
pub const MIN_KEY_BYTES: usize = 32;

/// The key is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MacError {
    #[error("HMAC key is {0} bytes; at least {MIN_KEY_BYTES} are required")]
    KeyTooShort(usize),
}

/// An HMAC-SHA256 key for observation tags.
pub struct ObservationMac {
    key: hmac::Key,
}

impl std::fmt::Debug for ObservationMac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObservationMac(<redacted>)")
    }
}

impl ObservationMac {
    pub fn new(secret: &[u8]) -> Result<ObservationMac, MacError> {
        if secret.len() < MIN_KEY_BYTES {
            return Err(MacError::KeyTooShort(secret.len()));
        }
        Ok(ObservationMac { key: hmac::Key::new(hmac::HMAC_SHA256, secret) })
    }

    fn message(message_key: &[u8], content: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(8 + message_key.len() + content.len());
        m.extend_from_slice(&(message_key.len() as u64).to_be_bytes());
        m.extend_from_slice(message_key);
        m.extend_from_slice(content);
        m
    }

    /// The tag (lower-case hex) of an observation's content under its message key.
    pub fn tag(&self, message_key: &[u8], content: &[u8]) -> String {
        hex::encode(hmac::sign(&self.key, &Self::message(message_key, content)).as_ref())
    }

    /// Whether `tag` (hex, as in the header) is the tag of `content` under `message_key`.
    pub fn verify(&self, message_key: &[u8], content: &[u8], tag: &[u8]) -> bool {
        let Some(raw) = std::str::from_utf8(tag).ok().and_then(|t| hex::decode(t.trim()).ok()) else {
            return false;
        };
        hmac::verify(&self.key, &Self::message(message_key, content), &raw).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_tag_verifies_only_for_its_key_content_and_secret() {
        let m = ObservationMac::new(K).unwrap();
        let t = m.tag(b"t/pkg:npm/a", b"{\"a\":1}");
        assert_eq!(t.len(), 64);
        assert!(m.verify(b"t/pkg:npm/a", b"{\"a\":1}", t.as_bytes()));
        assert!(!m.verify(b"t/pkg:npm/b", b"{\"a\":1}", t.as_bytes()), "another message key");
        assert!(!m.verify(b"t/pkg:npm/a", b"{\"a\":2}", t.as_bytes()), "other content");
        // Length framing: moving bytes between key and content changes the tag.
        assert!(!m.verify(b"t/pkg:npm/a{", b"\"a\":1}", t.as_bytes()));
        let other = ObservationMac::new(b"another key of thirty-two bytes!").unwrap();
        assert!(!other.verify(b"t/pkg:npm/a", b"{\"a\":1}", t.as_bytes()), "another secret");
        assert!(!m.verify(b"t/pkg:npm/a", b"{\"a\":1}", b"not hex"));
        assert!(!m.verify(b"t/pkg:npm/a", b"{\"a\":1}", b""));
        assert!(!m.verify(b"t/pkg:npm/a", b"{\"a\":1}", &t.as_bytes()[..62]), "a truncated tag");
    }

    #[test]
    fn short_keys_are_refused() {
        assert_eq!(ObservationMac::new(b"short").unwrap_err(), MacError::KeyTooShort(5));
        assert!(format!("{:?}", ObservationMac::new(K).unwrap()).contains("redacted"));
    }
}
