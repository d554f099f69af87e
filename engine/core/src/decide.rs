//! The pure decision: `(bundle, instance, command, actor, now) → outcome | rejection`.

use crate::bundle::Bundle;
use crate::instance::{Actor, Assignment, Change, Effect, Event, EventKind, Instance, diff_assignment, diff_data};
use crate::ledger::{MovementKind, Posting};
use crate::time::Time;
use flowform_forms::{FieldError, Lang};
use flowform_model::{Assign, Hooks, Label, RELATIONAL_ROLES, Sp, TransitionDef, WorkflowDef};
use flowform_rules::{RuleError, ScriptContext, guard_key};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

/// The new instance, the event to append and the effects for the runtime.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    pub instance: Instance,
    pub event: Event,
    pub effects: Vec<Effect>,
}

/// Why a command was refused. Each maps to one HTTP status and error code.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("unknown workflow `{0}`")]
    UnknownWorkflow(String),
    #[error("unknown record type `{0}`")]
    UnknownRecordType(String),
    #[error("workflow `{workflow}` has no transition `{name}`")]
    UnknownTransition { workflow: String, name: String, available: Vec<String> },
    #[error("`{transition}` cannot be done while the instance is `{state}`")]
    NotInThisState { transition: String, state: String, allowed_from: Vec<String> },
    #[error("{0}")]
    Forbidden(String),
    /// The transition's `when` is false; `message` is its localized `message`
    /// (never the condition's source).
    #[error("{message}")]
    GuardFailed { transition: String, message: String },
    #[error("the submitted data is not valid")]
    InvalidInput(Vec<FieldError>),
    #[error("{0}")]
    Rule(RuleError),
    #[error("{0}")]
    Posting(crate::ledger::PostingRefused),
}

impl From<RuleError> for Rejection {
    fn from(e: RuleError) -> Self {
        Rejection::Rule(e)
    }
}

/// A transition the actor may take now, for clients to offer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AvailableTransition {
    pub name: String,
    pub label: Label,
    pub to: Option<String>,
    pub form: Option<String>,
}

fn workflow<'b>(bundle: &'b Bundle, name: &str) -> Result<&'b WorkflowDef, Rejection> {
    bundle.workflow(name).ok_or_else(|| Rejection::UnknownWorkflow(name.to_string()))
}

fn actor_json(actor: &Actor) -> Value {
    json!({"id": actor.id, "name": actor.name, "roles": actor.roles, "teams": actor.teams})
}

/// What scripts see as `record`: the data plus the instance's own fields.
fn record_json(instance: &Instance) -> Value {
    let mut m = instance.data.clone();
    for key in OWN_FIELDS {
        if let Some(v) = own_field(instance, key) {
            m.insert(key.into(), v);
        }
    }
    Value::Object(m)
}

/// The instance's own fields in `record`, over data fields of those names.
const OWN_FIELDS: [&str; 8] = ["id", "state", "team", "assignee", "vendor", "requester", "created_at", "moved"];

fn own_field(instance: &Instance, key: &str) -> Option<Value> {
    Some(match key {
        "id" => json!(instance.id),
        "state" => json!(instance.state),
        "team" => json!(instance.assignment.team),
        "assignee" => json!(instance.assignment.assignee),
        "vendor" => json!(instance.assignment.vendor),
        "requester" => json!(instance.requester),
        "created_at" => json!(instance.created_at),
        // What the instance moved so far, one entry per ledger and dimensions:
        // `#{ledger, <dimension>: value, …, issued, returned}` (rules compare returns against it).
        "moved" => Value::Array(
            instance
                .moved
                .iter()
                .map(|mv| {
                    let mut e: Map<String, Value> = mv.dims.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
                    e.insert("ledger".into(), json!(mv.ledger));
                    e.insert("issued".into(), json!(mv.issued));
                    e.insert("returned".into(), json!(mv.returned));
                    Value::Object(e)
                })
                .collect(),
        ),
        _ => return None,
    })
}

/// `record` for script `script`: only the fields it reads when the rules
/// know them (no copy of the whole data per run), else the whole record.
/// Debug builds always hand the whole record, so that the rules' own check
/// (a narrowed run equals a whole one) keeps testing the narrowing.
fn record_for(bundle: &Bundle, script: &str, instance: &Instance) -> Value {
    match bundle.rules.record_fields(script) {
        Some(fields) if !cfg!(debug_assertions) => record_fields(instance, fields),
        _ => record_json(instance),
    }
}

/// The fields `fields` of `record` (those it has): equal to the whole record restricted to them.
fn record_fields(instance: &Instance, fields: &[String]) -> Value {
    let mut m = Map::new();
    for f in fields {
        if let Some(v) = own_field(instance, f).or_else(|| instance.data.get(f).cloned()) {
            m.insert(f.clone(), v);
        }
    }
    Value::Object(m)
}

