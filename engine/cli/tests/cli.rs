//! The `flowform` binary as a user runs it: check, graph, serve, token, restart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use flowform_testkit::copy_dir;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_flowform"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// A copy of the hospital application to break.
fn app_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for folder in ["definitions", "forms", "rules", "examples"] {
        copy_dir(&repo().join(folder), &dir.path().join(folder));
    }
    dir
}

fn edit(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{file} has no `{from}`");
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// The 1-based line of the first line containing `needle`.
fn line_of(path: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let at = text.find(needle).unwrap_or_else(|| panic!("no `{needle}` in {}", path.display()));
    text[..at].matches('\n').count() + 1
}

fn check(dir: &Path) -> (i32, String) {
    let out = bin().args(["check", "--dir"]).arg(dir).output().unwrap();
    (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).to_string() + String::from_utf8_lossy(&out.stderr).as_ref())
}

#[test]
fn the_repository_checks_clean() {
    let (code, out) = check(&repo());
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("ok: "), "{out}");
}

#[test]
fn a_misspelt_state_is_reported_with_its_place_and_a_suggestion() {
    let dir = app_copy();
    edit(dir.path(), "definitions/workflows/repair.yaml", "to: in_progress\n", "to: in_progres\n");
    let (code, out) = check(dir.path());
    assert_eq!(code, 1, "{out}");
    let line = line_of(&repo().join("definitions/workflows/repair.yaml"), "to: in_progress\n");
    assert!(out.contains(&format!("definitions/workflows/repair.yaml:{line}:9")), "{out}");
    assert!(out.contains("unknown state `in_progres`"), "{out}");
    assert!(out.contains("did you mean `in_progress`?"), "{out}");
    assert!(out.contains(&format!("{line} |     to: in_progres\n")), "the source line is shown: {out}");
    assert!(out.contains("1 problem(s) found"), "only the misspelling, not its consequences: {out}");
}

#[test]
fn three_errors_in_three_files_are_all_reported() {
    let dir = app_copy();
    edit(dir.path(), "definitions/workflows/repair.yaml", "roles: [technician]", "roles: [technican]");
    edit(dir.path(), "forms/rejection.yaml", "min_length: 5", "min_lenght: 5");
    edit(dir.path(), "rules/dispatch.rhai", "let team = team_for(record.category);", "let team = team_for(record.category;");
    let (code, out) = check(dir.path());
    assert_eq!(code, 1);
    let role_line = format!("definitions/workflows/repair.yaml:{}:13", line_of(&repo().join("definitions/workflows/repair.yaml"), "roles: [technician]"));
    for expected in [
        role_line.as_str(),
        "unknown role `technican`",
        "forms/rejection.yaml:7:5",
        "did you mean `min_length`?",
        "rules/dispatch.rhai:",
        "team_for(record.category;",
        "3 problem(s) found",
    ] {
        assert!(out.contains(expected), "missing `{expected}` in:\n{out}");
    }
    let json = bin().args(["check", "--format", "json", "--dir"]).arg(dir.path()).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["diagnostics"].as_array().unwrap().len(), 3);
    assert!(v["diagnostics"].as_array().unwrap().iter().all(|d| d["line"].as_u64().unwrap() > 0 && d["code"].is_string()));
}

#[test]
fn yaml_syntax_and_duplicate_keys_are_reported() {
    let dir = app_copy();
    edit(dir.path(), "forms/evaluation.yaml", "    min: 1\n", "    min: 1\n    min: 2\n");
    edit(dir.path(), "forms/cancellation.yaml", "fields:\n", "fields: [\n");
    let (code, out) = check(dir.path());
    assert_eq!(code, 1);
    assert!(out.contains("error[duplicate_key]") && out.contains("forms/evaluation.yaml:"), "{out}");
    assert!(out.contains("error[yaml_syntax]") && out.contains("forms/cancellation.yaml:"), "{out}");
}

