//! `flowform bench --workload core|durable|http`: the peer harness's "repair
//! lifecycle" workload (bench/WORKLOAD.md of the shared harness; mirrored from
//! its `workload.js`) on the bench application in `bench/app`. It prints one
//! JSON line in the peers' format, so `aggregate.py` compares the statistics
//! and `bench/compare.sh` puts every engine in one table.
//!
//! - `core`: the pure core in memory (`flowform_core::start/transition`), the
//!   instances, their histories and the stock kept in maps.
//! - `durable`: the runtime over the redb store, every acknowledged command
//!   fsynced, `clients` concurrent clients sharing commits.
//! - `http`: the same runtime behind the HTTP server on loopback, driven by
//!   `clients` keep-alive HTTP/1.1 connections (hyper tasks on the same tokio
//!   runtime, so the load generator shares the 2 cores without a thread per
//!   client); optionally paced to `rate` requests/s in all, latency measured
//!   from the scheduled send time.

use anyhow::{Context, Result, anyhow, bail};
use flowform_core::ledger::{Balance, MovementKind, Posting};
use flowform_core::{Actor, Effect, Event, Instance, Lang, Rejection};
use flowform_runtime::{CommandError, CommandOptions, Runtime, SystemClock};
use flowform_store::{RedbStore, Store};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CATEGORIES: [&str; 5] = ["hvac", "plumbing", "electrical", "elevator", "medical_gas"];
const BUILDINGS: [&str; 5] = ["main", "north_wing", "south_wing", "outpatient", "lab"];
const PRIORITIES: [&str; 3] = ["low", "normal", "urgent"];
const INITIAL_STOCK: i64 = 100;
const RESTOCK_QTY: i64 = 100;
const WAREHOUSE: &str = "main";
const WORKFLOW: &str = "repair";

fn part_for(category: &str) -> &'static str {
    match category {
        "hvac" => "hvac-filter",
        "plumbing" => "valve-22mm",
        "electrical" => "breaker-16a",
        "elevator" => "door-relay",
        _ => "o2-regulator",
    }
}

const PARTS: [&str; 5] = ["hvac-filter", "valve-22mm", "breaker-16a", "door-relay", "o2-regulator"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    Core,
    Durable,
    Http,
}

impl Options {
    /// The name in the peers' table: the mode, and how it was driven.
    fn peer(&self) -> String {
        match (self.mode, self.rate) {
            (Mode::Core, _) => "flowform-core".into(),
            (Mode::Durable, _) => format!("flowform-durable-c{}", self.clients),
            (Mode::Http, None) => format!("flowform-http-c{}", self.clients),
            (Mode::Http, Some(rate)) => format!("flowform-http-c{}-{}rps", self.clients, rate.round()),
        }
    }
}

pub struct Options {
    pub mode: Mode,
    pub n: usize,
    pub clients: usize,
    pub rate: Option<f64>,
    pub dir: PathBuf,
    pub data: Option<PathBuf>,
}

/// One client event of the plan: the transition it maps to and its form data.
#[derive(Clone, Debug)]
struct Step {
    transition: &'static str,
    who: String,
    input: Value,
    expect_reject: bool,
}

struct Plan {
    id: String,
    payload: Value,
    invalid: Option<Value>,
    steps: Vec<Step>,
    /// The part an ISSUE_PARTS step takes, if the plan has one.
    part: Option<&'static str>,
}

fn payload(i: usize) -> Value {
    let category = CATEGORIES[i % 5];
    let building = BUILDINGS[(i / 3) % 5];
    let floor = 1 + (i % 30);
    json!({
        "asset_id": format!("EQ-{:06}", i % 1_000_000),
        "building": building,
        "floor": floor,
        "category": category,
        "priority": PRIORITIES[i % 3],
        "description": format!("{category} fault in {building}, floor {floor}: equipment not working as expected (ticket {i})"),
        "reporter_phone": format!("+49301{:06}", i % 1_000_000),
    })
}

fn invalid_variant(p: &Value, k: usize) -> Value {
    let mut q = p.clone();
    match k {
        0 => q["asset_id"] = json!("EQ-12A"),
        1 => q["floor"] = json!(31),
        2 => q["category"] = json!("carpentry"),
        _ => q["description"] = json!("bad"),
    }
    q
}

