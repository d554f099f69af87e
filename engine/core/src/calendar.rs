//! Working time: deadlines that count only working hours, in the calendar's
//! time zone, skipping weekends and public holidays (and counting make-up days).

use crate::time::Time;
use flowform_model::CalendarDef;
use jiff::civil::{Date, Time as Clock};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

fn time(s: &str) -> Option<Clock> {
    let (h, m) = s.split_once(':')?;
    Clock::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

/// The instant `hhmm` on `date` in `tz`; `24:00` is the next day's midnight
/// (a range may end at the end of the day: `18:00-24:00`).
fn instant(date: Date, hhmm: &str, tz: &TimeZone) -> Option<Timestamp> {
    let dt = if hhmm == "24:00" { date.tomorrow().ok()?.to_datetime(Clock::midnight()) } else { date.to_datetime(time(hhmm)?) };
    Some(dt.to_zoned_datetime(tz.clone()).ok()?.timestamp())
}

fn valid_hours(cal: &CalendarDef) -> Vec<(&str, &str)> {
    cal.hours.iter().filter(|(a, b)| time(a).is_some() && (b == "24:00" || time(b).is_some())).map(|(a, b)| (a.as_str(), b.as_str())).collect()
}

fn is_working_day(cal: &CalendarDef, date: Date) -> bool {
    let text = date.to_string();
    if cal.workdays.contains(&text) {
        return true;
    }
    if cal.holidays.contains(&text) {
        return false;
    }
    cal.weekdays.contains(&(date.weekday().to_monday_one_offset() as u8))
}

/// `start` plus `minutes` of working time. `None` when the calendar has no
/// working time within ten years (or the zone is unknown).
pub fn add_working_minutes(cal: &CalendarDef, start: Time, minutes: i64) -> Option<Time> {
    let tz = TimeZone::get(&cal.timezone.value).ok()?;
    let start: Timestamp = start.timestamp();
    if minutes > flowform_model::defs::MAX_MINUTES {
        return None;
    }
    let mut remaining = SignedDuration::from_mins(minutes.max(0));
    let mut current = start;
    let hours = valid_hours(cal);
    let mut date = start.to_zoned_datetime(tz.clone()).date();
    for _ in 0..3660 {
        if is_working_day(cal, date) {
            for (a, b) in &hours {
                let open = instant(date, a, &tz)?;
                let close = instant(date, b, &tz)?;
                let from = if current > open { current } else { open };
                if from >= close {
                    continue;
                }
                let available = close.duration_since(from);
                if remaining <= available {
                    let due = from.checked_add(remaining).ok()?;
                    return Some(Time::from(due));
                }
                remaining -= available;
                current = close;
            }
        }
        date = date.tomorrow().ok()?;
    }
    None
}

/// The working time between `from` and `to`, in seconds (0 when `to` is
/// not after `from`; `None` when a time or the zone cannot be read).
pub fn working_seconds_between(cal: &CalendarDef, from: Time, to: Time) -> Option<i64> {
    working_seconds_between_times(cal, from.timestamp(), to.timestamp())
}

/// [`working_seconds_between`] of two instants.
pub fn working_seconds_between_times(cal: &CalendarDef, from: Timestamp, to: Timestamp) -> Option<i64> {
    let tz = TimeZone::get(&cal.timezone.value).ok()?;
    if to <= from {
        return Some(0);
    }
    let hours = valid_hours(cal);
    let mut date = from.to_zoned_datetime(tz.clone()).date();
    let last = to.to_zoned_datetime(tz.clone()).date();
    let mut total = 0i64;
    for _ in 0..3660 {
        if is_working_day(cal, date) {
            for (a, b) in &hours {
                let open = instant(date, a, &tz)?;
                let close = instant(date, b, &tz)?;
                let start = if from > open { from } else { open };
                let end = if to < close { to } else { close };
                if end > start {
                    total += end.duration_since(start).as_secs();
                }
            }
        }
        if date >= last {
            return Some(total);
        }
        date = date.tomorrow().ok()?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowform_model::{Pos, Sp};

    fn cal() -> CalendarDef {
        CalendarDef {
            name: "working".into(),
            file: String::new(),
            pos: Pos::default(),
            timezone: Sp::new("Asia/Shanghai".into(), Pos::default()),
            hours: vec![("08:00".into(), "12:00".into()), ("14:00".into(), "17:30".into())],
            weekdays: vec![1, 2, 3, 4, 5],
            holidays: vec!["2026-10-01".into()],
            workdays: vec!["2026-10-10".into()],
        }
    }

    /// In a zone with summer time the working hours stay local hours: the
    /// day the clocks jump has one hour less, the day they fall back one more.
    #[test]
    fn working_time_follows_the_local_clock_across_summer_time() {
        let berlin = CalendarDef {
            timezone: Sp::new("Europe/Berlin".into(), Pos::default()),
            hours: vec![("01:00".into(), "05:00".into())],
            weekdays: vec![1, 2, 3, 4, 5, 6, 7],
            holidays: Vec::new(),
            workdays: Vec::new(),
            ..cal()
        };
        // 2026-03-29: 02:00 → 03:00. From 01:30 CET (00:30 UTC), 60 minutes:
        // 30 until the jump, 30 after it: 03:30 CEST = 01:30 UTC.
        assert_eq!(
            add_working_minutes(&berlin, crate::time::tm("2026-03-29T00:30:00Z"), 60).map(|x| x.to_string()).as_deref(),
            Some("2026-03-29T01:30:00.000Z")
        );
        // That day holds 3 working hours: 200 minutes run into the next day (01:00 CEST = 23:00 UTC, +20).
        assert_eq!(
            add_working_minutes(&berlin, crate::time::tm("2026-03-29T00:00:00Z"), 200).map(|x| x.to_string()).as_deref(),
            Some("2026-03-29T23:20:00.000Z")
        );
        // 2026-10-25: 03:00 → 02:00; 01:00–05:00 local is 5 real hours.
        assert_eq!(
            add_working_minutes(&berlin, crate::time::tm("2026-10-24T23:00:00Z"), 300).map(|x| x.to_string()).as_deref(),
            Some("2026-10-25T04:00:00.000Z")
        );
    }

    #[test]
    fn working_time_between_two_moments() {
        // Wednesday 11:30 → 14:30 Shanghai: 30 minutes before lunch, 30 after.
        assert_eq!(working_seconds_between(&cal(), crate::time::tm("2026-11-25T03:30:00Z"), crate::time::tm("2026-11-25T06:30:00Z")), Some(3600));
        // Friday 17:00 → Monday 08:30: 30 + 30 minutes.
        assert_eq!(working_seconds_between(&cal(), crate::time::tm("2026-11-27T09:00:00Z"), crate::time::tm("2026-11-30T00:30:00Z")), Some(3600));
        assert_eq!(working_seconds_between(&cal(), crate::time::tm("2026-11-30T00:30:00Z"), crate::time::tm("2026-11-27T09:00:00Z")), Some(0));
        // The inverse of adding working minutes.
        let due = add_working_minutes(&cal(), crate::time::tm("2026-11-26T05:00:00Z"), 1440).unwrap();
        assert_eq!(working_seconds_between(&cal(), crate::time::tm("2026-11-26T05:00:00Z"), due), Some(1440 * 60));
    }

    #[test]
    fn counts_only_working_time() {
        // Wednesday 2026-11-25 11:30 in Shanghai = 03:30 UTC; 60 working minutes:
        // 30 before lunch, 30 after: 14:30 Shanghai = 06:30 UTC.
        assert_eq!(
            add_working_minutes(&cal(), crate::time::tm("2026-11-25T03:30:00Z"), 60).map(|x| x.to_string()).as_deref(),
            Some("2026-11-25T06:30:00.000Z")
        );
        // Friday 17:00 + 60 minutes: 30 on Friday, 30 on Monday morning (08:30 = 00:30 UTC).
        assert_eq!(
            add_working_minutes(&cal(), crate::time::tm("2026-11-27T09:00:00Z"), 60).map(|x| x.to_string()).as_deref(),
            Some("2026-11-30T00:30:00.000Z")
        );
        // Outside hours (Saturday): starts counting Monday 08:00.
        assert_eq!(
            add_working_minutes(&cal(), crate::time::tm("2026-11-28T02:00:00Z"), 30).map(|x| x.to_string()).as_deref(),
            Some("2026-11-30T00:30:00.000Z")
        );
        // A holiday is skipped; a make-up Saturday counts.
        assert_eq!(
            add_working_minutes(&cal(), crate::time::tm("2026-09-30T09:00:00Z"), 60).map(|x| x.to_string()).as_deref(),
            Some("2026-10-02T00:30:00.000Z")
        );
        assert_eq!(
            add_working_minutes(&cal(), crate::time::tm("2026-10-09T09:00:00Z"), 60).map(|x| x.to_string()).as_deref(),
            Some("2026-10-10T00:30:00.000Z")
        );
    }

    /// A range may run to the end of the day (`18:00-24:00`, a night shift).
    #[test]
    fn a_range_may_end_at_midnight() {
        let mut night = cal();
        night.hours = vec![("18:00".into(), "24:00".into())];
        // Wednesday 23:30 Shanghai (15:30 UTC) + 60 minutes: 30 that night, 30 from 18:00 Thursday.
        assert_eq!(
            add_working_minutes(&night, crate::time::tm("2026-11-25T15:30:00Z"), 60).map(|x| x.to_string()).as_deref(),
            Some("2026-11-26T10:30:00.000Z")
        );
        assert_eq!(working_seconds_between(&night, crate::time::tm("2026-11-25T15:30:00Z"), crate::time::tm("2026-11-26T10:30:00Z")), Some(3600));
    }
}
