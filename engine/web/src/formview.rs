//! A compiled form as fields for the page, and a posted page back into the
//! form's data. Field names in the page are the paths the validator reports
//! errors at (`note`, `lines[1].count`), so every server error
//! lands on its field.

use crate::display;
use flowform_core::{Bundle, FieldError, Lang};
use flowform_model::{FieldDef, FieldType};
use flowform_runtime::Runtime;
use jiff::tz::TimeZone;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The posted fields: name → every value sent under it, in order.
pub type Posted = BTreeMap<String, Vec<String>>;

pub fn posted(pairs: Vec<(String, String)>) -> Posted {
    let mut out: Posted = BTreeMap::new();
    for (k, v) in pairs {
        out.entry(k).or_default().push(v);
    }
    out
}

/// The first value sent under `key` that is not blank, as typed (a text's
/// leading spaces are the user's).
fn first<'a>(p: &'a Posted, key: &str) -> Option<&'a str> {
    p.get(key).and_then(|v| v.iter().map(String::as_str).find(|s| !s.trim().is_empty()))
}

/// The data of `fields` from the page; values that do not parse are kept as
/// text so the validator names the field and the input survives.
pub fn data_from(fields: &[FieldDef], p: &Posted, prefix: &str, tz: &TimeZone) -> Map<String, Value> {
    let mut out = Map::new();
    for f in fields {
        let key = format!("{prefix}{}", f.name);
        let value = match f.field_type {
            FieldType::String | FieldType::Text | FieldType::Date | FieldType::Ref | FieldType::Signature => first(p, &key).map(|s| json!(s)),
            FieldType::Integer => first(p, &key).map(str::trim).map(|s| s.parse::<i64>().map_or_else(|_| json!(s), |n| json!(n))),
            FieldType::Number => {
                first(p, &key).map(str::trim).map(|s| s.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or_else(|| json!(s), Value::Number))
            }
            FieldType::Boolean => {
                p.contains_key(&format!("{key}.present")).then(|| json!(p.get(&key).is_some_and(|v| v.iter().any(|s| s == "true" || s == "on"))))
            }
            FieldType::Enum if f.multiple => {
                let items: Vec<Value> = p.get(&key).map(|v| v.iter().filter(|s| !s.is_empty()).map(|s| json!(s)).collect()).unwrap_or_default();
                // Boxes all unticked on a page that showed them: an empty choice, not "not sent".
                (!items.is_empty() || p.contains_key(&format!("{key}.present"))).then_some(Value::Array(items))
            }
            FieldType::Enum => first(p, &key).map(|s| json!(s)),
            FieldType::Datetime => first(p, &key).map(|s| local_to_utc(s, tz).map_or_else(|| json!(s), |t| json!(t))),
            FieldType::Files => first(p, &key).and_then(|s| serde_json::from_str::<Value>(s).ok()).filter(|v| v.as_array().is_some_and(|a| !a.is_empty())),
            FieldType::Location => {
                let mut m = Map::new();
                if let Some(tag) = first(p, &format!("{key}.tag")) {
                    m.insert("tag".into(), json!(tag.trim()));
                }
                for part in ["lat", "lng", "accuracy"] {
                    if let Some(n) = first(p, &format!("{key}.{part}")).and_then(|s| s.parse::<f64>().ok()).and_then(serde_json::Number::from_f64) {
                        m.insert(part.into(), Value::Number(n));
                    }
                }
                (!m.is_empty()).then_some(Value::Object(m))
            }
            FieldType::Group => {
                let head = format!("{key}[");
                let mut indexes: Vec<usize> =
                    p.keys().filter_map(|k| k.strip_prefix(&head)).filter_map(|rest| rest.split_once(']')).filter_map(|(n, _)| n.parse().ok()).collect();
                indexes.sort_unstable();
                indexes.dedup();
                let items: Vec<Value> = indexes
                    .into_iter()
                    .map(|i| data_from(&f.fields, p, &format!("{key}[{i}]."), tz))
                    // An item left blank (only unticked switches) is dropped.
                    .filter(|m| m.values().any(|v| v != &Value::Bool(false)))
                    .map(Value::Object)
                    .collect();
                (!items.is_empty()).then_some(Value::Array(items))
            }
        };
        if let Some(v) = value {
            out.insert(f.name.clone(), v);
        }
    }
    out
}

/// `2026-11-30T14:05` in the app's zone → an RFC 3339 instant.
fn local_to_utc(s: &str, tz: &TimeZone) -> Option<String> {
    let dt: jiff::civil::DateTime = s.parse().ok()?;
    let z = dt.to_zoned_datetime(tz.clone()).ok()?;
    Some(z.timestamp().to_string())
}

