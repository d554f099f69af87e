//! Routes of records and ledgers; see docs/api.md.

use crate::AppState;
use crate::auth::Auth;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Path, UserLang};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use flowform_core::Actor;
use flowform_core::ledger::{MovementKind, Posting};
use flowform_model::RecordOp;
use flowform_runtime::records::RecordQuery;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(export))
        .routes(routes!(read, update, delete))
        .routes(routes!(restore))
        .routes(routes!(history))
        .routes(routes!(balances))
        .routes(routes!(movements, post_movements))
        .routes(routes!(below_threshold))
        .routes(routes!(ledger_events))
}

/// Runs blocking store work off the async threads.
async fn blocking<T: Send + 'static>(
    s: &AppState,
    f: impl FnOnce(Arc<flowform_runtime::Runtime>) -> Result<T, flowform_runtime::CommandError> + Send + 'static,
) -> Result<T, ApiError> {
    let runtime = s.runtime.clone();
    Ok(tokio::task::spawn_blocking(move || f(runtime)).await.map_err(ApiError::internal)??)
}

/// Whether `actor` may do `op` on records of `record_type` (the type's
/// `access`; admins always; nothing granted means admins only).
pub(crate) fn may(s: &AppState, record_type: &str, actor: &Actor, op: RecordOp) -> Result<(), ApiError> {
    let bundle = s.runtime.bundle();
    let Some(rt) = bundle.model.record_types.get(record_type) else {
        return Err(ApiError::new(crate::codes::ErrorCode::UnknownRecordType, format!("unknown record type `{record_type}`")));
    };
    if rt.access.allows(op, actor.roles.iter().map(String::as_str)) {
        return Ok(());
    }
    s.runtime.audit_denied(actor, &format!("{} {record_type}", op.name()));
    let mut roles = rt.access.roles(op);
    roles.push("admin");
    Err(ApiError::new(crate::codes::ErrorCode::Forbidden, format!("to {} {record_type} records needs one of the roles {}", op.name(), roles.join(", "))))
}

/// Whether `actor` may read the balances and movements of `ledger`.
fn may_read_ledger(s: &AppState, ledger: &str, actor: &Actor) -> Result<(), ApiError> {
    let bundle = s.runtime.bundle();
    let Some(def) = bundle.model.ledgers.get(ledger) else {
        return Err(ApiError::not_found(format!("no ledger `{ledger}`")));
    };
    if def.readable_by(actor.roles.iter().map(String::as_str)) {
        return Ok(());
    }
    let granted: Vec<&str> = def.read.iter().chain(&def.roles).map(|r| r.value.as_str()).collect();
    s.runtime.audit_denied(actor, &format!("read ledger {ledger}"));
    Err(ApiError::new(crate::codes::ErrorCode::Forbidden, format!("reading {ledger} needs one of the roles {}, admin", granted.join(", "))))
}

fn bool_param(q: &BTreeMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match q.get(name).map(String::as_str) {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(ApiError::new(crate::codes::ErrorCode::InvalidQuery, format!("`{name}` must be true or false, not `{other}`"))),
    }
}

fn pair_param(q: &BTreeMap<String, String>, name: &str) -> Result<Option<(String, String)>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(v) => match v.split_once(':') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok(Some((a.to_string(), b.to_string()))),
            _ => Err(ApiError::new(crate::codes::ErrorCode::InvalidQuery, format!("`{name}` must look like FIELD:ID, not `{v}`"))),
        },
    }
}

fn limit_param(q: &BTreeMap<String, String>, default: usize, max: usize) -> Result<usize, ApiError> {
    match q.get("limit") {
        None => Ok(default),
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| ApiError::new(crate::codes::ErrorCode::InvalidQuery, format!("`limit` must be between 1 and {max}"))),
    }
}

const RESERVED: &[&str] = &["q", "sort", "limit", "cursor", "include_archived", "under", "format"];

