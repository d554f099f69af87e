//! Reports and exports; see docs/api.md and docs/reports.md.

use crate::AppState;
use crate::auth::Auth;
use crate::codes::ErrorCode;
use crate::error::ApiError;
use crate::extract::{ApiQuery, Path, UserLang};
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use flowform_core::Lang;
use flowform_core::reports::ReportQuery;
use flowform_store::InstanceFilter;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list)).routes(routes!(run)).routes(routes!(export_instances))
}

fn day_start(s: &AppState, key: &str, text: &str) -> Result<flowform_core::reports::Timestamp, ApiError> {
    flowform_runtime::reports::day_start(&s.runtime.bundle(), text).map_err(|e| ApiError::new(ErrorCode::InvalidQuery, format!("`{key}` {e}")))
}

/// The query of a report: `from`, `to` (dates, `to` exclusive), `by`, and every other parameter a filter.
pub fn report_query(s: &AppState, q: &BTreeMap<String, String>, default_by: &str) -> Result<(ReportQuery, String), ApiError> {
    let mut query = ReportQuery { by: q.get("by").cloned().unwrap_or_else(|| default_by.to_string()), ..Default::default() };
    if let Some(f) = q.get("from") {
        query.from = Some(day_start(s, "from", f)?);
    }
    if let Some(t) = q.get("to") {
        query.to = Some(day_start(s, "to", t)?);
    }
    if let (Some(f), Some(t)) = (query.from, query.to)
        && t <= f
    {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "`to` must be after `from` (`to` is exclusive)"));
    }
    let format = q.get("format").cloned().unwrap_or_else(|| "json".into());
    if !["json", "csv", "xlsx"].contains(&format.as_str()) {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "`format` must be json, csv or xlsx"));
    }
    query.filters = q.iter().filter(|(k, _)| !["from", "to", "by", "format"].contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    Ok((query, format))
}

