//! The Flowform runtime: holds the current [`Bundle`], executes commands
//! through the pure core and commits them to the [`Store`].
//!
//! The core decides, the runtime does: it loads the instance, picks the bundle
//! version the instance runs on, asks the core for the outcome, and commits the
//! new instance and its event in one store transaction, with optimistic
//! concurrency and idempotency keys. Time comes from a [`Clock`] so tests can
//! move it.

pub mod accounts;
pub mod clock;
pub mod demo;
pub mod facts;
pub mod files;
pub mod health;
pub mod import;
pub mod metrics;
pub mod migrate;
pub mod notify;
pub mod records;
pub mod reload;
pub mod replay;
pub mod reports;
pub mod schedules;
pub mod sources;
pub mod tokens;
pub mod watch;

use arc_swap::ArcSwap;
use flowform_core::{Actor, AvailableTransition, Bundle, Event, Instance, Lang, Rejection};
use flowform_model::Diagnostic;
use flowform_store::{CommandWrite, CommitOutcome, Here, IdempotencyKey, InstanceFilter, Job, Page, Store, StoreError};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

pub use clock::{Clock, ManualClock, SystemClock};

/// Why a command or query did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("no instance `{0}`")]
    InstanceNotFound(String),
    #[error("the instance is at version {current}, not {expected}: reload it and try again")]
    StaleVersion { expected: u64, current: u64 },
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("bundle version `{0}` of this instance is not in the store")]
    BundleMissing(String),
    #[error("bundle version `{version}` no longer compiles: {count} problem(s)")]
    BundleBroken { version: String, count: usize },
    #[error("{0}")]
    BadQuery(String),
    #[error("the submitted data is not valid")]
    InvalidReferences(Vec<flowform_core::FieldError>),
    #[error("{0}")]
    Ledger(flowform_core::ledger::Violation),
    #[error("{0}")]
    Referenced(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("no {0}")]
    RecordNotFound(String),
    #[error("no bundle version `{0}` in the store")]
    UnknownBundleVersion(String),
    #[error("the instance kept changing; try again")]
    TooMuchContention,
    /// Something the answer needs is being prepared (report facts after a start).
    #[error("{0}")]
    Unavailable(String),
    /// A workflow a transition starts (`starts:`) refused its start.
    #[error("could not start the linked workflow `{workflow}`{}: {source}", item.map(|i| format!(" for item {i}")).unwrap_or_default())]
    LinkedStart { workflow: String, item: Option<usize>, source: Box<CommandError> },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why the application could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Read(#[from] sources::ReadError),
    #[error("the definitions have {} problem(s)", .0.len())]
    Invalid(Vec<Diagnostic>),
}

/// The one pipeline used by `serve`, `check` and reload: read the directory,
/// compile the bundle.
pub fn load_bundle(dir: &Path) -> Result<Bundle, LoadError> {
    let (sources, problems) = sources::read_dir_checked(dir)?;
    if !problems.is_empty() {
        // Files that could not be read come first; the rest is not checked
        // without them (it would only report their absence).
        return Err(LoadError::Invalid(problems));
    }
    flowform_core::compile(sources).map_err(LoadError::Invalid)
}

/// The app's time zone (`app.timezone`; UTC when it has none).
pub fn app_zone(bundle: &Bundle) -> jiff::tz::TimeZone {
    bundle.model.app.timezone.as_ref().and_then(|t| jiff::tz::TimeZone::get(&t.value).ok()).unwrap_or(jiff::tz::TimeZone::UTC)
}

/// How far the records a command reads are followed from its own references.
const MAX_READ_DEPTH: usize = 6;

/// How many compiled older definitions versions are kept in memory.
const MAX_PINNED: usize = 16;

/// How many times a command without `expected_version` is re-decided when
/// another command changed the instance in between.
const MAX_RETRIES: usize = 8;

pub struct Runtime {
    current: ArcSwap<Bundle>,
    /// Older bundle versions that instances still run on, compiled on demand.
    /// version → (bundle, when last used: a tick of `pin_clock`).
    pinned: Mutex<HashMap<String, (Arc<Bundle>, u64)>>,
    pin_clock: std::sync::atomic::AtomicU64,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    ids: Mutex<ulid::Generator>,
    loaded_at: ArcSwap<String>,
    /// Where the definitions are read from on reload; `None`: reload is off.
    app_dir: Option<std::path::PathBuf>,
    last_rejected: ArcSwap<Option<reload::Rejected>>,
    /// One reload at a time; requests never wait for it.
    reload_lock: Mutex<()>,
    /// Values for `${NAME}` in webhook URLs, before the environment.
    variables: Mutex<HashMap<String, String>>,
    /// Users, tokens and sessions in memory (see `accounts`).
    accounts: accounts::Accounts,
    health: health::Health,
    metrics: metrics::Metrics,
    retention: Mutex<health::Retention>,
    /// Uploaded attachments (`None`: uploads are refused).
    files: Option<files::FileStore>,
    /// Report facts kept in memory (see `facts`).
    facts: Arc<facts::Facts>,
    event_facts: Arc<facts::EventFacts>,
    /// No event or instance is left in the JSON of older versions (see
    /// `compact_store_step`), and how many entries it looked at to know.
    store_compact: std::sync::atomic::AtomicBool,
    compacted: std::sync::atomic::AtomicU64,
}

