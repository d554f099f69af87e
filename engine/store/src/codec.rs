//! How events and instances are kept in their tables: compact, not JSON.
//!
//! The key already names what the value is of (an event's `instance␟seq`,
//! an instance's id), so the value leaves it out; the rest is MessagePack
//! with the fields by position (no field names), times as milliseconds and
//! kinds as numbers. An event's change leaves out its `after` where it is a
//! plain value (text, number, yes/no) equal to the command's input for that
//! field (most changes are a field the form set). The first byte names the
//! format:
//!
//! - `{` — JSON, as everything was written before this format (still read;
//!   the store rewrites them in the background, [`Job::Compact`]);
//! - [`V1`] — the first compact layout (still read);
//! - [`V2`] — this format: an event's changes whose `after` is the input's
//!   own value name their field by its place among the input's keys
//!   instead of by name (the name is already in the input), and a bundle
//!   version (sixteen hex digits) is kept as the eight bytes it spells
//!   ([`Packed`]); instances too.
//!
//! A new layout takes a new first byte; every layout ever written stays
//! readable.
//!
//! [`Job::Compact`]: crate::Job::Compact

use crate::{Result, StoreError};
use flowform_core::deadlines::DeadlineRun;
use flowform_core::instance::DecidedOn;
use flowform_core::ledger::Moved;
use flowform_core::{Assignment, Change, Event, EventKind, Instance, Time};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The first byte of a compact value (version 1 of the layouts).
pub const V1: u8 = 1;
/// The first byte of a compact value in version 2 of the layouts.
pub const V2: u8 = 2;

/// A bundle version as [`V2`] keeps it: text of lowercase hex digits (as
/// versions are, [`flowform_core::bundle::version_of`]) as the bytes they
/// spell (MessagePack `bin`: 10 bytes for 16 digits, not 17), anything
/// else as text.
struct Packed<'a>(Cow<'a, str>);

impl Serialize for Packed<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let t = self.0.as_bytes();
        let hex = !t.is_empty() && t.len().is_multiple_of(2) && t.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        match hex.then(|| hex::decode(t).ok()).flatten() {
            Some(bytes) => s.serialize_bytes(&bytes),
            None => s.serialize_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for Packed<'_> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = String;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a bundle version (text or bytes)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<String, E> {
                Ok(v.to_string())
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> std::result::Result<String, E> {
                Ok(hex::encode(v))
            }
        }
        d.deserialize_any(Visit).map(|v| Packed(Cow::Owned(v)))
    }
}

impl From<Packed<'_>> for String {
    fn from(p: Packed<'_>) -> String {
        p.0.into_owned()
    }
}

/// An event's fields in the order they are written. Never reorder or
/// remove: that is a new layout with a new first byte. `C` is how the
/// changes are written: [`StoredChange`]s in [`V1`], [`ChangesV2`] in [`V2`];
/// `V` the bundle version: text in [`V1`], [`Packed`] in [`V2`].
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "C: Deserialize<'de>, V: Deserialize<'de>"))]
struct Stored<'a, C, V> {
    kind: u8,
    transition: Option<Cow<'a, str>>,
    actor: Cow<'a, str>,
    at_ms: i64,
    bundle_version: V,
    from_state: Option<Cow<'a, str>>,
    to_state: Cow<'a, str>,
    input: Cow<'a, Value>,
    changes: C,
    parent: Option<Cow<'a, str>>,
    children: Cow<'a, [String]>,
    decided_on: StoredDecidedOn<'a>,
}

/// `(field, before, after is the input's value, after)`; when the flag is
/// set, `after` is written as nil and read from the input.
#[derive(Serialize, Deserialize)]
struct StoredChange<'a>(Cow<'a, str>, Cow<'a, Value>, bool, Cow<'a, Value>);

/// The changes in [`V2`]: first those whose `after` is the input's own
/// plain value, as `(the field's place among the input's keys, before)`;
/// then the others as `(field, before, after)`.
#[derive(Serialize, Deserialize)]
struct ChangesV2<'a>(Vec<(u32, Cow<'a, Value>)>, Vec<(Cow<'a, str>, Cow<'a, Value>, Cow<'a, Value>)>);

#[derive(Serialize, Deserialize)]
struct StoredDecidedOn<'a> {
    roles: Cow<'a, [String]>,
    teams: Cow<'a, [String]>,
    department: Option<Cow<'a, str>>,
    records: Cow<'a, BTreeMap<String, BTreeMap<String, u64>>>,
    picked: Option<Cow<'a, str>>,
    recorded: bool,
}

