//! Reloading the definitions while serving: the same pipeline as start-up,
//! an atomic swap when the result is clean, the last good bundle otherwise.

use crate::{Runtime, load_bundle};
use flowform_model::DiagCode;
use flowform_model::Diagnostic;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// The last attempt that was refused, with every problem found.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Rejected {
    pub at: flowform_core::Time,
    pub diagnostics: Vec<Diagnostic>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ReloadOutcome {
    /// The new bundle serves from now on.
    Reloaded { from: String, to: String, migrated: Vec<crate::migrate::MigrationReport> },
    /// The files give the bundle already serving.
    Unchanged { version: String },
    /// The files have problems; the last good bundle keeps serving.
    Rejected { version: String, diagnostics: Vec<Diagnostic> },
    /// The directory could not be read; the last good bundle keeps serving.
    Failed { version: String, message: String },
}

impl Runtime {
    /// Enables reloading from `dir` (the directory the bundle came from).
    pub fn with_app_dir(mut self, dir: PathBuf) -> Self {
        self.app_dir = Some(dir);
        self
    }

    pub fn app_dir(&self) -> Option<&std::path::Path> {
        self.app_dir.as_deref()
    }

    pub fn last_rejected(&self) -> Option<Rejected> {
        self.last_rejected.load().as_ref().clone()
    }

    /// Records a refused attempt (also used at start-up when the files are
    /// broken and the last good bundle from the store serves instead).
    pub fn set_rejected(&self, diagnostics: Vec<Diagnostic>) {
        self.last_rejected.store(Arc::new(Some(Rejected { at: self.now(), diagnostics })));
    }

    /// Reads the directory again and swaps in the new bundle if it is clean.
    /// Requests in flight keep the bundle they started with: each command loads
    /// the current bundle once.
    pub fn reload(&self) -> ReloadOutcome {
        let outcome = self.reload_locked();
        self.count_reload(match &outcome {
            ReloadOutcome::Reloaded { .. } => "applied",
            ReloadOutcome::Unchanged { .. } => "unchanged",
            ReloadOutcome::Rejected { .. } => "rejected",
            ReloadOutcome::Failed { .. } => "failed",
        });
        outcome
    }

    fn reload_locked(&self) -> ReloadOutcome {
        let Ok(_guard) = self.reload_lock.lock() else {
            return ReloadOutcome::Failed { version: self.bundle().version.clone(), message: "reload lock poisoned".into() };
        };
        let current = self.bundle();
        let Some(dir) = &self.app_dir else {
            return ReloadOutcome::Failed { version: current.version.clone(), message: "this runtime was not started from a directory".into() };
        };
        let bundle = match load_bundle(dir) {
            Ok(b) => b,
            Err(crate::LoadError::Invalid(diagnostics)) => {
                tracing::warn!(problems = diagnostics.len(), first = %diagnostics.first().map(|d| format!("{}:{}:{} {}", d.file, d.line, d.column, d.message)).unwrap_or_default(), "reload refused; the last good definitions keep serving");
                self.set_rejected(diagnostics.clone());
                return ReloadOutcome::Rejected { version: current.version.clone(), diagnostics };
            }
            Err(e) => {
                tracing::warn!(error = %e, "reload failed; the last good definitions keep serving");
                // Every failed reload is visible in `last_rejected`, not only in the log.
                let file = match &e {
                    crate::LoadError::Read(crate::sources::ReadError::Io { path, .. } | crate::sources::ReadError::NotUtf8 { path }) => {
                        path.strip_prefix(dir).unwrap_or(path).display().to_string()
                    }
                    _ => ".".to_string(),
                };
                self.set_rejected(vec![flowform_model::Diagnostic::new(&file, flowform_model::Pos::new(1, 1), DiagCode::Unreadable, e.to_string())]);
                return ReloadOutcome::Failed { version: current.version.clone(), message: e.to_string() };
            }
        };
        self.last_rejected.store(Arc::new(None));
        if bundle.version == current.version {
            return ReloadOutcome::Unchanged { version: current.version.clone() };
        }
        if let Err(e) = self.store.put_bundle(&bundle.version, &bundle.sources).and_then(|_| self.store.set_current_bundle(&bundle.version)) {
            tracing::error!(error = %e, "cannot store the new bundle; keeping the old one");
            return ReloadOutcome::Failed { version: current.version.clone(), message: format!("cannot store the new definitions: {e}") };
        }
        let to = bundle.version.clone();
        let bundle = Arc::new(bundle);
        self.current.store(bundle.clone());
        self.loaded_at.store(Arc::new(self.now().to_string()));
        tracing::info!(from = %current.version, to = %to, "definitions reloaded");
        let migrated = self.auto_migrate(&bundle);
        ReloadOutcome::Reloaded { from: current.version.clone(), to, migrated }
    }
}