fn utc_to_local(s: &str, tz: &TimeZone) -> String {
    s.parse::<jiff::Timestamp>().map_or_else(|_| s.to_string(), |t| t.to_zoned_datetime(tz.clone()).strftime("%Y-%m-%dT%H:%M").to_string())
}

/// Errors by the path they belong to.
pub type Errors = BTreeMap<String, Vec<String>>;

pub fn errors_by_field(errors: &[FieldError]) -> Errors {
    let mut out: Errors = BTreeMap::new();
    for e in errors {
        out.entry(e.field.clone()).or_default().push(e.message.clone());
    }
    out
}

/// What the page needs to render fields.
pub struct Ctx<'a> {
    pub runtime: &'a Runtime,
    pub actor: &'a flowform_core::Actor,
    /// Where the form's data lives (`instance=ID`, `record=TYPE/ID`): what
    /// lets others read the files it holds. Empty for a new one.
    pub via: String,
    pub bundle: &'a Bundle,
    pub lang: Lang,
    pub tz: TimeZone,
}

fn dom_id(path: &str) -> String {
    let id: String = path.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    format!("f-{id}")
}

/// The errors of `path` and of the items below it (`photos[0]` for `photos`),
/// except those of subfields of a group, which show on the subfields.
fn errors_of(errors: &Errors, path: &str, is_group: bool, used: &mut std::collections::BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in errors {
        let below = k.strip_prefix(path).is_some_and(|rest| rest.starts_with('[') && !(is_group && rest.contains('.')));
        if k == path || below {
            used.insert(k.clone());
            out.extend(v.iter().cloned());
        }
    }
    out
}

/// The fields of a form as page views, filled from `data`.
pub fn fields(
    ctx: &Ctx,
    defs: &[FieldDef],
    data: &Map<String, Value>,
    prefix: &str,
    errors: &Errors,
    used: &mut std::collections::BTreeSet<String>,
) -> Vec<Value> {
    defs.iter()
        .map(|f| {
            // A locked `from` field shows what the server will take; an editable one starts from it.
            let filled = f.from.as_ref().and_then(|_| from_value(ctx, defs, f, data));
            let value = match (&filled, f.editable) {
                (Some(v), false) => Some(v),
                (Some(v), true) => data.get(&f.name).or(Some(v)),
                (None, _) => data.get(&f.name),
            };
            let mut view = field(ctx, f, value, &format!("{prefix}{}", f.name), errors, used);
            // A `ref` that other fields take values from sends its record's fields when chosen.
            let dependents = defs.iter().any(|x| x.from.as_ref().is_some_and(|p| p.value.split_once('.').is_some_and(|(r, _)| r == f.name)));
            view["fills"] = json!(dependents);
            view
        })
        .collect()
}

/// The value a `from: REF.FIELD` field takes from the record REF names in `data`.
fn from_value(ctx: &Ctx, defs: &[FieldDef], f: &FieldDef, data: &Map<String, Value>) -> Option<Value> {
    let (reference, name) = f.from.as_ref()?.value.split_once('.')?;
    let record_type = defs.iter().find(|x| x.name == reference)?.record.as_ref()?;
    let id = data.get(reference)?.as_str()?;
    let readable = ctx
        .bundle
        .model
        .record_types
        .get(&record_type.value)
        .is_some_and(|rt| rt.access.allows(flowform_model::RecordOp::Read, ctx.actor.roles.iter().map(String::as_str)));
    if !readable {
        return None;
    }
    ctx.runtime.record(&record_type.value, id).ok()?.data.get(name).cloned()
}

fn cond_json(c: &Option<(flowform_model::Sp<String>, flowform_model::Condition)>) -> Value {
    c.as_ref().map_or(Value::Null, |(_, cond)| json!(serde_json::to_string(cond).unwrap_or_default()))
}

fn num(v: Option<f64>) -> Value {
    v.and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
}

