//! Reloads under steady HTTP load: no request fails, broken edits are shown
//! with their place, good edits go live. Short in the normal suite;
//! `FLOWFORM_SOAK=1` runs the full 30 s at 200 requests/s with 20 reloads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_tests::TestApp;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http(addr: &str, method: &str, path: &str, token: &str, body: Option<&str>) -> Result<(u16, Value), String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| format!("bad response: {text}"))?;
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

const REPAIR: &str = "definitions/workflows/repair.yaml";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_under_load_fail_no_request() {
    let soak = std::env::var("FLOWFORM_SOAK").is_ok_and(|v| v == "1");
    let (duration, rate, reloads) = if soak { (Duration::from_secs(30), 200u64, 20usize) } else { (Duration::from_secs(4), 100, 6) };

    let mut app = TestApp::hospital_copy();
    let _watcher = flowform_runtime::watch::watch(app.runtime.clone(), flowform_runtime::watch::WatchMode::Auto).unwrap();
    let tech = app.token("tech_wang");
    let admin = app.token("admin");
    let mut ids = Vec::new();
    for _ in 0..8 {
        let wo = app
            .start_instance(
                "repair",
                "nurse_li",
                json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "ICU", "description": "空调不制冷了"}),
            )
            .await
            .expect(201);
        let id = wo["id"].as_str().unwrap().to_string();
        app.transition(&id, "accept", "tech_wang", json!({})).await.expect(200);
        ids.push(id);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(flowform_server::serve(listener, flowform_server::app(app.runtime.clone()), async {
        let _ = stopped.await;
    }));

    let sent = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let load = {
        let (addr, tech, ids, sent, failures) = (addr.clone(), tech.clone(), ids.clone(), sent.clone(), failures.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            // Every scheduled request is sent (late ticks catch up in a burst),
            // so a loaded machine delays the load but never thins it.
            let scheduled = (rate * duration.as_secs()) as usize;
            let mut tasks = Vec::new();
            for n in 1..=scheduled {
                tick.tick().await;
                let (addr, tech, failures, sent) = (addr.clone(), tech.clone(), failures.clone(), sent.clone());
                let id = ids[n % ids.len()].clone();
                tasks.push(tokio::spawn(async move {
                    sent.fetch_add(1, Ordering::Relaxed);
                    let result = if n.is_multiple_of(2) {
                        http(&addr, "POST", &format!("/api/v1/instances/{id}/transitions/record_work"), &tech, Some(r#"{"data":{"findings":"巡查记录"}}"#))
                            .await
                    } else {
                        http(&addr, "GET", &format!("/api/v1/instances/{id}"), &tech, None).await
                    };
                    match result {
                        Ok((200, _)) => {}
                        Ok((status, body)) => failures.lock().unwrap().push(format!("{status}: {body}")),
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        })
    };

    let original = std::fs::read_to_string(app.app_dir.join(REPAIR)).unwrap();
    let pause = duration / (reloads as u32 + 1);
    let (mut live, mut shown) = (0, 0);
    for i in 0..reloads {
        tokio::time::sleep(pause).await;
        let (_, before) = http(&addr, "GET", "/api/v1/bundle", &admin, None).await.unwrap();
        let good = original.replace("en: Accept }", &format!("en: Accept {i} }}"));
        if i.is_multiple_of(2) {
            app.write(REPAIR, &good);
        } else {
            app.write(REPAIR, &good.replace("to: in_progress\n", "to: in_progres\n"));
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, bundle) = http(&addr, "GET", "/api/v1/bundle", &admin, None).await.unwrap();
            assert_eq!(status, 200);
            if i.is_multiple_of(2) && bundle["version"] != before["version"] {
                live += 1;
                break;
            }
            if i % 2 == 1 && bundle["last_rejected"]["at"].is_string() && bundle["last_rejected"]["at"] != before["last_rejected"]["at"] {
                let d = &bundle["last_rejected"]["diagnostics"][0];
                assert_eq!(
                    (d["file"].as_str(), d["line"].as_u64(), d["column"].as_u64()),
                    (Some(REPAIR), Some(flowform_tests::line_of(&flowform_tests::repo_root().join(REPAIR), "to: in_progress\n") as u64), Some(9)),
                    "{bundle}"
                );
                assert_eq!(bundle["version"], before["version"], "a broken edit never replaces the running version");
                shown += 1;
                break;
            }
            assert!(Instant::now() < deadline, "edit {i} had no effect: {bundle}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    load.await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} of {} requests failed, e.g. {:?}", failures.len(), sent.load(Ordering::Relaxed), &failures[..failures.len().min(5)]);
    assert_eq!((live, shown), (reloads.div_ceil(2), reloads / 2));
    assert_eq!(sent.load(Ordering::Relaxed) as u64, rate * duration.as_secs(), "every scheduled request was sent and answered");
}

/// Requests go on at their pace while old definitions are compiled again for
/// the instances that still run on them: more old versions are in use than
/// the runtime keeps compiled, so every command on one of them compiles its
/// bundle (on the blocking pool, never on a request's thread). Paced reads
/// are timed from their scheduled send, before and while the old instances
/// are driven; `FLOWFORM_SOAK=1` runs 2 × 15 s at 200 reads/s and prints the
/// percentiles (docs/performance.md), the normal suite a short run that
/// checks no request fails and the compiles happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_keep_their_pace_while_old_bundles_are_compiled() {
    let soak = std::env::var("FLOWFORM_SOAK").is_ok_and(|v| v == "1");
    let (phase, rate) = if soak { (Duration::from_secs(15), 200u64) } else { (Duration::from_secs(2), 100) };
    let mut app = TestApp::hospital_copy();
    let tech = app.token("tech_wang");
    let original = std::fs::read_to_string(app.app_dir.join(REPAIR)).unwrap();
    // One accepted order on each of 18 versions of the definitions (the runtime keeps 16 compiled).
    let mut old = Vec::new();
    for v in 0..18 {
        app.write(REPAIR, &original.replace("en: Accept }", &format!("en: Accept v{v} }}")));
        assert!(matches!(app.runtime.reload(), flowform_runtime::reload::ReloadOutcome::Reloaded { .. }), "version {v}");
        let wo = app
            .start_instance(
                "repair",
                "nurse_li",
                json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "ICU", "description": "空调不制冷了"}),
            )
            .await
            .expect(201);
        let id = wo["id"].as_str().unwrap().to_string();
        app.transition(&id, "accept", "tech_wang", json!({})).await.expect(200);
        old.push(id);
    }
    let mut versions: Vec<String> = Vec::new();
    for id in &old {
        versions.push(app.get(&format!("/api/v1/instances/{id}"), "tech_wang").await.expect(200)["bundle_version"].as_str().unwrap().to_string());
    }
    versions.dedup();
    assert_eq!(versions.len(), 18, "each order runs on the version it started on");
    let read_id = old[17].clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(flowform_server::serve(listener, flowform_server::app(app.runtime.clone()), async {
        let _ = stopped.await;
    }));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    // Paced reads of the newest order, timed from when each was due.
    let reads = {
        let (addr, tech, failures, read_id) = (addr.clone(), tech.clone(), failures.clone(), read_id.clone());
        tokio::spawn(async move {
            let interval = Duration::from_micros(1_000_000 / rate);
            let started = Instant::now();
            let mut tasks = Vec::new();
            let mut n = 0u32;
            while started.elapsed() < phase * 2 {
                let due = started + interval * n;
                tokio::time::sleep_until(due.into()).await;
                n += 1;
                let (addr, tech, failures, id) = (addr.clone(), tech.clone(), failures.clone(), read_id.clone());
                tasks.push(tokio::spawn(async move {
                    let result = http(&addr, "GET", &format!("/api/v1/instances/{id}"), &tech, None).await;
                    if !matches!(result, Ok((200, _))) {
                        failures.lock().unwrap().push(format!("{result:?}"));
                    }
                    (due.duration_since(started) >= phase, due.elapsed())
                }));
            }
            let mut out = Vec::new();
            for t in tasks {
                out.push(t.await.unwrap());
            }
            out
        })
    };
    // In the second phase, commands on the old orders in turn: each compiles its version again.
    tokio::time::sleep(phase).await;
    let driven = Instant::now();
    let mut commands = 0;
    // At least one command per old version, however slow the machine (the phase may run over).
    while driven.elapsed() < phase || commands < 17 {
        let id = &old[commands % 17];
        let (status, body) =
            http(&addr, "POST", &format!("/api/v1/instances/{id}/transitions/record_work"), &tech, Some(r#"{"data":{"findings":"巡查记录"}}"#)).await.unwrap();
        assert_eq!(status, 200, "{body}");
        commands += 1;
    }
    let timed = reads.await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{} reads failed, e.g. {:?}", failures.len(), &failures[..failures.len().min(3)]);
    assert!(commands >= 17, "every old version was compiled at least once ({commands} commands)");
    let pct = |during: bool, p: f64| {
        let mut v: Vec<Duration> = timed.iter().filter(|(d, _)| *d == during).map(|(_, t)| *t).collect();
        v.sort();
        v.get(((v.len() as f64 - 1.0) * p) as usize).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "reads: before p50 {:.2} ms, p99 {:.2} ms; while old bundles compile ({commands} commands on 17 old versions) p50 {:.2} ms, p99 {:.2} ms",
        pct(false, 0.5),
        pct(false, 0.99),
        pct(true, 0.5),
        pct(true, 0.99)
    );
}
