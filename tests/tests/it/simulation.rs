//! Whole bundles made up at random — states, transitions, SLAs and timed
//! steps with any durations, calendars, schedules with any periods, forms —
//! each compiled and, when it compiles, run for a simulated week on a
//! virtual clock: instances started and moved, timers fired, schedules run.
//! Nothing in a definition or in the data may make the engine panic.
//!
//! A few bundles in every CI run; `FLOWFORM_SIMULATE=1` generates bundles for
//! ten minutes (`FLOWFORM_SIMULATE_SECS` to change it).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_tests::TestApp;
use jiff::SignedDuration;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::json;
use std::fmt::Write as _;

#[derive(Clone, Debug)]
struct Shape {
    states: usize,
    transitions: Vec<(usize, usize, bool)>,
    slas: Vec<Option<i64>>,
    steps: Vec<(usize, i64)>,
    calendar_hours: (u8, u8),
    zone: usize,
    every: (usize, i64),
    at: (u8, u8),
    field_max: i64,
    commands: Vec<(usize, i64, u32)>,
}

const ZONES: [&str; 4] = ["Asia/Shanghai", "Europe/Berlin", "America/New_York", "UTC"];
const UNITS: [&str; 5] = ["minutes", "hours", "days", "weeks", "months"];

fn shape() -> impl Strategy<Value = Shape> {
    (
        2usize..6,
        prop::collection::vec((0usize..6, 0usize..6, any::<bool>()), 1..8),
        prop::collection::vec(prop::option::of(prop_oneof![0i64..600, 0i64..6_000_000, Just(5_270_400i64), Just(i64::MAX)]), 6),
        prop::collection::vec((0usize..6, prop_oneof![1i64..120, Just(0i64), Just(5_000_000i64)]), 0..4),
        (0u8..23, 0u8..12),
        0usize..4,
        (0usize..5, prop_oneof![8 => 1i64..5, 1 => Just(120i64), 1 => Just(300_000i64)]),
        (0u8..24, 0u8..60),
        prop_oneof![Just(10i64), Just(i64::MAX), 0i64..1000],
        prop::collection::vec((0usize..8, prop_oneof![Just(1i64), Just(i64::MAX), Just(-5i64), 0i64..10_000], 30u32..600), 1..30),
    )
        .prop_map(|(states, transitions, slas, steps, calendar_hours, zone, every, at, field_max, commands)| Shape {
            states,
            transitions,
            slas,
            steps,
            calendar_hours,
            zone,
            every,
            at,
            field_max,
            commands,
        })
}

/// The files of one made-up application.
fn files(s: &Shape) -> Vec<(String, String)> {
    let zone = ZONES[s.zone];
    let app = format!(
        "app:\n  name: sim\n  title: Simulated\n  timezone: {zone}\nroles:\n  staff: {{ label: Staff }}\n  tech: {{ label: Tech }}\nteams:\n  t1: {{ label: Team }}\n"
    );
    let (from_h, to_h) = s.calendar_hours;
    // Mostly a valid range (from < to); now and then one the checks must refuse.
    let to_h = if to_h == 0 { from_h } else { (from_h + to_h).min(24) };
    let calendar = format!("calendar: working\ntimezone: {zone}\nhours: [\"{from_h:02}:00-{to_h:02}:00\"]\nweekdays: [mon, tue, wed, thu, fri]\n");
    let mut wf = String::from("workflow: w\nvisible_to: [requester, team, role:tech]\nstart: { form: f, roles: [staff] }\ninitial: s0\nstates:\n");
    for i in 0..s.states {
        let final_ = i == s.states - 1;
        let _ = write!(wf, "  s{i}:\n    label: S{i}\n");
        if final_ {
            wf.push_str("    final: true\n");
            continue;
        }
        match s.slas.get(i).copied().flatten() {
            Some(m) if m % 3 == 0 => {
                let _ = writeln!(wf, "    sla: {{ minutes: {m}, calendar: working }}");
            }
            Some(_) => wf.push_str("    sla: { minutes: amount }\n"),
            None => {}
        }
        let steps: Vec<&(usize, i64)> = s.steps.iter().filter(|(st, _)| *st == i).collect();
        if !steps.is_empty() {
            wf.push_str("    escalations:\n");
            for (_, after) in steps {
                let _ = writeln!(wf, "      - {{ after: {after}, set: {{ escalated: true }} }}");
            }
        }
    }
    wf.push_str("transitions:\n");
    for (k, (from, to, tech)) in s.transitions.iter().enumerate() {
        let from = from % (s.states - 1).max(1);
        let to = to % s.states;
        let roles = if *tech { "[tech]" } else { "[requester]" };
        let _ = writeln!(wf, "  - {{ name: t{k}, from: s{from}, to: s{to}, roles: {roles} }}");
    }
    // Every non-final state needs a way out and every state a way in: chain them.
    for i in 0..s.states - 1 {
        let _ = writeln!(wf, "  - {{ name: next{i}, from: s{i}, to: s{}, roles: [tech] }}", i + 1);
    }
    let max = if s.field_max == i64::MAX { String::new() } else { format!(", max: {}", s.field_max) };
    let form = format!("form: f\nfields:\n  amount: {{ type: integer, min: 0{max} }}\n  note: {{ type: text }}\n");
    let (unit, n) = s.every;
    let schedule = format!(
        "schedule: sim_plan\nworkflow: w\nroles: [staff]\nevery: {{ {}: {n} }}\nat: \"{:02}:{:02}\"\ndata: {{ amount: 1 }}\n",
        UNITS[unit], s.at.0, s.at.1
    );
    vec![
        ("definitions/app.yaml".into(), app),
        ("definitions/calendar.yaml".into(), calendar),
        ("definitions/w.yaml".into(), wf),
        ("definitions/plan.yaml".into(), schedule),
        ("forms/f.yaml".into(), form),
    ]
}

