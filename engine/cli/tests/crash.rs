//! Crash test: `kill -9` the server under concurrent load, restart it, and check
//! that nothing acknowledged was lost or applied twice.
//!
//! Opt-in, as it takes a while: `FLOWFORM_CRASH_TEST=1 cargo test --release -p
//! flowform --test crash` runs 10 rounds; `FLOWFORM_CRASH_ROUNDS=50`
//! is the long mode. `FLOWFORM_CRASH_SEED` repeats a run's kill moments.
//!
//! Each round: the server runs the bench application (bench/app) with a small
//! opening stock; worker threads take work orders through their lifecycle,
//! including parts issues that the stock ledger refuses when it runs short (the
//! worker then restocks and retries); every acknowledged command is logged.
//! At a random moment the server is killed with SIGKILL. The store is then opened
//! directly and checked: every acknowledged start and transition is present
//! exactly once with the version the client was told, every history is
//! complete and chained, no instance is half-applied, no part was issued twice,
//! every acknowledged restock is there once, and every balance equals the sum of
//! its movements and is not negative. The server restarts and the commands that
//! were in flight at the kill are retried with their Idempotency-Key: each must
//! be applied once, whether or not it had reached the disk.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use flowform_store::{RedbStore, Store};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WORKERS: usize = 8;
const PARTS: [&str; 3] = ["filter", "valve", "relay"];
const OPENING_STOCK: i64 = 12;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// Users, parts, the warehouse and the opening stock, as `serve --demo` loads them.
fn demo_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("records")).unwrap();
    std::fs::write(
        p.join("users.yaml"),
        "users:\n  - { id: reporter, name: reporter, roles: [reporter] }\n  - { id: dispatcher, name: dispatcher, roles: [dispatcher] }\n  \
         - { id: tech, name: tech, roles: [technician] }\n  - { id: keeper, name: keeper, roles: [storekeeper] }\n  - { id: nurse, name: nurse, roles: [verifier] }\n",
    )
    .unwrap();
    std::fs::write(
        p.join("demo.yaml"),
        "users: users.yaml\nrecords:\n  - { type: warehouse, file: records/warehouse.csv }\n  - { type: part, file: records/part.csv }\nstock:\n  - { ledger: stock, file: stock.csv }\n",
    )
    .unwrap();
    std::fs::write(p.join("records/warehouse.csv"), "code\nmain\n").unwrap();
    std::fs::write(p.join("records/part.csv"), format!("code\n{}\n", PARTS.join("\n"))).unwrap();
    let stock: String = PARTS.iter().map(|part| format!("{part},main,{OPENING_STOCK}\n")).collect();
    std::fs::write(p.join("stock.csv"), format!("part,warehouse,quantity\n{stock}")).unwrap();
    dir
}

struct Server {
    child: Child,
    base: String,
}

impl Server {
    fn start(data: &Path, demo: &Path) -> Server {
        let (child, addr) = common::serve(&repo().join("bench/app"), data, &[OsStr::new("--demo-dir"), demo.as_os_str()]);
        Server { child, base: format!("http://{addr}") }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

fn token(data: &Path, user: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_flowform")).args(["token", "--user", user, "--data"]).arg(data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string()
}

/// A command as sent: retried verbatim (same Idempotency-Key) when its answer was lost.
#[derive(Clone, Debug)]
struct Request {
    key: String,
    path: String,
    user: &'static str,
    body: Value,
    what: What,
}

#[derive(Clone, Debug)]
enum What {
    Start,
    Transition { id: String, name: &'static str },
    Restock { reason: String },
}

/// What the clients were told, and what they could not learn.
#[derive(Default)]
struct Log {
    started: Vec<String>,
    /// (instance, version the server returned, transition)
    transitions: Vec<(String, u64, String)>,
    restocks: Vec<String>,
    /// Instance → (part, quantity) it requested.
    requested: HashMap<String, (String, i64)>,
}

enum Answer {
    Ok(Value),
    Refused(u16, Value),
    Lost,
}

struct Client {
    base: String,
    tokens: Arc<HashMap<&'static str, String>>,
    agent: ureq::Agent,
}

impl Client {
    fn send(&self, r: &Request) -> Answer {
        let sent = self
            .agent
            .post(format!("{}{}", self.base, r.path))
            .header("Authorization", format!("Bearer {}", self.tokens[r.user]))
            .header("Content-Type", "application/json")
            .header("Idempotency-Key", &r.key)
            .send(r.body.to_string());
        let Ok(mut response) = sent else { return Answer::Lost };
        let status = response.status().as_u16();
        let Ok(text) = response.body_mut().read_to_string() else { return Answer::Lost };
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) { Answer::Ok(body) } else { Answer::Refused(status, body) }
    }
}

/// The lifecycle of one work order on bench/app: (transition, user, data).
fn steps(part: &str, qty: i64) -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("dispatch", "dispatcher", json!({})),
        ("accept", "tech", json!({})),
        ("arrive", "tech", json!({})),
        ("request_parts", "tech", json!({"part": part, "qty": qty})),
        ("issue_parts", "keeper", json!({})),
        ("complete", "tech", json!({"work_notes": "replaced and tested"})),
        ("verify", "nurse", json!({"rating": 5})),
        ("close", "dispatcher", json!({})),
    ]
}

