//! What-if replay: the recorded commands of a past instance decided again
//! under changed definitions, without writing anything, and what would have
//! gone differently — another team or person, another state, a deadline met
//! or missed differently, a command now refused or a form now invalid.
//!
//! Pure like every decision: each event records what its decision read
//! ([`crate::instance::DecidedOn`]: the actor's roles and teams, the versions
//! of the records read); the caller hands in those records as they were.
//! Timer and migration events are not decided again: they are carried over
//! as recorded. A person a rule picked by round robin, load or the duty
//! roster is reported by the method, never guessed; picked the same way from
//! the same team, the recorded person is kept.

use crate::bundle::Bundle;
use crate::deadlines::Verdict;
use crate::decide::{Reads, Rejection, start_with, transition_with};
use crate::instance::{Assignment, Event, EventKind, Instance};
use crate::time::Time;
use flowform_forms::Lang;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The kinds of difference, in the order a summary lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Routed to another team.
    Team,
    /// Assigned to another person (or picked another way).
    Assignee,
    Vendor,
    /// The command would lead to another state.
    State,
    /// A state's SLA or a process deadline met or missed differently.
    Deadline,
    /// The command would now be refused (roles, teams, guard, rule, ledger).
    Refused,
    /// The command's form data would now be invalid.
    InvalidForm,
    /// A data field would get another value (rules' computed fields).
    Data,
    /// Recorded before decisions recorded what they read: not decided again.
    NotReplayable,
}

impl DiffKind {
    pub const ALL: [DiffKind; 9] = [
        DiffKind::Team,
        DiffKind::Assignee,
        DiffKind::Vendor,
        DiffKind::State,
        DiffKind::Deadline,
        DiffKind::Refused,
        DiffKind::InvalidForm,
        DiffKind::Data,
        DiffKind::NotReplayable,
    ];

    pub fn label(self, lang: Lang) -> &'static str {
        let zh = lang == Lang::ZhCn;
        match self {
            DiffKind::Team => {
                if zh {
                    "班组不同"
                } else {
                    "other team"
                }
            }
            DiffKind::Assignee => {
                if zh {
                    "处理人不同"
                } else {
                    "other person"
                }
            }
            DiffKind::Vendor => {
                if zh {
                    "厂商不同"
                } else {
                    "other vendor"
                }
            }
            DiffKind::State => {
                if zh {
                    "状态不同"
                } else {
                    "other state"
                }
            }
            DiffKind::Deadline => {
                if zh {
                    "时限结果不同"
                } else {
                    "deadline met/missed differently"
                }
            }
            DiffKind::Refused => {
                if zh {
                    "将被拒绝"
                } else {
                    "now refused"
                }
            }
            DiffKind::InvalidForm => {
                if zh {
                    "表单将无效"
                } else {
                    "form now invalid"
                }
            }
            DiffKind::Data => {
                if zh {
                    "字段值不同"
                } else {
                    "other field value"
                }
            }
            DiffKind::NotReplayable => {
                if zh {
                    "无法重放"
                } else {
                    "not replayable"
                }
            }
        }
    }

    /// Whether the later steps can still be compared: they were taken by
    /// people answering the recorded assignment and state.
    fn diverges(self) -> bool {
        !matches!(self, DiffKind::Deadline | DiffKind::Data)
    }
}

/// One difference, at the step (event) where it appears.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub kind: DiffKind,
    /// The event's sequence number (1: the start).
    pub seq: u64,
    pub at: Time,
    /// `start`, the transition, or the deadline.
    pub step: String,
    /// The field, state or deadline that differs.
    pub what: String,
    pub recorded: Value,
    pub replayed: Value,
    pub message: String,
}

/// One instance decided again.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InstanceReplay {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    pub workflow: String,
    pub created_at: Time,
    /// The team it was (last) assigned to, as recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// Commands decided again.
    pub steps: usize,
    /// Every difference found, the first differing step first.
    pub differences: Vec<Difference>,
}

impl InstanceReplay {
    /// Something would have gone differently.
    pub fn affected(&self) -> bool {
        self.differences.iter().any(|d| d.kind != DiffKind::NotReplayable)
    }