fn roles_allow(roles: &[Sp<String>], actor: &Actor, instance: Option<&Instance>) -> bool {
    roles.is_empty()
        || roles.iter().any(|r| match r.value.as_str() {
            "requester" => instance.is_some_and(|i| i.requester == actor.id),
            "assignee" => instance.is_some_and(|i| i.assignment.assignee.as_deref() == Some(actor.id.as_str())),
            other => actor.has_role(other),
        })
}

fn role_list(roles: &[Sp<String>]) -> String {
    roles.iter().map(|r| format!("`{}`", r.value)).collect::<Vec<_>>().join(", ")
}

/// What a command reads besides the instance and its input, handed in by
/// the caller so that the decision stays pure and can be replayed: the
/// records it refers to, as `{TYPE: {ID: {fields…, id, title, archived}}}`
/// (rules read them with `lookup(type, id)` and `find(type, filter)`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Reads {
    pub records: std::sync::Arc<Value>,
    /// Who a route rule may `pick` from, per team:
    /// `{TEAM: {turn, members: [{id, roles, load, on_duty}]}}` — the team's
    /// active members, how many open instances each is assigned, whether
    /// the duty roster has them on duty now, and the team's round-robin turn.
    pub people: Value,
    /// Every team's name when teams are also kept as records
    /// (`app.teams_from`); `None`: the declared teams.
    pub teams: Option<Vec<String>>,
    /// The version of each record in `records`, `{TYPE: {ID: version}}`,
    /// recorded with the event (see [`crate::instance::DecidedOn`]).
    pub versions: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>>,
}

/// Starts an instance. `id` comes from the caller (the runtime generates it).
pub fn start(bundle: &Bundle, workflow_name: &str, input: &Value, actor: &Actor, now: Time, id: &str, lang: Lang) -> Result<Outcome, Rejection> {
    start_with(bundle, workflow_name, input, actor, now, id, lang, &Reads::default())
}

/// [`start`] with the records the command reads.
#[allow(clippy::too_many_arguments)]
pub fn start_with(
    bundle: &Bundle,
    workflow_name: &str,
    input: &Value,
    actor: &Actor,
    now: Time,
    id: &str,
    lang: Lang,
    reads: &Reads,
) -> Result<Outcome, Rejection> {
    let wf = workflow(bundle, workflow_name)?;
    if !roles_allow(&wf.start.roles, actor, None) {
        return Err(Rejection::Forbidden(format!("starting `{}` needs one of the roles {}", wf.name, role_list(&wf.start.roles))));
    }
    let blank = Instance {
        id: id.to_string(),
        number: None,
        workflow: wf.name.clone(),
        bundle_version: bundle.version.clone(),
        version: 0,
        state: wf.initial.value.clone(),
        data: Map::new(),
        assignment: Assignment::default(),
        requester: actor.id.clone(),
        requester_department: actor.department.clone(),
        created_at: now,
        updated_at: now,
        state_entered_at: now,
        state_entered_seq: 0,
        due_at: None,
        overdue: false,
        moved: Vec::new(),
        parent: None,
        children: Vec::new(),
        deadlines: Vec::new(),
    };
    let form = wf.start.form.as_ref().map(|f| f.value.as_str());
    let prior = Prior::of(&blank);
    let applied = apply(bundle, blank, form, &wf.start.hooks, None, input, actor, now, lang, reads)?;
    let changes = applied.touched.changes(&applied.instance.data);
    let picked = applied.picked;
    let mut outcome = finish(bundle, prior, applied.instance, changes, EventKind::Started, None, applied.input, applied.postings, actor, now)?;
    outcome.event.decided_on.records = reads.versions.clone();
    if let Some(picked) = picked {
        if let Effect::Picked { method, .. } = &picked {
            outcome.event.decided_on.picked = Some(method.clone());
        }
        outcome.effects.push(picked);
    }
    Ok(outcome)
}

/// The workflow and the transition `name`, if it starts from the instance's state.
fn transition_from_here<'b>(bundle: &'b Bundle, instance: &Instance, name: &str) -> Result<(&'b WorkflowDef, &'b TransitionDef), Rejection> {
    let wf = workflow(bundle, &instance.workflow)?;
    let Some(t) = wf.transition(name) else {
        return Err(Rejection::UnknownTransition {
            workflow: wf.name.clone(),
            name: name.to_string(),
            available: wf.transitions.iter().map(|t| t.name.clone()).collect(),
        });
    };
    if !t.from.iter().any(|f| f.value == instance.state) {
        return Err(Rejection::NotInThisState {
            transition: t.name.clone(),
            state: instance.state.clone(),
            allowed_from: t.from.iter().map(|f| f.value.clone()).collect(),
        });
    }
    Ok((wf, t))
}

/// Takes a named transition on an instance. The instance is taken by value:
/// the outcome's instance is it, changed (no copy is made per command).
pub fn transition(bundle: &Bundle, instance: Instance, name: &str, input: &Value, actor: &Actor, now: Time, lang: Lang) -> Result<Outcome, Rejection> {
    transition_with(bundle, instance, name, input, actor, now, lang, &Reads::default())
}