/// One worker's progress, kept across rounds.
#[derive(Default)]
struct Worker {
    current: Option<(String, usize)>,
    in_flight: Option<Request>,
    made: u64,
}

static KEYS: AtomicU64 = AtomicU64::new(0);

fn key(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), KEYS.fetch_add(1, Ordering::Relaxed))
}

/// Records an acknowledged command in the log.
fn acknowledge(log: &Mutex<Log>, r: &Request, body: &Value) -> Option<String> {
    let mut log = log.lock().unwrap();
    match &r.what {
        What::Start => {
            let id = body["id"].as_str().unwrap().to_string();
            log.started.push(id.clone());
            Some(id)
        }
        What::Transition { id, name } => {
            let version = body["version"].as_u64().unwrap();
            log.transitions.push((id.clone(), version, name.to_string()));
            if *name == "request_parts" {
                log.requested.insert(id.clone(), (r.body["data"]["part"].as_str().unwrap().to_string(), r.body["data"]["qty"].as_i64().unwrap()));
            }
            None
        }
        What::Restock { reason } => {
            log.restocks.push(reason.clone());
            None
        }
    }
}

/// Runs one worker until the server dies (or `stop`). Returns its state.
fn work(w: usize, mut me: Worker, client: &Client, log: &Mutex<Log>, stop: &AtomicBool) -> Worker {
    // First the command whose answer was lost at the last kill: same key, once.
    if let Some(r) = me.in_flight.take() {
        match client.send(&r) {
            Answer::Ok(body) => advance(&mut me, &r, acknowledge(log, &r, &body)),
            Answer::Refused(409, body) if body["code"] == "ledger_violation" => {}
            Answer::Refused(status, body) => panic!("retry of {r:?} after the restart: {status} {body}"),
            Answer::Lost => {
                me.in_flight = Some(r);
                return me;
            }
        }
    }
    while !stop.load(Ordering::Relaxed) {
        let r = next_request(w, &mut me);
        match client.send(&r) {
            Answer::Ok(body) => advance(&mut me, &r, acknowledge(log, &r, &body)),
            Answer::Refused(409, body) if body["code"] == "ledger_violation" => {
                // Short of stock: restock that part (its own acknowledged command), then retry the issue.
                let (id, _) = me.current.clone().unwrap();
                let part = log.lock().unwrap().requested[&id].0.clone();
                let reason = key("restock");
                let restock = Request {
                    key: reason.clone(),
                    path: "/api/v1/ledgers/stock/movements".into(),
                    user: "keeper",
                    body: json!({"movements": [{"kind": "receive", "part": part, "warehouse": "main", "quantity": 10, "reason": reason}]}),
                    what: What::Restock { reason: reason.clone() },
                };
                match client.send(&restock) {
                    Answer::Ok(body) => {
                        acknowledge(log, &restock, &body);
                    }
                    Answer::Refused(status, body) => panic!("restock refused: {status} {body}"),
                    Answer::Lost => {
                        me.in_flight = Some(restock);
                        return me;
                    }
                }
            }
            Answer::Refused(status, body) => panic!("worker {w}: {r:?} refused: {status} {body}"),
            Answer::Lost => {
                me.in_flight = Some(r);
                return me;
            }
        }
    }
    me
}