fn field(ctx: &Ctx, f: &FieldDef, value: Option<&Value>, path: &str, errors: &Errors, used: &mut std::collections::BTreeSet<String>) -> Value {
    let lang = ctx.lang;
    let value = value.or(f.default.as_ref().map(|d| &d.value));
    let widget = f.widget.clone().unwrap_or_else(|| {
        match f.field_type {
            FieldType::Enum if f.multiple => "checkboxes",
            FieldType::Enum if f.options.len() <= 4 => "radio",
            FieldType::Enum => "select",
            _ => "",
        }
        .to_string()
    });
    let id = dom_id(path);
    let errs = errors_of(errors, path, f.field_type == FieldType::Group, used);
    let text = match value {
        Some(Value::String(s)) if f.field_type == FieldType::Datetime => utc_to_local(s, &ctx.tz),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    };
    let is = |t: FieldType| f.field_type == t;
    let selected = |o: &str| match value {
        Some(Value::String(s)) => s == o,
        Some(Value::Array(items)) => items.iter().any(|i| i.as_str() == Some(o)),
        _ => false,
    };
    // A `ref` shown as a list (`widget: select`): its options are the records
    // of the type, by title, read now — a record an admin adds is offered at once.
    let readable = |t: &str| {
        ctx.bundle.model.record_types.get(t).is_some_and(|rt| rt.access.allows(flowform_model::RecordOp::Read, ctx.actor.roles.iter().map(String::as_str)))
    };
    let ref_select = f.field_type == FieldType::Ref && widget == "select" && f.record.as_ref().is_some_and(|r| readable(&r.value));
    let options: Vec<Value> = if ref_select {
        let record_type = f.record.as_ref().map(|r| r.value.clone()).unwrap_or_default();
        let query = flowform_runtime::records::RecordQuery { limit: 200, sort: Some("title".into()), ..Default::default() };
        ctx.runtime
            .list_records(&record_type, &query)
            .map(|page| page.items)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| f.filter.as_ref().is_none_or(|(_, cond)| flowform_core::records::matches_filter(cond, r)))
            .enumerate()
            .map(|(n, r)| json!({"value": r.id, "label": r.title, "selected": selected(&r.id), "id": format!("{id}-{n}")}))
            .collect()
    } else {
        f.options
            .iter()
            .enumerate()
            .map(|(n, o)| json!({"value": o.value, "label": o.label.get(lang.code(), &o.value), "selected": selected(&o.value), "id": format!("{id}-{n}")}))
            .collect()
    };
    let step = if is(FieldType::Integer) { "1" } else { "any" };
    let record = f.record.as_ref().map(|r| r.value.clone());
    let chosen_title = match (f.field_type, value) {
        (FieldType::Ref, Some(Value::String(rid))) => display::record_title(ctx.runtime, ctx.actor, record.as_deref(), rid),
        _ => String::new(),
    };
    let files: Vec<Value> = match (f.field_type, value) {
        (FieldType::Files, Some(Value::Array(items))) => items
            .iter()
            .filter_map(|i| {
                let fid = i.get("id")?.as_str()?;
                let is_image = i.get("type").and_then(Value::as_str).is_some_and(|t| t.starts_with("image/"));
                let url = if ctx.via.is_empty() { format!("/api/v1/files/{fid}") } else { format!("/api/v1/files/{fid}?{}", ctx.via) };
                Some(json!({"id": fid, "name": i.get("name").and_then(Value::as_str).unwrap_or(""), "is_image": is_image, "url": url}))
            })
            .collect(),
        _ => Vec::new(),
    };
    let files_json = match (f.field_type, value) {
        (FieldType::Files, Some(v @ Value::Array(_))) => v.to_string(),
        _ => "[]".to_string(),
    };
    let loc = |k: &str| value.and_then(|v| v.get(k)).map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string)).unwrap_or_default();
    let (items, template) = if is(FieldType::Group) {
        let list = value.and_then(Value::as_array).cloned().unwrap_or_default();
        let count = list.len().max(f.min.map_or(0, |m| m as usize)).max(usize::from(list.is_empty() && f.required));
        let items: Vec<Value> = (0..count)
            .map(|i| {
                let empty = Map::new();
                let item = list.get(i).and_then(Value::as_object).unwrap_or(&empty);
                let n = (i + 1).to_string();
                json!({"label": crate::texts::t(lang, "item").replace("{n}", &n), "fields": fields(ctx, &f.fields, item, &format!("{path}[{i}]."), errors, used)})
            })
            .collect();
        let none = Errors::new();
        let mut ignore = std::collections::BTreeSet::new();
        let template = fields(ctx, &f.fields, &Map::new(), &format!("{path}[__{id}__]."), &none, &mut ignore);
        (items, template)
    } else {
        (Vec::new(), Vec::new())
    };
    let required = f.required;
    json!({
        "name": path,
        "leaf": f.name,
        "id": id,
        "type": f.field_type.name(),
        "label": f.label.get(lang.code(), &f.name),
        "help": f.help.get(lang.code(), ""),
        "placeholder": f.placeholder.get(lang.code(), ""),
        "required": required,
        "unit": f.unit,
        "value": text,
        "checked": value.and_then(Value::as_bool).unwrap_or(false),
        "error": if errs.is_empty() { Value::Null } else { json!(errs.join(" ")) },
        "visible_when": cond_json(&f.visible_when),
        "required_when": cond_json(&f.required_when),
        "min": num(f.min),
        "max": num(f.max),
        "min_length": f.min_length,
        "max_length": f.max_length,
        "inputmode": if step == "1" { "numeric" } else { "decimal" },
        "options": options,
        "record": record,
        "chosen_title": chosen_title,
        "files": files,
        "files_json": files_json,
        "accept": f.accept.clone().unwrap_or_default(),
        "max_files": f.max.map_or(20, |m| m as u64),
        "tag": loc("tag"),
        "lat": loc("lat"),
        "lng": loc("lng"),
        "accuracy": loc("accuracy"),
        "placeholder_token": format!("__{id}__"),
        "min_items": f.min.map_or(0, |m| m as u64),
        "default_json": f.default.as_ref().map_or(Value::Null, |d| json!(d.value.to_string())),
        "from": f.from.as_ref().map(|p| p.value.clone()),
        "locked": f.from.is_some() && !f.editable,
        "fills": false,
        // A `ref` with `where`: the picker offers only records that fit (the server checks again).
        "where_json": f.filter.as_ref().map(|(src, _)| json!(src.value).to_string()),
        "items": items,
        "template": template,
        "is_input": is(FieldType::String),
        "is_textarea": is(FieldType::Text),
        "is_number": is(FieldType::Integer) || is(FieldType::Number),
        "is_switch": is(FieldType::Boolean),
        "is_radio": is(FieldType::Enum) && widget == "radio",
        "is_select": (is(FieldType::Enum) && widget != "radio" && widget != "checkboxes") || ref_select,
        "is_checkboxes": is(FieldType::Enum) && widget == "checkboxes",
        "is_date": is(FieldType::Date),
        "is_datetime": is(FieldType::Datetime),
        "is_picker": is(FieldType::Ref) && !ref_select,
        "is_files": is(FieldType::Files),
        "is_location": is(FieldType::Location),
        "is_signature": is(FieldType::Signature),
        "is_group": is(FieldType::Group),
        "is_rating": (widget == "rating" || widget == "stars") && (is(FieldType::Integer) || is(FieldType::Number)),
        // Highest first: the row is laid out reversed, so CSS can light a star and those before it.
        "stars": (1..=f.max.map_or(5, |m| m.clamp(1.0, 10.0) as u64)).rev().map(|n| json!({"n": n, "on": value.and_then(Value::as_f64).is_some_and(|v| v >= n as f64), "id": format!("{id}-star{n}")})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Posted {
        posted(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn datetimes_are_read_in_the_app_zone() {
        let tz = TimeZone::get("Asia/Shanghai").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local_to_utc("2026-11-30T14:05", &tz).as_deref(), Some("2026-11-30T06:05:00Z"));
        assert_eq!(utc_to_local("2026-11-30T06:05:00Z", &tz), "2026-11-30T14:05");
    }

    #[test]
    fn group_items_are_read_by_index_and_empty_ones_dropped() {
        let posted = p(&[("g[0].a", "x"), ("g[3].a", "y"), ("g[2].a", ""), ("n", "12"), ("bad", "1,5")]);
        let a = FieldDef::new("a", FieldType::String);
        let mut g = FieldDef::new("g", FieldType::Group);
        g.fields = vec![a];
        let n = FieldDef::new("n", FieldType::Integer);
        let bad = FieldDef::new("bad", FieldType::Number);
        let data = data_from(&[g, n, bad], &posted, "", &TimeZone::UTC);
        assert_eq!(Value::Object(data), json!({"g": [{"a": "x"}, {"a": "y"}], "n": 12, "bad": "1,5"}));
    }

    #[test]
    fn a_blank_item_with_a_switch_is_dropped_and_unticked_boxes_are_an_empty_choice() {
        let mut g = FieldDef::new("g", FieldType::Group);
        g.fields = vec![FieldDef::new("ok", FieldType::Boolean), FieldDef::new("a", FieldType::String)];
        let mut tags = FieldDef::new("tags", FieldType::Enum);
        tags.multiple = true;
        let posted = p(&[("g[0].ok.present", "1"), ("g[1].ok.present", "1"), ("g[1].a", "  indented"), ("tags.present", "1")]);
        let data = data_from(&[g, tags], &posted, "", &TimeZone::UTC);
        assert_eq!(Value::Object(data), json!({"g": [{"ok": false, "a": "  indented"}], "tags": []}));
    }
}
