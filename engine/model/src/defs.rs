//! The typed definition model: what the YAML files say, with positions.

use crate::condition::Condition;
use crate::diagnostic::Pos;
use crate::label::Label;
use crate::reader::Sp;
use serde_json::Value;
use std::collections::BTreeMap;

/// Roles everyone may name without declaring them: they relate the actor to the
/// instance instead of to the organisation.
pub const RELATIONAL_ROLES: &[&str] = &["requester", "assignee"];

/// Everything the definition files declare, checked.
#[derive(Clone, Debug, Default)]
pub struct Model {
    pub app: App,
    pub roles: BTreeMap<String, RoleDef>,
    pub teams: BTreeMap<String, TeamDef>,
    pub workflows: BTreeMap<String, WorkflowDef>,
    pub forms: BTreeMap<String, FormDef>,
    pub scripts: BTreeMap<String, ScriptSource>,
    pub record_types: BTreeMap<String, RecordTypeDef>,
    pub ledgers: BTreeMap<String, LedgerDef>,
    pub templates: BTreeMap<String, TemplateDef>,
    pub webhooks: BTreeMap<String, WebhookDef>,
    pub calendars: BTreeMap<String, CalendarDef>,
    pub schedules: BTreeMap<String, ScheduleDef>,
    pub reports: BTreeMap<String, ReportDef>,
    pub dashboards: BTreeMap<String, DashboardDef>,
    /// Names (file stems) of files that could not be read as YAML: what
    /// refers to them is not reported again (the cause is reported once).
    pub unreadable: std::collections::BTreeSet<String>,
}

/// A report (`definitions/reports/*.yaml`): rows from a source, filtered,
/// grouped by a dimension, with measures over each group.
#[derive(Clone, Debug)]
pub struct ReportDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub title: Label,
    /// How it is computed, in words, for managers.
    pub description: Label,
    pub source: ReportSource,
    /// The timestamp the `from`/`to` range applies to (default: `created_at`,
    /// or `at` for events and movements).
    pub time: Sp<String>,
    /// Only rows for which this condition holds.
    pub filter: Option<(Sp<String>, Condition)>,
    /// The dimensions it may be grouped by (`by`); the first is the default.
    pub dimensions: Vec<Sp<String>>,
    pub measures: Vec<MeasureDef>,
    /// `table`, `bar`, `line`, `pie` or `kpi`.
    pub chart: Sp<String>,
    /// Who may run it (admins always).
    pub roles: Vec<Sp<String>>,
}

/// A dashboard (`definitions/dashboards/*.yaml`): report tiles for some roles.
#[derive(Clone, Debug)]
pub struct DashboardDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub title: Label,
    /// Who sees it (admins always); the first dashboard of a role is its default.
    pub roles: Vec<Sp<String>>,
    pub tiles: Vec<TileDef>,
}

/// One tile: a report, grouped by one of its dimensions (or its total), one
/// measure, shown as a chart.
#[derive(Clone, Debug)]
pub struct TileDef {
    pub pos: Pos,
    pub report: Sp<String>,
    pub by: Option<Sp<String>>,
    pub measure: Option<Sp<String>>,
    pub chart: Option<Sp<String>>,
    pub title: Label,
}

/// Where a report's rows come from.
#[derive(Clone, Debug)]
pub enum ReportSource {
    /// One row per instance of the workflow.
    Instances { workflow: Sp<String> },
    /// One row per event of the workflow's instances (of one transition, or all).
    Events { workflow: Sp<String>, transition: Option<Sp<String>> },
    /// One row per movement of the ledger.
    Movements { ledger: Sp<String> },
    /// One row per live record of the type.
    Records { record_type: Sp<String> },
}

/// What a report computes over each group of rows.
#[derive(Clone, Debug)]
pub struct MeasureDef {
    pub name: String,
    pub pos: Pos,
    pub label: Label,
    pub kind: MeasureKind,
    /// The field it aggregates (sum, avg, min, max, p50, p90, distinct).
    pub field: Option<Sp<String>>,
    /// `minutes: { from: A, to: B, calendar: C }`: instead of a field, the
    /// time between two timestamps of the row.
    pub between: Option<Between>,
    /// For `share`: the percentage of rows for which this holds.
    pub condition: Option<(Sp<String>, Condition)>,
    /// Only the group's rows for which this holds are measured (`where`).
    pub filter: Option<(Sp<String>, Condition)>,
    pub unit: Option<String>,
}