fn plan(i: usize) -> Plan {
    let p = payload(i);
    let invalid = i.is_multiple_of(20).then(|| invalid_variant(&p, (i / 20) % 4));
    let parts = (i / 5).is_multiple_of(5);
    let fail_verify = (i / 25).is_multiple_of(10);
    let empty_notes_first = i % 10 == 4;
    let bad_rating_first = i % 10 == 6;
    let tech = format!("tech-{}", i % 40);
    let dispatcher = format!("dispatcher-{}", i % 3);
    let verifier = format!("ward-nurse-{}", i % 5);
    let asset = p["asset_id"].as_str().unwrap_or_default().to_string();
    let notes = format!("Fixed: replaced faulty component and tested ({asset})");
    let category = p["category"].as_str().unwrap_or_default().to_string();
    let step = |transition, who: &str, input: Value, expect_reject| Step { transition, who: who.to_string(), input, expect_reject };
    let mut steps = vec![step("dispatch", &dispatcher, json!({}), false), step("accept", &tech, json!({}), false), step("arrive", &tech, json!({}), false)];
    let part = parts.then(|| part_for(&category));
    if let Some(part) = part {
        steps.push(step("request_parts", &tech, json!({"part": part, "qty": 1 + i % 3}), false));
        steps.push(step("issue_parts", "storekeeper", json!({}), false));
    }
    if empty_notes_first {
        steps.push(step("complete", &tech, json!({"work_notes": ""}), true));
    }
    steps.push(step("complete", &tech, json!({"work_notes": notes}), false));
    if bad_rating_first {
        steps.push(step("verify", &verifier, json!({"rating": 0}), true));
    }
    if fail_verify {
        steps.push(step("send_back", &verifier, json!({"rating": 2}), false));
        steps.push(step("accept", &tech, json!({}), false));
        steps.push(step("arrive", &tech, json!({}), false));
        steps.push(step("complete", &tech, json!({"work_notes": format!("{notes} (rework)")}), false));
    }
    steps.push(step("verify", &verifier, json!({"rating": 4 + i % 2}), false));
    steps.push(step("close", &dispatcher, json!({}), false));
    Plan { id: format!("WO-{i:07}"), payload: p, invalid, steps, part }
}

/// The actor behind a `who` of the plan: the role follows from the name.
fn actor(who: &str) -> Actor {
    let role = if who.starts_with("tech-") {
        "technician"
    } else if who.starts_with("dispatcher-") {
        "dispatcher"
    } else if who.starts_with("ward-nurse-") {
        "verifier"
    } else if who == "storekeeper" {
        "storekeeper"
    } else {
        "reporter"
    };
    Actor { id: who.to_string(), name: who.to_string(), roles: vec![role.to_string()], teams: vec![], email: None, department: None }
}

/// The users the HTTP mode needs tokens for.
fn users() -> Vec<String> {
    let mut out = vec!["reporter".to_string(), "storekeeper".to_string()];
    out.extend((0..40).map(|k| format!("tech-{k}")));
    out.extend((0..3).map(|k| format!("dispatcher-{k}")));
    out.extend((0..5).map(|k| format!("ward-nurse-{k}")));
    out
}

/// The counters every peer reports (the peers' `newStats`).
#[derive(Default, Clone, Debug)]
struct Stats {
    instances: u64,
    closed: u64,
    transitions: u64,
    history_records: u64,
    rejected_forms: u64,
    guard_rejections: u64,
    stock_rejections: u64,
    restocks: u64,
    teams: BTreeMap<String, u64>,
    urgent_sla: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.instances += o.instances;
        self.closed += o.closed;
        self.transitions += o.transitions;
        self.history_records += o.history_records;
        self.rejected_forms += o.rejected_forms;
        self.guard_rejections += o.guard_rejections;
        self.stock_rejections += o.stock_rejections;
        self.restocks += o.restocks;
        self.urgent_sla += o.urgent_sla;
        for (k, v) in &o.teams {
            *self.teams.entry(k.clone()).or_default() += v;
        }
    }

    /// Counts a closed instance: its team, SLA and history length.
    fn closed(&mut self, team: Option<&str>, sla_minutes: Option<i64>, history: usize) {
        self.closed += 1;
        self.history_records += history as u64;
        *self.teams.entry(team.unwrap_or("none").to_string()).or_default() += 1;
        if sla_minutes == Some(30) {
            self.urgent_sla += 1;
        }
    }

    fn json(&self, final_stock: &BTreeMap<String, i64>) -> Value {
        json!({
            "instances": self.instances, "closed": self.closed, "transitions": self.transitions,
            "history_records": self.history_records, "rejected_forms": self.rejected_forms,
            "guard_rejections": self.guard_rejections, "stock_rejections": self.stock_rejections,
            "restocks": self.restocks, "teams": self.teams, "urgent_sla": self.urgent_sla, "final_stock": final_stock,
        })
    }
}

