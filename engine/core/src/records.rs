//! Records of declared types (assets, locations, parts, ...): creation, update,
//! archiving, ids from templates, titles, references and search. Pure.

use crate::bundle::Bundle;
use crate::decide::Rejection;
use crate::instance::{Actor, Change};
use crate::time::Time;
use flowform_forms::{FieldError, Lang};
use flowform_model::{FieldDef, FieldType, RecordTypeDef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    #[serde(rename = "type")]
    pub record_type: String,
    pub id: String,
    pub version: u64,
    pub title: String,
    pub data: Map<String, Value>,
    pub archived: bool,
    pub created_at: Time,
    pub updated_at: Time,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordEventKind {
    Created,
    Updated,
    Archived,
    Restored,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordEvent {
    #[serde(rename = "type")]
    pub record_type: String,
    pub id: String,
    pub seq: u64,
    pub kind: RecordEventKind,
    pub actor: String,
    pub at: Time,
    pub changes: BTreeMap<String, Change>,
    /// The instance whose command made this change (`update:` of a workflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

fn record_type<'b>(bundle: &'b Bundle, name: &str) -> Result<&'b RecordTypeDef, Rejection> {
    bundle.model.record_types.get(name).ok_or_else(|| Rejection::UnknownRecordType(name.to_string()))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        // 5120.0 reads as 5120 in ids, titles and messages.
        Value::Number(n) if n.as_f64().is_some_and(|f| f.fract() == 0.0 && f.abs() < 9e15) && !n.is_i64() && !n.is_u64() => {
            format!("{}", n.as_f64().unwrap_or_default() as i64)
        }
        other => other.to_string(),
    }
}

/// Fills a template: `{field}` from the data, `{seq:4}` from the sequence, dates from `now`.
pub fn fill(template: &str, data: &Map<String, Value>, seq: Option<u64>, local: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            out.push_str(&rest[start..]);
            return out;
        };
        let inner = &rest[start + 1..start + end];
        let (name, arg) = inner.split_once(':').unwrap_or((inner, ""));
        let digits: String = local.chars().filter(char::is_ascii_digit).collect();
        match name {
            "seq" => {
                let width: usize = arg.parse().unwrap_or(1);
                out.push_str(&format!("{:0width$}", seq.unwrap_or(0)));
            }
            "yyyyMMdd" => out.push_str(digits.get(..8).unwrap_or("")),
            "yyyyMM" => out.push_str(digits.get(..6).unwrap_or("")),
            "yyyy" => out.push_str(digits.get(..4).unwrap_or("")),
            field => out.push_str(&text_of(data.get(field).unwrap_or(&Value::Null))),
        }
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// Whether a record satisfies a condition over its fields (and `id`, `title`):
/// the `where` of a `ref` field or of a schedule.
pub fn matches_filter(cond: &flowform_model::Condition, record: &Record) -> bool {
    let extra = |f: &str| match f {
        "id" => Some(Value::String(record.id.clone())),
        "title" => Some(Value::String(record.title.clone())),
        _ => None,
    };
    if cond.fields().iter().any(|f| *f == "id" || *f == "title") {
        let mut data = record.data.clone();
        for f in ["id", "title"] {
            if let Some(v) = extra(f) {
                data.insert(f.into(), v);
            }
        }
        return cond.eval_map(&data);
    }
    cond.eval_map(&record.data)
}

/// A value of a definition's `data`/`set` filled from `context`: a lone
/// `{FIELD}` copies the field's value as it is (a number stays a number;
/// never files or groups), other text has its `{FIELD}`s replaced by text,
/// anything else is kept.
pub fn fill_value(value: &Value, context: &Map<String, Value>, local: &str) -> Value {
    match value {
        Value::String(s) if s.contains('{') => {
            let whole = s.trim();
            let name = whole.trim_start_matches('{').trim_end_matches('}');
            match context.get(name) {
                Some(v) if whole.starts_with('{') && whole.ends_with('}') && whole.matches('{').count() == 1 && !v.is_array() && !v.is_object() => v.clone(),
                _ => Value::String(fill(s, context, None, local)),
            }
        }
        other => other.clone(),
    }
}