/// Compiles the bundle and, when it compiles, runs it for a week (`true`).
fn simulate(s: &Shape, rt: &tokio::runtime::Runtime) -> bool {
    let dir = tempfile::tempdir().unwrap();
    for (path, text) in files(s) {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let app = match TestApp::try_start(dir.path(), None, tempfile::tempdir().unwrap()) {
        Ok(app) => app,
        // Refused with diagnostics: fine, as long as it did not panic.
        Err(e) => {
            if std::env::var("FLOWFORM_SIMULATE_DEBUG").is_ok() {
                eprintln!("refused: {e}");
            }
            return false;
        }
    };
    let runtime = app.runtime.clone();
    for (id, roles, teams) in [("u_staff", vec!["staff"], vec![]), ("u_tech", vec!["tech"], vec!["t1"])] {
        runtime
            .import_user(flowform_store::UserAccount {
                id: id.into(),
                name: id.into(),
                roles: roles.into_iter().map(String::from).collect(),
                teams: teams.into_iter().map(String::from).collect(),
                ..Default::default()
            })
            .unwrap();
    }
    let staff = flowform_runtime::accounts::actor_of(&runtime.user_account("u_staff").unwrap());
    let tech = flowform_runtime::accounts::actor_of(&runtime.user_account("u_tech").unwrap());
    let mut ids: Vec<String> = Vec::new();
    let week = SignedDuration::from_hours(24 * 7);
    let mut elapsed = SignedDuration::ZERO;
    let mut k = 0;
    while elapsed < week {
        let (pick, amount, step) = s.commands[k % s.commands.len()];
        k += 1;
        rt.block_on(async {
            let opts = flowform_runtime::CommandOptions::default();
            if pick < 3 || ids.is_empty() {
                if let Ok(i) = runtime.start("w", &json!({"amount": amount, "note": "x"}), &staff, &opts).await {
                    ids.push(i.id);
                }
            } else {
                let id = ids[pick % ids.len()].clone();
                let name = if pick % 2 == 0 { format!("next{}", pick % 5) } else { format!("t{}", pick % 8) };
                let who = if pick % 3 == 0 { &staff } else { &tech };
                let _ = runtime.transition(&id, &name, &json!({}), who, &opts).await;
            }
            let _ = runtime.run_schedules().await;
        });
        let _ = runtime.fire_due_timers();
        let _ = runtime.deliver_outbox();
        let by = SignedDuration::from_mins(i64::from(step));
        app.clock.advance(by);
        elapsed += by;
    }
    assert!(runtime.store().healthy());
    if std::env::var("FLOWFORM_SIMULATE_DEBUG").is_ok() {
        eprintln!("ran: {k} steps, {} instances", ids.len());
    }
    true
}

/// Runs `cases` bundles (again and again until `budget` is spent); returns
/// how many compiled and ran, and how many were refused.
fn run(cases: u32, budget: Option<std::time::Duration>) -> (usize, usize) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let started = std::time::Instant::now();
    let counts = std::cell::Cell::new((0, 0));
    loop {
        let config = Config { cases, failure_persistence: None, ..Config::default() };
        // Every CI run checks the same bundles (a failure there is reproducible);
        // the long run draws new ones each time.
        let mut runner =
            if budget.is_some() { TestRunner::new(config) } else { TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha)) };
        runner
            .run(&shape(), |s| {
                let (ran, refused) = counts.get();
                counts.set(if simulate(&s, &rt) { (ran + 1, refused) } else { (ran, refused + 1) });
                Ok(())
            })
            .unwrap();
        if budget.is_none_or(|b| started.elapsed() >= b) {
            return counts.get();
        }
    }
}

#[test]
fn made_up_bundles_run_a_simulated_week_without_a_panic() {
    if std::env::var("FLOWFORM_SIMULATE").is_ok_and(|v| v == "1") {
        let secs = std::env::var("FLOWFORM_SIMULATE_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
        let (ran, refused) = run(32, Some(std::time::Duration::from_secs(secs)));
        println!("simulation: {ran} bundles ran a week, {refused} were refused by the checks");
    } else {
        let (ran, refused) = run(8, None);
        // The generator must make runnable bundles, or this test proves nothing.
        assert!(ran >= 2, "only {ran} of {} made-up bundles compiled", ran + refused);
    }
}
