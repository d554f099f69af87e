//! Attachments: uploaded files stored content-addressed under the data
//! directory (`files/blobs/<sha256>`), each upload described by a small JSON
//! file (`files/meta/<id>.json`) that names its blob, its sniffed type, its
//! size, who uploaded it and when.
//!
//! The id is random and opaque: knowing a file's content does not give its id,
//! and the id alone does not give access (see [`Runtime::may_read_file`]).
//! The type is sniffed from the bytes, never taken from the client.

use crate::{CommandError, Runtime};
use flowform_core::{Actor, FieldError, Lang};
use flowform_model::{FieldDef, FieldType};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The default upload limit (`FLOWFORM_MAX_UPLOAD_MB`).
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// One uploaded file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FileMeta {
    pub id: String,
    /// The name the client gave it (display only).
    pub name: String,
    /// The type sniffed from the bytes.
    #[serde(rename = "type")]
    pub content_type: String,
    pub size: u64,
    pub sha256: String,
    pub uploader: String,
    pub created_at: String,
}

impl FileMeta {
    pub fn is_image(&self) -> bool {
        self.content_type.starts_with("image/")
    }

    /// What a `files` field stores: `{id, name, type, size}`.
    pub fn reference(&self) -> Value {
        serde_json::json!({"id": self.id, "name": self.name, "type": self.content_type, "size": self.size})
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the file is empty")]
    Empty,
    #[error("the file is {size} bytes; at most {limit} are accepted")]
    TooLarge { size: u64, limit: u64 },
    #[error("the file says it is {claimed} but its content is {actual}")]
    TypeMismatch { claimed: String, actual: String },
    #[error("no file `{0}`")]
    NotFound(String),
    #[error("files cannot be stored: {0}")]
    Io(#[from] std::io::Error),
    #[error("file storage is not configured")]
    NotConfigured,
}

/// Content-addressed files on disk.
#[derive(Clone, Debug)]
pub struct FileStore {
    root: PathBuf,
    pub max_bytes: u64,
}

fn valid_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

impl FileStore {
    pub fn open(root: &Path, max_bytes: u64) -> std::io::Result<FileStore> {
        std::fs::create_dir_all(root.join("blobs"))?;
        std::fs::create_dir_all(root.join("meta"))?;
        Ok(FileStore { root: root.to_path_buf(), max_bytes })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The type of `bytes`, from their content: what the browser will be told.
    pub fn sniff(bytes: &[u8]) -> String {
        match infer::get(bytes) {
            Some(t) => t.mime_type().to_string(),
            None if std::str::from_utf8(bytes).is_ok() && !looks_like_markup(bytes) => "text/plain".to_string(),
            None => "application/octet-stream".to_string(),
        }
    }

    /// Stores `bytes` (written to a temporary file, synced, then renamed:
    /// a crash leaves either nothing or the whole file).
    pub fn put(&self, name: &str, claimed_type: Option<&str>, bytes: &[u8], uploader: &str, now: flowform_core::Time) -> Result<FileMeta, FileError> {
        if bytes.is_empty() {
            return Err(FileError::Empty);
        }
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(FileError::TooLarge { size, limit: self.max_bytes });
        }
        let actual = Self::sniff(bytes);
        // An image by its name or declared type must be an image by its bytes
        // (an HTML page renamed `.png` is refused).
        let claimed = claimed_type.filter(|t| !t.is_empty() && *t != "application/octet-stream").map(str::to_string).or_else(|| type_by_extension(name));
        if let Some(claimed) = claimed {
            let family = |t: &str| t.split('/').next().unwrap_or("").to_string();
            if (claimed.starts_with("image/") || actual.starts_with("image/")) && family(&claimed) != family(&actual) {
                return Err(FileError::TypeMismatch { claimed, actual });
            }
        }
        let sha = hex::encode(sha2::Sha256::digest(bytes));
        let blob = self.root.join("blobs").join(&sha);
        if blob.exists() {
            // Fresh again, so a sweep running now leaves it (it keeps blobs changed after its cut-off).
            std::fs::File::options().append(true).open(&blob)?.set_modified(std::time::SystemTime::now())?;
        } else {
            write_atomically(&blob, bytes)?;
        }
        let mut raw = [0u8; 16];
        rand::fill(&mut raw);
        let meta = FileMeta {
            id: hex::encode(raw),
            name: clean_name(name),
            content_type: actual,
            size,
            sha256: sha,
            uploader: uploader.to_string(),
            created_at: now.to_string(),
        };
        let text = serde_json::to_vec(&meta).map_err(|e| std::io::Error::other(e.to_string()))?;
        write_atomically(&self.meta_path(&meta.id), &text)?;
        Ok(meta)
    }

    fn meta_path(&self, id: &str) -> PathBuf {
        self.root.join("meta").join(format!("{id}.json"))
    }

    pub fn meta(&self, id: &str) -> Result<FileMeta, FileError> {
        if !valid_id(id) {
            return Err(FileError::NotFound(id.to_string()));
        }
        let text = match std::fs::read(self.meta_path(id)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(FileError::NotFound(id.to_string())),
            Err(e) => return Err(e.into()),
        };
        serde_json::from_slice(&text).map_err(|e| FileError::Io(std::io::Error::other(format!("{id}: {e}"))))
    }

    pub fn bytes(&self, meta: &FileMeta) -> Result<Vec<u8>, FileError> {
        Ok(std::fs::read(self.root.join("blobs").join(&meta.sha256))?)
    }

    /// Removes uploads older than `before` (RFC 3339) that `referenced` does
    /// not name, and blobs no upload names any more. Returns how many
    /// uploads were removed.
    pub fn sweep(&self, before: &str, referenced: &std::collections::HashSet<String>) -> Result<usize, FileError> {
        let mut removed = 0;
        let mut live_blobs = std::collections::HashSet::new();
        for entry in std::fs::read_dir(self.root.join("meta"))? {
            let path = entry?.path();
            let Some(id) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
            let Ok(meta) = self.meta(&id) else { continue };
            if meta.created_at.as_str() < before && !referenced.contains(&id) {
                std::fs::remove_file(&path)?;
                removed += 1;
            } else {
                live_blobs.insert(meta.sha256);
            }
        }
        // A blob is removed only when no upload names it and it was not
        // written or reused since the cut-off (an upload in flight writes
        // its blob before its description).
        let cutoff = before.parse::<jiff::Timestamp>().ok().and_then(|t| std::time::SystemTime::try_from(t).ok());
        for entry in std::fs::read_dir(self.root.join("blobs"))? {
            let entry = entry?;
            let path = entry.path();
            let unnamed = path.file_name().and_then(|n| n.to_str()).is_some_and(|n| !live_blobs.contains(n) && !n.starts_with('.'));
            let old = cutoff.is_some_and(|c| entry.metadata().and_then(|m| m.modified()).is_ok_and(|m| m < c));
            if unnamed && old {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(removed)
    }
}

fn looks_like_markup(bytes: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
    let head = head.trim_start();
    head.starts_with('<') || head.contains("<script") || head.contains("<html") || head.contains("<svg")
}

fn type_by_extension(name: &str) -> Option<String> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    let t = match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "svg" => "image/svg+xml",
        "pdf" => "application/pdf",
        _ => return None,
    };
    Some(t.to_string())
}

/// A file name safe to show and to send in `Content-Disposition`.
fn clean_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control() && !matches!(c, '"' | '\\')).take(200).collect();
    if cleaned.trim().is_empty() { "file".to_string() } else { cleaned }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut raw = [0u8; 8];
    rand::fill(&mut raw);
    let tmp = dir.join(format!(".tmp-{}", hex::encode(raw)));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// What a command may put in its `files` fields: the actor's own uploads,
/// and files the instance or record `held` before.
pub(crate) struct FileCheck<'a> {
    pub actor: &'a str,
    pub held: &'a std::collections::HashSet<String>,
    pub errors: Vec<FieldError>,
}