/// The time between two timestamps of a row: (from, to, calendar).
pub type Between = (Sp<String>, Sp<String>, Option<Sp<String>>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MeasureKind {
    Count,
    Sum,
    Avg,
    Min,
    Max,
    P50,
    P90,
    Distinct,
    Share,
    /// The earliest / latest timestamp of a field (first and last check-in).
    First,
    Last,
    /// The average time in hours between consecutive timestamps of a field
    /// in the group (the mean time between failures of an asset).
    MeanGap,
}

impl MeasureKind {
    pub const ALL: [(&'static str, MeasureKind); 12] = [
        ("mean_gap", MeasureKind::MeanGap),
        ("first", MeasureKind::First),
        ("last", MeasureKind::Last),
        ("count", MeasureKind::Count),
        ("sum", MeasureKind::Sum),
        ("avg", MeasureKind::Avg),
        ("min", MeasureKind::Min),
        ("max", MeasureKind::Max),
        ("p50", MeasureKind::P50),
        ("p90", MeasureKind::P90),
        ("distinct", MeasureKind::Distinct),
        ("share", MeasureKind::Share),
    ];
}

/// Time buckets a report may be grouped by.
pub const TIME_BUCKETS: [&str; 5] = ["day", "week", "month", "quarter", "year"];

/// The charts a report may be shown as.
pub const CHARTS: [&str; 5] = ["table", "bar", "line", "pie", "kpi"];

/// Starts instances of a workflow on a schedule, one per matching record.
#[derive(Clone, Debug)]
pub struct ScheduleDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub title: Label,
    pub workflow: Sp<String>,
    /// `minutes`, `hours`, `days`, `weeks` or `months`, and how many.
    pub every: (String, u32),
    /// `every: { days: FIELD }`: how many, read from this field of each
    /// record (with `anchor: completion`); `every.1` is then unused.
    pub every_field: Option<Sp<String>>,
    /// `first_due: FIELD`: the first instance for a record is due `every`
    /// after the date in this field of the record (with `anchor: completion`);
    /// without it, the first is due at once.
    pub first_due: Option<Sp<String>>,
    /// Time of day the period starts, `HH:MM` (for days, weeks, months).
    pub at: String,
    pub timezone: Sp<String>,
    /// One instance per record of this type matching `where` (or one instance when absent).
    pub record: Option<Sp<String>>,
    /// `where`: in the forms' condition language (a mapping `{field: value}`
    /// is the same as `field == value && …`), over the record's fields.
    pub filter: Option<(Sp<String>, Condition)>,
    /// Start data; text values may name fields of the record in braces: `{id}`, `{name}`.
    pub data: serde_json::Map<String, serde_json::Value>,
    /// Missed while the server was down: `once` (run the latest missed period) or `skip`.
    pub catch_up_once: bool,
    /// `true`: the next instance for a record is due `every` after the previous
    /// one finished (`anchor: completion`), instead of on fixed dates.
    pub after_completion: bool,
    /// The roles the schedule acts with when it starts instances (none by default).
    pub roles: Vec<Sp<String>>,
}

impl Model {
    /// Whether `name` can be the target of a `ref` field: a record type, or the
    /// `record` of a workflow (its instances).
    pub fn is_record_kind(&self, name: &str) -> bool {
        self.record_types.contains_key(name) || self.workflows.values().any(|w| w.record.as_deref() == Some(name))
    }
}

/// A kind of record kept by the application (assets, locations, parts, ...).
#[derive(Clone, Debug)]
pub struct RecordTypeDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub title: Label,
    /// The form that defines the fields.
    pub form: Sp<String>,
    /// How the id is made: `{code}` (from fields), `LOC-{seq:4}`, `WO-{yyyyMMdd}-{seq:4}`.
    pub key: Sp<String>,
    /// The display title, e.g. `{name} ({code})`.
    pub display: Option<Sp<String>>,
    pub search: Vec<Sp<String>>,
    pub filters: Vec<Sp<String>>,
    /// A field referring to a record of the same type, making a tree.
    pub parent: Option<Sp<String>>,
    /// Who may do what with the records (`access`, with `roles` as the
    /// shorthand for create, update and archive). Nothing granted: admins only.
    pub access: RecordAccess,
    /// Workflows a new record starts when its condition holds (e.g. a meter
    /// reading over a threshold starts a maintenance order).
    pub starts: Vec<TriggerDef>,
}