fn kind_code(kind: EventKind) -> u8 {
    match kind {
        EventKind::Started => 0,
        EventKind::Transition => 1,
        EventKind::Migrated => 2,
        EventKind::Timer => 3,
    }
}

fn kind_of(code: u8) -> Option<EventKind> {
    Some(match code {
        0 => EventKind::Started,
        1 => EventKind::Transition,
        2 => EventKind::Migrated,
        3 => EventKind::Timer,
        _ => return None,
    })
}

/// The bytes an event is kept as ([`V2`]).
pub fn encode_event(e: &Event) -> Result<Vec<u8>> {
    let (mut from_input, mut others) = (Vec::new(), Vec::new());
    for (field, c) in &e.changes {
        // Only plain values: objects compare equal whatever the order of
        // their keys, and the after's own order must come back.
        let place = match &e.input {
            Value::Object(input) => input.iter().position(|(k, v)| k == field && same_plain(v, &c.after)),
            _ => None,
        };
        match place {
            Some(at) => from_input.push((at as u32, Cow::Borrowed(&c.before))),
            None => others.push((Cow::Borrowed(field.as_str()), Cow::Borrowed(&c.before), Cow::Borrowed(&c.after))),
        }
    }
    let stored = stored_event(e, ChangesV2(from_input, others), Packed(Cow::Borrowed(&e.bundle_version)));
    let mut out = Vec::with_capacity(256);
    out.push(V2);
    rmp_serde::encode::write(&mut out, &stored).map_err(|err| StoreError::Backend(format!("cannot encode the event {}/{}: {err}", e.instance_id, e.seq)))?;
    Ok(out)
}

/// `e`'s fields as a layout writes them, with its `changes` and its bundle
/// version as `version`.
fn stored_event<C, V>(e: &Event, changes: C, version: V) -> Stored<'_, C, V> {
    let d = &e.decided_on;
    Stored {
        kind: kind_code(e.kind),
        transition: e.transition.as_deref().map(Cow::Borrowed),
        actor: Cow::Borrowed(&e.actor),
        at_ms: e.at.millis(),
        bundle_version: version,
        from_state: e.from_state.as_deref().map(Cow::Borrowed),
        to_state: Cow::Borrowed(&e.to_state),
        input: Cow::Borrowed(&e.input),
        changes,
        parent: e.parent.as_deref().map(Cow::Borrowed),
        children: Cow::Borrowed(&e.children),
        decided_on: StoredDecidedOn {
            roles: Cow::Borrowed(&d.roles),
            teams: Cow::Borrowed(&d.teams),
            department: d.department.as_deref().map(Cow::Borrowed),
            records: Cow::Borrowed(&d.records),
            picked: d.picked.as_deref().map(Cow::Borrowed),
            recorded: d.recorded,
        },
    }
}

/// Whether `a` and `b` are the same plain value (text, number, yes/no),
/// to the bit: serde_json takes `-0.0` and `0.0` for equal, and an after
/// read from the input must come back as it was. (Objects compare equal
/// whatever the order of their keys, and an after's own order must come
/// back: they are never taken from the input.)
fn same_plain(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            x.is_f64() && y.is_f64() && x.as_f64().map(f64::to_bits) == y.as_f64().map(f64::to_bits)
        }
        (Value::String(_) | Value::Number(_) | Value::Bool(_), _) => a == b,
        _ => false,
    }
}