pub(crate) fn record_query(q: &BTreeMap<String, String>) -> Result<RecordQuery, ApiError> {
    Ok(RecordQuery {
        q: q.get("q").cloned(),
        filters: q.iter().filter(|(k, _)| !RESERVED.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect(),
        under: pair_param(q, "under")?,
        sort: q.get("sort").cloned(),
        include_archived: bool_param(q, "include_archived")?,
        limit: limit_param(q, 50, 1000)?,
        cursor: q.get("cursor").cloned(),
    })
}

#[utoipa::path(get, path = "/api/v1/records/{type}", tag = "records", summary = "Records of a type", params(("type" = String, Path, description = "record type"), ("q" = Option<String>, Query, description = "search text"), ("under" = Option<String>, Query, description = "FIELD:ID subtree"), ("sort" = Option<String>, Query, description = "field or -field"), ("limit" = Option<u32>, Query, description = "1–1000"), ("cursor" = Option<String>, Query, description = "next_cursor"), ("include_archived" = Option<bool>, Query, description = "archived too"), ("filters" = Option<BTreeMap<String, String>>, Query, style = Form, explode, description = "FIELD=VALUE filters")), responses((status = 200, description = "Records of a type", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn list(
    State(s): State<AppState>,
    Auth(actor): Auth,
    Path(record_type): Path<String>,
    ApiQuery(q): ApiQuery<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    may(&s, &record_type, &actor, RecordOp::Read)?;
    let query = record_query(&q)?;
    let page = blocking(&s, move |r| r.list_records(&record_type, &query)).await?;
    Ok(Json(json!(page)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordBody {
    #[serde(default)]
    data: Option<Map<String, Value>>,
    #[serde(default)]
    expected_version: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/records/{type}", tag = "records", summary = "Create a record", params(("type" = String, Path, description = "record type")), request_body(content = Object, description = "{'data': {...}}", content_type = "application/json"), responses((status = 201, description = "Create a record", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn create(
    State(s): State<AppState>,
    Auth(actor): Auth,
    UserLang(lang): UserLang,
    Path(record_type): Path<String>,
    ApiJson(body): ApiJson<RecordBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    may(&s, &record_type, &actor, RecordOp::Create)?;
    let data = Value::Object(body.data.unwrap_or_default());
    let record = blocking(&s, move |r| r.create_record(&record_type, &data, &actor, lang)).await?;
    Ok((StatusCode::CREATED, Json(json!(record))))
}

#[utoipa::path(get, path = "/api/v1/records/{type}/{id}", tag = "records", summary = "One record", params(("type" = String, Path, description = "record type"), ("id" = String, Path, description = "record id")), responses((status = 200, description = "One record", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn read(State(s): State<AppState>, Auth(actor): Auth, Path((record_type, id)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    may(&s, &record_type, &actor, RecordOp::Read)?;
    let record = blocking(&s, move |r| r.record(&record_type, &id)).await?;
    Ok(Json(json!(record)))
}

#[utoipa::path(put, path = "/api/v1/records/{type}/{id}", tag = "records", summary = "Replace a record's data", params(("type" = String, Path, description = "record type"), ("id" = String, Path, description = "record id")), request_body(content = Object, description = "{'data': {...}, 'expected_version': N}", content_type = "application/json"), responses((status = 200, description = "Replace a record's data", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn update(
    State(s): State<AppState>,
    Auth(actor): Auth,
    UserLang(lang): UserLang,
    Path((record_type, id)): Path<(String, String)>,
    ApiJson(body): ApiJson<RecordBody>,
) -> Result<Json<Value>, ApiError> {
    may(&s, &record_type, &actor, RecordOp::Update)?;
    let data = Value::Object(body.data.unwrap_or_default());
    let record = blocking(&s, move |r| r.update_record(&record_type, &id, &data, body.expected_version, &actor, lang)).await?;
    Ok(Json(json!(record)))
}

/// Archives the record; with `?purge=true` deletes it for good, which is refused while anything refers to it.
#[utoipa::path(delete, path = "/api/v1/records/{type}/{id}", tag = "records", summary = "Archive (or purge) a record", params(("type" = String, Path, description = "record type"), ("id" = String, Path, description = "record id"), ("purge" = Option<bool>, Query, description = "delete for good")), responses((status = 200, description = "Archive (or purge) a record", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn delete(
    State(s): State<AppState>,
    Auth(actor): Auth,
    Path((record_type, id)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<BTreeMap<String, String>>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if bool_param(&q, "purge")? {
        may(&s, &record_type, &actor, RecordOp::Purge)?;
        blocking(&s, move |r| r.purge_record(&record_type, &id)).await?;
        return Ok((StatusCode::OK, Json(json!({"purged": true}))));
    }
    may(&s, &record_type, &actor, RecordOp::Archive)?;
    let record = blocking(&s, move |r| r.archive_record(&record_type, &id, true, &actor)).await?;
    Ok((StatusCode::OK, Json(json!(record))))
}

#[utoipa::path(post, path = "/api/v1/records/{type}/{id}/restore", tag = "records", summary = "Restore an archived record", params(("type" = String, Path, description = "record type"), ("id" = String, Path, description = "record id")), responses((status = 200, description = "Restore an archived record", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn restore(State(s): State<AppState>, Auth(actor): Auth, Path((record_type, id)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    may(&s, &record_type, &actor, RecordOp::Archive)?;
    let record = blocking(&s, move |r| r.archive_record(&record_type, &id, false, &actor)).await?;
    Ok(Json(json!(record)))
}

