//! YAML scenario tests: given/when/then over the API, readable by business staff.
//!
//! ```yaml
//! scenario: 空调报修全流程 / HVAC repair from report to close-out
//! steps:
//!   - as: nurse_li
//!     start: repair
//!     data: { category: hvac, ... }
//!     expect: { status: 201, state: unaccepted, assignment: { team: hvac_team } }
//!   - wait: 20m
//!   - as: tech_wang
//!     do: accept
//!     expect: { state: in_progress }
//! ```
//!
//! `expect` matches a subset of the response body (objects by key, lists item by
//! item); `status` is the HTTP status (default 200, or 201 for `start`).

use crate::TestApp;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::Path;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub scenario: String,
    /// Another application directory, relative to the scenario file; the app under test when absent.
    #[serde(default)]
    pub app: Option<String>,
    pub steps: Vec<Step>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Step {
    #[serde(rename = "as")]
    pub actor: Option<String>,
    pub start: Option<String>,
    #[serde(rename = "do")]
    pub transition: Option<String>,
    pub data: Option<Map<String, Value>>,
    pub expected_version: Option<u64>,
    pub expect: Option<Map<String, Value>>,
    /// Move the clock: `30s`, `20m`, `4h`, `3d`.
    pub wait: Option<String>,
    /// `history: N` checks the current instance has N events.
    pub history: Option<usize>,
    /// `instance: {...}` checks the current instance (as `GET /api/v1/instances/{id}` shows it).
    pub instance: Option<Map<String, Value>>,
    /// `inbox: { user: [template, ...] }` checks the templates in users' inboxes, newest first.
    pub inbox: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// `en` or `zh-CN` for messages.
    pub lang: Option<String>,
    /// What the step is for; shown in failures.
    pub note: Option<String>,
    /// `follow: child` (or `child 2`) makes the current instance's first
    /// (second, …) linked child the current one; `follow: parent` its parent.
    /// Done after the step's command, before its checks.
    pub follow: Option<String>,
    /// What-if: decide the instances so far again under changed definitions
    /// and check what would differ (nothing is written).
    pub replay: Option<ReplayStep>,
    /// `add_record: department` creates a record of that type with `data`, as `as`
    /// (through the records API; `expect` checks the answer, default status 201).
    pub add_record: Option<String>,
    /// `records: { "asset/EQ-000101": { data: { status: under_repair } } }` checks
    /// records as `GET /api/v1/records/{type}/{id}` shows them.
    pub records: Option<std::collections::BTreeMap<String, Map<String, Value>>>,
    /// `instances: { workflow: inspection, data: { asset: EQ-000143 }, count: 1 }`
    /// counts the instances of a workflow (in `state`, when given) whose data match.
    pub instances: Option<InstancesCheck>,
}

/// `instances:` — how many instances of `workflow` (in `state`) have data matching `data`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesCheck {
    pub workflow: String,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub data: Map<String, Value>,
    pub count: usize,
    /// `follow: true` makes the newest match the current instance.
    #[serde(default)]
    pub follow: bool,
}

/// `replay:` — the candidate is the app under test (or `dir`, relative to
/// the scenario file) with `edit`s applied to a copy.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayStep {
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub edit: Vec<Edit>,
    #[serde(default)]
    pub workflow: Option<String>,
    /// Checked against the summary: `affected`, `by_kind`, `team_moves`, `by_team`, `by_month`, `instances`, `steps`.
    #[serde(default)]
    pub expect: Map<String, Value>,
    /// The kind of the current instance's first difference, or `none`.
    #[serde(default)]
    pub current: Option<String>,
}

/// One change of a file: the first `replace` becomes `with`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edit {
    pub file: String,
    pub replace: String,
    pub with: String,
}

