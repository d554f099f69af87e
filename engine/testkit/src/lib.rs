//! The Flowform test kit. `TestApp`: the whole API over a temporary data
//! directory, driven with `oneshot` requests (no socket), with a manual clock;
//! and the YAML scenario runner. Used by the behaviour tests and by
//! `flowform test`, which lets business staff try a change before it goes live.

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod scenario;

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use flowform_runtime::{ManualClock, Runtime, load_bundle};
use flowform_store::{RedbStore, Store};
use http_body_util::BodyExt;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tower::ServiceExt;

/// The repository root (where definitions/, forms/, rules/ of the hospital live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

pub struct TestApp {
    pub app_dir: PathBuf,
    /// Set when the app is a private copy that the test may edit.
    pub app_copy: Option<Arc<tempfile::TempDir>>,
    pub data: tempfile::TempDir,
    pub runtime: Arc<Runtime>,
    pub router: Router,
    pub clock: Arc<ManualClock>,
    tokens: HashMap<String, String>,
}

pub struct Response {
    pub status: StatusCode,
    pub body: Value,
}

impl Response {
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status.as_u16(), status, "unexpected status; body: {}", serde_json::to_string_pretty(&self.body).unwrap());
        self.body
    }
}

impl TestApp {
    /// The hospital application with its demo users.
    pub fn hospital() -> TestApp {
        let root = repo_root();
        Self::start(&root, Some(&root.join("examples/hospital")), tempfile::tempdir().unwrap())
    }