/// The event kept as `bytes` under the key of `instance_id` and `seq`.
pub fn decode_event(instance_id: &str, seq: u64, bytes: &[u8]) -> Result<Event> {
    let corrupt = |detail: String| StoreError::Corrupt { what: format!("event {instance_id}/{seq}"), detail };
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string())),
        Some(&V1) => {
            let s: Stored<Vec<StoredChange>, Cow<str>> = rmp_serde::from_slice(&bytes[1..]).map_err(|e| corrupt(e.to_string()))?;
            event_of(instance_id, seq, s, &corrupt, |input, changes| {
                Ok(changes
                    .into_iter()
                    .map(|StoredChange(field, before, from_input, after)| {
                        let after = if from_input { input.get(field.as_ref()).cloned().unwrap_or(Value::Null) } else { after.into_owned() };
                        (field.into_owned(), Change { before: before.into_owned(), after })
                    })
                    .collect())
            })
        }
        Some(&V2) => {
            let s: Stored<ChangesV2, Packed> = rmp_serde::from_slice(&bytes[1..]).map_err(|e| corrupt(e.to_string()))?;
            event_of(instance_id, seq, s, &corrupt, |input, ChangesV2(from_input, others)| {
                let mut changes = BTreeMap::new();
                for (at, before) in from_input {
                    let (field, after) = input
                        .as_object()
                        .and_then(|m| m.iter().nth(at as usize))
                        .ok_or_else(|| corrupt(format!("a change names input field {at}, which the input does not have")))?;
                    changes.insert(field.clone(), Change { before: before.into_owned(), after: after.clone() });
                }
                for (field, before, after) in others {
                    changes.insert(field.into_owned(), Change { before: before.into_owned(), after: after.into_owned() });
                }
                Ok(changes)
            })
        }
        Some(other) => Err(corrupt(format!("unknown format (first byte {other:#04x})"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// The event of a compact layout, its changes read by `changes` (given the input).
fn event_of<C, V: Into<String>>(
    instance_id: &str,
    seq: u64,
    s: Stored<C, V>,
    corrupt: &dyn Fn(String) -> StoreError,
    changes: impl FnOnce(&Value, C) -> Result<BTreeMap<String, Change>>,
) -> Result<Event> {
    let kind = kind_of(s.kind).ok_or_else(|| corrupt(format!("unknown event kind {}", s.kind)))?;
    let at = Time::from_millis(s.at_ms).ok_or_else(|| corrupt(format!("time {} ms is out of range", s.at_ms)))?;
    let input = s.input.into_owned();
    let changes = changes(&input, s.changes)?;
    let d = s.decided_on;
    Ok(Event {
        instance_id: instance_id.to_string(),
        seq,
        kind,
        transition: s.transition.map(Cow::into_owned),
        actor: s.actor.into_owned(),
        at,
        bundle_version: s.bundle_version.into(),
        from_state: s.from_state.map(Cow::into_owned),
        to_state: s.to_state.into_owned(),
        input,
        changes,
        parent: s.parent.map(Cow::into_owned),
        children: s.children.into_owned(),
        decided_on: DecidedOn {
            roles: d.roles.into_owned(),
            teams: d.teams.into_owned(),
            department: d.department.map(Cow::into_owned),
            records: d.records.into_owned(),
            picked: d.picked.map(Cow::into_owned),
            recorded: d.recorded,
        },
    })
}

/// Whether `bytes` hold JSON, as written before the compact format.
pub fn is_json(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
}

/// An instance's fields in the order they are written (its id is the key).
/// Never reorder or remove: that is a new layout with a new first byte.
/// `V` is the bundle version: text in [`V1`], [`Packed`] in [`V2`].
#[derive(Serialize, Deserialize)]
#[serde(bound(deserialize = "V: Deserialize<'de>"))]
struct StoredInstance<'a, V> {
    number: Option<Cow<'a, str>>,
    workflow: Cow<'a, str>,
    bundle_version: V,
    version: u64,
    state: Cow<'a, str>,
    data: Cow<'a, Map<String, Value>>,
    assignment: StoredAssignment<'a>,
    requester: Cow<'a, str>,
    requester_department: Option<Cow<'a, str>>,
    created_at_ms: i64,
    updated_at_ms: i64,
    state_entered_at_ms: i64,
    state_entered_seq: u64,
    due_at_ms: Option<i64>,
    overdue: bool,
    moved: Vec<StoredMoved<'a>>,
    parent: Option<Cow<'a, str>>,
    children: Cow<'a, [String]>,
    deadlines: Vec<StoredDeadline<'a>>,
}

/// team, assignee, vendor
#[derive(Serialize, Deserialize)]
struct StoredAssignment<'a>(Option<Cow<'a, str>>, Option<Cow<'a, str>>, Option<Cow<'a, str>>);

/// ledger, dims, issued, returned
#[derive(Serialize, Deserialize)]
struct StoredMoved<'a>(Cow<'a, str>, Cow<'a, BTreeMap<String, String>>, i64, i64);

#[derive(Serialize, Deserialize)]
struct StoredDeadline<'a> {
    name: Cow<'a, str>,
    started_at_ms: i64,
    used_secs: i64,
    running_since_ms: Option<i64>,
    due_at_ms: Option<i64>,
    met_at_ms: Option<i64>,
    breached_at_ms: Option<i64>,
}