pub fn run(opts: &Options) -> Result<()> {
    let started = Instant::now();
    let bundle = flowform_runtime::load_bundle(&opts.dir).map_err(|e| anyhow!("{e}")).with_context(|| format!("cannot load {}", opts.dir.display()))?;
    if bundle.workflow(WORKFLOW).is_none() {
        bail!("{} has no workflow `{WORKFLOW}`; the workload runs on bench/app", opts.dir.display());
    }
    let setup_s = started.elapsed().as_secs_f64();
    let cpu_before = cpu_seconds();
    let result = match opts.mode {
        Mode::Core => core(&bundle, opts.n)?,
        Mode::Durable | Mode::Http => durable(bundle, opts)?,
    };
    let cpu_s = cpu_seconds() - cpu_before;
    let Outcome { stats, final_stock, wall_s, latencies_us, db_bytes, db_allocated, verified, send_late_us } = result;
    let mut line = json!({
        "peer": opts.peer(),
        "n": opts.n,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "setup_s": setup_s,
        "transitions_per_s": stats.transitions as f64 / wall_s,
        "instances_per_s": opts.n as f64 / wall_s,
        "peak_rss_mb": peak_rss_mb(),
        "stats": stats.json(&final_stock),
    });
    if opts.mode != Mode::Core {
        line["clients"] = json!(opts.clients);
        // Every command sent: starts (the refused invalid ones too), transitions, refused attempts.
        let requests = stats.instances + stats.rejected_forms + stats.transitions + stats.guard_rejections;
        line["requests_per_s"] = json!(requests as f64 / wall_s);
        line["db_bytes"] = json!(db_bytes);
        line["db_bytes_per_instance"] = json!(db_bytes as f64 / opts.n.max(1) as f64);
        // What the file's blocks take: redb grows the file by doubling, and the unwritten tail is sparse.
        line["db_allocated_bytes"] = json!(db_allocated);
        line["latency_us"] = latency_summary(latencies_us);
        line["verified_in_store"] = json!(verified);
        if let Some(rate) = opts.rate {
            line["target_rate"] = json!(rate);
            // How late the timer woke clients for the slots they waited for:
            // that much of a paced latency is the generator's own.
            line["send_late_us"] = latency_summary(send_late_us);
        }
    }
    println!("{line}");
    Ok(())
}

struct Outcome {
    stats: Stats,
    final_stock: BTreeMap<String, i64>,
    wall_s: f64,
    latencies_us: Vec<f64>,
    db_bytes: u64,
    db_allocated: u64,
    verified: bool,
    /// How late the timer woke each paced client for a slot it waited for, µs.
    send_late_us: Vec<f64>,
}

fn latency_summary(mut l: Vec<f64>) -> Value {
    if l.is_empty() {
        return json!({"count": 0});
    }
    l.sort_by(f64::total_cmp);
    let pct = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize];
    json!({
        "count": l.len(), "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "p999": pct(0.999),
        "max": l[l.len() - 1], "mean": l.iter().sum::<f64>() / l.len() as f64,
    })
}

/// Peak resident set size of this process (VmHWM), in MiB.
fn peak_rss_mb() -> f64 {
    crate::scale::memory("self").1
}

/// User + system CPU time of this process so far (from /proc, in seconds).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name in parentheses: utime is the 14th, stime the 15th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |k: usize| fields.get(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn sla_of(data: &Map<String, Value>) -> Option<i64> {
    data.get("sla_minutes").and_then(Value::as_i64)
}

// ---------------------------------------------------------------- core

