//! SLAs, escalations and automatic transitions with a virtual clock.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use flowform_tests::TestApp;
use jiff::SignedDuration;
use serde_json::{Value, json};

fn entrapment() -> Value {
    json!({"asset": "EQ-000139", "category": "elevator", "department": "D-OPD", "location": "门诊楼 2 号电梯", "description": "电梯困人,两人被困", "priority": "urgent", "urgent_reason": "有人被困"})
}

async fn fire(app: &TestApp) -> usize {
    let runtime = app.runtime.clone();
    tokio::task::spawn_blocking(move || runtime.fire_due_timers()).await.unwrap().unwrap()
}

async fn inbox(app: &mut TestApp, user: &str) -> Vec<String> {
    let v = app.get("/api/v1/inbox", user).await.expect(200);
    v["items"].as_array().unwrap().iter().map(|i| i["template"].as_str().unwrap().to_string()).collect()
}

#[tokio::test]
async fn a_lift_entrapment_reminds_at_5_minutes_escalates_at_20_and_breaches_at_30() {
    let mut app = TestApp::hospital();
    let wo = app.start_instance("repair", "nurse_li", entrapment()).await.expect(201);
    let id = wo["id"].as_str().unwrap().to_string();
    assert_eq!(wo["due_at"], "2026-11-25T01:30:00.000Z");
    assert_eq!(wo["overdue"], false);

    app.clock.advance(SignedDuration::from_mins(4));
    assert_eq!(fire(&app).await, 0, "nothing is due at 4 minutes");
    assert_eq!(inbox(&mut app, "tech_sun").await, vec!["dispatched"], "the team heard of the new order at once");

    app.clock.advance(SignedDuration::from_mins(1));
    assert_eq!(fire(&app).await, 1);
    assert_eq!(inbox(&mut app, "tech_sun").await, vec!["accept_reminder", "dispatched"], "the elevator team is reminded at 5 minutes");
    assert!(inbox(&mut app, "tech_wang").await.is_empty(), "other teams are not");
    let item = &app.get("/api/v1/inbox", "tech_sun").await.expect(200)["items"][0];
    // Titles name the order by its readable number, never its id, and where the asset is (its location record, then the detail typed).
    assert_eq!(item["title"].as_str().unwrap(), format!("【待接单】{} 住院楼 1 层 门诊楼 2 号电梯", wo["number"].as_str().unwrap()));
    assert!(wo["number"].as_str().unwrap().starts_with("WX-20261125-"), "{wo}");
    // Times in the app's zone, options by their labels: 01:30Z is 09:30 in Shanghai.
    let body = item["body"].as_str().unwrap();
    assert!(body.contains("请在 2026-11-25 09:30 前接单") && body.contains("紧急程度:紧急") && !body.contains('Z'), "{body}");

    app.clock.advance(SignedDuration::from_mins(15));
    assert_eq!(fire(&app).await, 1);
    assert_eq!(inbox(&mut app, "dispatcher_liu").await, vec!["escalated"]);
    assert_eq!(inbox(&mut app, "manager_zheng").await, vec!["escalated"]);
    let view = app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200);
    assert_eq!(view["data"]["escalated"], true);
    assert_eq!(view["overdue"], false);
    assert_eq!(fire(&app).await, 0, "each step fires once");

    app.clock.advance(SignedDuration::from_mins(10));
    assert_eq!(fire(&app).await, 1);
    let view = app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200);
    assert_eq!(view["overdue"], true);
    let overdue = app.get("/api/v1/instances?overdue=true", "admin").await.expect(200);
    assert_eq!(overdue["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect::<Vec<_>>(), vec![id.as_str()]);
    let history = app.get(&format!("/api/v1/instances/{id}/history"), "admin").await.expect(200);
    let timers: Vec<&str> = history.as_array().unwrap().iter().filter(|e| e["kind"] == "timer").map(|e| e["input"]["timer"].as_str().unwrap()).collect();
    assert_eq!(timers, vec!["step:0", "step:1", "sla"]);

    let read = app.get("/api/v1/inbox", "tech_sun").await.expect(200)["items"][0]["seq"].as_u64().unwrap();
    app.post(&format!("/api/v1/inbox/{read}/read"), "tech_sun", json!({})).await.expect(200);
    assert_eq!(app.get("/api/v1/inbox?unread=true", "tech_sun").await.expect(200)["unread"], 1, "the dispatch notice is still unread");
    app.post(&format!("/api/v1/inbox/{read}/read"), "tech_wang", json!({})).await.expect(404);
}

#[tokio::test]
async fn leaving_the_state_cancels_its_timers() {
    let mut app = TestApp::hospital();
    let wo = app.start_instance("repair", "nurse_li", entrapment()).await.expect(201);
    let id = wo["id"].as_str().unwrap().to_string();
    app.clock.advance(SignedDuration::from_mins(3));
    let accepted = app.transition(&id, "accept", "tech_sun", json!({})).await.expect(200);
    assert_eq!(accepted["due_at"], Value::Null, "in progress has no deadline");
    assert_eq!(inbox(&mut app, "nurse_li").await, vec!["accepted"], "the requester hears that it was accepted");
    // Only the process deadline (resolution time, across states) is still armed.
    let left: Vec<String> = app.runtime.store().timers_of(&id).unwrap().into_iter().map(|t| t.timer).collect();
    assert_eq!(left, ["deadline:resolution", "deadline:resolution:step:0"]);
    app.clock.advance(SignedDuration::from_hours(2));
    assert_eq!(fire(&app).await, 0);
    assert_eq!(inbox(&mut app, "tech_sun").await, vec!["dispatched"], "no reminder after it was accepted");
    assert_eq!(app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200)["overdue"], false);
}

