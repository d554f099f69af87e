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

const CATEGORIES: [&str; 5] = ["hvac", "plumbing", "electrical", "elevator", "medical_gas"];
const DEPARTMENTS: [&str; 4] = ["D-ICU", "D-WARD5", "D-OPD", "D-ER"];
/// Instances per import job (one write transaction each).
const BATCH: usize = 2_000;

pub fn run(dir: &Path, data: &Path, n: usize, assets: usize) -> Result<()> {
    if !data.join("flowform.redb").exists() {
        generate(dir, data, n, assets)?;
    } else {
        println!("scale: measuring the existing store in {}", data.display());
    }
    measure(dir, data)
}

/// What the dispatch rule reads when teams are records: every team record,
/// at its version, and the team names.
pub(crate) fn team_reads(runtime: &Runtime, teams: Vec<String>) -> Result<flowform_core::Reads> {
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

fn asset_id(k: usize) -> String {
    format!("EQ-{:06}", 200_000 + k)
}

fn generate(dir: &Path, data: &Path, n: usize, assets: usize) -> Result<()> {
    let started = Instant::now();
    let bundle = flowform_runtime::load_bundle(dir).map_err(|e| anyhow!("{e}"))?;
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(data)?);
    let runtime = Arc::new(Runtime::new(bundle, store.clone(), Arc::new(SystemClock))?);
    flowform_runtime::demo::load(&dir.join("examples/hospital"), &runtime).map_err(|e| anyhow!("{e}"))?;
    let bundle = runtime.bundle();
    let roles: Vec<String> = bundle.model.roles.keys().cloned().collect();
    let teams: Vec<String> = runtime.teams(&bundle).into_iter().map(|(name, _)| name).collect();
    let teams_all = teams.clone();
    let admin = Actor { id: "admin".into(), name: "admin".into(), roles: roles.clone(), teams: teams.clone(), email: None, department: None };

    // The asset ledger: copies of the first demo asset under new codes, from several threads (group commit).
    let template = runtime.record("asset", "EQ-000101").map_err(|e| anyhow!("the demo has no asset EQ-000101: {e}"))?.data;
    let threads = 16;
    std::thread::scope(|s| -> Result<()> {
        let mut handles = Vec::new();
        for t in 0..threads {
            let (runtime, template, admin) = (runtime.clone(), template.clone(), admin.clone());
            handles.push(s.spawn(move || -> Result<()> {
                for k in (t..assets).step_by(threads) {
                    let mut asset = template.clone();
                    asset.insert("code".into(), json!(asset_id(k)));
                    asset.insert("name".into(), json!(format!("{}号设备 ({})", k + 1, CATEGORIES[k % 5])));
                    asset.insert("category".into(), json!(CATEGORIES[k % 5]));
                    asset.insert("tag_id".into(), json!(format!("RFID-{}", asset_id(k))));
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
    let requester = Actor { id: "nurse_li".into(), name: "李护士".into(), roles: roles.clone(), teams: vec![], email: None, department: None };
    let tech = Actor { id: "tech_wang".into(), name: "王师傅".into(), roles, teams, email: None, department: None };
    let base = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(n as i64 * 90 + 86_400);
    let reads = team_reads(&runtime, teams_all.clone())?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<ImportedInstance>>>(4);
    let generator = {
        let bundle = bundle.clone();
        let reads = reads.clone();
        std::thread::spawn(move || {
            for chunk in (0..n).step_by(BATCH) {
                let batch = (chunk..(chunk + BATCH).min(n)).map(|i| order(&bundle, &reads, i, assets, base, &requester, &tech)).collect();
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
fn order(
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
    let report = json!({
        "asset": asset_id(i % assets.max(1)),
        "category": CATEGORIES[i % 5],
        "department": DEPARTMENTS[i % 4],
        "location": "住院楼 5 层",
        "priority": if i.is_multiple_of(3) { "urgent" } else { "normal" },
        "urgent_reason": "影响病人",
        "description": format!("设备故障,需要维修 (工单 {i})"),
    });
    let decided = |r: Result<flowform_core::Outcome, flowform_core::Rejection>| r.map_err(|e| anyhow!("work order {i}: {e}: {e:?}"));
    let first = decided(flowform_core::start_with(bundle, "repair", &report, requester, at(0), &id, Lang::ZhCn, reads))?;
    let mut instance = first.instance;
    let mut events = vec![first.event];
    // One in 625 stays unaccepted, one in 625 in progress: the open backlog, of every category.
    let steps: &[(&str, Value, bool)] = &[
        ("accept", json!({}), false),
        ("check_in", json!({"place": {"tag": "RFID-0001"}}), false),
        ("complete", json!({"fault_cause": "wear", "work_notes": "更换风扇电容,运行正常"}), false),
        ("confirm", json!({"rating": 3 + i % 3}), true),
    ];
    let keep = match (i / 5) % 125 {
        0 => 0,
        1 => 1,
        _ => steps.len(),
    };
    for (k, (name, input, by_requester)) in steps.iter().take(keep).enumerate() {
        let actor = if *by_requester { requester } else { tech };
        let outcome = decided(flowform_core::transition_with(bundle, &instance, name, input, actor, at(k as i64 + 1), Lang::ZhCn, reads))?;
        instance = outcome.instance;
        events.push(outcome.event);
    }
    let refs = flowform_core::records::instance_references(bundle, &instance.workflow, &instance.data);
    Ok(ImportedInstance { instance, events, refs })
}

/// Resident and peak memory of a process (`self` or a pid), in MiB (VmRSS, VmHWM).
pub(crate) fn memory(process: &str) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{process}/status")).unwrap_or_default();
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok()).map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Starts `flowform serve` on the store; returns it, its address and the time until it listened.
fn spawn_server(dir: &Path, data: &Path) -> Result<(std::process::Child, String, Duration)> {
    let started = Instant::now();
    let mut child = Command::new(std::env::current_exe()?)
        .args(["serve", "--addr", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .arg("--data")
        .arg(data)
        .env("FLOWFORM_LOG", "warn")
        .env("FLOWFORM_WATCH", "off")
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the server")?;
    let mut lines = BufReader::new(child.stdout.take().ok_or_else(|| anyhow!("no server output"))?).lines();
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

fn measure(dir: &Path, data: &Path) -> Result<()> {
    let token_of = |user: &str| -> Result<String> {
        let answer = crate::admin::token(dir, data, user, "scale bench", Some(1))?;
        Ok(answer.get("token").and_then(serde_json::Value::as_str).ok_or_else(|| anyhow!("no token for `{user}` in {}", data.display()))?.to_string())
    };
    // A manager sees everything; the nurse reported every generated order;
    // another nurse reported none; a utilities technician sees his team's.
    let token = token_of("manager_zheng")?;
    let restricted = [
        ("nurse (her own requests)", token_of("nurse_li")?),
        ("another nurse (none of them)", token_of("nurse_chen")?),
        ("technician (his team's)", token_of("tech_zhao")?),
    ];
    let (mut child, addr, startup) = spawn_server(dir, data)?;
    let pid = child.id();
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
    let time = |name: &str, path: &str| time_as(&token, name, path);
    let counts = time("count by state and team", "/api/v1/instances/counts?workflow=repair&by=state,team")?;
    let total = counts["body"]["total"].as_u64().unwrap_or(0);
    let list = time("filtered list page (closed, hvac, 50)", "/api/v1/instances?workflow=repair&state=closed&team=hvac_team&limit=50")?;
    time("filtered list page (in progress, elevator)", "/api/v1/instances?workflow=repair&state=in_progress&team=elevator_team&limit=50")?;
    let cursor = list["body"]["next_cursor"].as_str().unwrap_or_default().to_string();
    time("next page by cursor", &format!("/api/v1/instances?workflow=repair&state=closed&team=hvac_team&limit=50&cursor={cursor}"))?;
    let some_id = list["body"]["items"][10]["id"].as_str().ok_or_else(|| anyhow!("the list is empty"))?.to_string();
    time("history of one work order", &format!("/api/v1/instances/{some_id}/history"))?;
    time("one work order", &format!("/api/v1/instances/{some_id}"))?;
    time("history of one asset (its work orders)", &format!("/api/v1/records/asset/{}/history", asset_id(7)))?;
    // Restricted users (visible_to): lists merge their own index entries, counts read per-user counts.
    for (who, t) in &restricted {
        time_as(t, &format!("list page as {who}"), "/api/v1/instances?workflow=repair&limit=50")?;
        time_as(t, &format!("closed, page as {who}"), "/api/v1/instances?workflow=repair&state=closed&limit=50")?;
        time_as(t, &format!("counts as {who}"), "/api/v1/instances/counts?workflow=repair&by=state")?;
    }
    // Reports over a year and a month, once the server has its report facts in
    // memory (built in the background after start-up): 10 samples each.
    let facts_wait = Instant::now();
    loop {
        let (took, _) = get_as(&token, "/api/v1/reports/repair_overview?by=state")?;
        if took < Duration::from_millis(500) || facts_wait.elapsed() > Duration::from_secs(300) {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    println!("scale: report facts ready after {:.1} s from the first report", facts_wait.elapsed().as_secs_f64());
    // The check-ins' events are read on the first report over them (it waits for them).
    let events_wait = Instant::now();
    get_as(&token, "/api/v1/reports/attendance?by=actor")?;
    println!("scale: check-in events ready after {:.1} s more", events_wait.elapsed().as_secs_f64());
    let today = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::UTC).date();
    let days_ago = |n: i64| today.checked_sub(jiff::Span::new().days(n)).unwrap_or(today);
    let tomorrow = today.tomorrow().unwrap_or(today);
    for (report, by) in [("sla_compliance", "department"), ("response_time", "team"), ("repair_overview", "month"), ("attendance", "day,actor")] {
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
    let cookie = page_session(&agent, &addr, "manager_zheng")?;
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
    page("home", "/")?;
    page("tasks", "/tasks")?;
    page("list with state tabs", "/list/repair")?;
    page("list, closed", "/list/repair?state=closed")?;
    page("dispatch board", "/board")?;
    page("work order", &format!("/i/{some_id}"))?;
    page("start form", "/start/repair")?;
    page("asset page", &format!("/records/asset/{}", asset_id(7)))?;
    let (rss, peak) = memory(&pid.to_string());
    // Killed (SIGKILL), the next start repairs the store first: how long, and how much memory.
    child.kill()?;
    child.wait()?;
    let (mut child, _, recovery) = spawn_server(dir, data)?;
    let (rss_recovered, _) = memory(&child.id().to_string());
    // A graceful stop (SIGTERM), so the next start needs no repair.
    let stopped = Command::new("kill").arg(child.id().to_string()).status().map(|s| s.success()).unwrap_or(false);
    if !stopped {
        let _ = child.kill();
    }
    let _ = child.wait();
    let size = std::fs::metadata(data.join("flowform.redb")).map(|m| m.len()).unwrap_or(0);
    println!(
        "scale: {total} work orders; server start-up {:.2} s; RSS {rss_started:.0} MiB after start-up, {rss:.0} MiB after the queries (peak {peak:.0} MiB); store {:.2} GiB",
        startup.as_secs_f64(),
        size as f64 / (1u64 << 30) as f64
    );
    println!("scale: start-up after kill -9 (with the store's crash repair) {:.2} s, RSS {rss_recovered:.0} MiB", recovery.as_secs_f64());
    Ok(())
}

/// Signs `user` in through the sign-in page (demo password) and returns the
/// session cookie, as a browser would hold it.
fn page_session(agent: &ureq::Agent, addr: &str, user: &str) -> Result<String> {
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
        .send(format!("username={user}&password=demo2026&_csrf={csrf}"))?;
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
