//! Reading an application directory into [`Sources`].

use flowform_model::DiagCode;
use flowform_model::sources::{FOLDERS, SourceKind};
use flowform_model::{Diagnostic, Pos, Sources};
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

/// The largest definition file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// Reads every definition, form and rule file under `dir` (what could be
/// read; see [`read_dir_checked`] for the files that could not).
pub fn read_dir(dir: &Path) -> Result<Sources, ReadError> {
    read_dir_checked(dir).map(|(sources, _)| sources)
}

/// Reads every definition, form and rule file under `dir`. Editor backup and
/// hidden files are skipped. Only regular files are read (a FIFO or a device
/// named `x.yaml` would block or never end), up to [`MAX_FILE_BYTES`]; such a
/// file, or one that is not UTF-8, is a diagnostic at its path, so a reload
/// refuses it with a reason an admin can see. A folder that cannot be listed
/// is an error.
pub fn read_dir_checked(dir: &Path) -> Result<(Sources, Vec<Diagnostic>), ReadError> {
    let mut sources = Sources::new();
    let mut problems = Vec::new();
    let mut any = false;
    for folder in FOLDERS {
        let root = dir.join(folder);
        if !root.is_dir() {
            continue;
        }
        any = true;
        walk(dir, &root, &mut sources, &mut problems)?;
    }
    if !any {
        return Err(ReadError::NotAnApp { dir: dir.to_path_buf() });
    }
    Ok((sources, problems))
}

/// Line and column (1-based) of byte `at` in `bytes`.
fn position(bytes: &[u8], at: usize) -> Pos {
    let before = &bytes[..at.min(bytes.len())];
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    let column = before.iter().rev().take_while(|b| **b != b'\n').count() + 1;
    Pos::new(u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(column).unwrap_or(u32::MAX))
}

fn walk(base: &Path, dir: &Path, sources: &mut Sources, problems: &mut Vec<Diagnostic>) -> Result<(), ReadError> {
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
            walk(base, &path, sources, problems)?;
            continue;
        }
        let Ok(rel) = path.strip_prefix(base) else {
            continue;
        };
        let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
        if SourceKind::of(&rel).is_none() {
            continue;
        }
        let meta = std::fs::metadata(&path).map_err(io(&path))?;
        if !meta.is_file() {
            problems.push(
                Diagnostic::new(&rel, Pos::new(1, 1), DiagCode::NotAFile, "this is not a regular file (a pipe, socket or device?); it was not read")
                    .with_hint(Some("remove it, or replace it with an ordinary text file".into())),
            );
            continue;
        }
        if meta.len() > MAX_FILE_BYTES {
            problems.push(
                Diagnostic::new(
                    &rel,
                    Pos::new(1, 1),
                    DiagCode::FileTooLarge,
                    format!("the file has {} bytes; a definition file may have at most {MAX_FILE_BYTES}", meta.len()),
                )
                .with_hint(Some("split it into several files".into())),
            );
            continue;
        }
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        match String::from_utf8(bytes) {
            Ok(text) => sources.insert(rel, text),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                problems.push(
                    Diagnostic::new(&rel, position(e.as_bytes(), at), DiagCode::NotUtf8, format!("the file is not UTF-8 text (byte {at} is not valid UTF-8)"))
                        .with_hint(Some("save it as UTF-8 (in most editors: \"Save with encoding\" → UTF-8)".into())),
                );
            }
        }
    }
    Ok(())
}
