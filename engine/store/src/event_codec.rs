//! How an event is kept in the `events` table: compact, not JSON.
//!
//! Its key (`instance␟seq`) already names the instance and the sequence
//! number, so the value leaves them out; the rest is MessagePack with the
//! event's fields by position (no field names), the time as milliseconds,
//! the kind as a number, and each change's `after` left out where it equals
//! the command's input for that field (most changes are a field the form
//! set). The first byte names the format:
//!
//! - `{` — JSON, as every event was written before this format (still read;
//!   the store rewrites them in the background, [`Job::CompactEvents`]);
//! - [`V1`] — this format.
//!
//! A new layout takes a new first byte; every layout ever written stays
//! readable.
//!
//! [`Job::CompactEvents`]: crate::Job::CompactEvents

use crate::{Result, StoreError};
use flowform_core::instance::DecidedOn;
use flowform_core::{Change, Event, EventKind, Time};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// The first byte of a compact event (version 1 of the layout).
pub const V1: u8 = 1;

/// An event's fields in the order they are written. Never reorder or
/// remove: that is a new layout with a new first byte.
#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    kind: u8,
    transition: Option<Cow<'a, str>>,
    actor: Cow<'a, str>,
    at_ms: i64,
    bundle_version: Cow<'a, str>,
    from_state: Option<Cow<'a, str>>,
    to_state: Cow<'a, str>,
    input: Cow<'a, Value>,
    changes: Vec<StoredChange<'a>>,
    parent: Option<Cow<'a, str>>,
    children: Cow<'a, [String]>,
    decided_on: StoredDecidedOn<'a>,
}

/// `(field, before, after is the input's value, after)`; when the flag is
/// set, `after` is written as nil and read from the input.
#[derive(Serialize, Deserialize)]
struct StoredChange<'a>(Cow<'a, str>, Cow<'a, Value>, bool, Cow<'a, Value>);

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

const NULL: Value = Value::Null;

/// The bytes an event is kept as.
pub fn encode(e: &Event) -> Result<Vec<u8>> {
    let changes = e
        .changes
        .iter()
        .map(|(field, c)| {
            let from_input = !c.after.is_null() && e.input.get(field) == Some(&c.after);
            let after = if from_input { Cow::Owned(NULL) } else { Cow::Borrowed(&c.after) };
            StoredChange(Cow::Borrowed(field), Cow::Borrowed(&c.before), from_input, after)
        })
        .collect();
    let d = &e.decided_on;
    let stored = Stored {
        kind: kind_code(e.kind),
        transition: e.transition.as_deref().map(Cow::Borrowed),
        actor: Cow::Borrowed(&e.actor),
        at_ms: e.at.millis(),
        bundle_version: Cow::Borrowed(&e.bundle_version),
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
    };
    let mut out = Vec::with_capacity(256);
    out.push(V1);
    rmp_serde::encode::write(&mut out, &stored).map_err(|err| StoreError::Backend(format!("cannot encode the event {}/{}: {err}", e.instance_id, e.seq)))?;
    Ok(out)
}

/// The event kept as `bytes` under the key of `instance_id` and `seq`.
pub fn decode(instance_id: &str, seq: u64, bytes: &[u8]) -> Result<Event> {
    let corrupt = |detail: String| StoreError::Corrupt { what: format!("event {instance_id}/{seq}"), detail };
    match bytes.first() {
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string())),
        Some(&V1) => {
            let s: Stored = rmp_serde::from_slice(&bytes[1..]).map_err(|e| corrupt(e.to_string()))?;
            let kind = kind_of(s.kind).ok_or_else(|| corrupt(format!("unknown event kind {}", s.kind)))?;
            let at = Time::from_millis(s.at_ms).ok_or_else(|| corrupt(format!("time {} ms is out of range", s.at_ms)))?;
            let input = s.input.into_owned();
            let changes = s
                .changes
                .into_iter()
                .map(|StoredChange(field, before, from_input, after)| {
                    let after = if from_input { input.get(field.as_ref()).cloned().unwrap_or(Value::Null) } else { after.into_owned() };
                    (field.into_owned(), Change { before: before.into_owned(), after })
                })
                .collect();
            let d = s.decided_on;
            Ok(Event {
                instance_id: instance_id.to_string(),
                seq,
                kind,
                transition: s.transition.map(Cow::into_owned),
                actor: s.actor.into_owned(),
                at,
                bundle_version: s.bundle_version.into_owned(),
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
        Some(other) => Err(corrupt(format!("unknown format (first byte {other:#04x})"))),
        None => Err(corrupt("empty value".into())),
    }
}

/// Whether `bytes` hold an event in the JSON of before the compact format.
pub fn is_legacy(bytes: &[u8]) -> bool {
    bytes.first() == Some(&b'{')
}

#[cfg(test)]
mod tests {
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
        let bytes = encode(&e).unwrap();
        assert_eq!(bytes[0], V1);
        assert_eq!(decode(&e.instance_id, e.seq, &bytes).unwrap(), e);
        let json = serde_json::to_vec(&e).unwrap();
        assert!(bytes.len() * 2 < json.len(), "{} compact bytes vs {} of JSON", bytes.len(), json.len());
    }

    #[test]
    fn events_written_as_json_before_still_read() {
        let e = sample();
        let json = serde_json::to_vec(&e).unwrap();
        assert!(is_legacy(&json));
        assert_eq!(decode(&e.instance_id, e.seq, &json).unwrap(), e);
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
        let bytes = encode(&e).unwrap();
        assert!(bytes.len() < 500 + 200, "the note is written once: {} bytes", bytes.len());
        assert_eq!(decode(&e.instance_id, e.seq, &bytes).unwrap(), e);
    }

    #[test]
    fn damaged_bytes_are_a_corrupt_event_naming_it_never_a_panic() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            let err = decode("i", 3, &bytes[..cut]).unwrap_err();
            assert!(err.to_string().contains("event i/3"), "{err}");
        }
        let err = decode("i", 3, &[9, 1, 2]).unwrap_err().to_string();
        assert!(err.contains("unknown format"), "{err}");
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
        #[test]
        fn any_input_and_changes_read_back_unchanged(
            input in proptest::collection::btree_map("[a-z]{1,4}", value(), 0..5),
            changes in proptest::collection::btree_map("[a-z]{1,4}", (value(), value(), any::<bool>()), 0..5),
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
            let bytes = encode(&e).unwrap();
            prop_assert_eq!(decode(&e.instance_id, e.seq, &bytes).unwrap(), e);
        }
    }
}
