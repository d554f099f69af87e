//! `flowform bench --scale N --data DIR`: the hospital application with N archived
//! work orders (and their assets and histories), then what users would feel:
//! server start-up time, memory, a filtered list page, one instance's history,
//! the count by state and team, one asset's history. See docs/performance.md.
//!
//! The orders are decided by the pure core exactly as live ones (the same forms,
//! rules and routing), dated over the last three years, and written through the
//! store's bulk import job (which keeps the same index and counts as commands).
//! A data directory that already holds a store is measured as it is, so the
//! generation (minutes for a million) is paid once.

use anyhow::{Context, Result, anyhow, bail};
use flowform_core::{Actor, Lang};
use flowform_runtime::{Runtime, SystemClock};
use flowform_store::{ImportedInstance, Job, RedbStore, Store};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Instances per import job (one write transaction each).
const BATCH: usize = 2_000;

/// `exe` is the `flowform` binary: it serves the store and makes the tokens.
pub fn run(exe: &Path, dir: &Path, data: &Path, n: usize, assets: usize) -> Result<()> {
    let d = crate::HospitalData::load(dir)?;
    if !data.join("flowform.redb").exists() {
        generate(&d, dir, data, n, assets)?;
    } else {
        println!("scale: measuring the existing store in {}", data.display());
    }
    measure(&d, exe, dir, data)
}

/// What the dispatch rule reads when teams are records: every team record,
/// at its version, and the team names.
pub fn team_reads(runtime: &Runtime, teams: Vec<String>) -> Result<flowform_core::Reads> {
    let bundle = runtime.bundle();
    let mut records = serde_json::Map::new();
    let mut versions = std::collections::BTreeMap::new();
    if let Some(kind) = &bundle.model.app.teams_from {
        let all: serde_json::Map<String, Value> = runtime
            .store()
            .records(&kind.value)?
            .into_iter()
            .map(|r| {
                versions.entry(kind.value.clone()).or_insert_with(std::collections::BTreeMap::new).insert(r.id.clone(), r.version);
                let mut m = r.data.clone();
                m.insert("id".into(), json!(r.id));
                m.insert("title".into(), json!(r.title));
                m.insert("archived".into(), json!(r.archived));
                (r.id, Value::Object(m))
            })
            .collect();
        records.insert(kind.value.clone(), Value::Object(all));
    }
    Ok(flowform_core::Reads { records: std::sync::Arc::new(Value::Object(records)), people: Value::Null, teams: Some(teams), versions })
}

fn generate(d: &crate::HospitalData, dir: &Path, data: &Path, n: usize, assets: usize) -> Result<()> {
    let started = Instant::now();
    let bundle = flowform_runtime::load_bundle(dir).map_err(|e| anyhow!("{e}"))?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(data)?);
    let runtime = Arc::new(Runtime::new(bundle, store.clone(), Arc::new(SystemClock))?);
    flowform_runtime::demo::load(&dir.join(&d.demo), &runtime).map_err(|e| anyhow!("{e}"))?;
    let bundle = runtime.bundle();
    let roles: Vec<String> = bundle.model.roles.keys().cloned().collect();
    let teams: Vec<String> = runtime.teams(&bundle).into_iter().map(|(name, _)| name).collect();
    let teams_all = teams.clone();
    let admin = Actor { id: "admin".into(), name: "admin".into(), roles: roles.clone(), teams: teams.clone(), email: None, department: None };

    // The asset ledger: copies of the first demo asset under new codes, from several threads (group commit).
    let template = runtime.record("asset", &d.asset_template).map_err(|e| anyhow!("the demo has no asset {}: {e}", d.asset_template))?.data;
    let (categories, codes) = (&d.categories, &d.asset_codes);
    let threads = 16;
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (runtime, template, admin) = (runtime.clone(), template.clone(), admin.clone());
            handles.push(s.spawn(move || -> Result<()> {
                for k in (t..assets).step_by(threads) {
                    let mut asset = template.clone();
                    let code = codes.generated(k);
                    let category = &categories[k % categories.len()];
                    asset.insert("name".into(), json!(format!("{}号设备 ({category})", k + 1)));
                    asset.insert("category".into(), json!(category));
                    asset.insert("tag_id".into(), json!(codes.tag.replace("{code}", &code)));
                    asset.insert("code".into(), json!(code));
                    runtime.create_record("asset", &Value::Object(asset), &admin, Lang::En).map_err(|e| anyhow!("asset {k}: {e}"))?;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.join().map_err(|_| anyhow!("an asset thread panicked"))??;
        }
        Ok(())
    })?;
    println!("scale: {assets} assets in {:.1} s", started.elapsed().as_secs_f64());

    // The work orders: decided by the core on one thread, written on this one.
    let requester =
        Actor { id: d.users.requester.clone(), name: d.users.requester.clone(), roles: roles.clone(), teams: vec![], email: None, department: None };
    let tech = Actor { id: d.users.technician.clone(), name: d.users.technician.clone(), roles, teams, email: None, department: None };
    let base = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(n as i64 * 90 + 86_400);
    let reads = team_reads(&runtime, teams_all.clone())?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<ImportedInstance>>>(4);
    let generator = {
        let bundle = bundle.clone();
        let reads = reads.clone();
        let d = d.clone();
        std::thread::spawn(move || {
            for chunk in (0..n).step_by(BATCH) {
                let batch = (chunk..(chunk + BATCH).min(n)).map(|i| order(&d, &bundle, &reads, i, assets, base, &requester, &tech)).collect();
                if tx.send(batch).is_err() {
                    return;
                }
            }
        })
    };
    let mut written = 0;
    for batch in rx {
        let batch = batch?;
        written += batch.len();
        match store.submit(Job::ImportInstances(batch))? {
            flowform_store::CommitOutcome::Committed => {}
            other => bail!("the import was refused: {other:?}"),
        }
        if written % 100_000 < BATCH {
            println!("scale: {written} work orders written ({:.0} s)", started.elapsed().as_secs_f64());
        }
    }
    generator.join().map_err(|_| anyhow!("the generator panicked"))?;
    drop(runtime);
    drop(store);
    let size = std::fs::metadata(data.join("flowform.redb"))?.len();
    println!(
        "scale: generated {n} work orders and {assets} assets in {:.0} s; store {:.2} GiB ({:.0} bytes per work order)",
        started.elapsed().as_secs_f64(),
        size as f64 / (1u64 << 30) as f64,
        size as f64 / n.max(1) as f64
    );
    Ok(())
}

