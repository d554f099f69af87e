//! What-if replay over a store: the recorded commands of past instances
//! decided again under a candidate bundle, nothing written (see
//! [`flowform_core::replay`]). Used by `flowform replay` on a stopped store,
//! by `POST /api/v1/admin/replay` while serving, and by scenarios.

use crate::CommandError;
use flowform_core::replay::{InstanceReplay, Recorded, Summary, replay_instance};
use flowform_core::{Bundle, Event, Lang, Reads, Time};
use flowform_store::{InstanceFilter, Store};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// What to replay.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    /// Only instances created in the last so many days (by `now`).
    pub since_days: Option<u32>,
    pub workflow: Option<String>,
    pub lang: Lang,
    /// How many affected instances to list in full (the summary counts all).
    pub list: usize,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions { since_days: None, workflow: None, lang: Lang::ZhCn, list: 200 }
    }
}

/// What a replay found.
#[derive(Clone, Debug, Serialize)]
pub struct ReplayReport {
    /// The candidate bundle's version.
    pub version: String,
    pub now: Time,
    /// Instances created at or after this moment were replayed (none: all).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    pub summary: Summary,
    /// The affected instances (up to `list`), each with its differences, the first differing step first.
    pub items: Vec<InstanceReplay>,
    /// More instances were affected than are listed.
    pub truncated: bool,
}

/// Where the candidate definitions of a replay come from.
#[derive(Clone, Copy, Debug)]
pub enum Candidate<'a> {
    /// A directory of definitions on the server, not yet copied into the live one.
    Dir(&'a std::path::Path),
    /// A stored version (`current` for the live one).
    Version(&'a str),
}

#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    #[error("the definitions in {dir} have {} problem(s)", .diagnostics.len())]
    Invalid { dir: String, diagnostics: Vec<flowform_model::Diagnostic> },
    #[error("cannot read the definitions in {dir}: {message}")]
    Unreadable { dir: String, message: String },
    #[error(transparent)]
    Command(#[from] CommandError),
}

impl crate::Runtime {
    /// The candidate bundle of a replay, compiled by the one pipeline.
    pub fn candidate(&self, candidate: Candidate) -> Result<Arc<Bundle>, CandidateError> {
        match candidate {
            Candidate::Version(v) => Ok(self.bundle_named(v)?),
            Candidate::Dir(dir) => match crate::load_bundle(dir) {
                Ok(b) => Ok(Arc::new(b)),
                Err(crate::LoadError::Invalid(diagnostics)) => Err(CandidateError::Invalid { dir: dir.display().to_string(), diagnostics }),
                Err(e) => Err(CandidateError::Unreadable { dir: dir.display().to_string(), message: e.to_string() }),
            },
        }
    }
}

/// Replays the instances of `store` under `candidate`; `old` gives the
/// bundle of a recorded version.
pub fn replay(
    store: &dyn Store,
    candidate: &Bundle,
    old: &(dyn Fn(&str) -> Option<Arc<Bundle>> + Sync),
    opts: &ReplayOptions,
    now: Time,
) -> Result<ReplayReport, CommandError> {
    if let Some(w) = &opts.workflow
        && candidate.workflow(w).is_none()
    {
        return Err(CommandError::BadQuery(format!("the candidate definitions have no workflow `{w}`")));
    }
    let since = match opts.since_days {
        Some(days) => {
            let back = jiff::SignedDuration::from_hours(-24 * i64::from(days.min(36_600)));
            Some(now.checked_add(back).ok_or_else(|| CommandError::BadQuery(format!("`since` is too far back: {days} days")))?)
        }
        None => None,
    };
    let sources = Sources::new(store, candidate);
    let threads = std::thread::available_parallelism().map_or(1, usize::from).clamp(1, 4);
    // This thread reads pages of instances, newest first, and hands them out
    // in small chunks; `threads` workers decide them, each counting into its
    // own summary and keeping the oldest `list` affected instances. Memory
    // stays flat however many there are.
    let (jobs, queue) = std::sync::mpsc::sync_channel::<Vec<flowform_core::Instance>>(threads * 4);
    // Only the workers hold the queue: if they all stop (an error, a panic),
    // it is dropped and the reader's next send fails instead of waiting.
    let queue = Arc::new(Mutex::new(queue));
    let failed = std::sync::atomic::AtomicBool::new(false);
    let (parts, read) = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (queue, sources, failed) = (queue.clone(), &sources, &failed);
                scope.spawn(move || -> Result<Part, CommandError> {
                    let mut part = Part::default();
                    let mut error = None;
                    loop {
                        let Ok(chunk) = queue.lock().map_err(|_| ()).and_then(|q| q.recv().map_err(|_| ())) else { break };
                        if error.is_some() {
                            continue; // drain, so the reader never waits on a dead worker
                        }
                        match replay_chunk(store, candidate, old, sources, &chunk, now, opts.lang) {
                            Ok(done) => done.into_iter().for_each(|r| part.add(r, opts.list)),
                            Err(e) => {
                                failed.store(true, std::sync::atomic::Ordering::Relaxed);
                                error = Some(e);
                            }
                        }
                    }
                    error.map_or(Ok(part), Err)
                })
            })
            .collect();
        drop(queue);
        let read = (|| -> Result<(), CommandError> {
            let mut before = None;
            loop {
                let filter = InstanceFilter { workflow: opts.workflow.clone(), before: before.clone(), limit: 500, ..Default::default() };
                let page = store.instances(&filter)?;
                let mut batch = Vec::with_capacity(page.items.len());
                let mut older = false;
                for i in page.items {
                    if since.is_some_and(|s| i.created_at < s) {
                        older = true;
                        break;
                    }
                    batch.push(i);
                }
                while !batch.is_empty() {
                    let rest = batch.split_off(batch.len().min(CHUNK));
                    if failed.load(std::sync::atomic::Ordering::Relaxed) || jobs.send(std::mem::replace(&mut batch, rest)).is_err() {
                        return Ok(());
                    }
                }
                match page.next {
                    Some(n) if !older => before = Some(n),
                    _ => return Ok(()),
                }
            }
        })();
        drop(jobs);
        let parts: Vec<Result<Part, CommandError>> =
            workers.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(CommandError::Internal("a replay worker panicked".into())))).collect();
        (parts, read)
    });
    read?;
    let mut all = Part::default();
    for p in parts {
        let p = p?;
        all.summary.merge(p.summary);
        for Oldest(r) in p.oldest {
            all.keep(r, opts.list);
        }
    }
    let mut items: Vec<InstanceReplay> = all.oldest.into_iter().map(|Oldest(r)| r).collect();
    items.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(ReplayReport {
        version: candidate.version.clone(),
        now,
        since,
        workflow: opts.workflow.clone(),
        truncated: all.summary.affected > items.len(),
        summary: all.summary,
        items,
    })
}

