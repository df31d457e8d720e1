//! Reading the fields of a parsed document (`serde_json::Value`), shared by the three
//! normalisers.
//!
//! Invariants: a reader never panics; a field of the wrong type is an `InvalidField`
//! error naming its path (`<path>.<key>`, or `<key>` at the top level where `path` is
//! empty) with a fixed reason ("must be an array", "must be an object", "must be a
//! string", "is required", "is required and must be a string"), the same words for every
//! format, since diagnostics are output; an optional field that is absent or `null` reads
//! as empty/`None`, and an optional string that is blank as `None` (trimmed otherwise).

use super::NormaliseError;
use crate::domain::timestamp::Timestamp;
use serde_json::Value;

/// The constructor of a document's `InvalidField` errors: `bad(field_path, reason)`
/// (made by [`super::field_error`]).
pub(crate) type Bad<'a> = dyn Fn(String, &str) -> NormaliseError + 'a;

/// The path of `key` under `path` (`key` alone at the top level, where `path` is empty).
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// An optional array field (absent or null: empty).
pub(crate) fn array_field<'a>(v: &'a Value, key: &str, path: &str, bad: &Bad) -> Result<&'a [Value], NormaliseError> {
    match v.get(key) {
        Some(Value::Array(a)) => Ok(a.as_slice()),
        Some(Value::Null) | None => Ok(&[]),
        Some(_) => Err(bad(join(path, key), "must be an array")),
    }
}

/// A required array field (absent: "is required"; null or another type: "must be an
/// array").
pub(crate) fn required_array<'a>(
    v: &'a Value,
    key: &str,
    path: &str,
    bad: &Bad,
) -> Result<&'a [Value], NormaliseError> {
    match v.get(key) {
        Some(Value::Array(a)) => Ok(a.as_slice()),
        Some(_) => Err(bad(join(path, key), "must be an array")),
        None => Err(bad(join(path, key), "is required")),
    }
}

/// The elements of the array `items` found at `path`, each with its own path
/// (`<path>[i]`); an element that is not an object "must be an object", reported when
/// the iteration reaches it (so the elements before it are read first).
pub(crate) fn objects<'a, 'b>(
    items: &'a [Value],
    path: &'b str,
    bad: &'b Bad,
) -> impl Iterator<Item = Result<(String, &'a Value), NormaliseError>> + 'b
where
    'a: 'b,
{
    items.iter().enumerate().map(move |(i, item)| {
        let ipath = format!("{path}[{i}]");
        if item.is_object() {
            Ok((ipath, item))
        } else {
            Err(bad(ipath, "must be an object"))
        }
    })
}

/// An optional object field (absent or null: `None`).
pub(crate) fn opt_object<'a>(
    v: &'a Value,
    key: &str,
    path: &str,
    bad: &Bad,
) -> Result<Option<&'a Value>, NormaliseError> {
    match v.get(key) {
        Some(o @ Value::Object(_)) => Ok(Some(o)),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(bad(join(path, key), "must be an object")),
    }
}

/// A required object field (absent: "is required"; null or another type: "must be an
/// object").
pub(crate) fn required_object<'a>(v: &'a Value, key: &str, path: &str, bad: &Bad) -> Result<&'a Value, NormaliseError> {
    match v.get(key) {
        Some(o @ Value::Object(_)) => Ok(o),
        Some(_) => Err(bad(join(path, key), "must be an object")),
        None => Err(bad(join(path, key), "is required")),
    }
}

/// An optional array of strings.
pub(crate) fn string_list<'a>(v: &'a Value, key: &str, path: &str, bad: &Bad) -> Result<Vec<&'a str>, NormaliseError> {
    array_field(v, key, path, bad)?
        .iter()
        .enumerate()
        .map(|(i, x)| x.as_str().ok_or_else(|| bad(format!("{}[{i}]", join(path, key)), "must be a string")))
        .collect()
}

/// An optional string field: absent, null or blank is `None`, another type an error;
/// trimmed.
pub(crate) fn opt_str<'a>(v: &'a Value, key: &str, path: &str, bad: &Bad) -> Result<Option<&'a str>, NormaliseError> {
    match v.get(key) {
        Some(Value::String(s)) => Ok(Some(s.trim()).filter(|s| !s.is_empty())),
        Some(Value::Null) | None => Ok(None),
        Some(_) => Err(bad(join(path, key), "must be a string")),
    }
}

/// A required string field, trimmed: [`opt_str`], with absent, null or blank "is
/// required".
pub(crate) fn required_str<'a>(v: &'a Value, key: &str, path: &str, bad: &Bad) -> Result<&'a str, NormaliseError> {
    opt_str(v, key, path, bad)?.ok_or_else(|| bad(join(path, key), "is required"))
}

/// A required string field as written (not trimmed, blank kept): anything else,
/// absence included, "is required and must be a string".
pub(crate) fn raw_str<'a>(v: &'a Value, key: &str, path: &str, bad: &Bad) -> Result<&'a str, NormaliseError> {
    v.get(key).and_then(Value::as_str).ok_or_else(|| bad(join(path, key), "is required and must be a string"))
}

/// An optional RFC 3339 timestamp field ([`opt_str`], then parsed).
pub(crate) fn opt_timestamp(v: &Value, key: &str, path: &str, bad: &Bad) -> Result<Option<Timestamp>, NormaliseError> {
    match opt_str(v, key, path, bad)? {
        None => Ok(None),
        Some(s) => Timestamp::parse(s).map(Some).map_err(|e| bad(join(path, key), &e.to_string())),
    }
}

/// A non-empty trimmed string field; anything else is `None` (never an error: for the
/// fields a normaliser reads leniently, such as names and identifiers).
pub fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

/// A document version as a string (numbers and strings both occur).
pub fn version_string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