/// The pure core: every decision by `flowform_core`, state in maps.
fn core(bundle: &flowform_core::Bundle, n: usize) -> Result<Outcome> {
    let now: flowform_core::Time = "2026-11-25T08:00:00.000Z".parse()?;
    let mut stock: HashMap<String, Balance> = PARTS.iter().map(|p| (p.to_string(), Balance { on_hand: INITIAL_STOCK, reserved: 0 })).collect();
    let mut stored: HashMap<String, (Instance, Vec<HistoryEntry>)> = HashMap::with_capacity(n);
    let mut s = Stats::default();
    let started = Instant::now();
    for i in 0..n {
        let p = plan(i);
        let reporter = actor(p.payload["reporter_phone"].as_str().unwrap_or_default());
        if let Some(bad) = &p.invalid {
            match flowform_core::start(bundle, WORKFLOW, bad, &reporter, now, &p.id, Lang::En) {
                Err(Rejection::InvalidInput(_)) => s.rejected_forms += 1,
                other => bail!("the invalid payload of {} was not refused as invalid: {other:?}", p.id),
            }
        }
        let first = flowform_core::start(bundle, WORKFLOW, &p.payload, &reporter, now, &p.id, Lang::En).map_err(|e| anyhow!("{}: {e}", p.id))?;
        let mut instance = first.instance;
        let mut history = vec![HistoryEntry::from(first.event)];
        s.instances += 1;
        for step in &p.steps {
            let who = actor(&step.who);
            // A step meant to be refused, or one that posts (it may be refused
            // for lack of stock and tried again), keeps the instance for after.
            let mut spare = (step.expect_reject || posts(bundle, step.transition)).then(|| instance.clone());
            let mut attempt = flowform_core::transition(bundle, instance, step.transition, &step.input, &who, now, Lang::En).map(|o| take_stock(&mut stock, o));
            if let Ok(Err(_)) = &attempt {
                // Refused for lack of stock: restock and retry.
                s.stock_rejections += 1;
                s.guard_rejections += 1;
                s.restocks += 1;
                let part = p.part.ok_or_else(|| anyhow!("{}: a stock refusal without a part", p.id))?;
                if let Some(b) = stock.get_mut(part) {
                    b.on_hand += RESTOCK_QTY;
                }
                // A step meant to be refused keeps its copy for after the retry.
                let kept = if step.expect_reject { spare.clone() } else { spare.take() };
                let instance = kept.ok_or_else(|| anyhow!("{}: `{}` was refused for stock but posts nothing", p.id, step.transition))?;
                attempt = flowform_core::transition(bundle, instance, step.transition, &step.input, &who, now, Lang::En).map(|o| take_stock(&mut stock, o));
            }
            match attempt {
                Ok(Ok(outcome)) if !step.expect_reject => {
                    instance = outcome.instance;
                    history.push(HistoryEntry::from(outcome.event));
                    s.transitions += 1;
                }
                Ok(Ok(_)) => bail!("{}: `{}` was accepted but must be refused", p.id, step.transition),
                Err(Rejection::InvalidInput(_) | Rejection::GuardFailed { .. }) if step.expect_reject => {
                    s.guard_rejections += 1;
                    instance = spare.take().ok_or_else(|| anyhow!("{}: no copy kept of the instance", p.id))?;
                }
                Err(e) => bail!("{}: `{}` refused: {e}", p.id, step.transition),
                Ok(Err(v)) => bail!("{}: still not enough stock after a restock: {v}", p.id),
            }
        }
        if instance.state != "closed" {
            bail!("{} ended in `{}`, not closed", p.id, instance.state);
        }
        s.closed(instance.assignment.team.as_deref(), sla_of(&instance.data), history.len());
        stored.insert(p.id, (instance, history));
    }
    let wall_s = started.elapsed().as_secs_f64();
    let final_stock = stock.into_iter().map(|(k, b)| (k, b.on_hand)).collect();
    let verified = stored.len() == n;
    Ok(Outcome { stats: s, final_stock, wall_s, latencies_us: Vec::new(), db_bytes: 0, db_allocated: 0, verified, send_late_us: Vec::new() })
}

/// What the workload keeps per accepted command, as the peers do: `{who, from, to, at}`.
/// (The core still produces the whole event, with the input and the changes; the
/// durable modes store all of it.)
#[allow(dead_code)] // kept, as the peers keep it, not read
struct HistoryEntry {
    who: String,
    from: Option<String>,
    to: String,
    at: flowform_core::Time,
}

impl From<Event> for HistoryEntry {
    fn from(e: Event) -> Self {
        HistoryEntry { who: e.actor, from: e.from_state, to: e.to_state, at: e.at }
    }
}

/// Whether the transition has a `post` rule (may be refused for lack of stock).
fn posts(bundle: &flowform_core::Bundle, transition: &str) -> bool {
    bundle.workflow(WORKFLOW).and_then(|w| w.transition(transition)).is_some_and(|t| t.hooks.post.is_some())
}