/// An operation on records that a role may be granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RecordOp {
    Read,
    Create,
    Update,
    Archive,
    Purge,
}

impl RecordOp {
    pub const ALL: [(&'static str, RecordOp); 5] =
        [("read", RecordOp::Read), ("create", RecordOp::Create), ("update", RecordOp::Update), ("archive", RecordOp::Archive), ("purge", RecordOp::Purge)];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, o)| *o == self).map_or("read", |(n, _)| n)
    }
}

/// The role that every signed-in user has, for access lists (`read: [all]`).
pub const EVERYONE: &str = "all";

/// Roles granted each operation on a record type or ledger. `admin` always may.
#[derive(Clone, Debug, Default)]
pub struct RecordAccess {
    pub grants: Vec<(RecordOp, Vec<Sp<String>>)>,
}

impl RecordAccess {
    pub fn roles(&self, op: RecordOp) -> Vec<&str> {
        self.grants.iter().filter(|(o, _)| *o == op).flat_map(|(_, r)| r.iter().map(|r| r.value.as_str())).collect()
    }

    /// Whether a user with `roles` may do `op`.
    pub fn allows<'a>(&self, op: RecordOp, mut roles: impl Iterator<Item = &'a str>) -> bool {
        let granted = self.roles(op);
        granted.contains(&EVERYONE) || roles.any(|r| r == "admin" || granted.contains(&r))
    }

    pub fn grants_nothing(&self) -> bool {
        self.grants.iter().all(|(_, r)| r.is_empty())
    }
}

#[derive(Clone, Debug)]
pub struct TriggerDef {
    pub pos: Pos,
    pub workflow: Sp<String>,
    /// The roles the trigger acts with when it starts the workflow (declared
    /// roles; none by default). It never acts with every role.
    pub roles: Vec<Sp<String>>,
    /// A Rhai condition over `record` (the new record's data); always when absent.
    pub when: Option<Sp<String>>,
    /// Start data; text may name fields of the record in braces.
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// A quantity kept per combination of dimensions, moved only by movements.
#[derive(Clone, Debug)]
pub struct LedgerDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub title: Label,
    /// Dimension name → record type, in file order (e.g. part, warehouse).
    pub dimensions: Vec<(Sp<String>, Sp<String>)>,
    /// The available quantity may never go below zero.
    pub non_negative: bool,
    /// A minimum level: per which dimension, read from which field of its record.
    pub threshold: Option<(Sp<String>, Sp<String>)>,
    /// Sent when a value falls below its threshold (`ledger.below_threshold`).
    pub notify_below_threshold: Vec<NotifyDef>,
    /// Who may post movements by hand (receipts, transfers, adjustments).
    pub roles: Vec<Sp<String>>,
    /// Who may read balances and movements (admins always may).
    pub read: Vec<Sp<String>>,
    /// The largest quantity one movement may move (`max_quantity`).
    pub max_quantity: i64,
}

/// The longest duration a definition may give in minutes (an SLA, a timer): 10 years.
pub const MAX_MINUTES: i64 = 10 * 366 * 24 * 60;

/// The largest `every` of a schedule per unit: 10 years.
pub fn every_limit(unit: &str) -> i64 {
    match unit {
        "minutes" => MAX_MINUTES,
        "hours" => 10 * 366 * 24,
        "days" => 10 * 366,
        "weeks" => 10 * 53,
        _ => 120,
    }
}

/// `max_quantity` of a ledger that does not set it.
pub const DEFAULT_MAX_QUANTITY: i64 = 1_000_000;
/// The largest `max_quantity` a ledger may set: sums of many such movements
/// stay far from the limits of 64-bit arithmetic.
pub const LIMIT_MAX_QUANTITY: i64 = 1_000_000_000_000;

impl LedgerDef {
    pub fn dimension_names(&self) -> Vec<&str> {
        self.dimensions.iter().map(|(d, _)| d.value.as_str()).collect()
    }
}