/// Instances a worker takes at a time.
const CHUNK: usize = 16;

/// Instances decided again, their histories read in one snapshot.
fn replay_chunk(
    store: &dyn Store,
    candidate: &Bundle,
    old: &(dyn Fn(&str) -> Option<Arc<Bundle>> + Sync),
    sources: &Sources,
    chunk: &[flowform_core::Instance],
    now: Time,
    lang: Lang,
) -> Result<Vec<InstanceReplay>, CommandError> {
    let ids: Vec<&str> = chunk.iter().map(|i| i.id.as_str()).collect();
    let histories = store.histories(&ids)?;
    let mut out = Vec::with_capacity(chunk.len());
    for (inst, events) in chunk.iter().zip(&histories) {
        let reads: Vec<Arc<Reads>> = events.iter().map(|e| sources.reads_of(e)).collect::<Result<_, _>>()?;
        let recorded = Recorded { instance: inst, events, reads: reads.iter().map(AsRef::as_ref).collect() };
        out.push(replay_instance(candidate, old, &recorded, now, lang));
    }
    Ok(out)
}

/// An affected instance, ordered by id (ids grow with time): the heap's top is the newest.
struct Oldest(InstanceReplay);

impl PartialEq for Oldest {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for Oldest {}
impl PartialOrd for Oldest {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Oldest {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id.cmp(&other.0.id)
    }
}

/// What one worker found: its counts and the oldest affected instances.
#[derive(Default)]
struct Part {
    summary: Summary,
    oldest: std::collections::BinaryHeap<Oldest>,
}

impl Part {
    fn add(&mut self, r: InstanceReplay, list: usize) {
        self.summary.add(&r);
        if r.affected() {
            self.keep(r, list);
        }
    }