    /// Recorded before events kept what their decisions read.
    pub fn not_replayable(&self) -> bool {
        self.differences.iter().any(|d| d.kind == DiffKind::NotReplayable)
    }
}

/// A past instance as recorded: as it is now, its events, and for each
/// event the records its decision read, at the versions it read them.
pub struct Recorded<'a> {
    pub instance: &'a Instance,
    pub events: &'a [Event],
    /// One per event.
    pub reads: Vec<&'a Reads>,
}

/// Decides `recorded`'s commands again under `new`; `old` gives the bundle
/// of a recorded version (for the deadlines the instance ran under).
pub fn replay_instance(new: &Bundle, old: &dyn Fn(&str) -> Option<Arc<Bundle>>, recorded: &Recorded, now: Time, lang: Lang) -> InstanceReplay {
    let inst = recorded.instance;
    let mut out = InstanceReplay {
        id: inst.id.clone(),
        number: inst.number.clone(),
        workflow: inst.workflow.clone(),
        created_at: inst.created_at,
        team: inst.assignment.team.clone(),
        steps: 0,
        differences: Vec::new(),
    };
    let mut current: Option<Instance> = None;
    // The instance as recorded, event by event: what the replay is compared with.
    let mut as_recorded = AsRecorded::default();
    let mut diverged = false;
    let empty = Reads::default();
    // Events written after the instance was read (a replay while serving) are not part of it.
    let events: &[Event] = &recorded.events[..recorded.events.iter().take_while(|e| e.seq <= inst.version).count()];
    for (i, ev) in events.iter().enumerate() {
        let step = match ev.kind {
            EventKind::Started => "start".to_string(),
            EventKind::Timer => ev.transition.clone().unwrap_or_else(|| "timer".to_string()),
            EventKind::Migrated => "migrated".to_string(),
            EventKind::Transition => ev.transition.clone().unwrap_or_default(),
        };
        let diff = |kind: DiffKind, what: &str, recorded: Value, replayed: Value, message: String| Difference {
            kind,
            seq: ev.seq,
            at: ev.at,
            step: step.clone(),
            what: what.to_string(),
            recorded,
            replayed,
            message,
        };
        match ev.kind {
            EventKind::Started | EventKind::Transition => {
                if !ev.decided_on.recorded {
                    let message = if lang == Lang::ZhCn {
                        "该步骤记录于系统开始保存决策依据之前，无法重新判定".to_string()
                    } else {
                        "recorded before events kept what their decision read; not decided again".to_string()
                    };
                    out.differences.push(diff(DiffKind::NotReplayable, "", Value::Null, Value::Null, message));
                    diverged = true;
                    break;
                }
                let actor = ev.decided_on.actor(&ev.actor);
                let reads = recorded.reads.get(i).copied().unwrap_or(&empty);
                let result = match (&ev.kind, &current) {
                    (EventKind::Started, _) => start_with(new, &inst.workflow, &ev.input, &actor, ev.at, &ev.instance_id, lang, reads),
                    (_, Some(c)) => transition_with(new, c.clone(), ev.transition.as_deref().unwrap_or_default(), &ev.input, &actor, ev.at, lang, reads),
                    (_, None) => break,
                };
                out.steps += 1;
                let blank;
                let before: &Instance = match &current {
                    Some(c) => c,
                    None => {
                        blank = Instance { assignment: Assignment::default(), data: Default::default(), ..inst.clone() };
                        &blank
                    }
                };
                let mut outcome = match result {
                    Ok(o) => o,
                    Err(rejection) => {
                        let (kind, replayed) = match &rejection {
                            Rejection::InvalidInput(errors) => (
                                DiffKind::InvalidForm,
                                json!(errors.iter().map(|e| json!({"field": e.field, "code": e.code, "message": e.message})).collect::<Vec<_>>()),
                            ),
                            other => (DiffKind::Refused, json!(other.to_string())),
                        };
                        let message = match &rejection {
                            Rejection::InvalidInput(errors) => errors
                                .iter()
                                .map(|e| if e.field.is_empty() { e.message.clone() } else { format!("{}: {}", e.field, e.message) })
                                .collect::<Vec<_>>()
                                .join("; "),
                            other => other.to_string(),
                        };
                        out.differences.push(diff(kind, &step, json!("accepted"), replayed, message));
                        diverged = true;
                        break;
                    }
                };
                // What the recorded command led to: the assignment before it, with its changes.
                let mut was_assignment = as_recorded.assignment();
                for (k, c) in &ev.changes {
                    let text = || c.after.as_str().map(str::to_string);
                    match k.as_str() {
                        "assignment.team" => was_assignment.team = text(),
                        "assignment.assignee" => was_assignment.assignee = text(),
                        "assignment.vendor" => was_assignment.vendor = text(),
                        _ => {}
                    }
                }
                // Picked the same way from the same team, and nobody chosen (who
                // was free then is not recorded): the person recorded.
                let picked = outcome.event.decided_on.picked.clone();
                let chose_nobody = outcome.effects.iter().any(|e| matches!(e, crate::instance::Effect::Picked { person: None, .. }));
                if chose_nobody && picked == ev.decided_on.picked && outcome.instance.assignment.team == was_assignment.team {
                    outcome.instance.assignment.assignee = was_assignment.assignee.clone();
                }
                let mut found = Vec::new();
                if outcome.instance.state != ev.to_state {
                    let message = format!("→ {} ({} {})", outcome.instance.state, if lang == Lang::ZhCn { "原为" } else { "was" }, ev.to_state);
                    found.push(diff(DiffKind::State, "state", json!(ev.to_state), json!(outcome.instance.state), message));
                }
                let (a, b) = (&was_assignment, &outcome.instance.assignment);
                let by = |method: &Option<String>| match method {
                    Some(m) if lang == Lang::ZhCn => format!("（按 {m} 选人）"),
                    Some(m) => format!(" (a person picked by {m})"),
                    None => String::new(),
                };
                if a.team != b.team {
                    let message = format!("{} → {}{}", show(&a.team), show(&b.team), by(&picked));
                    found.push(diff(DiffKind::Team, "team", json!(a.team), json!(b.team), message));
                } else if a.assignee != b.assignee {
                    let replayed = match (&picked, &b.assignee) {
                        (Some(m), None) => json!({"picked_by": m}),
                        _ => json!(b.assignee),
                    };
                    let message = format!("{} → {}{}", show(&a.assignee), show(&b.assignee), by(&picked));
                    found.push(diff(DiffKind::Assignee, "assignee", json!(a.assignee), replayed, message));
                }
                if a.vendor != b.vendor {
                    found.push(diff(DiffKind::Vendor, "vendor", json!(a.vendor), json!(b.vendor), format!("{} → {}", show(&a.vendor), show(&b.vendor))));
                }
                // Only what either command changed can differ.
                let keys: std::collections::BTreeSet<&String> =
                    ev.changes.keys().chain(outcome.event.changes.keys()).filter(|k| !k.starts_with("assignment.")).collect();
                for k in keys {
                    let x = ev.changes.get(k).map_or_else(|| as_recorded.data.get(k.as_str()).copied().unwrap_or(&Value::Null), |c| &c.after);
                    let y = outcome.instance.data.get(k).unwrap_or(&Value::Null);
                    if x != y {
                        found.push(diff(DiffKind::Data, k, x.clone(), y.clone(), format!("{k}: {x} → {y}")));
                    }
                }
                // A state's SLA, judged at the time the instance left the state.
                if ev.kind == EventKind::Started || before.state != outcome.instance.state {
                    let left = leaving_time(events, i, &outcome.instance.state).unwrap_or(now);
                    let old_due = old(&ev.bundle_version).and_then(|ob| {
                        let wf = ob.workflow(&inst.workflow)?;
                        wf.state(&ev.to_state)?.sla.as_ref()?;
                        // As recorded: the old definitions over the recorded data (an SLA may be a field).
                        let mut probe = as_recorded.instance(&outcome.instance);
                        apply_changes(&mut probe, ev);
                        probe.version = ev.seq;
                        crate::timers::enter_state(&ob.model, wf, &mut probe, ev.at);
                        probe.due_at
                    });
                    let met = |due: &Option<Time>| due.map(|d| left <= d);
                    let (was_met, now_met) = (met(&old_due), met(&outcome.instance.due_at));
                    if was_met != now_met {
                        let word = |m: Option<bool>| match (m, lang == Lang::ZhCn) {
                            (None, true) => "无时限",
                            (None, false) => "no SLA",
                            (Some(true), true) => "按时",
                            (Some(true), false) => "met",
                            (Some(false), true) => "超时",
                            (Some(false), false) => "missed",
                        };
                        let state = &outcome.instance.state;
                        let message = format!("SLA {state}: {} → {}", word(was_met), word(now_met));
                        found.push(diff(
                            DiffKind::Deadline,
                            &format!("sla:{state}"),
                            json!({"due_at": old_due, "met": was_met}),
                            json!({"due_at": outcome.instance.due_at, "met": now_met}),
                            message,
                        ));
                    }
                }
                let stop = found.iter().any(|d| d.kind.diverges());
                out.differences.extend(found);
                as_recorded.apply(ev);
                current = Some(outcome.instance);
                if stop {
                    diverged = true;
                    break;
                }
            }
            EventKind::Timer | EventKind::Migrated => {
                as_recorded.apply(ev);
                // Not decided again: carried over as recorded.
                if let Some(c) = &mut current {
                    let entered = c.state != ev.to_state;
                    apply_changes(c, ev);
                    c.version = ev.seq;
                    c.updated_at = ev.at;
                    if entered && let Some(wf) = new.workflow(&c.workflow) {
                        crate::timers::enter_state(&new.model, wf, c, ev.at);
                        crate::deadlines::on_enter(&new.model, wf, c, false, ev.transition.as_deref(), ev.at);
                    }
                }
            }
        }
    }
    // The process deadlines, over the whole path, when it was followed to the end.
    if !diverged
        && let (Some(replayed), Some(ob)) = (&current, old(&inst.bundle_version))
        && let (Some(owf), Some(nwf)) = (ob.workflow(&inst.workflow), new.workflow(&inst.workflow))
    {
        let was: BTreeMap<String, Verdict> = crate::deadlines::verdicts(&ob.model, owf, inst, now).into_iter().collect();
        let is: BTreeMap<String, Verdict> = crate::deadlines::verdicts(&new.model, nwf, replayed, now).into_iter().collect();
        let names: std::collections::BTreeSet<&String> = was.keys().chain(is.keys()).collect();
        for name in names {
            let (a, b) = (was.get(name), is.get(name));
            if a != b {
                let message = format!("{name}: {} → {}", verdict_word(a, lang), verdict_word(b, lang));
                let last = events.last();
                out.differences.push(Difference {
                    kind: DiffKind::Deadline,
                    seq: last.map_or(0, |e| e.seq),
                    at: last.map_or(now, |e| e.at),
                    step: "deadlines".into(),
                    what: format!("deadline:{name}"),
                    recorded: json!(a),
                    replayed: json!(b),
                    message,
                });
            }
        }
    }
    out
}