/// Whether the type's ids need a sequence number.
pub fn needs_sequence(bundle: &Bundle, type_name: &str) -> bool {
    bundle.model.record_types.get(type_name).is_some_and(|rt| rt.key.value.contains("{seq"))
}

fn validate(bundle: &Bundle, rt: &RecordTypeDef, input: &Value, lang: Lang) -> Result<Map<String, Value>, Rejection> {
    let form = bundle.form(&rt.form.value).ok_or_else(|| Rejection::UnknownRecordType(rt.name.clone()))?;
    match form.validate(input, lang).map_err(Rejection::InvalidInput)? {
        Value::Object(m) => Ok(m),
        _ => Ok(Map::new()),
    }
}

fn changes(before: &Map<String, Value>, after: &Map<String, Value>) -> BTreeMap<String, Change> {
    let keys: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    keys.into_iter()
        .filter_map(|k| {
            let (b, a) = (before.get(k).cloned().unwrap_or(Value::Null), after.get(k).cloned().unwrap_or(Value::Null));
            (b != a).then(|| (k.clone(), Change { before: b, after: a }))
        })
        .collect()
}

/// A new record. `seq` is the next number of the type's sequence when its key uses one.
pub fn create(
    bundle: &Bundle,
    type_name: &str,
    input: &Value,
    actor: &Actor,
    now: Time,
    seq: Option<u64>,
    lang: Lang,
) -> Result<(Record, RecordEvent), Rejection> {
    let rt = record_type(bundle, type_name)?;
    let data = validate(bundle, rt, input, lang)?;
    let local = bundle.local_text(now);
    let id = fill(&rt.key.value, &data, seq, &local).trim().to_string();
    if id.is_empty() || id.contains('/') || id.len() > 200 {
        let fields = flowform_model::check::template_fields(&rt.key.value);
        return Err(Rejection::InvalidInput(vec![FieldError {
            field: fields.first().cloned().unwrap_or_default(),
            code: "invalid_key",
            message: format!("the id made from `{}` is `{id}`: it must be 1 to 200 characters without `/`", rt.key.value),
        }]));
    }
    let title = rt.display.as_ref().map_or_else(|| id.clone(), |d| fill(&d.value, &data, seq, &local));
    let event = RecordEvent {
        record_type: rt.name.clone(),
        id: id.clone(),
        seq: 1,
        kind: RecordEventKind::Created,
        actor: actor.id.clone(),
        at: now,
        changes: changes(&Map::new(), &data),
        cause: None,
    };
    let record = Record { record_type: rt.name.clone(), id, version: 1, title, data, archived: false, created_at: now, updated_at: now };
    Ok((record, event))
}

/// The record with new data (the whole form; fields that make the id cannot change).
pub fn update(bundle: &Bundle, record: &Record, input: &Value, actor: &Actor, now: Time, lang: Lang) -> Result<(Record, RecordEvent), Rejection> {
    let rt = record_type(bundle, &record.record_type)?;
    let data = validate(bundle, rt, input, lang)?;
    for field in flowform_model::check::template_fields(&rt.key.value) {
        if data.get(&field) != record.data.get(&field) {
            return Err(Rejection::InvalidInput(vec![FieldError {
                field: field.clone(),
                code: "key_field",
                message: format!("`{field}` makes the id of this record and cannot change"),
            }]));
        }
    }
    let mut after = record.clone();
    after.title = rt.display.as_ref().map_or_else(|| record.id.clone(), |d| fill(&d.value, &data, None, &bundle.local_text(now)));
    after.version += 1;
    after.updated_at = now;
    let event = RecordEvent {
        record_type: rt.name.clone(),
        id: record.id.clone(),
        seq: after.version,
        kind: RecordEventKind::Updated,
        actor: actor.id.clone(),
        at: now,
        changes: changes(&record.data, &data),
        cause: None,
    };
    after.data = data;
    Ok((after, event))
}

