//! Time in workflows: SLA deadlines and timed steps of states. Pure: the time
//! is passed in; the runtime stores timers and fires them when due.

use crate::bundle::Bundle;
use crate::decide::{Outcome, Rejection};
use crate::instance::{Actor, Effect, EventKind, Instance};
use crate::time::Time;
use flowform_model::{Amount, NotifyDef, Recipient, WorkflowDef};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A timer to store: fires `timer` of `state` at `due_at`, if the instance is
/// still in the state it entered with event `entered_seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerSpec {
    pub instance_id: String,
    /// `sla`, or `step:N` (the N-th timed step of the state, from 0).
    pub timer: String,
    pub state: String,
    pub entered_seq: u64,
    pub due_at: Time,
}

/// A notification to render and send.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifySpec {
    pub template: String,
    pub to: Vec<Recipient>,
}

pub fn notify_specs(defs: &[NotifyDef]) -> Vec<NotifySpec> {
    defs.iter().map(|n| NotifySpec { template: n.template.value.clone(), to: n.to.iter().map(|t| t.value.clone()).collect() }).collect()
}

pub(crate) fn minutes(amount: &Amount, instance: &Instance) -> Option<i64> {
    match amount {
        Amount::Minutes(m) => Some(*m),
        Amount::Field(f) => instance.data.get(&f.value).and_then(Value::as_f64).map(|m| m as i64),
    }
}

/// `now` plus some seconds.
pub fn add_seconds(now: Time, seconds: i64) -> Option<Time> {
    now.checked_add_secs(seconds)
}

/// `now` plus some minutes; `None` past the limit (minutes may come from
/// instance data: past it there is no deadline, never a panic).
pub fn add_minutes(now: Time, minutes: i64) -> Option<Time> {
    now.checked_add_mins(minutes)
}

/// Called when `instance` has just entered its state: records the entry, sets
/// the SLA deadline and returns the timers to arm.
pub(crate) fn due(model: &flowform_model::Model, calendar: &Option<flowform_model::Sp<String>>, now: Time, minutes: i64) -> Option<Time> {
    match calendar.as_ref().and_then(|c| model.calendars.get(&c.value)) {
        Some(cal) => crate::calendar::add_working_minutes(cal, now, minutes),
        None => add_minutes(now, minutes),
    }
}

pub fn enter_state(model: &flowform_model::Model, wf: &WorkflowDef, instance: &mut Instance, now: Time) -> Vec<TimerSpec> {
    instance.state_entered_at = now;
    instance.state_entered_seq = instance.version;
    instance.overdue = false;
    instance.due_at = None;
    let Some(state) = wf.state(&instance.state) else { return Vec::new() };
    let spec = |timer: String, due_at: Time, instance: &Instance| TimerSpec {
        instance_id: instance.id.clone(),
        timer,
        state: instance.state.clone(),
        entered_seq: instance.version,
        due_at,
    };
    let mut out = Vec::new();
    if let Some(sla) = &state.sla
        && let Some(due) = minutes(sla, instance).and_then(|m| due(model, &state.sla_calendar, now, m))
    {
        instance.due_at = Some(due);
        out.push(spec("sla".into(), due, instance));
    }
    for (i, t) in state.timers.iter().enumerate() {
        if let Some(due) = minutes(&t.after, instance).and_then(|m| due(model, &t.calendar, now, m)) {
            out.push(spec(format!("step:{i}"), due, instance));
        }
    }
    out
}

pub(crate) fn system() -> Actor {
    Actor { id: "system".into(), name: "timer".into(), roles: Vec::new(), teams: Vec::new(), email: None, department: None }
}

/// Fires a due timer. `None` when it no longer applies (the instance left the
/// state, or re-entered it since); the caller then just drops the timer.
pub fn fire(bundle: &Bundle, instance: &Instance, spec: &TimerSpec, now: Time) -> Result<Option<Outcome>, Rejection> {
    if instance.state != spec.state || instance.state_entered_seq != spec.entered_seq {
        return Ok(None);
    }
    if spec.timer.starts_with("deadline:") {
        return crate::deadlines::fire(bundle, instance, spec, now);
    }
    let Some(wf) = bundle.workflow(&instance.workflow) else { return Ok(None) };
    let Some(state) = wf.state(&instance.state) else { return Ok(None) };
    let actor = system();
    if spec.timer == "sla" {
        if instance.overdue {
            return Ok(None);
        }
        let mut after = instance.clone();
        after.overdue = true;
        let mut outcome =
            crate::decide::finish_system(bundle, instance, after, EventKind::Timer, None, json!({"timer": "sla", "due_at": spec.due_at}), &actor, now)?;
        if !state.sla_notify.is_empty() {
            outcome.effects.push(Effect::Notify { notifications: notify_specs(&state.sla_notify) });
        }
        return Ok(Some(outcome));
    }
    let Some(index) = spec.timer.strip_prefix("step:").and_then(|i| i.parse::<usize>().ok()) else { return Ok(None) };
    let Some(step) = state.timers.get(index) else { return Ok(None) };
    let mut outcome = match &step.transition {
        Some(t) => {
            let mut o = crate::decide::system_transition(bundle, instance, &t.value, &step.set, now)?;
            o.event.kind = EventKind::Timer;
            o.event.input = json!({"timer": spec.timer, "transition": t.value});
            o
        }
        None => {
            let mut after = instance.clone();
            for (k, v) in &step.set {
                after.data.insert(k.clone(), v.clone());
            }
            crate::decide::finish_system(bundle, instance, after, EventKind::Timer, None, json!({"timer": spec.timer}), &actor, now)?
        }
    };
    if !step.notify.is_empty() {
        outcome.effects.push(Effect::Notify { notifications: notify_specs(&step.notify) });
    }
    Ok(Some(outcome))
}

#[cfg(test)]
mod tests {
    /// Regression: minutes from a data field past jiff's range panicked in the tick loop.
    #[test]
    fn minutes_past_the_limit_give_no_deadline_instead_of_a_panic() {
        let now = crate::time::tm("2026-11-30T00:00:00.000Z");
        assert_eq!(super::add_minutes(now, 60).map(|x| x.to_string()).as_deref(), Some("2026-11-30T01:00:00.000Z"));
        assert_eq!(super::add_minutes(now, i64::MAX), None);
        assert_eq!(super::add_minutes(now, -1), None);
    }
}