fn verdict_word(v: Option<&Verdict>, lang: Lang) -> &'static str {
    match (v, lang == Lang::ZhCn) {
        (None, true) => "无",
        (None, false) => "none",
        (Some(Verdict::Met), true) => "按时",
        (Some(Verdict::Met), false) => "met",
        (Some(Verdict::Missed), true) => "超时",
        (Some(Verdict::Missed), false) => "missed",
        (Some(Verdict::Running), true) => "进行中",
        (Some(Verdict::Running), false) => "running",
    }
}

fn show(v: &Option<String>) -> String {
    v.clone().unwrap_or_else(|| "—".to_string())
}

/// `due` is at or after `at` (both RFC 3339; unreadable: not met).
/// When the recorded instance left `state`, entered at event `i`.
fn leaving_time(events: &[Event], i: usize, state: &str) -> Option<Time> {
    events[i + 1..].iter().find(|e| e.to_state != state).map(|e| e.at)
}

/// The instance as recorded, event by event, borrowing the events' values
/// (no copy per step): what the replay is compared with.
#[derive(Default)]
struct AsRecorded<'e> {
    data: std::collections::HashMap<&'e str, &'e Value>,
    team: Option<&'e str>,
    assignee: Option<&'e str>,
    vendor: Option<&'e str>,
}