/// [`transition`] with the records the command reads.
#[allow(clippy::too_many_arguments)]
pub fn transition_with(
    bundle: &Bundle,
    instance: Instance,
    name: &str,
    input: &Value,
    actor: &Actor,
    now: Time,
    lang: Lang,
    reads: &Reads,
) -> Result<Outcome, Rejection> {
    let (wf, t) = transition_from_here(bundle, &instance, name)?;
    let form = t.form.as_ref().map(|f| f.value.as_str());
    // Roles and teams first; then the guard, which sees the validated input.
    let guard_input = match (&t.when, form.and_then(|f| bundle.form(f))) {
        (Some(_), Some(f)) if roles_and_teams(t, &instance, actor).is_ok() => f.validate(input, lang).map_err(Rejection::InvalidInput)?,
        _ => Value::Object(Map::new()),
    };
    permitted(bundle, wf, t, &instance, actor, now, &guard_input, reads, lang)?;
    let prior = Prior::of(&instance);
    let mut applied = apply(bundle, instance, form, &t.hooks, Some(t), input, actor, now, lang, reads)?;
    if let Some(to) = &t.to {
        applied.instance.state = to.value.clone();
    }
    let changes = applied.touched.changes(&applied.instance.data);
    let picked = applied.picked;
    let mut outcome =
        finish(bundle, prior, applied.instance, changes, EventKind::Transition, Some(t.name.clone()), applied.input, applied.postings, actor, now)?;
    if !t.notify.is_empty() {
        outcome.effects.push(Effect::Notify { notifications: crate::timers::notify_specs(&t.notify) });
    }
    let starts = if t.starts.is_empty() { Vec::new() } else { crate::links::linked_starts(t, &outcome.instance, &bundle.local_text(now)) };
    if !starts.is_empty() {
        outcome.effects.push(Effect::Start { starts });
    }
    outcome.event.decided_on.records = reads.versions.clone();
    if let Some(picked) = picked {
        if let Effect::Picked { method, .. } = &picked {
            outcome.event.decided_on.picked = Some(method.clone());
        }
        outcome.effects.push(picked);
    }
    Ok(outcome)
}

/// Roles and teams of a transition.
fn roles_and_teams(t: &TransitionDef, instance: &Instance, actor: &Actor) -> Result<(), Rejection> {
    if !roles_allow(&t.roles, actor, Some(instance)) {
        let relational: Vec<&str> = t.roles.iter().map(|r| r.value.as_str()).filter(|r| RELATIONAL_ROLES.contains(r)).collect();
        let mut msg = format!("`{}` needs one of the roles {}", t.name, role_list(&t.roles));
        if !relational.is_empty() {
            msg.push_str(" (`requester` is who reported it, `assignee` who it is assigned to)");
        }
        return Err(Rejection::Forbidden(msg));
    }
    if !t.teams.is_empty() && !t.teams.iter().any(|team| actor.teams.contains(&team.value)) {
        return Err(Rejection::Forbidden(format!("`{}` is for members of {}", t.name, role_list(&t.teams))));
    }
    Ok(())
}

/// Roles, teams and the `when` guard (with the command's input; empty when
/// listing what one may do).
#[allow(clippy::too_many_arguments)]
fn permitted(
    bundle: &Bundle,
    wf: &WorkflowDef,
    t: &TransitionDef,
    instance: &Instance,
    actor: &Actor,
    now: Time,
    input: &Value,
    reads: &Reads,
    lang: Lang,
) -> Result<(), Rejection> {
    roles_and_teams(t, instance, actor)?;
    if t.when.is_some() {
        let key = guard_key(&wf.name, &t.name);
        let ctx = ScriptContext {
            record: record_for(bundle, &key, instance),
            input: input.clone(),
            actor: actor_json(actor),
            now: now.to_string(),
            records: reads.records.clone(),
        };
        if !bundle.rules.run_guard(&key, &ctx)? {
            let label = t.label.get(lang.code(), &t.name);
            let message = match (t.when_message.is_empty(), lang) {
                (false, _) => t.when_message.get(lang.code(), "").to_string(),
                (true, Lang::En) => format!("“{label}” cannot be done now: its conditions are not met"),
                (true, Lang::ZhCn) => format!("当前不满足“{label}”的条件"),
            };
            return Err(Rejection::GuardFailed { transition: t.name.clone(), message });
        }
    }
    Ok(())
}

/// What `finish` needs of the instance as it was before the command.
struct Prior {
    version: u64,
    state: String,
    assignment: Assignment,
}

impl Prior {
    fn of(instance: &Instance) -> Prior {
        Prior { version: instance.version, state: instance.state.clone(), assignment: instance.assignment.clone() }
    }
}

