//! Schedule periods: which period a moment falls in. Pure.

use crate::time::Time;
use flowform_model::ScheduleDef;
use jiff::civil::{Date, Time as Clock};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

fn at_time(at: &str) -> Clock {
    let (h, m) = at.split_once(':').unwrap_or(("0", "0"));
    Clock::new(h.parse().unwrap_or(0), m.parse().unwrap_or(0), 0, 0).unwrap_or_default()
}

fn start_of(date: Date, at: Clock, tz: &TimeZone) -> Option<Timestamp> {
    Some(date.to_datetime(at).to_zoned_datetime(tz.clone()).ok()?.timestamp())
}

/// The latest period of the schedule that has started at `now`: its key (e.g.
/// `2026-12` for a monthly schedule) and its start.
pub fn period(def: &ScheduleDef, now: Time) -> Option<(String, Time)> {
    let tz = TimeZone::get(&def.timezone.value).ok()?;
    let now: Timestamp = now.timestamp();
    let local = now.to_zoned_datetime(tz.clone());
    let at = at_time(&def.at);
    let n = def.every.1.max(1) as i64;
    let (key, start) = match def.every.0.as_str() {
        "months" => {
            let mut date = local.date().first_of_month();
            if start_of(date, at, &tz)? > now {
                date = date.checked_sub(jiff::Span::new().months(1)).ok()?;
            }
            while (date.year() as i64 * 12 + date.month() as i64 - 1) % n != 0 {
                date = date.checked_sub(jiff::Span::new().months(1)).ok()?;
            }
            (format!("{:04}-{:02}", date.year(), date.month()), start_of(date, at, &tz)?)
        }
        "weeks" | "days" => {
            let step = if def.every.0 == "weeks" { 7 } else { 1 };
            let mut date = local.date();
            if step == 7 {
                date = date.checked_sub(jiff::Span::new().days(date.weekday().to_monday_zero_offset() as i64)).ok()?;
            }
            if start_of(date, at, &tz)? > now {
                date = date.checked_sub(jiff::Span::new().days(step)).ok()?;
            }
            let epoch = Date::new(1970, 1, 5).ok()?;
            let days = |d: Date| (d - epoch).get_days() as i64;
            while (days(date) / step) % n != 0 {
                date = date.checked_sub(jiff::Span::new().days(step)).ok()?;
            }
            (date.to_string(), start_of(date, at, &tz)?)
        }
        "hours" | "minutes" => {
            let unit = if def.every.0 == "hours" { 3600 } else { 60 };
            let len = unit * n;
            let secs = now.as_second();
            let start = secs - secs.rem_euclid(len);
            let ts = Timestamp::from_second(start).ok()?;
            (format!("{}", ts.to_zoned_datetime(tz.clone()).datetime()), ts)
        }
        _ => return None,
    };
    Some((key, Time::from(start)))
}

/// Whether a period's start is so long ago that `catch_up: skip` leaves it out.
pub fn missed(start: Time, now: Time) -> bool {
    now.since(start) > SignedDuration::from_mins(15)
}

/// `from` plus one `every` of the schedule, in its time zone (for `anchor: completion`).
pub fn next_after(def: &ScheduleDef, from: Time) -> Option<Time> {
    next_after_n(def, from, def.every.1.max(1) as i64)
}

/// The interval of a schedule for one record: `every`'s number, or the
/// record's own (`every: { days: FIELD }`); `None` when the record has no
/// usable value (missing, below 1 or past the 10-year limit).
pub fn interval_for(def: &ScheduleDef, record: &serde_json::Map<String, serde_json::Value>) -> Option<i64> {
    match &def.every_field {
        None => Some(def.every.1.max(1) as i64),
        Some(field) => {
            let n = record.get(&field.value).and_then(serde_json::Value::as_i64)?;
            (1..=flowform_model::defs::every_limit(&def.every.0)).contains(&n).then_some(n)
        }
    }
}

/// When the first instance for a record is due with `first_due: FIELD`: the
/// date in the field (at the schedule's `at`, in its zone) plus the interval;
/// `None` when the record has no such date (due at once).
pub fn first_due(def: &ScheduleDef, record: &serde_json::Map<String, serde_json::Value>, n: i64) -> Option<Time> {
    let field = def.first_due.as_ref()?;
    let text = record.get(&field.value).and_then(serde_json::Value::as_str)?;
    let tz = TimeZone::get(&def.timezone.value).ok()?;
    let from = match text.parse::<Timestamp>() {
        Ok(t) => t,
        Err(_) => start_of(text.parse::<Date>().ok()?, at_time(&def.at), &tz)?,
    };
    next_after_n(def, Time::from(from), n)
}