#[derive(Clone, Debug, Default)]
pub struct App {
    pub name: String,
    pub title: Label,
    pub default_language: String,
    /// The file the app settings are in.
    pub file: String,
    /// The app's time zone (IANA, e.g. `Asia/Shanghai`): schedules without
    /// their own `timezone` use it. No default in the engine.
    pub timezone: Option<Sp<String>>,
    /// The record type of the duty roster (`roster: duty_shift`): who is on
    /// duty when, by team — fields `team`, `user`, `starts_at`, `ends_at`.
    /// Dispatch rules that `pick` a person prefer those on duty.
    pub roster: Option<Sp<String>>,
    /// `teams_from: team`: the teams are also the live records of this type
    /// (the record's id is the team's name, its title the label), so an
    /// admin adds a team as a record, with no YAML edit.
    pub teams_from: Option<Sp<String>>,
}

/// The fields a duty roster's records must have, and their types.
pub const ROSTER_FIELDS: [(&str, &[FieldType]); 4] = [
    ("team", &[FieldType::String, FieldType::Enum, FieldType::Ref]),
    ("user", &[FieldType::String]),
    ("starts_at", &[FieldType::Datetime]),
    ("ends_at", &[FieldType::Datetime]),
];

#[derive(Clone, Debug)]
pub struct RoleDef {
    pub name: String,
    pub label: Label,
    pub file: String,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub struct TeamDef {
    pub name: String,
    pub label: Label,
    pub file: String,
    pub pos: Pos,
}

/// A Rhai script file under `rules/`, named by its path without `.rhai`.
#[derive(Clone, Debug)]
pub struct ScriptSource {
    pub name: String,
    pub file: String,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct WorkflowDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub title: Label,
    pub description: Label,
    pub record: Option<String>,
    pub start: StartDef,
    pub initial: Sp<String>,
    /// In file order.
    pub states: Vec<StateDef>,
    /// In file order.
    pub transitions: Vec<TransitionDef>,
    /// What running instances do when a new version of the definitions goes live.
    pub on_new_version: OnNewVersion,
    /// Sent whenever the assignment (team, assignee or vendor) changes.
    pub on_assigned: Vec<NotifyDef>,
    /// Who may read the instances (`visible_to`); `None`: the default
    /// (requester, assignee, team). Admins always may.
    pub visible_to: Option<Vec<Sp<Audience>>>,
    /// The readable number of each instance (`number: "WX-{yyyyMMdd}-{seq:4}"`):
    /// dates in the app's zone, `{seq:N}` counted per workflow (per day when
    /// the template has a date), `{field}` from the start form.
    pub number: Option<Sp<String>>,
    /// Deadlines across states (`deadlines:`), in file order.
    pub deadlines: Vec<DeadlineDef>,
}

/// A deadline of the whole process, not of one state: measured from the
/// start or a named transition, in calendar or working time, met on
/// entering one of `until`, paused while in `paused_in`, with escalation
/// steps on the way and actions at the breach.
#[derive(Clone, Debug)]
pub struct DeadlineDef {
    pub name: String,
    pub pos: Pos,
    pub label: Label,
    /// The transition that starts the clock; `None`: the start.
    pub from: Option<Sp<String>>,
    pub minutes: Amount,
    pub calendar: Option<Sp<String>>,
    /// States that meet it (default: the final states).
    pub until: Vec<Sp<String>>,
    /// States in which the clock stops.
    pub paused_in: Vec<Sp<String>>,
    /// Steps `after` minutes of the deadline's own time (pauses not counted).
    pub escalations: Vec<TimerDef>,
    /// Sent when it is breached.
    pub notify: Vec<NotifyDef>,
    /// Fields set when it is breached.
    pub set: serde_json::Map<String, Value>,
}

/// One entry of `visible_to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    /// The user who started the instance.
    Requester,
    /// The user it is assigned to.
    Assignee,
    /// Members of the team it is assigned to.
    Team,
    /// Users of the requester's department (`department`).
    Department,
    /// Everyone with this role (`role:manager`).
    Role(String),
}

impl Audience {
    pub const DEFAULT: [Audience; 3] = [Audience::Requester, Audience::Assignee, Audience::Team];

    pub fn parse(s: &str) -> Option<Audience> {
        match s {
            "requester" => Some(Audience::Requester),
            "assignee" => Some(Audience::Assignee),
            "team" => Some(Audience::Team),
            "department" => Some(Audience::Department),
            other => other.strip_prefix("role:").filter(|r| !r.is_empty()).map(|r| Audience::Role(r.to_string())),
        }
    }
}

