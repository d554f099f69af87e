//! Linked workflows: a transition's `starts:` decides which instances of
//! other workflows to start with it (one, or one per matching item of a
//! group field) and with what start data. Pure: the runtime generates the
//! ids and decides each start with [`crate::start_with`].

use flowform_model::{LinkedStartDef, TransitionDef};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One instance to start: its workflow, its start data and the roles it acts with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkedStart {
    pub workflow: String,
    pub data: Map<String, Value>,
    /// Empty: the actor's own roles.
    pub roles: Vec<String>,
    /// Which item of `for_each` it is for (1-based), for messages.
    pub item: Option<usize>,
}

/// The starts of transition `t` for the instance data `data` as the command leaves it.
/// `local` is the command's time on the app's wall clock ([`crate::Time::local_text`]).
pub fn linked_starts(t: &TransitionDef, instance: &crate::Instance, local: &str) -> Vec<LinkedStart> {
    let mut out = Vec::new();
    for link in &t.starts {
        let mut base = instance.data.clone();
        base.insert("id".into(), Value::String(instance.id.clone()));
        base.insert("number".into(), instance.number.clone().map_or(Value::Null, Value::String));
        base.insert("requester".into(), Value::String(instance.requester.clone()));
        match &link.for_each {
            None => push(&mut out, link, &base, None, local),
            Some(field) => {
                let items = match instance.data.get(&field.value) {
                    Some(Value::Array(items)) => items.as_slice(),
                    _ => &[],
                };
                for (i, item) in items.iter().enumerate() {
                    let mut context = base.clone();
                    if let Value::Object(fields) = item {
                        context.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                    push(&mut out, link, &context, Some(i + 1), local);
                }
            }
        }
    }
    out
}

fn push(out: &mut Vec<LinkedStart>, link: &LinkedStartDef, context: &Map<String, Value>, item: Option<usize>, local: &str) {
    if let Some((_, condition)) = &link.condition
        && !condition.eval(&Value::Object(context.clone()))
    {
        return;
    }
    let data = link.data.iter().map(|(k, v)| (k.clone(), crate::records::fill_value(v, context, local))).collect();
    out.push(LinkedStart { workflow: link.workflow.value.clone(), data, roles: link.roles.iter().map(|r| r.value.clone()).collect(), item });
}