/// Applies the outcome's postings to the in-memory stock, all or none.
fn take_stock(stock: &mut HashMap<String, Balance>, outcome: flowform_core::Outcome) -> Result<flowform_core::Outcome, flowform_core::ledger::Violation> {
    let mut next: Vec<(String, Balance)> = Vec::new();
    for effect in &outcome.effects {
        let Effect::Post { postings } = effect else { continue };
        for posting in postings {
            let part = posting.dims.get("part").cloned().unwrap_or_default();
            let current = next.iter().rev().find(|(k, _)| *k == part).map(|(_, b)| b.clone()).unwrap_or_else(|| stock.get(&part).cloned().unwrap_or_default());
            let mut balance = current;
            for delta in flowform_core::ledger::deltas(posting) {
                balance = flowform_core::ledger::apply(&posting.ledger, &balance, &delta, true)?;
            }
            next.push((part, balance));
        }
    }
    for (k, b) in next {
        stock.insert(k, b);
    }
    Ok(outcome)
}

// ---------------------------------------------------------------- durable and HTTP

/// Per part, the plans that issue it in plan order, and how far issuing has got:
/// issues of one part run in plan order so the restocks (and the final stock)
/// are the same as in a sequential run, whatever the concurrency.
struct IssueOrder {
    position: HashMap<usize, (usize, usize)>,
    progress: Vec<tokio::sync::watch::Sender<usize>>,
}

impl IssueOrder {
    fn new(n: usize) -> IssueOrder {
        let mut position = HashMap::new();
        let mut counts = [0usize; 5];
        for i in 0..n {
            let p = plan(i);
            if let Some(part) = p.part {
                let k = PARTS.iter().position(|x| *x == part).unwrap_or(0);
                position.insert(i, (k, counts[k]));
                counts[k] += 1;
            }
        }
        IssueOrder { position, progress: (0..5).map(|_| tokio::sync::watch::channel(0).0).collect() }
    }

    async fn wait_turn(&self, i: usize) {
        if let Some((part, turn)) = self.position.get(&i) {
            let mut rx = self.progress[*part].subscribe();
            // The sender lives as long as self: wait_for only fails if it is dropped.
            let _ = rx.wait_for(|v| *v == *turn).await;
        }
    }

    fn done(&self, i: usize) {
        if let Some((part, turn)) = self.position.get(&i) {
            self.progress[*part].send_replace(turn + 1);
        }
    }
}

/// How one command fared, in the terms of the workload.
enum Answer {
    Accepted,
    InvalidInput,
    Stock,
}

/// The client side: a command to the runtime directly, or over HTTP.
trait Client: Send + Sync {
    /// Waits until the next request is due and returns when that was: now, or
    /// its slot when the client is paced. Latency counts from here, so a late
    /// server is not hidden by a late client (no coordinated omission).
    fn pace(&self) -> impl std::future::Future<Output = Instant> + Send {
        async { Instant::now() }
    }
    fn start(&self, i: usize, who: &str, payload: &Value) -> impl std::future::Future<Output = Result<(Answer, Option<String>)>> + Send;
    fn transition(&self, id: &str, name: &str, who: &str, input: &Value) -> impl std::future::Future<Output = Result<Answer>> + Send;
    fn restock(&self, part: &str) -> impl std::future::Future<Output = Result<()>> + Send;
}

fn answer(r: Result<Instance, CommandError>) -> Result<(Answer, Option<Instance>)> {
    match r {
        Ok(instance) => Ok((Answer::Accepted, Some(instance))),
        Err(CommandError::Rejected(Rejection::InvalidInput(_))) => Ok((Answer::InvalidInput, None)),
        Err(CommandError::Rejected(Rejection::GuardFailed { .. })) => Ok((Answer::InvalidInput, None)),
        Err(CommandError::Ledger(_)) => Ok((Answer::Stock, None)),
        Err(e) => Err(anyhow!("{e}")),
    }
}

struct Direct {
    runtime: Arc<Runtime>,
}

impl Client for Direct {
    async fn start(&self, _i: usize, who: &str, payload: &Value) -> Result<(Answer, Option<String>)> {
        let (a, instance) = answer(self.runtime.start(WORKFLOW, payload, &actor(who), &CommandOptions::default()).await)?;
        Ok((a, instance.map(|i| i.id)))
    }

    async fn transition(&self, id: &str, name: &str, who: &str, input: &Value) -> Result<Answer> {
        Ok(answer(self.runtime.transition(id, name, input, &actor(who), &CommandOptions::default()).await)?.0)
    }

    async fn restock(&self, part: &str) -> Result<()> {
        restock(&self.runtime, part)
    }
}

fn receive(part: &str, quantity: i64, reason: &str) -> Posting {
    Posting {
        ledger: "stock".into(),
        kind: MovementKind::Receive,
        dims: BTreeMap::from([("part".to_string(), part.to_string()), ("warehouse".to_string(), WAREHOUSE.to_string())]),
        quantity,
        to: None,
        reason: reason.into(),
    }
}

