//! Demo data: users (with roles and teams) from `examples/<app>/users.yaml`.

use flowform_core::{Actor, Bundle};
use flowform_model::diagnostic::did_you_mean;
use flowform_store::Store;
use serde::Deserialize;
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
}

/// Loads the demo users into the store when it has no users yet. Returns the
/// users loaded (empty when the store already had users).
pub fn load(dir: &Path, bundle: &Bundle, store: &dyn Store) -> Result<Vec<Actor>, DemoError> {
    if !store.users()?.is_empty() {
        return Ok(Vec::new());
    }
    let path = dir.join("users.yaml");
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|source| DemoError::Read { path: shown.clone(), source })?;
    let file: UsersFile = serde_saphyr::from_str(&text).map_err(|e| DemoError::Invalid { path: shown.clone(), message: e.to_string() })?;
    let roles: Vec<&str> = bundle.model.roles.keys().map(String::as_str).collect();
    let teams: Vec<&str> = bundle.model.teams.keys().map(String::as_str).collect();
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
        let actor = Actor { id: u.id, name: u.name, roles: if u.all_roles { roles.iter().map(|r| r.to_string()).collect() } else { u.roles }, teams: u.teams };
        store.put_user(&actor)?;
        loaded.push(actor);
    }
    Ok(loaded)
}
