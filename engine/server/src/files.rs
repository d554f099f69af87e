//! Attachments: `POST /api/v1/files` (multipart, one part named `file`) and
//! `GET /api/v1/files/{id}`. Files are stored by the runtime
//! ([`flowform_runtime::files`]); the type is sniffed from the bytes.

use crate::AppState;
use crate::auth::Auth;
use crate::codes::ErrorCode;
use crate::error::ApiError;
use crate::extract::Path;
use axum::Json;
use axum::extract::{Multipart, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowform_runtime::files::FileError;
use serde::Deserialize;
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    // Uploads are read in chunks against the runtime's own limit, not the
    // API's 2 MB body limit.
    OpenApiRouter::new().routes(routes!(upload)).layer(axum::extract::DefaultBodyLimit::disable()).routes(routes!(download))
}

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        let message = e.to_string();
        match e {
            FileError::TooLarge { .. } => ApiError::new(ErrorCode::FileTooLarge, message),
            FileError::Empty | FileError::TypeMismatch { .. } => ApiError::new(ErrorCode::FileRejected, message),
            FileError::NotFound(_) => ApiError::not_found(message),
            FileError::Io(_) | FileError::NotConfigured => ApiError::internal(message),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/files", tag = "files", summary = "Upload a file (multipart, one part named `file`)",
    request_body(content = String, description = "multipart/form-data with a part named `file`", content_type = "multipart/form-data"),
    responses((status = 201, description = "{id, name, type, size}: put it in a `files` field", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn upload(State(s): State<AppState>, Auth(actor): Auth, mut multipart: Multipart) -> Result<(StatusCode, Json<Value>), ApiError> {
    let limit = s.runtime.files()?.max_bytes;
    let mut other = 0u64;
    while let Some(mut field) = multipart.next_field().await.map_err(|e| ApiError::new(ErrorCode::FileRejected, e.body_text()))? {
        if field.name() != Some("file") {
            // Other parts are read and dropped, within the same limit.
            while let Some(chunk) = field.chunk().await.map_err(|e| ApiError::new(ErrorCode::FileRejected, e.body_text()))? {
                other += chunk.len() as u64;
                if other > 64 * 1024 {
                    return Err(ApiError::new(ErrorCode::FileRejected, "an upload carries one part named `file` and little else"));
                }
            }
            continue;
        }
        let name = field.file_name().unwrap_or("file").to_string();
        let claimed = field.content_type().map(str::to_string);
        // Read in chunks, refusing as soon as the limit is passed.
        let mut bytes = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(|e| ApiError::new(ErrorCode::FileRejected, e.body_text()))? {
            if (bytes.len() + chunk.len()) as u64 > limit {
                return Err(FileError::TooLarge { size: (bytes.len() + chunk.len()) as u64, limit }.into());
            }
            bytes.extend_from_slice(&chunk);
        }
        let runtime = s.runtime.clone();
        let meta = tokio::task::spawn_blocking(move || runtime.upload(&name, claimed.as_deref(), &bytes, &actor)).await.map_err(ApiError::internal)??;
        return Ok((StatusCode::CREATED, Json(meta.reference())));
    }
    Err(ApiError::new(ErrorCode::FileRejected, "the upload has no part named `file`"))
}

#[derive(Deserialize)]
struct Where {
    /// The instance whose data names the file.
    instance: Option<String>,
    /// `TYPE/ID`: the record whose data names the file.
    record: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/files/{id}", tag = "files", summary = "A file, to its uploader or to readers of an instance or record that names it",
    params(("id" = String, Path, description = "file id"), ("instance" = Option<String>, Query, description = "an instance the caller may read whose data names the file"), ("record" = Option<String>, Query, description = "TYPE/ID of a record that names the file")),
    responses((status = 200, description = "the file, with its sniffed type", body = String), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn download(State(s): State<AppState>, Auth(actor): Auth, Path(id): Path<String>, Query(at): Query<Where>) -> Result<Response, ApiError> {
    let runtime = s.runtime.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Option<(flowform_runtime::files::FileMeta, Vec<u8>)>, FileError> {
        let meta = runtime.files()?.meta(&id)?;
        let record = at.record.as_deref().and_then(|r| r.split_once('/'));
        if !runtime.may_read_file(&meta, &actor, at.instance.as_deref(), record) {
            return Ok(None);
        }
        let bytes = runtime.files()?.bytes(&meta)?;
        Ok(Some((meta, bytes)))
    })
    .await
    .map_err(ApiError::internal)??;
    // A file the caller may not read is answered like one that does not exist.
    let Some((meta, bytes)) = found else { return Err(ApiError::not_found("no such file")) };
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_str(&meta.content_type).unwrap_or(HeaderValue::from_static("application/octet-stream")));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("content-security-policy", HeaderValue::from_static("default-src 'none'; sandbox"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=86400"));
    let ascii: String = meta.name.chars().map(|c| if c.is_ascii_alphanumeric() || ".-_ ".contains(c) { c } else { '_' }).collect();
    let disposition = if meta.is_image() { "inline" } else { "attachment" };
    if let Ok(v) = HeaderValue::from_str(&format!("{disposition}; filename=\"{ascii}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}
