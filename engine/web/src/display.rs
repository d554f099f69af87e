//! How values look to people: times in the app's zone (relative when recent),
//! readable instance numbers, option labels, record titles, display names.

use flowform_core::{Actor, Bundle, Instance, Lang, Time};
use flowform_model::{FieldDef, FieldType};
use flowform_runtime::Runtime;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde_json::{Value, json};

/// The app's time zone (`app.timezone`), else UTC.
pub fn zone(bundle: &Bundle) -> TimeZone {
    bundle.model.app.timezone.as_ref().and_then(|tz| TimeZone::get(&tz.value).ok()).unwrap_or(TimeZone::UTC)
}

/// An absolute time in the app's zone: `11月28日 14:05` / `Nov 28, 14:05`
/// (with the year when it is not this year).
pub fn absolute(t: Time, tz: &TimeZone, now: Timestamp, lang: Lang) -> String {
    let z = t.timestamp().to_zoned_datetime(tz.clone());
    let this_year = now.to_zoned_datetime(tz.clone()).year() == z.year();
    match (lang, this_year) {
        (Lang::En, true) => z.strftime("%b %-d, %H:%M").to_string(),
        (Lang::En, false) => z.strftime("%b %-d %Y, %H:%M").to_string(),
        (Lang::ZhCn, true) => z.strftime("%-m月%-d日 %H:%M").to_string(),
        (Lang::ZhCn, false) => z.strftime("%Y年%-m月%-d日 %H:%M").to_string(),
    }
}

/// `12 分钟前` / `12 min ago` within a day, else [`absolute`].
pub fn relative(t: Time, tz: &TimeZone, now: Timestamp, lang: Lang) -> String {
    let secs = now.as_second() - t.timestamp().as_second();
    if (0..86_400).contains(&secs) {
        let (n, zh, en) = match secs {
            0..60 => return if lang == Lang::En { "just now".into() } else { "刚刚".into() },
            60..3600 => (secs / 60, "分钟前", "min ago"),
            _ => (secs / 3600, "小时前", "h ago"),
        };
        return if lang == Lang::En { format!("{n} {en}") } else { format!("{n} {zh}") };
    }
    absolute(t, tz, now, lang)
}

/// [`absolute`] of a time given as text (a field's value); text that is not
/// a time is shown as it is.
pub fn absolute_text(text: &str, tz: &TimeZone, now: Timestamp, lang: Lang) -> String {
    Time::parse(text).map_or_else(|| text.to_string(), |t| absolute(t, tz, now, lang))
}

/// [`relative`] of a time given as text; text that is not a time is shown as it is.
pub fn relative_text(text: &str, tz: &TimeZone, now: Timestamp, lang: Lang) -> String {
    Time::parse(text).map_or_else(|| text.to_string(), |t| relative(t, tz, now, lang))
}

/// How long until `due` (or how long past it).
pub fn countdown(due: Time, now: Timestamp, lang: Lang) -> (String, bool) {
    let secs = due.timestamp().as_second() - now.as_second();
    let overdue = secs < 0;
    let a = secs.unsigned_abs();
    let span = match a {
        0..3600 => {
            if lang == Lang::En {
                format!("{} min", a / 60)
            } else {
                format!("{} 分钟", a / 60)
            }
        }
        3600..172_800 => {
            let (h, m) = (a / 3600, (a % 3600) / 60);
            match (lang, m) {
                (Lang::En, 0) => format!("{h} h"),
                (Lang::En, _) => format!("{h} h {m} min"),
                (_, 0) => format!("{h} 小时"),
                _ => format!("{h} 小时 {m} 分"),
            }
        }
        _ => {
            if lang == Lang::En {
                format!("{} days", a / 86_400)
            } else {
                format!("{} 天", a / 86_400)
            }
        }
    };
    let text = match (lang, overdue) {
        (Lang::En, false) => format!("{span} left"),
        (Lang::En, true) => format!("overdue by {span}"),
        (Lang::ZhCn, false) => format!("剩余 {span}"),
        (Lang::ZhCn, true) => format!("已超时 {span}"),
    };
    (text, overdue)
}

/// The number people read and say: the workflow's `number` (e.g.
/// `WX-20261130-0007`), else the day it was started (app's zone) and four
/// characters of its id, e.g. `20261130-7K3F`.
pub fn number(i: &Instance, tz: &TimeZone) -> String {
    if let Some(n) = &i.number {
        return n.clone();
    }
    let day = i.created_at.timestamp().to_zoned_datetime(tz.clone()).strftime("%Y%m%d").to_string();
    let tail: String = i.id.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    format!("{day}-{tail}")
}

/// A state's label and color.
pub fn state(bundle: &Bundle, workflow: &str, state: &str, lang: Lang) -> (String, String) {
    let def = bundle.workflow(workflow).and_then(|w| w.state(state));
    let label = def.map_or_else(|| state.to_string(), |s| s.label.get(lang.code(), state).to_string());
    (label, color(def.and_then(|s| s.color.as_deref())))
}