fn duration(text: &str) -> Result<jiff::SignedDuration, String> {
    let (n, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = n.trim().parse().map_err(|_| format!("`wait: {text}` must look like 30s, 20m, 4h or 3d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(format!("`wait: {text}`: unit must be s, m, h or d")),
    };
    Ok(jiff::SignedDuration::from_secs(secs))
}

/// Whether `actual` contains everything `expected` says; the path of the first difference otherwise.
pub fn matches(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let av = a.get(k).unwrap_or(&Value::Null);
                matches(ev, av, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            if e.len() != a.len() {
                return Err(format!("{path}: expected {} items, got {}: {}", e.len(), a.len(), Value::Array(a.clone())));
            }
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                matches(ev, av, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => Ok(()),
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{path}: expected {e}, got {a}")),
    }
}

/// Runs a scenario file against the hospital app of this repository (or the
/// app named by its `app:`, relative to the file).
pub async fn run_file(path: &Path) -> Result<(), String> {
    let root = crate::repo_root();
    run_file_in(path, &root, Some(&root.join("examples/hospital"))).await
}

/// What scenarios exercised: the states entered, the transitions taken (by
/// people or timers, read from the instances' histories) and the outcomes of
/// guarded transitions that steps tried, per workflow.
#[derive(Clone, Debug, Default)]
pub struct Coverage {
    pub states: std::collections::BTreeSet<(String, String)>,
    pub transitions: std::collections::BTreeSet<(String, String)>,
    /// (workflow, transition) → (seen true, seen false).
    pub guards: std::collections::BTreeMap<(String, String), (bool, bool)>,
}

impl Coverage {
    /// A report per workflow of `bundle`: what was covered and what was not.
    pub fn report(&self, bundle: &flowform_core::Bundle) -> String {
        let mut out = String::new();
        for wf in bundle.model.workflows.values() {
            let states: Vec<&str> = wf.states.iter().map(|s| s.name.as_str()).collect();
            let missing_states: Vec<&str> = states.iter().copied().filter(|s| !self.states.contains(&(wf.name.clone(), s.to_string()))).collect();
            let transitions: Vec<&str> = wf.transitions.iter().map(|t| t.name.as_str()).collect();
            let missing_transitions: Vec<&str> =
                transitions.iter().copied().filter(|t| !self.transitions.contains(&(wf.name.clone(), t.to_string()))).collect();
            out.push_str(&format!("{}\n", wf.name));
            out.push_str(&format!(
                "  states      {}/{}{}\n",
                states.len() - missing_states.len(),
                states.len(),
                if missing_states.is_empty() { String::new() } else { format!("   not entered: {}", missing_states.join(", ")) }
            ));
            out.push_str(&format!(
                "  transitions {}/{}{}\n",
                transitions.len() - missing_transitions.len(),
                transitions.len(),
                if missing_transitions.is_empty() { String::new() } else { format!("   not taken: {}", missing_transitions.join(", ")) }
            ));
            for t in wf.transitions.iter().filter(|t| t.when.is_some()) {
                let (yes, no) = self.guards.get(&(wf.name.clone(), t.name.clone())).copied().unwrap_or_default();
                let missing: Vec<&str> = [(yes, "true"), (no, "false")].into_iter().filter(|(seen, _)| !seen).map(|(_, w)| w).collect();
                out.push_str(&format!(
                    "  guard of {:<12}{}\n",
                    t.name,
                    if missing.is_empty() { "both outcomes seen".to_string() } else { format!("never {}", missing.join(" nor ")) }
                ));
            }
        }
        out
    }
}

/// Runs a scenario file against the application in `app_dir`, with the demo
/// data of `demo_dir`, on a temporary store and a virtual clock.
pub async fn run_file_in(path: &Path, app_dir: &Path, demo_dir: Option<&Path>) -> Result<(), String> {
    run_file_covered(path, app_dir, demo_dir, &mut Coverage::default()).await
}

/// [`run_file_in`], adding what the scenario exercised to `coverage`.
pub async fn run_file_covered(path: &Path, app_dir: &Path, demo_dir: Option<&Path>, coverage: &mut Coverage) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let scenario: Scenario = serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let data = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut app = match &scenario.app {
        None => TestApp::try_start(app_dir, demo_dir, data)?,
        Some(rel) => {
            let dir = path.parent().unwrap_or(Path::new(".")).join(rel);
            TestApp::try_start(&dir, Some(&dir), data)?
        }
    };
    let mut current: Option<String> = None;
    let mut result = Ok(());
    for (i, step) in scenario.steps.iter().enumerate() {
        let note = step.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
        let at = format!("{} — step {}{note}", scenario.scenario, i + 1);
        let base = path.parent().unwrap_or(Path::new("."));
        if let Err(e) = run_step(&mut app, step, &mut current, coverage, base).await {
            result = Err(format!("{at}: {e}"));
            break;
        }
    }
    // What every instance went through, timers and linked starts included.
    let store = app.runtime.store().clone();
    let mut before = None;
    loop {
        let filter = flowform_store::InstanceFilter { before: before.clone(), limit: 500, ..Default::default() };
        let Ok(page) = store.instances(&filter) else { break };
        for i in &page.items {
            for e in store.history(&i.id).unwrap_or_default() {
                coverage.states.insert((i.workflow.clone(), e.to_state.clone()));
                if let Some(t) = &e.transition {
                    coverage.transitions.insert((i.workflow.clone(), t.clone()));
                }
            }
        }
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    result
}

/// The longest step of the virtual clock in a `wait`.
const TICK: jiff::SignedDuration = jiff::SignedDuration::from_mins(10);

async fn run_step(app: &mut TestApp, step: &Step, current: &mut Option<String>, coverage: &mut Coverage, base: &Path) -> Result<(), String> {
    let commands = [step.start.is_some(), step.transition.is_some(), step.add_record.is_some()];
    if commands.iter().filter(|c| **c).count() > 1 {
        return Err("a step does one of `start`, `do` and `add_record`; write two steps".into());
    }
    if let Some(wait) = &step.wait {
        // Time passes as on a server, whose tick loop runs every second: in
        // steps of at most ten minutes, each running the schedules whose
        // period began (a period found more than 15 minutes late counts as
        // missed) and firing the timers due, so that what happens in a long
        // wait happens at its time.
        let mut left = duration(wait)?;
        while left > jiff::SignedDuration::ZERO {
            let step = left.min(TICK);
            app.clock.advance(step);
            left -= step;
            for run in app.runtime.run_schedules().await.map_err(|e| e.to_string())? {
                if !run.refused.is_empty() || run.retry {
                    let why = if run.refused.is_empty() { "a start failed and is tried again".to_string() } else { run.refused.join("; ") };
                    return Err(format!("schedule `{}` ({}): {why}", run.schedule, run.period));
                }
            }
            let runtime = app.runtime.clone();
            tokio::task::spawn_blocking(move || runtime.fire_due_timers()).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
        }
    }
    let lang = step.lang.as_deref().unwrap_or("zh-CN");
    let headers = [("accept-language", lang)];
    let data = Value::Object(step.data.clone().unwrap_or_default());
    let response = if let Some(workflow) = &step.start {
        let user = step.actor.as_deref().ok_or("`start` needs `as`")?;
        let body = serde_json::json!({ "data": data });
        Some((app.request(axum::http::Method::POST, &format!("/api/v1/workflows/{workflow}/instances"), Some(user), Some(body), &headers).await, 201))
    } else if let Some(name) = &step.transition {
        let user = step.actor.as_deref().ok_or("`do` needs `as`")?;
        let id = current.clone().ok_or("`do` before any `start`")?;
        let mut body = serde_json::json!({ "data": data });
        if let Some(v) = step.expected_version {
            body["expected_version"] = v.into();
        }
        Some((app.request(axum::http::Method::POST, &format!("/api/v1/instances/{id}/transitions/{name}"), Some(user), Some(body), &headers).await, 200))
    } else if let Some(kind) = &step.add_record {
        let user = step.actor.as_deref().ok_or("`add_record` needs `as`")?;
        let body = serde_json::json!({ "data": data });
        Some((app.request(axum::http::Method::POST, &format!("/api/v1/records/{kind}"), Some(user), Some(body), &headers).await, 201))
    } else {
        None
    };
    if let Some((response, _)) = &response
        && let (Some(name), Some(id)) = (&step.transition, current.as_ref())
    {
        // A guarded transition tried: its guard said yes (done) or no (`guard_failed`).
        let workflow = app.runtime.instance(id).map(|i| i.workflow).unwrap_or_default();
        let guarded = app.runtime.bundle().workflow(&workflow).and_then(|w| w.transition(name)).is_some_and(|t| t.when.is_some());
        if guarded {
            let entry = coverage.guards.entry((workflow, name.clone())).or_default();
            match (response.status.as_u16(), response.body["code"].as_str()) {
                (200, _) => entry.0 = true,
                (_, Some("guard_failed")) => entry.1 = true,
                _ => {}
            }
        }
    }
    if let Some((response, default_status)) = response {
        let mut expect = step.expect.clone().unwrap_or_default();
        let status = expect.remove("status").and_then(|s| s.as_u64()).unwrap_or(default_status);
        if response.status.as_u16() as u64 != status {
            return Err(format!("expected status {status}, got {}: {}", response.status, response.body));
        }
        matches(&Value::Object(expect), &response.body, "")?;
        if step.start.is_some()
            && status == 201
            && let Some(id) = response.body.get("id").and_then(Value::as_str)
        {
            *current = Some(id.to_string());
        }
    }
    if let Some(records) = &step.records {
        for (at, expect) in records {
            let Some((kind, id)) = at.split_once('/') else {
                return Err(format!("`records`: write `type/id`, e.g. `asset/EQ-000101`, not `{at}`"));
            };
            let response = app.get(&format!("/api/v1/records/{kind}/{id}"), "admin").await;
            if response.status != 200 {
                return Err(format!("record {at}: {} {}", response.status, response.body));
            }
            matches(&Value::Object(expect.clone()), &response.body, at)?;
        }
    }
    if let Some(check) = &step.instances {
        let store = app.runtime.store().clone();
        let mut found = Vec::new();
        let mut before = None;
        loop {
            let filter = flowform_store::InstanceFilter {
                workflow: Some(check.workflow.clone()),
                state: check.state.clone(),
                before: before.clone(),
                limit: 500,
                ..Default::default()
            };
            let page = store.instances(&filter).map_err(|e| e.to_string())?;
            let want = Value::Object(check.data.clone());
            found.extend(page.items.into_iter().filter(|i| matches(&want, &Value::Object(i.data.clone()), "").is_ok()).map(|i| i.id));
            match page.next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        if found.len() != check.count {
            let what = Value::Object(check.data.clone());
            let state = check.state.as_deref().map(|s| format!(" in state `{s}`")).unwrap_or_default();
            return Err(format!("expected {} {} instances{state} with data {what}, found {}", check.count, check.workflow, found.len()));
        }
        if check.follow {
            // Newest first.
            *current = Some(found.first().cloned().ok_or("`instances: {follow: true}` found no instance")?);
        }
    }
    if let Some(follow) = &step.follow {
        let id = current.clone().ok_or("`follow` before any `start`")?;
        let view = app.get(&format!("/api/v1/instances/{id}"), "admin").await.body;
        let next = match follow.split_whitespace().collect::<Vec<_>>().as_slice() {
            ["parent"] => view["parent"].as_str().map(str::to_string),
            ["child"] => view["children"][0].as_str().map(str::to_string),
            ["child", n] => {
                let n: usize = n.parse().map_err(|_| format!("`follow: {follow}`: write `child 2`"))?;
                view["children"][n.saturating_sub(1)].as_str().map(str::to_string)
            }
            _ => return Err(format!("`follow: {follow}`: write `parent`, `child` or `child 2`")),
        };
        *current = Some(next.ok_or_else(|| format!("`follow: {follow}`: the instance has no such link: {view}"))?);
    }
    if let Some(expect) = &step.instance {
        let id = current.clone().ok_or("`instance` before any `start`")?;
        let view = app.get(&format!("/api/v1/instances/{id}"), "admin").await.body;
        matches(&Value::Object(expect.clone()), &view, "instance")?;
    }
    if let Some(inboxes) = &step.inbox {
        for (user, expected) in inboxes {
            let items = app.get("/api/v1/inbox", user).await.body;
            let got: Vec<String> =
                items["items"].as_array().map(|a| a.iter().filter_map(|i| i["template"].as_str().map(str::to_string)).collect()).unwrap_or_default();
            if &got != expected {
                return Err(format!("inbox of {user}: expected {expected:?}, got {got:?}"));
            }
        }
    }
    if let Some(r) = &step.replay {
        replay_step(app, r, current.as_deref(), base)?;
    }
    if let Some(n) = step.history {
        let id = current.clone().ok_or("`history` before any `start`")?;
        let user = step.actor.as_deref().unwrap_or("admin");
        let events = app.get(&format!("/api/v1/instances/{id}/history"), user).await.body;
        let count = events.as_array().map_or(0, Vec::len);
        if count != n {
            return Err(format!("expected {n} history events, got {count}: {events}"));
        }
    }
    Ok(())
}

fn replay_step(app: &TestApp, r: &ReplayStep, current: Option<&str>, base: &Path) -> Result<(), String> {
    let source = r.dir.as_ref().map_or_else(|| app.app_dir.clone(), |d| base.join(d));
    let edits: Vec<(&str, &str, &str)> = r.edit.iter().map(|e| (e.file.as_str(), e.replace.as_str(), e.with.as_str())).collect();
    let copy = crate::changed_copy(&source, &edits).map_err(|e| format!("replay: {e}"))?;
    let candidate = flowform_runtime::load_bundle(copy.path()).map_err(|e| match e {
        flowform_runtime::LoadError::Invalid(d) => {
            format!(
                "replay: the changed definitions have problems: {}",
                d.iter().map(|d| format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message)).collect::<Vec<_>>().join("; ")
            )
        }
        other => format!("replay: {other}"),
    })?;
    let opts = flowform_runtime::replay::ReplayOptions { since_days: None, workflow: r.workflow.clone(), lang: flowform_core::Lang::En, list: usize::MAX };
    let report = app.runtime.what_if(&candidate, &opts).map_err(|e| format!("replay: {e}"))?;
    let summary = serde_json::to_value(&report.summary).map_err(|e| e.to_string())?;
    matches(&Value::Object(r.expect.clone()), &summary, "replay")?;
    if let Some(kind) = &r.current {
        let id = current.ok_or("`replay: { current }` before any `start`")?;
        let first = report.items.iter().find(|i| i.id == id).and_then(|i| i.differences.first());
        let got =
            first.map_or_else(|| "none".to_string(), |d| serde_json::to_value(d.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default());
        if &got != kind {
            return Err(format!(
                "replay: the current instance's first difference is `{got}`, expected `{kind}`{}",
                first.map(|d| format!(" ({})", d.message)).unwrap_or_default()
            ));
        }
    }
    Ok(())
}