impl WorkflowDef {
    /// The audiences of `visible_to`, or the default ones.
    pub fn audiences(&self) -> Vec<Audience> {
        match &self.visible_to {
            Some(list) => list.iter().map(|a| a.value.clone()).collect(),
            None => Audience::DEFAULT.to_vec(),
        }
    }
}

/// `on_new_version: keep | migrate`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OnNewVersion {
    /// Instances keep the version they started on (the default).
    #[default]
    Keep,
    /// Instances move to the new version when that is trivially safe (every
    /// state they are in still exists and their data fits); otherwise keep.
    Migrate,
}

impl WorkflowDef {
    pub fn state(&self, name: &str) -> Option<&StateDef> {
        self.states.iter().find(|s| s.name == name)
    }
    pub fn transition(&self, name: &str) -> Option<&TransitionDef> {
        self.transitions.iter().find(|t| t.name == name)
    }
}

/// The rules a command may run, each naming a script under `rules/`.
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    pub validate: Option<Sp<String>>,
    pub route: Option<Sp<String>>,
    pub compute: Option<Sp<String>>,
    /// Ledger movements to post with the command.
    pub post: Option<Sp<String>>,
}

impl Hooks {
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &Sp<String>)> {
        [("validate", &self.validate), ("route", &self.route), ("compute", &self.compute), ("post", &self.post)]
            .into_iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }
}

#[derive(Clone, Debug)]
pub struct StartDef {
    pub pos: Pos,
    pub form: Option<Sp<String>>,
    pub roles: Vec<Sp<String>>,
    pub hooks: Hooks,
    /// Sent when an instance starts (e.g. a scheduled inspection was created).
    pub notify: Vec<NotifyDef>,
    /// Records the start updates, in the same transaction (`update:`).
    pub update: Vec<RecordUpdateDef>,
}

/// `update: { asset: { status: under_repair, last_repair: "{today}" } }`:
/// fields set on the record a `ref` field of the instance points at, in the
/// same transaction as the command, recorded in the record's history with
/// the instance as the cause.
#[derive(Clone, Debug)]
pub struct RecordUpdateDef {
    /// The `ref` field of the instance's data.
    pub reference: Sp<String>,
    /// Field → value; a text may hold `{now}`, `{today}` or `{field}` of the instance.
    pub set: Vec<(Sp<String>, Value)>,
}

#[derive(Clone, Debug)]
pub struct StateDef {
    pub name: String,
    pub pos: Pos,
    pub label: Label,
    pub description: Label,
    pub is_final: bool,
    /// Shown in dashboards and lists, e.g. `warning`, `success`.
    pub color: Option<String>,
    /// The deadline of the state; past it the instance is overdue.
    pub sla: Option<Amount>,
    /// The calendar the SLA counts in (working time); `None`: calendar time.
    pub sla_calendar: Option<Sp<String>>,
    /// Sent when the SLA is breached.
    pub sla_notify: Vec<NotifyDef>,
    /// Timed steps after entering the state (reminders, escalations, automatic transitions).
    pub timers: Vec<TimerDef>,
}

/// A number of minutes, written as a number or as the name of a data field.
#[derive(Clone, Debug, PartialEq)]
pub enum Amount {
    Minutes(i64),
    Field(Sp<String>),
}

/// One timed step of a state: `after` minutes from entering it, do the actions.
#[derive(Clone, Debug)]
pub struct TimerDef {
    pub pos: Pos,
    pub after: Amount,
    /// Count `after` in this calendar's working time.
    pub calendar: Option<Sp<String>>,
    pub notify: Vec<NotifyDef>,
    /// Fields to set (e.g. `{ priority: urgent }`).
    pub set: serde_json::Map<String, serde_json::Value>,
    /// A transition the system takes (roles and conditions are not checked).
    pub transition: Option<Sp<String>>,
}