/// The value each field of the data had before the command set it (`Null`
/// when it had none), kept as the command sets fields: the event's changes
/// come from it, without a copy of the whole instance before the command or
/// a comparison of every field after it.
#[derive(Default)]
struct Touched(BTreeMap<String, Change>);

impl Touched {
    fn set(&mut self, data: &mut Map<String, Value>, key: String, value: Value) {
        // A field the data has is replaced in place (its name is not copied).
        let mut put = |key: &String, value: Value| match data.get_mut(key) {
            Some(slot) => std::mem::replace(slot, value),
            None => {
                data.insert(key.clone(), value);
                Value::Null
            }
        };
        match self.0.entry(key) {
            std::collections::btree_map::Entry::Vacant(e) => {
                let before = put(e.key(), value);
                e.insert(Change { before, after: Value::Null });
            }
            std::collections::btree_map::Entry::Occupied(e) => {
                put(e.key(), value);
            }
        }
    }

    /// The fields set to another value than they had, as changes.
    fn changes(mut self, data: &Map<String, Value>) -> BTreeMap<String, Change> {
        self.0.retain(|k, c| {
            let after = data.get(k).unwrap_or(&Value::Null);
            if *after == c.before {
                return false;
            }
            c.after = after.clone();
            true
        });
        self.0
    }
}

/// An instance with a command's input applied and its rules run.
struct Applied {
    instance: Instance,
    touched: Touched,
    /// The validated input.
    input: Value,
    postings: Vec<Posting>,
    picked: Option<Effect>,
}

#[allow(clippy::too_many_arguments)]
fn apply(
    bundle: &Bundle,
    mut after: Instance,
    form: Option<&str>,
    hooks: &Hooks,
    t: Option<&TransitionDef>,
    input: &Value,
    actor: &Actor,
    now: Time,
    lang: Lang,
    reads: &Reads,
) -> Result<Applied, Rejection> {
    let cleaned = match form.and_then(|f| bundle.form(f)) {
        Some(f) => f.validate(input, lang).map_err(Rejection::InvalidInput)?,
        None => {
            let empty = match input {
                Value::Null => true,
                Value::Object(m) => m.is_empty(),
                _ => false,
            };
            if !empty {
                let what = t.map_or("starting this workflow".to_string(), |t| format!("`{}`", t.name));
                return Err(Rejection::InvalidInput(vec![FieldError { field: String::new(), code: "no_form", message: format!("{what} takes no data") }]));
            }
            Value::Object(Map::new())
        }
    };
    let mut touched = Touched::default();
    if let Value::Object(fields) = &cleaned {
        for (k, v) in fields {
            touched.set(&mut after.data, k.clone(), v.clone());
        }
    }
    // One context for every rule of the command; only `record` changes
    // between them (`actor` only when a rule reads it).
    let reads_actor = hooks.iter().any(|(_, s)| bundle.rules.reads_actor(&s.value));
    // The input moves into the context while rules run, and back out after.
    let mut cleaned = Some(cleaned);
    let mut ctx: Option<ScriptContext> = None;
    let mut run = |script: &str, inst: &Instance| {
        let ctx = ctx.get_or_insert_with(|| ScriptContext {
            record: Value::Null,
            input: cleaned.take().unwrap_or_default(),
            // Debug builds hand it always: the rules' own check (a narrowed
            // run equals a whole one) then tests that a rule needs no actor.
            actor: if reads_actor || cfg!(debug_assertions) { actor_json(actor) } else { Value::Null },
            now: now.to_string(),
            records: reads.records.clone(),
        });
        ctx.record = record_for(bundle, script, inst);
        bundle.rules.run(script, ctx)
    };
    if let Some(script) = &hooks.validate {
        let errors = field_errors(run(&script.value, &after)?, &script.value)?;
        if !errors.is_empty() {
            return Err(Rejection::InvalidInput(errors));
        }
    }
    let mut picked = None;
    if let Some(script) = &hooks.route {
        let out = run(&script.value, &after)?;
        picked = apply_route(bundle, &mut after, &mut touched, out, &script.value, reads)?;
    }
    if let Some(script) = &hooks.compute {
        let out = run(&script.value, &after)?;
        match out {
            Value::Null => {}
            Value::Object(fields) => {
                for (k, v) in fields {
                    touched.set(&mut after.data, k, v);
                }
            }
            other => {
                return Err(bad_result(&script.value, format!("a `compute` rule must return a map of fields, it gave {other}")));
            }
        }
    }
    match t.and_then(|t| t.assign) {
        Some(Assign::Actor) => after.assignment.assignee = Some(actor.id.clone()),
        Some(Assign::Nobody) => after.assignment.assignee = None,
        None => {}
    }
    let postings = match &hooks.post {
        Some(script) => parse_postings(bundle, run(&script.value, &after)?, &script.value)?,
        None => Vec::new(),
    };
    let input = cleaned.or(ctx.map(|c| c.input)).unwrap_or_else(|| Value::Object(Map::new()));
    Ok(Applied { instance: after, touched, input, postings, picked })
}

