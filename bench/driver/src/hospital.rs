//! `flowform bench`: core transitions/s in memory and durable commands/s through
//! the redb store with concurrent clients (group commit). It drives the
//! workflow and lifecycle of `bench/data/hospital.yaml` (report → accept →
//! check_in → complete → confirm); see docs/performance.md.

use anyhow::{Context, Result, bail};
use flowform_core::{Actor, Lang};
use flowform_runtime::{CommandOptions, Runtime, SystemClock};
use flowform_store::{RedbStore, Store};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An outcome's instance, or the rejection as an error.
fn decided(r: Result<flowform_core::Outcome, flowform_core::Rejection>) -> Result<flowform_core::Instance> {
    r.map(|o| o.instance).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The requester, and a technician of every team.
fn actors(bundle: &flowform_core::Bundle, teams: Vec<String>) -> (Actor, Actor) {
    let roles: Vec<String> = bundle.model.roles.keys().cloned().collect();
    let requester = Actor { id: "bench_requester".into(), name: "requester".into(), roles: roles.clone(), teams: vec![], email: None, department: None };
    let tech = Actor { id: "bench_tech".into(), name: "technician".into(), roles, teams, email: None, department: None };
    (requester, tech)
}

pub fn run(dir: &Path, instances: usize, clients: usize, durable_instances: usize) -> Result<()> {
    let bundle = flowform_runtime::load_bundle(dir).map_err(|e| anyhow::anyhow!("{e}")).context("cannot load the bundle")?;
    let d = Arc::new(crate::HospitalData::load(dir)?);
    let workflow = d.workflow.clone();
    let missing: Vec<&str> =
        d.lifecycle.iter().map(|s| s.transition.as_str()).filter(|t| bundle.workflow(&workflow).is_none_or(|wf| wf.transition(t).is_none())).collect();
    if !missing.is_empty() {
        bail!("the workflow `{workflow}` of {} has no transition {} (bench/data/hospital.yaml)", dir.display(), missing.join(", "));
    }
    println!("flowform bench: workflow `{workflow}`, bundle {}", bundle.version);
    // The store the durable part writes to, with the demo records when the
    // app has them (the work orders refer to assets; teams may be records).
    let data = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(data.path())?);
    let runtime = Arc::new(Runtime::new(bundle, store, Arc::new(SystemClock))?);
    let demo = dir.join(&d.demo);
    if demo.join("demo.yaml").exists() {
        flowform_runtime::demo::load(&demo, &runtime).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let bundle = runtime.bundle();
    let teams: Vec<String> = runtime.teams(&bundle).into_iter().map(|(name, _)| name).collect();
    let (requester, tech) = actors(&bundle, teams.clone());
    // What the core is handed with each command: the team records (as the runtime would).
    let reads = crate::scale::team_reads(&runtime, teams)?;

    // 1. The pure core, in memory.
    let now: flowform_core::Time = "2026-11-25T08:00:00.000Z".parse()?;
    let started = Instant::now();
    let mut transitions = 0u64;
    for i in 0..instances {
        let mut instance =
            decided(flowform_core::start_with(&bundle, &workflow, &d.report(i, &d.asset_codes.demo(i)), &requester, now, &format!("i{i}"), Lang::En, &reads))?;
        for (name, input, by_requester) in d.steps(i, &d.asset_codes.demo(i)) {
            let actor = if by_requester { &requester } else { &tech };
            instance = decided(flowform_core::transition_with(&bundle, instance, &name, &input, actor, now, Lang::En, &reads))?;
            transitions += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "core (in memory):   {instances} work orders, {transitions} transitions in {secs:.2} s = {:.0} transitions/s, {:.0} work orders/s (each with form validation and Rhai rules)",
        transitions as f64 / secs,
        instances as f64 / secs
    );

    // 2. Durable commands through the store, many concurrent clients.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (latencies, secs) = rt.block_on(async {
        let started = Instant::now();
        let per_client = durable_instances.div_ceil(clients.max(1));
        let mut tasks = Vec::new();
        for c in 0..clients.max(1) {
            let runtime = runtime.clone();
            let (requester, tech, workflow, d) = (requester.clone(), tech.clone(), workflow.clone(), d.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let opts = CommandOptions::default();
                for k in 0..per_client {
                    let i = c * per_client + k;
                    if i >= durable_instances {
                        break;
                    }
                    let t = Instant::now();
                    let instance = runtime.start(&workflow, &d.report(i, &d.asset_codes.demo(i)), &requester, &opts).await?;
                    latencies.push(t.elapsed());
                    for (name, input, by_requester) in d.steps(i, &d.asset_codes.demo(i)) {
                        let actor = if by_requester { &requester } else { &tech };
                        let t = Instant::now();
                        runtime.transition(&instance.id, &name, &input, actor, &opts).await?;
                        latencies.push(t.elapsed());
                    }
                }
                anyhow::Ok(latencies)
            }));
        }
        let mut all: Vec<Duration> = Vec::new();
        for t in tasks {
            all.extend(t.await??);
        }
        anyhow::Ok((all, started.elapsed().as_secs_f64()))
    })?;
    let mut sorted = latencies.clone();
    sorted.sort();
    let pct = |p: f64| sorted.get(((sorted.len() as f64 - 1.0) * p) as usize).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    let size = std::fs::metadata(data.path().join("flowform.redb")).map(|m| m.len()).unwrap_or(0);
    println!(
        "durable (redb, fsync per commit, {clients} clients): {} commands in {secs:.2} s = {:.0} commands/s; latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms; {:.1} KiB on disk per work order",
        latencies.len(),
        latencies.len() as f64 / secs,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        size as f64 / 1024.0 / durable_instances.max(1) as f64
    );
    rt.block_on(ledger(&runtime, clients))?;
    Ok(())
}

