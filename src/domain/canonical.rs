//! Canonical JSON and SHA-256 helpers used for every digest the product emits.
//!
//! Invariants: object keys sorted by their UTF-8 bytes at every depth, no insignificant
//! whitespace, serde_json's escaping and number format; independent of whether a
//! dependency turns on serde_json's `preserve_order`.

use ring::digest;
use serde::Serialize;
use serde_json::Value;

/// Serialises `value` as canonical JSON bytes.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let v = serde_json::to_value(value)?;
    let mut out = Vec::with_capacity(256);
    write(&v, &mut out);
    Ok(out)
}

/// Canonical JSON as a `String`.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    // Canonical output is valid UTF-8 because serde_json writes valid UTF-8.
    to_vec(value).map(|b| String::from_utf8(b).unwrap_or_default())
}

fn write(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (k, val)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Serialising a string cannot fail.
                out.extend_from_slice(serde_json::to_string(k).unwrap_or_default().as_bytes());
                out.push(b':');
                write(val, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, bytes).as_ref())
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_prefixed(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sorted_at_every_depth() {
        let v = serde_json::json!({"b": 1, "a": {"z": [true, null], "y": "é\n"}});
        assert_eq!(to_string(&v).unwrap(), r#"{"a":{"y":"é\n","z":[true,null]},"b":1}"#);
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