    /// The application in `app_dir`, with the demo data of `users_dir`.
    pub fn start(app_dir: &Path, users_dir: Option<&Path>, data: tempfile::TempDir) -> TestApp {
        Self::try_start(app_dir, users_dir, data).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`TestApp::start`], with problems as an error instead of a panic.
    pub fn try_start(app_dir: &Path, users_dir: Option<&Path>, data: tempfile::TempDir) -> Result<TestApp, String> {
        let bundle = load_bundle(app_dir).map_err(|e| match e {
            flowform_runtime::LoadError::Invalid(d) => {
                d.iter().map(|d| format!("{}:{}:{}: {}", d.file, d.line, d.column, d.message)).collect::<Vec<_>>().join("\n")
            }
            other => other.to_string(),
        })?;
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(data.path()).map_err(|e| e.to_string())?);
        let clock = Arc::new(ManualClock::new("2026-11-25T01:00:00Z".parse().map_err(|e: jiff::Error| e.to_string())?));
        let files =
            flowform_runtime::files::FileStore::open(&data.path().join("files"), flowform_runtime::files::DEFAULT_MAX_BYTES).map_err(|e| e.to_string())?;
        let runtime = Arc::new(Runtime::new(bundle, store, clock.clone()).map_err(|e| e.to_string())?.with_app_dir(app_dir.to_path_buf()).with_files(files));
        if let Some(demo) = users_dir {
            flowform_runtime::demo::load(demo, &runtime).map_err(|e| e.to_string())?;
        }
        Ok(TestApp {
            app_copy: None,
            app_dir: app_dir.to_path_buf(),
            router: flowform_server::app(runtime.clone()),
            runtime,
            data,
            clock,
            tokens: HashMap::new(),
        })
    }

    /// Stops everything and starts again on the same data directory.
    pub fn restart(self) -> TestApp {
        let TestApp { app_dir, app_copy, data, runtime, router, tokens, clock } = self;
        drop(router);
        let now = flowform_runtime::Clock::now(clock.as_ref());
        drop(runtime);
        let mut app = Self::start(&app_dir, None, data);
        app.clock.set(now);
        app.tokens = tokens;
        app.app_copy = app_copy;
        app
    }

    /// The hospital application from a private copy of its files, which the test may edit.
    pub fn hospital_copy() -> TestApp {
        let copy = tempfile::tempdir().unwrap();
        let root = repo_root();
        for folder in ["definitions", "forms", "rules"] {
            copy_dir(&root.join(folder), &copy.path().join(folder));
        }
        let mut app = Self::start(copy.path(), Some(&root.join("examples/hospital")), tempfile::tempdir().unwrap());
        app.app_copy = Some(Arc::new(copy));
        app
    }

    /// Replaces the first `from` with `to` in a file of the app copy.
    pub fn edit(&self, file: &str, from: &str, to: &str) {
        assert!(self.app_copy.is_some(), "edit needs TestApp::hospital_copy()");
        let path = self.app_dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(from), "{file} has no `{from}`");
        std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    }

    /// Writes a file of the app copy.
    pub fn write(&self, file: &str, text: &str) {
        assert!(self.app_copy.is_some(), "write needs TestApp::hospital_copy()");
        let path = self.app_dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A token for `user` (issued once and remembered).
    pub fn token(&mut self, user: &str) -> String {
        if let Some(t) = self.tokens.get(user) {
            return t.clone();
        }
        let token = self.runtime.create_token(user, "test", None, "test").unwrap_or_else(|e| panic!("no token for {user}: {e}")).token;
        self.tokens.insert(user.to_string(), token.clone());
        token
    }

    pub async fn request(&mut self, method: Method, path: &str, user: Option<&str>, body: Option<Value>, headers: &[(&str, &str)]) -> Response {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(user) = user {
            req = req.header("authorization", format!("Bearer {}", self.token(user)));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        let res = self.router.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Response { status, body }
    }

    pub async fn get(&mut self, path: &str, user: &str) -> Response {
        self.request(Method::GET, path, Some(user), None, &[]).await
    }

    pub async fn post(&mut self, path: &str, user: &str, body: Value) -> Response {
        self.request(Method::POST, path, Some(user), Some(body), &[]).await
    }

    /// Starts an instance of `workflow` as `user`.
    pub async fn start_instance(&mut self, workflow: &str, user: &str, data: Value) -> Response {
        self.post(&format!("/api/v1/workflows/{workflow}/instances"), user, serde_json::json!({ "data": data })).await
    }

    pub async fn transition(&mut self, id: &str, name: &str, user: &str, data: Value) -> Response {
        self.post(&format!("/api/v1/instances/{id}/transitions/{name}"), user, serde_json::json!({ "data": data })).await
    }
}

/// A copy of the application in `app_dir` (its definitions, forms and rules)
/// with `edits` applied: in `file`, the first `from` becomes `to`. A file
/// outside the copy (absolute, or with `..`) or a missing `from` is an error.
pub fn changed_copy(app_dir: &Path, edits: &[(&str, &str, &str)]) -> Result<tempfile::TempDir, String> {
    let copy = tempfile::tempdir().map_err(|e| e.to_string())?;
    for folder in flowform_model::sources::FOLDERS {
        if app_dir.join(folder).is_dir() {
            copy_dir(&app_dir.join(folder), &copy.path().join(folder));
        }
    }
    for (file, from, to) in edits {
        let relative = Path::new(file);
        if relative.is_absolute() || relative.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
            return Err(format!("`{file}` must be a path inside the application (like rules/dispatch.rhai)"));
        }
        let path = copy.path().join(relative);
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {file}: {e}"))?;
        if !text.contains(from) {
            return Err(format!("{file} has no `{from}`"));
        }
        std::fs::write(&path, text.replacen(from, to, 1)).map_err(|e| e.to_string())?;
    }
    Ok(copy)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The 1-based line of the first line containing `needle` in a file.
pub fn line_of(path: &Path, needle: &str) -> usize {
    let text = std::fs::read_to_string(path).unwrap();
    let at = text.find(needle).unwrap_or_else(|| panic!("no `{needle}` in {}", path.display()));
    text[..at].matches('\n').count() + 1
}

/// Conditions with data and what the server's evaluator answers: the cases
/// the browser's evaluator (engine/web/assets/cond.js) must answer alike.
pub fn condition_cases() -> Vec<(Value, Value, bool)> {
    let cases = [
        ("priority == 'urgent'", serde_json::json!({"priority": "urgent"})),
        ("priority == 'urgent'", serde_json::json!({})),
        ("priority != \"urgent\"", serde_json::json!({"priority": "low"})),
        ("floor >= 10 && building == 'lab'", serde_json::json!({"floor": 12, "building": "lab"})),
        ("floor >= 10 && building == 'lab'", serde_json::json!({"floor": 9, "building": "lab"})),
        ("floor > 10 or not resolved", serde_json::json!({"floor": 3, "resolved": false})),
        ("floor > 10 or not resolved", serde_json::json!({"floor": 3, "resolved": true})),
        ("category in ['hvac', 'elevator'] && !resolved", serde_json::json!({"category": "hvac"})),
        ("category in ['hvac', 'elevator']", serde_json::json!({"category": ["plumbing", "elevator"]})),
        ("tags == 'a'", serde_json::json!({"tags": ["a", "b"]})),
        ("tags != 'a'", serde_json::json!({"tags": ["b"]})),
        ("rating <= 2", serde_json::json!({"rating": 2})),
        ("rating <= 2", serde_json::json!({"rating": null})),
        ("rating <= 2", serde_json::json!({"rating": "2"})),
        ("name < 'm'", serde_json::json!({"name": "kim"})),
        ("photos", serde_json::json!({"photos": []})),
        ("photos", serde_json::json!({"photos": [{"id": "x"}]})),
        ("count", serde_json::json!({"count": 0})),
        ("note", serde_json::json!({"note": ""})),
        ("amount == 1", serde_json::json!({"amount": 1.0})),
        ("!(a || b) && c", serde_json::json!({"a": false, "b": 0, "c": "x"})),
    ];
    cases
        .into_iter()
        .map(|(src, data)| {
            let c = flowform_model::Condition::parse(src).unwrap_or_else(|e| panic!("{src}: {}", e.message));
            let want = c.eval(&data);
            (serde_json::to_value(&c).unwrap_or_default(), data, want)
        })
        .collect()
}