fn bad_result(script: &str, message: String) -> Rejection {
    Rejection::Rule(RuleError {
        script: script.to_string(),
        file: format!("rules/{script}.rhai"),
        line: 0,
        column: 0,
        kind: flowform_rules::RuleErrorKind::BadResult,
        message,
    })
}

/// `validate` may return nothing, a message, a list of `#{field, message}` or a map field → message.
fn field_errors(out: Value, script: &str) -> Result<Vec<FieldError>, Rejection> {
    let one = |field: &str, message: &Value| FieldError {
        field: field.to_string(),
        code: "rule",
        message: message.as_str().map_or_else(|| message.to_string(), str::to_string),
    };
    Ok(match out {
        Value::Null | Value::Bool(true) => Vec::new(),
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![one("", &Value::String(s))],
        Value::Object(m) => m.iter().map(|(k, v)| one(k, v)).collect(),
        Value::Array(items) => {
            let mut errors = Vec::new();
            for item in items {
                match item {
                    Value::Object(m) => errors.push(one(m.get("field").and_then(Value::as_str).unwrap_or_default(), m.get("message").unwrap_or(&Value::Null))),
                    Value::String(s) => errors.push(one("", &Value::String(s))),
                    other => {
                        return Err(bad_result(script, format!("a `validate` rule returned {other} in its list; use #{{field: \"..\", message: \"..\"}}")));
                    }
                }
            }
            errors
        }
        other => {
            return Err(bad_result(script, format!("a `validate` rule must return nothing, a message, a list or a map; it gave {other}")));
        }
    })
}

/// The ways a route rule may choose a person of the team (`pick`).
pub const PICK_METHODS: [&str; 3] = ["on_duty", "round_robin", "least_loaded"];

/// Applies a route rule's result; `Some(Effect::Picked)` when it asked to
/// pick a person of the team.
fn apply_route(bundle: &Bundle, inst: &mut Instance, touched: &mut Touched, out: Value, script: &str, reads: &Reads) -> Result<Option<Effect>, Rejection> {
    let people = &reads.people;
    let known: Vec<&str> = match &reads.teams {
        Some(teams) => teams.iter().map(String::as_str).collect(),
        None => bundle.model.teams.keys().map(String::as_str).collect(),
    };
    let fields = match out {
        Value::Null => return Ok(None),
        Value::Object(fields) => fields,
        other => {
            return Err(bad_result(script, format!("a `route` rule must return a map such as #{{ team: \"hvac_team\" }}, it gave {other}")));
        }
    };
    // A rule that names any of team, assignee, vendor or pick makes a new
    // assignment (what it leaves out is cleared: a new team has not accepted
    // yet); a rule that returns only fields leaves the assignment as it is.
    let assigns = fields.keys().any(|k| matches!(k.as_str(), "team" | "assignee" | "vendor" | "pick"));
    let mut assignment = Assignment::default();
    let mut pick = None;
    let mut pick_role = None;
    for (k, v) in fields {
        let text = || match &v {
            Value::String(s) if !s.is_empty() => Ok(Some(s.clone())),
            Value::Null => Ok(None),
            other => Err(bad_result(script, format!("`{k}` must be a name, it gave {other}"))),
        };
        match k.as_str() {
            "team" => {
                let team = text()?;
                if let Some(t) = &team
                    && !known.contains(&t.as_str())
                {
                    let hint = flowform_model::diagnostic::did_you_mean(t, known.iter().copied()).unwrap_or_default();
                    return Err(bad_result(
                        script,
                        format!("routed to team `{t}`, which is not a team (declared under `teams:`, or a live team record) {hint}").trim_end().to_string(),
                    ));
                }
                assignment.team = team;
            }
            "assignee" => assignment.assignee = text()?,
            "vendor" => assignment.vendor = text()?,
            "pick" => {
                pick = text()?;
                if let Some(p) = &pick
                    && !PICK_METHODS.contains(&p.as_str())
                {
                    return Err(bad_result(script, format!("`pick: \"{p}\"` is not known; use one of {}", PICK_METHODS.join(", "))));
                }
            }
            "pick_role" => pick_role = text()?,
            _ => touched.set(&mut inst.data, k, v),
        }
    }
    let mut picked = None;
    if let (Some(method), Some(team), None) = (&pick, &assignment.team, &assignment.assignee) {
        let chosen = pick_person(people, team, method, pick_role.as_deref());
        picked = Some(Effect::Picked { team: team.clone(), method: method.clone(), person: chosen.clone() });
        assignment.assignee = chosen;
    }
    if assigns {
        inst.assignment = assignment;
    }
    Ok(picked)
}