#[utoipa::path(get, path = "/api/v1/records/{type}/{id}/history", tag = "records", summary = "A record's history and its instances'", params(("type" = String, Path, description = "record type"), ("id" = String, Path, description = "record id")), responses((status = 200, description = "A record's history and its instances'", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn history(State(s): State<AppState>, Auth(actor): Auth, Path((record_type, id)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    may(&s, &record_type, &actor, RecordOp::Read)?;
    let events = blocking(&s, move |r| r.record_history(&record_type, &id, &actor)).await?;
    Ok(Json(json!(events)))
}

fn ledger_filters(s: &AppState, ledger: &str, q: &BTreeMap<String, String>, extra: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let bundle = s.runtime.bundle();
    let Some(def) = bundle.model.ledgers.get(ledger) else {
        return Err(ApiError::not_found(format!("no ledger `{ledger}`")));
    };
    let dims = def.dimension_names();
    let mut out = Vec::new();
    for (k, v) in q {
        if extra.contains(&k.as_str()) {
            continue;
        }
        if !dims.contains(&k.as_str()) {
            return Err(ApiError::new(crate::codes::ErrorCode::InvalidQuery, format!("unknown parameter `{k}`; dimensions of {ledger}: {}", dims.join(", "))));
        }
        out.push((k.clone(), v.clone()));
    }
    Ok(out)
}