fn opt(s: &Option<String>) -> Option<Cow<'_, str>> {
    s.as_deref().map(Cow::Borrowed)
}

fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

/// The bytes an instance is kept as.
pub fn encode_instance(i: &Instance) -> Result<Vec<u8>> {
    let stored = stored_instance(i, Packed(Cow::Borrowed(&i.bundle_version)));
    let mut out = Vec::with_capacity(512);
    out.push(V2);
    rmp_serde::encode::write(&mut out, &stored).map_err(|err| StoreError::Backend(format!("cannot encode the instance {}: {err}", i.id)))?;
    Ok(out)
}

/// `i`'s fields as a layout writes them, its bundle version as `version`.
fn stored_instance<V>(i: &Instance, version: V) -> StoredInstance<'_, V> {
    let a = &i.assignment;
    StoredInstance {
        number: opt(&i.number),
        workflow: Cow::Borrowed(&i.workflow),
        bundle_version: version,
        version: i.version,
        state: Cow::Borrowed(&i.state),
        data: Cow::Borrowed(&i.data),
        assignment: StoredAssignment(opt(&a.team), opt(&a.assignee), opt(&a.vendor)),
        requester: Cow::Borrowed(&i.requester),
        requester_department: opt(&i.requester_department),
        created_at_ms: i.created_at.millis(),
        updated_at_ms: i.updated_at.millis(),
        state_entered_at_ms: i.state_entered_at.millis(),
        state_entered_seq: i.state_entered_seq,
        due_at_ms: i.due_at.map(Time::millis),
        overdue: i.overdue,
        moved: i.moved.iter().map(|m| StoredMoved(Cow::Borrowed(m.ledger.as_str()), Cow::Borrowed(&m.dims), m.issued, m.returned)).collect(),
        parent: opt(&i.parent),
        children: Cow::Borrowed(&i.children),
        deadlines: i
            .deadlines
            .iter()
            .map(|d| StoredDeadline {
                name: Cow::Borrowed(&d.name),
                started_at_ms: d.started_at.millis(),
                used_secs: d.used_secs,
                running_since_ms: d.running_since.map(Time::millis),
                due_at_ms: d.due_at.map(Time::millis),
                met_at_ms: d.met_at.map(Time::millis),
                breached_at_ms: d.breached_at.map(Time::millis),
            })
            .collect(),
    }
}

/// The instance kept as `bytes` under the key `id`.
/// Whether [`decode_instance`] of [`encode_instance`] gives `i` back
/// exactly: the codec keeps times in whole milliseconds, so an instance
/// with a finer time reads back different.
pub fn round_trips(i: &Instance) -> bool {
    let exact = |t: Time| Time::from_millis(t.millis()) == Some(t);
    let exact_opt = |t: Option<Time>| t.is_none_or(exact);
    exact(i.created_at)
        && exact(i.updated_at)
        && exact(i.state_entered_at)
        && exact_opt(i.due_at)
        && i.deadlines
            .iter()
            .all(|d| exact(d.started_at) && exact_opt(d.running_since) && exact_opt(d.due_at) && exact_opt(d.met_at) && exact_opt(d.breached_at))
}

