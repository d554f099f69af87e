//! The web app in a real browser: Debian's Chromium through chromedriver, at
//! a phone's viewport (390×844), against the real server on a temporary
//! store. Each step saves a screenshot under `target/screenshots/`, and
//! every page is checked for horizontal scrolling.
//!
//! `scripts/test.sh` installs chromium, chromium-driver and fonts-noto-cjk
//! where they are missing. Without them these tests fail (they never skip
//! silently); `FLOWFORM_SKIP_BROWSER=1` skips them on purpose, saying so.

use fantoccini::actions::{InputSource, MouseActions, PointerAction};
use fantoccini::{Client, ClientBuilder, Locator};
use flowform_testkit::{TestApp, repo_root};
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A tiny valid PNG (1×1), as a phone photo stands in for.
const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02,
    0x00, 0x00, 0x00, 0x90, 0x77, 0x53, 0xDE, 0x00, 0x00, 0x00, 0x0C, 0x49, 0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0xF8, 0xCF, 0xC0, 0x00, 0x00, 0x03, 0x01, 0x01,
    0x00, 0x18, 0xDD, 0x8D, 0xB0, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
];

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        // chromedriver and the Chromium it started share a process group: all of it goes.
        let _ = Command::new("kill").args(["-9", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One journey: a server, a browser, and where its screenshots go.
struct Journey {
    app: TestApp,
    client: Client,
    _driver: Driver,
    base: String,
    name: &'static str,
    step: usize,
    shots: PathBuf,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(9515)
}

fn browser_available() -> bool {
    if std::env::var("FLOWFORM_SKIP_BROWSER").is_ok_and(|v| v == "1") {
        eprintln!("FLOWFORM_SKIP_BROWSER=1: the browser tests are skipped on purpose");
        return false;
    }
    for tool in ["chromedriver", "chromium"] {
        let found = Command::new("sh").arg("-c").arg(format!("command -v {tool}")).stdout(Stdio::null()).status().is_ok_and(|s| s.success());
        assert!(
            found,
            "`{tool}` is missing: run scripts/test.sh (it installs chromium, chromium-driver and fonts-noto-cjk), or set FLOWFORM_SKIP_BROWSER=1 to skip on purpose"
        );
    }
    true
}

impl Journey {
    async fn start(name: &'static str, lang: &str) -> Journey {
        // Two TLS backends are linked (the WebDriver client never uses TLS here): pick one.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let app = TestApp::hospital_copy();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap_or_else(|e| panic!("{e}"));
        let base = format!("http://{}", listener.local_addr().unwrap_or_else(|e| panic!("{e}")));
        let router = app.router.clone();
        tokio::spawn(async move { flowform_server::serve(listener, router, std::future::pending()).await });
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start chromedriver: {e}"));
        let driver = Driver(child);
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", format!("--lang={lang}"), "--hide-scrollbars"],
                "prefs": {"intl.accept_languages": lang},
                "mobileEmulation": {
                    "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0, "touch": true},
                    "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36"
                }
            }),
        );
        let mut client = None;
        for _ in 0..50 {
            match ClientBuilder::rustls() {
                Ok(mut b) => match b.capabilities(caps.clone()).connect(&format!("http://127.0.0.1:{port}")).await {
                    Ok(c) => {
                        client = Some(c);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                },
                Err(e) => panic!("{e}"),
            }
        }
        let client = client.unwrap_or_else(|| panic!("chromedriver did not answer on port {port}"));
        let shots = repo_root().join("target/screenshots");
        std::fs::create_dir_all(&shots).unwrap_or_else(|e| panic!("{e}"));
        // This journey's screenshots of an earlier run go: the folder shows the last run.
        for entry in std::fs::read_dir(&shots).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&format!("{name}-")) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Journey { app, client, _driver: driver, base, name, step: 0, shots }
    }

    async fn go(&mut self, path: &str) {
        let url = format!("{}{path}", self.base);
        // A navigation that a just-finished form post superseded is made again.
        for _ in 0..3 {
            self.client.goto(&url).await.unwrap_or_else(|e| panic!("goto {path}: {e}"));
            let now = self.client.current_url().await.map(|u| u.to_string()).unwrap_or_default();
            if now == url || now.starts_with(&format!("{}/login", self.base)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Saves a screenshot of this step and checks the page fits the phone.
    async fn shot(&mut self, what: &str) {
        self.step += 1;
        let png = self.client.screenshot().await.unwrap_or_else(|e| panic!("screenshot: {e}"));
        let path = self.shots.join(format!("{}-{:02}-{what}.png", self.name, self.step));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("{e}"));
        let fits = self.client.execute("return document.documentElement.scrollWidth <= window.innerWidth + 1", vec![]).await.unwrap_or(Value::Bool(false));
        assert_eq!(fits, Value::Bool(true), "{}: the page scrolls sideways at 390 px ({})", what, path.display());
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no `{css}`: {e}"))
    }

    /// Waits until `script` (an expression) is true, e.g. after a tap navigates.
    async fn until(&self, script: &str) {
        for _ in 0..100 {
            if self.client.execute(&format!("return !!({script});"), vec![]).await.unwrap_or_default() == Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("waited 10 s for `{script}`");
    }

    /// Scrolls `el` to the middle of the screen and taps it, as a thumb would.
    async fn click(&self, el: &fantoccini::elements::Element) {
        let arg = serde_json::to_value(el).unwrap_or_default();
        let _ = self.client.execute("arguments[0].scrollIntoView({block: 'center'});", vec![arg]).await;
        el.click().await.unwrap_or_else(|e| panic!("tap: {e}"));
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap_or_default()
    }

    /// Taps the link or button whose text contains `text`.
    async fn tap(&self, text: &str) {
        let xpath = format!("//*[self::a or self::button or self::label][contains(normalize-space(.), '{text}')]");
        let el = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("nothing to tap saying `{text}`: {e}"));
        self.click(&el).await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let el = self.find(css).await;
        el.clear().await.unwrap_or_else(|e| panic!("{e}"));
        el.send_keys(text).await.unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    async fn page_text(&self) -> String {
        self.text("main").await
    }

    async fn sign_in(&mut self, user: &str) {
        self.client.delete_all_cookies().await.unwrap_or_else(|e| panic!("{e}"));
        self.go("/login").await;
        self.type_in("#username", user).await;
        self.type_in("#password", "demo2026").await;
        self.find("form[action='/login'] button[type=submit]").await.click().await.unwrap_or_else(|e| panic!("{e}"));
        self.find("nav.bottom").await;
    }

    /// Picks a record in the picker of field `name` by typing `search`.
    /// Searches the picker `name` for `search` and taps the option `choose`,
    /// then waits until the picker shows it chosen. A tap that lands while
    /// a slower search answer replaces the list (a loaded machine) is made
    /// again, as a person would.
    async fn pick(&self, name: &str, search: &str, choose: &str) {
        let xpath = format!("//div[@data-picker][input[@name='{name}']]//button[contains(@class,'pick-option')][contains(normalize-space(.), '{choose}')]");
        let chosen =
            format!("//div[@data-picker][input[@name='{name}']]/div[@data-picker-chosen][not(@hidden)]/span[contains(normalize-space(.), '{choose}')]");
        // An empty picker shows its search box, not an empty choice.
        let empty = format!("//div[@data-picker][input[@name='{name}']]/div[@data-picker-chosen][@hidden]");
        if let Ok(chip) = self.client.find(Locator::XPath(&empty)).await {
            assert!(!chip.is_displayed().await.unwrap_or(true), "the empty picker {name} shows an empty choice");
        }
        for attempt in 1..=3 {
            if self.client.find(Locator::XPath(&chosen)).await.is_ok() {
                return;
            }
            let box_ = self.find(&format!("input[name='_q_{name}']")).await;
            if box_.is_displayed().await.unwrap_or(false) {
                let _ = box_.clear().await;
                let _ = box_.send_keys(search).await;
            }
            let option = self.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::XPath(&xpath)).await;
            if let Ok(option) = option {
                let arg = serde_json::to_value(&option).unwrap_or_default();
                let _ = self.client.execute("arguments[0].scrollIntoView({block: 'center'});", vec![arg]).await;
                let _ = option.click().await;
            }
            if self.client.wait().at_most(Duration::from_secs(if attempt == 3 { 10 } else { 3 })).for_element(Locator::XPath(&chosen)).await.is_ok() {
                return;
            }
        }
        panic!("the picker {name} did not take {choose}");
    }

    /// Chooses the option labelled `label` of the select named `name`.
    async fn choose(&self, name: &str, label: &str) {
        let xpath = format!("//select[@name='{name}']/option[normalize-space(.)='{label}']");
        let option = self
            .client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no option {label} in {name}: {e}"));
        option.click().await.unwrap_or_else(|e| panic!("{e}"));
    }

    async fn submit(&self) {
        let button = self.find("form[data-form] button[type=submit]").await;
        self.click(&button).await;
    }

    async fn visible(&self, css: &str) -> bool {
        let script = format!("const e = document.querySelector({}); return !!e && !e.closest('[hidden]') && e.offsetParent !== null;", json!(css));
        self.client.execute(&script, vec![]).await.unwrap_or(Value::Bool(false)) == Value::Bool(true)
    }

    async fn end(self) {
        let _ = self.client.close().await;
        drop(self.app);
    }
}

/// One browser at a time: two cores run one Chromium well, not six.
static ONE_BROWSER: std::sync::Mutex<()> = std::sync::Mutex::new(());

macro_rules! browser_test {
    ($name:ident, $body:expr) => {
        #[test]
        fn $name() {
            if !browser_available() {
                return;
            }
            let _turn = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap_or_else(|e| panic!("{e}"));
            runtime.block_on($body);
        }
    };
}

browser_test!(a_conditional_field_appears_disappears_and_becomes_required, async {
    let mut j = Journey::start("j2-conditions", "zh-CN").await;
    j.sign_in("nurse_li").await;
    j.shot("home").await;
    j.tap("设备报修").await;
    j.find("form[data-form]").await;
    assert!(!j.visible("textarea[name=urgent_reason]").await, "the reason field is hidden until the priority is urgent");
    j.shot("form").await;
    j.tap("紧急").await;
    assert!(j.visible("textarea[name=urgent_reason]").await, "choosing urgent shows the reason field");
    let mark = j.client.execute("return !document.querySelector('[data-name=urgent_reason] [data-req-mark]').hidden", vec![]).await.unwrap_or_default();
    assert_eq!(mark, Value::Bool(true), "and marks it required at once");
    j.shot("urgent").await;
    j.tap("较急").await;
    assert!(!j.visible("textarea[name=urgent_reason]").await, "another priority hides it again");
    j.shot("not-urgent").await;
    // The browser's evaluator answers like the server's on the same cases.
    let cases = flowform_testkit::condition_cases();
    let script = format!(
        "const m = await import(document.querySelector('script[type=module]').src.replace(/app\\.[0-9a-f]+\\.js$/, 'cond.js')); \
         return {}.map(c => m.evaluate(c[0], c[1]));",
        Value::Array(cases.iter().map(|(c, d, _)| json!([c, d])).collect())
    );
    let answers = j.client.execute(&format!("return (async () => {{ {script} }})();"), vec![]).await.unwrap_or_else(|e| panic!("{e}"));
    let expected: Vec<Value> = cases.iter().map(|(_, _, want)| Value::Bool(*want)).collect();
    assert_eq!(answers, Value::Array(expected), "cond.js and Condition::eval disagree");
    j.end().await;
});

browser_test!(a_form_error_shows_on_its_field_and_the_input_survives, async {
    let mut j = Journey::start("j3-errors", "zh-CN").await;
    j.sign_in("nurse_li").await;
    j.go("/start/repair").await;
    j.pick("asset", "冷水", "1号冷水机组").await;
    // The category comes from the asset, filled in as it is chosen.
    j.until("document.querySelector('select[name=category]').value === 'hvac'").await;
    j.choose("department", "门诊部").await;
    j.type_in("input[name=location]", "门诊楼 3 层").await;
    j.type_in("textarea[name=description]", "漏水").await; // too short: at least 5 characters
    j.type_in("input[name=reporter_phone]", "abc").await; // not a phone number
    j.shot("filled").await;
    j.submit().await;
    let error = j.text("#f-description-error").await;
    assert!(!error.is_empty(), "the description's error is next to it");
    assert!(!j.text("#f-reporter_phone-error").await.is_empty(), "and the phone's");
    let described = j.find("textarea[name=description]").await.attr("aria-describedby").await.unwrap_or_default();
    assert_eq!(described.as_deref(), Some("f-description-error"), "tied to the field for screen readers");
    assert_eq!(j.find("input[name=location]").await.prop("value").await.unwrap_or_default().as_deref(), Some("门诊楼 3 层"), "what was typed survives");
    assert_eq!(j.find("textarea[name=description]").await.prop("value").await.unwrap_or_default().as_deref(), Some("漏水"));
    assert!(j.page_text().await.contains("1号冷水机组"), "the chosen asset shows as chosen");
    j.shot("errors").await;
    j.type_in("textarea[name=description]", "水管漏水,地面积水").await;
    j.type_in("input[name=reporter_phone]", "0755-1234").await;
    j.submit().await;
    j.find(".notice").await;
    assert!(j.page_text().await.contains("水管漏水"));
    j.shot("created").await;
    j.end().await;
});

browser_test!(a_double_submitted_start_creates_one_instance, async {
    let mut j = Journey::start("j4-double-submit", "zh-CN").await;
    j.sign_in("nurse_chen").await;
    j.go("/start/repair").await;
    j.pick("asset", "EQ-000103", "冷却塔").await;
    // The category comes from the asset, filled in as it is chosen.
    j.until("document.querySelector('select[name=category]').value === 'hvac'").await;
    j.choose("department", "后勤保障部").await;
    j.type_in("input[name=location]", "后勤楼 B1").await;
    j.type_in("textarea[name=description]", "冷却塔风机异响").await;
    // Two taps on a slow network: the same form posted twice.
    let script = "const f = document.querySelector('form[data-form]'); const body = new URLSearchParams(new FormData(f)); \
                  return Promise.all([1, 2].map(() => fetch(f.action, {method: 'POST', body, credentials: 'same-origin'}).then(r => r.url)));";
    let urls = j.client.execute(script, vec![]).await.unwrap_or_else(|e| panic!("{e}"));
    let urls: Vec<String> = serde_json::from_value(urls).unwrap_or_default();
    assert_eq!(urls.len(), 2);
    assert_eq!(urls[0], urls[1], "both answers lead to the same order");
    j.shot("after-double-post").await;
    let page = j
        .app
        .runtime
        .instances(&flowform_store::InstanceFilter { workflow: Some("repair".into()), limit: 50, ..Default::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(page.items.len(), 1, "one order, not two");
    j.end().await;
});

browser_test!(an_admin_sees_a_broken_definition_fixes_it_and_sees_the_new_version, async {
    let mut j = Journey::start("j5-admin", "zh-CN").await;
    j.sign_in("admin").await;
    j.go("/admin").await;
    let before = j.text("[data-version]").await;
    j.shot("admin").await;
    j.app.edit("definitions/workflows/repair.yaml", "    to: in_progress\n    roles: [technician]", "    to: in_progres\n    roles: [technician]");
    j.tap("重新加载定义").await;
    j.find(".notice").await;
    let page = j.page_text().await;
    assert!(page.contains("definitions/workflows/repair.yaml:"), "the diagnostic names file:line:col: {page}");
    assert!(page.contains("in_progres"), "and what is wrong");
    j.shot("rejected").await;
    j.app.edit("definitions/workflows/repair.yaml", "    to: in_progres\n", "    to: in_progress\n");
    j.app.edit("definitions/workflows/repair.yaml", "title: { zh-CN: 设备报修, en: Equipment repair }", "title: { zh-CN: 设备报修(新), en: Equipment repair }");
    j.tap("重新加载定义").await;
    j.until("document.querySelector('.notice') && document.querySelector('.notice').textContent.includes('已加载新版本')").await;
    let after = j.text("[data-version]").await;
    assert_ne!(before, after, "the page shows the new version: {}", j.page_text().await);
    j.shot("reloaded").await;
    j.go("/").await;
    assert!(j.page_text().await.contains("设备报修(新)"), "the home page shows the new title without a restart");
    j.shot("home-new-title").await;
    j.end().await;
});

browser_test!(an_admin_tries_a_changed_dispatch_rule_on_past_orders, async {
    let mut j = Journey::start("j8-replay", "zh-CN").await;
    for (asset, dept) in [("EQ-000101", "D-WARD5"), ("EQ-000102", "D-LAB"), ("EQ-000116", "D-ICU")] {
        j.app
            .start_instance("repair", "nurse_li", serde_json::json!({"asset": asset, "department": dept, "description": "设备故障需要维修"}))
            .await
            .expect(201);
    }
    // The candidate: a copy of the definitions where air conditioning goes to the general team.
    let candidate = flowform_testkit::changed_copy(
        &j.app.app_dir,
        &[(
            "rules/dispatch.rhai",
            "let team = team_for(record.category);",
            "let team = if record.category == \"hvac\" { \"general_team\" } else { team_for(record.category) };",
        )],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    j.sign_in("admin").await;
    j.go("/admin").await;
    j.tap("假设重放").await;
    j.find("input[name=dir]").await;
    j.shot("form").await;
    j.type_in("input[name=dir]", candidate.path().to_str().unwrap_or_default()).await;
    j.find("form[action='/admin/replay#result'] button[type=submit]").await.click().await.unwrap_or_else(|e| panic!("{e}"));
    j.find("[data-replay]").await;
    let page = j.page_text().await;
    assert!(page.contains("2 个会有不同") && page.contains("空调班 → 综合维修班"), "{page}");
    let wide: bool =
        j.client.execute("return document.documentElement.scrollWidth > window.innerWidth + 1", vec![]).await.unwrap_or_default().as_bool().unwrap_or(true);
    assert!(!wide, "the replay page fits 390 px");
    j.shot("report").await;
    j.end().await;
});

browser_test!(the_managers_dashboard_shows_charts_and_drills_down, async {
    let mut j = Journey::start("j7-dashboard", "zh-CN").await;
    for (asset, dept) in [("EQ-000101", "D-WARD5"), ("EQ-000102", "D-LAB"), ("EQ-000139", "D-ICU"), ("EQ-000120", "D-WARD5")] {
        j.app
            .start_instance("repair", "nurse_li", serde_json::json!({"asset": asset, "department": dept, "description": "设备故障需要维修"}))
            .await
            .expect(201);
    }
    j.sign_in("manager_zheng").await;
    j.go("/me").await;
    j.tap("统计看板").await;
    j.until("document.querySelectorAll('svg.chart').length >= 3").await;
    let page = j.page_text().await;
    assert!(page.contains("后勤管理看板") && page.contains("故障类别分布"), "{page}");
    j.shot("dashboard").await;
    // Nothing is wider than the phone.
    let wide: bool = j.client.execute("return document.documentElement.scrollWidth > window.innerWidth + 1", vec![]).await.unwrap().as_bool().unwrap();
    assert!(!wide, "the dashboard fits 390 px");
    // A bar of the backlog leads to the orders behind it.
    j.go("/reports/backlog?by=team").await;
    j.shot("report-table").await;
    j.tap("空调班").await;
    j.until("document.querySelectorAll('li.card.item').length >= 1").await;
    j.shot("drill-down").await;
    j.end().await;
});

/// Journey 1: a nurse reports a fault from an asset's QR page with a photo,
/// the dispatcher re-dispatches it from the board, a technician accepts,
/// checks in by tag, completes with a signature, the nurse confirms with a
/// rating. `lang` runs it in either language.
async fn repair_journey(name: &'static str, lang: &str) {
    let en = lang == "en";
    let mut j = Journey::start(name, lang).await;
    let photo = j.app.data.path().join("fault.png");
    std::fs::write(&photo, PNG).unwrap_or_else(|e| panic!("{e}"));
    j.sign_in("nurse_li").await;
    if en {
        j.go("/me").await;
        j.tap("English").await;
        j.until("document.documentElement.lang === 'en'").await;
    }
    // The QR label on the asset opens its page.
    j.go("/records/asset/EQ-000102").await;
    j.shot("asset-qr-page").await;
    assert!(j.visible("img.qr").await, "the asset's page shows its QR code: {}", j.page_text().await);
    j.tap(if en { "Equipment repair" } else { "设备报修" }).await;
    j.find("form[data-form]").await;
    assert!(
        j.page_text().await.contains(if en { "Chiller 2" } else { "2号冷水机组" }) || j.page_text().await.contains("2号冷水机组"),
        "the asset is filled in from the QR page"
    );
    assert_eq!(
        j.client.execute("return document.querySelector('select[name=category]').value", vec![]).await.unwrap_or_default(),
        Value::String("hvac".into()),
        "the asset's category is filled in from the QR page's asset"
    );
    j.choose("department", "重症监护室").await;
    j.type_in("input[name=location]", "住院楼 5 层 502").await;
    j.type_in("textarea[name=description]", "空调不制冷,室温 30 度").await;
    j.find("input[data-files-input]").await.send_keys(&photo.display().to_string()).await.unwrap_or_else(|e| panic!("attach photo: {e}"));
    j.find("[data-previews] img").await;
    j.shot("report-with-photo").await;
    j.submit().await;
    j.find(".notice").await;
    j.find(".thumbs img").await;
    j.shot("reported").await;
    let order = j.client.current_url().await.unwrap_or_else(|e| panic!("{e}")).path().to_string();

    // The dispatcher sees it on the board and re-dispatches it.
    j.sign_in("dispatcher_liu").await;
    j.go("/board").await;
    assert!(j.page_text().await.contains("空调不制冷"), "the new order is on the board");
    j.shot("board").await;
    j.tap(if en { "Dispatch manually" } else { "人工派单" }).await;
    // Teams are records (班组): their names are the same in either language.
    j.choose("team", "综合维修班").await;
    j.type_in("textarea[name=dispatch_note]", "先由综合班检查电源").await;
    j.shot("dispatch-form").await;
    j.submit().await;
    j.find(".notice").await;
    j.shot("dispatched").await;

    // A technician of that team accepts it from the team queue.
    j.sign_in("tech_wu").await;
    j.go("/tasks").await;
    assert!(j.page_text().await.contains("空调不制冷"), "it waits in the general team's queue");
    j.shot("team-queue").await;
    j.go(&order).await;
    j.tap(if en { "Accept" } else { "接单" }).await;
    j.find(".notice").await;
    j.shot("accepted").await;
    // Check-in by tag.
    j.tap(if en { "Check in on site" } else { "到场打卡" }).await;
    j.type_in("input[name='place.tag']", "RFID-EQ-000102").await;
    j.shot("check-in").await;
    j.submit().await;
    j.find(".notice").await;
    // A part for the repair: a requisition linked to the order.
    j.tap(if en { "Parts requisition" } else { "领料申请" }).await;
    j.find("form[data-form]").await;
    assert!(
        j.page_text().await.contains(
            &j.app
                .runtime
                .instance(order.rsplit('/').next().unwrap_or_default())
                .map(|i| flowform_web::display::number(&i, &flowform_web::display::zone(&j.app.runtime.bundle())))
                .unwrap_or_default()
        ),
        "the order is filled in"
    );
    j.pick("warehouse", "住院楼", "住院楼分库 1 号库区").await;
    j.pick("lines[0].part", "风机", "风机电容").await;
    j.type_in("input[name='lines[0].quantity']", "2").await;
    j.tap(if en { "Add one" } else { "添加一项" }).await;
    j.pick("lines[1].part", "滤网", "空调滤网").await;
    j.type_in("input[name='lines[1].quantity']", "1").await;
    j.shot("requisition").await;
    j.submit().await;
    j.find(".notice").await;
    j.shot("requested").await;
    // The keeper approves and issues it.
    j.sign_in("keeper_qian").await;
    j.tap(if en { "Parts requisition" } else { "领料申请" }).await;
    let card = j.find(".items .item-link").await;
    j.click(&card).await;
    j.shot("keeper-sees-requisition").await;
    j.tap(if en { "Approve and issue" } else { "审批出库" }).await;
    j.find(".notice").await;
    assert!(j.page_text().await.contains(if en { "Issued" } else { "已出库" }));
    j.shot("issued").await;
    // Back to the technician: complete with a signature.
    j.sign_in("tech_wu").await;
    j.go(&order).await;
    j.tap(if en { "Complete" } else { "完工" }).await;
    j.choose("fault_cause", if en { "Wear" } else { "正常磨损" }).await;
    j.type_in("textarea[name=work_notes]", "更换压缩机启动电容,试机正常").await;
    j.type_in("input[name=minutes_spent]", "45").await;
    let pad = j.find("canvas[data-signature-pad]").await;
    let stroke = MouseActions::new("finger".into())
        .then(PointerAction::MoveToElement { element: pad.clone(), duration: None, x: -80.0, y: 0.0 })
        .then(PointerAction::Down { button: 0 })
        .then(PointerAction::MoveBy { duration: Some(Duration::from_millis(100)), x: 60.0, y: 30.0 })
        .then(PointerAction::MoveBy { duration: Some(Duration::from_millis(100)), x: 60.0, y: -30.0 })
        .then(PointerAction::Up { button: 0 });
    j.client.perform_actions(stroke).await.unwrap_or_else(|e| panic!("sign: {e}"));
    let signed = j
        .client
        .execute("return document.querySelector('[data-signature-value]').value.startsWith('data:image/png;base64,')", vec![])
        .await
        .unwrap_or_default();
    assert_eq!(signed, Value::Bool(true), "the signature pad saved a PNG");
    j.shot("complete-signed").await;
    j.submit().await;
    j.find(".notice").await;
    j.find("img.signature-image").await;
    j.shot("completed").await;

    // The nurse confirms with a rating.
    j.sign_in("nurse_li").await;
    j.go("/").await;
    j.shot("nurse-home").await;
    j.go(&order).await;
    j.tap(if en { "Confirm and rate" } else { "验收并评价" }).await;
    let star = j.find("label.star[aria-label='5']").await;
    j.click(&star).await;
    j.shot("rating").await;
    j.submit().await;
    j.find(".notice").await;
    let page = j.page_text().await;
    assert!(page.contains(if en { "Closed" } else { "已关单" }), "the order is closed: {page}");
    j.shot("closed").await;
    j.end().await;
}

browser_test!(journey_a_repair_from_report_to_rating, repair_journey("j1-repair", "zh-CN"));

browser_test!(journey_a_repair_from_report_to_rating_in_english, repair_journey("j6-repair-en", "en"));

/// A Chrome DevTools command through chromedriver (`goog/cdp/execute`).
#[derive(Debug)]
struct Cdp(&'static str, Value);

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/goog/cdp/execute", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::POST, Some(json!({"cmd": self.0, "params": self.1}).to_string()))
    }
}

/// `FLOWFORM_MEASURE=1`: first contentful paint of the pages a nurse and a
/// technician open, under Chromium's phone emulation with 4× CPU slowdown
/// and the "Fast 3G" network profile, cold cache. A measurement for
/// docs/performance.md, not a pass/fail test.
#[test]
fn first_contentful_paint_on_a_slow_phone() {
    if std::env::var("FLOWFORM_MEASURE").is_err() || !browser_available() {
        return;
    }
    let _turn = ONE_BROWSER.lock().unwrap_or_else(|p| p.into_inner());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap_or_else(|e| panic!("{e}"));
    runtime.block_on(async {
        let mut j = Journey::start("perf", "zh-CN").await;
        j.sign_in("nurse_li").await;
        let order = j
            .app
            .start_instance(
                "repair",
                "nurse_li",
                json!({"asset": "EQ-000101", "category": "hvac", "department": "D-ICU", "location": "住院楼 5 层", "description": "空调不制冷,室温 30 度"}),
            )
            .await
            .expect(201);
        // Fast 3G as Chromium's DevTools defines it: 562.5 ms RTT, 1.44 Mbit/s down, 675 kbit/s up.
        for (cmd, params) in [
            ("Network.enable", json!({})),
            ("Network.setCacheDisabled", json!({"cacheDisabled": true})),
            ("Network.emulateNetworkConditions", json!({"offline": false, "latency": 562.5, "downloadThroughput": 180_000, "uploadThroughput": 84_375})),
            ("Emulation.setCPUThrottlingRate", json!({"rate": 4})),
        ] {
            j.client.issue_cmd(Cdp(cmd, params)).await.unwrap_or_else(|e| panic!("{cmd}: {e}"));
        }
        let id = order["id"].as_str().unwrap_or_default().to_string();
        for (name, path) in [
            ("home", "/".to_string()),
            ("start form", "/start/repair".to_string()),
            ("work order", format!("/i/{id}")),
            ("transition form", format!("/i/{id}/t/cancel")),
        ] {
            let mut paints = Vec::new();
            for _ in 0..3 {
                j.go(&path).await;
                j.until("performance.getEntriesByName('first-contentful-paint').length > 0").await;
                let fcp = j.client.execute("return performance.getEntriesByName('first-contentful-paint')[0].startTime", vec![]).await.unwrap_or_default();
                paints.push(fcp.as_f64().unwrap_or(f64::NAN));
            }
            paints.sort_by(f64::total_cmp);
            println!("first contentful paint, {name:<16} median {:>6.0} ms (runs: {paints:.0?})", paints[1]);
        }
        j.end().await;
    });
}
