//! Instances, actors and events: the data the core reads and produces.

use crate::time::Time;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Who acts: a user with roles and team memberships.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    /// Where `email` notifications go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The user's department (for `visible_to: [department]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
}

impl Actor {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Who is responsible for an instance now.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    pub team: Option<String>,
    pub assignee: Option<String>,
    pub vendor: Option<String>,
}

/// A running (or finished) workflow instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    pub id: String,
    /// The readable number (the workflow's `number` template), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<String>,
    pub workflow: String,
    /// The bundle version the instance started under; it keeps running on it.
    pub bundle_version: String,
    /// Incremented by every accepted command; the optimistic-concurrency token.
    pub version: u64,
    pub state: String,
    pub data: Map<String, Value>,
    pub assignment: Assignment,
    /// The user who started it (the `requester` relational role).
    pub requester: String,
    /// The requester's department when it was started (`visible_to: [department]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_department: Option<String>,
    pub created_at: Time,
    pub updated_at: Time,
    /// When the instance entered its current state, and with which event.
    #[serde(default)]
    pub state_entered_at: Time,
    #[serde(default)]
    pub state_entered_seq: u64,
    /// The SLA deadline of the current state, if it has one.
    #[serde(default)]
    pub due_at: Option<Time>,
    /// Past the deadline of its current state.
    #[serde(default)]
    pub overdue: bool,
    /// What its commands moved in ledgers (the bound of a `return`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<crate::ledger::Moved>,
    /// The instance whose transition started this one (`starts:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The instances this one's transitions started, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// The workflow's process deadlines (`deadlines:`) that have started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deadlines: Vec<crate::deadlines::DeadlineRun>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Started,
    Transition,
    /// Moved to another bundle version by an admin (or `on_new_version: migrate`).
    Migrated,
    /// A timer of the state fired (SLA breach, escalation step, automatic transition).
    Timer,
}

/// One field's value before and after a command.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub before: Value,
    pub after: Value,
}

/// One accepted command, as recorded in the append-only event log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub instance_id: String,
    /// Equals the instance version the event produced (1 for the start).
    pub seq: u64,
    pub kind: EventKind,
    pub transition: Option<String>,
    pub actor: String,
    pub at: Time,
    pub bundle_version: String,
    pub from_state: Option<String>,
    pub to_state: String,
    /// The validated form data of the command.
    pub input: Value,
    /// Every data field (and `assignment.*`) the command changed.
    pub changes: BTreeMap<String, Change>,
    /// On the start of a linked instance: the instance that started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The instances this command started (`starts:`), in the same transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    /// What the decision read besides the instance and the input (what-if replay).
    #[serde(default, skip_serializing_if = "DecidedOn::is_empty")]
    pub decided_on: DecidedOn,
}

/// What a decision read besides the instance and the input, recorded with
/// its event so that the command can be decided again under changed
/// definitions (`flowform replay`): the actor's roles, teams and department
/// as they were, and the version of every record (or record-kind instance)
/// it read. Who a rule could `pick` from is not recorded: a replay reports a
/// pick by its method, never a guessed person.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecidedOn {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// `{TYPE: {ID: version}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub records: BTreeMap<String, BTreeMap<String, u64>>,
    /// The method by which a route rule picked the assignee, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub picked: Option<String>,
    /// Set on every decision since events keep what they read (an actor with
    /// no roles who read nothing is still replayable; older events are not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recorded: bool,
}

impl DecidedOn {
    pub fn is_empty(&self) -> bool {
        !self.recorded && self.roles.is_empty() && self.teams.is_empty() && self.department.is_none() && self.records.is_empty() && self.picked.is_none()
    }

    /// The actor as the decision saw them.
    pub fn actor(&self, id: &str) -> Actor {
        Actor {
            id: id.to_string(),
            name: String::new(),
            roles: self.roles.clone(),
            teams: self.teams.clone(),
            email: None,
            department: self.department.clone(),
        }
    }
}

/// What the runtime must do besides storing the new instance and the event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    /// The assignment changed; later: notify the new assignee or team.
    Assigned { assignment: Assignment },
    /// Ledger movements to commit with the command (all or none).
    Post { postings: Vec<crate::ledger::Posting> },
    /// The instance entered a state: drop the old state's timers, arm these.
    Timers { arm: Vec<crate::timers::TimerSpec> },
    /// Notifications to send (rendered and delivered by the runtime).
    Notify { notifications: Vec<crate::timers::NotifySpec> },
    /// Instances of other workflows to start with the command (`starts:`).
    Start { starts: Vec<crate::links::LinkedStart> },
    /// A route rule asked to `pick` a person of `team` by `method`; `person`
    /// is who it chose (none: nobody fit). After a round-robin pick the
    /// team's turn moves on.
    Picked { team: String, method: String, person: Option<String> },
}

pub(crate) fn diff(before: &Instance, after: &Instance) -> BTreeMap<String, Change> {
    let mut changes = diff_data(&before.data, &after.data);
    diff_assignment(&before.assignment, &after.assignment, &mut changes);
    changes
}

/// The fields that differ between two versions of an instance's data.
pub(crate) fn diff_data(before: &Map<String, Value>, after: &Map<String, Value>) -> BTreeMap<String, Change> {
    let mut changes = BTreeMap::new();
    const NULL: Value = Value::Null;
    for (k, a) in after {
        let b = before.get(k).unwrap_or(&NULL);
        if b != a {
            changes.insert(k.clone(), Change { before: b.clone(), after: a.clone() });
        }
    }
    for (k, b) in before {
        if !after.contains_key(k) && !b.is_null() {
            changes.insert(k.clone(), Change { before: b.clone(), after: Value::Null });
        }
    }
    changes
}

/// Adds the assignment's changes (`assignment.team`, `.assignee`, `.vendor`) to `changes`.
pub(crate) fn diff_assignment(before: &Assignment, after: &Assignment, changes: &mut BTreeMap<String, Change>) {
    let pairs = [
        ("assignment.team", &before.team, &after.team),
        ("assignment.assignee", &before.assignee, &after.assignee),
        ("assignment.vendor", &before.vendor, &after.vendor),
    ];
    for (k, b, a) in pairs {
        if b != a {
            changes.insert(k.into(), Change { before: b.clone().map_or(Value::Null, Value::String), after: a.clone().map_or(Value::Null, Value::String) });
        }
    }
}