/// A person of `team` chosen by `method` from what the runtime read
/// (`Reads::people`); `None` when nobody fits (the order waits in the team's
/// queue). Admins are never picked unless `role` is `admin`. Deterministic:
/// the same reads give the same person.
pub fn pick_person(people: &Value, team: &str, method: &str, role: Option<&str>) -> Option<String> {
    let entry = people.get(team)?;
    let members: Vec<&Value> = entry
        .get("members")?
        .as_array()?
        .iter()
        .filter(|m| {
            let roles: Vec<&str> = m["roles"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            role.is_none_or(|r| roles.contains(&r)) && (role == Some("admin") || !roles.contains(&"admin"))
        })
        .collect();
    let on_duty: Vec<&Value> = members.iter().copied().filter(|m| m["on_duty"] == Value::Bool(true)).collect();
    let mut pool = match method {
        "on_duty" => on_duty,
        _ if !on_duty.is_empty() => on_duty,
        _ => members,
    };
    pool.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let chosen = match method {
        "round_robin" if !pool.is_empty() => {
            let turn = entry.get("turn").and_then(Value::as_u64).unwrap_or(0) as usize;
            pool.get(turn % pool.len()).copied()
        }
        "least_loaded" => pool.iter().copied().min_by_key(|m| m["load"].as_u64().unwrap_or(0)),
        _ => pool.first().copied(),
    };
    chosen.and_then(|m| m["id"].as_str()).map(str::to_string)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    bundle: &Bundle,
    before: Prior,
    mut after: Instance,
    mut changes: BTreeMap<String, Change>,
    kind: EventKind,
    transition: Option<String>,
    input: Value,
    postings: Vec<Posting>,
    actor: &Actor,
    now: Time,
) -> Result<Outcome, Rejection> {
    after.version = before.version + 1;
    after.updated_at = now;
    let mut effects = Vec::new();
    if (kind == EventKind::Started || before.state != after.state)
        && let Some(wf) = bundle.workflow(&after.workflow)
    {
        let mut arm = crate::timers::enter_state(&bundle.model, wf, &mut after, now);
        arm.extend(crate::deadlines::on_enter(&bundle.model, wf, &mut after, kind == EventKind::Started, transition.as_deref(), now));
        effects.push(Effect::Timers { arm });
    }
    diff_assignment(&before.assignment, &after.assignment, &mut changes);
    if before.assignment != after.assignment {
        effects.push(Effect::Assigned { assignment: after.assignment.clone() });
        // Dispatched (or re-dispatched) to a team or vendor; an assignee taking it is not.
        let dispatched = before.assignment.team != after.assignment.team || before.assignment.vendor != after.assignment.vendor;
        if dispatched
            && let Some(wf) = bundle.workflow(&after.workflow)
            && !wf.on_assigned.is_empty()
        {
            effects.push(Effect::Notify { notifications: crate::timers::notify_specs(&wf.on_assigned) });
        }
    }
    if kind == EventKind::Started
        && let Some(wf) = bundle.workflow(&after.workflow)
        && !wf.start.notify.is_empty()
    {
        effects.push(Effect::Notify { notifications: crate::timers::notify_specs(&wf.start.notify) });
    }
    if !postings.is_empty() {
        let max_of = |ledger: &str| bundle.model.ledgers.get(ledger).map_or(flowform_model::defs::DEFAULT_MAX_QUANTITY, |l| l.max_quantity);
        crate::ledger::check_bounds(&postings, max_of).map_err(Rejection::Posting)?;
        crate::ledger::track(&mut after.moved, &postings).map_err(Rejection::Posting)?;
        effects.push(Effect::Post { postings });
    }
    let event = Event {
        instance_id: after.id.clone(),
        seq: after.version,
        kind,
        transition,
        actor: actor.id.clone(),
        at: now,
        bundle_version: bundle.version.clone(),
        // A start comes from no state; everything else from the one it left.
        from_state: (kind != EventKind::Started).then_some(before.state),
        to_state: after.state.clone(),
        input,
        changes,
        parent: None,
        children: Vec::new(),
        decided_on: crate::instance::DecidedOn {
            roles: actor.roles.clone(),
            teams: actor.teams.clone(),
            department: actor.department.clone(),
            records: Default::default(),
            picked: None,
            recorded: true,
        },
    };
    Ok(Outcome { instance: after, event, effects })
}

/// The transitions `actor` may take on `instance` now (state, roles, teams and guard).
pub fn available_transitions(bundle: &Bundle, instance: &Instance, actor: &Actor, now: Time) -> Vec<AvailableTransition> {
    let Some(wf) = bundle.workflow(&instance.workflow) else {
        return Vec::new();
    };
    wf.transitions
        .iter()
        .filter(|t| t.from.iter().any(|f| f.value == instance.state))
        // Without the command's input and records a guard that reads them cannot
        // say no yet: offered, and decided when taken.
        .filter(|t| {
            !matches!(
                permitted(bundle, wf, t, instance, actor, now, &Value::Object(Map::new()), &Reads::default(), Lang::En),
                Err(Rejection::Forbidden(_) | Rejection::GuardFailed { .. })
            )
        })
        .map(|t| AvailableTransition {
            name: t.name.clone(),
            label: t.label.clone(),
            to: t.to.as_ref().map(|s| s.value.clone()),
            form: t.form.as_ref().map(|s| s.value.clone()),
        })
        .collect()
}

/// A `post` rule returns a list of movements:
/// `[#{ ledger: "stock", kind: "reserve", part: "P-001", warehouse: "WH-1", quantity: 2, reason: "..." }]`.
/// Each key named like a dimension of the ledger gives that dimension; `to` (a map) is a transfer's target.
pub fn parse_postings(bundle: &Bundle, out: Value, script: &str) -> Result<Vec<Posting>, Rejection> {
    let items = match out {
        Value::Null => return Ok(Vec::new()),
        Value::Array(items) => items,
        Value::Object(m) => vec![Value::Object(m)],
        other => return Err(bad_result(script, format!("a `post` rule must return a list of movements, it gave {other}"))),
    };
    let mut postings = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = format!("movement {}", i + 1);
        let Value::Object(m) = item else { return Err(bad_result(script, format!("{at} must be a map"))) };
        let ledger_name = m.get("ledger").and_then(Value::as_str).unwrap_or_default();
        let Some(ledger) = bundle.model.ledgers.get(ledger_name) else {
            let known: Vec<&str> = bundle.model.ledgers.keys().map(String::as_str).collect();
            return Err(bad_result(script, format!("{at}: unknown ledger `{ledger_name}` (ledgers: {})", known.join(", "))));
        };
        let kind_name = m.get("kind").and_then(Value::as_str).unwrap_or_default();
        let Some(kind) = MovementKind::parse(kind_name) else {
            let kinds: Vec<&str> = MovementKind::ALL.iter().map(|(n, _)| *n).collect();
            return Err(bad_result(script, format!("{at}: unknown kind `{kind_name}` (kinds: {})", kinds.join(", "))));
        };
        let quantity = m.get("quantity").and_then(Value::as_i64).ok_or_else(|| bad_result(script, format!("{at}: `quantity` must be a whole number")))?;
        if quantity == 0 || (quantity < 0 && kind != MovementKind::Adjust) {
            return Err(bad_result(script, format!("{at}: `quantity` must be positive, it is {quantity}")));
        }
        let dims_of = |source: &serde_json::Map<String, Value>| -> Result<std::collections::BTreeMap<String, String>, Rejection> {
            let mut dims = std::collections::BTreeMap::new();
            for (dim, _) in &ledger.dimensions {
                match source.get(&dim.value).and_then(Value::as_str) {
                    Some(v) if !v.is_empty() => {
                        dims.insert(dim.value.clone(), v.to_string());
                    }
                    _ => return Err(bad_result(script, format!("{at}: dimension `{}` of ledger `{}` is missing", dim.value, ledger.name))),
                }
            }
            Ok(dims)
        };
        let dims = dims_of(&m)?;
        let to = match (kind, m.get("to")) {
            (MovementKind::Transfer, Some(Value::Object(to))) => {
                let mut merged = m.clone();
                merged.extend(to.clone());
                Some(dims_of(&merged)?)
            }
            (MovementKind::Transfer, _) => return Err(bad_result(script, format!("{at}: a transfer needs `to`, e.g. to: #{{ warehouse: \"WH-2\" }}"))),
            _ => None,
        };
        let reason = m.get("reason").and_then(Value::as_str).unwrap_or_default().to_string();
        postings.push(Posting { ledger: ledger.name.clone(), kind, dims, quantity, to, reason });
    }
    Ok(postings)
}