#[tokio::test]
async fn an_unanswered_work_order_closes_after_72_hours_as_unverified() {
    let mut app = TestApp::hospital();
    let wo = app
        .start_instance(
            "repair",
            "nurse_li",
            json!({"asset": "EQ-000101", "category": "hvac", "department": "D-WARD5", "location": "住院楼 5 层", "description": "空调不制冷了"}),
        )
        .await
        .expect(201);
    let id = wo["id"].as_str().unwrap().to_string();
    app.transition(&id, "accept", "tech_wang", json!({})).await.expect(200);
    app.transition(&id, "check_in", "tech_wang", json!({"place": {"tag": "RFID-EQ-000101"}})).await.expect(200);
    app.transition(&id, "complete", "tech_wang", json!({"fault_cause": "wear", "work_notes": "更换风机电容"})).await.expect(200);
    assert!(inbox(&mut app, "nurse_li").await.contains(&"please_confirm".to_string()));
    app.clock.advance(SignedDuration::from_hours(71));
    assert_eq!(fire(&app).await, 0);
    app.clock.advance(SignedDuration::from_hours(1));
    assert_eq!(fire(&app).await, 1);
    let view = app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200);
    assert_eq!(view["state"], "closed");
    assert_eq!(view["data"]["verification"], "unverified");
    assert_eq!(view["data"]["rating"], Value::Null, "never recorded as a good rating");
    let last = app.get(&format!("/api/v1/instances/{id}/history"), "admin").await.expect(200).as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["kind"].as_str(), last["transition"].as_str(), last["actor"].as_str()), (Some("timer"), Some("auto_close"), Some("system")));
}

#[tokio::test]
async fn due_timers_fire_exactly_once_across_a_restart() {
    let mut app = TestApp::hospital();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(app.start_instance("repair", "nurse_li", entrapment()).await.expect(201)["id"].as_str().unwrap().to_string());
    }
    // The server was down while everything came due.
    app.clock.advance(SignedDuration::from_mins(45));
    let app = app.restart();
    assert_eq!(fire(&app).await, 9, "three steps for each of three work orders");
    assert_eq!(fire(&app).await, 0);
    let mut app = app.restart();
    assert_eq!(fire(&app).await, 0, "nothing fires twice after another restart");
    for id in &ids {
        let history = app.get(&format!("/api/v1/instances/{id}/history"), "admin").await.expect(200);
        assert_eq!(history.as_array().unwrap().iter().filter(|e| e["kind"] == "timer").count(), 3);
    }
    assert_eq!(inbox(&mut app, "tech_sun").await.iter().filter(|t| *t == "accept_reminder").count(), 3);
}

