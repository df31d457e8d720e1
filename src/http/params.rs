//! The query parameters of the `/v1` endpoints. Each endpoint declares one struct, read by
//! actix-web's `web::Query<T>` (serde_urlencoded), `#[serde(deny_unknown_fields)]`, whose
//! fields are all optional and each read by the function here named after the parameter
//! (`#[serde(default, deserialize_with = "params::artifact")] artifact`): the value is
//! trimmed, must not be empty nor longer than 1024 bytes, and is then parsed to its type
//! (an artifact key, ms since the epoch, a status or code enum, a page cursor). Page
//! tokens are opaque (base64url of the last key of the previous page).
//!
//! Invariants: a handler reads only the parameters it declared (an unknown one is an
//! error, never silently ignored); a parameter given twice is an error; every failure is
//! a 400 `invalid_parameter` whose message is `name: reason` ([`ApiError::param`]): a
//! reader puts its parameter's name in its own error, and [`query_error`] (the
//! `web::QueryConfig` error handler) gives serde's errors about a name (unknown,
//! repeated) the same form; page tokens round-trip exactly.

use super::error::{ApiError, ErrorCode};
use crate::domain::codes::ConflictReason;
use crate::domain::consensus::ConsensusStatus;
use crate::domain::keys::parse_key;
use crate::domain::timestamp::Timestamp;
use actix_web::error::QueryPayloadError;
use actix_web::http::StatusCode;
use base64::Engine;
use serde::de::{Deserialize, Deserializer, Error as _};
use std::fmt::Display;

/// The longest value a parameter takes, in bytes.
const MAX_VALUE_BYTES: usize = 1024;

/// Reads the value of parameter `name`: trimmed, not empty, at most 1024 bytes and without
/// U+FFFD (what the decoder puts for percent-encoded bytes that are not UTF-8), then
/// `parse`d; an error is `name: reason`.
pub fn read<'de, D: Deserializer<'de>, T, E: Display>(
    d: D,
    name: &str,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<Option<T>, D::Error> {
    let raw = String::deserialize(d)?;
    let invalid = |reason: &dyn Display| D::Error::custom(ApiError::param(name, reason));
    match raw.trim() {
        "" => Err(invalid(&"must not be empty")),
        v if v.len() > MAX_VALUE_BYTES => Err(invalid(&"longer than 1024 bytes")),
        v if v.contains(char::REPLACEMENT_CHARACTER) => Err(invalid(&"not valid percent-encoded UTF-8")),
        v => parse(v).map(Some).map_err(|e| invalid(&e)),
    }
}

/// A value that is only text (a vulnerability id, an issuer).
fn text(s: &str) -> Result<String, std::convert::Infallible> {
    Ok(s.to_string())
}

/// `artifact`: an artifact identifier, normalised to its key (any spelling of the same
/// purl gives the same key).
pub fn artifact<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    read(d, "artifact", |s| parse_key(s).map(|k| k.key))
}

/// `package`: a package identifier (an artifact identifier without version and qualifiers).
pub fn package<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    read(d, "package", |s| parse_key(s).map(|k| k.package))
}

/// `vulnerability`: a vulnerability id, as stated.
pub fn vulnerability<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    read(d, "vulnerability", text)
}

/// `issuer`: an issuer id.
pub fn issuer<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    read(d, "issuer", text)
}

fn time_ms(s: &str) -> Result<i64, impl Display> {
    Timestamp::parse(s).map(|t| t.unix_millis())
}

/// `since`: an RFC 3339 time, as ms since the epoch.
pub fn since<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    read(d, "since", time_ms)
}

/// `as_of`: an RFC 3339 time, as ms since the epoch.
pub fn as_of<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    read(d, "as_of", time_ms)
}

/// `status`: a consensus status.
pub fn status<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ConsensusStatus>, D::Error> {
    read(d, "status", |s| {
        ConsensusStatus::deserialize(serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s)).map_err(
            |_| {
                format!(
                    "{s:?} is not one of affected, not_affected, fixed, under_investigation, disputed, inconclusive"
                )
            },
        )
    })
}