/// Work order `i`: reported, and (for all but a few kept open) taken through to closed.
#[allow(clippy::too_many_arguments)]
fn order(
    d: &crate::HospitalData,
    bundle: &flowform_core::Bundle,
    reads: &flowform_core::Reads,
    i: usize,
    assets: usize,
    base: jiff::Timestamp,
    requester: &Actor,
    tech: &Actor,
) -> Result<ImportedInstance> {
    let at = |step: i64| flowform_core::Time::from(base + jiff::SignedDuration::from_secs(i as i64 * 90 + step * 600));
    let ms = (base + jiff::SignedDuration::from_secs(i as i64 * 90)).as_millisecond() as u64;
    let id = ulid::Ulid::from_parts(ms, i as u128).to_string();
    let asset = d.asset_codes.generated(i % assets.max(1));
    let report = d.report(i, &asset);
    let decided = |r: Result<flowform_core::Outcome, flowform_core::Rejection>| r.map_err(|e| anyhow!("work order {i}: {e}: {e:?}"));
    let first = decided(flowform_core::start_with(bundle, &d.workflow, &report, requester, at(0), &id, Lang::ZhCn, reads))?;
    let mut instance = first.instance;
    let mut events = vec![first.event];
    // One in 625 stays unaccepted, one in 625 in progress: the open backlog, of every category.
    let steps = d.steps(i, &asset);
    let keep = match (i / 5) % 125 {
        0 => 0,
        1 => 1,
        _ => steps.len(),
    };
    for (k, (name, input, by_requester)) in steps.iter().take(keep).enumerate() {
        let actor = if *by_requester { requester } else { tech };
        let outcome = decided(flowform_core::transition_with(bundle, instance, name, input, actor, at(k as i64 + 1), Lang::ZhCn, reads))?;
        instance = outcome.instance;
        events.push(outcome.event);
    }
    let refs = flowform_core::records::instance_references(bundle, &instance.workflow, &instance.data, None);
    Ok(ImportedInstance { instance, events, refs })
}