/// Who gets a notification, and which template.
#[derive(Clone, Debug)]
pub struct NotifyDef {
    pub pos: Pos,
    pub to: Vec<Sp<Recipient>>,
    pub template: Sp<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Recipient {
    Requester,
    Assignee,
    Team,
    Role(String),
    User(String),
    /// A data field holding a user id.
    Field(String),
}

impl Recipient {
    pub fn parse(s: &str) -> Option<Recipient> {
        Some(match s {
            "requester" => Recipient::Requester,
            "assignee" => Recipient::Assignee,
            "team" => Recipient::Team,
            _ => match s.split_once(':') {
                Some(("role", r)) if !r.is_empty() => Recipient::Role(r.to_string()),
                Some(("user", u)) if !u.is_empty() => Recipient::User(u.to_string()),
                Some(("field", f)) if !f.is_empty() => Recipient::Field(f.to_string()),
                _ => return None,
            },
        })
    }
}

/// A notification template: handlebars, strict (an unknown variable is an error).
#[derive(Clone, Debug)]
pub struct TemplateDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub title: Sp<String>,
    pub body: Sp<String>,
    /// `inbox` and/or webhook names; default: the inbox.
    pub channels: Vec<Sp<String>>,
}

/// An outgoing webhook: a URL and a templated JSON body (WeCom, DingTalk, SMS gateways...).
#[derive(Clone, Debug)]
pub struct WebhookDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    /// May name environment variables: `${WECOM_ROBOT_URL}`.
    pub url: Sp<String>,
    /// A handlebars template of the request body; sees what templates see plus
    /// `title` and `body` (the rendered notification). `{{json x}}` writes x as JSON.
    pub body: Sp<String>,
    pub content_type: String,
}

/// Working time: hours of the day, working weekdays, holidays and make-up days.
#[derive(Clone, Debug)]
pub struct CalendarDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub timezone: Sp<String>,
    /// `("08:00", "12:00")` pairs.
    pub hours: Vec<(String, String)>,
    /// 1 = Monday ... 7 = Sunday.
    pub weekdays: Vec<u8>,
    pub holidays: Vec<String>,
    pub workdays: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Assign {
    /// The actor becomes the assignee.
    Actor,
    /// The assignee is cleared (the team stays).
    Nobody,
}

#[derive(Clone, Debug)]
pub struct TransitionDef {
    pub name: String,
    pub pos: Pos,
    pub label: Label,
    pub from: Vec<Sp<String>>,
    /// `None`: the instance stays in its state (e.g. a check-in).
    pub to: Option<Sp<String>>,
    pub roles: Vec<Sp<String>>,
    pub teams: Vec<Sp<String>>,
    /// A Rhai expression that must be true (it sees `record`, `input`, `actor`,
    /// `now`, `lookup` and `find`).
    pub when: Option<Sp<String>>,
    /// What the user is told when `when` is false (`when: {condition, message}`);
    /// never the condition's source.
    pub when_message: Label,
    pub form: Option<Sp<String>>,
    pub hooks: Hooks,
    pub assign: Option<Assign>,
    pub notify: Vec<NotifyDef>,
    /// Records the transition updates, in the same transaction (`update:`).
    pub update: Vec<RecordUpdateDef>,
    /// Instances of other workflows the transition starts, in the same
    /// transaction, linked both ways (`starts:`).
    pub starts: Vec<LinkedStartDef>,
}

/// `starts: [{workflow, for_each, where, roles, data}]` on a transition: one
/// instance of `workflow` (or one per item of the group field `for_each`
/// matching `where`), started with the same transaction as the transition,
/// its `parent` the instance, listed among the instance's `children`.
#[derive(Clone, Debug)]
pub struct LinkedStartDef {
    pub pos: Pos,
    pub workflow: Sp<String>,
    /// A `group` field of the instance: one start per item.
    pub for_each: Option<Sp<String>>,
    /// In the forms' condition language, over the item's fields (or the
    /// instance's data without `for_each`).
    pub condition: Option<(Sp<String>, Condition)>,
    /// The roles the start acts with (default: the actor's own).
    pub roles: Vec<Sp<String>>,
    /// Start data; a text may name fields of the item or the instance in braces.
    pub data: serde_json::Map<String, Value>,
}

