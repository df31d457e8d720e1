//! Query-string parsing of the `/v1` endpoints: every parameter is named, unknown or
//! repeated ones are rejected, and each failure is a 400 naming the parameter; page
//! tokens are opaque (base64url of the last key of the previous page).
//!
//! Invariants: a handler reads only the parameters it declared (an unknown one is an
//! error, never silently ignored); page tokens round-trip exactly.

use super::error::ApiError;
use crate::domain::consensus::ConsensusStatus;
use crate::domain::keys::parse_key;
use crate::domain::timestamp::Timestamp;
use base64::Engine;
use std::collections::BTreeMap;

/// The parsed query string of one request.
pub struct Params {
    values: BTreeMap<String, String>,
}

impl Params {
    /// Parses `query`, accepting only the names in `allowed`.
    pub fn parse(query: &str, allowed: &[&str]) -> Result<Params, ApiError> {
        let mut values = BTreeMap::new();
        for (k, v) in form_urlencoded_pairs(query) {
            let (k, v) = (k?, v?);
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::param(
                    &k,
                    format!("unknown parameter (expected one of: {})", allowed.join(", ")),
                ));
            }
            if values.insert(k.clone(), v).is_some() {
                return Err(ApiError::param(&k, "given more than once"));
            }
        }
        Ok(Params { values })
    }

    /// A non-empty string value.
    pub fn str(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.values.get(name).map(|v| v.trim()) {
            None => Ok(None),
            Some("") => Err(ApiError::param(name, "must not be empty")),
            Some(v) if v.len() > 1024 => Err(ApiError::param(name, "longer than 1024 bytes")),
            Some(v) => Ok(Some(v.to_string())),
        }
    }

    pub fn required(&self, name: &str) -> Result<String, ApiError> {
        self.str(name)?.ok_or_else(|| ApiError::param(name, "required"))
    }

    /// An artifact identifier, normalised to its key (any spelling of the same purl
    /// gives the same key).
    pub fn artifact(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.str(name)?.map(|a| parse_key(&a).map(|k| k.key).map_err(|e| ApiError::param(name, e))).transpose()
    }

    /// A package identifier (an artifact identifier without version and qualifiers).
    pub fn package(&self, name: &str) -> Result<Option<String>, ApiError> {
        self.str(name)?.map(|a| parse_key(&a).map(|k| k.package).map_err(|e| ApiError::param(name, e))).transpose()
    }

    /// An RFC 3339 time, as ms since the epoch.
    pub fn time_ms(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.str(name)?
            .map(|t| Timestamp::parse(&t).map(|t| t.unix_millis()).map_err(|e| ApiError::param(name, e)))
            .transpose()
    }

    pub fn status(&self, name: &str) -> Result<Option<ConsensusStatus>, ApiError> {
        self.str(name)?
            .map(|s| {
                serde_json::from_value::<ConsensusStatus>(serde_json::Value::String(s.clone())).map_err(|_| {
                    ApiError::param(
                        name,
                        format!(
                            "{s:?} is not one of affected, not_affected, fixed, under_investigation, disputed, inconclusive"
                        ),
                    )
                })
            })
            .transpose()
    }

    /// A code of a closed set (e.g. a conflict reason): an unknown value is a 400 naming
    /// the parameter and the values it takes.
    pub fn code<T: std::str::FromStr>(&self, name: &str, all: &[&str]) -> Result<Option<T>, ApiError> {
        self.str(name)?
            .map(|s| {
                s.parse::<T>().map_err(|_| ApiError::param(name, format!("{s:?} is not one of {}", all.join(", "))))
            })
            .transpose()
    }

    /// `page_size` in 1..=max (default `default`).
    pub fn page_size(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.str("page_size")? {
            None => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::param("page_size", format!("must be an integer in 1..={max}"))),
            },
        }
    }

    /// `page_token`: the cursor of the previous page.
    pub fn page_token(&self) -> Result<Option<(String, String)>, ApiError> {
        self.str("page_token")?
            .map(|t| decode_cursor(&t).ok_or_else(|| ApiError::param("page_token", "not a token this API issued")))
            .transpose()
    }
}

fn form_urlencoded_pairs(
    query: &str,
) -> impl Iterator<Item = (Result<String, ApiError>, Result<String, ApiError>)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let dec = |s: &str| {
            percent_encoding::percent_decode_str(&s.replace('+', " "))
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| ApiError::param("query", "not valid percent-encoded UTF-8"))
        };
        let key = dec(k);
        let value = match &key {
            Ok(k) => dec(v).map_err(|_| ApiError::param(k, "not valid percent-encoded UTF-8")),
            Err(_) => Ok(String::new()),
        };
        (key, value)
    })
}

/// The opaque page token after (artifact, vulnerability).
pub fn encode_cursor(artifact: &str, vulnerability: &str) -> String {
    let json = serde_json::to_vec(&(artifact, vulnerability)).unwrap_or_default();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

fn decode_cursor(token: &str) -> Option<(String, String)> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_named_in_errors() {
        let e = Params::parse("artifact=x&bogus=1", &["artifact"]).err().unwrap();
        assert!(e.message.starts_with("bogus:"), "{}", e.message);
        let e = Params::parse("a=1&a=2", &["a"]).err().unwrap();
        assert!(e.message.starts_with("a:"), "{}", e.message);
        let p =
            Params::parse("page_size=1001&since=yesterday&status=maybe", &["page_size", "since", "status"]).unwrap();
        assert!(p.page_size(100, 1000).unwrap_err().message.starts_with("page_size:"));
        assert!(p.time_ms("since").unwrap_err().message.starts_with("since:"));
        assert!(p.status("status").unwrap_err().message.starts_with("status:"));
        let p = Params::parse("artifact=not-a-key", &["artifact"]).unwrap();
        assert!(p.artifact("artifact").unwrap_err().message.starts_with("artifact:"));
    }

    #[test]
    fn artifact_spellings_normalise_to_one_key() {
        let a = Params::parse("artifact=pkg%3ANPM%2Flodash%404.17.21", &["artifact"]).unwrap();
        let b = Params::parse("artifact=pkg:npm/lodash@4.17.21", &["artifact"]).unwrap();
        assert_eq!(a.artifact("artifact").unwrap(), b.artifact("artifact").unwrap());
        assert_eq!(b.artifact("artifact").unwrap().as_deref(), Some("pkg:npm/lodash@4.17.21"));
    }

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let t = encode_cursor("pkg:npm/a@1", "CVE-1");
        let p = Params::parse(&format!("page_token={t}"), &["page_token"]).unwrap();
        assert_eq!(p.page_token().unwrap(), Some(("pkg:npm/a@1".into(), "CVE-1".into())));
        let p = Params::parse("page_token=zzz", &["page_token"]).unwrap();
        assert!(p.page_token().is_err());
    }
}
