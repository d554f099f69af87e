//! JSON views of bundle parts and instances.

use flowform_core::{AvailableTransition, Bundle, Instance};
use flowform_model::WorkflowDef;
use serde_json::{Value, json};

pub fn workflow_summary(wf: &WorkflowDef) -> Value {
    json!({
        "name": wf.name,
        "title": wf.title,
        "description": wf.description,
        "record": wf.record,
        "start": {"form": wf.start.form.as_ref().map(|f| &f.value), "roles": names(&wf.start.roles)},
    })
}

fn names(list: &[flowform_model::Sp<String>]) -> Vec<&str> {
    list.iter().map(|s| s.value.as_str()).collect()
}

pub fn workflow_detail(wf: &WorkflowDef, bundle: &Bundle) -> Value {
    let mut v = workflow_summary(wf);
    v["version"] = json!(bundle.version);
    v["initial"] = json!(wf.initial.value);
    v["states"] =
        wf.states.iter().map(|s| json!({"name": s.name, "label": s.label, "description": s.description, "final": s.is_final, "color": s.color})).collect();
    v["transitions"] = wf
        .transitions
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "label": t.label,
                "from": names(&t.from),
                "to": t.to.as_ref().map(|s| &s.value),
                "roles": names(&t.roles),
                "teams": names(&t.teams),
                "when": t.when.as_ref().map(|s| &s.value),
                "form": t.form.as_ref().map(|s| &s.value),
            })
        })
        .collect();
    v
}

/// An instance as the API shows it: serialized straight from the instance
/// (its data map is not copied into a JSON tree first).
#[derive(serde::Serialize)]
pub struct InstanceView<'a> {
    id: &'a str,
    number: &'a Option<String>,
    workflow: &'a str,
    bundle_version: &'a str,
    version: u64,
    state: &'a str,
    state_label: Option<flowform_model::Label>,
    data: &'a serde_json::Map<String, Value>,
    assignment: &'a flowform_core::Assignment,
    requester: &'a str,
    state_entered_at: flowform_core::time::Time,
    due_at: Option<flowform_core::time::Time>,
    overdue: bool,
    parent: &'a Option<String>,
    children: &'a [String],
    deadlines: &'a [flowform_core::deadlines::DeadlineRun],
    available_transitions: Vec<AvailableTransition>,
    created_at: flowform_core::time::Time,
    updated_at: flowform_core::time::Time,
}

pub fn instance<'a>(i: &'a Instance, available: Vec<AvailableTransition>, bundle: Option<&Bundle>) -> InstanceView<'a> {
    let state_label = bundle.and_then(|b| b.workflow(&i.workflow)).and_then(|w| w.state(&i.state)).map(|s| s.label.clone());
    InstanceView {
        id: &i.id,
        number: &i.number,
        workflow: &i.workflow,
        bundle_version: &i.bundle_version,
        version: i.version,
        state: &i.state,
        state_label,
        data: &i.data,
        assignment: &i.assignment,
        requester: &i.requester,
        state_entered_at: i.state_entered_at,
        due_at: i.due_at,
        overdue: i.overdue,
        parent: &i.parent,
        children: &i.children,
        deadlines: &i.deadlines,
        available_transitions: available,
        created_at: i.created_at,
        updated_at: i.updated_at,
    }
}
