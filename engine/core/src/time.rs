//! [`Time`]: a moment, as the core, the store and the API carry it.
//!
//! One type with one text form: RFC 3339 in UTC with exactly three decimals
//! (`2026-11-30T08:15:00.000Z`). Every time written — in instances, events,
//! timers, records, the API — goes through [`Time`]'s `Display`, so stored
//! text is fixed-width and its byte order is its time order (the store's
//! keys rely on that). Reading accepts any RFC 3339 text with an offset, so
//! data written by hand or by an older version reads back; it is written in
//! the one form the next time.
//!
//! Arithmetic is checked: past jiff's range (about ±9999 years) there is no
//! result, never a panic.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A moment in time, in UTC, to the millisecond as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(jiff::Timestamp);

/// Text that is not a moment.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a time (RFC 3339 with an offset, e.g. 2026-11-30T08:15:00Z): {reason}")]
pub struct TimeError {
    pub text: String,
    pub reason: String,
}

impl Time {
    /// The Unix epoch; what a missing time of old data reads as.
    pub const EPOCH: Time = Time(jiff::Timestamp::UNIX_EPOCH);

    pub fn from_timestamp(t: jiff::Timestamp) -> Time {
        Time(t)
    }

    pub fn timestamp(self) -> jiff::Timestamp {
        self.0
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0.as_millisecond()
    }

    pub fn from_millis(ms: i64) -> Option<Time> {
        jiff::Timestamp::from_millisecond(ms).ok().map(Time)
    }

    pub fn checked_add(self, d: jiff::SignedDuration) -> Option<Time> {
        self.0.checked_add(d).ok().map(Time)
    }

    pub fn checked_add_secs(self, seconds: i64) -> Option<Time> {
        self.checked_add(jiff::SignedDuration::from_secs(seconds))
    }

    /// `minutes` later; `None` past [`flowform_model::defs::MAX_MINUTES`] or
    /// jiff's range (minutes may come from instance data).
    pub fn checked_add_mins(self, minutes: i64) -> Option<Time> {
        if !(0..=flowform_model::defs::MAX_MINUTES).contains(&minutes) {
            return None;
        }
        self.checked_add(jiff::SignedDuration::from_mins(minutes))
    }

    /// The time from `earlier` to this one (negative when `earlier` is later).
    pub fn since(self, earlier: Time) -> jiff::SignedDuration {
        self.0.duration_since(earlier.0)
    }

    /// The wall clock in the zone named (an IANA name; UTC when none or
    /// unknown), as `2026-11-30T16:15:00`: what dates in readable numbers
    /// and ids (`{yyyyMMdd}`) are taken from.
    pub fn local_text(self, zone: Option<&str>) -> String {
        let tz = zone.and_then(|z| jiff::tz::TimeZone::get(z).ok()).unwrap_or(jiff::tz::TimeZone::UTC);
        self.0.to_zoned_datetime(tz).strftime("%Y-%m-%dT%H:%M:%S").to_string()
    }

    /// Parses stored or submitted text; `None` when it is not a time.
    pub fn parse(text: &str) -> Option<Time> {
        text.parse().ok()
    }
}

impl From<jiff::Timestamp> for Time {
    fn from(t: jiff::Timestamp) -> Time {
        Time(t)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3}", self.0)
    }
}

impl FromStr for Time {
    type Err = TimeError;
    fn from_str(text: &str) -> Result<Time, TimeError> {
        text.parse::<jiff::Timestamp>().map(Time).map_err(|e| TimeError { text: text.into(), reason: e.to_string() })
    }
}

impl PartialEq<str> for Time {
    fn eq(&self, other: &str) -> bool {
        Time::parse(other) == Some(*self)
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Time;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time with an offset")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Time, E> {
                // Old data may hold an empty time where none was known.
                if v.is_empty() {
                    return Ok(Time::EPOCH);
                }
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(Visitor)
    }
}

/// A time from a literal, for tests and fixtures: panics on text that is
/// not a time (never call it with data).
#[doc(hidden)]
pub fn tm(text: &str) -> Time {
    text.parse().unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_text_form_and_any_offset_read() {
        let t: Time = "2026-11-30T16:15:00+08:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-30T08:15:00.000Z");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"2026-11-30T08:15:00.000Z\"");
        assert_eq!(serde_json::from_str::<Time>("\"2026-11-30T08:15:00Z\"").unwrap(), t);
        let err = "30.11.2026".parse::<Time>().unwrap_err();
        assert!(err.to_string().contains("30.11.2026"), "{err}");
        assert!(serde_json::from_str::<Time>("\"tomorrow\"").is_err());
        assert_eq!(serde_json::from_str::<Time>("\"\"").unwrap(), Time::EPOCH);
        assert_eq!(t.local_text(Some("Asia/Shanghai")), "2026-11-30T16:15:00");
        assert_eq!(t.local_text(None), "2026-11-30T08:15:00");
    }

    #[test]
    fn arithmetic_past_the_range_has_no_result() {
        let t: Time = "2026-11-30T08:15:00Z".parse().unwrap();
        assert_eq!(t.checked_add_mins(-1), None);
        assert_eq!(t.checked_add_mins(i64::MAX), None);
        assert_eq!(t.checked_add_secs(i64::MAX / 2), None);
        assert_eq!(t.checked_add_mins(90).unwrap().to_string(), "2026-11-30T09:45:00.000Z");
    }

    proptest! {
        /// The text of a time orders as the time does, and reads back as it.
        #[test]
        fn text_order_is_time_order(a in -62_000_000_000_000i64..253_000_000_000_000, b in -62_000_000_000_000i64..253_000_000_000_000) {
            let (ta, tb) = (Time::from_millis(a).unwrap(), Time::from_millis(b).unwrap());
            let (sa, sb) = (ta.to_string(), tb.to_string());
            prop_assert_eq!(sa.len(), 24);
            prop_assert_eq!(ta.cmp(&tb), sa.cmp(&sb));
            prop_assert_eq!(sa.parse::<Time>().unwrap(), ta);
        }
    }
}