/// A state's `color` as CSS: the named hints of docs/definitions.md
/// (`warning`, `info`, `primary`, `success`, `danger`, `muted`) in colors
/// readable with white text, or a `#rgb`/`#rrggbb` as written; anything
/// else is muted.
pub fn color(hint: Option<&str>) -> String {
    let named = match hint.unwrap_or("muted") {
        "warning" => "#b45309",
        "info" => "#0369a1",
        "primary" => "#1a73e8",
        "success" => "#15803d",
        "danger" | "error" => "#b00020",
        c if is_hex_color(c) => c,
        _ => "#5f6b76",
    };
    named.to_string()
}

fn is_hex_color(c: &str) -> bool {
    c.starts_with('#') && matches!(c.len(), 4 | 7) && c[1..].bytes().all(|b| b.is_ascii_hexdigit())
}

/// How people call a team (declared, or a team record with `app.teams_from`).
pub fn team(rt: &Runtime, bundle: &Bundle, team: &str, lang: Lang) -> String {
    rt.team_label(bundle, team, lang.code())
}

pub fn role(bundle: &Bundle, role: &str, lang: Lang) -> String {
    bundle.model.roles.get(role).map_or_else(|| role.to_string(), |r| r.label.get(lang.code(), role).to_string())
}

/// A line that says what an instance is about: the title of the first record
/// it refers to and the first text of its start form.
pub fn summary(runtime: &Runtime, actor: &Actor, bundle: &Bundle, i: &Instance, lang: Lang) -> String {
    let Some(form) = bundle.workflow(&i.workflow).and_then(|w| w.start.form.as_ref()).and_then(|f| bundle.form(&f.value)) else { return String::new() };
    let mut parts = Vec::new();
    if let Some(f) = form.def.fields.iter().find(|f| f.field_type == FieldType::Ref && i.data.get(&f.name).is_some_and(Value::is_string))
        && let Some(v) = i.data.get(&f.name)
    {
        parts.push(plain(runtime, actor, bundle, f, v, lang));
    }
    let text_of = |t: FieldType| form.def.fields.iter().filter(|f| f.field_type == t).find_map(|f| i.data.get(&f.name).and_then(Value::as_str));
    if let Some(text) = text_of(FieldType::Text).or_else(|| text_of(FieldType::String)) {
        let short: String = text.chars().take(40).collect();
        parts.push(if short.len() < text.len() { format!("{short}…") } else { short });
    }
    parts.join(" · ")
}

/// A value as plain text (enum labels, record titles, yes/no).
pub fn plain(runtime: &Runtime, actor: &Actor, bundle: &Bundle, f: &FieldDef, v: &Value, lang: Lang) -> String {
    let yes_no = |b: bool| crate::texts::t(lang, if b { "yes" } else { "no" }).to_string();
    match (f.field_type, v) {
        (FieldType::Enum, Value::String(s)) => option_label(f, s, lang),
        (FieldType::Enum, Value::Array(items)) => items.iter().filter_map(Value::as_str).map(|s| option_label(f, s, lang)).collect::<Vec<_>>().join("、"),
        (FieldType::Ref, Value::String(id)) => record_title(runtime, actor, f.record.as_ref().map(|r| r.value.as_str()), id),
        (FieldType::Boolean, Value::Bool(b)) => yes_no(*b),
        (FieldType::Datetime, Value::String(s)) => absolute_text(s, &zone(bundle), runtime_now(runtime), lang),
        (FieldType::Location, Value::Object(m)) => {
            let tag = m.get("tag").and_then(Value::as_str).map(str::to_string);
            let coords = m.get("lat").and_then(Value::as_f64).zip(m.get("lng").and_then(Value::as_f64)).map(|(a, b)| format!("{a:.5}, {b:.5}"));
            [tag, coords].into_iter().flatten().collect::<Vec<_>>().join(" · ")
        }
        (FieldType::Signature, Value::String(_)) => crate::texts::t(lang, "signed").to_string(),
        (FieldType::Files, Value::Array(items)) => items.iter().filter_map(|i| i.get("name").and_then(Value::as_str)).collect::<Vec<_>>().join(", "),
        (_, Value::String(s)) => s.clone(),
        (_, Value::Number(n)) => n.to_string(),
        (_, Value::Null) => String::new(),
        (_, other) => other.to_string(),
    }
}

pub fn option_label(f: &FieldDef, value: &str, lang: Lang) -> String {
    f.options.iter().find(|o| o.value == value).map_or_else(|| value.to_string(), |o| o.label.get(lang.code(), value).to_string())
}

/// A reference as people read it: a record's title, or the readable number
/// of an instance (a workflow with `record:` makes its instances referable).
/// Only what `actor` may read is named: otherwise the bare id shows (a page
/// is never a way to look up what the API would refuse).
pub fn record_title(runtime: &Runtime, actor: &Actor, record_type: Option<&str>, id: &str) -> String {
    let bundle = runtime.bundle();
    match record_type {
        Some(t) if bundle.model.record_types.contains_key(t) => {
            let readable =
                bundle.model.record_types.get(t).is_some_and(|rt| rt.access.allows(flowform_model::RecordOp::Read, actor.roles.iter().map(String::as_str)));
            if !readable {
                return id.to_string();
            }
            runtime.record(t, id).map_or_else(|_| id.to_string(), |r| r.title)
        }
        Some(_) => runtime.instance_for(id, actor).map_or_else(|_| id.to_string(), |i| number(&i, &zone(&bundle))),
        None => id.to_string(),
    }
}