fn next_request(w: usize, me: &mut Worker) -> Request {
    match &me.current {
        None => {
            me.made += 1;
            let k = me.made as usize + w;
            let body = json!({"data": {
                "asset_id": format!("EQ-{:06}", k), "building": "main", "floor": 1 + k % 30, "category": "hvac",
                "priority": "normal", "description": "crash test work order", "reporter_phone": "+8610000000",
            }});
            Request { key: key("start"), path: "/api/v1/workflows/repair/instances".into(), user: "reporter", body, what: What::Start }
        }
        Some((id, step)) => {
            let k = id.bytes().map(usize::from).sum::<usize>();
            let (name, user, data) = steps(PARTS[k % PARTS.len()], 1 + (k % 3) as i64).swap_remove(*step);
            Request {
                key: key("t"),
                path: format!("/api/v1/instances/{id}/transitions/{name}"),
                user,
                body: json!({ "data": data }),
                what: What::Transition { id: id.clone(), name },
            }
        }
    }
}

fn advance(me: &mut Worker, r: &Request, started: Option<String>) {
    match (&r.what, started) {
        (What::Start, Some(id)) => me.current = Some((id, 0)),
        (What::Transition { .. }, _) => {
            if let Some((_, step)) = &mut me.current {
                *step += 1;
                if *step == steps("x", 1).len() {
                    me.current = None;
                }
            }
        }
        _ => {}
    }
}

/// Opens the store the killed server left and checks every invariant.
fn verify(data: &Path, log: &Log, workers: &[Worker]) -> (usize, usize) {
    let store = RedbStore::open(data).expect("the store opens after a kill -9");
    let in_flight: Vec<&Request> = workers.iter().filter_map(|w| w.in_flight.as_ref()).collect();
    // Every instance that exists: the acknowledged ones and any in-flight start that reached the disk.
    let mut acked: BTreeMap<&str, Vec<(u64, &str)>> = BTreeMap::new();
    for id in &log.started {
        acked.entry(id.as_str()).or_default();
    }
    for (id, version, name) in &log.transitions {
        acked.entry(id.as_str()).or_default().push((*version, name.as_str()));
    }
    let movements = store.movements("stock", 0, usize::MAX).unwrap();
    for (id, transitions) in &acked {
        let instance = store.instance(id).unwrap().unwrap_or_else(|| panic!("acknowledged instance {id} is missing"));
        let history = store.history(id).unwrap();
        assert_eq!(history.len() as u64, instance.version, "{id}: the history does not match the instance version (half-applied)");
        for (k, event) in history.iter().enumerate() {
            assert_eq!(event.seq, k as u64 + 1, "{id}: history not contiguous");
            if k > 0 {
                assert_eq!(event.from_state.as_deref(), Some(history[k - 1].to_state.as_str()), "{id}: history not chained at {}", event.seq);
            }
        }
        assert_eq!(history.last().map(|e| e.to_state.as_str()), Some(instance.state.as_str()), "{id}: state differs from its last event");
        for (version, name) in transitions {
            let event = &history[*version as usize - 1];
            assert_eq!(event.transition.as_deref(), Some(*name), "{id}: acknowledged `{name}` at version {version} is not in the history");
        }
        // Exactly once: beyond the acknowledged ones, at most the command in flight for this instance.
        let pending = in_flight.iter().filter(|r| matches!(&r.what, What::Transition { id: i, .. } if i == id)).count();
        let extra = history.len() - 1 - transitions.len();
        assert!(extra <= pending, "{id}: {extra} event(s) nobody acknowledged and only {pending} in flight: a command was applied twice");
        // Never issued twice, and issued exactly what was requested.
        let issues: Vec<_> = movements.iter().filter(|m| m.instance_id.as_deref() == Some(id) && m.kind == "issue").collect();
        let issued_event = history.iter().any(|e| e.transition.as_deref() == Some("issue_parts"));
        assert_eq!(issues.len(), usize::from(issued_event), "{id}: {} issue movement(s), issue event: {issued_event}", issues.len());
        if let (Some(m), Some((part, qty))) = (issues.first(), log.requested.get(*id)) {
            assert_eq!((m.dims["part"].as_str(), m.quantity), (part.as_str(), *qty), "{id}: issued something else than requested");
        }
    }
    for reason in &log.restocks {
        let n = movements.iter().filter(|m| &m.reason == reason).count();
        assert_eq!(n, 1, "acknowledged restock {reason} is there {n} time(s)");
    }
    // Every balance is the sum of its movements, and never negative.
    let mut sums: BTreeMap<Vec<(String, String)>, (i64, i64)> = BTreeMap::new();
    for m in &movements {
        let e = sums.entry(m.dims.clone().into_iter().collect()).or_default();
        e.0 += m.on_hand_delta;
        e.1 += m.reserved_delta;
    }
    let balances = store.balances("stock").unwrap();
    assert_eq!(balances.len(), sums.len(), "balances and movements cover different parts");
    for b in &balances {
        let key: Vec<(String, String)> = b.dims.clone().into_iter().collect();
        assert_eq!(sums.get(&key), Some(&(b.balance.on_hand, b.balance.reserved)), "balance of {key:?} is not the sum of its movements");
        assert!(b.balance.on_hand >= 0 && b.balance.available() >= 0, "negative balance {key:?}: {:?}", b.balance);
    }
    (acked.len(), log.transitions.len())
}