/// The options of one command from an API client.
#[derive(Clone, Debug, Default)]
pub struct CommandOptions {
    pub lang: Lang,
    pub idempotency_key: Option<String>,
    pub expected_version: Option<u64>,
}

impl Runtime {
    /// Starts a runtime on `bundle`, recording the bundle's sources in the store.
    pub fn new(bundle: Bundle, store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> Result<Runtime, StoreError> {
        store.put_bundle(&bundle.version, &bundle.sources)?;
        store.set_current_bundle(&bundle.version)?;
        let loaded_at = clock.time().to_string();
        let runtime = Runtime {
            app_dir: None,
            last_rejected: ArcSwap::from_pointee(None),
            reload_lock: Mutex::new(()),
            variables: Mutex::new(HashMap::new()),
            current: ArcSwap::from_pointee(bundle),
            pinned: Mutex::new(HashMap::new()),
            pin_clock: std::sync::atomic::AtomicU64::new(0),
            store,
            clock,
            ids: Mutex::new(ulid::Generator::new()),
            loaded_at: ArcSwap::from_pointee(loaded_at),
            accounts: accounts::Accounts::default(),
            health: health::Health::default(),
            metrics: metrics::Metrics::default(),
            retention: Mutex::new(health::Retention::default()),
            files: None,
            facts: Arc::default(),
            event_facts: Arc::default(),
            store_compact: std::sync::atomic::AtomicBool::new(false),
            compacted: std::sync::atomic::AtomicU64::new(0),
        };
        runtime.load_accounts()?;
        Ok(runtime)
    }

    /// Decides the recorded commands of past instances again under
    /// `candidate`, writing nothing (see [`replay::replay`]).
    pub fn what_if(&self, candidate: &Bundle, opts: &replay::ReplayOptions) -> Result<replay::ReplayReport, CommandError> {
        // Each recorded version compiled once; one that cannot be is asked for no more.
        let seen: Mutex<HashMap<String, Option<Arc<Bundle>>>> = Mutex::default();
        let old = |version: &str| {
            let mut seen = seen.lock().ok()?;
            seen.entry(version.to_string()).or_insert_with(|| self.bundle_for(version).ok()).clone()
        };
        replay::replay(self.store.as_ref(), candidate, &old, opts, self.now())
    }

    /// The bundle new instances start on.
    pub fn bundle(&self) -> Arc<Bundle> {
        self.current.load_full()
    }

    pub fn loaded_at(&self) -> String {
        self.loaded_at.load().as_ref().clone()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The runtime's clock, now.
    pub fn clock_now(&self) -> jiff::Timestamp {
        self.clock.now()
    }

    pub fn now(&self) -> flowform_core::Time {
        self.clock.time()
    }

    /// The bundle an instance runs on: the current one, or the version it started under.
    pub fn bundle_for(&self, version: &str) -> Result<Arc<Bundle>, CommandError> {
        let current = self.bundle();
        if current.version == version {
            return Ok(current);
        }
        if let Some(b) = self.pinned_bundle(version)? {
            return Ok(b);
        }
        let sources = self.store.bundle(version)?.ok_or_else(|| CommandError::BundleMissing(version.to_string()))?;
        // Compiled outside the lock: other requests for other versions go on meanwhile.
        let bundle = flowform_core::compile(sources).map_err(|d| CommandError::BundleBroken { version: version.to_string(), count: d.len() })?;
        self.pin(version, bundle)
    }

    fn pinned_bundle(&self, version: &str) -> Result<Option<Arc<Bundle>>, CommandError> {
        let mut pinned = self.pinned.lock().map_err(|_| CommandError::Internal("bundle cache poisoned".into()))?;
        let now = self.pin_clock.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(pinned.get_mut(version).map(|(b, used)| {
            *used = now;
            b.clone()
        }))
    }

    fn pin(&self, version: &str, bundle: Bundle) -> Result<Arc<Bundle>, CommandError> {
        let mut pinned = self.pinned.lock().map_err(|_| CommandError::Internal("bundle cache poisoned".into()))?;
        let now = self.pin_clock.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Bounded: past the limit, the least recently used version that no
        // request holds right now is dropped (compiled again when needed).
        if pinned.len() >= MAX_PINNED
            && !pinned.contains_key(version)
            && let Some(oldest) = pinned.iter().filter(|(_, (b, _))| Arc::strong_count(b) == 1).min_by_key(|(_, (_, used))| *used).map(|(k, _)| k.clone())
        {
            pinned.remove(&oldest);
        }
        Ok(pinned.entry(version.to_string()).or_insert_with(|| (Arc::new(bundle), now)).0.clone())
    }

    /// [`Runtime::bundle_for`] for async callers: an old version that must be
    /// compiled first is compiled on the blocking pool, never on the
    /// request's thread (a large bundle takes a while).
    pub async fn bundle_for_async(&self, version: &str) -> Result<Arc<Bundle>, CommandError> {
        let current = self.bundle();
        if current.version == version {
            return Ok(current);
        }
        if let Some(b) = self.pinned_bundle(version)? {
            return Ok(b);
        }
        let sources = self.store.bundle(version)?.ok_or_else(|| CommandError::BundleMissing(version.to_string()))?;
        let compiled = tokio::task::spawn_blocking(move || flowform_core::compile(sources)).await.map_err(|e| CommandError::Internal(e.to_string()))?;
        let bundle = compiled.map_err(|d| CommandError::BundleBroken { version: version.to_string(), count: d.len() })?;
        self.pin(version, bundle)
    }

    fn new_id(&self) -> String {
        let mut ids = match self.ids.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        match ids.generate() {
            Ok(id) => id.to_string(),
            Err(overflow) => overflow.commit_overflow_increment().to_string(),
        }
    }

    /// Starts an instance of `workflow` with the start form's data.
    pub async fn start(&self, workflow: &str, input: &Value, actor: &Actor, opts: &CommandOptions) -> Result<Instance, CommandError> {
        let result = self.start_counted(workflow, input, actor, opts).await;
        self.count_command(workflow, None, metrics::outcome(&result));
        result
    }

    async fn start_counted(&self, workflow: &str, input: &Value, actor: &Actor, opts: &CommandOptions) -> Result<Instance, CommandError> {
        for _ in 0..MAX_RETRIES {
            match self.plan_start(workflow, input, actor, opts)? {
                Ok(replayed) => return Ok(replayed),
                Err((write, id)) => match self.commit(write).await? {
                    // A record it updates changed meanwhile: decide again on the fresh record.
                    (CommitOutcome::RecordChanged, _) => continue,
                    committed => return start_result(&id, committed),
                },
            }
        }
        Err(CommandError::TooMuchContention)
    }

    /// [`Runtime::start`] for blocking contexts (record triggers, tools).
    pub fn start_blocking(&self, workflow: &str, input: &Value, actor: &Actor, opts: &CommandOptions) -> Result<Instance, CommandError> {
        for _ in 0..MAX_RETRIES {
            match self.plan_start(workflow, input, actor, opts)? {
                Ok(replayed) => return Ok(replayed),
                Err((write, id)) => {
                    let instance = write.instance.clone();
                    let idem = write.idempotency.clone();
                    let noted = self.to_note(&write);
                    let outcome = self.store.commit(write)?;
                    if outcome == CommitOutcome::Committed {
                        self.note_facts(&noted);
                    }
                    if outcome == CommitOutcome::RecordChanged {
                        continue;
                    }
                    check_replay(&outcome, &idem)?;
                    return start_result(&id, (outcome, Arc::unwrap_or_clone(instance)));
                }
            }
        }
        Err(CommandError::TooMuchContention)
    }

    /// The first result of a replayed key, or the write to commit and the new id.
    #[allow(clippy::type_complexity)]
    fn plan_start(
        &self,
        workflow: &str,
        input: &Value,
        actor: &Actor,
        opts: &CommandOptions,
    ) -> Result<Result<Instance, (CommandWrite, String)>, CommandError> {
        let idem = idempotency(actor, &format!("start:{workflow}"), input, opts)?;
        if let Some(replay) = self.replay(&idem)? {
            return Ok(Ok(replay));
        }
        let bundle = self.bundle();
        let now = self.now();
        let id = self.new_id();
        let fields =
            bundle.workflow(workflow).and_then(|w| w.start.form.as_ref()).and_then(|f| bundle.form(&f.value)).map_or(&[][..], |f| f.def.fields.as_slice());
        let input = &self.fill_from(&bundle, fields, input, &serde_json::Map::new())?;
        let mut reads = self.reads(&bundle, workflow, &serde_json::Map::new(), input)?;
        let first = flowform_core::start_with(&bundle, workflow, input, actor, now, &id, opts.lang, &reads);
        let mut outcome = if needs_people(&bundle, &first) {
            reads.people = self.people(&bundle)?;
            flowform_core::start_with(&bundle, workflow, input, actor, now, &id, opts.lang, &reads)?
        } else {
            first?
        };
        if let Some(template) = bundle.workflow(workflow).and_then(|w| w.number.as_ref()) {
            outcome.instance.number = Some(self.next_number(&bundle, workflow, &template.value, &outcome.instance.data, now)?);
        }
        let form = bundle.workflow(workflow).and_then(|w| w.start.form.as_ref()).map(|f| f.value.clone());
        Ok(Err((self.prepare(&bundle, outcome, form.as_deref(), 0, idem, opts.lang)?, id)))
    }

    /// Fields with `from: REF.FIELD` take the value of FIELD of the record
    /// REF points at (from the input, else the instance): always when locked,
    /// when nothing was sent when `editable`. Done before the decision, so
    /// the event records what was decided on.
    pub fn fill_from(
        &self,
        bundle: &Bundle,
        fields: &[flowform_model::FieldDef],
        input: &Value,
        data: &serde_json::Map<String, Value>,
    ) -> Result<Value, CommandError> {
        if !fields.iter().any(|f| f.from.is_some()) {
            return Ok(input.clone());
        }
        let mut m = match input {
            Value::Object(m) => m.clone(),
            Value::Null => serde_json::Map::new(),
            other => return Ok(other.clone()),
        };
        for f in fields {
            let Some((reference, name)) = f.from.as_ref().and_then(|p| p.value.split_once('.')) else { continue };
            let Some(record_type) = fields.iter().find(|x| x.name == reference).and_then(|x| x.record.as_ref()) else { continue };
            let Some(id) = m.get(reference).or_else(|| data.get(reference)).and_then(Value::as_str).map(str::to_string) else { continue };
            if !bundle.model.record_types.contains_key(&record_type.value) {
                continue;
            }
            if let Some(value) = self.store.record(&record_type.value, &id)?.and_then(|r| r.data.get(name).cloned())
                && (!f.editable || m.get(&f.name).is_none_or(Value::is_null))
            {
                m.insert(f.name.clone(), value);
            }
        }
        Ok(Value::Object(m))
    }

    /// The records a command reads: every record its instance's data and its
    /// input refer to (`ref` fields of the workflow's forms), and the records
    /// those refer to in turn (an asset's location); instances of a workflow
    /// `record:` kind as their data with `id`, `state` and `number`. Read
    /// before deciding, handed to the pure core (rules' `lookup`/`find`).
    fn reads(&self, bundle: &Bundle, workflow: &str, data: &serde_json::Map<String, Value>, input: &Value) -> Result<flowform_core::Reads, CommandError> {
        let mut wanted = flowform_core::records::instance_references(bundle, workflow, data, input.as_object());
        let mut records: serde_json::Map<String, Value> = serde_json::Map::new();
        let mut versions: std::collections::BTreeMap<String, std::collections::BTreeMap<String, u64>> = Default::default();
        // The records they refer to in turn are read too, up a tree of
        // places to its root (an asset's room, floor, building and campus).
        for depth in 0..MAX_READ_DEPTH {
            let mut next = Vec::new();
            for (kind, id) in std::mem::take(&mut wanted) {
                if records.get(&kind).and_then(|t| t.get(&id)).is_some() {
                    continue;
                }
                let entry = if bundle.model.record_types.contains_key(&kind) {
                    self.store.record(&kind, &id)?.map(|r| {
                        versions.entry(kind.clone()).or_default().insert(id.clone(), r.version);
                        if depth + 1 < MAX_READ_DEPTH
                            && let Some(form) = bundle.model.record_types.get(&kind).and_then(|t| bundle.form(&t.form.value))
                        {
                            next.extend(flowform_core::records::references(&form.def.fields, &r.data));
                        }
                        let mut m = r.data.clone();
                        m.insert("id".into(), serde_json::json!(r.id));
                        m.insert("title".into(), serde_json::json!(r.title));
                        m.insert("archived".into(), serde_json::json!(r.archived));
                        Value::Object(m)
                    })
                } else {
                    self.store.instance(&id)?.filter(|i| bundle.workflow(&i.workflow).and_then(|w| w.record.as_deref()) == Some(kind.as_str())).map(|i| {
                        versions.entry(kind.clone()).or_default().insert(id.clone(), i.version);
                        let mut m = i.data.clone();
                        m.insert("id".into(), serde_json::json!(i.id));
                        m.insert("state".into(), serde_json::json!(i.state));
                        m.insert("number".into(), serde_json::json!(i.number));
                        Value::Object(m)
                    })
                };
                if let Some(entry) = entry {
                    records.entry(kind).or_insert_with(|| Value::Object(serde_json::Map::new()))[&id] = entry;
                }
            }
            wanted = next;
        }
        // The teams' people are read only when a route rule asks to pick one
        // (see `needs_people`): reading them (the roster, everyone's load)
        // for every command cost more than deciding it.
        let people = Value::Null;
        let teams = bundle.model.app.teams_from.as_ref().map(|_| self.teams(bundle).into_iter().map(|(name, _)| name).collect());
        // A type a rule `find`s in is read whole (its live records, up to a bound).
        for kind in bundle.finds(workflow) {
            let all = self.store.records(kind)?;
            let entry = records.entry(kind.clone()).or_insert_with(|| Value::Object(serde_json::Map::new()));
            for r in all.into_iter().filter(|r| !r.archived).take(MAX_FOUND) {
                if entry.get(&r.id).is_none() {
                    versions.entry(kind.clone()).or_default().insert(r.id.clone(), r.version);
                    let mut m = r.data.clone();
                    m.insert("id".into(), serde_json::json!(r.id));
                    m.insert("title".into(), serde_json::json!(r.title));
                    m.insert("archived".into(), serde_json::json!(false));
                    entry[&r.id] = Value::Object(m);
                }
            }
        }
        Ok(flowform_core::Reads { records: std::sync::Arc::new(Value::Object(records)), people, teams, versions })
    }

    /// Every team: those declared under `teams:`, and with `app.teams_from`
    /// the live records of that type (the id is the name, the title the
    /// label; a declared team keeps its declared label).
    pub fn teams(&self, bundle: &Bundle) -> Vec<(String, flowform_model::Label)> {
        let mut out: Vec<(String, flowform_model::Label)> = bundle.model.teams.iter().map(|(k, t)| (k.clone(), t.label.clone())).collect();
        if let Some(kind) = &bundle.model.app.teams_from {
            // A store that cannot be read offers the declared teams only; the command fails on its own reads.
            for r in self.store.records(&kind.value).unwrap_or_default() {
                if !r.archived && !out.iter().any(|(k, _)| *k == r.id) {
                    out.push((r.id.clone(), flowform_model::Label::plain(&r.title)));
                }
            }
        }
        out
    }

    /// How people call team `name` in `lang` (its name when unknown).
    pub fn team_label(&self, bundle: &Bundle, name: &str, lang: &str) -> String {
        if let Some(t) = bundle.model.teams.get(name) {
            return t.label.get(lang, name).to_string();
        }
        match &bundle.model.app.teams_from {
            Some(kind) => self.store.record(&kind.value, name).ok().flatten().map_or_else(|| name.to_string(), |r| r.title),
            None => name.to_string(),
        }
    }

    /// Who a route rule may `pick` from, per team (see [`flowform_core::Reads::people`]):
    /// the team's active members with their roles and open assigned
    /// instances, on duty when the roster (`app.roster`) has a shift of
    /// theirs for the team covering now, and the team's round-robin turn.
    fn people(&self, bundle: &Bundle) -> Result<Value, CommandError> {
        let now = self.now();
        let mut shifts: Vec<(String, String)> = Vec::new();
        if let Some(roster) = &bundle.model.app.roster {
            for r in self.store.records(&roster.value)? {
                let field = |f: &str| r.data.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
                let (from, to) = (field("starts_at").parse::<jiff::Timestamp>(), field("ends_at").parse::<jiff::Timestamp>());
                let at = now.timestamp();
                if let (false, Ok(from), Ok(to)) = (r.archived, from, to)
                    && from <= at
                    && at < to
                {
                    shifts.push((field("team"), field("user")));
                }
            }
        }
        let actors = self.actors();
        let mut out = serde_json::Map::new();
        for (team, _) in &self.teams(bundle) {
            let mut members = Vec::new();
            for a in actors.iter().filter(|a| a.teams.contains(team) || shifts.iter().any(|(t, u)| t == team && *u == a.id)) {
                let load: u64 = self
                    .store
                    .assigned_counts(&a.id)?
                    .into_iter()
                    .filter(|(w, s, _)| !bundle.workflow(w).and_then(|w| w.state(s)).is_some_and(|s| s.is_final))
                    .map(|(_, _, n)| n)
                    .sum();
                let on_duty = shifts.iter().any(|(t, u)| t == team && *u == a.id);
                members.push(serde_json::json!({"id": a.id, "roles": a.roles, "load": load, "on_duty": on_duty}));
            }
            let turn: u64 = self.store.meta(&format!("turn:{team}"))?.and_then(|v| v.parse().ok()).unwrap_or(0);
            out.insert(team.clone(), serde_json::json!({"turn": turn, "members": members}));
        }
        Ok(Value::Object(out))
    }

    /// The readable number of a new instance: the template filled with the
    /// start form's data, today's date in the app's zone, and the next
    /// number of the workflow's sequence (one per day when the template has
    /// a date). A start that fails after this leaves a gap, never a duplicate.
    fn next_number(
        &self,
        bundle: &Bundle,
        workflow: &str,
        template: &str,
        data: &serde_json::Map<String, Value>,
        now: flowform_core::Time,
    ) -> Result<String, CommandError> {
        let local = bundle.local_text(now);
        // The sequence restarts with the most precise date the number shows.
        let digits: String = local.chars().filter(char::is_ascii_digit).collect();
        let period = [("{yyyyMMdd}", 8), ("{yyyyMM}", 6), ("{yyyy}", 4)].into_iter().find(|(token, _)| template.contains(token)).map(|(_, n)| &digits[..n]);
        let sequence = match period {
            Some(p) => format!("workflow:{workflow}:{p}"),
            None => format!("workflow:{workflow}"),
        };
        let seq = match self.store.submit(flowform_store::Job::NextSequence(sequence))? {
            flowform_store::CommitOutcome::Sequence(n) => n,
            other => return Err(CommandError::Internal(format!("the number sequence answered {other:?}"))),
        };
        Ok(flowform_core::records::fill(template, data, Some(seq), &local))
    }

    /// Takes transition `name` on instance `id`.
    pub async fn transition(&self, id: &str, name: &str, input: &Value, actor: &Actor, opts: &CommandOptions) -> Result<Instance, CommandError> {
        // The workflow, for the metric's label, as the command read it (no second read of the store).
        let mut workflow = None;
        let result = self.transition_counted(id, name, input, actor, opts, &mut workflow).await;
        if let Ok(i) = &result {
            workflow = Some(i.workflow.clone());
        }
        self.count_command(workflow.as_deref().unwrap_or_default(), Some(name), metrics::outcome(&result));
        result
    }

    async fn transition_counted(
        &self,
        id: &str,
        name: &str,
        input: &Value,
        actor: &Actor,
        opts: &CommandOptions,
        workflow_read: &mut Option<String>,
    ) -> Result<Instance, CommandError> {
        let idem = idempotency(actor, &format!("transition:{id}:{name}"), input, opts)?;
        if let Some(replay) = self.replay(&idem)? {
            return Ok(replay);
        }
        for _ in 0..MAX_RETRIES {
            let instance = self.instance_for(id, actor)?;
            if workflow_read.is_none() {
                *workflow_read = Some(instance.workflow.clone());
            }
            if let Some(expected) = opts.expected_version
                && expected != instance.version
            {
                return Err(CommandError::StaleVersion { expected, current: instance.version });
            }
            let bundle = self.bundle_for_async(&instance.bundle_version).await?;
            let now = self.now();
            let fields = bundle
                .workflow(&instance.workflow)
                .and_then(|w| w.transition(name))
                .and_then(|t| t.form.as_ref())
                .and_then(|f| bundle.form(&f.value))
                .map_or(&[][..], |f| f.def.fields.as_slice());
            let input = &self.fill_from(&bundle, fields, input, &instance.data)?;
            let mut reads = self.reads(&bundle, &instance.workflow, &instance.data, input)?;
            let (version, workflow) = (instance.version, instance.workflow.clone());
            // Decided once without the teams' people (reading them costs); a
            // bundle whose rules may pick a person keeps a copy to decide again with them.
            let spare = can_pick(&bundle).then(|| instance.clone());
            let first = flowform_core::transition_with(&bundle, instance, name, input, actor, now, opts.lang, &reads);
            let outcome = if needs_people(&bundle, &first) {
                reads.people = self.people(&bundle)?;
                // A rule whose text does not name `pick` may still return one
                // (from data): then the instance is read again.
                let instance = match spare {
                    Some(instance) => instance,
                    None => self.instance_for(id, actor)?,
                };
                if instance.version != version {
                    continue;
                }
                flowform_core::transition_with(&bundle, instance, name, input, actor, now, opts.lang, &reads)?
            } else {
                first?
            };
            let form = bundle.workflow(&workflow).and_then(|w| w.transition(name)).and_then(|t| t.form.as_ref()).map(|f| f.value.clone());
            let effects = outcome.effects.clone();
            let mut write = self.prepare(&bundle, outcome, form.as_deref(), version, idem.clone(), opts.lang)?;
            self.link_children(&bundle, &mut write, &effects, actor, opts.lang)?;
            match self.commit(write).await? {
                (CommitOutcome::Committed, instance) => return Ok(instance),
                (CommitOutcome::Replay(first), _) => return first.instance.ok_or(CommandError::IdempotencyKeyReused),
                (CommitOutcome::Conflict { current_version }, _) => {
                    if let Some(expected) = opts.expected_version {
                        return Err(CommandError::StaleVersion { expected, current: current_version });
                    }
                    // Someone else changed it between our read and our write: decide again.
                }
                // A record it updates changed: decide again (the instance itself did not).
                (CommitOutcome::RecordChanged, _) => {}
                (other, _) => return Err(other_outcome(other)),
            }
        }
        Err(CommandError::TooMuchContention)
    }

    /// The instances a command starts (`Effect::Start`): each decided by the
    /// core as a start by the actor (with the link's roles when it declares
    /// them), its `parent` the instance, added to the write so that they
    /// commit with it or not at all. Their record updates join the
    /// command's (one write per record).
    pub(crate) fn link_children(
        &self,
        bundle: &Bundle,
        write: &mut CommandWrite,
        effects: &[flowform_core::Effect],
        actor: &Actor,
        lang: Lang,
    ) -> Result<(), CommandError> {
        let starts = effects.iter().filter_map(|e| match e {
            flowform_core::Effect::Start { starts } => Some(starts),
            _ => None,
        });
        for link in starts.flatten() {
            let failed = |source: CommandError| CommandError::LinkedStart { workflow: link.workflow.clone(), item: link.item, source: Box::new(source) };
            let child_actor = Actor { roles: if link.roles.is_empty() { actor.roles.clone() } else { link.roles.clone() }, ..actor.clone() };
            let id = self.new_id();
            let now = write.event.at;
            let form = bundle.workflow(&link.workflow).and_then(|w| w.start.form.as_ref()).map(|f| f.value.clone());
            let fields = form.as_deref().and_then(|f| bundle.form(f)).map_or(&[][..], |f| f.def.fields.as_slice());
            let input = self.fill_from(bundle, fields, &Value::Object(link.data.clone()), &serde_json::Map::new()).map_err(failed)?;
            let mut reads = self.reads(bundle, &link.workflow, &serde_json::Map::new(), &input).map_err(failed)?;
            let first = flowform_core::start_with(bundle, &link.workflow, &input, &child_actor, now, &id, lang, &reads);
            let mut outcome = if needs_people(bundle, &first) {
                reads.people = self.people(bundle).map_err(failed)?;
                flowform_core::start_with(bundle, &link.workflow, &input, &child_actor, now, &id, lang, &reads)
            } else {
                first
            }
            .map_err(|r| failed(CommandError::Rejected(r)))?;
            outcome.instance.parent = Some(write.instance.id.clone());
            outcome.event.parent = Some(write.instance.id.clone());
            if let Some(template) = bundle.workflow(&link.workflow).and_then(|w| w.number.as_ref()) {
                outcome.instance.number = Some(self.next_number(bundle, &link.workflow, &template.value, &outcome.instance.data, now).map_err(failed)?);
            }
            let mut child = self.prepare(bundle, outcome, form.as_deref(), 0, None, lang).map_err(failed)?;
            if !child.postings.is_empty() {
                return Err(failed(CommandError::BadQuery("a linked start cannot post ledger movements".into())));
            }
            for rw in std::mem::take(&mut child.records) {
                merge_record_write(&mut write.records, rw);
            }
            Arc::make_mut(&mut write.instance).children.push(id.clone());
            write.event.children.push(id);
            write.children.push(child);
        }
        Ok(())
    }

    /// The instances and events a write commits, when report facts are kept (else none: no copy).
    pub(crate) fn to_note(&self, write: &CommandWrite) -> Vec<(Arc<Instance>, Event)> {
        if !self.facts.any() && !self.event_facts.any() {
            return Vec::new();
        }
        std::iter::once((write.instance.clone(), write.event.clone())).chain(write.children.iter().map(|c| (c.instance.clone(), c.event.clone()))).collect()
    }

    /// What a committed write changes in the report facts.
    pub(crate) fn note_facts(&self, noted: &[(Arc<Instance>, Event)]) {
        for (i, e) in noted {
            self.facts.note(i);
            self.event_facts.note(&i.workflow, e);
        }
    }

    pub(crate) fn facts(&self) -> &Arc<facts::Facts> {
        &self.facts
    }

    pub(crate) fn event_facts(&self) -> &Arc<facts::EventFacts> {
        &self.event_facts
    }

    fn replay(&self, idem: &Option<IdempotencyKey>) -> Result<Option<Instance>, CommandError> {
        let Some(idem) = idem else { return Ok(None) };
        match self.store.idempotent(&idem.key)? {
            Some(first) if first.fingerprint == idem.fingerprint => first.instance.map(Some).ok_or(CommandError::IdempotencyKeyReused),
            Some(_) => Err(CommandError::IdempotencyKeyReused),
            None => Ok(None),
        }
    }

    async fn commit(&self, write: CommandWrite) -> Result<(CommitOutcome, Instance), CommandError> {
        let store = self.store.clone();
        let idem = write.idempotency.clone();
        let instance = write.instance.clone();
        let noted = self.to_note(&write);
        let outcome = match submit_here(&store, Job::Command(Box::new(write))) {
            Here::Done(outcome) => outcome?,
            Here::Queue(job) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                store.submit_then(
                    job,
                    Box::new(move |outcome| {
                        let _ = tx.send(outcome);
                    }),
                );
                rx.await.map_err(|_| CommandError::Internal("the store dropped a command without an answer".into()))??
            }
        };
        if outcome == CommitOutcome::Committed {
            self.note_facts(&noted);
        }
        check_replay(&outcome, &idem)?;
        Ok((outcome, Arc::unwrap_or_clone(instance)))
    }

    pub fn instance(&self, id: &str) -> Result<Instance, CommandError> {
        self.store.instance(id)?.ok_or_else(|| CommandError::InstanceNotFound(id.to_string()))
    }

    /// The instance if `actor` may read it; one they may not is "not found",
    /// as if it did not exist.
    pub fn instance_for(&self, id: &str, actor: &Actor) -> Result<Instance, CommandError> {
        let instance = self.instance(id)?;
        if self.may_read(&instance, actor) { Ok(instance) } else { Err(CommandError::InstanceNotFound(id.to_string())) }
    }

    /// Whether `actor` may read `instance` (its workflow's `visible_to` in the current definitions).
    pub fn may_read(&self, instance: &Instance, actor: &Actor) -> bool {
        if actor.has_role("admin") {
            return true;
        }
        let bundle = self.bundle();
        match bundle.workflow(&instance.workflow) {
            Some(wf) => flowform_core::visibility::visible(wf, instance, actor),
            // A workflow no longer defined: its requester still sees it.
            None => instance.requester == actor.id,
        }
    }

    /// What `actor` may read, for lists and counts; `None`: everything (admins).
    pub fn visibility(&self, actor: &Actor) -> Option<flowform_store::Visibility> {
        if actor.has_role("admin") {
            return None;
        }
        let bundle = self.bundle();
        let mut workflows = std::collections::BTreeMap::new();
        for wf in bundle.model.workflows.values() {
            let audiences = wf.audiences();
            let reach = flowform_store::Reach {
                all: flowform_core::visibility::sees_all(wf, actor),
                requester: audiences.contains(&flowform_model::Audience::Requester),
                assignee: audiences.contains(&flowform_model::Audience::Assignee),
                team: audiences.contains(&flowform_model::Audience::Team),
                department: audiences.contains(&flowform_model::Audience::Department),
            };
            workflows.insert(wf.name.clone(), reach);
        }
        Some(flowform_store::Visibility { user: actor.id.clone(), teams: actor.teams.clone(), department: actor.department.clone(), workflows })
    }

    /// The history of an instance `actor` may read.
    pub fn history_for(&self, id: &str, actor: &Actor) -> Result<Vec<Event>, CommandError> {
        self.instance_for(id, actor)?;
        Ok(self.store.history(id)?)
    }

    pub fn instances(&self, filter: &InstanceFilter) -> Result<Page, CommandError> {
        Ok(self.store.instances(filter)?)
    }

    pub fn history(&self, id: &str) -> Result<Vec<Event>, CommandError> {
        self.instance(id)?;
        Ok(self.store.history(id)?)
    }

    /// What `actor` may do on `instance` now.
    pub fn available_transitions(&self, instance: &Instance, actor: &Actor) -> Vec<AvailableTransition> {
        match self.bundle_for(&instance.bundle_version) {
            Ok(bundle) => flowform_core::available_transitions(&bundle, instance, actor, self.now()),
            Err(_) => Vec::new(),
        }
    }
}

pub(crate) fn idempotency(actor: &Actor, operation: &str, input: &Value, opts: &CommandOptions) -> Result<Option<IdempotencyKey>, CommandError> {
    let Some(key) = &opts.idempotency_key else {
        return Ok(None);
    };
    let mut h = Sha256::new();
    h.update(operation.as_bytes());
    h.update([0]);
    // Keys in a fixed order: the same body sent with its keys in another order is the same request.
    h.update(canonical(input).to_string().as_bytes());
    h.update([0]);
    h.update(opts.expected_version.map(|v| v.to_string()).unwrap_or_default().as_bytes());
    Ok(Some(IdempotencyKey { key: format!("{}\u{0}{key}", actor.id), fingerprint: hex::encode(h.finalize()) }))
}

/// How many live records of a type a rule's `find` sees.
const MAX_FOUND: usize = 1000;

/// Whether a command decided without the teams' people must be decided
/// again with them: a route rule asked to pick a person (and, without the
/// people, found no one), or — when any rule of the bundle can pick — the
/// command was refused (a later rule may have needed the picked person).
/// Deciding is pure and nothing but a pick reads the people, so the second
/// decision is the one that reading them for every command would have made.
fn needs_people(bundle: &Bundle, first: &Result<flowform_core::Outcome, flowform_core::Rejection>) -> bool {
    match first {
        Ok(outcome) => outcome.effects.iter().any(|e| matches!(e, flowform_core::Effect::Picked { .. })),
        Err(_) => can_pick(bundle),
    }
}

/// Whether a rule of the bundle may ask to `pick` a person (only such a
/// rule's decision can depend on the teams' people); found when the bundle
/// is compiled.
fn can_pick(bundle: &Bundle) -> bool {
    bundle.may_pick
}

/// Adds a record write to a command's. A second write of a record the
/// command already writes (both read at the same version) is chained after
/// the first: its changes apply on top, as the record's next version, with
/// its own event and cause.
fn merge_record_write(writes: &mut Vec<flowform_store::RecordWrite>, mut rw: flowform_store::RecordWrite) {
    let Some(prev) = writes.iter().rev().find(|w| w.record.record_type == rw.record.record_type && w.record.id == rw.record.id) else {
        writes.push(rw);
        return;
    };
    let mut record = prev.record.clone();
    let mut changes = std::collections::BTreeMap::new();
    for (field, mut change) in std::mem::take(&mut rw.event.changes) {
        let before = record.data.get(&field).cloned().unwrap_or(Value::Null);
        if before == change.after {
            continue;
        }
        change.before = before;
        record.data.insert(field.clone(), change.after.clone());
        changes.insert(field, change);
    }
    if changes.is_empty() {
        return;
    }
    record.version = prev.record.version + 1;
    record.updated_at = rw.record.updated_at;
    rw.event.seq = prev.event.seq + 1;
    rw.event.changes = changes;
    rw.expected_version = prev.record.version;
    rw.record = record;
    writes.push(rw);
}

/// `value` with the keys of every object sorted.
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), canonical(&m[k]))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// A commit outcome that the caller did not expect for its kind of write.
pub(crate) fn other_outcome(outcome: CommitOutcome) -> CommandError {
    match outcome {
        CommitOutcome::Violation(v) => CommandError::Ledger(v),
        CommitOutcome::Referenced(by) => CommandError::Referenced(format!("it is referred to by {}", by.join(", "))),
        CommitOutcome::Missing => CommandError::RecordNotFound("such record".into()),
        other => CommandError::Internal(format!("unexpected store answer {other:?}")),
    }
}