pub fn runtime_now(runtime: &Runtime) -> Timestamp {
    runtime.now().timestamp()
}

/// A value for a read-only page: text, or images and links for files and
/// signatures. `via` says where the page found it (`instance=ID` or
/// `record=TYPE/ID`), which is what lets other readers fetch its files.
pub fn shown(runtime: &Runtime, actor: &Actor, bundle: &Bundle, f: &FieldDef, v: &Value, lang: Lang, via: &str) -> Value {
    match (f.field_type, v) {
        (FieldType::Files, Value::Array(items)) => {
            let files: Vec<Value> = items
                .iter()
                .filter_map(|i| {
                    let id = i.get("id")?.as_str()?;
                    let name = i.get("name").and_then(Value::as_str).unwrap_or("");
                    let is_image = i.get("type").and_then(Value::as_str).is_some_and(|t| t.starts_with("image/"));
                    Some(json!({"url": format!("/api/v1/files/{id}?{via}"), "name": name, "is_image": is_image}))
                })
                .collect();
            json!({"text": "", "files": files, "image": null, "rows": null})
        }
        (FieldType::Signature, Value::String(s)) if s.starts_with("data:image/png;base64,") || s.starts_with("data:image/jpeg;base64,") => {
            json!({"text": "", "files": null, "image": s, "rows": null})
        }
        (FieldType::Group, Value::Array(items)) => {
            let rows: Vec<Value> = items
                .iter()
                .enumerate()
                .map(|(n, item)| {
                    let cells: Vec<Value> = f
                        .fields
                        .iter()
                        .filter_map(|sub| {
                            item.get(&sub.name)
                                .map(|v| json!({"label": sub.label.get(lang.code(), &sub.name), "text": plain(runtime, actor, bundle, sub, v, lang)}))
                        })
                        .collect();
                    json!({"number": n + 1, "cells": cells})
                })
                .collect();
            json!({"text": "", "files": null, "image": null, "rows": rows})
        }
        _ => {
            let mut text = plain(runtime, actor, bundle, f, v, lang);
            if let Some(unit) = &f.unit
                && !text.is_empty()
            {
                text = format!("{text} {unit}");
            }
            json!({"text": text, "files": null, "image": null, "rows": null})
        }
    }
}

/// The fields of `data` a form describes, in form order, for a read-only page.
pub fn data_rows(
    runtime: &Runtime,
    actor: &Actor,
    bundle: &Bundle,
    fields: &[&FieldDef],
    data: &serde_json::Map<String, Value>,
    lang: Lang,
    via: &str,
) -> Vec<Value> {
    let mut seen = std::collections::BTreeSet::new();
    let mut rows = Vec::new();
    for f in fields {
        if !seen.insert(f.name.as_str()) {
            continue;
        }
        let Some(v) = data.get(&f.name) else { continue };
        if v.is_null() || v.as_str() == Some("") {
            continue;
        }
        let mut row = shown(runtime, actor, bundle, f, v, lang, via);
        row["label"] = json!(f.label.get(lang.code(), &f.name));
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_times_are_relative_and_older_ones_absolute_in_the_zone() {
        let now: Timestamp = "2026-11-30T06:00:00Z".parse().unwrap_or_else(|e| panic!("{e}"));
        let tz = TimeZone::get("Asia/Shanghai").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(relative_text("2026-11-30T05:48:00Z", &tz, now, Lang::ZhCn), "12 分钟前");
        assert_eq!(relative_text("2026-11-30T05:48:00Z", &tz, now, Lang::En), "12 min ago");
        assert_eq!(relative_text("2026-11-28T06:05:00Z", &tz, now, Lang::ZhCn), "11月28日 14:05");
        assert_eq!(relative_text("2025-01-02T06:05:00Z", &tz, now, Lang::En), "Jan 2 2025, 14:05");
        assert_eq!(relative_text("not a time", &tz, now, Lang::En), "not a time");
    }

    #[test]
    fn countdowns_turn_into_overdue_marks() {
        let now: Timestamp = "2026-11-30T06:00:00Z".parse().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(countdown(flowform_core::time::tm("2026-11-30T08:30:00Z"), now, Lang::ZhCn), ("剩余 2 小时 30 分".to_string(), false));
        assert_eq!(countdown(flowform_core::time::tm("2026-11-30T05:00:00Z"), now, Lang::En), ("overdue by 1 h".to_string(), true));
    }

    #[test]
    fn color_hints_become_readable_colors_and_nothing_else_gets_through() {
        assert_eq!(color(Some("success")), "#15803d");
        assert_eq!(color(Some("#1a73e8")), "#1a73e8");
        assert_eq!(color(Some("red;background:url(x)")), "#5f6b76");
        assert_eq!(color(Some("#12345")), "#5f6b76");
        assert_eq!(color(None), "#5f6b76");
    }
}