/// Archives (or restores) a record: it stays readable and referenced, but leaves lists.
pub fn set_archived(record: &Record, archived: bool, actor: &Actor, now: Time) -> (Record, RecordEvent) {
    let mut after = record.clone();
    after.archived = archived;
    after.version += 1;
    after.updated_at = now;
    let kind = if archived { RecordEventKind::Archived } else { RecordEventKind::Restored };
    let mut changes = BTreeMap::new();
    changes.insert("archived".to_string(), Change { before: Value::Bool(record.archived), after: Value::Bool(archived) });
    let event = RecordEvent {
        record_type: record.record_type.clone(),
        id: record.id.clone(),
        seq: after.version,
        kind,
        actor: actor.id.clone(),
        at: now,
        changes,
        cause: None,
    };
    (after, event)
}

/// Every `(record type, id)` the data of a form refers to, groups included.
pub fn references(fields: &[FieldDef], data: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    references_into(fields, &|name| data.get(name), &mut out);
    out.sort();
    out.dedup();
    out
}

/// The references of the fields `get` finds. Only reference fields and
/// groups are looked up (a command reads this for every form of its
/// workflow, most of whose fields refer to nothing).
fn references_into<'a>(fields: &[FieldDef], get: &dyn Fn(&str) -> Option<&'a Value>, out: &mut Vec<(String, String)>) {
    for f in fields {
        match f.field_type {
            FieldType::Ref => {
                if let (Some(Value::String(id)), Some(target)) = (get(&f.name), &f.record) {
                    out.push((target.value.clone(), id.clone()));
                }
            }
            FieldType::Group => {
                if let Some(Value::Array(items)) = get(&f.name) {
                    for item in items {
                        if let Value::Object(m) = item {
                            references_into(&f.fields, &|name| m.get(name), out);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// The references of an instance's data over every form of its workflow;
/// with a command's `input`, its fields stand for the data's (the data as
/// the command will leave it, without copying it).
pub fn instance_references(bundle: &Bundle, workflow: &str, data: &Map<String, Value>, input: Option<&Map<String, Value>>) -> Vec<(String, String)> {
    let Some(wf) = bundle.workflow(workflow) else { return Vec::new() };
    let forms = wf.start.form.iter().chain(wf.transitions.iter().filter_map(|t| t.form.as_ref()));
    let get = |name: &str| input.and_then(|m| m.get(name)).or_else(|| data.get(name));
    let mut out = Vec::new();
    for f in forms {
        if let Some(form) = bundle.form(&f.value) {
            references_into(&form.def.fields, &get, &mut out);
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether a record matches `?q=`: a case-insensitive substring of a searchable
/// field, the id or the title (works for Chinese: 冷水机 finds 1号冷水机组).
pub fn matches_query(rt: &RecordTypeDef, record: &Record, q: &str) -> bool {
    let q = q.trim().to_lowercase();
    if q.is_empty() {
        return true;
    }
    record.id.to_lowercase().contains(&q)
        || record.title.to_lowercase().contains(&q)
        || rt.search.iter().any(|f| record.data.get(&f.value).is_some_and(|v| text_of(v).to_lowercase().contains(&q)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_fields_sequences_and_dates() {
        let data: Map<String, Value> = serde_json::from_str(r#"{"code": "AHU-01", "name": "空调机组", "floor": 3}"#).unwrap();
        assert_eq!(fill("{code}", &data, None, "2026-11-25T08:00:00Z"), "AHU-01");
        assert_eq!(fill("{name} ({code}) F{floor}", &data, None, ""), "空调机组 (AHU-01) F3");
        assert_eq!(fill("WO-{yyyyMMdd}-{seq:4}", &data, Some(7), "2026-11-25T08:00:00Z"), "WO-20261125-0007");
    }
}