#[utoipa::path(get, path = "/api/v1/reports", tag = "reports", summary = "The reports the caller may run", responses((status = 200, description = "The reports the caller may run", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn list(State(s): State<AppState>, Auth(actor): Auth, UserLang(lang): UserLang) -> Result<Json<Value>, ApiError> {
    let code = lang.code();
    let items: Vec<Value> = s
        .runtime
        .reports_for(&actor)
        .iter()
        .map(|r| {
            json!({
                "name": r.name,
                "title": r.title.get(code, &r.name),
                "description": r.description.get(code, ""),
                "chart": r.chart.value,
                "by": r.dimensions.iter().map(|d| d.value.clone()).collect::<Vec<_>>(),
                "measures": r.measures.iter().map(|m| json!({"name": m.name, "label": m.label.get(code, &m.name), "unit": m.unit})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

#[utoipa::path(get, path = "/api/v1/reports/{name}", tag = "reports", summary = "A report's table (format=json, csv or xlsx)", params(("name" = String, Path, description = "report"), ("from" = Option<String>, Query, description = "first day, in the app's zone (inclusive)"), ("to" = Option<String>, Query, description = "last day, exclusive"), ("by" = Option<String>, Query, description = "a dimension the report offers"), ("format" = Option<String>, Query, description = "json (default), csv or xlsx"), ("filters" = Option<BTreeMap<String, String>>, Query, style = Form, explode, description = "FIELD=VALUE filters")), responses((status = 200, description = "A report's table", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn run(
    State(s): State<AppState>,
    Auth(actor): Auth,
    UserLang(lang): UserLang,
    Path(name): Path<String>,
    ApiQuery(q): ApiQuery<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    let default_by = s.runtime.bundle().model.reports.get(&name).and_then(|r| r.dimensions.first()).map(|d| d.value.clone()).unwrap_or_default();
    let (query, format) = report_query(&s, &q, &default_by)?;
    let runtime = s.runtime.clone();
    let view = tokio::task::spawn_blocking(move || runtime.run_report(&name, &actor, &query, lang)).await.map_err(ApiError::internal)??;
    match format.as_str() {
        "json" => Ok(Json(json!(view)).into_response()),
        other => {
            let (header, rows, numeric) = table(&view, lang);
            let bytes = if other == "csv" {
                flowform_runtime::import::to_csv(&header, &rows)?
            } else {
                flowform_runtime::import::to_xlsx("report", &header, &rows, &numeric)?
            };
            Ok(file(&view.name, other, bytes))
        }
    }
}

/// A report as a sheet: the dimension, the number of rows, each measure; the total last.
fn table(view: &flowform_runtime::reports::ReportView, lang: Lang) -> (Vec<String>, Vec<Vec<String>>, Vec<bool>) {
    let mut header =
        vec![if view.by_label.is_empty() { view.title.clone() } else { view.by_label.clone() }, if lang == Lang::En { "Rows".into() } else { "条数".into() }];
    for c in &view.columns {
        let label = c["label"].as_str().unwrap_or_default();
        header.push(match c["unit"].as_str() {
            Some(u) => format!("{label} ({u})"),
            None => label.to_string(),
        });
    }
    let line = |r: &Value| -> Vec<String> {
        let mut out = vec![r["label"].as_str().unwrap_or_default().to_string(), r["rows"].to_string()];
        out.extend(r["values"].as_array().into_iter().flatten().map(|v| if v.is_null() { String::new() } else { v.to_string() }));
        out
    };
    let mut rows: Vec<Vec<String>> = view.rows.iter().map(line).collect();
    rows.push(line(&view.total));
    let numeric = std::iter::once(false).chain(std::iter::repeat_n(true, header.len() - 1)).collect();
    (header, rows, numeric)
}

fn file(name: &str, format: &str, bytes: Vec<u8>) -> Response {
    let content_type = if format == "csv" { "text/csv; charset=utf-8" } else { "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" };
    let disposition = format!("attachment; filename=\"{name}.{format}\"");
    ([(axum::http::header::CONTENT_TYPE, content_type.to_string()), (axum::http::header::CONTENT_DISPOSITION, disposition)], bytes).into_response()
}

/// Instances as a sheet, with the filters of the instance list: every field
/// of the workflow's forms as people read it (numbers as numbers in xlsx).
#[utoipa::path(get, path = "/api/v1/instances/export", tag = "instances", summary = "Instances the caller may read, as CSV or xlsx", params(("workflow" = String, Query, description = "workflow"), ("format" = Option<String>, Query, description = "csv (default) or xlsx"), ("state" = Option<String>, Query, description = "state"), ("team" = Option<String>, Query, description = "team"), ("assignee" = Option<String>, Query, description = "user id or `me`"), ("overdue" = Option<bool>, Query, description = "past the deadline")), responses((status = 200, description = "Instances as CSV or xlsx", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn export_instances(
    State(s): State<AppState>,
    Auth(actor): Auth,
    UserLang(lang): UserLang,
    ApiQuery(q): ApiQuery<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    for k in q.keys() {
        if !["workflow", "format", "state", "team", "assignee", "overdue"].contains(&k.as_str()) {
            return Err(ApiError::new(ErrorCode::InvalidQuery, format!("unknown parameter `{k}`; use workflow, format, state, team, assignee, overdue")));
        }
    }
    let workflow = q.get("workflow").cloned().ok_or_else(|| ApiError::new(ErrorCode::InvalidQuery, "`workflow` is required"))?;
    let bundle = s.runtime.bundle();
    if bundle.workflow(&workflow).is_none() {
        return Err(ApiError::new(ErrorCode::UnknownWorkflow, format!("unknown workflow `{workflow}`")));
    }
    let format = q.get("format").cloned().unwrap_or_else(|| "csv".into());
    if format != "csv" && format != "xlsx" {
        return Err(ApiError::new(ErrorCode::InvalidQuery, "`format` must be csv or xlsx"));
    }
    let overdue = match q.get("overdue").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => return Err(ApiError::new(ErrorCode::InvalidQuery, format!("`overdue` must be true or false, not `{other}`"))),
    };
    let filter = InstanceFilter {
        workflow: Some(workflow.clone()),
        state: q.get("state").cloned(),
        team: q.get("team").cloned(),
        assignee: q.get("assignee").map(|a| if a == "me" { actor.id.clone() } else { a.clone() }),
        overdue,
        limit: 500,
        visibility: s.runtime.visibility(&actor),
        before: None,
    };
    let is_csv = format == "csv";
    let runtime = s.runtime.clone();
    let bytes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, flowform_runtime::CommandError> {
        let (header, rows, numeric) = runtime.export_instances(&filter, lang)?;
        if is_csv { flowform_runtime::import::to_csv(&header, &rows) } else { flowform_runtime::import::to_xlsx("export", &header, &rows, &numeric) }
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(file(&workflow, &format, bytes))
}