fn restock(runtime: &Runtime, part: &str) -> Result<()> {
    runtime
        .post_movements("stock", vec![receive(part, RESTOCK_QTY, "restock")], &actor("storekeeper"), &CommandOptions::default())
        .map_err(|e| anyhow!("restock of {part}: {e}"))?;
    Ok(())
}

/// Runs one plan through a client. Returns its statistics and the command latencies.
async fn drive<C: Client>(client: &C, order: &IssueOrder, i: usize, latencies: &mut Vec<f64>) -> Result<(Stats, String)> {
    let p = plan(i);
    let mut s = Stats::default();
    let reporter = p.payload["reporter_phone"].as_str().unwrap_or_default().to_string();
    if let Some(bad) = &p.invalid {
        client.pace().await;
        match client.start(i, &reporter, bad).await?.0 {
            Answer::InvalidInput => s.rejected_forms += 1,
            _ => bail!("the invalid payload of {} was not refused as invalid", p.id),
        }
    }
    let t = client.pace().await;
    let (a, id) = client.start(i, &reporter, &p.payload).await?;
    let (Answer::Accepted, Some(id)) = (a, id) else { bail!("{}: the valid payload was refused", p.id) };
    latencies.push(t.elapsed().as_secs_f64() * 1e6);
    s.instances += 1;
    for step in &p.steps {
        let issue = step.transition == "issue_parts";
        if issue {
            order.wait_turn(i).await;
        }
        let t = client.pace().await;
        let mut a = client.transition(&id, step.transition, &step.who, &step.input).await?;
        if matches!(a, Answer::Stock) {
            s.stock_rejections += 1;
            s.guard_rejections += 1;
            s.restocks += 1;
            client.restock(p.part.unwrap_or_default()).await?;
            a = client.transition(&id, step.transition, &step.who, &step.input).await?;
        }
        let elapsed = t.elapsed().as_secs_f64() * 1e6;
        if issue {
            order.done(i);
        }
        match (a, step.expect_reject) {
            (Answer::Accepted, false) => {
                latencies.push(elapsed);
                s.transitions += 1;
            }
            (Answer::InvalidInput, true) => s.guard_rejections += 1,
            (Answer::Accepted, true) => bail!("{}: `{}` was accepted but must be refused", p.id, step.transition),
            (_, false) => bail!("{}: `{}` was refused", p.id, step.transition),
            (Answer::Stock, true) => bail!("{}: `{}` refused for stock", p.id, step.transition),
        }
    }
    Ok((s, id))
}

fn durable(bundle: flowform_core::Bundle, opts: &Options) -> Result<Outcome> {
    let scratch;
    let data = match &opts.data {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            d.clone()
        }
        None => {
            scratch = tempfile::tempdir()?;
            scratch.path().to_path_buf()
        }
    };
    if data.join("flowform.redb").exists() {
        bail!("{} already has a store; the workload needs an empty data directory", data.display());
    }
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&data)?);
    let runtime = Arc::new(Runtime::new(bundle, store, Arc::new(SystemClock))?);
    let admin = actor("storekeeper");
    for part in PARTS {
        runtime.create_record("part", &json!({"code": part}), &admin, Lang::En).map_err(|e| anyhow!("part {part}: {e}"))?;
    }
    runtime.create_record("warehouse", &json!({"code": WAREHOUSE}), &admin, Lang::En).map_err(|e| anyhow!("warehouse: {e}"))?;
    let initial: Vec<Posting> = PARTS.iter().map(|p| receive(p, INITIAL_STOCK, "initial stock")).collect();
    runtime.post_movements("stock", initial, &admin, &CommandOptions::default()).map_err(|e| anyhow!("initial stock: {e}"))?;

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let order = Arc::new(IssueOrder::new(opts.n));
    let (stats, ids, latencies, wall_s, send_late) = match opts.mode {
        Mode::Http => {
            let server = rt.block_on(async {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let addr = listener.local_addr()?;
                let app = flowform_server::app(runtime.clone());
                let handle = tokio::spawn(flowform_server::serve(listener, app, std::future::pending()));
                anyhow::Ok((addr, handle))
            })?;
            let mut tokens = HashMap::new();
            for user in users() {
                let a = actor(&user);
                runtime.import_user(flowform_store::UserAccount { id: a.id, name: a.name, roles: a.roles, teams: a.teams, ..Default::default() })?;
                let token = runtime.create_token(&user, "workload", Some(1), "bench").map_err(|e| anyhow!("no token for {user}: {e}"))?.token;
                tokens.insert(user, token);
            }
            let (addr, tokens) = (server.0, Arc::new(tokens));
            let result = rt.block_on(clients_run(opts, order, || HttpClient::connect(addr, tokens.clone(), runtime.clone())));
            server.1.abort();
            result?
        }
        _ => {
            let direct = Arc::new(Direct { runtime: runtime.clone() });
            rt.block_on(clients_run(opts, order, || {
                let direct = direct.clone();
                async move { Ok(direct) }
            }))?
        }
    };

    // Outside the timed part: the store must hold what the clients were told.
    let mut verified = true;
    let mut s = stats;
    for id in &ids {
        let instance = runtime.instance(id).map_err(|e| anyhow!("{e}"))?;
        let history = runtime.history(id).map_err(|e| anyhow!("{e}"))?;
        verified &= instance.state == "closed";
        s.closed(instance.assignment.team.as_deref(), sla_of(&instance.data), history.len());
    }
    verified &= ids.len() == opts.n;
    let final_stock = runtime
        .balances("stock", &[], None, false)
        .map_err(|e| anyhow!("{e}"))?
        .into_iter()
        .map(|row| (row.dims.get("part").cloned().unwrap_or_default(), row.balance.on_hand))
        .collect();
    drop(runtime);
    let file = std::fs::metadata(data.join("flowform.redb"));
    let db_bytes = file.as_ref().map(|m| m.len()).unwrap_or(0);
    let db_allocated = file.as_ref().map(|m| std::os::unix::fs::MetadataExt::blocks(m) * 512).unwrap_or(0);
    Ok(Outcome { stats: s, final_stock, wall_s, latencies_us: latencies, db_bytes, db_allocated, verified, send_late_us: send_late })
}