/// Resident and peak memory of a process (`self` or a pid), in MiB (VmRSS, VmHWM).
pub fn memory(process: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// A server process, killed when dropped: a measurement that fails half-way
/// never leaves it running and holding the store.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `flowform serve` on the store; returns it, its address and the time until it listened.
fn spawn_server(exe: &Path, dir: &Path, data: &Path) -> Result<(Server, String, Duration)> {
    let started = Instant::now();
    let child = Command::new(exe)
        .args(["serve", "--addr", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .arg("--data")
        .arg(data)
        .env("FLOWFORM_LOG", "warn")
        .env("FLOWFORM_WATCH", "off")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the server")?;
    let mut child = Server(child);
    let mut lines = BufReader::new(child.0.stdout.take().ok_or_else(|| anyhow!("no server output"))?).lines();
    let addr = loop {
        let line = lines.next().ok_or_else(|| anyhow!("the server exited before listening"))??;
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.trim().to_string();
        }
    };
    let startup = started.elapsed();
    std::thread::spawn(move || for _ in lines {});
    Ok((child, addr, startup))
}

/// A token for `user`, made by `flowform token` (the store is not served yet).
fn token(exe: &Path, dir: &Path, data: &Path, user: &str) -> Result<String> {
    let out = Command::new(exe)
        .args(["token", "--user", user, "--name", "scale bench", "--days", "1", "--dir"])
        .arg(dir)
        .arg("--data")
        .arg(data)
        .output()
        .context("cannot run `flowform token`")?;
    if !out.status.success() {
        bail!("flowform token --user {user}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    String::from_utf8(out.stdout)?.lines().last().map(|l| l.trim().to_string()).ok_or_else(|| anyhow!("no token for `{user}` in {}", data.display()))
}

fn measure(d: &crate::HospitalData, exe: &Path, dir: &Path, data: &Path) -> Result<()> {
    // The manager sees everything; the restricted users see what their
    // `visible_to` lets them (bench/data/hospital.yaml).
    let restricted: Vec<(String, String)> = d.users.restricted.iter().map(|r| Ok((r.label.clone(), token(exe, dir, data, &r.user)?))).collect::<Result<_>>()?;
    let token = token(exe, dir, data, &d.users.manager)?;
    let (mut child, addr, startup) = spawn_server(exe, dir, data)?;
    let pid = child.0.id();
    let rss_started = memory(&pid.to_string()).0;
    let agent = ureq::Agent::config_builder().http_status_as_error(false).build().new_agent();
    let get_as = |token: &str, path: &str| -> Result<(Duration, Value)> {
        let t = Instant::now();
        let mut response = agent.get(format!("http://{addr}{path}")).header("Authorization", format!("Bearer {token}")).call()?;
        let status = response.status().as_u16();
        let text = response.body_mut().read_to_string()?;
        let elapsed = t.elapsed();
        if status != 200 {
            bail!("GET {path}: HTTP {status}: {text}");
        }
        Ok((elapsed, serde_json::from_str(&text)?))
    };
    // Timings: the median and the worst of 30 requests each (after one warm-up).
    let time_as = |token: &str, name: &str, path: &str| -> Result<Value> {
        let (_, body) = get_as(token, path)?;
        let mut samples: Vec<Duration> = (0..30).map(|_| get_as(token, path).map(|(d, _)| d)).collect::<Result<_>>()?;
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("scale: {name:<44} median {:>7.2} ms, max {:>7.2} ms   ({path})", ms(samples[15]), ms(samples[29]));
        Ok(json!({"name": name, "path": path, "median_ms": ms(samples[15]), "max_ms": ms(samples[29]), "body": body}))
    };
    let time = |q: &crate::data::Named| time_as(&token, &q.name, &q.path);
    let q = &d.queries;
    let counts = time(&q.counts)?;
    let total = counts["body"]["total"].as_u64().unwrap_or(0);
    let list = time(&q.list)?;
    time(&q.list_few)?;
    let cursor = list["body"]["next_cursor"].as_str().unwrap_or_default().to_string();
    let some_id = list["body"]["items"][10]["id"].as_str().ok_or_else(|| anyhow!("the list is empty"))?.to_string();
    let asset = d.asset_codes.generated(7);
    let fill = |path: &str| path.replace("{cursor}", &cursor).replace("{id}", &some_id).replace("{asset}", &asset);
    let filled = |n: &crate::data::Named| crate::data::Named { name: n.name.clone(), path: fill(&n.path) };
    time(&filled(&q.next_page))?;
    time(&filled(&q.order_history))?;
    time(&filled(&q.order))?;
    time(&filled(&q.asset_history))?;
    // Restricted users (visible_to): lists merge their own index entries, counts read per-user counts.
    for (who, t) in &restricted {
        time_as(t, &format!("list page as {who}"), &q.restricted_list)?;
        time_as(t, &format!("closed, page as {who}"), &q.restricted_closed)?;
        time_as(t, &format!("counts as {who}"), &q.restricted_counts)?;
    }
    // Reports over a year and a month, once the server has its report facts in
    // memory (built in the background after start-up): 10 samples each.
    // A report asked before its facts are ready waits up to two minutes, then
    // answers 503 not_ready (a store read from a cold disk takes longer): ask again.
    let until_ready = |path: &str, limit: Duration| -> Result<()> {
        let started = Instant::now();
        loop {
            match get_as(&token, path) {
                Ok((took, _)) if took < Duration::from_millis(500) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.to_string().contains("not_ready") => {}
                Err(e) => return Err(e),
            }
            if started.elapsed() > limit {
                bail!("{path}: not ready after {} s", limit.as_secs());
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    };
    let facts_wait = Instant::now();
    until_ready(&d.reports.ready, Duration::from_secs(1800))?;
    println!("scale: report facts ready after {:.1} s from the first report", facts_wait.elapsed().as_secs_f64());
    // The check-ins' events are read on the first report over them (it waits for them).
    let events_wait = Instant::now();
    until_ready(&d.reports.events_ready, Duration::from_secs(1800))?;
    println!("scale: check-in events ready after {:.1} s more", events_wait.elapsed().as_secs_f64());
    let today = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let days_ago = |n: i64| today.checked_sub(jiff::Span::new().days(n)).unwrap_or(today);
    let tomorrow = today.tomorrow().unwrap_or(today);
    for crate::data::TimedReport { report, by } in &d.reports.timed {
        for (span, from) in [("a year", days_ago(365)), ("a month", days_ago(30))] {
            let path = format!("/api/v1/reports/{report}?by={by}&from={from}&to={tomorrow}");
            let mut samples: Vec<Duration> = (0..10).map(|_| get_as(&token, &path).map(|(d, _)| d)).collect::<Result<_>>()?;
            samples.sort();
            println!(
                "scale: report {:<40} median {:>8.1} ms, p95 {:>8.1} ms",
                format!("{report} by {by} over {span}"),
                samples[5].as_secs_f64() * 1000.0,
                samples[9].as_secs_f64() * 1000.0
            );
        }
    }
    // The web app's pages, as a manager's phone would load them (server time, p99 of 100).
    let cookie = page_session(&agent, &addr, &d.users.manager, &d.password)?;
    let page = |name: &str, path: &str| -> Result<()> {
        let get = || -> Result<Duration> {
            let t = Instant::now();
            let mut response = agent.get(format!("http://{addr}{path}")).header("Cookie", &cookie).header("Accept-Language", "zh-CN").call()?;
            let status = response.status().as_u16();
            let _ = response.body_mut().read_to_string()?;
            if status != 200 {
                bail!("GET {path}: HTTP {status}");
            }
            Ok(t.elapsed())
        };
        get()?;
        let mut samples: Vec<Duration> = (0..100).map(|_| get()).collect::<Result<_>>()?;
        samples.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("scale: page {name:<39} median {:>7.2} ms, p99 {:>7.2} ms   ({path})", ms(samples[50]), ms(samples[98]));
        Ok(())
    };
    for p in &d.pages {
        page(&p.name, &fill(&p.path))?;
    }
    let (rss, peak) = memory(&pid.to_string());
    // Killed (SIGKILL): the next start replays the log after the last checkpoint. How long, and how much memory.
    child.0.kill()?;
    child.0.wait()?;
    let (mut child, _, recovery) = spawn_server(exe, dir, data)?;
    let (rss_recovered, _) = memory(&child.0.id().to_string());
    // A graceful stop (SIGTERM), so the next start needs no repair.
    let stopped = Command::new("kill").arg(child.0.id().to_string()).status().map(|s| s.success()).unwrap_or(false);
    if stopped {
        let _ = child.0.wait();
    }
    let size = std::fs::metadata(data.join("flowform.redb")).map(|m| m.len()).unwrap_or(0);
    println!(
        "scale: {total} work orders; server start-up {:.2} s; RSS {rss_started:.0} MiB after start-up, {rss:.0} MiB after the queries (peak {peak:.0} MiB); store {:.2} GiB",
        startup.as_secs_f64(),
        size as f64 / (1u64 << 30) as f64
    );
    println!("scale: start-up after kill -9 (log replay, redb's quick repair) {:.2} s, RSS {rss_recovered:.0} MiB", recovery.as_secs_f64());
    Ok(())
}

/// Signs `user` in through the sign-in page (demo password) and returns the
/// session cookie, as a browser would hold it.
fn page_session(agent: &ureq::Agent, addr: &str, user: &str, password: &str) -> Result<String> {
    let mut login = agent.get(format!("http://{addr}/login")).call()?;
    let login_cookie = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ff_login_csrf="))
        .and_then(|c| c.split(';').next())
        .ok_or_else(|| anyhow!("the sign-in page set no CSRF cookie"))?
        .to_string();
    let html = login.body_mut().read_to_string()?;
    let csrf =
        html.split("name=\"_csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).ok_or_else(|| anyhow!("no CSRF token on the sign-in page"))?.to_string();
    let answer = agent
        .post(format!("http://{addr}/login"))
        .header("Cookie", &login_cookie)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .config()
        .max_redirects(0)
        .build()
        .send(format!("username={user}&password={password}&_csrf={csrf}"))?;
    answer
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("ff_session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("signing in as {user} failed (HTTP {})", answer.status()))
}