/// `from` plus `n` units of the schedule's `every`, in its time zone.
pub fn next_after_n(def: &ScheduleDef, from: Time, n: i64) -> Option<Time> {
    let tz = TimeZone::get(&def.timezone.value).ok()?;
    let t: Timestamp = from.timestamp();
    // `try_*`: a period past jiff's range is no next date, never a panic.
    let span = match def.every.0.as_str() {
        "months" => jiff::Span::new().try_months(n),
        "weeks" => jiff::Span::new().try_weeks(n),
        "days" => jiff::Span::new().try_days(n),
        "hours" => jiff::Span::new().try_hours(n),
        _ => jiff::Span::new().try_minutes(n),
    }
    .ok()?;
    let due = t.to_zoned_datetime(tz).checked_add(span).ok()?.timestamp();
    Some(Time::from(due))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowform_model::{Label, Pos, Sp};

    fn def(unit: &str, n: u32) -> ScheduleDef {
        ScheduleDef {
            name: "s".into(),
            file: String::new(),
            pos: Pos::default(),
            title: Label::default(),
            workflow: Sp::new("w".into(), Pos::default()),
            every: (unit.into(), n),
            at: "08:00".into(),
            timezone: Sp::new("Asia/Shanghai".into(), Pos::default()),
            every_field: None,
            first_due: None,
            record: None,
            filter: None,
            data: Default::default(),
            catch_up_once: true,
            after_completion: false,
            roles: Vec::new(),
        }
    }

    /// A daily start at a time the spring-forward jump skips starts once,
    /// at the first real time after it; on the fall-back day, once.
    #[test]
    fn periods_across_summer_time() {
        let mut berlin = def("days", 1);
        berlin.timezone = Sp::new("Europe/Berlin".into(), Pos::default());
        berlin.at = "02:30".into();
        // 2026-03-29 02:30 does not exist in Berlin: the period starts at 03:30 CEST = 01:30 UTC.
        assert_eq!(period(&berlin, crate::time::tm("2026-03-29T01:45:00Z")).unwrap(), ("2026-03-29".into(), crate::time::tm("2026-03-29T01:30:00.000Z")));
        assert_eq!(period(&berlin, crate::time::tm("2026-03-29T01:00:00Z")).unwrap().0, "2026-03-28");
        // 2026-10-25 02:30 happens twice; the period starts at the first (CEST, 00:30 UTC), once.
        assert_eq!(period(&berlin, crate::time::tm("2026-10-25T01:45:00Z")).unwrap(), ("2026-10-25".into(), crate::time::tm("2026-10-25T00:30:00.000Z")));
        assert_eq!(
            next_after(&def("months", 1), crate::time::tm("2026-01-31T00:00:00.000Z")).map(|x| x.to_string()).as_deref(),
            Some("2026-02-28T00:00:00.000Z")
        );
    }

    #[test]
    fn per_record_intervals_and_first_due_dates() {
        let mut d = def("days", 1);
        d.every_field = Some(Sp::new("interval".into(), Pos::default()));
        d.first_due = Some(Sp::new("last".into(), Pos::default()));
        let record = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert_eq!(interval_for(&d, &record(serde_json::json!({"interval": 90}))), Some(90));
        assert_eq!(interval_for(&d, &record(serde_json::json!({"interval": "90"}))), None, "text is not an interval");
        assert_eq!(interval_for(&d, &record(serde_json::json!({"interval": 0}))), None);
        assert_eq!(interval_for(&d, &record(serde_json::json!({"interval": 1_000_000}))), None, "past the 10-year limit");
        assert_eq!(interval_for(&d, &record(serde_json::json!({}))), None);
        // Last done on 2026-10-01: due 90 days later at 08:00 Shanghai (00:00 UTC).
        assert_eq!(first_due(&d, &record(serde_json::json!({"last": "2026-10-01"})), 90).map(|x| x.to_string()).as_deref(), Some("2026-12-30T00:00:00.000Z"));
        assert_eq!(first_due(&d, &record(serde_json::json!({})), 90), None);
    }

    #[test]
    fn periods() {
        // 2026-12-01 07:59 in Shanghai is still November's period.
        assert_eq!(period(&def("months", 1), crate::time::tm("2026-11-30T23:59:00Z")).unwrap().0, "2026-11");
        assert_eq!(
            period(&def("months", 1), crate::time::tm("2026-12-01T00:00:00Z")).unwrap(),
            ("2026-12".into(), crate::time::tm("2026-12-01T00:00:00.000Z"))
        );
        assert_eq!(period(&def("months", 3), crate::time::tm("2026-12-15T00:00:00Z")).unwrap().0, "2026-10");
        assert_eq!(period(&def("days", 1), crate::time::tm("2026-11-25T01:00:00Z")).unwrap().0, "2026-11-25");
        assert_eq!(period(&def("days", 1), crate::time::tm("2026-11-24T23:00:00Z")).unwrap().0, "2026-11-24");
        assert_eq!(period(&def("weeks", 1), crate::time::tm("2026-11-25T01:00:00Z")).unwrap().0, "2026-11-23");
        assert_eq!(period(&def("hours", 2), crate::time::tm("2026-11-25T01:30:00Z")).unwrap().1, crate::time::tm("2026-11-25T00:00:00.000Z"));
    }
}