#[test]
fn graph_prints_mermaid_and_dot() {
    let out = bin().args(["graph", "repair", "--dir"]).arg(repo()).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("stateDiagram-v2\n"));
    assert!(text.contains("unaccepted --> in_progress: 接单"), "{text}");
    let out = bin().args(["graph", "repair", "--format", "dot", "--lang", "en", "--dir"]).arg(repo()).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\"unaccepted\" -> \"in_progress\" [label=\"Accept\"];"), "{text}");
    let out = bin().args(["graph", "nope", "--dir"]).arg(repo()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown workflow `nope`"));
}

struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(data: &Path) -> Server {
        Self::start_in(&repo(), data)
    }

    fn start_in(dir: &Path, data: &Path) -> Server {
        let (child, addr) = common::serve(dir, data, &[]);
        Server { child, addr }
    }

    fn request(&self, method: &str, path: &str, token: &str, body: Option<&str>) -> (u16, serde_json::Value) {
        let mut stream = TcpStream::connect(&self.addr).unwrap();
        let body = body.unwrap_or("");
        write!(stream, "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", self.addr, body.len()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status: u16 = response.split(' ').nth(1).unwrap().parse().unwrap();
        let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
        (status, serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
    }

    fn stop(mut self) {
        Command::new("kill").arg(self.child.id().to_string()).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "graceful shutdown on SIGTERM: {status}");
    }
}

fn token(data: &Path, user: &str) -> String {
    let out = bin().args(["token", "--user", user, "--data"]).arg(data).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().last().unwrap().to_string()
}

