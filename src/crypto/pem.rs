//! A small, strict PEM (RFC 7468) decoder and encoder.
//!
//! Invariants: encoding is the "strict" RFC 7468 form that OpenSSL and pyca/cryptography
//! write (64-column standard base64, LF line ends, trailing newline), so that a key
//! re-encoded here hashes to the same securesystemslib keyid as one written by Python;
//! decoding tolerates CRLF, surrounding text and blank lines, rejects encrypted
//! (RFC 1421 header) blocks, and never panics.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// A PEM block could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PemError {
    #[error("no PEM block found")]
    NoBlock,
    #[error("PEM block {label:?} has no matching END line")]
    Unterminated { label: String },
    #[error("PEM block {label:?} has headers (encrypted PEM is not supported)")]
    Headers { label: String },
    #[error("PEM block {label:?} is not valid base64")]
    Base64 { label: String },
}

/// One decoded PEM block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub der: Vec<u8>,
}

const BASE64_LENIENT_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes every PEM block in `text`, in order.
pub fn decode_all(text: &str) -> Result<Vec<PemBlock>, PemError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut terminated = false;
        for inner in lines.by_ref() {
            if inner == end {
                terminated = true;
                break;
            }
            if inner.contains(':') {
                return Err(PemError::Headers { label: label.to_string() });
            }
            body.push_str(inner);
        }
        if !terminated {
            return Err(PemError::Unterminated { label: label.to_string() });
        }
        let body: String = body.chars().filter(|c| !c.is_ascii_whitespace()).collect();
        let der =
            BASE64_LENIENT_PAD.decode(body.as_bytes()).map_err(|_| PemError::Base64 { label: label.to_string() })?;
        blocks.push(PemBlock { label: label.to_string(), der });
    }
    if blocks.is_empty() {
        return Err(PemError::NoBlock);
    }
    Ok(blocks)
}

/// Encodes `der` as a PEM block with `label`: 64-column lines, LF, trailing newline
/// (byte-identical to OpenSSL / pyca/cryptography output).
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 2 * label.len() + 40);
    out.push_str("-----BEGIN ");
    out.push_str(label);
    out.push_str("-----\n");
    // Base64 output is ASCII, so byte chunks are valid UTF-8.
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END ");
    out.push_str(label);
    out.push_str("-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0u8..=200).collect();
        let pem = encode("PUBLIC KEY", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        let blocks = decode_all(&pem).unwrap();
        assert_eq!(blocks, vec![PemBlock { label: "PUBLIC KEY".into(), der }]);
    }

    #[test]
    fn tolerates_crlf_and_surrounding_text() {
        let pem = "junk\r\n-----BEGIN X-----\r\nAAEC\r\n-----END X-----\r\ntrailer";
        assert_eq!(decode_all(pem).unwrap()[0].der, vec![0, 1, 2]);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode_all("nothing here"), Err(PemError::NoBlock));
        assert!(matches!(decode_all("-----BEGIN X-----\nAAEC\n"), Err(PemError::Unterminated { .. })));
        assert!(matches!(decode_all("-----BEGIN X-----\n!!!!\n-----END X-----\n"), Err(PemError::Base64 { .. })));
        assert!(matches!(
            decode_all("-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\nAAEC\n-----END X-----\n"),
            Err(PemError::Headers { .. })
        ));
    }
}
