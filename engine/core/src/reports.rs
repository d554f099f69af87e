//! Reports: rows (one per instance, event, movement or record, as the
//! runtime reads them) filtered, grouped by a dimension and measured. Pure:
//! the rows, the time range and the time zone are arguments; the same rows
//! give the same table.

use flowform_model::{MeasureDef, MeasureKind, Model, ReportDef};
pub use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What to compute: the range on the report's `time` (`from` inclusive,
/// `to` exclusive), the dimension, and equality filters on fields.
#[derive(Clone, Debug, Default)]
pub struct ReportQuery {
    pub from: Option<Timestamp>,
    pub to: Option<Timestamp>,
    /// A time bucket (`day`, `week`, `month`, `quarter`, `year`), a field,
    /// or `""` for one total row.
    pub by: String,
    pub filters: Vec<(String, String)>,
    /// The rows given are already those of the range (the caller found them
    /// by the report's time, e.g. in time-ordered facts): not checked again.
    pub range_applied: bool,
}

/// One group of rows and its measures (in the report's order; `None` when
/// the group has no value for it).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportRow {
    /// The dimension's raw value (`2026-11`, `D-ICU`, `hvac_team`); `""` for none.
    pub key: String,
    pub rows: usize,
    pub values: Vec<Option<f64>>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReportTable {
    pub rows: Vec<ReportRow>,
    pub total: ReportRow,
}

/// A row of a report: its fields by name.
pub trait Row {
    fn field(&self, name: &str) -> Option<&Value>;

    /// The instant a time field holds, in microseconds since the epoch
    /// (`None` when it holds no timestamp). Rows that keep their times as
    /// numbers answer without reading text.
    fn time(&self, name: &str) -> Option<i64> {
        self.field(name).and_then(micros)
    }

    /// A number standing for the (non-null) value of `name`, when the row
    /// keeps one: among rows of one kind, equal numbers for equal values and
    /// only for them. Counting distinct values then reads no text.
    fn number_of(&self, _name: &str) -> Option<u128> {
        None
    }
}

/// The instant a timestamp text names, in microseconds since the epoch.
pub fn micros(v: &Value) -> Option<i64> {
    v.as_str()?.parse::<Timestamp>().ok().map(|t| t.as_microsecond())
}

impl Row for Map<String, Value> {
    fn field(&self, name: &str) -> Option<&Value> {
        self.get(name)
    }
}

impl<R: Row> Row for &R {
    fn field(&self, name: &str) -> Option<&Value> {
        (**self).field(name)
    }

    fn time(&self, name: &str) -> Option<i64> {
        (**self).time(name)
    }

    fn number_of(&self, name: &str) -> Option<u128> {
        (**self).number_of(name)
    }
}

fn holds<R: Row>(c: &flowform_model::Condition, r: &R) -> bool {
    c.eval_by(&|f| r.field(f))
}

/// Joins the values of several dimensions in a row's key.
pub const KEY_SEP: &str = "\u{1f}";

/// The text of a value for grouping and filtering (numbers without `.0`).
pub fn key_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Whether a value's text (as [`key_of`] gives it) is `text`, without making the text.
fn key_is(v: &Value, text: &str) -> bool {
    match v {
        Value::Null => text.is_empty(),
        Value::String(s) => s == text,
        Value::Bool(b) => text == if *b { "true" } else { "false" },
        other => key_of(other) == text,
    }
}