/// Every string in `values` (at any depth) that has the shape of a file id.
pub(crate) fn ids_in<'a>(values: impl Iterator<Item = &'a Value>) -> std::collections::HashSet<String> {
    fn collect(v: &Value, out: &mut std::collections::HashSet<String>) {
        match v {
            Value::String(s) if valid_id(s) => {
                out.insert(s.clone());
            }
            Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
            Value::Object(m) => m.values().for_each(|i| collect(i, out)),
            _ => {}
        }
    }
    let mut out = std::collections::HashSet::new();
    values.for_each(|v| collect(v, &mut out));
    out
}

/// Every file id in `value`, at any depth (`{id, …}` objects of files fields).
pub fn file_ids(fields: &[FieldDef], data: &Map<String, Value>, out: &mut Vec<String>) {
    for f in fields {
        match (f.field_type, data.get(&f.name)) {
            (FieldType::Files, Some(Value::Array(items))) => {
                out.extend(items.iter().filter_map(|i| i.get("id").and_then(Value::as_str)).map(str::to_string));
            }
            (FieldType::Group, Some(Value::Array(items))) => {
                for item in items {
                    if let Value::Object(m) = item {
                        file_ids(&f.fields, m, out);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Whether a sniffed type matches a field's `accept` (`image/*,.pdf`, MIME types).
pub fn accepts(accept: &str, content_type: &str) -> bool {
    accept.split(',').map(str::trim).filter(|a| !a.is_empty()).any(|a| {
        if let Some(family) = a.strip_suffix("/*") {
            content_type.split('/').next() == Some(family)
        } else if a.starts_with('.') {
            type_by_extension(&format!("x{a}")).is_some_and(|t| t == content_type)
        } else {
            a.eq_ignore_ascii_case(content_type)
        }
    })
}

impl Runtime {
    /// Uses `store` for attachments (the server sets it to `DATA/files`).
    pub fn with_files(mut self, store: FileStore) -> Self {
        self.files = Some(store);
        self
    }

    pub fn files(&self) -> Result<&FileStore, FileError> {
        self.files.as_ref().ok_or(FileError::NotConfigured)
    }

    /// Stores an upload by `actor`.
    pub fn upload(&self, name: &str, claimed_type: Option<&str>, bytes: &[u8], actor: &Actor) -> Result<FileMeta, FileError> {
        let now = self.now();
        self.files()?.put(name, claimed_type, bytes, &actor.id, now)
    }

    /// Whether `actor` may read file `meta`, given where the page found it:
    /// its uploader and admins always; others only through an instance or a
    /// record they may read whose `files` fields hold it.
    pub fn may_read_file(&self, meta: &FileMeta, actor: &Actor, instance: Option<&str>, record: Option<(&str, &str)>) -> bool {
        if meta.uploader == actor.id || actor.has_role("admin") {
            return true;
        }
        let bundle = self.bundle();
        let holds = |forms: Vec<&str>, data: &Map<String, Value>| {
            let mut ids = Vec::new();
            for form in forms.into_iter().filter_map(|f| bundle.form(f)) {
                file_ids(&form.def.fields, data, &mut ids);
            }
            ids.contains(&meta.id)
        };
        if let Some(id) = instance
            && let Ok(i) = self.instance_for(id, actor)
        {
            let forms: Vec<&str> = bundle
                .workflow(&i.workflow)
                .map(|w| w.start.form.iter().chain(w.transitions.iter().filter_map(|t| t.form.as_ref())).map(|f| f.value.as_str()).collect())
                .unwrap_or_default();
            return holds(forms, &i.data);
        }
        if let Some((record_type, id)) = record
            && let Some(rt) = bundle.model.record_types.get(record_type)
            && rt.access.allows(flowform_model::RecordOp::Read, actor.roles.iter().map(String::as_str))
            && let Ok(r) = self.record(record_type, id)
        {
            return holds(vec![rt.form.value.as_str()], &r.data);
        }
        false
    }

    /// Every `files` value in `data` must name a stored upload of a type and
    /// size the field accepts, that the instance or record held already or
    /// that the actor uploaded (an id seen elsewhere cannot be copied in).
    pub(crate) fn check_files(&self, fields: &[FieldDef], data: &Map<String, Value>, prefix: &str, lang: Lang, check: &mut FileCheck) {
        for f in fields {
            let path = if prefix.is_empty() { f.name.clone() } else { format!("{prefix}.{}", f.name) };
            match (f.field_type, data.get(&f.name)) {
                (FieldType::Files, Some(Value::Array(items))) => {
                    for (i, item) in items.iter().enumerate() {
                        let id = item.get("id").and_then(Value::as_str).unwrap_or("").to_string();
                        let meta = self.files.as_ref().and_then(|s| s.meta(&id).ok()).filter(|m| m.uploader == check.actor || check.held.contains(&m.id));
                        let Some(meta) = meta else {
                            let message = match lang {
                                Lang::En => "this file was not uploaded here (upload it again)".to_string(),
                                Lang::ZhCn => "文件不存在，请重新上传".to_string(),
                            };
                            check.errors.push(FieldError { field: format!("{path}[{i}]"), code: "unknown_file", message });
                            continue;
                        };
                        if let Some(accept) = &f.accept
                            && !accepts(accept, &meta.content_type)
                        {
                            let message = match lang {
                                Lang::En => format!("{} is {}; this field accepts {accept}", meta.name, meta.content_type),
                                Lang::ZhCn => format!("{} 的类型是 {}，此处只接受 {accept}", meta.name, meta.content_type),
                            };
                            check.errors.push(FieldError { field: format!("{path}[{i}]"), code: "file_type_not_accepted", message });
                            continue;
                        }
                        if let Some(max) = f.max_size
                            && meta.size > max
                        {
                            let message = match lang {
                                Lang::En => format!("{} is {} bytes; at most {max} are accepted", meta.name, meta.size),
                                Lang::ZhCn => format!("{} 大小为 {} 字节，最多 {max} 字节", meta.name, meta.size),
                            };
                            check.errors.push(FieldError { field: format!("{path}[{i}]"), code: "file_too_large", message });
                        }
                    }
                }
                (FieldType::Group, Some(Value::Array(items))) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Object(m) = item {
                            self.check_files(&f.fields, m, &format!("{path}[{i}]"), lang, check);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Replaces what was sent about each file (`{id, name, type, size}`) by
    /// what the server knows of it.
    pub(crate) fn canonical_files(&self, fields: &[FieldDef], data: &mut Map<String, Value>) {
        let Some(store) = &self.files else { return };
        for f in fields {
            match (f.field_type, data.get_mut(&f.name)) {
                (FieldType::Files, Some(Value::Array(items))) => {
                    for item in items.iter_mut() {
                        if let Some(meta) = item.get("id").and_then(Value::as_str).and_then(|id| store.meta(id).ok()) {
                            *item = meta.reference();
                        }
                    }
                }
                (FieldType::Group, Some(Value::Array(items))) => {
                    for item in items.iter_mut() {
                        if let Value::Object(m) = item {
                            self.canonical_files(&f.fields, m);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    /// Removes uploads older than a day that no instance or record names
    /// (once a day, beside the other retention work). Blocking.
    pub fn sweep_files(&self) -> Result<usize, CommandError> {
        let Some(store) = &self.files else { return Ok(0) };
        let cutoff = self.clock.now().checked_sub(jiff::SignedDuration::from_hours(24)).map_err(|e| CommandError::Internal(e.to_string()))?;
        let referenced = self.referenced_files()?;
        store.sweep(&format!("{cutoff:.3}"), &referenced).map_err(|e| CommandError::Internal(e.to_string()))
    }

    /// Every string in instance and record data that looks like a file id.
    fn referenced_files(&self) -> Result<std::collections::HashSet<String>, CommandError> {
        let mut out = std::collections::HashSet::new();
        let mut before = None;
        loop {
            let filter = flowform_store::InstanceFilter { before: before.clone(), limit: 500, ..Default::default() };
            let page = self.store.instances(&filter)?;
            for i in &page.items {
                out.extend(ids_in(i.data.values()));
            }
            match page.next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        for record_type in self.bundle().model.record_types.keys() {
            for r in self.store.records(record_type)? {
                out.extend(ids_in(r.data.values()));
            }
        }
        Ok(out)
    }
}
