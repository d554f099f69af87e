//! Demo data: users, records and opening stock from `examples/<app>/`.
//!
//! `demo.yaml` lists what to load, in order; without it only `users.yaml` is
//! loaded. Each part is loaded only into an empty store (no users yet, no
//! records of that type yet, no movements in that ledger yet), so `--demo` on
//! every start never duplicates anything.

use crate::Runtime;
use crate::import::read_table;
use flowform_core::ledger::{MovementKind, Posting};
use flowform_core::{Actor, Bundle, Lang};
use flowform_model::diagnostic::did_you_mean;
use flowform_store::UserAccount;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error(transparent)]
    Store(#[from] flowform_store::StoreError),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<DemoUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoUser {
    id: String,
    name: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    teams: Vec<String>,
    /// Every role of the bundle (the `admin` user of the demo).
    #[serde(default)]
    all_roles: bool,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    department: Option<String>,
    #[serde(default)]
    language: Option<String>,
    /// A password in clear (hashed when imported), for a quick local setup.
    #[serde(default)]
    password: Option<String>,
    /// An Argon2id PHC string, so the file need not hold the password itself.
    #[serde(default)]
    password_hash: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default = "default_users")]
    users: String,
    #[serde(default)]
    records: Vec<RecordsFile>,
    #[serde(default)]
    stock: Vec<LedgerFile>,
}

fn default_users() -> String {
    "users.yaml".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsFile {
    #[serde(rename = "type")]
    record_type: String,
    file: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerFile {
    ledger: String,
    file: String,
}

/// What was loaded.
#[derive(Debug, Default)]
pub struct Loaded {
    pub users: Vec<String>,
    pub records: Vec<(String, usize)>,
    pub movements: usize,
}

fn read(path: &Path) -> Result<String, DemoError> {
    std::fs::read_to_string(path).map_err(|source| DemoError::Read { path: path.display().to_string(), source })
}

/// Loads the demo data of `dir` into the runtime's store.
pub fn load(dir: &Path, runtime: &Runtime) -> Result<Loaded, DemoError> {
    let manifest_path = dir.join("demo.yaml");
    let manifest: Manifest = if manifest_path.exists() {
        serde_saphyr::from_str(&read(&manifest_path)?).map_err(|e| DemoError::Invalid { path: manifest_path.display().to_string(), message: e.to_string() })?
    } else {
        Manifest { users: default_users(), records: Vec::new(), stock: Vec::new() }
    };
    let bundle = runtime.bundle();
    let store = runtime.store();
    // Records first: the users' teams may be team records.
    let mut loaded = Loaded::default();
    let loader = Actor {
        id: "demo".into(),
        name: "demo data".into(),
        roles: bundle.model.roles.keys().cloned().collect(),
        teams: Vec::new(),
        email: None,
        department: None,
    };
    for entry in &manifest.records {
        let path = dir.join(&entry.file);
        let shown = path.display().to_string();
        if !store.records(&entry.record_type)?.is_empty() {
            continue;
        }
        let table = read_table(&path).map_err(|e| DemoError::Invalid { path: shown.clone(), message: e.to_string() })?;
        let report = runtime
            .import(&entry.record_type, &table, false, false, &loader, Lang::En)
            .map_err(|e| DemoError::Invalid { path: shown.clone(), message: e.to_string() })?;
        if let Some(first) = report.errors.first() {
            return Err(DemoError::Invalid {
                path: shown,
                message: format!("row {}: {}: {} ({} problems)", first.row, first.field, first.message, report.errors.len()),
            });
        }
        loaded.records.push((entry.record_type.clone(), report.imported));
    }
    loaded.users = load_users(&dir.join(&manifest.users), &bundle, runtime)?;
    for entry in &manifest.stock {
        let path = dir.join(&entry.file);
        let shown = path.display().to_string();
        if !store.movements(&entry.ledger, 0, 1)?.is_empty() {
            continue;
        }
        let table = read_table(&path).map_err(|e| DemoError::Invalid { path: shown.clone(), message: e.to_string() })?;
        let mut postings = Vec::new();
        for (row, cells) in &table.rows {
            let mut dims = BTreeMap::new();
            let mut quantity = None;
            for (h, v) in table.header.iter().zip(cells) {
                if h == "quantity" {
                    quantity = v.parse::<i64>().ok();
                } else {
                    dims.insert(h.clone(), v.clone());
                }
            }
            let quantity =
                quantity.ok_or_else(|| DemoError::Invalid { path: shown.clone(), message: format!("row {row}: `quantity` must be a whole number") })?;
            postings.push(Posting {
                ledger: entry.ledger.clone(),
                kind: MovementKind::Receive,
                dims,
                quantity,
                to: None,
                reason: "期初库存 / opening stock".into(),
            });
        }
        let moved = runtime
            .post_movements(&entry.ledger, postings, &loader, &crate::CommandOptions::default())
            .map_err(|e| DemoError::Invalid { path: shown.clone(), message: e.to_string() })?;
        loaded.movements += moved.len();
    }
    Ok(loaded)
}

/// Imports the users of `path` that are not in the store yet (an idempotent
/// import: users that exist, perhaps changed by an admin since, are left as
/// they are). Returns the ids of the users created.
fn load_users(path: &Path, bundle: &Bundle, runtime: &Runtime) -> Result<Vec<String>, DemoError> {
    let shown = path.display().to_string();
    let file: UsersFile = serde_saphyr::from_str(&read(path)?).map_err(|e| DemoError::Invalid { path: shown.clone(), message: e.to_string() })?;
    let roles: Vec<&str> = bundle.model.roles.keys().map(String::as_str).collect();
    let teams: Vec<String> = runtime.teams(bundle).into_iter().map(|(name, _)| name).collect();
    let teams: Vec<&str> = teams.iter().map(String::as_str).collect();
    let mut loaded = Vec::new();
    for u in file.users {
        for r in &u.roles {
            if !roles.contains(&r.as_str()) {
                let hint = did_you_mean(r, roles.iter().copied()).unwrap_or_default();
                return Err(DemoError::Invalid { path: shown, message: format!("user `{}` has unknown role `{r}` {hint}", u.id) });
            }
        }
        for t in &u.teams {
            if !teams.contains(&t.as_str()) {
                let hint = did_you_mean(t, teams.iter().copied()).unwrap_or_default();
                return Err(DemoError::Invalid { path: shown, message: format!("user `{}` has unknown team `{t}` {hint}", u.id) });
            }
        }
        if runtime.user_account(&u.id).is_some() {
            continue;
        }
        let password_hash = match (&u.password_hash, &u.password) {
            (Some(h), _) => {
                if argon2::password_hash::PasswordHash::new(h).is_err() {
                    return Err(DemoError::Invalid { path: shown, message: format!("user `{}`: `password_hash` is not a PHC string", u.id) });
                }
                Some(h.clone())
            }
            (None, Some(p)) => {
                Some(crate::accounts::hash_password(p).map_err(|e| DemoError::Invalid { path: shown.clone(), message: format!("user `{}`: {e}", u.id) })?)
            }
            (None, None) => None,
        };
        let now = runtime.now();
        let account = UserAccount {
            id: u.id.clone(),
            name: u.name,
            roles: if u.all_roles { roles.iter().map(|r| r.to_string()).collect() } else { u.roles },
            teams: u.teams,
            department: u.department,
            language: u.language,
            email: u.email,
            disabled: false,
            password_hash,
            created_at: now,
            updated_at: now,
        };
        runtime.import_user(account)?;
        loaded.push(u.id);
    }
    Ok(loaded)
}
