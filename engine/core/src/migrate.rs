//! Moving running instances to another bundle version: the pure part.

use crate::bundle::Bundle;
use crate::decide::Outcome;
use crate::instance::{Actor, Event, EventKind, Instance, diff};
use crate::time::Time;
use flowform_forms::Lang;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// Whether `instance` can run on `target`, and in which state. The problems say
/// why not, in words: a state that no longer exists (without a mapping), a
/// mapping to a state that does not exist, data the new forms reject.
pub fn check(target: &Bundle, instance: &Instance, mapping: &BTreeMap<String, String>) -> Result<String, Vec<String>> {
    let Some(wf) = target.workflow(&instance.workflow) else {
        return Err(vec![format!("workflow `{}` does not exist in version {}", instance.workflow, target.version)]);
    };
    let mut problems = Vec::new();
    let state = mapping.get(&instance.state).cloned().unwrap_or_else(|| instance.state.clone());
    if wf.state(&state).is_none() {
        if mapping.contains_key(&instance.state) {
            problems.push(format!("the mapping sends state `{}` to `{state}`, which version {} does not have", instance.state, target.version));
        } else {
            problems.push(format!("state `{state}` no longer exists; map it with --map {state}=NEW_STATE"));
        }
    }
    let data = Value::Object(instance.data.clone());
    let start_form = wf.start.form.as_ref().map(|f| f.value.as_str());
    let forms = start_form.into_iter().chain(wf.transitions.iter().filter_map(|t| t.form.as_ref().map(|f| f.value.as_str())));
    let mut seen = Vec::new();
    for form_name in forms {
        if seen.contains(&form_name) {
            continue;
        }
        seen.push(form_name);
        let Some(form) = target.form(form_name) else { continue };
        // Only the fields this form has; other data belongs to other forms or rules.
        let projected: Map<String, Value> = form.def.fields.iter().filter_map(|f| data.get(&f.name).map(|v| (f.name.clone(), v.clone()))).collect();
        let is_start = Some(form_name) == start_form;
        if projected.is_empty() && !is_start {
            continue;
        }
        if let Err(errors) = form.validate_stored(&Value::Object(projected), Lang::En) {
            for e in errors {
                // Fields of later forms may simply not be filled in yet.
                if e.code == "required" && !is_start {
                    continue;
                }
                problems.push(format!("form `{form_name}` rejects the data: {}: {}", e.field, e.message));
            }
        }
    }
    if problems.is_empty() { Ok(state) } else { Err(problems) }
}

/// The migrated instance and its `migrated` event.
pub fn migrate(target: &Bundle, instance: &Instance, state: &str, mapping: &BTreeMap<String, String>, actor: &Actor, now: Time) -> Outcome {
    let mut after = instance.clone();
    after.bundle_version = target.version.clone();
    after.state = state.to_string();
    after.version = instance.version + 1;
    after.updated_at = now;
    let event = Event {
        instance_id: instance.id.clone(),
        seq: after.version,
        kind: EventKind::Migrated,
        transition: None,
        actor: actor.id.clone(),
        at: now,
        bundle_version: target.version.clone(),
        from_state: Some(instance.state.clone()),
        to_state: state.to_string(),
        input: json!({"from_version": instance.bundle_version, "to_version": target.version, "mapping": mapping}),
        changes: diff(instance, &after),
        parent: None,
        children: Vec::new(),
        decided_on: Default::default(),
    };
    Outcome { instance: after, event, effects: Vec::new() }
}