#[derive(Clone, Debug)]
pub struct FormDef {
    pub name: String,
    pub file: String,
    pub pos: Pos,
    pub title: Label,
    pub fields: Vec<FieldDef>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldType {
    String,
    Text,
    Integer,
    Number,
    Boolean,
    Enum,
    Date,
    Datetime,
    Ref,
    Files,
    Location,
    Signature,
    Group,
}

impl FieldType {
    pub const ALL: &[(&str, FieldType)] = &[
        ("string", FieldType::String),
        ("text", FieldType::Text),
        ("integer", FieldType::Integer),
        ("number", FieldType::Number),
        ("boolean", FieldType::Boolean),
        ("enum", FieldType::Enum),
        ("date", FieldType::Date),
        ("datetime", FieldType::Datetime),
        ("ref", FieldType::Ref),
        ("files", FieldType::Files),
        ("location", FieldType::Location),
        ("signature", FieldType::Signature),
        ("group", FieldType::Group),
    ];

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, t)| *t == self).map_or("string", |(n, _)| n)
    }

    /// Keys that only some types accept.
    pub fn specific_keys(self) -> &'static [&'static str] {
        match self {
            FieldType::String | FieldType::Text => &["min_length", "max_length", "pattern"],
            FieldType::Integer | FieldType::Number => &["min", "max", "unit"],
            FieldType::Enum => &["options", "multiple"],
            FieldType::Date | FieldType::Datetime => &[],
            FieldType::Ref => &["record", "where"],
            FieldType::Files => &["accept", "max", "max_size"],
            FieldType::Group => &["fields", "min", "max"],
            FieldType::Boolean | FieldType::Location | FieldType::Signature => &[],
        }
    }
}

#[derive(Clone, Debug)]
pub struct EnumOption {
    pub value: String,
    pub label: Label,
    pub pos: Pos,
}

#[derive(Clone, Debug)]
pub struct FieldDef {
    pub name: String,
    pub pos: Pos,
    pub field_type: FieldType,
    pub label: Label,
    pub help: Label,
    pub placeholder: Label,
    pub widget: Option<String>,
    pub required: bool,
    pub default: Option<Sp<Value>>,
    pub visible_when: Option<(Sp<String>, Condition)>,
    pub required_when: Option<(Sp<String>, Condition)>,
    /// `from: asset.category`: the value is taken from field `category` of the
    /// record that this form's `ref` field `asset` points at.
    pub from: Option<Sp<String>>,
    /// With `from`: whether the user may change the value (default: locked).
    pub editable: bool,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub pattern: Option<Sp<String>>,
    /// For numbers: the value; for files and groups: the count of items.
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub unit: Option<String>,
    pub options: Vec<EnumOption>,
    pub multiple: bool,
    pub record: Option<Sp<String>>,
    /// For a `ref`: only records for which this condition holds may be
    /// chosen (and are offered), e.g. `status != 'retired'`.
    pub filter: Option<(Sp<String>, Condition)>,
    pub accept: Option<String>,
    pub max_size: Option<u64>,
    pub fields: Vec<FieldDef>,
}

impl LedgerDef {
    /// Whether someone with `roles` may read the balances and movements
    /// (`access.read` or `roles`; admins always).
    pub fn readable_by<'a>(&self, roles: impl IntoIterator<Item = &'a str>) -> bool {
        let granted: Vec<&str> = self.read.iter().chain(&self.roles).map(|r| r.value.as_str()).collect();
        granted.contains(&EVERYONE) || roles.into_iter().any(|r| r == "admin" || granted.contains(&r))
    }
}

impl FieldDef {
    /// A field with only a name and a type (every other key at its default).
    pub fn new(name: &str, field_type: FieldType) -> FieldDef {
        FieldDef {
            name: name.to_string(),
            pos: Pos::default(),
            field_type,
            label: Label::default(),
            help: Label::default(),
            placeholder: Label::default(),
            widget: None,
            required: false,
            default: None,
            visible_when: None,
            required_when: None,
            from: None,
            editable: false,
            min_length: None,
            max_length: None,
            pattern: None,
            min: None,
            max: None,
            unit: None,
            options: Vec::new(),
            multiple: false,
            record: None,
            filter: None,
            accept: None,
            max_size: None,
            fields: Vec::new(),
        }
    }
}

impl serde::Serialize for Recipient {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = match self {
            Recipient::Requester => "requester".to_string(),
            Recipient::Assignee => "assignee".to_string(),
            Recipient::Team => "team".to_string(),
            Recipient::Role(r) => format!("role:{r}"),
            Recipient::User(u) => format!("user:{u}"),
            Recipient::Field(f) => format!("field:{f}"),
        };
        s.serialize_str(&text)
    }
}

impl<'de> serde::Deserialize<'de> for Recipient {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        Recipient::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown recipient `{s}`")))
    }
}