/// An outcome made by the system (a timer), not by a command of a user.
#[allow(clippy::too_many_arguments)]
pub(crate) fn finish_system(
    bundle: &Bundle,
    before: &Instance,
    after: Instance,
    kind: EventKind,
    transition: Option<String>,
    input: Value,
    actor: &Actor,
    now: Time,
) -> Result<Outcome, Rejection> {
    let changes = diff_data(&before.data, &after.data);
    finish(bundle, Prior::of(before), after, changes, kind, transition, input, Vec::new(), actor, now)
}

/// A transition the system takes when a timer says so: roles, teams and `when`
/// are not checked, no form data is given; `set` fields are set first; its
/// rules run as usual.
pub(crate) fn system_transition(bundle: &Bundle, instance: &Instance, name: &str, set: &Map<String, Value>, now: Time) -> Result<Outcome, Rejection> {
    let (_, t) = transition_from_here(bundle, instance, name)?;
    let actor = Actor { id: "system".into(), name: "timer".into(), roles: Vec::new(), teams: Vec::new(), email: None, department: None };
    let mut base = instance.clone();
    for (k, v) in set {
        base.data.insert(k.clone(), v.clone());
    }
    let applied = apply(bundle, base, None, &t.hooks, Some(t), &Value::Object(Map::new()), &actor, now, Lang::En, &Reads::default())?;
    let mut after = applied.instance;
    if let Some(to) = &t.to {
        after.state = to.value.clone();
    }
    // The `set` fields were set before the rules ran: compare with the instance.
    let changes = diff_data(&instance.data, &after.data);
    let mut outcome = finish(
        bundle,
        Prior::of(instance),
        after,
        changes,
        EventKind::Transition,
        Some(t.name.clone()),
        Value::Object(Map::new()),
        applied.postings,
        &actor,
        now,
    )?;
    if !t.notify.is_empty() {
        outcome.effects.push(Effect::Notify { notifications: crate::timers::notify_specs(&t.notify) });
    }
    let starts = if t.starts.is_empty() { Vec::new() } else { crate::links::linked_starts(t, &outcome.instance, &bundle.local_text(now)) };
    if !starts.is_empty() {
        outcome.effects.push(Effect::Start { starts });
    }
    Ok(outcome)
}