/// Stats, the orders' ids, the latencies (µs), the wall time (s), and how
/// late the timer woke each paced client for a slot it waited for (µs).
type RunResult = (Stats, Vec<String>, Vec<f64>, f64, Vec<f64>);

/// `clients` tasks take plans in order from one counter until all are done,
/// each with its own client (for HTTP, its own keep-alive connection), paced
/// when `opts.rate` is set: client c sends its k-th request at
/// start + (k + c / clients) × clients / rate.
async fn clients_run<C, F, Fut>(opts: &Options, order: Arc<IssueOrder>, connect: F) -> Result<RunResult>
where
    C: Client + 'static,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<C>>,
{
    let clients = opts.clients.max(1);
    let interval = opts.rate.map(|r| Duration::from_secs_f64(clients as f64 / r));
    let mut connected = Vec::with_capacity(clients);
    for _ in 0..clients {
        connected.push(connect().await?);
    }
    let next = Arc::new(AtomicUsize::new(0));
    let late = Arc::new(std::sync::Mutex::new(Vec::new()));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (c, client) in connected.into_iter().enumerate() {
        let first = started + interval.map_or(Duration::ZERO, |d| d.mul_f64(c as f64 / clients as f64));
        let client = Paced { inner: client, interval, next_at: std::sync::Mutex::new(first), late: late.clone() };
        let (next, order, n) = (next.clone(), order.clone(), opts.n);
        tasks.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut ids = Vec::new();
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let (s, id) = drive(&client, &order, i, &mut latencies).await?;
                stats.add(&s);
                ids.push(id);
            }
            anyhow::Ok((stats, ids, latencies))
        }));
    }
    let mut all = (Stats::default(), Vec::new(), Vec::new());
    for t in tasks {
        let (s, ids, l) = t.await??;
        all.0.add(&s);
        all.1.extend(ids);
        all.2.extend(l);
    }
    let wall = started.elapsed().as_secs_f64();
    let late = std::mem::take(&mut *late.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
    Ok((all.0, all.1, all.2, wall, late))
}

impl<C: Client> Client for Arc<C> {
    async fn start(&self, i: usize, who: &str, payload: &Value) -> Result<(Answer, Option<String>)> {
        self.as_ref().start(i, who, payload).await
    }
    async fn transition(&self, id: &str, name: &str, who: &str, input: &Value) -> Result<Answer> {
        self.as_ref().transition(id, name, who, input).await
    }
    async fn restock(&self, part: &str) -> Result<()> {
        self.as_ref().restock(part).await
    }
}

/// A client whose requests are sent at fixed intervals (when `interval` is set).
struct Paced<C> {
    inner: C,
    interval: Option<Duration>,
    next_at: std::sync::Mutex<Instant>,
    /// How late the timer woke the client for each slot it waited for, µs.
    late: Arc<std::sync::Mutex<Vec<f64>>>,
}

