//! Process deadlines (`deadlines:`): a clock that starts with the start or a
//! named transition, runs across states, stops in `paused_in` states, and is
//! met on entering an `until` state. Pure: the time is passed in; each entry
//! into a state updates the clocks and returns the timers to arm (the
//! breach and the escalation steps still ahead).

use crate::bundle::Bundle;
use crate::decide::{Outcome, Rejection};
use crate::instance::{Effect, EventKind, Instance};
use crate::time::Time;
use crate::timers::{TimerSpec, notify_specs};
use flowform_model::{DeadlineDef, Model, WorkflowDef};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Where one deadline of an instance stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadlineRun {
    pub name: String,
    pub started_at: Time,
    /// Deadline time used before the current running stretch, in seconds
    /// (working seconds with a calendar).
    #[serde(default)]
    pub used_secs: i64,
    /// When the clock last (re)started; `None` while paused or once met.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_since: Option<Time>,
    /// When it is due if the clock keeps running (`None` while paused or once met).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub met_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breached_at: Option<Time>,
}

fn elapsed(model: &Model, d: &DeadlineDef, from: Time, to: Time) -> i64 {
    match d.calendar.as_ref().and_then(|c| model.calendars.get(&c.value)) {
        Some(cal) => crate::calendar::working_seconds_between(cal, from, to).unwrap_or(0),
        None => to.since(from).as_secs().max(0),
    }
}

/// `from` plus `secs` of the deadline's time (rounded up to minutes).
fn after(model: &Model, d: &DeadlineDef, from: Time, secs: i64) -> Option<Time> {
    crate::timers::due(model, &d.calendar, from, (secs.max(0) + 59) / 60)
}

/// Updates the instance's deadlines as it enters its current state (with
/// transition `transition`, or its start) and returns the timers to arm.
pub fn on_enter(model: &Model, wf: &WorkflowDef, instance: &mut Instance, started: bool, transition: Option<&str>, now: Time) -> Vec<TimerSpec> {
    let mut arm = Vec::new();
    if wf.deadlines.is_empty() {
        return arm;
    }
    let state = instance.state.clone();
    for d in &wf.deadlines {
        let Some(total) = crate::timers::minutes(&d.minutes, instance).map(|m| m * 60) else { continue };
        let starts_now = match &d.from {
            None => started,
            Some(t) => transition == Some(t.value.as_str()),
        };
        let until = |s: &str| if d.until.is_empty() { wf.state(s).is_some_and(|s| s.is_final) } else { d.until.iter().any(|u| u.value == s) };
        let index = match instance.deadlines.iter().position(|r| r.name == d.name) {
            Some(i) => i,
            None if starts_now => {
                instance.deadlines.push(DeadlineRun {
                    name: d.name.clone(),
                    started_at: now,
                    used_secs: 0,
                    running_since: None,
                    due_at: None,
                    met_at: None,
                    breached_at: None,
                });
                instance.deadlines.len() - 1
            }
            None => continue,
        };
        let run = &mut instance.deadlines[index];
        if run.met_at.is_some() {
            continue;
        }
        if let Some(since) = run.running_since.take() {
            run.used_secs = run.used_secs.saturating_add(elapsed(model, d, since, now));
        }
        run.due_at = None;
        if until(&state) {
            run.met_at = Some(now);
            continue;
        }
        if d.paused_in.iter().any(|p| p.value == state) {
            continue;
        }
        run.running_since = Some(now);
        let remaining = total - run.used_secs;
        run.due_at = after(model, d, now, remaining);
        let spec =
            |timer: String, due_at: Time| TimerSpec { instance_id: instance.id.clone(), timer, state: state.clone(), entered_seq: instance.version, due_at };
        let run = &instance.deadlines[index];
        if run.breached_at.is_none()
            && let Some(due) = &run.due_at
        {
            arm.push(spec(format!("deadline:{}", d.name), *due));
        }
        for (i, step) in d.escalations.iter().enumerate() {
            let Some(at) = crate::timers::minutes(&step.after, instance).map(|m| m * 60) else { continue };
            if at > run.used_secs
                && let Some(due) = after(model, d, now, at - run.used_secs)
            {
                arm.push(spec(format!("deadline:{}:step:{i}", d.name), due));
            }
        }
    }
    arm
}

/// Where a deadline stands at `now`, judged by the time it used against
/// what its definition allows (what-if replay compares two bundles' verdicts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    Running,
}

/// The verdict of each deadline of `instance` under `model`'s definitions.
pub fn verdicts(model: &Model, wf: &WorkflowDef, instance: &Instance, now: Time) -> Vec<(String, Verdict)> {
    instance
        .deadlines
        .iter()
        .filter_map(|run| {
            let d = wf.deadlines.iter().find(|d| d.name == run.name)?;
            let total = crate::timers::minutes(&d.minutes, instance)?.saturating_mul(60);
            let running = run.running_since.map_or(0, |since| elapsed(model, d, since, now));
            let used = run.used_secs.saturating_add(running);
            let verdict = if used > total {
                Verdict::Missed
            } else if run.met_at.is_some() {
                Verdict::Met
            } else {
                Verdict::Running
            };
            Some((run.name.clone(), verdict))
        })
        .collect()
}

/// Fires a deadline timer (`deadline:NAME` or `deadline:NAME:step:N`);
/// `None` when it no longer applies (met, already breached).
pub fn fire(bundle: &Bundle, instance: &Instance, spec: &TimerSpec, now: Time) -> Result<Option<Outcome>, Rejection> {
    let Some(rest) = spec.timer.strip_prefix("deadline:") else { return Ok(None) };
    let (name, step) = match rest.split_once(":step:") {
        Some((n, i)) => (n, i.parse::<usize>().ok()),
        None => (rest, None),
    };
    let Some(wf) = bundle.workflow(&instance.workflow) else { return Ok(None) };
    let Some(d) = wf.deadlines.iter().find(|d| d.name == name) else { return Ok(None) };
    let Some(index) = instance.deadlines.iter().position(|r| r.name == name) else { return Ok(None) };
    let run = &instance.deadlines[index];
    if run.met_at.is_some() || run.running_since.is_none() {
        return Ok(None);
    }
    let actor = crate::timers::system();
    let (set, notify, transition) = match step {
        None => {
            if run.breached_at.is_some() {
                return Ok(None);
            }
            (&d.set, &d.notify, None)
        }
        Some(i) => {
            let Some(s) = d.escalations.get(i) else { return Ok(None) };
            (&s.set, &s.notify, s.transition.as_ref())
        }
    };
    let mut outcome = match transition {
        Some(t) => {
            let mut o = crate::decide::system_transition(bundle, instance, &t.value, set, now)?;
            o.event.kind = EventKind::Timer;
            o.event.input = json!({"timer": spec.timer, "transition": t.value});
            o
        }
        None => {
            let mut after = instance.clone();
            for (k, v) in set {
                after.data.insert(k.clone(), v.clone());
            }
            if step.is_none() {
                // Breached when it was due, even if the timer fires later (a server down meanwhile).
                after.deadlines[index].breached_at = Some(spec.due_at);
            }
            crate::decide::finish_system(bundle, instance, after, EventKind::Timer, None, json!({"timer": spec.timer, "due_at": spec.due_at}), &actor, now)?
        }
    };
    if !notify.is_empty() {
        outcome.effects.push(Effect::Notify { notifications: notify_specs(notify) });
    }
    Ok(Some(outcome))
}
