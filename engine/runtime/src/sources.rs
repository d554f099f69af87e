//! Reading an application directory into [`Sources`].

use flowform_model::Sources;
use flowform_model::sources::{FOLDERS, SourceKind};
use std::path::{Path, PathBuf};

/// Why the application directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path} is not UTF-8 text")]
    NotUtf8 { path: PathBuf },
    #[error("{dir} has none of the folders definitions/, forms/, rules/")]
    NotAnApp { dir: PathBuf },
}

/// Reads every definition, form and rule file under `dir`. Editor backup and
/// hidden files are skipped; a file that cannot be read is an error.
pub fn read_dir(dir: &Path) -> Result<Sources, ReadError> {
    let mut sources = Sources::new();
    let mut any = false;
    for folder in FOLDERS {
        let root = dir.join(folder);
        if !root.is_dir() {
            continue;
        }
        any = true;
        walk(dir, &root, &mut sources)?;
    }
    if !any {
        return Err(ReadError::NotAnApp { dir: dir.to_path_buf() });
    }
    Ok(sources)
}

fn walk(base: &Path, dir: &Path, sources: &mut Sources) -> Result<(), ReadError> {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ReadError + '_ {
        move |source| ReadError::Io { path: path.to_path_buf(), source }
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir).map_err(io(dir))?.collect::<Result<_, _>>().map_err(io(dir))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') || name.ends_with('~') || name.starts_with('#') {
            continue;
        }
        if path.is_dir() {
            walk(base, &path, sources)?;
            continue;
        }
        let Ok(rel) = path.strip_prefix(base) else {
            continue;
        };
        let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        if SourceKind::of(&rel).is_none() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let text = String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8 { path: path.clone() })?;
        sources.insert(rel, text);
    }
    Ok(())
}
