//! The keys of every kind of definition, declared once.
//!
//! The reader ([`crate::load`]) opens each mapping with its declaration and,
//! in debug builds, asserts that it reads exactly the declared keys — no
//! more (a key read but not declared) and no fewer (a declared key nothing
//! reads). The JSON Schema ([`crate::schema`]) is generated from the same
//! declarations, so the editor's completion and the loader cannot drift.

/// What a key holds.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// Any text (numbers are taken as written).
    Text,
    /// A lowercase `snake_case` name.
    Name,
    /// A name, or a list of names.
    Names,
    /// A list of exactly two names.
    NamePair,
    Int,
    Number,
    Bool,
    /// A text, or a mapping of language to text (`{zh-CN: …, en: …}`).
    Label,
    /// A condition, e.g. `priority == 'urgent'`.
    Condition,
    /// A number of minutes, or the name of a data field holding it.
    Minutes,
    /// One of these words.
    Word(&'static [&'static str]),
    /// One or a list of these words.
    Words(&'static [&'static str]),
    /// A name of something in the bundle.
    Ref(Refers),
    /// A name, or a list of names, of something in the bundle.
    Refs(Refers),
    /// A mapping with the declared keys.
    Obj(&'static Decl),
    /// One mapping with the declared keys, or a list of them.
    Objs(&'static Decl),
    /// A list of mappings with the declared keys.
    List(&'static Decl),
    /// A mapping from names to mappings with the declared keys.
    Named(&'static Decl),
    /// A mapping from names to values of any kind (data to set, fields of a record).
    Data,
    /// Either of two shapes (a text or a mapping, …).
    Either(&'static Shape, &'static Shape),
    /// A list of texts.
    Texts,
    /// A list of values of one shape.
    Items(&'static Shape),
    /// A mapping from names to values of one shape.
    MapOf(&'static Shape),
    /// Anything (a default value).
    Any,
    /// Nothing written (`done:` with no settings).
    Null,
    /// One recipient or a list: requester, assignee, team, role:NAME, user:ID, field:NAME.
    Recipients,
    /// One entry of `visible_to` or a list.
    Audiences,
}

/// Names the bundle declares, offered by the editor where a key refers to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refers {
    /// A declared role.
    Role,
    /// A declared role, or `requester` / `assignee`.
    ActorRole,
    /// A declared role, or `all`.
    RoleOrAll,
    Team,
    Form,
    /// A record type.
    Record,
    /// A record type, or the `record` kind of a workflow (`work_order`).
    RecordKind,
    Workflow,
    Template,
    Calendar,
    Ledger,
    Report,
    /// A script under `rules/` (without `.rhai`).
    Rule,
    /// `inbox`, `email` or a webhook.
    Channel,
}

/// One key of a mapping.
#[derive(Clone, Copy, Debug)]
pub struct Key {
    pub name: &'static str,
    pub shape: Shape,
    pub required: bool,
    /// What it means, in English and in Chinese.
    pub en: &'static str,
    pub zh: &'static str,
}

/// The keys of one kind of mapping.
#[derive(Debug)]
pub struct Decl {
    /// The identifier of the kind (`workflow`, `transition`, …).
    pub id: &'static str,
    pub en: &'static str,
    pub zh: &'static str,
    pub keys: &'static [Key],
    /// Shorter ways to write the same (a role as just its label; a state with nothing).
    pub or: &'static [Shape],
}

impl Decl {
    pub fn key(&self, name: &str) -> Option<&'static Key> {
        self.keys.iter().find(|k| k.name == name)
    }
}

const fn k(name: &'static str, shape: Shape, en: &'static str, zh: &'static str) -> Key {
    Key { name, shape, required: false, en, zh }
}

const fn req(name: &'static str, shape: Shape, en: &'static str, zh: &'static str) -> Key {
    Key { name, shape, required: true, en, zh }
}

use Refers as R;
use Shape as S;

pub const FIELD_TYPES: &[&str] =
    &["string", "text", "integer", "number", "boolean", "enum", "date", "datetime", "ref", "files", "location", "signature", "group"];
pub const WEEKDAYS: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
pub const MEASURES: &[&str] = &["mean_gap", "first", "last", "count", "sum", "avg", "min", "max", "p50", "p90", "distinct", "share"];

const LABEL_KEYS: [Key; 2] =
    [k("label", S::Label, "The name shown to users.", "显示给用户的名称。"), k("description", S::Label, "A longer explanation.", "较长的说明。")];

// ---- settings: app, roles, teams -------------------------------------------

pub static APP: Decl = Decl {
    id: "app_settings",
    en: "The application's settings.",
    zh: "应用设置。",
    keys: &[
        k("name", S::Name, "The application's name.", "应用名称（英文标识）。"),
        k("title", S::Label, "The title shown on every page.", "页面上显示的标题。"),
        k("default_language", S::Word(crate::label::LANGUAGES), "The language of pages and messages by default.", "默认语言。"),
        k("timezone", S::Text, "An IANA time zone, e.g. Asia/Shanghai.", "时区，例如 Asia/Shanghai。"),
        k("roster", S::Ref(R::Record), "The record type of the duty roster.", "排班表的记录类型。"),
        k("teams_from", S::Ref(R::Record), "The record type whose records are the teams.", "班组所用的记录类型。"),
    ],
    or: &[],
};

pub static ROLE: Decl = Decl { id: "role", en: "A role or a team.", zh: "角色或班组。", keys: &LABEL_KEYS, or: &[S::Label, S::Null] };

pub static SETTINGS: Decl = Decl {
    id: "app",
    en: "The settings file: the app, its roles and teams.",
    zh: "设置文件：应用、角色与班组。",
    keys: &[
        k("app", S::Obj(&APP), "The application's settings.", "应用设置。"),
        k("roles", S::Named(&ROLE), "The roles: `name: label` or `name: {label, description}`.", "角色：`名称: 显示名`。"),
        k("teams", S::Named(&ROLE), "The teams declared in YAML (or use `app.teams_from`).", "在 YAML 中声明的班组（或使用 `app.teams_from`）。"),
    ],
    or: &[],
};

// ---- notifications ----------------------------------------------------------

pub static NOTIFY: Decl = Decl {
    id: "notify",
    en: "A notification to send.",
    zh: "要发送的通知。",
    keys: &[
        req(
            "to",
            S::Recipients,
            "Who: requester, assignee, team, role:NAME, user:ID, field:NAME or field:REF.NAME.",
            "接收人：requester、assignee、team、role:角色、user:用户、field:字段。",
        ),
        req("template", S::Ref(R::Template), "The template of the message.", "消息模板。"),
    ],
    or: &[],
};

pub static TEMPLATE: Decl = Decl {
    id: "template",
    en: "A message template.",
    zh: "消息模板。",
    keys: &[
        req("template", S::Name, "The template's name.", "模板名称。"),
        req("title", S::Text, "The title; may use {{field}} variables.", "标题，可使用 {{字段}} 变量。"),
        req("body", S::Text, "The text; may use {{field}} variables.", "正文，可使用 {{字段}} 变量。"),
        k("channels", S::Refs(R::Channel), "Where it goes: inbox, email or a webhook.", "发送渠道：站内信、邮件或 webhook。"),
    ],
    or: &[],
};

pub static WEBHOOK: Decl = Decl {
    id: "webhook",
    en: "A channel that posts to a URL (SMS gateway, WeCom, DingTalk…).",
    zh: "向某个地址发送的渠道（短信网关、企业微信、钉钉等）。",
    keys: &[
        req("webhook", S::Name, "The channel's name, used in `channels:`.", "渠道名称，用于 `channels:`。"),
        req("url", S::Text, "http(s) URL, or ${VARIABLE} from the environment.", "http(s) 地址或环境变量 ${变量}。"),
        req("body", S::Text, "The body sent; may use {{variables}}.", "发送的内容，可使用 {{变量}}。"),
        k("content_type", S::Text, "The Content-Type (default application/json).", "内容类型（默认 application/json）。"),
    ],
    or: &[],
};

// ---- workflows ------------------------------------------------------------------

const HOOK_KEYS: [Key; 4] = [
    k("validate", S::Ref(R::Rule), "A script that checks the input.", "校验输入的脚本。"),
    k("route", S::Ref(R::Rule), "A script that chooses the team or the person.", "选择班组或人员的派单脚本。"),
    k("compute", S::Ref(R::Rule), "A script that computes fields.", "计算字段的脚本。"),
    k("post", S::Ref(R::Rule), "A script run after the step (notifications, effects).", "步骤完成后运行的脚本。"),
];

pub static START: Decl = Decl {
    id: "start",
    en: "How an instance starts.",
    zh: "流程如何发起。",
    keys: &[
        k("form", S::Ref(R::Form), "The start form.", "发起表单。"),
        k("roles", S::Refs(R::ActorRole), "Who may start it.", "可发起的角色。"),
        HOOK_KEYS[0],
        HOOK_KEYS[1],
        HOOK_KEYS[2],
        HOOK_KEYS[3],
        k("notify", S::Objs(&NOTIFY), "Notifications when it starts.", "发起时的通知。"),
        k("update", S::MapOf(&S::Data), "Fields of referenced records to set: `{REF: {FIELD: value}}`.", "更新所引用记录的字段。"),
    ],
    or: &[],
};

pub static TIMER: Decl = Decl {
    id: "timer",
    en: "A timed step: after some minutes, notify, set fields or take a transition.",
    zh: "定时步骤：若干分钟后通知、设置字段或执行流转。",
    keys: &[
        k("after", S::Minutes, "Minutes (or a field holding them).", "分钟数（或保存分钟数的字段）。"),
        k("minutes", S::Minutes, "Same as `after`.", "同 `after`。"),
        k("notify", S::Objs(&NOTIFY), "Notifications to send.", "要发送的通知。"),
        k("set", S::Data, "Fields to set.", "要设置的字段。"),
        k("transition", S::Name, "A transition to take.", "要执行的流转。"),
        k("calendar", S::Ref(R::Calendar), "Count only working time of this calendar.", "只计算该日历的工作时间。"),
    ],
    or: &[],
};

pub static SLA: Decl = Decl {
    id: "sla",
    en: "The time allowed in a state.",
    zh: "状态的时限。",
    keys: &[
        req("minutes", S::Minutes, "Minutes allowed (or a field holding them).", "允许的分钟数（或保存分钟数的字段）。"),
        k("calendar", S::Ref(R::Calendar), "Count only working time of this calendar.", "只计算该日历的工作时间。"),
        k("notify", S::Objs(&NOTIFY), "Who hears of a breach.", "超时通知。"),
    ],
    or: &[],
};

pub static STATE: Decl = Decl {
    id: "state",
    en: "A state of the workflow.",
    zh: "流程的一个状态。",
    keys: &[
        LABEL_KEYS[0],
        LABEL_KEYS[1],
        k("final", S::Bool, "The instance ends here.", "终止状态。"),
        k("color", S::Text, "A colour for badges and charts.", "徽标与图表的颜色。"),
        k("sla", S::Obj(&SLA), "The time allowed in this state.", "该状态的时限。"),
        k("escalations", S::List(&TIMER), "Timed steps while in this state.", "该状态下的定时升级步骤。"),
        k("after", S::Obj(&TIMER), "A transition taken after some time.", "一段时间后自动执行的流转。"),
    ],
    or: &[S::Null],
};

pub static WHEN: Decl = Decl {
    id: "when",
    en: "A guard with a message.",
    zh: "带提示的条件。",
    keys: &[
        req("condition", S::Condition, "The condition that must hold.", "必须满足的条件。"),
        k("message", S::Label, "What users are told when it does not hold.", "不满足时给用户的提示。"),
    ],
    or: &[],
};

pub static LINKED_START: Decl = Decl {
    id: "linked_start",
    en: "Instances of another workflow started by a transition.",
    zh: "流转时发起的其他流程。",
    keys: &[
        req("workflow", S::Ref(R::Workflow), "The workflow to start.", "要发起的流程。"),
        k("for_each", S::Name, "A `group` field: one instance per item.", "分组字段：每一项发起一个。"),
        k("where", S::Condition, "Only items for which this holds.", "只对满足条件的项。"),
        k("roles", S::Refs(R::Role), "The roles to start it with.", "以哪些角色发起。"),
        k("data", S::Data, "The start form's fields; `{field}` takes a value.", "发起表单的字段；`{字段}` 取值。"),
    ],
    or: &[],
};

pub static TRANSITION: Decl = Decl {
    id: "transition",
    en: "A step from one state to another.",
    zh: "从一个状态到另一个状态的流转。",
    keys: &[
        req("name", S::Name, "The transition's name.", "流转名称。"),
        k("label", S::Label, "The button's text.", "按钮文字。"),
        req("from", S::Names, "The state(s) it leaves.", "起始状态（可多个）。"),
        k("to", S::Name, "The state it enters (none: stays).", "目标状态（不写则不变）。"),
        k("roles", S::Refs(R::ActorRole), "Who may take it.", "可执行的角色。"),
        k("teams", S::Refs(R::Team), "Only members of these teams.", "只限这些班组的成员。"),
        k("when", S::Either(&S::Condition, &S::Obj(&WHEN)), "A condition, or `{condition, message}`.", "条件，或 `{condition, message}`。"),
        k("form", S::Ref(R::Form), "The form filled on this step.", "此步骤填写的表单。"),
        k("update", S::MapOf(&S::Data), "Fields of referenced records to set.", "更新所引用记录的字段。"),
        k("starts", S::Objs(&LINKED_START), "Instances of other workflows to start.", "要发起的其他流程。"),
        HOOK_KEYS[0],
        HOOK_KEYS[1],
        HOOK_KEYS[2],
        HOOK_KEYS[3],
        k(
            "assign",
            S::Word(&["actor", "nobody"]),
            "`actor`: who acts becomes the assignee; `nobody`: unassign.",
            "`actor`：执行人成为处理人；`nobody`：取消指派。",
        ),
        k("notify", S::Objs(&NOTIFY), "Notifications to send.", "要发送的通知。"),
    ],
    or: &[],
};

pub static DEADLINE: Decl = Decl {
    id: "deadline",
    en: "A deadline over several states.",
    zh: "跨多个状态的时限。",
    keys: &[
        LABEL_KEYS[0],
        k("from", S::Name, "`start` or the transition that starts the clock.", "`start` 或开始计时的流转。"),
        req("minutes", S::Minutes, "Minutes allowed (or a field holding them).", "允许的分钟数（或字段）。"),
        k("calendar", S::Ref(R::Calendar), "Count only working time.", "只计算工作时间。"),
        k("until", S::Names, "States in which it is met.", "视为达成的状态。"),
        k("paused_in", S::Names, "States in which the clock stops.", "暂停计时的状态。"),
        k("escalations", S::List(&TIMER), "Timed steps before the deadline.", "到期前的升级步骤。"),
        k("notify", S::Objs(&NOTIFY), "Who hears of a breach.", "超时通知。"),
        k("set", S::Data, "Fields set on a breach.", "超时时设置的字段。"),
    ],
    or: &[],
};

pub static WORKFLOW: Decl = Decl {
    id: "workflow",
    en: "A workflow: states, transitions, forms and rules.",
    zh: "流程：状态、流转、表单与规则。",
    keys: &[
        req("workflow", S::Name, "The workflow's name.", "流程名称。"),
        k("title", S::Label, "The title shown to users.", "显示标题。"),
        LABEL_KEYS[1],
        k(
            "record",
            S::Name,
            "The kind of record an instance is (e.g. `work_order`): `ref` fields with `record: work_order` point at its instances.",
            "实例的记录种类（如 `work_order`）：引用字段 `record: work_order` 指向本流程的实例。",
        ),
        k("number", S::Text, "Readable numbers, e.g. `BX-{date}-{seq:4}`.", "单号格式，例如 `BX-{date}-{seq:4}`。"),
        req("start", S::Obj(&START), "How an instance starts.", "如何发起。"),
        req("initial", S::Name, "The first state.", "初始状态。"),
        req("states", S::Named(&STATE), "The states.", "状态。"),
        k("transitions", S::List(&TRANSITION), "The transitions.", "流转。"),
        k("on_assigned", S::Objs(&NOTIFY), "Notifications when the assignee changes.", "指派变化时的通知。"),
        k("deadlines", S::Named(&DEADLINE), "Deadlines over several states.", "跨状态时限。"),
        k("on_new_version", S::Word(&["keep", "migrate"]), "Running instances keep their version, or migrate.", "运行中的实例保持原版本或迁移。"),
        k(
            "visible_to",
            S::Audiences,
            "Who may read the instances: requester, assignee, team, department, role:NAME.",
            "谁可以查看：requester、assignee、team、department、role:角色。",
        ),
    ],
    or: &[],
};

// ---- forms --------------------------------------------------------------------------

pub static OPTION: Decl = Decl {
    id: "option",
    en: "An option of an enum field.",
    zh: "枚举字段的一个选项。",
    keys: &[req("value", S::Text, "The stored value.", "存储的值。"), k("label", S::Label, "The text shown.", "显示文字。")],
    or: &[],
};

static OPTION_ITEM: Shape = S::Either(&S::Text, &S::Obj(&OPTION));

pub static FIELD: Decl = Decl {
    id: "field",
    en: "A form field.",
    zh: "表单字段。",
    keys: &[
        req("type", S::Word(FIELD_TYPES), "The field's type.", "字段类型。"),
        k("label", S::Label, "The label shown.", "显示名称。"),
        k("help", S::Label, "A help text under the field.", "字段下方的帮助文字。"),
        k("placeholder", S::Label, "A hint inside an empty field.", "空白时的提示。"),
        k("widget", S::Text, "How it is drawn (e.g. textarea, radio, camera).", "控件（如 textarea、radio、camera）。"),
        k("required", S::Bool, "Must be filled.", "必填。"),
        k("default", S::Any, "The value when none is given.", "默认值。"),
        k("visible_when", S::Condition, "Shown only when this holds.", "满足条件时才显示。"),
        k("required_when", S::Condition, "Required only when this holds.", "满足条件时必填。"),
        k("from", S::Text, "Filled from a referenced record: `REF.FIELD`.", "从所引用的记录填入：`引用.字段`。"),
        k("editable", S::Bool, "A filled-in value may be changed.", "填入的值可修改。"),
        k("min_length", S::Int, "Fewest characters (string, text).", "最少字符数。"),
        k("max_length", S::Int, "Most characters (string, text).", "最多字符数。"),
        k("pattern", S::Text, "A regular expression the text must match.", "正则表达式。"),
        k("min", S::Number, "Smallest value (numbers); fewest items (files, group).", "最小值；最少项数。"),
        k("max", S::Number, "Largest value (numbers); most items (files, group).", "最大值；最多项数。"),
        k("unit", S::Text, "The unit shown after a number.", "数值单位。"),
        k("options", S::Items(&OPTION_ITEM), "The options of an enum: values or `{value, label}`.", "枚举选项：值或 `{value, label}`。"),
        k("multiple", S::Bool, "Several options may be chosen.", "可多选。"),
        k(
            "record",
            S::Ref(R::RecordKind),
            "The record type (or a workflow's record kind) a ref field points at.",
            "引用字段指向的记录类型（或流程的记录种类）。",
        ),
        k("where", S::Condition, "Only records for which this holds are offered.", "只提供满足条件的记录。"),
        k("accept", S::Text, "Accepted file types, e.g. image/*.", "可接受的文件类型，如 image/*。"),
        k("max_size", S::Int, "Largest file, in bytes.", "单个文件最大字节数。"),
        k("fields", S::Named(&FIELD), "The fields of one item of a group.", "分组中每一项的字段。"),
    ],
    or: &[],
};

pub static FORM: Decl = Decl {
    id: "form",
    en: "A form: the fields users fill.",
    zh: "表单：用户填写的字段。",
    keys: &[
        req("form", S::Name, "The form's name.", "表单名称。"),
        k("title", S::Label, "The title shown.", "显示标题。"),
        req("fields", S::Named(&FIELD), "The fields, in order.", "字段（按顺序）。"),
    ],
    or: &[],
};

// ---- records and ledgers --------------------------------------------------------------

pub static RECORD_ACCESS: Decl = Decl {
    id: "record_access",
    en: "Who may do what with the records.",
    zh: "记录的操作权限。",
    keys: &[
        k("read", S::Refs(R::RoleOrAll), "Who may read.", "可查看。"),
        k("create", S::Refs(R::RoleOrAll), "Who may create.", "可新建。"),
        k("update", S::Refs(R::RoleOrAll), "Who may change.", "可修改。"),
        k("archive", S::Refs(R::RoleOrAll), "Who may archive and restore.", "可归档与恢复。"),
        k("purge", S::Refs(R::RoleOrAll), "Who may erase for good.", "可彻底删除。"),
    ],
    or: &[],
};

pub static TRIGGER: Decl = Decl {
    id: "trigger",
    en: "A workflow started when a record is created or changed.",
    zh: "记录新建或修改时发起的流程。",
    keys: &[
        req("workflow", S::Ref(R::Workflow), "The workflow to start.", "要发起的流程。"),
        k("when", S::Condition, "Only when this holds (a Rhai condition on `record`).", "满足条件时（Rhai 条件）。"),
        k("roles", S::Refs(R::Role), "The roles to start it with.", "以哪些角色发起。"),
        k("data", S::Data, "The start form's fields.", "发起表单的字段。"),
    ],
    or: &[],
};

pub static RECORD: Decl = Decl {
    id: "record",
    en: "A record type: master data such as assets, departments, parts.",
    zh: "记录类型：资产、科室、备件等主数据。",
    keys: &[
        req("record", S::Name, "The record type's name.", "记录类型名称。"),
        k("title", S::Label, "The title shown.", "显示标题。"),
        req("form", S::Ref(R::Form), "The form of one record.", "记录的表单。"),
        req("key", S::Text, "The field that is the record's id.", "作为编号的字段。"),
        k("display", S::Text, "How a record is named, e.g. `{name} ({code})`.", "记录的显示方式。"),
        k("search", S::Names, "Fields searched by the picker.", "可搜索的字段。"),
        k("filters", S::Names, "Fields offered as list filters.", "列表筛选字段。"),
        k("parent", S::Name, "A ref field to the parent (a tree).", "指向上级的引用字段（树形）。"),
        k("roles", S::Refs(R::RoleOrAll), "Who may create, change and archive.", "可新建、修改、归档的角色。"),
        k("access", S::Obj(&RECORD_ACCESS), "Who may do what, per operation.", "按操作设置的权限。"),
        k("starts", S::Objs(&TRIGGER), "Workflows started by record changes.", "记录变化时发起的流程。"),
    ],
    or: &[],
};

pub static DIMENSION: Decl = Decl {
    id: "dimension",
    en: "A dimension of a ledger.",
    zh: "台账的维度。",
    keys: &[req("record", S::Ref(R::Record), "The record type of the dimension.", "维度对应的记录类型。")],
    or: &[],
};

pub static THRESHOLD: Decl = Decl {
    id: "threshold",
    en: "The minimum below which keepers are told.",
    zh: "低于该值时提醒库管。",
    keys: &[
        req("dimension", S::Name, "The dimension whose record holds the minimum.", "保存最低值的维度。"),
        req("field", S::Name, "The field holding the minimum.", "保存最低值的字段。"),
    ],
    or: &[],
};

pub static LEDGER_ACCESS: Decl = Decl {
    id: "ledger_access",
    en: "Who may read and post movements.",
    zh: "台账的查看与记账权限。",
    keys: &[k("read", S::Refs(R::RoleOrAll), "Who may read.", "可查看。"), k("post", S::Refs(R::RoleOrAll), "Who may post.", "可记账。")],
    or: &[],
};

pub static LEDGER: Decl = Decl {
    id: "ledger",
    en: "A ledger: quantities moved between dimensions (stock by part and warehouse).",
    zh: "台账：按维度记录数量变动（按备件与仓库的库存）。",
    keys: &[
        req("ledger", S::Name, "The ledger's name.", "台账名称。"),
        k("title", S::Label, "The title shown.", "显示标题。"),
        req("dimensions", S::Named(&DIMENSION), "The dimensions of a balance.", "余额的维度。"),
        k("non_negative", S::Bool, "A balance may not fall below zero (default true).", "余额不可为负（默认 true）。"),
        k("threshold", S::Obj(&THRESHOLD), "Where the minimum of a balance is kept.", "最低库存所在。"),
        k("roles", S::Refs(R::RoleOrAll), "Who may post.", "可记账的角色。"),
        k("access", S::Obj(&LEDGER_ACCESS), "Who may read and post.", "查看与记账权限。"),
        k("notify_below_threshold", S::Objs(&NOTIFY), "Who hears when a balance falls below its minimum.", "低于最低值时的通知。"),
        k("max_quantity", S::Int, "The largest quantity one movement may move.", "单次变动的最大数量。"),
    ],
    or: &[],
};

// ---- calendars and schedules ----------------------------------------------------------

pub static CALENDAR: Decl = Decl {
    id: "calendar",
    en: "A working calendar.",
    zh: "工作日历。",
    keys: &[
        req("calendar", S::Name, "The calendar's name.", "日历名称。"),
        req("timezone", S::Text, "An IANA time zone.", "时区。"),
        req("hours", S::Either(&S::Texts, &S::Text), "Working time ranges, e.g. 08:00-12:00.", "工作时间段，例如 08:00-12:00。"),
        k("weekdays", S::Words(WEEKDAYS), "Working days of the week.", "每周工作日。"),
        k("holidays", S::Texts, "Dates that are not working days.", "节假日。"),
        k("workdays", S::Texts, "Weekend dates that are working days.", "调休上班日。"),
    ],
    or: &[],
};

static EVERY_AMOUNT: Shape = S::Either(&S::Int, &S::Name);

pub static EVERY: Decl = Decl {
    id: "every",
    en: "How often: one of minutes, hours, days, weeks, months (a number, or a field of the record).",
    zh: "周期：minutes、hours、days、weeks、months 之一（数字或记录字段）。",
    keys: &[
        k("minutes", EVERY_AMOUNT, "Every so many minutes.", "每隔若干分钟。"),
        k("hours", EVERY_AMOUNT, "Every so many hours.", "每隔若干小时。"),
        k("days", EVERY_AMOUNT, "Every so many days.", "每隔若干天。"),
        k("weeks", EVERY_AMOUNT, "Every so many weeks.", "每隔若干周。"),
        k("months", EVERY_AMOUNT, "Every so many months.", "每隔若干月。"),
    ],
    or: &[],
};

pub static FOR_EACH: Decl = Decl {
    id: "for_each",
    en: "One instance per record.",
    zh: "每条记录发起一个。",
    keys: &[
        req("record", S::Ref(R::Record), "The record type.", "记录类型。"),
        k("where", S::Either(&S::Condition, &S::Data), "A condition, or `{field: value}`.", "条件，或 `{字段: 值}`。"),
    ],
    or: &[],
};

pub static SCHEDULE: Decl = Decl {
    id: "schedule",
    en: "A schedule: starts instances periodically (inspections, preventive maintenance).",
    zh: "计划：定期发起流程（巡检、预防性维护）。",
    keys: &[
        req("schedule", S::Name, "The schedule's name.", "计划名称。"),
        k("title", S::Label, "The title shown.", "显示标题。"),
        req("workflow", S::Ref(R::Workflow), "The workflow to start.", "要发起的流程。"),
        req("every", S::Obj(&EVERY), "How often.", "周期。"),
        k("at", S::Text, "The time of day, e.g. 08:00.", "每天的时刻，例如 08:00。"),
        k("timezone", S::Text, "The time zone (default: the app's).", "时区（默认应用时区）。"),
        k("for_each", S::Obj(&FOR_EACH), "One instance per matching record.", "每条匹配记录发起一个。"),
        k("first_due", S::Name, "A date field of the record: when the first one is due.", "记录中的日期字段：首次到期日。"),
        k("data", S::Data, "The start form's fields.", "发起表单的字段。"),
        k("catch_up", S::Word(&["once", "skip"]), "After downtime: run the latest missed period once, or skip.", "停机后：补做一次或跳过。"),
        k("anchor", S::Word(&["fixed", "completion"]), "Fixed dates, or after the last one finished.", "固定日期，或上次完成后计算。"),
        k("roles", S::Refs(R::Role), "The roles to start with.", "以哪些角色发起。"),
    ],
    or: &[],
};

// ---- reports and dashboards ---------------------------------------------------------

pub static SOURCE: Decl = Decl {
    id: "source",
    en: "What a report counts.",
    zh: "报表的数据来源。",
    keys: &[
        k("workflow", S::Ref(R::Workflow), "A workflow's instances.", "流程实例。"),
        k("events", S::Name, "With `workflow`: its events (a transition, or `all`).", "与 `workflow` 一起：其事件（某个流转或 all）。"),
        k("ledger", S::Ref(R::Ledger), "A ledger's movements.", "台账变动。"),
        k("records", S::Ref(R::Record), "A record type's records.", "记录。"),
    ],
    or: &[],
};

pub static DURATION: Decl = Decl {
    id: "duration",
    en: "The minutes between two timestamps.",
    zh: "两个时间之间的分钟数。",
    keys: &[
        req("minutes", S::NamePair, "[FROM, TO]: two timestamp fields.", "[起, 止]：两个时间字段。"),
        k("calendar", S::Ref(R::Calendar), "Count only working time.", "只计算工作时间。"),
    ],
    or: &[],
};

static MEASURE_FIELD: Shape = S::Either(&S::Name, &S::Obj(&DURATION));

pub static MEASURE: Decl = Decl {
    id: "measure",
    en: "A measure: one of count, sum, avg, min, max, p50, p90, distinct, share, first, last, mean_gap.",
    zh: "指标：count、sum、avg、min、max、p50、p90、distinct、share、first、last、mean_gap 之一。",
    keys: &[
        k("label", S::Label, "The column's title.", "列标题。"),
        k("unit", S::Text, "The unit shown.", "单位。"),
        k("where", S::Condition, "Only rows for which this holds.", "只统计满足条件的行。"),
        k("mean_gap", MEASURE_FIELD, "The mean time between rows (MTBF).", "行之间的平均间隔（MTBF）。"),
        k("first", MEASURE_FIELD, "The earliest value.", "最早值。"),
        k("last", MEASURE_FIELD, "The latest value.", "最晚值。"),
        k("count", S::Bool, "The number of rows.", "行数。"),
        k("sum", MEASURE_FIELD, "The sum of a field.", "求和。"),
        k("avg", MEASURE_FIELD, "The average of a field.", "平均值。"),
        k("min", MEASURE_FIELD, "The smallest value.", "最小值。"),
        k("max", MEASURE_FIELD, "The largest value.", "最大值。"),
        k("p50", MEASURE_FIELD, "The median.", "中位数。"),
        k("p90", MEASURE_FIELD, "The 90th percentile.", "90 分位数。"),
        k("distinct", MEASURE_FIELD, "The number of distinct values.", "不同值的个数。"),
        k("share", S::Condition, "The share of rows for which a condition holds, in %.", "满足条件的行所占百分比。"),
    ],
    or: &[],
};

pub static REPORT: Decl = Decl {
    id: "report",
    en: "A report: measures grouped by dimensions.",
    zh: "报表：按维度分组的指标。",
    keys: &[
        req("report", S::Name, "The report's name.", "报表名称。"),
        k("title", S::Label, "The title shown.", "显示标题。"),
        LABEL_KEYS[1],
        req("source", S::Obj(&SOURCE), "What it counts.", "数据来源。"),
        k("time", S::Name, "The timestamp the date range applies to.", "日期范围所用的时间字段。"),
        k("where", S::Condition, "Only rows for which this holds.", "只统计满足条件的行。"),
        k(
            "by",
            S::Either(&S::Texts, &S::Text),
            "Dimensions: fields, REF.FIELD, or day/week/month/quarter.",
            "维度：字段、引用.字段或 day/week/month/quarter。",
        ),
        req("measures", S::Named(&MEASURE), "The measures.", "指标。"),
        k("chart", S::Word(&crate::defs::CHARTS), "How it is drawn.", "图表类型。"),
        k("roles", S::Refs(R::RoleOrAll), "Who may read it (`all`: everyone).", "可查看的角色（`all`：所有人）。"),
    ],
    or: &[],
};

pub static TILE: Decl = Decl {
    id: "tile",
    en: "A tile of a dashboard.",
    zh: "看板中的一块。",
    keys: &[
        req("report", S::Ref(R::Report), "The report shown.", "显示的报表。"),
        k("by", S::Either(&S::Texts, &S::Text), "The dimension (one).", "维度（一个）。"),
        k("measure", S::Name, "The measure.", "指标。"),
        k("chart", S::Word(&crate::defs::CHARTS), "How it is drawn.", "图表类型。"),
        k("title", S::Label, "The tile's title.", "标题。"),
    ],
    or: &[],
};

pub static DASHBOARD: Decl = Decl {
    id: "dashboard",
    en: "A dashboard: report tiles for a role.",
    zh: "看板：面向某个角色的报表集合。",
    keys: &[
        req("dashboard", S::Name, "The dashboard's name.", "看板名称。"),
        k("title", S::Label, "The title shown.", "显示标题。"),
        k("roles", S::Refs(R::Role), "Whose default dashboard it is.", "默认看板的角色。"),
        req("tiles", S::List(&TILE), "The tiles, in order.", "各块（按顺序）。"),
    ],
    or: &[],
};

/// The kinds of definition file, by the key that names them (first match wins,
/// as in the loader).
pub static DEFINITION_KINDS: &[(&str, &Decl)] = &[
    ("record", &RECORD),
    ("schedule", &SCHEDULE),
    ("webhook", &WEBHOOK),
    ("calendar", &CALENDAR),
    ("template", &TEMPLATE),
    ("dashboard", &DASHBOARD),
    ("report", &REPORT),
    ("ledger", &LEDGER),
    ("workflow", &WORKFLOW),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grammars_lists_match_the_model() {
        assert_eq!(FIELD_TYPES, crate::defs::FieldType::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().as_slice());
        assert_eq!(MEASURES, crate::defs::MeasureKind::ALL.map(|(n, _)| n).as_slice());
        for (n, _) in crate::defs::MeasureKind::ALL {
            assert!(MEASURE.key(n).is_some(), "measure kind {n} is not declared");
        }
        for (n, _) in crate::defs::RecordOp::ALL {
            assert!(RECORD_ACCESS.key(n).is_some(), "record operation {n} is not declared");
        }
    }
}