#[utoipa::path(get, path = "/api/v1/ledgers/{name}/balances", tag = "ledgers", summary = "Balances", params(("name" = String, Path, description = "ledger"), ("under" = Option<String>, Query, description = "DIMENSION:ID subtree"), ("rollup" = Option<bool>, Query, description = "sum the subtree"), ("filters" = Option<BTreeMap<String, String>>, Query, style = Form, explode, description = "FIELD=VALUE filters")), responses((status = 200, description = "Balances", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn balances(
    State(s): State<AppState>,
    Auth(actor): Auth,
    Path(ledger): Path<String>,
    ApiQuery(q): ApiQuery<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    may_read_ledger(&s, &ledger, &actor)?;
    let filters = ledger_filters(&s, &ledger, &q, &["under", "rollup"])?;
    let under = pair_param(&q, "under")?;
    let rollup = bool_param(&q, "rollup")?;
    let rows = blocking(&s, move |r| r.balances(&ledger, &filters, under, rollup)).await?;
    let items: Vec<Value> = rows
        .into_iter()
        .map(|r| json!({"dimensions": r.dims, "on_hand": r.balance.on_hand, "reserved": r.balance.reserved, "available": r.balance.available()}))
        .collect();
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(get, path = "/api/v1/ledgers/{name}/movements", tag = "ledgers", summary = "Movements, oldest first", params(("name" = String, Path, description = "ledger"), ("after" = Option<u64>, Query, description = "movement number"), ("limit" = Option<u32>, Query, description = "1–1000"), ("instance" = Option<String>, Query, description = "instance id"), ("filters" = Option<BTreeMap<String, String>>, Query, style = Form, explode, description = "FIELD=VALUE filters")), responses((status = 200, description = "Movements, oldest first", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn movements(
    State(s): State<AppState>,
    Auth(actor): Auth,
    Path(ledger): Path<String>,
    ApiQuery(q): ApiQuery<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    may_read_ledger(&s, &ledger, &actor)?;
    let filters = ledger_filters(&s, &ledger, &q, &["after", "limit", "instance"])?;
    let after: u64 = match q.get("after") {
        Some(a) => a.parse().map_err(|_| ApiError::new(crate::codes::ErrorCode::InvalidQuery, "`after` must be a movement number"))?,
        None => 0,
    };
    let limit = limit_param(&q, 100, 1000)?;
    let instance = q.get("instance").cloned();
    // The movements of one instance only for who may read that instance (404 otherwise, as for the instance).
    if let Some(id) = &instance {
        let (runtime, id, who) = (s.runtime.clone(), id.clone(), actor.clone());
        tokio::task::spawn_blocking(move || runtime.instance_for(&id, &who)).await.map_err(ApiError::internal)??;
    }
    let store = s.runtime.store().clone();
    // Read in chunks, never the whole ledger: at most SCAN movements per
    // request; when the budget runs out first, `next_after` says where to go on.
    const CHUNK: usize = 1000;
    const SCAN: usize = 50_000;
    let (items, next) = tokio::task::spawn_blocking(move || -> Result<(Vec<flowform_store::Movement>, Option<u64>), flowform_store::StoreError> {
        let mut items = Vec::new();
        let mut cursor = after;
        let mut scanned = 0;
        loop {
            let chunk = store.movements(&ledger, cursor, CHUNK)?;
            let Some(last) = chunk.last().map(|m| m.seq) else { return Ok((items, None)) };
            scanned += chunk.len();
            for m in chunk {
                if filters.iter().all(|(k, v)| m.dims.get(k) == Some(v)) && instance.as_ref().is_none_or(|i| m.instance_id.as_ref() == Some(i)) {
                    if items.len() == limit {
                        let next = items.last().map(|x: &flowform_store::Movement| x.seq);
                        return Ok((items, next));
                    }
                    items.push(m);
                }
            }
            cursor = last;
            if scanned >= SCAN {
                return Ok((items, Some(last)));
            }
        }
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(json!({"items": items, "next_after": next})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MovementsBody {
    movements: Vec<Map<String, Value>>,
}

#[utoipa::path(post, path = "/api/v1/ledgers/{name}/movements", tag = "ledgers", summary = "Post movements by hand", params(("name" = String, Path, description = "ledger"), ("Idempotency-Key" = Option<String>, Header, description = "retry-safe key")), request_body(content = Object, description = "{'movements': [{kind, DIMENSION: ID, quantity, reason}]}", content_type = "application/json"), responses((status = 201, description = "Post movements by hand", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn post_movements(
    State(s): State<AppState>,
    Auth(actor): Auth,
    UserLang(lang): UserLang,
    crate::extract::IdempotencyKey(idempotency_key): crate::extract::IdempotencyKey,
    Path(ledger): Path<String>,
    ApiJson(body): ApiJson<MovementsBody>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let bundle = s.runtime.bundle();
    let Some(def) = bundle.model.ledgers.get(&ledger) else {
        return Err(ApiError::not_found(format!("no ledger `{ledger}`")));
    };
    // Permission before parsing: a user who may not post learns nothing about the movements.
    if !actor.has_role("admin") && !def.roles.iter().any(|r| actor.has_role(&r.value)) {
        s.runtime.audit_denied(&actor, &format!("post to ledger {ledger}"));
        let roles: Vec<&str> = def.roles.iter().map(|r| r.value.as_str()).chain(["admin"]).collect();
        return Err(ApiError::new(crate::codes::ErrorCode::Forbidden, format!("posting to `{ledger}` needs one of the roles {}", roles.join(", "))));
    }
    let items: Vec<Value> = body
        .movements
        .into_iter()
        .map(|mut m| {
            m.insert("ledger".into(), json!(ledger));
            Value::Object(m)
        })
        .collect();
    let postings: Vec<Posting> = flowform_core::decide::parse_postings(&bundle, Value::Array(items), "(request)").map_err(|e| {
        let message = match &e {
            flowform_core::Rejection::Rule(r) => r.message.clone(),
            other => other.to_string(),
        };
        ApiError::new(crate::codes::ErrorCode::InvalidMovement, message)
            .with_details(json!({"kinds": MovementKind::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>()}))
    })?;
    let opts = flowform_runtime::CommandOptions { lang, idempotency_key, expected_version: None };
    let moved = blocking(&s, move |r| r.post_movements(&ledger, postings, &actor, &opts)).await?;
    Ok((StatusCode::CREATED, Json(json!({"movements": moved}))))
}

#[utoipa::path(get, path = "/api/v1/ledgers/{name}/below_threshold", tag = "ledgers", summary = "Items below their minimum", params(("name" = String, Path, description = "ledger")), responses((status = 200, description = "Items below their minimum", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn below_threshold(State(s): State<AppState>, Auth(actor): Auth, Path(ledger): Path<String>) -> Result<Json<Value>, ApiError> {
    may_read_ledger(&s, &ledger, &actor)?;
    let items = blocking(&s, move |r| r.below_threshold(&ledger)).await?;
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(get, path = "/api/v1/ledger_events", tag = "ledgers", summary = "Ledger events (below threshold)", responses((status = 200, description = "Ledger events (below threshold)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn ledger_events(State(s): State<AppState>, Auth(actor): Auth) -> Result<Json<Value>, ApiError> {
    let store = s.runtime.store().clone();
    let events = tokio::task::spawn_blocking(move || store.ledger_events()).await.map_err(ApiError::internal)??;
    // Only the events of ledgers the caller may read.
    let bundle = s.runtime.bundle();
    let readable = |ledger: &str| {
        bundle.model.ledgers.get(ledger).is_some_and(|def| {
            let granted: Vec<&str> = def.read.iter().chain(&def.roles).map(|r| r.value.as_str()).collect();
            granted.contains(&flowform_model::EVERYONE) || actor.roles.iter().any(|r| r == "admin" || granted.contains(&r.as_str()))
        })
    };
    let events: Vec<_> = events.into_iter().filter(|e| readable(&e.ledger)).collect();
    Ok(Json(json!(events)))
}

/// The filtered list as a file: `?format=csv` (UTF-8 with BOM) or `xlsx`, same filters as the list.
#[utoipa::path(get, path = "/api/v1/records/{type}/export", tag = "records", summary = "The filtered list as CSV or xlsx", params(("type" = String, Path, description = "record type"), ("format" = Option<String>, Query, description = "csv or xlsx"), ("filters" = Option<BTreeMap<String, String>>, Query, style = Form, explode, description = "FIELD=VALUE filters")), responses((status = 200, description = "The filtered list as CSV or xlsx", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn export(
    State(s): State<AppState>,
    Auth(actor): Auth,
    UserLang(lang): UserLang,
    Path(record_type): Path<String>,
    ApiQuery(q): ApiQuery<BTreeMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    may(&s, &record_type, &actor, RecordOp::Read)?;
    use axum::response::IntoResponse;
    let format = q.get("format").cloned().unwrap_or_else(|| "csv".into());
    if format != "csv" && format != "xlsx" {
        return Err(ApiError::new(crate::codes::ErrorCode::InvalidQuery, "`format` must be csv or xlsx"));
    }
    let query = record_query(&q)?;
    let name = record_type.clone();
    let is_csv = format == "csv";
    let bytes = blocking(&s, move |r| {
        let (header, rows) = r.export_table(&record_type, &query, lang)?;
        if is_csv {
            flowform_runtime::import::to_csv(&header, &rows)
        } else {
            flowform_runtime::import::to_xlsx(&record_type, &header, &rows, &r.numeric_columns(&record_type)?)
        }
    })
    .await?;
    let content_type = if is_csv { "text/csv; charset=utf-8" } else { "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" };
    let disposition = format!("attachment; filename=\"{name}.{format}\"");
    Ok(([(axum::http::header::CONTENT_TYPE, content_type.to_string()), (axum::http::header::CONTENT_DISPOSITION, disposition)], bytes).into_response())
}