/// `reason`: a conflict reason (an unknown one is an error naming the reasons).
pub fn reason<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ConflictReason>, D::Error> {
    read(d, "reason", |s| {
        s.parse::<ConflictReason>().map_err(|_| {
            let all: Vec<&str> = ConflictReason::ALL.iter().map(|r| r.as_str()).collect();
            format!("{s:?} is not one of {}", all.join(", "))
        })
    })
}

/// `page_size` as given: the integer, or `None` when it is not one. Its range is the
/// instance's (`api.max_page_size`), so [`PageSize::limit`] checks it, not the reader.
pub struct PageSize(Option<usize>);

impl PageSize {
    /// The page size asked for (`default` when not given), in 1..=max.
    pub fn limit(size: Option<PageSize>, default: usize, max: usize) -> Result<usize, ApiError> {
        match size {
            None => Ok(default),
            Some(PageSize(Some(n))) if (1..=max).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::param("page_size", format!("must be an integer in 1..={max}"))),
        }
    }
}

/// `page_size`: see [`PageSize`].
pub fn page_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PageSize>, D::Error> {
    read(d, "page_size", |s| Ok::<_, std::convert::Infallible>(PageSize(s.parse().ok())))
}

/// `page_token`: the cursor of the previous page (artifact, vulnerability).
pub fn page_token<'de, D: Deserializer<'de>>(d: D) -> Result<Option<(String, String)>, D::Error> {
    read(d, "page_token", |s| decode_cursor(s).ok_or("not a token this API issued"))
}

/// The error handler of `web::Query` (`web::QueryConfig`): a 400 `invalid_parameter`
/// naming the parameter.
pub fn query_error(err: QueryPayloadError, _req: &actix_web::HttpRequest) -> actix_web::Error {
    match err {
        QueryPayloadError::Deserialize(e) => named(&e.to_string()).into(),
        other => ApiError::param("query", other).into(),
    }
}

