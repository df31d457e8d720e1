//! PEM (RFC 7468) blocks, decoded and encoded by the `pem-rfc7468` crate.
//!
//! Invariants: encoding is the strict RFC 7468 form that OpenSSL and pyca/cryptography
//! write (64-column standard base64, LF line ends, trailing newline), so that a key
//! re-encoded here hashes to the same securesystemslib keyid as one written by Python;
//! each block is decoded strictly by `pem-rfc7468` (canonical base64 and padding, no
//! headers, so encrypted RFC 1421 blocks are rejected); this module only finds the blocks
//! in a text (explanatory text around them, CRLF and indentation are tolerated, as in a
//! key pasted into TOML); decoded bytes are zeroised when dropped; never panics.

use zeroize::Zeroizing;

/// A PEM block could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PemError {
    #[error("no PEM block found")]
    NoBlock,
    #[error("PEM block {label:?} has no matching END line")]
    Unterminated { label: String },
    #[error("PEM block {label:?}: {reason}")]
    Decode { label: String, reason: String },
}

/// One decoded PEM block. `der` is zeroised on drop (it may hold a private key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PemBlock {
    pub label: String,
    pub der: Zeroizing<Vec<u8>>,
}

/// Decodes every PEM block in `text`, in order.
pub fn decode_all(text: &str) -> Result<Vec<PemBlock>, PemError> {
    let mut blocks = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")) else {
            continue;
        };
        let end = format!("-----END {label}-----");
        let mut block = Zeroizing::new(String::with_capacity(text.len()));
        block.push_str(line);
        block.push('\n');
        let mut terminated = false;
        for inner in lines.by_ref() {
            block.push_str(inner);
            block.push('\n');
            if inner == end {
                terminated = true;
                break;
            }
        }
        if !terminated {
            return Err(PemError::Unterminated { label: label.to_string() });
        }
        let (decoded_label, der) = pem_rfc7468::decode_vec(block.as_bytes())
            .map_err(|e| PemError::Decode { label: label.to_string(), reason: e.to_string() })?;
        blocks.push(PemBlock { label: decoded_label.to_string(), der: Zeroizing::new(der) });
    }
    if blocks.is_empty() {
        return Err(PemError::NoBlock);
    }
    Ok(blocks)
}

/// Encodes `der` as a PEM block with `label`: 64-column lines, LF, trailing newline
/// (byte-identical to OpenSSL / pyca/cryptography output).
pub fn encode(label: &str, der: &[u8]) -> String {
    // Only an invalid label fails; the labels used here are constants.
    pem_rfc7468::encode_string(label, pem_rfc7468::LineEnding::LF, der).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let der: Vec<u8> = (0u8..=200).collect();
        let pem = encode("PUBLIC KEY", &der);
        assert!(pem.lines().all(|l| l.len() <= 64));
        assert!(pem.ends_with("\n-----END PUBLIC KEY-----\n"));
        let blocks = decode_all(&pem).unwrap();
        assert_eq!(blocks, vec![PemBlock { label: "PUBLIC KEY".into(), der: Zeroizing::new(der) }]);
    }

    #[test]
    fn tolerates_crlf_indentation_and_surrounding_text() {
        let pem = "junk\r\n  -----BEGIN X-----\r\n  AAEC\r\n  -----END X-----\r\ntrailer";
        assert_eq!(*decode_all(pem).unwrap()[0].der, vec![0, 1, 2]);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode_all("nothing here"), Err(PemError::NoBlock));
        assert!(matches!(decode_all("-----BEGIN X-----\nAAEC\n"), Err(PemError::Unterminated { .. })));
        assert!(matches!(decode_all("-----BEGIN X-----\n!!!!\n-----END X-----\n"), Err(PemError::Decode { .. })));
        // Non-canonical padding and encrypted (RFC 1421 header) blocks.
        assert!(matches!(decode_all("-----BEGIN X-----\nAAE\n-----END X-----\n"), Err(PemError::Decode { .. })));
        assert!(matches!(
            decode_all("-----BEGIN X-----\nProc-Type: 4,ENCRYPTED\nAAEC\n-----END X-----\n"),
            Err(PemError::Decode { .. })
        ));
    }
}