impl<C: Client> Client for Paced<C> {
    async fn pace(&self) -> Instant {
        let Some(interval) = self.interval else { return Instant::now() };
        let at = match self.next_at.lock() {
            Ok(mut next) => {
                let at = *next;
                *next += interval;
                at
            }
            Err(_) => Instant::now(),
        };
        // How late the timer wakes the client for a slot it was waiting for
        // (tokio's timer rounds up to its next millisecond, and a woken task
        // waits for a worker): that much of the latency is the generator's
        // own. A client already behind its slot (a slow answer before) is
        // not counted here. A thread sleeping to each slot was tried: it
        // cost 10 % more CPU and left the p99 where it was.
        let waiting = at > Instant::now();
        tokio::time::sleep_until(at.into()).await;
        if waiting {
            let late = Instant::now().saturating_duration_since(at).as_secs_f64() * 1e6;
            self.late.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(late);
        }
        at
    }
    async fn start(&self, i: usize, who: &str, payload: &Value) -> Result<(Answer, Option<String>)> {
        self.inner.start(i, who, payload).await
    }
    async fn transition(&self, id: &str, name: &str, who: &str, input: &Value) -> Result<Answer> {
        self.inner.transition(id, name, who, input).await
    }
    async fn restock(&self, part: &str) -> Result<()> {
        self.inner.restock(part).await
    }
}

/// One keep-alive HTTP/1.1 connection to the server (hyper), on the same tokio
/// runtime as the server: no thread per client.
struct HttpClient {
    sender: tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<http_body_util::Full<hyper::body::Bytes>>>,
    host: String,
    tokens: Arc<HashMap<String, String>>,
    runtime: Arc<Runtime>,
}

impl HttpClient {
    async fn connect(addr: std::net::SocketAddr, tokens: Arc<HashMap<String, String>>, runtime: Arc<Runtime>) -> Result<HttpClient> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(HttpClient { sender: tokio::sync::Mutex::new(sender), host: addr.to_string(), tokens, runtime })
    }

    async fn post(&self, path: &str, who: &str, body: &Value) -> Result<(u16, Reply)> {
        use http_body_util::BodyExt;
        let user = if self.tokens.contains_key(who) { who } else { "reporter" };
        let request = hyper::Request::post(path)
            .header("host", &self.host)
            .header("authorization", format!("Bearer {}", self.tokens[user]))
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(json!({ "data": body }).to_string())))?;
        let response = {
            let mut sender = self.sender.lock().await;
            sender.ready().await?;
            sender.send_request(request).await?
        };
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        // Only what the client acts on is read out (the rest is skipped, not built).
        let mut reply: Reply = serde_json::from_slice(&bytes).unwrap_or_default();
        if !(200..300).contains(&status) {
            reply.text = String::from_utf8_lossy(&bytes).into_owned();
        }
        Ok((status, reply))
    }
}

/// The parts of an answer the load generator reads.
#[derive(Default, serde::Deserialize)]
struct Reply {
    id: Option<String>,
    code: Option<String>,
    /// An error answer's whole text, for the message.
    #[serde(skip)]
    text: String,
}

fn http_answer(status: u16, body: &Reply) -> Result<Answer> {
    match (status, body.code.as_deref()) {
        (200 | 201, _) => Ok(Answer::Accepted),
        (422, Some("form_invalid")) | (403, Some("guard_failed")) => Ok(Answer::InvalidInput),
        (409, Some("ledger_violation")) => Ok(Answer::Stock),
        _ => bail!("HTTP {status}: {}", body.text),
    }
}

impl Client for HttpClient {
    async fn start(&self, _i: usize, who: &str, payload: &Value) -> Result<(Answer, Option<String>)> {
        let (status, body) = self.post(&format!("/api/v1/workflows/{WORKFLOW}/instances"), who, payload).await?;
        let a = http_answer(status, &body)?;
        if matches!(a, Answer::Accepted) && body.id.is_none() {
            bail!("the server accepted a start without an instance id");
        }
        Ok((a, body.id))
    }

    async fn transition(&self, id: &str, name: &str, who: &str, input: &Value) -> Result<Answer> {
        let (status, body) = self.post(&format!("/api/v1/instances/{id}/transitions/{name}"), who, input).await?;
        http_answer(status, &body)
    }

    async fn restock(&self, part: &str) -> Result<()> {
        restock(&self.runtime, part)
    }
}
