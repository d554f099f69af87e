//! Watching the definition folders and reloading on change.
//!
//! notify with a debouncer; access events and editor temporary files are
//! ignored; where file events are not delivered (some network and container
//! file systems) a polling watcher takes over.

use crate::Runtime;
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, new_debouncer, new_debouncer_opt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long the debouncer waits for a burst of writes (an editor's save) to end.
pub const DEBOUNCE: Duration = Duration::from_millis(25);
/// How often the polling fallback looks at the files.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {message}")]
pub struct WatchError {
    pub path: PathBuf,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchMode {
    /// File-system events, falling back to polling if they cannot be set up.
    Auto,
    /// Always poll (`FLOWFORM_WATCH=poll`).
    Poll,
}

/// Keeps the watcher alive; dropping it stops watching.
pub struct Watcher {
    _inner: Box<dyn Send>,
    pub polling: bool,
}

/// Whether a changed path should trigger a reload.
pub fn relevant(app_dir: &Path, path: &Path) -> bool {
    let Ok(rel) = path.strip_prefix(app_dir) else { return false };
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else { return false };
    // Editor temporaries: vim swap and its 4913 probe, emacs lock/autosave, backups.
    if name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".tmp")
        || name == "4913"
    {
        return false;
    }
    let rel = rel.to_string_lossy().replace('\\', "/");
    // A folder itself (created, removed, renamed) counts too.
    flowform_model::SourceKind::of(&rel).is_some() || (path.extension().is_none() && flowform_model::sources::FOLDERS.iter().any(|f| rel.starts_with(f)))
}

fn handler(runtime: Arc<Runtime>, dir: PathBuf) -> impl FnMut(DebounceEventResult) + Send + 'static {
    move |result: DebounceEventResult| match result {
        Ok(events) => {
            let changed = events.iter().filter(|e| !matches!(e.event.kind, EventKind::Access(_))).any(|e| e.event.paths.iter().any(|p| relevant(&dir, p)));
            if changed {
                runtime.reload();
            }
        }
        Err(errors) => {
            for e in errors {
                tracing::warn!(error = %e, "file watcher error");
            }
        }
    }
}

/// Starts watching `definitions/`, `forms/` and `rules/` under the runtime's directory.
pub fn watch(runtime: Arc<Runtime>, mode: WatchMode) -> Result<Watcher, WatchError> {
    let dir = runtime.app_dir().map(Path::to_path_buf).ok_or_else(|| WatchError { path: PathBuf::new(), message: "no application directory".into() })?;
    let dir = dir.canonicalize().unwrap_or(dir);
    let folders: Vec<PathBuf> = flowform_model::sources::FOLDERS.iter().map(|f| dir.join(f)).filter(|p| p.is_dir()).collect();
    if mode == WatchMode::Auto {
        match new_debouncer(DEBOUNCE, None, handler(runtime.clone(), dir.clone())) {
            Ok(mut debouncer) => {
                let watched = folders.iter().try_for_each(|f| debouncer.watch(f, RecursiveMode::Recursive));
                match watched {
                    Ok(()) => return Ok(Watcher { _inner: Box::new(debouncer), polling: false }),
                    Err(e) => tracing::warn!(error = %e, "file events unavailable; polling instead"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "file events unavailable; polling instead"),
        }
    }
    let config = notify::Config::default().with_poll_interval(POLL_INTERVAL).with_compare_contents(true);
    let mut debouncer = new_debouncer_opt::<_, notify::PollWatcher, _>(DEBOUNCE, None, handler(runtime, dir.clone()), notify_debouncer_full::NoCache, config)
        .map_err(|e| WatchError { path: dir.clone(), message: e.to_string() })?;
    for f in &folders {
        debouncer.watch(f, RecursiveMode::Recursive).map_err(|e| WatchError { path: f.clone(), message: e.to_string() })?;
    }
    Ok(Watcher { _inner: Box::new(debouncer), polling: true })
}