impl<'e> AsRecorded<'e> {
    fn apply(&mut self, ev: &'e Event) {
        for (k, c) in &ev.changes {
            match k.as_str() {
                "assignment.team" => self.team = c.after.as_str(),
                "assignment.assignee" => self.assignee = c.after.as_str(),
                "assignment.vendor" => self.vendor = c.after.as_str(),
                _ if c.after.is_null() => {
                    self.data.remove(k.as_str());
                }
                _ => {
                    self.data.insert(k.as_str(), &c.after);
                }
            }
        }
    }

    fn assignment(&self) -> Assignment {
        let own = |v: Option<&str>| v.map(str::to_string);
        Assignment { team: own(self.team), assignee: own(self.assignee), vendor: own(self.vendor) }
    }

    /// An instance with the recorded data and assignment, the rest from `like`.
    fn instance(&self, like: &Instance) -> Instance {
        Instance { data: self.data.iter().map(|(k, v)| (k.to_string(), (*v).clone())).collect(), assignment: self.assignment(), ..like.clone() }
    }
}

/// The recorded event's changes applied to `inst`.
fn apply_changes(inst: &mut Instance, ev: &Event) {
    inst.state = ev.to_state.clone();
    for (k, c) in &ev.changes {
        let text = c.after.as_str().map(str::to_string);
        match k.as_str() {
            "assignment.team" => inst.assignment.team = text,
            "assignment.assignee" => inst.assignment.assignee = text,
            "assignment.vendor" => inst.assignment.vendor = text,
            _ if c.after.is_null() => {
                inst.data.remove(k);
            }
            _ => {
                inst.data.insert(k.clone(), c.after.clone());
            }
        }
    }
}