#[tokio::test]
async fn a_working_hours_sla_counts_only_working_time() {
    let mut app = TestApp::hospital();
    // Wednesday 11:30 in Shanghai.
    app.clock.set("2026-11-25T03:30:00Z".parse().unwrap());
    let wo = app
        .start_instance(
            "repair",
            "nurse_li",
            json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "ICU", "description": "空调不制冷了"}),
        )
        .await
        .expect(201);
    let req = app
        .start_instance("requisition", "tech_wang", json!({"work_order": wo["id"], "warehouse": "WH-ZY-B-1", "lines": [{"part": "P-001", "quantity": 1}]}))
        .await
        .expect(201);
    // 120 working minutes: 30 before the 12:00 lunch break, 90 after 13:30 → 15:00 Shanghai.
    assert_eq!(req["due_at"], "2026-11-25T07:00:00.000Z");
    let id = req["id"].as_str().unwrap().to_string();
    // The reminder after 60 working minutes: 13:30 + 30 = 14:00 Shanghai = 06:00 UTC.
    app.clock.set("2026-11-25T05:59:00Z".parse().unwrap());
    fire(&app).await;
    assert!(inbox(&mut app, "keeper_qian").await.is_empty());
    app.clock.set("2026-11-25T06:00:00Z".parse().unwrap());
    fire(&app).await;
    assert_eq!(inbox(&mut app, "keeper_qian").await, vec!["approval_reminder"]);
    app.clock.set("2026-11-25T06:59:00Z".parse().unwrap());
    fire(&app).await;
    assert_eq!(app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200)["overdue"], false);
    app.clock.set("2026-11-25T07:00:00Z".parse().unwrap());
    fire(&app).await;
    assert_eq!(app.get(&format!("/api/v1/instances/{id}"), "admin").await.expect(200)["overdue"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_fails_twice_gets_exactly_one_copy_and_never_slows_the_command() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let calls = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let receiver = {
        let (calls, received) = (calls.clone(), received.clone());
        axum::Router::new().route(
            "/robot",
            axum::routing::post(move |body: String| {
                let (calls, received) = (calls.clone(), received.clone());
                async move {
                    if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        received.lock().unwrap().push(body);
                        axum::http::StatusCode::OK
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/robot", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let mut app = TestApp::hospital();
    app.runtime.set_variable("FLOWFORM_WECOM_URL", &url);
    let wo = app.start_instance("repair", "nurse_li", entrapment()).await.expect(201);
    // Nothing is delivered inside the command: the receiver has not been called yet.
    assert_eq!(calls.load(Ordering::SeqCst), 0, "a command never waits for a webhook");
    app.clock.advance(SignedDuration::from_mins(20));
    fire(&app).await;
    let wecom = |v: &Value| v["items"].as_array().unwrap().iter().filter(|i| i["channel"] == "wecom_duty_group").cloned().collect::<Vec<_>>();
    let outbox = app.get("/api/v1/admin/outbox", "admin").await.expect(200);
    assert_eq!(wecom(&outbox).len(), 1, "one escalation message for the WeCom group: {outbox}");
    let deliver = |app: &TestApp| {
        let runtime = app.runtime.clone();
        async move { tokio::task::spawn_blocking(move || runtime.deliver_outbox()).await.unwrap().unwrap() }
    };
    deliver(&app).await;
    assert_eq!(wecom_attempts(&mut app).await, (1, "pending".into()));
    deliver(&app).await;
    assert_eq!(wecom_attempts(&mut app).await, (1, "pending".into()), "backoff: not due again yet");
    app.clock.advance(SignedDuration::from_secs(1));
    deliver(&app).await;
    assert_eq!(wecom_attempts(&mut app).await, (2, "pending".into()));
    app.clock.advance(SignedDuration::from_secs(2));
    deliver(&app).await;
    assert_eq!(wecom_attempts(&mut app).await, (3, "delivered".into()));
    app.clock.advance(SignedDuration::from_hours(1));
    deliver(&app).await;
    assert_eq!(wecom_attempts(&mut app).await, (3, "delivered".into()), "delivered messages are not sent again");
    let got = received.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(body["msgtype"], "text");
    assert_eq!(body["text"]["content"], format!("【升级】{} 超时未接单", wo["number"].as_str().unwrap()));
    let all = app.get("/api/v1/admin/outbox", "admin").await.expect(200);
    let item = &wecom(&all)[0];
    assert_eq!((item["status"].as_str(), item["attempts"].as_u64(), item["last_error"].as_str()), (Some("delivered"), Some(3), None));
    assert_eq!(app.get("/api/v1/admin/outbox", "nurse_li").await.expect(403)["code"], "forbidden");
}

/// Inspections made by the monthly plan.
async fn inspections(app: &mut TestApp) -> usize {
    let mut count = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/v1/instances?workflow=inspection&limit=500&cursor={c}"),
            None => "/api/v1/instances?workflow=inspection&limit=500".to_string(),
        };
        let page = app.get(&path, "admin").await.expect(200);
        count += page["items"].as_array().unwrap().iter().filter(|i| i["data"]["plan"].as_str().is_some_and(|p| p.starts_with("月度巡检"))).count();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return count,
        }
    }
}

#[tokio::test]
async fn a_monthly_schedule_over_50_assets_makes_50_orders_per_period_and_never_duplicates() {
    let mut app = TestApp::hospital();
    // A new install does not catch up: November began before the first start.
    let runs = app.runtime.run_schedules().await.unwrap();
    let monthly = runs.iter().find(|r| r.schedule == "monthly_inspection").unwrap();
    assert_eq!((monthly.period.as_str(), monthly.started, monthly.skipped), ("2026-11", 0, true));
    let quarterly = runs.iter().find(|r| r.schedule == "hvac_quarterly_maintenance").unwrap();
    assert!(quarterly.skipped, "the quarter began long ago and its catch-up policy is skip");
    assert_eq!(inspections(&mut app).await, 0, "no flood of past periods' orders");
    assert!(app.runtime.run_schedules().await.unwrap().iter().all(|r| r.schedule == "medical_gas_service"), "the periods are done");

    app.clock.set("2026-12-01T00:00:00Z".parse().unwrap());
    let runs = app.runtime.run_schedules().await.unwrap();
    let monthly = runs.iter().find(|r| r.schedule == "monthly_inspection").unwrap();
    assert_eq!((monthly.period.as_str(), monthly.started), ("2026-12", 50));
    assert_eq!(inspections(&mut app).await, 50);

    // A crash half-way through January: the period is not marked done, and
    // some orders exist. The rerun after the restart completes it without duplicates.
    app.clock.set("2027-01-01T00:00:00Z".parse().unwrap());
    let store = app.runtime.store().clone();
    let some: Vec<String> = store.records("asset").unwrap().into_iter().take(20).map(|r| r.id).collect();
    let actor = flowform_core::Actor {
        id: "schedule:monthly_inspection".into(),
        name: "x".into(),
        roles: vec!["admin".into()],
        teams: vec![],
        email: None,
        department: None,
    };
    for id in &some {
        let asset = store.record("asset", id).unwrap().unwrap();
        let data = json!({"asset": id, "category": asset.data["category"], "plan": format!("月度巡检 {}", asset.data["name"].as_str().unwrap())});
        let opts = flowform_runtime::CommandOptions { idempotency_key: Some(format!("schedule:monthly_inspection:2027-01:{id}")), ..Default::default() };
        app.runtime.start("inspection", &data, &actor, &opts).await.unwrap();
    }
    assert_eq!(inspections(&mut app).await, 70);
    drop(store);
    let mut app = app.restart();
    let runs = app.runtime.run_schedules().await.unwrap();
    let monthly = runs.iter().find(|r| r.schedule == "monthly_inspection").unwrap();
    assert_eq!(monthly.period, "2027-01");
    assert_eq!(inspections(&mut app).await, 100, "exactly 50 per period");
    let one = app.get("/api/v1/instances?workflow=inspection&limit=1", "admin").await.expect(200)["items"][0].clone();
    assert_eq!(one["state"], "planned");
    assert!(one["assignment"]["team"].as_str().is_some());
    assert!(one["data"]["plan"].as_str().unwrap().starts_with("月度巡检 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escalations_are_emailed_over_smtp() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    // A minimal SMTP server on loopback that keeps every message it is given.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mails = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let store = mails.clone();
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else { return };
            let store = store.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 test ESMTP\r\n").await.unwrap();
                let mut data = None::<String>;
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Some(buf) = data.as_mut() {
                        if line == "." {
                            store.lock().unwrap().push(data.take().unwrap());
                            write.write_all(b"250 queued\r\n").await.unwrap();
                        } else {
                            buf.push_str(&line);
                            buf.push('\n');
                        }
                        continue;
                    }
                    let upper = line.to_uppercase();
                    let reply: &[u8] = if upper.starts_with("EHLO") {
                        b"250 test\r\n"
                    } else if upper.starts_with("DATA") {
                        data = Some(String::new());
                        b"354 go ahead\r\n"
                    } else if upper.starts_with("QUIT") {
                        write.write_all(b"221 bye\r\n").await.unwrap();
                        return;
                    } else {
                        b"250 ok\r\n"
                    };
                    write.write_all(reply).await.unwrap();
                }
            });
        }
    });
    let mut app = TestApp::hospital();
    app.runtime.set_variable("FLOWFORM_SMTP_URL", &format!("smtp://{addr}"));
    app.runtime.set_variable("FLOWFORM_MAIL_FROM", "报修系统 <noreply@hospital.example>");
    app.start_instance("repair", "nurse_li", entrapment()).await.expect(201);
    app.clock.advance(SignedDuration::from_mins(20));
    fire(&app).await;
    let runtime = app.runtime.clone();
    tokio::task::spawn_blocking(move || runtime.deliver_outbox()).await.unwrap().unwrap();
    let got = mails.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one mail to the dispatcher and one to the manager (the users with an address)");
    assert!(got.iter().any(|m| m.contains("liu.dispatch@hospital.example")) && got.iter().any(|m| m.contains("zheng.facilities@hospital.example")));
    let outbox = app.get("/api/v1/admin/outbox?status=delivered", "admin").await.expect(200);
    assert_eq!(outbox["items"].as_array().unwrap().iter().filter(|i| i["channel"] == "email").count(), 2);
}