/// Commits `job` on this thread when the store's writer is idle (one
/// sequential client then waits for its sync without two thread hand-offs
/// per command), inside `block_in_place` so the runtime's other tasks move to
/// another thread meanwhile; else (a single-threaded runtime, or a busy
/// writer that batches the job with others) gives it back to be queued.
fn submit_here(store: &Arc<dyn Store>, job: Job) -> Here {
    let multi = tokio::runtime::Handle::try_current().is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if !multi || !store.writer_idle() {
        return Here::Queue(job);
    }
    tokio::task::block_in_place(|| store.submit_here(job))
}

fn check_replay(outcome: &CommitOutcome, idem: &Option<IdempotencyKey>) -> Result<(), CommandError> {
    if let (CommitOutcome::Replay(first), Some(idem)) = (outcome, idem)
        && first.fingerprint != idem.fingerprint
    {
        return Err(CommandError::IdempotencyKeyReused);
    }
    Ok(())
}

fn start_result(id: &str, committed: (CommitOutcome, Instance)) -> Result<Instance, CommandError> {
    match committed {
        (CommitOutcome::Committed, instance) => Ok(instance),
        (CommitOutcome::Replay(first), _) => first.instance.ok_or(CommandError::IdempotencyKeyReused),
        (CommitOutcome::Conflict { .. }, _) => Err(CommandError::Internal(format!("instance id {id} was generated twice"))),
        (other, _) => Err(other_outcome(other)),
    }
}