#[cfg(test)]
mod pick_tests {
    use super::pick_person;
    use serde_json::json;

    fn people(turn: u64) -> serde_json::Value {
        json!({"t": {"turn": turn, "members": [
            {"id": "carol", "roles": ["technician"], "load": 2, "on_duty": false},
            {"id": "admin", "roles": ["admin", "technician"], "load": 0, "on_duty": false},
            {"id": "bob", "roles": ["technician"], "load": 1, "on_duty": false},
            {"id": "amy", "roles": ["technician"], "load": 3, "on_duty": false},
            {"id": "dan", "roles": ["staff"], "load": 0, "on_duty": false},
        ]}})
    }

    #[test]
    fn round_robin_takes_turns_in_id_order_and_never_picks_admins() {
        let picks: Vec<String> = (0..4).map(|turn| pick_person(&people(turn), "t", "round_robin", Some("technician")).unwrap()).collect();
        assert_eq!(picks, ["amy", "bob", "carol", "amy"]);
    }

    #[test]
    fn least_loaded_takes_the_fewest_open_orders_of_the_role() {
        assert_eq!(pick_person(&people(0), "t", "least_loaded", Some("technician")).as_deref(), Some("bob"));
        assert_eq!(pick_person(&people(0), "t", "least_loaded", None).as_deref(), Some("dan"), "without a role, anyone of the team but admins");
    }

    #[test]
    fn on_duty_people_come_first_and_on_duty_alone_needs_someone_on_duty() {
        let mut p = people(0);
        p["t"]["members"][0]["on_duty"] = json!(true);
        assert_eq!(pick_person(&p, "t", "least_loaded", Some("technician")).as_deref(), Some("carol"), "on duty beats a lighter load");
        assert_eq!(pick_person(&p, "t", "on_duty", Some("technician")).as_deref(), Some("carol"));
        assert_eq!(pick_person(&people(0), "t", "on_duty", Some("technician")), None, "nobody on duty: the team's queue");
        assert_eq!(pick_person(&people(0), "other", "least_loaded", None), None);
    }
}

#[cfg(test)]
mod record_tests {
    use super::{OWN_FIELDS, record_fields, record_json};
    use crate::instance::{Assignment, Instance};
    use crate::time::Time;
    use serde_json::{Value, json};

    #[test]
    fn a_narrowed_record_is_the_whole_record_restricted_to_its_fields() {
        let at: Time = "2026-11-25T01:00:00Z".parse().unwrap();
        let data = json!({"asset": "EQ-1", "state": "a data field named like an own one", "n": 3, "team": "shadowed"});
        let instance = Instance {
            id: "i1".into(),
            number: None,
            workflow: "w".into(),
            bundle_version: "v".into(),
            version: 2,
            state: "open".into(),
            data: data.as_object().unwrap().clone(),
            assignment: Assignment { team: Some("t1".into()), assignee: None, vendor: Some("v1".into()) },
            requester: "u1".into(),
            requester_department: None,
            created_at: at,
            updated_at: at,
            state_entered_at: at,
            state_entered_seq: 1,
            due_at: None,
            overdue: false,
            moved: Vec::new(),
            parent: None,
            children: Vec::new(),
            deadlines: Vec::new(),
        };
        let whole = record_json(&instance);
        let mut names: Vec<String> = OWN_FIELDS.iter().map(|s| s.to_string()).collect();
        names.extend(["asset", "n", "missing"].map(String::from));
        for k in 0..names.len() {
            let fields = &names[k..];
            let narrowed = record_fields(&instance, fields);
            let expected: serde_json::Map<String, Value> =
                whole.as_object().unwrap().iter().filter(|(key, _)| fields.contains(key)).map(|(key, v)| (key.clone(), v.clone())).collect();
            assert_eq!(narrowed, Value::Object(expected), "{fields:?}");
        }
    }
}