async fn wecom_attempts(app: &mut TestApp) -> (u64, String) {
    let v = app.get("/api/v1/admin/outbox", "admin").await.expect(200);
    let item = v["items"].as_array().unwrap().iter().find(|i| i["channel"] == "wecom_duty_group").cloned().unwrap();
    (item["attempts"].as_u64().unwrap(), item["status"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn storekeepers_hear_once_when_a_part_falls_below_its_minimum() {
    let mut app = TestApp::hospital();
    let notify = |app: &TestApp| {
        let runtime = app.runtime.clone();
        async move { tokio::task::spawn_blocking(move || runtime.notify_ledger_events()).await.unwrap().unwrap() }
    };
    assert_eq!(notify(&app).await, 0, "the demo stock starts with no crossing");
    // P-006 (温控器): minimum 5; 15 + 10 + 5 in three warehouses. Take 26 out of them.
    app.post(
        "/api/v1/ledgers/stock/movements",
        "keeper_qian",
        json!({"movements": [
            {"kind": "issue", "part": "P-006", "warehouse": "WH-ZY-B-1", "quantity": 15},
            {"kind": "issue", "part": "P-006", "warehouse": "WH-DY-A-1", "quantity": 10},
            {"kind": "issue", "part": "P-006", "warehouse": "WH-ZY-C-1", "quantity": 1}
        ]}),
    )
    .await
    .expect(201);
    assert_eq!(notify(&app).await, 2, "to each storekeeper (keeper_qian, and admin who has every role)");
    assert_eq!(notify(&app).await, 0, "each crossing is notified once");
    let item = app.get("/api/v1/inbox", "keeper_qian").await.expect(200)["items"][0].clone();
    assert_eq!(item["template"], "low_stock");
    assert_eq!(item["title"], "【库存不足】温控器 数显");
    assert!(item["body"].as_str().unwrap().contains("可用合计 4,低于最低库存 5"), "{item}");
}

#[tokio::test]
async fn a_meter_reading_over_the_service_interval_starts_a_maintenance_order() {
    let mut app = TestApp::hospital();
    let reading = |value: f64| json!({"data": {"asset": "EQ-000101", "category": "hvac", "reading": value, "unit": "hours"}});
    let low = app.post("/api/v1/records/meter_reading", "tech_wang", reading(4800.0)).await.expect(201);
    assert!(low["id"].as_str().unwrap().starts_with("MR-20261125-"));
    let count = |v: Value| v["items"].as_array().unwrap().len();
    assert_eq!(count(app.get("/api/v1/instances?workflow=inspection", "admin").await.expect(200)), 0);
    app.post("/api/v1/records/meter_reading", "tech_wang", reading(5120.0)).await.expect(201);
    assert_eq!(count(app.get("/api/v1/instances?workflow=inspection", "admin").await.expect(200)), 1);
    let order = app.get("/api/v1/instances?workflow=inspection", "admin").await.expect(200)["items"][0].clone();
    assert_eq!(order["data"]["plan"], "运行 5120 小时保养");
    assert_eq!(order["data"]["asset"], "EQ-000101");
    assert_eq!(order["assignment"]["team"], "hvac_team");
    assert_eq!(inbox(&mut app, "tech_zhang").await, vec!["inspection_planned"], "the team hears of the new order");
}

/// The medical-gas plan: each device at its own interval (from the asset),
/// the first order one interval after its last maintenance, the next one
/// an interval after the previous order was finished.
#[tokio::test]
async fn a_completion_anchored_plan_comes_due_after_the_last_one_finished() {
    let mut app = TestApp::hospital();
    async fn gas(app: &mut TestApp) -> Vec<String> {
        let page = app.get("/api/v1/instances?workflow=inspection&limit=500", "admin").await.expect(200);
        let mut assets: Vec<String> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["data"]["plan"].as_str().is_some_and(|p| p.starts_with("医用气体保养")))
            .map(|i| i["data"]["asset"].as_str().unwrap().to_string())
            .collect();
        assets.sort();
        assets
    }
    // 2026-11-25: EQ-000142 (30 days, last 2026-10-20) and EQ-000145 (14 days, last 2026-11-05) are due.
    app.runtime.run_schedules().await.unwrap();
    assert_eq!(gas(&mut app).await, ["EQ-000142", "EQ-000145"]);
    let page = app.get("/api/v1/instances?workflow=inspection&limit=500", "admin").await.expect(200);
    let id = page["items"].as_array().unwrap().iter().find(|i| i["data"]["asset"] == "EQ-000142").unwrap()["id"].as_str().unwrap().to_string();
    app.transition(&id, "start_work", "tech_zhou", json!({})).await.expect(200);
    app.transition(&id, "finish", "tech_zhou", json!({"checklist": [{"item": "压力", "result": "ok"}], "summary": "正常"})).await.expect(200);
    let asset = app.get("/api/v1/records/asset/EQ-000142", "admin").await.expect(200);
    assert_eq!(asset["data"]["last_maintained"], "2026-11-25", "finishing it records the maintenance on the asset");
    // 2026-12-01 08:00 Shanghai: EQ-000143 (last 2026-11-01) comes due.
    app.clock.set("2026-12-01T00:00:00Z".parse().unwrap());
    app.runtime.run_schedules().await.unwrap();
    assert_eq!(gas(&mut app).await, ["EQ-000142", "EQ-000143", "EQ-000145"]);
    // 2026-12-25 00:00Z: the six last maintained 2026-11-10…20 are due; EQ-000142 (finished 11-25 01:00Z) not yet.
    app.clock.set("2026-12-25T00:00:00Z".parse().unwrap());
    app.runtime.run_schedules().await.unwrap();
    let now = gas(&mut app).await;
    assert_eq!(now.len(), 9, "{now:?}");
    assert_eq!(now.iter().filter(|a| *a == "EQ-000142").count(), 1);
    app.clock.advance(SignedDuration::from_hours(1));
    app.runtime.run_schedules().await.unwrap();
    let now = gas(&mut app).await;
    assert_eq!(now.iter().filter(|a| *a == "EQ-000142").count(), 2, "30 days after it was finished");
    assert_eq!(now.iter().filter(|a| *a == "EQ-000145").count(), 1, "still open: not due again");
    app.runtime.run_schedules().await.unwrap();
    assert_eq!(gas(&mut app).await.len(), 10);
}

#[test]
fn check_refuses_a_schedule_filter_that_compares_a_number_with_text() {
    let app = TestApp::hospital_copy();
    let file = "definitions/schedules/medical_gas_after_service.yaml";
    app.edit(file, "status != 'retired'", "maintenance_interval_days == '30'");
    let diags = match flowform_core::compile(flowform_runtime::sources::read_dir(&app.app_dir).unwrap()) {
        Err(d) => d,
        Ok(_) => panic!("a comparison that is never true was accepted"),
    };
    let d = diags.iter().find(|d| d.code == "type_mismatch").unwrap_or_else(|| panic!("{diags:?}"));
    assert!(d.file.ends_with("medical_gas_after_service.yaml") && d.line == 14, "{d:?}");
    assert!(d.message.contains("`maintenance_interval_days` is a number field, compared with the text \"30\""), "{}", d.message);
    // The mapping form is typed too, and an option the field does not have is never true.
    app.edit(file, "where: \"category == 'medical_gas' && maintenance_interval_days == '30'\"", "where: { category: medical_gs }");
    let diags = flowform_core::compile(flowform_runtime::sources::read_dir(&app.app_dir).unwrap()).err().unwrap();
    assert!(diags.iter().any(|d| d.code == "not_an_option" && d.hint.as_deref().is_some_and(|h| h.contains("medical_gas"))), "{diags:?}");
    // A per-record interval needs a number field and `anchor: completion`.
    app.edit(file, "where: { category: medical_gs }", "where: { category: medical_gas }");
    app.edit(file, "every: { days: maintenance_interval_days }", "every: { days: name }");
    let diags = flowform_core::compile(flowform_runtime::sources::read_dir(&app.app_dir).unwrap()).err().unwrap();
    assert!(diags.iter().any(|d| d.code == "type_mismatch" && d.message.contains("`name` is a string field")), "{diags:?}");
    app.edit(file, "every: { days: name }", "every: { days: maintenance_interval_days }");
    app.edit(file, "anchor: completion\n", "");
    let diags = flowform_core::compile(flowform_runtime::sources::read_dir(&app.app_dir).unwrap()).err().unwrap();
    assert!(diags.iter().any(|d| d.message.contains("needs `anchor: completion`")), "{diags:?}");
}

/// Regression: `fire_due_timers` returned at the first error, and a timer
/// that could not act was never dropped, so one poisoned timer could block
/// all others. Now it is quarantined with its reason, the others fire, and
/// `/healthz` and the admin API name it.
#[tokio::test]
async fn a_poisoned_timer_is_quarantined_and_the_others_fire() {
    let mut app = TestApp::hospital();
    let wo = app.start_instance("repair", "nurse_li", entrapment()).await.expect(201);
    let good = wo["id"].as_str().unwrap().to_string();
    // An instance whose definitions version is gone from the store, with a due timer.
    let mut poisoned: flowform_core::Instance = serde_json::from_value(json!({
        "id": "00000000000000000000POISON", "workflow": "repair", "bundle_version": "no-such-version", "version": 0,
        "state": "unaccepted", "state_entered_seq": 1, "data": {}, "assignment": {}, "requester": "nurse_li", "created_at": "2026-11-25T01:00:00.000Z",
        "updated_at": "2026-11-25T01:00:00.000Z"
    }))
    .unwrap();
    poisoned.version = 1;
    let timer = flowform_core::timers::TimerSpec {
        instance_id: poisoned.id.clone(),
        timer: "sla".into(),
        state: "unaccepted".into(),
        entered_seq: 1,
        due_at: flowform_core::time::tm("2026-11-25T01:01:00.000Z"),
    };
    let event: flowform_core::Event = serde_json::from_value(json!({
        "instance_id": poisoned.id, "seq": 1, "kind": "started", "actor": "nurse_li", "at": "2026-11-25T01:00:00.000Z",
        "bundle_version": "no-such-version", "to_state": "unaccepted", "input": {}, "changes": {}
    }))
    .unwrap();
    let write = flowform_store::CommandWrite {
        children: Vec::new(),
        meta: Vec::new(),
        records: Vec::new(),
        instance: poisoned.clone().into(),
        expected_version: 0,
        event,
        idempotency: None,
        refs: vec![],
        postings: vec![],
        timers: Some(vec![timer]),
        fired_timer: None,
        inbox: vec![],
        outbox: vec![],
    };
    assert_eq!(app.runtime.store().commit(write).unwrap(), flowform_store::CommitOutcome::Committed);

    app.clock.advance(SignedDuration::from_mins(5));
    assert_eq!(fire(&app).await, 1, "the good order's reminder fires despite the poisoned timer");
    assert_eq!(inbox(&mut app, "tech_sun").await, vec!["accept_reminder", "dispatched"]);
    app.runtime.tick_done(None);
    let q = app.get("/api/v1/admin/quarantine", "admin").await.expect(200);
    assert_eq!(q["items"].as_array().unwrap().len(), 1, "{q}");
    assert_eq!(q["items"][0]["timer"]["instance_id"], poisoned.id.as_str());
    assert!(q["items"][0]["reason"].as_str().unwrap().contains("no-such-version"), "{q}");
    // The server works (200), with a warning that points admins at the quarantine — not the ids.
    let health = app.request(axum::http::Method::GET, "/healthz", None, None, &[]).await.expect(200);
    assert_eq!((health["status"].as_str(), health["components"]["timers"]["status"].as_str()), (Some("warning"), Some("warning")), "{health}");
    assert!(!health.to_string().contains(&poisoned.id), "no instance ids without a token: {health}");
    assert_eq!(health["components"]["writer"]["status"], "ok");
    // Requeued: the timer is back (its instance is still in that state) and is quarantined again
    // at the next round, since its definitions are still missing; cleared: the warning goes.
    let back = app.request(axum::http::Method::POST, "/api/v1/admin/quarantine/requeue", Some("admin"), None, &[]).await.expect(200);
    assert_eq!(back["requeued"], 1);
    fire(&app).await;
    assert_eq!(app.get("/api/v1/admin/quarantine", "admin").await.expect(200)["items"].as_array().unwrap().len(), 1);
    let seen = app.get("/api/v1/admin/quarantine", "admin").await.expect(200)["items"][0]["at"].as_str().unwrap().to_string();
    app.request(axum::http::Method::DELETE, "/api/v1/admin/quarantine?upto=2000-01-01T00:00:00.000Z", Some("admin"), None, &[]).await.expect(200);
    assert_eq!(app.get("/api/v1/admin/quarantine", "admin").await.expect(200)["items"].as_array().unwrap().len(), 1, "newer than `upto`: kept");
    app.request(axum::http::Method::DELETE, &format!("/api/v1/admin/quarantine?upto={seen}"), Some("admin"), None, &[]).await.expect(200);
    let health = app.request(axum::http::Method::GET, "/healthz", None, None, &[]).await.expect(200);
    assert_eq!(health["status"], "ok");
    app.clock.advance(SignedDuration::from_mins(15));
    assert_eq!(fire(&app).await, 1, "the escalation of {good} fires");
}

/// Idempotency keys past their retention are pruned once a day; recent ones
/// keep protecting retries.
#[tokio::test]
async fn retention_prunes_old_idempotency_keys_once_a_day() {
    let mut app = TestApp::hospital();
    let headers = [("idempotency-key", "old-report")];
    let body = serde_json::json!({"data": entrapment()});
    let first = app.request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(body.clone()), &headers).await.expect(201);
    app.clock.advance(SignedDuration::from_hours(24 * 31));
    let recent = [("idempotency-key", "new-report")];
    app.request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(body.clone()), &recent).await.expect(201);
    assert!(app.runtime.prune_daily().unwrap() >= 1);
    assert_eq!(app.runtime.prune_daily().unwrap(), 0, "once a day");
    // The recent key still answers with its first result; the old one is a new request.
    let again = app.request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(body.clone()), &recent).await.expect(201);
    let old_again = app.request(axum::http::Method::POST, "/api/v1/workflows/repair/instances", Some("nurse_li"), Some(body), &headers).await.expect(201);
    assert_ne!(old_again["id"], first["id"], "the 31-day-old key was forgotten");
    assert_eq!(app.get("/api/v1/instances?workflow=repair", "admin").await.expect(200)["items"].as_array().unwrap().len(), 3, "{again}");
}