/// Movement postings/s (durable, concurrent clients) and balance queries/s on the
/// application's first ledger, over the records its dimensions refer to.
async fn ledger(runtime: &Arc<Runtime>, clients: usize) -> Result<()> {
    let bundle = runtime.bundle();
    let Some(def) = bundle.model.ledgers.values().next().cloned() else { return Ok(()) };
    let mut values: Vec<Vec<String>> = Vec::new();
    for (_, record_type) in &def.dimensions {
        let ids: Vec<String> = runtime.store().records(&record_type.value)?.into_iter().map(|r| r.id).collect();
        if ids.is_empty() {
            println!("ledger `{}`: no {} records to post against; skipped", def.name, record_type.value);
            return Ok(());
        }
        values.push(ids);
    }
    let roles: Vec<String> = bundle.model.roles.keys().cloned().collect();
    let keeper = Actor { id: "bench_keeper".into(), name: "keeper".into(), roles, teams: vec![], email: None, department: None };
    let postings_total = 4_000usize;
    let per_client = postings_total.div_ceil(clients.max(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients.max(1) {
        let (runtime, keeper, values, def) = (runtime.clone(), keeper.clone(), values.clone(), def.clone());
        tasks.push(tokio::task::spawn_blocking(move || -> Result<usize> {
            let mut n = 0;
            for k in 0..per_client {
                let i = c * per_client + k;
                let dims = def.dimensions.iter().zip(&values).map(|((d, _), ids)| (d.value.clone(), ids[i % ids.len()].clone())).collect();
                let kind = if i.is_multiple_of(2) { flowform_core::ledger::MovementKind::Receive } else { flowform_core::ledger::MovementKind::Adjust };
                let posting = flowform_core::ledger::Posting { ledger: def.name.clone(), kind, dims, quantity: 1, to: None, reason: "bench".into() };
                runtime.post_movements(&def.name, vec![posting], &keeper, &flowform_runtime::CommandOptions::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
                n += 1;
            }
            Ok(n)
        }));
    }
    let mut posted = 0;
    for t in tasks {
        posted += t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("ledger `{}` postings (durable, {clients} clients): {posted} in {secs:.2} s = {:.0} postings/s", def.name, posted as f64 / secs);
    let first_dim = def.dimensions[0].0.value.clone();
    let started = Instant::now();
    let mut queries = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        let id = values[0][queries as usize % values[0].len()].clone();
        runtime.balances(&def.name, &[(first_dim.clone(), id)], None, false).map_err(|e| anyhow::anyhow!("{e}"))?;
        queries += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("ledger `{}` balance queries (by {first_dim}, one thread): {queries} in {secs:.2} s = {:.0} queries/s", def.name, queries as f64 / secs);
    Ok(())
}

fn copy_app(from: &Path, to: &Path) -> Result<()> {
    for folder in flowform_model::sources::FOLDERS {
        copy_dir(&from.join(folder), &to.join(folder))?;
    }
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    if !from.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// Save-to-live latency: a file of a copy of the application is written, and
/// the clock runs until the runtime serves the new bundle version.
pub fn reload(dir: &Path, edits: usize) -> Result<()> {
    let app = tempfile::tempdir()?;
    copy_app(dir, app.path())?;
    let started = Instant::now();
    let bundle = flowform_runtime::load_bundle(app.path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let compile = started.elapsed();
    let data = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(data.path())?);
    let runtime = Arc::new(Runtime::new(bundle, store, Arc::new(SystemClock))?.with_app_dir(app.path().to_path_buf()));
    let watcher = flowform_runtime::watch::watch(runtime.clone(), flowform_runtime::watch::WatchMode::Auto)?;
    // The first file of definitions/ in path order: a workflow or the settings.
    let sources = flowform_runtime::sources::read_dir(app.path())?;
    let Some((target, original)) = sources.iter().find(|(p, _)| p.starts_with("definitions/")).map(|(p, t)| (p.to_string(), t.to_string())) else {
        bail!("no definitions to edit in {}", dir.display());
    };
    let mut latencies = Vec::with_capacity(edits);
    for i in 0..edits {
        let before = runtime.bundle().version.clone();
        let t = Instant::now();
        std::fs::write(app.path().join(&target), format!("{original}\n# edit {i}\n"))?;
        loop {
            if runtime.bundle().version != before {
                latencies.push(t.elapsed());
                break;
            }
            if t.elapsed() > Duration::from_secs(5) {
                bail!("edit {i} was not live after 5 s");
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        std::thread::sleep(Duration::from_millis(60));
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "reload ({} file events): {edits} edits of {target}; save-to-live median {:.1} ms, p90 {:.1} ms, max {:.1} ms (pipeline alone: {:.1} ms; debounce {} ms)",
        if watcher.polling { "polling" } else { "native" },
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() * 9 / 10]),
        ms(latencies[latencies.len() - 1]),
        ms(compile),
        flowform_runtime::watch::DEBOUNCE.as_millis()
    );
    Ok(())
}