    fn keep(&mut self, r: InstanceReplay, list: usize) {
        self.oldest.push(Oldest(r));
        if self.oldest.len() > list {
            self.oldest.pop();
        }
    }
}

/// The records decisions read, rebuilt at the versions they read, from the
/// records' and instances' histories (each history read once).
struct Sources<'s> {
    store: &'s dyn Store,
    record_types: Vec<String>,
    teams: Option<Vec<String>>,
    records: Mutex<HashMap<(String, String), Arc<RecordHistory>>>,
    instances: Mutex<HashMap<String, Arc<InstanceHistory>>>,
    /// Events that read the same records at the same versions share one `Reads`.
    reads: Mutex<HashMap<Versions, Arc<Reads>>>,
}

/// `{TYPE: {ID: version}}`: the records one decision read.
type Versions = BTreeMap<String, BTreeMap<String, u64>>;

/// An instance's number and its events.
type InstanceHistory = (Option<String>, Vec<Event>);

struct RecordHistory {
    title: String,
    events: Vec<flowform_core::records::RecordEvent>,
}

impl<'s> Sources<'s> {
    fn new(store: &'s dyn Store, candidate: &Bundle) -> Self {
        // Teams kept as records: the live ones (who may be routed to is not recorded per event).
        let teams = candidate.model.app.teams_from.as_ref().map(|kind| {
            store
                .records(&kind.value)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| !r.archived)
                .map(|r| r.id)
                .chain(candidate.model.teams.keys().cloned())
                .collect()
        });
        Sources {
            store,
            record_types: candidate.model.record_types.keys().cloned().collect(),
            teams,
            records: Mutex::default(),
            instances: Mutex::default(),
            reads: Mutex::default(),
        }
    }

    fn reads_of(&self, event: &Event) -> Result<Arc<Reads>, CommandError> {
        let poisoned = || CommandError::Internal("replay cache poisoned".into());
        if let Some(r) = self.reads.lock().map_err(|_| poisoned())?.get(&event.decided_on.records) {
            return Ok(r.clone());
        }
        let mut records = Map::new();
        for (kind, ids) in &event.decided_on.records {
            let mut entries = Map::new();
            for (id, version) in ids {
                let entry = if self.record_types.contains(kind) { self.record_at(kind, id, *version)? } else { self.instance_at(id, *version)? };
                if let Some(e) = entry {
                    entries.insert(id.clone(), e);
                }
            }
            records.insert(kind.clone(), Value::Object(entries));
        }
        let reads = Arc::new(Reads {
            records: Arc::new(Value::Object(records)),
            people: Value::Null,
            teams: self.teams.clone(),
            versions: event.decided_on.records.clone(),
        });
        let mut cache = self.reads.lock().map_err(|_| poisoned())?;
        // Bounded: stores whose orders each read their own records share little.
        if cache.len() >= 20_000 {
            cache.clear();
        }
        cache.insert(event.decided_on.records.clone(), reads.clone());
        Ok(reads)
    }

    fn record_at(&self, kind: &str, id: &str, version: u64) -> Result<Option<Value>, CommandError> {
        let key = (kind.to_string(), id.to_string());
        let cached = self.records.lock().map_err(|_| CommandError::Internal("replay cache poisoned".into()))?.get(&key).cloned();
        let history = match cached {
            Some(h) => h,
            None => {
                let title = self.store.record(kind, id)?.map_or_else(|| id.to_string(), |r| r.title);
                let h = Arc::new(RecordHistory { title, events: self.store.record_history(kind, id)? });
                self.records.lock().map_err(|_| CommandError::Internal("replay cache poisoned".into()))?.insert(key, h.clone());
                h
            }
        };
        if history.events.is_empty() {
            return Ok(None);
        }
        let mut data = Map::new();
        let mut archived = false;
        for e in history.events.iter().take_while(|e| e.seq <= version) {
            for (k, c) in &e.changes {
                if k == "archived" && matches!(e.kind, flowform_core::records::RecordEventKind::Archived | flowform_core::records::RecordEventKind::Restored) {
                    archived = c.after.as_bool().unwrap_or(false);
                } else if c.after.is_null() {
                    data.remove(k);
                } else {
                    data.insert(k.clone(), c.after.clone());
                }
            }
        }
        data.insert("id".into(), json!(id));
        data.insert("title".into(), json!(history.title));
        data.insert("archived".into(), json!(archived));
        Ok(Some(Value::Object(data)))
    }

    fn instance_at(&self, id: &str, version: u64) -> Result<Option<Value>, CommandError> {
        let cached = self.instances.lock().map_err(|_| CommandError::Internal("replay cache poisoned".into()))?.get(id).cloned();
        let history = match cached {
            Some(h) => h,
            None => {
                let number = self.store.instance(id)?.and_then(|i| i.number);
                let h = Arc::new((number, self.store.history(id)?));
                self.instances.lock().map_err(|_| CommandError::Internal("replay cache poisoned".into()))?.insert(id.to_string(), h.clone());
                h
            }
        };
        let (number, events) = history.as_ref();
        let mut data = Map::new();
        let mut state = None;
        for e in events.iter().take_while(|e| e.seq <= version) {
            state = Some(e.to_state.clone());
            for (k, c) in e.changes.iter().filter(|(k, _)| !k.starts_with("assignment.")) {
                if c.after.is_null() {
                    data.remove(k);
                } else {
                    data.insert(k.clone(), c.after.clone());
                }
            }
        }
        let Some(state) = state else { return Ok(None) };
        data.insert("id".into(), json!(id));
        data.insert("state".into(), json!(state));
        data.insert("number".into(), json!(number));
        Ok(Some(Value::Object(data)))
    }
}