/// The bucket of a timestamp in the app's zone: `2026-11-25`, `2026-W48`, `2026-11`, `2026-Q4`, `2026`.
pub fn bucket(t: Timestamp, by: &str, tz: &TimeZone) -> String {
    let z = t.to_zoned_datetime(tz.clone());
    let d = z.date();
    match by {
        "day" => d.to_string(),
        "week" => {
            let w = d.iso_week_date();
            format!("{:04}-W{:02}", w.year(), w.week())
        }
        "month" => format!("{:04}-{:02}", d.year(), d.month()),
        "quarter" => format!("{:04}-Q{}", d.year(), (d.month() - 1) / 3 + 1),
        _ => format!("{:04}", d.year()),
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// The value a measure reads from a row: its field, or the minutes between
/// two timestamps (in working time with a calendar).
fn measured<R: Row>(model: &Model, m: &MeasureDef, row: &R) -> Option<f64> {
    if let Some(f) = &m.field {
        return row.field(&f.value).and_then(number);
    }
    let (a, b, cal) = m.between.as_ref()?;
    let (a, b) = (row.time(&a.value)?, row.time(&b.value)?);
    match cal.as_ref().and_then(|c| model.calendars.get(&c.value)) {
        Some(cal) => {
            let (a, b) = (Timestamp::from_microsecond(a).ok()?, Timestamp::from_microsecond(b).ok()?);
            crate::calendar::working_seconds_between_times(cal, a, b).map(|s| s as f64 / 60.0)
        }
        None => Some((b - a) as f64 / 60_000_000.0),
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

fn measure<R: Row>(model: &Model, m: &MeasureDef, rows: &[&R]) -> Option<f64> {
    let kept: Vec<&R>;
    let rows = match &m.filter {
        Some((_, c)) => {
            kept = rows.iter().copied().filter(|r| holds(c, *r)).collect();
            &kept[..]
        }
        None => rows,
    };
    let values = || -> Vec<f64> { rows.iter().filter_map(|r| measured(model, m, r)).collect() };
    match m.kind {
        MeasureKind::Count => Some(rows.len() as f64),
        MeasureKind::Share => {
            let (_, cond) = m.condition.as_ref()?;
            if rows.is_empty() {
                return None;
            }
            let yes = rows.iter().filter(|r| holds(cond, **r)).count();
            Some(100.0 * yes as f64 / rows.len() as f64)
        }
        MeasureKind::Distinct => {
            let f = m.field.as_ref()?;
            // Rows that keep numbers for the values are counted by them.
            let mut numbers: std::collections::HashSet<u128, foldhash::fast::RandomState> = Default::default();
            let mut numbered = true;
            for r in rows {
                match r.number_of(&f.value) {
                    Some(n) => {
                        numbers.insert(n);
                    }
                    None => {
                        numbered = false;
                        break;
                    }
                }
            }
            if numbered {
                return Some(numbers.len() as f64);
            }
            let mut seen: std::collections::HashSet<std::borrow::Cow<str>> = std::collections::HashSet::new();
            for v in rows.iter().filter_map(|r| r.field(&f.value)).filter(|v| !v.is_null()) {
                seen.insert(match v {
                    Value::String(s) => std::borrow::Cow::Borrowed(s.as_str()),
                    other => std::borrow::Cow::Owned(key_of(other)),
                });
            }
            Some(seen.len() as f64)
        }
        MeasureKind::Sum => {
            let v = values();
            (!v.is_empty()).then(|| v.iter().sum())
        }
        MeasureKind::Avg => {
            let v = values();
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        }
        MeasureKind::Min => values().into_iter().reduce(f64::min),
        MeasureKind::Max => values().into_iter().reduce(f64::max),
        MeasureKind::MeanGap => {
            let f = m.field.as_ref()?;
            let mut times: Vec<i64> = rows.iter().filter_map(|r| r.time(&f.value)).map(|us| us.div_euclid(1_000_000)).collect();
            if times.len() < 2 {
                return None;
            }
            times.sort_unstable();
            let span = (times[times.len() - 1] - times[0]) as f64;
            Some(span / 3600.0 / (times.len() - 1) as f64)
        }
        MeasureKind::First | MeasureKind::Last => {
            let f = m.field.as_ref()?;
            let times = rows.iter().filter_map(|r| r.time(&f.value)).map(|us| us.div_euclid(1_000_000) as f64);
            if m.kind == MeasureKind::First { times.reduce(f64::min) } else { times.reduce(f64::max) }
        }
        MeasureKind::P50 | MeasureKind::P90 => {
            let mut v = values();
            v.sort_by(f64::total_cmp);
            percentile(&v, if m.kind == MeasureKind::P50 { 0.5 } else { 0.9 })
        }
    }
}

fn time_of<R: Row>(rep: &ReportDef, r: &R) -> Option<Timestamp> {
    r.time(&rep.time.value).and_then(|us| Timestamp::from_microsecond(us).ok())
}

/// Whether a row counts: in the range, the report's `where`, the query's filters.
pub fn keeps<R: Row>(rep: &ReportDef, r: &R, q: &ReportQuery) -> bool {
    let in_range = match (q.from, q.to) {
        _ if q.range_applied => true,
        (None, None) => true,
        _ => r.time(&rep.time.value).is_some_and(|t| q.from.is_none_or(|f| t >= f.as_microsecond()) && q.to.is_none_or(|to| t < to.as_microsecond())),
    };
    in_range
        && rep.filter.as_ref().is_none_or(|(_, c)| holds(c, r))
        && q.filters.iter().all(|(k, v)| r.field(k).is_some_and(|x| key_is(x, v) || x.as_array().is_some_and(|a| a.iter().any(|i| key_is(i, v)))))
}

/// The group of a row: the values of the dimensions of `by` (several joined by [`KEY_SEP`]).
pub fn group_key<R: Row>(rep: &ReportDef, r: &R, by: &str, tz: &TimeZone) -> String {
    if !by.contains(',') && !flowform_model::TIME_BUCKETS.contains(&by) {
        return r.field(by).map(key_of).unwrap_or_default();
    }
    by.split(',')
        .map(str::trim)
        .map(|d| {
            if flowform_model::TIME_BUCKETS.contains(&d) {
                time_of(rep, r).map(|t| bucket(t, d, tz)).unwrap_or_default()
            } else {
                r.field(d).map(key_of).unwrap_or_default()
            }
        })
        .collect::<Vec<_>>()
        .join(KEY_SEP)
}

/// The local day around an instant, and the bucket it falls in: rows read
/// in time order find their bucket without converting each time to a date.
struct DayCache {
    /// `[start, end)` of the last day seen, in microseconds, and its bucket.
    last: Option<(i64, i64, u32)>,
    ids: std::collections::HashMap<String, u32>,
}

impl DayCache {
    fn new() -> DayCache {
        DayCache { last: None, ids: std::collections::HashMap::new() }
    }

    /// A number per distinct bucket (`by`) of the instant `us` (1 and up;
    /// `None` at the edge of the calendar, where a day has no end).
    fn id(&mut self, us: i64, by: &str, tz: &TimeZone) -> Option<u32> {
        if let Some((start, end, id)) = self.last
            && (start..end).contains(&us)
        {
            return Some(id);
        }
        let (start, end, t) = Self::day(us, tz)?;
        let next = self.ids.len() as u32 + 1;
        let id = *self.ids.entry(bucket(t, by, tz)).or_insert(next);
        self.last = Some((start, end, id));
        Some(id)
    }

    fn day(us: i64, tz: &TimeZone) -> Option<(i64, i64, Timestamp)> {
        let t = Timestamp::from_microsecond(us).ok()?;
        let z = t.to_zoned_datetime(tz.clone());
        let start = z.start_of_day().ok()?.timestamp().as_microsecond();
        let end = z.date().tomorrow().ok()?.to_zoned_datetime(tz.clone()).ok()?.start_of_day().ok()?.timestamp().as_microsecond();
        Some((start, end, t))
    }
}

/// Runs a report over `rows`: the range, the report's `where` and the
/// query's filters first, then one row per value of the dimension (sorted by
/// it), and the total over every kept row.
///
/// Rows are first grouped by what identifies their values cheaply — the
/// address of a value rows share (a dictionary's), a time bucket's number —
/// and those groups are then merged by their text, so rows that share their
/// values are never turned into text one by one, and the result is the
/// grouping by text whatever the rows are.
pub fn run<R: Row>(model: &Model, rep: &ReportDef, rows: &[R], q: &ReportQuery, tz: &TimeZone) -> ReportTable {
    let kept: Vec<&R> = rows.iter().filter(|r| keeps(rep, *r, q)).collect();
    let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    if !q.by.is_empty() {
        let dims: Vec<(&str, bool)> = q.by.split(',').map(str::trim).map(|d| (d, flowform_model::TIME_BUCKETS.contains(&d))).collect();
        let mut days: Vec<DayCache> = dims.iter().map(|_| DayCache::new()).collect();
        let mut refined: std::collections::HashMap<Vec<usize>, usize, foldhash::fast::RandomState> = Default::default();
        let mut members: Vec<Vec<usize>> = Vec::new();
        let mut parts: Vec<usize> = Vec::with_capacity(dims.len());
        for (i, r) in kept.iter().enumerate() {
            parts.clear();
            for ((d, is_bucket), days) in dims.iter().zip(days.iter_mut()) {
                parts.push(if *is_bucket {
                    // A row whose bucket has no number is a group of its own.
                    r.time(&rep.time.value).map_or(0, |us| days.id(us, d, tz).map_or(usize::MAX - i, |id| id as usize))
                } else {
                    r.field(d).map_or(0, |v| v as *const Value as usize)
                });
            }
            match refined.get(parts.as_slice()) {
                Some(&g) => members[g].push(i),
                None => {
                    refined.insert(parts.clone(), members.len());
                    members.push(vec![i]);
                }
            }
        }
        let mut merged: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        for m in members {
            let key = group_key(rep, kept[m[0]], &q.by, tz);
            let group = groups.entry(key.clone()).or_default();
            if !group.is_empty() {
                merged.insert(key);
            }
            group.extend(m);
        }
        // Groups made of several: their rows back in the order given, sorted once.
        for key in merged {
            if let Some(group) = groups.get_mut(&key) {
                group.sort_unstable();
            }
        }
    }
    let row = |key: String, rows: &[&R]| ReportRow { key, rows: rows.len(), values: rep.measures.iter().map(|m| measure(model, m, rows)).collect() };
    ReportTable {
        rows: groups
            .into_iter()
            .map(|(k, members)| {
                let rows: Vec<&R> = members.into_iter().map(|i| kept[i]).collect();
                row(k, &rows)
            })
            .collect(),
        total: row(String::new(), &kept),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(percentile(&v, 0.5), Some(5.0));
        assert_eq!(percentile(&v, 0.9), Some(9.0));
        assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn buckets_follow_the_app_zone() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap();
        // 2026-12-31 17:00 UTC is already 2027-01-01 in Shanghai.
        let t: Timestamp = "2026-12-31T17:00:00Z".parse().unwrap();
        assert_eq!(bucket(t, "day", &tz), "2027-01-01");
        assert_eq!(bucket(t, "month", &tz), "2027-01");
        assert_eq!(bucket(t, "quarter", &tz), "2027-Q1");
        assert_eq!(bucket(t, "week", &tz), "2026-W53");
        assert_eq!(bucket(t, "year", &tz), "2027");
    }
}