/// A small xorshift generator: the kill moments, repeatable from the seed.
fn next_random(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// A program of its own (`harness = false`): without `FLOWFORM_CRASH_TEST` it
/// runs nothing and says so, instead of reporting a test that passed.
fn main() {
    if std::env::var("FLOWFORM_CRASH_TEST").is_err() {
        println!("crash test not run: set FLOWFORM_CRASH_TEST=1 (and FLOWFORM_CRASH_ROUNDS=50 for the long mode)");
        return;
    }
    kill_dash_nine_loses_and_duplicates_nothing_acknowledged();
    println!("crash test: passed");
}

fn kill_dash_nine_loses_and_duplicates_nothing_acknowledged() {
    let rounds: usize = std::env::var("FLOWFORM_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let mut seed: u64 = std::env::var("FLOWFORM_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1);
    eprintln!("crash test: {rounds} rounds, FLOWFORM_CRASH_SEED={seed}");
    let data = tempfile::tempdir().unwrap();
    let demo = demo_dir();
    let server = Server::start(data.path(), demo.path());
    let tokens: Arc<HashMap<&'static str, String>> =
        Arc::new(["reporter", "dispatcher", "tech", "keeper", "nurse"].into_iter().map(|u| (u, token(data.path(), u))).collect());
    let log = Arc::new(Mutex::new(Log::default()));
    let mut workers: Vec<Worker> = (0..WORKERS).map(|_| Worker::default()).collect();
    let mut server = Some(server);
    for round in 1..=rounds {
        let s = server.take().unwrap_or_else(|| Server::start(data.path(), demo.path()));
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = std::mem::take(&mut workers)
            .into_iter()
            .enumerate()
            .map(|(w, me)| {
                let client = Client {
                    base: s.base.clone(),
                    tokens: tokens.clone(),
                    agent: ureq::Agent::config_builder().http_status_as_error(false).timeout_global(Some(Duration::from_secs(20))).build().new_agent(),
                };
                let (log, stop) = (log.clone(), stop.clone());
                std::thread::spawn(move || work(w, me, &client, &log, &stop))
            })
            .collect();
        let after = Duration::from_millis(200 + next_random(&mut seed) % 1300);
        std::thread::sleep(after);
        s.kill9();
        stop.store(true, Ordering::Relaxed);
        workers = handles.into_iter().map(|h| h.join().expect("a worker panicked")).collect();
        let (instances, transitions) = verify(data.path(), &log.lock().unwrap(), &workers);
        let pending = workers.iter().filter(|w| w.in_flight.is_some()).count();
        let restocks = log.lock().unwrap().restocks.len();
        eprintln!(
            "round {round}: killed after {} ms; {instances} instances, {transitions} acknowledged transitions, {restocks} restocks verified; {pending} in flight",
            after.as_millis()
        );
    }
    // The last commands in flight are retried once more on a final server, then everything is checked again.
    let s = Server::start(data.path(), demo.path());
    let stop = AtomicBool::new(true);
    let client = Client { base: s.base.clone(), tokens: tokens.clone(), agent: ureq::Agent::config_builder().http_status_as_error(false).build().new_agent() };
    workers = workers.into_iter().enumerate().map(|(w, me)| work(w, me, &client, &log, &stop)).collect();
    assert!(workers.iter().all(|w| w.in_flight.is_none()), "a retried command got no answer from a running server");
    s.kill9();
    let (instances, transitions) = verify(data.path(), &log.lock().unwrap(), &workers);
    assert!(transitions > 0, "the load never got going");
    eprintln!("crash test passed: {rounds} kills, {instances} instances, {transitions} acknowledged transitions, all present exactly once");
}
