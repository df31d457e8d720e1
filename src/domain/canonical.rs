//! Canonical JSON (RFC 8785, JSON Canonicalization Scheme) and SHA-256 helpers used for
//! every digest the product emits.
//!
//! Invariants: the bytes are RFC 8785 (keys sorted by UTF-16 code units at every depth,
//! no insignificant whitespace, ECMAScript number form, minimal string escaping), so any
//! JCS implementation recomputes them: made by the maintained `serde_json_canonicalizer`
//! crate, or, for types that declare their members in RFC 8785 order and hold no float
//! (the consensus records, an observation's content), by serde_json's compact writer
//! ([`to_vec_ordered`]), whose bytes debug builds check against the crate's (or, on the
//! hot path of [`write_ordered`], the type's own tests do); a value that cannot be
//! serialised is an error, never the digest of an empty string.

use ring::digest;
use serde::Serialize;

/// Largest integer RFC 8785 (an IEEE 754 double) represents exactly: 2^53 - 1.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a value has no canonical form.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CanonicalError {
    /// serde_json's message (its error type is neither `Clone` nor `Eq`).
    #[error("cannot serialise to canonical JSON: {0}")]
    Serialise(String),
    #[error("{field} = {value} is beyond 2^53 - 1, which RFC 8785 cannot represent exactly")]
    NumberOutOfRange { field: &'static str, value: u64 },
}

impl From<std::convert::Infallible> for CanonicalError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

impl From<serde_json::Error> for CanonicalError {
    fn from(e: serde_json::Error) -> Self {
        CanonicalError::Serialise(e.to_string())
    }
}

/// Serialises `value` as RFC 8785 canonical JSON bytes.
pub fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json_canonicalizer::to_vec(value)
}

/// Canonical JSON as a `String`.
pub fn to_string<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    serde_json_canonicalizer::to_string(value)
}

/// RFC 8785 bytes of a value whose `Serialize` writes every object's members in RFC 8785
/// key order (struct fields declared in that order, maps through [`sorted_map`]) and no
/// floating-point number: serde_json's compact writer then gives exactly the canonical
/// bytes, without sorting anything. (Sorting while writing, as `serde_json_canonicalizer`
/// must for any value, buffers every member and re-reads its key: on the vexhub records it
/// took ~6x the time of this.) A float is an error here, never a non-canonical number.
/// Debug builds (and so every test) check the bytes against `serde_json_canonicalizer`.
pub fn to_vec_ordered<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    to_vec_ordered_sized(value, 512)
}

/// [`to_vec_ordered`] into a buffer of `capacity` bytes (an estimate of the size spares
/// the buffer's regrowths: on the vexhub records they cost ~8 % of the evaluation).
pub fn to_vec_ordered_sized<T: Serialize>(value: &T, capacity: usize) -> Result<Vec<u8>, serde_json::Error> {
    let out = write_ordered(Vec::with_capacity(capacity), value)?;
    #[cfg(debug_assertions)]
    {
        let want = serde_json_canonicalizer::to_vec(value)?;
        assert!(
            out == want,
            "a type written by to_vec_ordered is not in RFC 8785 key order:\n ordered: {}\n RFC 8785: {}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
    }
    Ok(out)
}

/// [`to_vec_ordered`]'s bytes written to `out` (returned), without the debug builds'
/// check against `serde_json_canonicalizer`: for a hot path whose type's tests make that
/// check instead (`Observation`'s content, written once per observation).
pub fn write_ordered<W: std::io::Write, T: Serialize>(mut out: W, value: &T) -> Result<W, serde_json::Error> {
    value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, NoFloats))?;
    Ok(out)
}

/// Lower-case hex SHA-256 of [`write_ordered`]'s bytes of `value`.
pub fn sha256_hex_ordered<T: Serialize>(value: &T) -> Result<String, serde_json::Error> {
    Ok(sha256_hex(&write_ordered(Vec::with_capacity(512), value)?))
}

/// serde_json's compact formatter, refusing floats (their ECMAScript form is not
/// serde_json's: `1.0` is `1` in RFC 8785).
struct NoFloats;