#[test]
fn serve_token_and_restart_keep_every_instance() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    // The token command works while the server holds the store.
    let nurse = token(data.path(), "nurse_li");
    let (status, _) = server.request("GET", "/api/v1/bundle", "wrong", None);
    assert_eq!(status, 401);
    let report = r#"{"data":{"asset":"EQ-000101","category":"hvac","department":"D-ICU","location":"住院楼 5 层","description":"空调不制冷,室温 30 度"}}"#;
    let (status, created) = server.request("POST", "/api/v1/workflows/repair/instances", &nurse, Some(report));
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let tech = token(data.path(), "tech_wang");
    let (status, _) = server.request("POST", &format!("/api/v1/instances/{id}/transitions/accept"), &tech, Some(r#"{"data":{}}"#));
    assert_eq!(status, 200);
    server.stop();
    // A clean stop writes everything into the database: the log is empty.
    let left: Vec<_> = std::fs::read_dir(data.path().join("wal")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "the write-ahead log after a clean stop: {left:?}");

    let server = Server::start(data.path());
    let (status, view) = server.request("GET", &format!("/api/v1/instances/{id}"), &tech, None);
    assert_eq!(status, 200);
    assert_eq!((view["state"].as_str(), view["version"].as_u64()), (Some("in_progress"), Some(2)));
    let (_, history) = server.request("GET", &format!("/api/v1/instances/{id}/history"), &tech, None);
    assert_eq!(history.as_array().unwrap().len(), 2);
    server.stop();

    let out = bin().args(["token", "--user", "nobody", "--data"]).arg(data.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user `nobody`"));
}

/// Sends a raw HTTP/1.1 request; returns the status line's code and the whole response.
fn raw_http(addr: &str, request: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    (response.split(' ').nth(1).unwrap().parse().unwrap(), response)
}

/// Signs in through the page as a browser would; `Some(cookie)` on success.
fn sign_in(addr: &str, user: &str, password: &str) -> Option<String> {
    let (_, page) = raw_http(addr, &format!("GET /login HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"));
    let csrf = page.split("name=\"_csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let body = format!("username={user}&password={password}&_csrf={csrf}");
    let request = format!(
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nOrigin: http://{addr}\r\nCookie: ff_login_csrf={csrf}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, response) = raw_http(addr, &request);
    if status != 303 {
        return None;
    }
    response.lines().find_map(|l| l.strip_prefix("set-cookie: ff_session=")).map(|v| v.split(';').next().unwrap().to_string())
}

#[test]
fn a_user_added_while_the_server_runs_signs_in_at_once_and_is_refused_once_disabled() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    let user = |args: &[&str], stdin: Option<&str>| {
        let mut child = bin()
            .arg("user")
            .args(args)
            .arg("--data")
            .arg(data.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(text) = stdin {
            child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        }
        let out = child.wait_with_output().unwrap();
        (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
    };
    let (code, out) = user(&["add", "nurse_wu", "--roles", "staff", "--name", "吴护士"], None);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = user(&["add", "nurse_x", "--roles", "surgeon"], None);
    assert_eq!(code, Some(2), "an undeclared role is refused: {out}");
    assert!(out.contains("surgeon"), "{out}");
    let (code, out) = user(&["passwd", "nurse_wu"], Some("a-good-password\n"));
    assert_eq!(code, Some(0), "{out}");
    let cookie = sign_in(&server.addr, "nurse_wu", "a-good-password").expect("signs in at once");
    let me = format!("GET /api/v1/me HTTP/1.1\r\nHost: {}\r\nCookie: ff_session={cookie}\r\nConnection: close\r\n\r\n", server.addr);
    assert_eq!(raw_http(&server.addr, &me).0, 200);
    let token = token(data.path(), "nurse_wu");
    assert_eq!(server.request("GET", "/api/v1/me", &token, None).0, 200);
    let (code, out) = user(&["list"], None);
    assert!(code == Some(0) && out.contains("nurse_wu\t吴护士"), "{out}");

    let (code, out) = user(&["disable", "nurse_wu"], None);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(raw_http(&server.addr, &me).0, 401, "the session stops at once");
    assert_eq!(server.request("GET", "/api/v1/me", &token, None).0, 401, "the token stops at once");
    assert!(sign_in(&server.addr, "nurse_wu", "a-good-password").is_none());
    server.stop();

    // With the server stopped the same commands work on the store itself.
    let (code, out) = user(&["set", "nurse_wu", "--enable"], None);
    assert_eq!(code, Some(0), "{out}");
    let server = Server::start(data.path());
    assert!(sign_in(&server.addr, "nurse_wu", "a-good-password").is_some());
    server.stop();
}

#[test]
fn check_warns_about_a_record_type_that_grants_nothing() {
    let dir = app_copy();
    let path = dir.path().join("definitions/records/vendor.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let stripped: String = text.lines().filter(|l| !l.starts_with("roles:") && !l.starts_with("access:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, stripped).unwrap();
    let (code, out) = check(dir.path());
    assert_eq!(code, 0, "a warning does not fail the check: {out}");
    assert!(out.contains("warning[grants_nothing]: record type `vendor` grants no operation") && out.contains("definitions/records/vendor.yaml:"), "{out}");
    let (code, clean) = check(&repo());
    assert!(code == 0 && !clean.contains("warning["), "the hospital grants every type something: {clean}");
}

#[test]
fn diff_lists_what_changed_between_two_directories() {
    let new = app_copy();
    edit(new.path(), "definitions/workflows/repair.yaml", "  - name: record_work\n", "  - name: write_up\n");
    edit(new.path(), "forms/repair_report.yaml", "      - { value: other, label: { zh-CN: 其他, en: Other } }\n", "");
    let out = bin().arg("diff").arg(repo()).arg(new.path()).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success());
    assert!(text.contains("removed transition `repair/record_work`"), "{text}");
    assert!(text.contains("added transition `repair/write_up`"), "{text}");
    assert!(text.contains("changed field `repair_report/category`: option `other` removed"), "{text}");
    let same = bin().arg("diff").arg(repo()).arg(repo()).output().unwrap();
    assert!(String::from_utf8(same.stdout).unwrap().starts_with("no changes"));
}

#[test]
fn migrate_refuses_to_strand_instances_and_moves_them_with_a_mapping() {
    let app = app_copy();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(app.path(), data.path());
    let nurse = token(data.path(), "nurse_li");
    let tech = token(data.path(), "tech_wang");
    let report = r#"{"data":{"asset":"EQ-000101","category":"hvac","department":"D-ICU","location":"ICU","description":"空调不制冷了"}}"#;
    let (_, created) = server.request("POST", "/api/v1/workflows/repair/instances", &nurse, Some(report));
    let id = created["id"].as_str().unwrap().to_string();
    server.request("POST", &format!("/api/v1/instances/{id}/transitions/accept"), &tech, Some(r#"{"data":{}}"#));
    let busy = bin().args(["migrate", "--workflow", "repair", "--dir"]).arg(app.path()).arg("--data").arg(data.path()).output().unwrap();
    assert_eq!(busy.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("held by a running server"));
    server.stop();

    let path = app.path().join("definitions/workflows/repair.yaml");
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("in_progress", "working")).unwrap();
    let migrate = |extra: &[&str]| {
        let out = bin().args(["migrate", "--workflow", "repair", "--dir"]).arg(app.path()).arg("--data").arg(data.path()).args(extra).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).to_string())
    };
    let (code, out) = migrate(&[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&id) && out.contains("state `in_progress` no longer exists") && out.contains("nothing was migrated"), "{out}");
    let (code, out) = migrate(&["--map", "in_progress=working", "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("dry run") && out.contains("→ state `working`"), "{out}");
    let (code, out) = migrate(&["--map", "in_progress=working"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("migrated 1 instance(s)"), "{out}");
    let (_, out) = migrate(&[]);
    assert!(out.contains("no running instance is on another version"), "{out}");

    let server = Server::start_in(app.path(), data.path());
    let (_, view) = server.request("GET", &format!("/api/v1/instances/{id}"), &tech, None);
    assert_eq!(view["state"], "working");
    let (_, history) = server.request("GET", &format!("/api/v1/instances/{id}/history"), &tech, None);
    assert_eq!(history.as_array().unwrap().last().unwrap()["kind"], "migrated");
    server.stop();
}

#[test]
fn a_server_started_on_broken_files_serves_the_last_good_version() {
    let app = app_copy();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(app.path(), data.path());
    server.stop();
    edit(app.path(), "definitions/workflows/repair.yaml", "to: in_progress\n", "to: in_progres\n");
    let server = Server::start_in(app.path(), data.path());
    let admin = token(data.path(), "admin");
    let (status, bundle) = server.request("GET", "/api/v1/bundle", &admin, None);
    assert_eq!(status, 200);
    assert_eq!(bundle["last_rejected"]["diagnostics"][0]["code"], "unknown_state");
    assert!(bundle["workflows"].as_array().unwrap().contains(&serde_json::json!("repair")));
    server.stop();
}

#[test]
fn import_checks_every_row_and_export_writes_csv_and_xlsx() {
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path());
    server.stop();
    let files = tempfile::tempdir().unwrap();
    let csv = files.path().join("parts.csv");
    std::fs::write(&csv, "物料编码,名称,单位,类别,最低库存\nP-801,滤芯,个,hvac,3\nP-802,阀门,个,plumbingg,2\nP-803,开关,个,electrical,many\n").unwrap();
    let run = |args: &[&str]| {
        let out = bin().args(args).arg("--dir").arg(repo()).arg("--data").arg(data.path()).output().unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).to_string() + String::from_utf8_lossy(&out.stderr).as_ref())
    };
    let path = csv.to_str().unwrap();
    let (code, out) = run(&["import", "part", path, "--lang", "en"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("row 3: category: `plumbingg` is not one of"), "{out}");
    assert!(out.contains("row 4: min_level: `many` is not a whole number"), "{out}");
    assert!(out.contains("nothing was imported"), "{out}");
    let (code, out) = run(&["import", "part", path, "--skip-invalid"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("imported 1 part record(s); skipped 2 invalid row(s)"), "{out}");
    std::fs::write(&csv, "物料编码,名称,单位,类别,最低库存\nP-802,阀门,个,plumbing,2\nP-803,开关,个,electrical,4\n").unwrap();
    let (code, out) = run(&["import", "part", path, "--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 valid, 0 invalid; nothing written"), "{out}");
    let (code, out) = run(&["import", "part", path]);
    assert_eq!(code, 0, "{out}");
    let out_csv = files.path().join("out.csv");
    let (code, out) = run(&["export", "part", "--out", out_csv.to_str().unwrap(), "--where", "category=hvac"]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read(&out_csv).unwrap();
    assert!(text.starts_with("\u{feff}物料编码".as_bytes()));
    assert!(String::from_utf8_lossy(&text).contains("P-801"));
    let out_xlsx = files.path().join("assets.xlsx");
    let (code, out) = run(&["export", "asset", "--out", out_xlsx.to_str().unwrap(), "--where", "under=location:ZY-B"]);
    assert_eq!(code, 0, "{out}");
    assert!(std::fs::read(&out_xlsx).unwrap().starts_with(b"PK"), "an xlsx is a zip file");
}

#[test]
fn check_reports_a_template_variable_that_notifications_do_not_provide() {
    let dir = app_copy();
    edit(dir.path(), "definitions/notifications/accepted.yaml", "{{text.assignee}} 已接单", "{{technician}} 已接单");
    edit(dir.path(), "definitions/workflows/repair.yaml", "template: accepted }", "template: acceptd }");
    let (code, out) = check(dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("error[unknown_template_variable]") && out.contains("`technician`") && out.contains("definitions/notifications/accepted.yaml:"),
        "{out}"
    );
    assert!(out.contains("unknown template `acceptd`") && out.contains("did you mean `accepted`?"), "{out}");
}

#[test]
fn test_runs_scenarios_against_a_changed_copy_before_it_goes_live() {
    let out = bin().args(["test", "--dir"]).arg(repo()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("ok    ") && text.contains(", 0 failed"), "{text}");
    // A business change that breaks a scenario: the SLA of urgent orders goes to 60 minutes.
    let dir = app_copy();
    edit(dir.path(), "rules/dispatch.rhai", "\"urgent\" => 30,", "\"urgent\" => 60,");
    let out = bin().args(["test", "--dir"]).arg(dir.path()).arg(repo().join("tests/scenarios/lift_entrapment_sla.yaml")).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL") && text.contains("sla_minutes: expected 30, got 60"), "{text}");
}

#[test]
fn test_coverage_names_what_the_scenarios_never_exercised() {
    let scenario = repo().join("tests/scenarios/repair_cancel.yaml");
    let out = bin().args(["test", "--coverage", "--dir"]).arg(repo()).arg(&scenario).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}");
    let repair = text.split("\nrepair\n").nth(1).unwrap_or_else(|| panic!("{text}"));
    // A report that is cancelled: started and cancelled, nothing else.
    assert!(repair.contains("states      2/"), "{text}");
    assert!(repair.contains("not entered: in_progress") && repair.contains("not taken: accept"), "{text}");
    assert!(repair.contains("guard of accept      never true nor false"), "{text}");
    assert!(text.contains("requisition\n  states      0/5"), "{text}");
}

/// The peers' workload on bench/app: the same statistics in the pure core, through
/// the durable store with concurrent clients, and over HTTP; each as the spec says.
#[test]
fn the_bench_workload_gives_the_same_statistics_in_every_mode() {
    let run = |mode: &str| -> serde_json::Value {
        let out = bin().args(["bench", "--dir"]).arg(repo().join("bench/app")).args(["--workload", mode, "--n", "400", "--clients", "8"]).output().unwrap();
        assert!(out.status.success(), "{mode}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let core = run("core");
    let stats = &core["stats"];
    // N = 400 by the rules of WORKLOAD.md: every 20th report invalid first, 20 % with parts, …
    assert_eq!(stats["instances"], 400);
    assert_eq!(stats["closed"], 400);
    assert_eq!(stats["rejected_forms"], 20);
    assert_eq!(stats["urgent_sla"], 133);
    assert_eq!(stats["teams"], serde_json::json!({"hvac_team": 80, "utilities_team": 160, "elevator_team": 80, "general": 80}));
    let transitions = stats["transitions"].as_u64().unwrap();
    assert_eq!(stats["history_records"].as_u64().unwrap(), transitions + 400);
    for mode in ["durable", "http"] {
        let other = run(mode);
        assert_eq!(&other["stats"], stats, "{mode} differs from the core");
        assert_eq!(other["verified_in_store"], true);
        assert!(other["latency_us"]["p99"].as_f64().unwrap() > 0.0);
        assert!(other["db_bytes"].as_u64().unwrap() > 0);
    }
}

/// The hospital bench takes its work orders through their lifecycle in
/// memory, durably and on the ledger (it stopped at `accept` once teams
/// became records: the bench technician was in none of them).
#[test]
fn the_hospital_bench_runs_every_mode() {
    let out = bin().args(["bench", "--dir"]).arg(repo()).args(["--instances", "20", "--durable-instances", "16", "--clients", "4"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in ["core (in memory):   20 work orders, 80 transitions", "durable (redb, fsync per commit, 4 clients): 80 commands", "ledger `stock` postings"] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
}

/// The scale benchmark end to end on a small store: generated work orders are
/// all counted, lists and histories answer, and a second run measures the
/// existing store without generating again.
#[test]
fn the_scale_bench_generates_then_measures_a_store() {
    let data = tempfile::tempdir().unwrap();
    let run = || {
        let out = bin().args(["bench", "--dir"]).arg(repo()).args(["--scale", "300", "--assets", "20", "--data"]).arg(data.path()).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        text
    };
    let first = run();
    assert!(first.contains("generated 300 work orders and 20 assets"), "{first}");
    assert!(first.contains("scale: 300 work orders;"), "the counts must add up to every generated order: {first}");
    assert!(first.contains("history of one work order"), "{first}");
    assert!(first.contains("start-up after kill -9"), "{first}");
    let second = run();
    assert!(second.contains("measuring the existing store"), "{second}");
    assert!(second.contains("scale: 300 work orders;"), "{second}");
}

/// `check --watch` checks again on every save and prints what changed: the
/// problem a save brings in, then its fix.
#[test]
fn check_watch_reports_new_and_fixed_problems_as_files_are_saved() {
    use std::io::BufRead;
    let dir = app_copy();
    let mut child =
        bin().args(["check", "--watch", "--dir"]).arg(dir.path()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |what: &str| -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
                let done = line.contains(what);
                seen.push(line);
                if done {
                    return seen;
                }
            }
        }
        panic!("no `{what}` in: {seen:?}");
    };
    wait_for("check: ok");
    edit(dir.path(), "definitions/workflows/repair.yaml", "    to: in_progress\n    roles: [technician]", "    to: in_progres\n    roles: [technician]");
    let seen = wait_for("1 new, 0 fixed");
    assert!(seen.iter().any(|l| l.contains("error[unknown_state]")), "{seen:?}");
    edit(dir.path(), "definitions/workflows/repair.yaml", "    to: in_progres\n", "    to: in_progress\n");
    let seen = wait_for("0 new, 1 fixed");
    assert!(seen.iter().any(|l| l.starts_with("- fixed:") && l.contains("unknown_state")), "{seen:?}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn replay_reports_what_a_changed_dispatch_rule_would_have_done_and_writes_nothing() {
    let app = app_copy();
    let data = tempfile::tempdir().unwrap();
    let server = Server::start_in(app.path(), data.path());
    let nurse = token(data.path(), "nurse_li");
    let mut ids = Vec::new();
    for asset in ["EQ-000101", "EQ-000116", "EQ-000102"] {
        let body = format!(r#"{{"data":{{"asset":"{asset}","department":"D-LAB","location":"检验科","description":"设备故障,需要维修"}}}}"#);
        let (_, created) = server.request("POST", "/api/v1/workflows/repair/instances", &nurse, Some(&body));
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    let busy = bin().args(["replay", "--dir"]).arg(app.path()).arg("--data").arg(data.path()).output().unwrap();
    assert_eq!(busy.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&busy.stderr).contains("held by a running server"));
    server.stop();

    let candidate = app_copy();
    edit(
        candidate.path(),
        "rules/dispatch.rhai",
        "let team = team_for(record.category);",
        "let team = if record.category == \"hvac\" { \"general_team\" } else { team_for(record.category) };",
    );
    let out = bin().args(["replay", "--lang", "en", "--workflow", "repair", "--dir"]).arg(candidate.path()).arg("--data").arg(data.path()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("replayed 3 instance(s)") && text.contains("2 would differ"), "{text}");
    assert!(text.contains("hvac_team → general_team") && text.contains("other team"), "{text}");
    let json =
        bin().args(["replay", "--format", "json", "--workflow", "repair", "--dir"]).arg(candidate.path()).arg("--data").arg(data.path()).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let listed: Vec<&str> = report["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(listed, vec![ids[0].as_str(), ids[2].as_str()]);
    // Nothing was written: the orders are as they were.
    let server = Server::start_in(app.path(), data.path());
    let (_, view) = server.request("GET", &format!("/api/v1/instances/{}", ids[0]), &nurse, None);
    assert_eq!(view["assignment"]["team"], "hvac_team", "{view}");
    let (_, history) = server.request("GET", &format!("/api/v1/instances/{}/history", ids[0]), &nurse, None);
    assert_eq!(history.as_array().unwrap().len(), 1);
    server.stop();

    let missing = bin().args(["replay", "--dir"]).arg(candidate.path()).arg("--data").arg(data.path().join("nope")).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("there is no store"));
}

#[test]
fn schema_writes_one_json_schema_per_kind_of_file() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = bin().args(["schema", "--dir"]).arg(repo()).arg("--out").arg(out_dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    for kind in ["workflow", "form", "record", "ledger", "schedule", "notification", "report", "app", "calendar", "definition"] {
        let text = std::fs::read_to_string(out_dir.path().join(format!("{kind}.json"))).unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#", "{kind}");
    }
}

/// `FLOWFORM_METRICS_ADDR` serves `/metrics` without a token on its own
/// address; the API's address still wants an admin's token for it.
#[test]
fn metrics_are_served_without_a_token_only_on_their_own_address() {
    let data = tempfile::tempdir().unwrap();
    let (child, addr, also) = common::serve_with(&repo(), data.path(), &[], &[("FLOWFORM_METRICS_ADDR", "127.0.0.1:0")], &["metrics at http://"]);
    let server = Server { child, addr };
    let metrics = &also[0];
    let (status, text) = raw_http(metrics, &format!("GET /metrics HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("flowform_store_checkpoints_total"), "{text}");
    let (status, _) = raw_http(metrics, &format!("GET /api/v1/bundle HTTP/1.1\r\nHost: {metrics}\r\nConnection: close\r\n\r\n"));
    assert_eq!(status, 404, "only /metrics is served there");
    let (status, _) = server.request("GET", "/metrics", "wrong", None);
    assert_eq!(status, 401);
    server.stop();
}

/// A metrics address that cannot be bound stops the start with a clear
/// message, before the admin socket exists.
#[test]
fn a_bad_metrics_address_stops_the_start_cleanly() {
    let data = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["serve", "--demo", "--addr", "127.0.0.1:0", "--dir"])
        .arg(repo())
        .arg("--data")
        .arg(data.path())
        .env("FLOWFORM_LOG", "warn")
        .env("FLOWFORM_METRICS_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("FLOWFORM_METRICS_ADDR: cannot listen on not-an-address"), "{text}");
    assert!(!data.path().join("admin.sock").exists());
}