/// The summary and the first differing step of each listed instance, as a
/// table for a terminal.
pub fn render_text(report: &ReplayReport, lang: Lang) -> String {
    use flowform_core::replay::DiffKind;
    use std::fmt::Write as _;
    let zh = lang == Lang::ZhCn;
    let s = &report.summary;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        if zh {
            format!("重放 {} 个实例（{} 个步骤），按版本 {} 重新判定：{} 个会有不同", s.instances, s.steps, report.version, s.affected)
        } else {
            format!("replayed {} instance(s) ({} steps) under version {}: {} would differ", s.instances, s.steps, report.version, s.affected)
        }
    );
    if s.not_replayable > 0 {
        let _ = writeln!(
            out,
            "{}",
            if zh {
                format!("{} 个实例记录于系统保存决策依据之前，未能重放", s.not_replayable)
            } else {
                format!("{} instance(s) were recorded before events kept what their decisions read, and were not replayed", s.not_replayable)
            }
        );
    }
    if s.affected == 0 {
        return out;
    }
    let _ = writeln!(out, "\n{}", if zh { "差异类型            实例数" } else { "kind of difference              instances" });
    for k in DiffKind::ALL {
        if let Some(n) = s.by_kind.get(&k) {
            let _ = writeln!(out, "  {:<30} {n:>6}", k.label(lang));
        }
    }
    if !s.team_moves.is_empty() {
        let _ = writeln!(out, "\n{}", if zh { "班组变化" } else { "routing moves" });
        for (m, n) in &s.team_moves {
            let _ = writeln!(out, "  {m:<30} {n:>6}");
        }
    }
    let _ = writeln!(out, "\n{}", if zh { "按原班组" } else { "by recorded team" });
    for (t, n) in &s.by_team {
        let _ = writeln!(out, "  {t:<30} {n:>6}");
    }
    let _ = writeln!(out, "\n{}", if zh { "按月份" } else { "by month" });
    for (m, n) in &s.by_month {
        let _ = writeln!(out, "  {m:<30} {n:>6}");
    }
    let _ = writeln!(out, "\n{}", if zh { "各实例第一个不同的步骤" } else { "first differing step of each instance" });
    for item in &report.items {
        if let Some(d) = item.differences.first() {
            let name = item.number.clone().unwrap_or_else(|| item.id.clone());
            let _ = writeln!(out, "  {name}  #{} {} [{}] {}", d.seq, d.step, d.kind.label(lang), d.message);
        }
    }
    if report.truncated {
        let _ = writeln!(out, "  … {}", if zh { "（仅列出前若干个；--format json 可得全部计数）" } else { "(only the first are listed)" });
    }
    out
}

/// Counts of each kind, as `{kind: n}` (for scenario expectations).
pub fn kind_counts(report: &ReplayReport) -> BTreeMap<String, usize> {
    report.summary.by_kind.iter().map(|(k, n)| (serde_json::to_value(k).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(), *n)).collect()
}