impl serde_json::ser::Formatter for NoFloats {
    fn write_f32<W: ?Sized + std::io::Write>(&mut self, _: &mut W, _: f32) -> std::io::Result<()> {
        Err(std::io::Error::other("to_vec_ordered writes no floating-point number"))
    }
    fn write_f64<W: ?Sized + std::io::Write>(&mut self, _: &mut W, _: f64) -> std::io::Result<()> {
        Err(std::io::Error::other("to_vec_ordered writes no floating-point number"))
    }
}

/// Serialises a map with its entries in RFC 8785 order: by each key's serialised string
/// (UTF-16 code units), whatever the map's own order (an enum key's `Ord` is its
/// declaration order). For `#[serde(serialize_with)]` on the maps of types written by
/// [`to_vec_ordered`].
pub fn sorted_map<'a, K, V, M, S>(map: &'a M, s: S) -> Result<S::Ok, S::Error>
where
    &'a M: IntoIterator<Item = (&'a K, &'a V)>,
    K: Serialize + 'a,
    V: Serialize + 'a,
    S: serde::Serializer,
{
    use serde::ser::{Error, SerializeMap};
    let mut entries = Vec::new();
    for (k, v) in map {
        let key = serde_json::to_value(k).map_err(S::Error::custom)?;
        let key = key.as_str().ok_or_else(|| S::Error::custom("a map key that is not a string"))?.to_owned();
        entries.push((key.encode_utf16().collect::<Vec<u16>>(), key, v));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut m = s.serialize_map(Some(entries.len()))?;
    for (_, k, v) in entries {
        m.serialize_entry(&k, v)?;
    }
    m.end()
}

/// Inserts the member `"key":value` into the canonical JSON `object` at the place RFC 8785's
/// key order gives it, so a value serialised once can carry a member computed from its own
/// bytes (a record and its digest) without serialising it again. `key` must be ASCII
/// without characters JSON escapes (then byte order is UTF-16 order) and absent from
/// `object`; `value` must be canonical JSON. `None` when `object` is not a JSON object.
pub fn insert_member(object: &[u8], key: &str, value: &[u8]) -> Option<Vec<u8>> {
    let (at, member) = member_at(object, key, value)?;
    // The exact size, each byte copied once.
    let mut out = Vec::with_capacity(object.len() + member.len());
    out.extend_from_slice(&object[..at]);
    out.extend_from_slice(&member);
    out.extend_from_slice(&object[at..]);
    Some(out)
}

/// Where in `object` the member `"key":value` goes, and its bytes (with the comma it
/// needs); `None` when `object` is not a JSON object.
fn member_at(object: &[u8], key: &str, value: &[u8]) -> Option<(usize, Vec<u8>)> {
    debug_assert!(key.bytes().all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\'));
    if object.first() != Some(&b'{') {
        return None;
    }
    // Scan the top level: strings (skipping escapes), nesting depth, and where each
    // member's key starts; stop at the first key that sorts after `key`, or at the end.
    let (mut depth, mut i, mut expect_key) = (0usize, 0usize, false);
    let mut at = None;
    while i < object.len() {
        match object[i] {
            b'"' => {
                let start = i + 1;
                let mut j = start;
                while j < object.len() && object[j] != b'"' {
                    j += if object[j] == b'\\' { 2 } else { 1 };
                }
                if depth == 1 && expect_key {
                    if &object[start..j.min(object.len())] > key.as_bytes() {
                        at = Some(i);
                        break;
                    }
                    expect_key = false;
                }
                i = j;
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    at = Some(i);
                    break;
                }
            }
            b',' if depth == 1 => expect_key = true,
            _ => {}
        }
        i += 1;
    }
    let at = at?;
    let mut member = Vec::with_capacity(key.len() + value.len() + 5);
    let (comma_before, comma_after) = match object[at] {
        b'"' => (false, true),
        _ => (at > 1, false),
    };
    if comma_before {
        member.push(b',');
    }
    member.push(b'"');
    member.extend_from_slice(key.as_bytes());
    member.extend_from_slice(b"\":");
    member.extend_from_slice(value);
    if comma_after {
        member.push(b',');
    }
    Some((at, member))
}

/// Checks that an integer going into a digest is exactly representable in RFC 8785.
pub fn check_safe(field: &'static str, value: u64) -> Result<(), CanonicalError> {
    if value > MAX_SAFE_INTEGER {
        return Err(CanonicalError::NumberOutOfRange { field, value });
    }
    Ok(())
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

    #[derive(Serialize)]
    struct Ordered {
        a: u32,
        #[serde(serialize_with = "sorted_map")]
        b: std::collections::BTreeMap<Key, u32>,
        c: &'static str,
    }

    /// A key whose `Ord` (declaration order) is not its string order.
    #[derive(Serialize, PartialEq, Eq, PartialOrd, Ord)]
    #[serde(rename_all = "snake_case")]
    enum Key {
        Zulu,
        Alpha,
        Mike,
    }

    #[test]
    fn ordered_writer_equals_the_canonicalizer_and_refuses_floats() {
        let v = Ordered { a: 1, b: [(Key::Zulu, 1), (Key::Alpha, 2), (Key::Mike, 3)].into(), c: "\u{1}é\"\n" };
        let got = to_vec_ordered(&v).unwrap();
        assert_eq!(
            String::from_utf8(got.clone()).unwrap(),
            r#"{"a":1,"b":{"alpha":2,"mike":3,"zulu":1},"c":"\u0001é\"\n"}"#
        );
        assert_eq!(got, to_vec(&v).unwrap());
        let e = to_vec_ordered(&serde_json::json!({"x": 1.0})).unwrap_err();
        assert!(e.to_string().contains("no floating-point number"), "{e}");
    }

    /// A type whose fields are not in RFC 8785 order is caught (debug builds: every test).
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "not in RFC 8785 key order")]
    fn ordered_writer_catches_a_field_out_of_order() {
        #[derive(Serialize)]
        struct Unordered {
            b: u32,
            a: u32,
        }
        let _ = to_vec_ordered(&Unordered { b: 1, a: 2 });
    }

    #[test]
    fn keys_sorted_at_every_depth() {
        let v = serde_json::json!({"b": 1, "a": {"z": [true, null], "y": "é\n"}});
        assert_eq!(to_string(&v).unwrap(), r#"{"a":{"y":"é\n","z":[true,null]},"b":1}"#);
    }

    /// RFC 8785 section 3.2.3: keys sort by UTF-16 code units, not UTF-8 bytes (U+1F600
    /// is the surrogate pair D83D DE00, which sorts before U+E000), and numbers take the
    /// ECMAScript form.
    #[test]
    fn rfc8785_ordering_and_numbers() {
        let v = serde_json::json!({"\u{e000}": 1, "\u{1f600}": 2, "n": 1e21, "m": 0.000001, "i": 100});
        assert_eq!(to_string(&v).unwrap(), "{\"i\":100,\"m\":0.000001,\"n\":1e+21,\"\u{1f600}\":2,\"\u{e000}\":1}");
        assert!(check_safe("x", MAX_SAFE_INTEGER).is_ok());
        assert!(matches!(check_safe("x", MAX_SAFE_INTEGER + 1), Err(CanonicalError::NumberOutOfRange { .. })));
    }

    /// Inserting a member gives exactly what serialising the object with it gives, in
    /// every position (first, middle, last, empty object) and past nested look-alikes.
    #[test]
    fn insert_member_equals_serialising_with_it() {
        let cases = [
            serde_json::json!({}),
            serde_json::json!({"z": 1}),
            serde_json::json!({"a": 1}),
            serde_json::json!({"a": {"m": "x\\\"m\":1", "zz": [{"m": 1}]}, "b": [1, {"c": "}"}], "n": null, "z": "q"}),
            serde_json::json!({"l": "\u{1f600}", "m0": [], "ma": {}}),
        ];
        for v in cases {
            let mut with = v.clone();
            with.as_object_mut().unwrap().insert("m".into(), serde_json::json!("sha256:ab"));
            let got = insert_member(&to_vec(&v).unwrap(), "m", br#""sha256:ab""#).unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), to_string(&with).unwrap(), "{v}");
        }
        assert_eq!(insert_member(b"[1]", "m", b"1"), None);
    }

    #[test]
    fn sha256_of_empty() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }
}