/// The error of a query string that does not deserialize. A reader's error already is
/// `name: reason`; serde's errors about a parameter's name are its fixed wording of
/// `Error::unknown_field` and `Error::duplicate_field` (pinned by the tests below), whose
/// name is taken out of them.
fn named(message: &str) -> ApiError {
    if let Some((name, expected)) =
        message.strip_prefix("unknown field `").and_then(|rest| rest.rsplit_once("`, expected "))
    {
        return ApiError::param(name, format!("unknown parameter (expected {expected})"));
    }
    if let Some(name) = message.strip_prefix("duplicate field `").and_then(|rest| rest.strip_suffix('`')) {
        return ApiError::param(name, "given more than once");
    }
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidParameter, message)
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
    use serde::Deserialize;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Q {
        #[serde(default, deserialize_with = "artifact")]
        artifact: Option<String>,
        #[serde(default, deserialize_with = "package")]
        package: Option<String>,
        #[serde(default, deserialize_with = "issuer")]
        issuer: Option<String>,
        #[serde(default, deserialize_with = "since")]
        since: Option<i64>,
        #[serde(default, deserialize_with = "status")]
        status: Option<ConsensusStatus>,
        #[serde(default, deserialize_with = "reason")]
        reason: Option<ConflictReason>,
        #[serde(default, deserialize_with = "page_size")]
        page_size: Option<PageSize>,
        #[serde(default, deserialize_with = "page_token")]
        page_token: Option<(String, String)>,
    }

    /// What `web::Query` and the error handler make of `query`.
    fn parse(query: &str) -> Result<Q, ApiError> {
        actix_web::web::Query::<Q>::from_query(query).map(|q| q.into_inner()).map_err(|e| match e {
            QueryPayloadError::Deserialize(e) => named(&e.to_string()),
            other => panic!("{other}"),
        })
    }

    fn message(query: &str) -> String {
        let e = parse(query).err().unwrap_or_else(|| panic!("{query} is refused"));
        assert_eq!((e.status, e.code), (StatusCode::BAD_REQUEST, ErrorCode::InvalidParameter), "{query}");
        e.message
    }

    #[test]
    fn parameters_are_named_in_errors() {
        assert_eq!(
            message("artifact=pkg:npm/x@1&bogus=1"),
            "bogus: unknown parameter (expected one of `artifact`, `package`, `issuer`, `since`, `status`, \
             `reason`, `page_size`, `page_token`)"
        );
        assert_eq!(message("issuer=a&issuer=b"), "issuer: given more than once");
        assert_eq!(message("issuer="), "issuer: must not be empty");
        assert_eq!(message("issuer=+%20"), "issuer: must not be empty");
        assert_eq!(message("issuer"), "issuer: must not be empty");
        assert_eq!(message(&format!("issuer={}", "x".repeat(1025))), "issuer: longer than 1024 bytes");
        assert_eq!(message("issuer=%FF"), "issuer: not valid percent-encoded UTF-8");
        assert!(message("since=yesterday").starts_with("since: "));
        assert!(message("status=maybe").starts_with("status: \"maybe\" is not one of affected,"));
        assert!(message("artifact=not-a-key").starts_with("artifact: "));
        assert!(message("package=not-a-key").starts_with("package: "));
        assert_eq!(
            message("reason=bogus"),
            "reason: \"bogus\" is not one of missing_provenance, scope_mismatch, status_disagreement"
        );
        assert_eq!(message("page_token=zzz"), "page_token: not a token this API issued");
        assert_eq!(message("page_size="), "page_size: must not be empty");
        // An unknown name with serde's own separator in it is still named whole.
        assert!(message("a%60%2C+expected+b=1").starts_with("a`, expected b: unknown parameter"));
        let q = parse("issuer=+acme+&since=2024-01-01T00:00:00Z&status=disputed&reason=scope_mismatch").unwrap();
        assert_eq!(q.issuer.as_deref(), Some("acme"));
        assert_eq!(q.since, Some(1_704_067_200_000));
        assert_eq!(q.status, Some(ConsensusStatus::Disputed));
        assert_eq!(q.reason, Some(ConflictReason::ScopeMismatch));
        assert!(parse("").is_ok_and(|q| q.artifact.is_none() && q.page_size.is_none()));
    }

    #[test]
    fn page_size_is_checked_against_the_instance_range() {
        let limit = |q: &str| PageSize::limit(parse(q).unwrap().page_size, 100, 1000).map_err(|e| e.message);
        assert_eq!(limit(""), Ok(100));
        assert_eq!(limit("page_size=1000"), Ok(1000));
        assert_eq!(limit("page_size=+7+"), Ok(7));
        for bad in ["page_size=0", "page_size=1001", "page_size=-1", "page_size=ten"] {
            assert_eq!(limit(bad), Err("page_size: must be an integer in 1..=1000".to_string()), "{bad}");
        }
    }

    #[test]
    fn artifact_spellings_normalise_to_one_key() {
        let a = parse("artifact=pkg%3ANPM%2Flodash%404.17.21").unwrap().artifact;
        let b = parse("artifact=pkg:npm/lodash@4.17.21").unwrap().artifact;
        assert_eq!(a, b);
        assert_eq!(b.as_deref(), Some("pkg:npm/lodash@4.17.21"));
        assert_eq!(parse("package=pkg:npm/lodash@4.17.21").unwrap().package.as_deref(), Some("pkg:npm/lodash"));
    }

    #[test]
    fn cursors_round_trip_and_reject_forgeries() {
        let t = encode_cursor("pkg:npm/a@1", "CVE-1");
        assert_eq!(parse(&format!("page_token={t}")).unwrap().page_token, Some(("pkg:npm/a@1".into(), "CVE-1".into())));
        assert!(parse("page_token=zzz").is_err());
    }
}
