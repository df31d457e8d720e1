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

/// A timestamp's RFC 3339 text, formatted on the stack (no allocation): what `Display`
/// and `Serialize` write.
pub struct TimestampText {
    buf: [u8; 40],
    len: usize,
}

impl std::ops::Deref for TimestampText {
    type Target = str;
    fn deref(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl Timestamp {
    /// The RFC 3339 text: `YYYY-MM-DDTHH:MM:SS`, then `.` and the source's number of
    /// fractional digits when it had any, then `Z`.
    pub fn text(&self) -> TimestampText {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(self.nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut t = TimestampText { buf: [0; 40], len: 0 };
        let year = dt.year();
        if !(0..=9999).contains(&year) {
            // Outside four digits (the `time` crate allows +-9999): the general formatter.
            use std::io::Write;
            let mut w = &mut t.buf[..];
            let _ = write!(w, "{year:04}");
            t.len = 40 - w.len();
        } else {
            t.push_digits(year as u32, 4);
        }
        t.push(b'-');
        t.push_digits(dt.month() as u32, 2);
        t.push(b'-');
        t.push_digits(dt.day() as u32, 2);
        t.push(b'T');
        t.push_digits(dt.hour() as u32, 2);
        t.push(b':');
        t.push_digits(dt.minute() as u32, 2);
        t.push(b':');
        t.push_digits(dt.second() as u32, 2);
        if self.digits > 0 {
            t.push(b'.');
            let digits = self.digits.min(9) as u32;
            t.push_digits(dt.nanosecond() / 10u32.pow(9 - digits), digits as usize);
        }
        t.push(b'Z');
        t
    }
}

impl TimestampText {
    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// `v` as exactly `n` decimal digits (zero-padded; `v` < 10^n).
    fn push_digits(&mut self, mut v: u32, n: usize) {
        for i in (0..n).rev() {
            self.buf[self.len + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        self.len += n;
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text())
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

    /// The formatter `text` replaced (`write!` with padding), as the reference.
    fn reference(t: &Timestamp) -> String {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(t.nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            dt.month() as u8,
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        if t.digits > 0 {
            let frac = format!("{:09}", dt.nanosecond());
            s.push('.');
            s.push_str(&frac[..t.digits as usize]);
        }
        s + "Z"
    }

    #[test]
    fn text_equals_the_padded_reference_formatter() {
        let mut nanos: Vec<i128> = vec![0, 1, -1, 999_999_999, 1_000_000_000, -62_135_596_800_000_000_000];
        // Years -9999 and 9999 (the `time` crate's range), and a spread in between.
        nanos.push(
            OffsetDateTime::new_utc(
                time::Date::from_calendar_date(-9999, time::Month::January, 1).unwrap(),
                time::Time::MIDNIGHT,
            )
            .unix_timestamp_nanos(),
        );
        nanos.push(
            OffsetDateTime::new_utc(
                time::Date::from_calendar_date(9999, time::Month::December, 31).unwrap(),
                time::Time::from_hms_nano(23, 59, 59, 999_999_999).unwrap(),
            )
            .unix_timestamp_nanos(),
        );
        let mut x: u64 = 0x5DEECE66D;
        for _ in 0..2_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let spread = (x as i128) * 13_737_474_737; // over years 0..9999, any nanosecond
            nanos.push(spread % 315_537_897_599_000_000_000 - 62_167_219_200_000_000_000);
        }
        for n in nanos {
            for digits in 0..=9 {
                let t = Timestamp::from_unix_nanos(n, digits);
                assert_eq!(&*t.text(), reference(&t), "{n} / {digits}");
                assert_eq!(t.to_string(), reference(&t));
                assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", reference(&t)));
            }
        }
    }

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
