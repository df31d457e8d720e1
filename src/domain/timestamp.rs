//! UTC timestamps that remember the precision their source gave.
//!
//! Invariants: ordering is by instant only; formatting is RFC 3339 in UTC with `Z` and
//! exactly the number of fractional digits the source had (0..=9), so canonical output
//! never invents or drops precision.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// An instant in UTC plus the number of fractional-second digits of its source text.
#[derive(Clone, Copy, Debug)]
pub struct Timestamp {
    /// Nanoseconds since the Unix epoch.
    nanos: i128,
    /// Fractional digits to print (0..=9).
    digits: u8,
}

/// A timestamp could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid RFC 3339 timestamp {value:?}: {reason}")]
pub struct TimestampError {
    pub value: String,
    pub reason: String,
}

impl Timestamp {
    /// The Unix epoch (used for statements that carry no timestamp anywhere).
    pub const EPOCH: Timestamp = Timestamp { nanos: 0, digits: 0 };

    /// Parses RFC 3339 (any offset; `z`/`t` accepted), keeping the fractional precision.
    pub fn parse(s: &str) -> Result<Self, TimestampError> {
        let t = s.trim();
        let err = |reason: String| TimestampError { value: s.to_string(), reason };
        let dt = OffsetDateTime::parse(t, &Rfc3339)
            .or_else(|_| {
                // Some producers write a date-time with a space or without seconds' offset colon;
                // accept only the common "YYYY-MM-DD" date as midnight UTC besides strict RFC 3339.
                if t.len() == 10 {
                    OffsetDateTime::parse(&format!("{t}T00:00:00Z"), &Rfc3339)
                } else {
                    Err(time::error::Parse::from(time::error::TryFromParsed::InsufficientInformation))
                }
            })
            .map_err(|e| err(e.to_string()))?;
        let digits = fraction_digits(t);
        Ok(Timestamp { nanos: dt.unix_timestamp_nanos(), digits })
    }

    /// From nanoseconds since the epoch with the given fractional precision.
    pub fn from_unix_nanos(nanos: i128, digits: u8) -> Self {
        Timestamp { nanos, digits: digits.min(9) }
    }

    /// Seconds since the epoch, as written (truncated).
    pub fn unix_seconds(&self) -> i64 {
        (self.nanos.div_euclid(1_000_000_000)) as i64
    }

    pub fn unix_nanos(&self) -> i128 {
        self.nanos
    }

    /// Whole milliseconds since the epoch.
    pub fn unix_millis(&self) -> i64 {
        (self.nanos.div_euclid(1_000_000)) as i64
    }

    pub fn digits(&self) -> u8 {
        self.digits
    }

    /// Age of `self` at `at`, in seconds (fractional); negative when `self` is later.
    pub fn seconds_until(&self, at: &Timestamp) -> f64 {
        (at.nanos - self.nanos) as f64 / 1e9
    }
}

fn fraction_digits(s: &str) -> u8 {
    // The fraction, if any, follows the seconds: "...:SS.ffff" then 'Z' or an offset.
    let Some(tpos) = s.find(['T', 't', ' ']) else {
        return 0;
    };
    let time_part = &s[tpos + 1..];
    match time_part.find('.') {
        Some(dot) => time_part[dot + 1..].chars().take_while(|c| c.is_ascii_digit()).count().min(9) as u8,
        None => 0,
    }
}

impl PartialEq for Timestamp {
    fn eq(&self, other: &Self) -> bool {
        self.nanos == other.nanos
    }
}
impl Eq for Timestamp {}
impl PartialOrd for Timestamp {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Timestamp {
    fn cmp(&self, other: &Self) -> Ordering {
        self.nanos.cmp(&other.nanos)
    }
}
impl std::hash::Hash for Timestamp {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.nanos.hash(state)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(self.nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            dt.month() as u8,
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        )?;
        if self.digits > 0 {
            let frac = format!("{:09}", dt.nanosecond());
            write!(f, ".{}", &frac[..self.digits as usize])?;
        }
        f.write_str("Z")
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Timestamp::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_offsets_to_utc_and_keeps_precision() {
        let t = Timestamp::parse("2023-01-08T18:02:03.647787998-06:00").unwrap();
        assert_eq!(t.to_string(), "2023-01-09T00:02:03.647787998Z");
        let t = Timestamp::parse("2022-03-03T11:00:00.000Z").unwrap();
        assert_eq!(t.to_string(), "2022-03-03T11:00:00.000Z");
        let t = Timestamp::parse("2022-12-22T16:36:43-05:00").unwrap();
        assert_eq!(t.to_string(), "2022-12-22T21:36:43Z");
    }

    #[test]
    fn orders_by_instant_not_text() {
        let a = Timestamp::parse("2022-12-22T16:36:43-05:00").unwrap();
        let b = Timestamp::parse("2022-12-22T21:36:43.000Z").unwrap();
        assert_eq!(a, b);
        let c = Timestamp::parse("2022-12-22T20:56:05-05:00").unwrap();
        assert!(c > a);
    }

    #[test]
    fn rejects_garbage_with_the_value() {
        let e = Timestamp::parse("yesterday").unwrap_err();
        assert_eq!(e.value, "yesterday");
    }
}