pub fn decode_instance(id: &str, bytes: &[u8]) -> Result<Instance> {
    let corrupt = |detail: String| StoreError::Corrupt { what: format!("instance {id}"), detail };
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string())),
        Some(&V1) => {
            let s: StoredInstance<Cow<str>> = rmp_serde::from_slice(&bytes[1..]).map_err(|e| corrupt(e.to_string()))?;
            instance_of(id, s, &corrupt)
        }
        Some(&V2) => {
            let s: StoredInstance<Packed> = rmp_serde::from_slice(&bytes[1..]).map_err(|e| corrupt(e.to_string()))?;
            instance_of(id, s, &corrupt)
        }
        Some(other) => Err(corrupt(format!("unknown format (first byte {other:#04x})"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// The instance of a compact layout.
fn instance_of<V: Into<String>>(id: &str, s: StoredInstance<V>, corrupt: &dyn Fn(String) -> StoreError) -> Result<Instance> {
    let time = |ms: i64| Time::from_millis(ms).ok_or_else(|| corrupt(format!("time {ms} ms is out of range")));
    let maybe = |ms: Option<i64>| ms.map(time).transpose();
    let deadlines = s
        .deadlines
        .into_iter()
        .map(|d| {
            Ok(DeadlineRun {
                name: d.name.into_owned(),
                started_at: time(d.started_at_ms)?,
                used_secs: d.used_secs,
                running_since: maybe(d.running_since_ms)?,
                due_at: maybe(d.due_at_ms)?,
                met_at: maybe(d.met_at_ms)?,
                breached_at: maybe(d.breached_at_ms)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let StoredAssignment(team, assignee, vendor) = s.assignment;
    Ok(Instance {
        id: id.to_string(),
        number: owned(s.number),
        workflow: s.workflow.into_owned(),
        bundle_version: s.bundle_version.into(),
        version: s.version,
        state: s.state.into_owned(),
        data: s.data.into_owned(),
        assignment: Assignment { team: owned(team), assignee: owned(assignee), vendor: owned(vendor) },
        requester: s.requester.into_owned(),
        requester_department: owned(s.requester_department),
        created_at: time(s.created_at_ms)?,
        updated_at: time(s.updated_at_ms)?,
        state_entered_at: time(s.state_entered_at_ms)?,
        state_entered_seq: s.state_entered_seq,
        due_at: maybe(s.due_at_ms)?,
        overdue: s.overdue,
        moved: s
            .moved
            .into_iter()
            .map(|StoredMoved(ledger, dims, issued, returned)| Moved { ledger: ledger.into_owned(), dims: dims.into_owned(), issued, returned })
            .collect(),
        parent: owned(s.parent),
        children: s.children.into_owned(),
        deadlines,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn sample() -> Event {
        let mut changes = BTreeMap::new();
        changes.insert("asset_id".into(), Change { before: Value::Null, after: json!("EQ-000001") });
        changes.insert("assignment.team".into(), Change { before: Value::Null, after: json!("hvac_team") });
        changes.insert("work_notes".into(), Change { before: json!("旧的"), after: json!("更换了滤网") });
        changes.insert("qty".into(), Change { before: json!(3), after: Value::Null });
        Event {
            instance_id: "01M8RWYBFSE972AJVRSZ8AERQ7".into(),
            seq: 7,
            kind: EventKind::Transition,
            transition: Some("complete".into()),
            actor: "tech-0".into(),
            at: flowform_core::time::tm("2026-12-01T13:33:11.041Z"),
            bundle_version: "12ac381d614be872".into(),
            from_state: Some("parts_issued".into()),
            to_state: "completed".into(),
            input: json!({"asset_id": "EQ-000001", "work_notes": "更换了滤网", "floor": 1.5, "tags": ["a", {"b": null}]}),
            changes,
            parent: None,
            children: vec!["01CHILD".into()],
            decided_on: DecidedOn {
                roles: vec!["technician".into()],
                teams: vec![],
                department: Some("心内科".into()),
                records: BTreeMap::from([("part".into(), BTreeMap::from([("hvac-filter".into(), 4)]))]),
                picked: Some("round_robin".into()),
                recorded: true,
            },
        }
    }

    #[test]
    fn an_event_reads_back_as_it_was_written_and_takes_a_fraction_of_its_json() {
        let e = sample();
        let bytes = encode_event(&e).unwrap();
        assert_eq!(bytes[0], V2);
        assert_eq!(decode_event(&e.instance_id, e.seq, &bytes).unwrap(), e);
        let json = serde_json::to_vec(&e).unwrap();
        assert!(bytes.len() * 2 < json.len(), "{} compact bytes vs {} of JSON", bytes.len(), json.len());
        // The fields the input set are named once, in the input: each of
        // those two changes takes its name and two bytes less, each of the
        // two others one byte (its flag) less; the two lists, two more. The
        // bundle version, 16 hex digits, takes 10 bytes instead of 17.
        let v1 = encode_event_v1(&e);
        let saved = ("asset_id".len() + 2) + ("work_notes".len() + 2) + 2 - 2 + 7;
        assert_eq!(v1.len() - bytes.len(), saved, "{} bytes in V1, {} in V2", v1.len(), bytes.len());
    }

    /// An event as [`V1`] wrote it (before [`V2`]).
    pub(crate) fn encode_event_v1(e: &Event) -> Vec<u8> {
        let changes = e
            .changes
            .iter()
            .map(|(field, c)| {
                let plain = matches!(c.after, Value::String(_) | Value::Number(_) | Value::Bool(_));
                let from_input = plain && e.input.get(field) == Some(&c.after);
                let after = if from_input { Cow::Owned(Value::Null) } else { Cow::Borrowed(&c.after) };
                StoredChange(Cow::Borrowed(field), Cow::Borrowed(&c.before), from_input, after)
            })
            .collect::<Vec<_>>();
        let stored = stored_event(e, changes, Cow::Borrowed(e.bundle_version.as_str()));
        let mut out = vec![V1];
        rmp_serde::encode::write(&mut out, &stored).unwrap();
        out
    }

    #[test]
    fn events_written_in_the_first_compact_layout_still_read() {
        let e = sample();
        let v1 = encode_event_v1(&e);
        assert_eq!(v1[0], V1);
        assert_eq!(decode_event(&e.instance_id, e.seq, &v1).unwrap(), e);
    }

    #[test]
    fn an_after_of_zero_is_not_read_from_an_input_of_minus_zero() {
        let mut e = sample();
        e.input = json!({"x": -0.0, "y": 1, "z": 1.0});
        e.changes = BTreeMap::from([
            ("x".into(), Change { before: Value::Null, after: json!(0.0) }),
            ("y".into(), Change { before: Value::Null, after: json!(1.0) }),
            ("z".into(), Change { before: Value::Null, after: json!(1) }),
        ]);
        let back = decode_event(&e.instance_id, e.seq, &encode_event(&e).unwrap()).unwrap();
        // serde_json compares -0.0 equal to 0.0 and 1 unequal to 1.0: compare the text.
        assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&e).unwrap());
        assert!(same_plain(&json!(2.5), &json!(2.5)) && same_plain(&json!(-3), &json!(-3)) && same_plain(&json!("a"), &json!("a")));
        assert!(!same_plain(&json!(-0.0), &json!(0.0)) && !same_plain(&json!(1), &json!(1.0)) && !same_plain(&json!({}), &json!({})));
    }

    /// The sample event and instance as the first compact layout wrote them.
    const V1_EVENT: &str = concat!(
        "019c01a8636f6d706c657465a6746563682d30cf000001a231cf2e01b031326163333831643631346265383732ac7061",
        "7274735f697373756564a9636f6d706c6574656484a861737365745f6964a945512d303030303031aa776f726b5f6e6f",
        "746573afe69bb4e68da2e4ba86e6bba4e7bd91a5666c6f6f72cb3ff8000000000000a47461677392a16181a162c09494",
        "a861737365745f6964c0c3c094af61737369676e6d656e742e7465616dc0c2a9687661635f7465616d94a371747903c2",
        "c094aa776f726b5f6e6f746573a6e697a7e79a84c3c0c091a730314348494c449691aa746563686e696369616e90a9e5",
        "bf83e58685e7a79181a47061727481ab687661632d66696c74657204ab726f756e645f726f62696ec3"
    );
    const V1_INSTANCE: &str = concat!(
        "01dc0013ae574f2d323032362d303030303137a6726570616972b0313261633338316436313462653837320da6636c6f",
        "73656484a861737365745f6964a445512d31a5666c6f6f7203ab6465736372697074696f6eb5e4b889e6a5bce7a9bae8",
        "b083e4b88de588b6e586b7a570617274739182a470617274a178a37174790293a9687661635f7465616da6746563682d",
        "30c0a76e757273652d31a9e5bf83e58685e7a791cf000001a231cf2df9cf000001a231cf2e05cf000001a231cf2e050d",
        "cf000001a232aae7f9c39194a573746f636b81a470617274ab687661632d66696c7465720201a83031504152454e5491",
        "a730314348494c449297a77265736f6c7665cf000001a231cf2df93cc0c0cf000001a231e7bb00c097a7726573706f6e",
        "64cf000001a231cf2df900cf000001a231cf2df9cf000001a231dce999c0cf000001a231de9340"
    );

    /// Bytes the first compact layout wrote (the sample event and
    /// instance, encoded by the version before the second layout): they
    /// read back the same for as long as the code lives.
    #[test]
    fn bytes_written_in_the_first_compact_layout_read_back_for_good() {
        let event = hex::decode(V1_EVENT).unwrap();
        assert_eq!(decode_event("01M8RWYBFSE972AJVRSZ8AERQ7", 7, &event).unwrap(), sample());
        let instance = hex::decode(V1_INSTANCE).unwrap();
        assert_eq!(decode_instance("01M8RWYBFSE972AJVRSZ8AERQ7", &instance).unwrap(), an_instance());
    }

    #[test]
    fn a_change_naming_an_input_field_the_input_lacks_is_a_corrupt_event() {
        let mut e = sample();
        let bytes = encode_event(&e).unwrap();
        // The same event with an input of one field less: its second change
        // by place names nothing.
        e.input.as_object_mut().unwrap().shift_remove("work_notes");
        e.input.as_object_mut().unwrap().shift_remove("tags");
        e.input.as_object_mut().unwrap().shift_remove("floor");
        let mut stored: Stored<ChangesV2, Packed> = rmp_serde::from_slice(&bytes[1..]).unwrap();
        stored.input = Cow::Owned(e.input.clone());
        let mut damaged = vec![V2];
        rmp_serde::encode::write(&mut damaged, &stored).unwrap();
        let err = decode_event("i", 3, &damaged).unwrap_err().to_string();
        assert!(err.contains("event i/3") && err.contains("input field 1"), "{err}");
    }

    #[test]
    fn events_written_as_json_before_still_read() {
        let e = sample();
        let json = serde_json::to_vec(&e).unwrap();
        assert!(is_json(&json));
        assert_eq!(decode_event(&e.instance_id, e.seq, &json).unwrap(), e);
    }

    #[test]
    fn an_after_equal_to_the_input_is_not_written_twice_but_a_null_after_is_kept() {
        let mut e = sample();
        let long = "x".repeat(500);
        e.input = json!({ "work_notes": long });
        e.changes = BTreeMap::from([
            ("work_notes".into(), Change { before: Value::Null, after: json!(long) }),
            // The input says null for a field whose after is null: written as is.
            ("qty".into(), Change { before: json!(1), after: Value::Null }),
        ]);
        e.input["qty"] = Value::Null;
        let bytes = encode_event(&e).unwrap();
        assert!(bytes.len() < 500 + 200, "the note is written once: {} bytes", bytes.len());
        assert_eq!(decode_event(&e.instance_id, e.seq, &bytes).unwrap(), e);
    }

    #[test]
    fn an_object_after_keeps_its_own_key_order_even_when_the_input_has_it_in_another() {
        let mut e = sample();
        e.input = json!({"place": {"floor": 3, "room": "301"}});
        e.changes = BTreeMap::from([("place".into(), Change { before: Value::Null, after: json!({"room": "301", "floor": 3}) })]);
        let back = decode_event(&e.instance_id, e.seq, &encode_event(&e).unwrap()).unwrap();
        // Maps compare equal whatever their order: compare the text.
        assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&e).unwrap());
    }

    #[test]
    fn damaged_bytes_are_a_corrupt_event_naming_it_never_a_panic() {
        let bytes = encode_event(&sample()).unwrap();
        for cut in 0..bytes.len() {
            let err = decode_event("i", 3, &bytes[..cut]).unwrap_err();
            assert!(err.to_string().contains("event i/3"), "{err}");
        }
        let err = decode_event("i", 3, &[9, 1, 2]).unwrap_err().to_string();
        assert!(err.contains("unknown format"), "{err}");
    }

    pub(crate) fn an_instance() -> Instance {
        let t = flowform_core::time::tm;
        let serde_json::Value::Object(data) = json!({"asset_id": "EQ-1", "floor": 3, "description": "三楼空调不制冷", "parts": [{"part": "x", "qty": 2}]})
        else {
            unreachable!()
        };
        Instance {
            id: "01M8RWYBFSE972AJVRSZ8AERQ7".into(),
            number: Some("WO-2026-000017".into()),
            workflow: "repair".into(),
            bundle_version: "12ac381d614be872".into(),
            version: 13,
            state: "closed".into(),
            data,
            assignment: Assignment { team: Some("hvac_team".into()), assignee: Some("tech-0".into()), vendor: None },
            requester: "nurse-1".into(),
            requester_department: Some("心内科".into()),
            created_at: t("2026-12-01T13:33:11.033Z"),
            updated_at: t("2026-12-01T13:33:11.045Z"),
            state_entered_at: t("2026-12-01T13:33:11.045Z"),
            state_entered_seq: 13,
            due_at: Some(t("2026-12-01T17:33:11.033Z")),
            overdue: true,
            moved: vec![Moved { ledger: "stock".into(), dims: BTreeMap::from([("part".into(), "hvac-filter".into())]), issued: 2, returned: 1 }],
            parent: Some("01PARENT".into()),
            children: vec!["01CHILD".into()],
            deadlines: vec![
                DeadlineRun {
                    name: "resolve".into(),
                    started_at: t("2026-12-01T13:33:11.033Z"),
                    used_secs: 60,
                    running_since: None,
                    due_at: None,
                    met_at: Some(t("2026-12-01T14:00:00Z")),
                    breached_at: None,
                },
                DeadlineRun {
                    name: "respond".into(),
                    started_at: t("2026-12-01T13:33:11.033Z"),
                    used_secs: 0,
                    running_since: Some(t("2026-12-01T13:33:11.033Z")),
                    due_at: Some(t("2026-12-01T13:48:11.033Z")),
                    met_at: None,
                    breached_at: Some(t("2026-12-01T13:50:00Z")),
                },
            ],
        }
    }

    #[test]
    fn an_instance_reads_back_as_it_was_written_in_less_than_its_json_and_its_old_json_still_reads() {
        let i = an_instance();
        let bytes = encode_instance(&i).unwrap();
        assert_eq!(bytes[0], V2);
        assert_eq!(decode_instance(&i.id, &bytes).unwrap(), i);
        // The first compact layout still reads; the version took 7 bytes more there.
        let mut v1 = vec![V1];
        rmp_serde::encode::write(&mut v1, &stored_instance(&i, Cow::Borrowed(i.bundle_version.as_str()))).unwrap();
        assert_eq!(decode_instance(&i.id, &v1).unwrap(), i);
        assert_eq!(v1.len() - bytes.len(), 7);
        let json = serde_json::to_vec(&i).unwrap();
        assert!(bytes.len() * 3 < json.len() * 2, "{} compact bytes vs {} of JSON", bytes.len(), json.len());
        assert_eq!(decode_instance(&i.id, &json).unwrap(), i);
        // The fewest fields: nothing optional set.
        let mut bare = an_instance();
        (bare.number, bare.requester_department, bare.due_at, bare.parent) = (None, None, None, None);
        (bare.moved, bare.children, bare.deadlines, bare.assignment) = (vec![], vec![], vec![], Assignment::default());
        assert_eq!(decode_instance(&bare.id, &encode_instance(&bare).unwrap()).unwrap(), bare);
        for cut in 0..bytes.len() {
            let err = decode_instance("i", &bytes[..cut]).unwrap_err();
            assert!(err.to_string().contains("instance i"), "{err}");
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            (-1e12f64..1e12).prop_map(Value::from),
            "[a-z情况 ]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{1,6}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Any bundle version reads back as it was: hex as bytes, the rest as text.
        #[test]
        fn any_bundle_version_reads_back(version in prop_oneof!["[0-9a-f]{0,20}", "[0-9a-fA-Fg情 ]{0,20}"]) {
            let mut bytes = Vec::new();
            rmp_serde::encode::write(&mut bytes, &Packed(Cow::Borrowed(&version))).unwrap();
            let back: Packed = rmp_serde::from_slice(&bytes).unwrap();
            prop_assert_eq!(String::from(back), version);
        }

        #[test]
        fn any_input_and_changes_read_back_unchanged(
            // Few names, so that changes often name an input's field; the
            // input in the order drawn (not sorted).
            input in proptest::collection::vec(("[a-f]", value()), 0..6),
            changes in proptest::collection::btree_map("[a-f]", (value(), value(), any::<bool>()), 0..5),
            transition in proptest::option::of("[a-z_]{1,10}"),
        ) {
            let mut e = sample();
            e.input = Value::Object(input.into_iter().collect());
            e.changes = changes
                .into_iter()
                .map(|(k, (before, after, same))| {
                    // Often the after is the input's own value, as for a form's field.
                    let after = if same { e.input.get(&k).cloned().unwrap_or(after) } else { after };
                    (k, Change { before, after })
                })
                .collect();
            e.transition = transition;
            let bytes = encode_event(&e).unwrap();
            let back = decode_event(&e.instance_id, e.seq, &bytes).unwrap();
            // The text too: values equal to serde_json may still differ (-0.0 and 0.0, key order).
            prop_assert_eq!(serde_json::to_string(&back).unwrap(), serde_json::to_string(&e).unwrap());
            prop_assert_eq!(back, e);
        }
    }
}