/// Regression: a record trigger that could not start its workflow was only
/// logged. Now admins see it (and `/healthz` warns) until they clear it.
#[tokio::test]
async fn a_failed_record_trigger_is_shown_to_admins() {
    let mut app = TestApp::hospital_copy();
    app.edit("definitions/records/meter_reading.yaml", "    roles: [dispatcher]        # the trigger", "    roles: [staff]        # the trigger");
    assert!(!matches!(app.runtime.reload(), flowform_runtime::reload::ReloadOutcome::Rejected { .. }));
    let reading = serde_json::json!({"data": {"asset": "EQ-000101", "category": "hvac", "reading": 6000, "unit": "hours"}});
    let created = app.post("/api/v1/records/meter_reading", "tech_wang", reading).await.expect(201);
    let q = app.get("/api/v1/admin/quarantine", "admin").await.expect(200);
    let failed = &q["failed_triggers"][0];
    assert_eq!((failed["record"].as_str(), failed["workflow"].as_str()), (created["id"].as_str(), Some("inspection")), "{q}");
    assert!(failed["reason"].as_str().unwrap().contains("dispatcher"), "{q}");
    assert_eq!(app.request(axum::http::Method::GET, "/healthz", None, None, &[]).await.expect(200)["status"], "warning");
    app.request(axum::http::Method::DELETE, "/api/v1/admin/quarantine", Some("admin"), None, &[]).await.expect(200);
    assert_eq!(app.get("/api/v1/admin/quarantine", "admin").await.expect(200)["failed_triggers"].as_array().unwrap().len(), 0);
}

/// An escalation reaches a person named in a record: the asset's responsible
/// engineer (`to: field:asset.responsible`), besides the roles.
#[tokio::test]
async fn an_escalation_reaches_the_engineer_the_asset_names() {
    let mut app = TestApp::hospital();
    let wo = app
        .start_instance(
            "repair",
            "nurse_li",
            json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "ICU", "description": "空调不制冷了", "priority": "urgent", "urgent_reason": "病房过热"}),
        )
        .await
        .expect(201);
    assert_eq!(app.runtime.record("asset", "EQ-000101").unwrap().data["responsible"], "tech_zhang");
    let escalate_after = wo["data"]["escalate_after"].as_i64().unwrap_or(60);
    app.clock.advance(SignedDuration::from_mins(escalate_after + 1));
    while fire(&app).await > 0 {}
    let titles = inbox(&mut app, "tech_zhang").await;
    assert!(titles.contains(&"escalated".to_string()), "{titles:?}");
}
