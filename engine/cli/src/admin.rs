//! Account commands (`flowform user …`, `flowform token`) that work whether
//! or not a server runs on the data directory.
//!
//! A running server listens on `DATA/admin.sock` (mode 0600): the command is
//! sent there as an HTTP request and the server applies it, so its memory,
//! its store and the audit log stay one. With no server, the command opens
//! the store itself. Never both: while a server holds the store, opening it
//! fails, and the command says so instead of waiting.

use anyhow::{Context, Result, anyhow, bail};
use flowform_runtime::accounts::{AccountError, NewUser, UserChange};
use flowform_runtime::{Runtime, SystemClock, load_bundle};
use flowform_store::{RedbStore, Store, StoreError};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a running server listens for the CLI.
pub fn socket_path(data: &Path) -> PathBuf {
    data.join("admin.sock")
}

/// Sends one request to the server's admin socket. `Ok(None)`: no server is listening.
fn call(data: &Path, method: &str, path: &str, body: Option<&Value>) -> Result<Option<(u16, Value)>> {
    let socket = socket_path(data);
    if !socket.exists() {
        return Ok(None);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async {
        use http_body_util::{BodyExt, Full};
        let stream = match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => s,
            // A socket file left by a server that was killed: nobody listens.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot connect to {}", socket.display())),
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let bytes = body.map(|b| b.to_string()).unwrap_or_default();
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(Full::new(hyper::body::Bytes::from(bytes)))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok(Some((status, value)))
    })
}

/// The answer of the server, or its error message.
fn expect_ok(answer: (u16, Value)) -> Result<Value> {
    let (status, body) = answer;
    if (200..300).contains(&status) {
        return Ok(body);
    }
    let message = body.get("message").and_then(Value::as_str).unwrap_or("the server refused the request");
    bail!("{message} (HTTP {status})")
}

/// A runtime on the store itself, for when no server runs.
fn offline(dir: &Path, data: &Path) -> Result<Runtime> {
    let store = match RedbStore::open(data) {
        Ok(s) => s,
        Err(StoreError::Locked { .. }) => bail!(
            "a server holds the store in {} but its admin socket {} does not answer; run this command on the machine and as the user of that server",
            data.display(),
            socket_path(data).display()
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot open the store in {}", data.display())),
    };
    // The roles and teams to check against: the version the store serves
    // (so a command run from a checkout with edited files changes nothing
    // else); the directory's only for a store that never served any.
    let bundle = match store.current_bundle()? {
        Some(version) => {
            let sources = store.bundle(&version)?.ok_or_else(|| anyhow!("the stored bundle {version} is missing"))?;
            flowform_core::compile(sources).map_err(|d| anyhow!("the stored bundle {version} does not compile ({} problems)", d.len()))?
        }
        None => load_bundle(dir).map_err(|e| anyhow!("cannot load the definitions in {} ({e}); run `flowform check`", dir.display()))?,
    };
    let store: Arc<dyn Store> = Arc::new(store);
    Ok(Runtime::new(bundle, store, Arc::new(SystemClock))?)
}

fn account(e: AccountError) -> anyhow::Error {
    anyhow!("{e}")
}

/// Runs an account command: through the server if one runs, else on the store.
fn run(dir: &Path, data: &Path, method: &str, path: &str, body: Option<Value>, offline_fn: impl FnOnce(&Runtime) -> Result<Value>) -> Result<Value> {
    match call(data, method, path, body.as_ref())? {
        Some(answer) => expect_ok(answer),
        None => offline_fn(&offline(dir, data)?),
    }
}

pub struct UserArgs {
    pub roles: Option<Vec<String>>,
    pub teams: Option<Vec<String>>,
    pub name: Option<String>,
    pub department: Option<String>,
    pub language: Option<String>,
    pub email: Option<String>,
}

pub fn user_add(dir: &Path, data: &Path, id: &str, a: UserArgs) -> Result<Value> {
    let new = NewUser {
        id: id.to_string(),
        name: a.name,
        roles: a.roles.unwrap_or_default(),
        teams: a.teams.unwrap_or_default(),
        department: a.department,
        language: a.language,
        email: a.email,
        password: None,
    };
    let body = json!({"id": new.id, "name": new.name, "roles": new.roles, "teams": new.teams, "department": new.department, "language": new.language, "email": new.email});
    run(dir, data, "POST", "/api/v1/admin/users", Some(body), |r| Ok(json!(r.create_user(new, "cli").map_err(account)?)))
}

pub fn user_set(dir: &Path, data: &Path, id: &str, a: UserArgs, disabled: Option<bool>) -> Result<Value> {
    let change = UserChange { name: a.name, roles: a.roles, teams: a.teams, department: a.department, language: a.language, email: a.email, disabled };
    let mut body = serde_json::Map::new();
    for (k, v) in [
        ("name", json!(change.name)),
        ("roles", json!(change.roles)),
        ("teams", json!(change.teams)),
        ("department", json!(change.department)),
        ("language", json!(change.language)),
        ("email", json!(change.email)),
        ("disabled", json!(change.disabled)),
    ] {
        if !v.is_null() {
            body.insert(k.into(), v);
        }
    }
    run(dir, data, "PATCH", &format!("/api/v1/admin/users/{}", encode(id)), Some(Value::Object(body)), |r| {
        Ok(json!(r.update_user(id, change, "cli").map_err(account)?))
    })
}

pub fn user_list(dir: &Path, data: &Path) -> Result<Value> {
    run(dir, data, "GET", "/api/v1/admin/users", None, |r| Ok(json!({"items": r.users()})))
}

pub fn user_passwd(dir: &Path, data: &Path, id: &str, password: &str) -> Result<Value> {
    run(dir, data, "POST", &format!("/api/v1/admin/users/{}/password", encode(id)), Some(json!({"password": password})), |r| {
        r.set_password(id, password, "cli").map_err(account)?;
        Ok(json!({"changed": true}))
    })
}

pub fn token(dir: &Path, data: &Path, user: &str, name: &str, days: Option<i64>) -> Result<Value> {
    let body = json!({"user": user, "name": name, "expires_in_days": days});
    run(dir, data, "POST", "/api/v1/tokens", Some(body), |r| Ok(json!(r.create_token(user, name, days, "cli").map_err(account)?)))
}

/// Percent-encodes a path segment.
fn encode(segment: &str) -> String {
    segment.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