/// Counts over a replay, for the summary table.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub instances: usize,
    pub steps: usize,
    pub affected: usize,
    /// Instances with at least one difference of the kind.
    pub by_kind: BTreeMap<DiffKind, usize>,
    /// Instances recorded before events kept what their decisions read (not counted as affected).
    pub not_replayable: usize,
    /// Affected instances per recorded team (`—`: none).
    pub by_team: BTreeMap<String, usize>,
    /// Affected instances per month they were created (`2026-11`).
    pub by_month: BTreeMap<String, usize>,
    /// Routing moves: `from → to` and how many instances.
    pub team_moves: BTreeMap<String, usize>,
}

impl Summary {
    /// Counts one instance in.
    pub fn add(&mut self, r: &InstanceReplay) {
        self.instances += 1;
        self.steps += r.steps;
        if r.not_replayable() {
            self.not_replayable += 1;
        }
        if !r.affected() {
            return;
        }
        self.affected += 1;
        let kinds: std::collections::BTreeSet<DiffKind> = r.differences.iter().map(|d| d.kind).filter(|k| *k != DiffKind::NotReplayable).collect();
        for k in kinds {
            *self.by_kind.entry(k).or_default() += 1;
        }
        *self.by_team.entry(show(&r.team)).or_default() += 1;
        *self.by_month.entry(r.created_at.to_string()[..7].to_string()).or_default() += 1;
        for d in r.differences.iter().filter(|d| d.kind == DiffKind::Team) {
            let text = |v: &Value| v.as_str().unwrap_or("—").to_string();
            *self.team_moves.entry(format!("{} → {}", text(&d.recorded), text(&d.replayed))).or_default() += 1;
        }
    }
}

impl Summary {
    /// Adds the counts of another part of the same replay.
    pub fn merge(&mut self, other: Summary) {
        self.instances += other.instances;
        self.steps += other.steps;
        self.not_replayable += other.not_replayable;
        self.affected += other.affected;
        for (mine, theirs) in [(&mut self.by_team, other.by_team), (&mut self.by_month, other.by_month), (&mut self.team_moves, other.team_moves)] {
            for (k, n) in theirs {
                *mine.entry(k).or_default() += n;
            }
        }
        for (k, n) in other.by_kind {
            *self.by_kind.entry(k).or_default() += n;
        }
    }
}

pub fn summarize(items: &[InstanceReplay]) -> Summary {
    let mut s = Summary::default();
    items.iter().for_each(|r| s.add(r));
    s
}
