//! Routes of the API; see docs/api.md.

use crate::AppState;
use crate::auth::Auth;
use crate::auth::require_admin;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, IdempotencyKey, Path, UserLang};
use crate::views;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flowform_core::{Actor, Instance};
use flowform_runtime::CommandOptions;
use flowform_store::InstanceFilter;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The documented routes of the API core (instances, definitions, inbox, admin).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(quarantine, clear_quarantine))
        .routes(routes!(requeue_quarantine))
        .routes(routes!(bundle))
        .routes(routes!(bundle_versions))
        .routes(routes!(bundle_diff))
        .routes(routes!(admin_reload))
        .routes(routes!(admin_migrate))
        .routes(routes!(admin_replay))
        .routes(routes!(workflows))
        .routes(routes!(workflow))
        .routes(routes!(start))
        .routes(routes!(form))
        .routes(routes!(instances))
        .routes(routes!(instance_counts))
        .routes(routes!(instance))
        .routes(routes!(history))
        .routes(routes!(transition))
        .routes(routes!(me))
        .routes(routes!(inbox))
        .routes(routes!(admin_outbox))
        .routes(routes!(retry_outbox))
        .routes(routes!(mark_read))
}

pub(crate) async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; see docs/api.md")
}

#[utoipa::path(get, path = "/healthz", tag = "health", summary = "Health of the server and its parts",
    description = "`{status, components: {writer, timers, watcher, outbox}}`; each component `ok`, `degraded` (with `detail`) or `off`. 503 with the same body when one is degraded.",
    responses((status = 200, description = "all parts work", body = Object), (status = 503, description = "a part is degraded", body = Object)), security(()))]
async fn healthz(State(s): State<AppState>) -> (StatusCode, Json<Value>) {
    let report = s.runtime.health();
    let status = if report.is_ok() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!(report)))
}

#[utoipa::path(get, path = "/api/v1/admin/quarantine", tag = "admin", summary = "Timers taken out of the queue because they could not act (admin)",
    responses((status = 200, description = "`{items: [{timer, reason, at}]}`", body = Object), (status = "4XX", description = "an error", body = crate::error::ErrorBody)))]
async fn quarantine(State(s): State<AppState>, Auth(actor): Auth) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "read the quarantine")?;
    let store = s.runtime.store().clone();
    let (items, triggers) = tokio::task::spawn_blocking(move || Ok::<_, flowform_store::StoreError>((store.quarantined()?, store.failed_triggers()?)))
        .await
        .map_err(ApiError::internal)??;
    Ok(Json(json!({"items": items, "failed_triggers": triggers})))
}

#[utoipa::path(post, path = "/api/v1/admin/quarantine/requeue", tag = "admin", summary = "Put quarantined timers back in the queue, after a fix (admin)",
    description = "Timers whose instance is still in the state they were armed for fire on the next round; the others are forgotten.",
    responses((status = 200, description = "`{requeued: n}`", body = Object), (status = "4XX", description = "an error", body = crate::error::ErrorBody)))]
async fn requeue_quarantine(State(s): State<AppState>, Auth(actor): Auth) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "requeue the quarantine")?;
    let store = s.runtime.store().clone();
    let outcome = tokio::task::spawn_blocking(move || store.submit(flowform_store::Job::RequeueQuarantined)).await.map_err(ApiError::internal)??;
    let n = match outcome {
        flowform_store::CommitOutcome::Sequence(n) => n,
        _ => 0,
    };
    Ok(Json(json!({"requeued": n})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClearQuery {
    /// Only entries quarantined at or before this time (the `at` of the newest one seen).
    upto: Option<String>,
}

#[utoipa::path(delete, path = "/api/v1/admin/quarantine", tag = "admin", summary = "Forget the quarantined timers once seen (admin)",
    params(("upto" = Option<String>, Query, description = "only those quarantined at or before this time: the `at` of the newest one seen, so one that came after is not lost")),
    responses((status = 200, description = "`{cleared: true}`", body = Object), (status = "4XX", description = "an error", body = crate::error::ErrorBody)))]
async fn clear_quarantine(State(s): State<AppState>, Auth(actor): Auth, ApiQuery(q): ApiQuery<ClearQuery>) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "clear the quarantine")?;
    let store = s.runtime.store().clone();
    let job = flowform_store::Job::ClearQuarantine { upto: q.upto };
    tokio::task::spawn_blocking(move || store.submit(job)).await.map_err(ApiError::internal)??;
    Ok(Json(json!({"cleared": true})))
}

#[utoipa::path(get, path = "/api/v1/me", tag = "accounts", summary = "The signed-in user", responses((status = 200, description = "The signed-in user", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn me(Auth(actor): Auth) -> Json<Actor> {
    Json(actor)
}

#[utoipa::path(get, path = "/api/v1/bundle", tag = "definitions", summary = "The definitions running now, with `last_rejected`", responses((status = 200, description = "The definitions running now, with `last_rejected`", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn bundle(State(s): State<AppState>, _: Auth) -> Json<Value> {
    let b = s.runtime.bundle();
    Json(json!({
        "version": b.version,
        "loaded_at": s.runtime.loaded_at(),
        "app": {"name": b.model.app.name, "title": b.model.app.title, "default_language": b.model.app.default_language},
        "workflows": b.model.workflows.keys().collect::<Vec<_>>(),
        "forms": b.model.forms.keys().collect::<Vec<_>>(),
        "roles": b.model.roles.iter().map(|(k, r)| json!({"name": k, "label": r.label})).collect::<Vec<_>>(),
        "teams": s.runtime.teams(&b).into_iter().map(|(k, label)| json!({"name": k, "label": label})).collect::<Vec<_>>(),
        "last_rejected": s.runtime.last_rejected(),
    }))
}

#[utoipa::path(get, path = "/api/v1/bundle/versions", tag = "definitions", summary = "Every stored bundle version", responses((status = 200, description = "Every stored bundle version", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn bundle_versions(State(s): State<AppState>, _: Auth) -> Result<Json<Value>, ApiError> {
    let versions = s.runtime.store().bundle_versions()?;
    Ok(Json(json!({"current": s.runtime.bundle().version, "versions": versions})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiffQuery {
    from: String,
    to: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/bundle/diff", tag = "definitions", summary = "What changed between two versions", params(("from" = String, Query, description = "a bundle version"), ("to" = Option<String>, Query, description = "a bundle version (default: current)")), responses((status = 200, description = "What changed between two versions", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn bundle_diff(State(s): State<AppState>, _: Auth, ApiQuery(q): ApiQuery<DiffQuery>) -> Result<Json<Value>, ApiError> {
    let runtime = s.runtime.clone();
    let diff = tokio::task::spawn_blocking(move || -> Result<_, flowform_runtime::CommandError> {
        let from = runtime.bundle_named(&q.from)?;
        let to = runtime.bundle_named(q.to.as_deref().unwrap_or("current"))?;
        Ok(flowform_core::diff::diff(&from, &to))
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(Json(json!(diff)))
}

#[utoipa::path(post, path = "/api/v1/admin/reload", tag = "admin", summary = "Reload the definitions (admin)", responses((status = 200, description = "Reload the definitions (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn admin_reload(State(s): State<AppState>, Auth(actor): Auth) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "admin route")?;
    let runtime = s.runtime.clone();
    let outcome = tokio::task::spawn_blocking(move || runtime.reload()).await.map_err(ApiError::internal)?;
    Ok(Json(json!(outcome)))
}

#[utoipa::path(post, path = "/api/v1/admin/migrate", tag = "admin", summary = "Move running instances to the current version (admin)", request_body(content = Object, description = "a migration request: {workflow, map, dry_run}", content_type = "application/json"), responses((status = 200, description = "Move running instances to the current version (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn admin_migrate(
    State(s): State<AppState>,
    Auth(actor): Auth,
    ApiJson(req): ApiJson<flowform_runtime::migrate::MigrationRequest>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "admin route")?;
    let runtime = s.runtime.clone();
    let report = tokio::task::spawn_blocking(move || runtime.migrate(&req, &actor)).await.map_err(ApiError::internal)??;
    let status = if report.blocked.is_empty() { "ok" } else { "refused" };
    let mut body = json!(report);
    body["status"] = json!(status);
    Ok(Json(body))
}

/// What to replay: a candidate (`dir`, a directory of definitions on the
/// server, or `version`, a stored version) and which past instances.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReplayBody {
    #[serde(default)]
    pub dir: Option<String>,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub since_days: Option<u32>,
    #[serde(default)]
    pub workflow: Option<String>,
    #[serde(default)]
    pub list: Option<usize>,
}

/// Decides past instances again under a candidate, writing nothing (the page and the API).
pub(crate) fn run_replay(
    runtime: &flowform_runtime::Runtime,
    body: ReplayBody,
    lang: flowform_core::Lang,
) -> Result<flowform_runtime::replay::ReplayReport, ApiError> {
    use crate::codes::ErrorCode;
    use flowform_runtime::replay::{Candidate, CandidateError};
    let which = match (body.dir.as_deref().map(str::trim).filter(|d| !d.is_empty()), body.version.as_deref().map(str::trim).filter(|v| !v.is_empty())) {
        (Some(dir), None) => Candidate::Dir(std::path::Path::new(dir)),
        (None, Some(version)) => Candidate::Version(version),
        _ => {
            return Err(ApiError::new(
                ErrorCode::InvalidBody,
                "name one candidate: `dir` (a directory of definitions on the server) or `version` (a stored definitions version)",
            ));
        }
    };
    let candidate = match runtime.candidate(which) {
        Ok(b) => b,
        Err(CandidateError::Command(e)) => return Err(e.into()),
        Err(CandidateError::Invalid { dir, diagnostics }) => {
            let details: Vec<Value> =
                diagnostics.iter().map(|d| json!({"file": d.file, "line": d.line, "column": d.column, "code": d.code, "message": d.message})).collect();
            return Err(ApiError::new(ErrorCode::InvalidCandidate, format!("the definitions in {dir} have {} problem(s)", diagnostics.len()))
                .with_details(json!(details)));
        }
        Err(e) => return Err(ApiError::new(ErrorCode::InvalidCandidate, e.to_string())),
    };
    let opts =
        flowform_runtime::replay::ReplayOptions { since_days: body.since_days, workflow: body.workflow, lang, list: body.list.unwrap_or(200).min(5_000) };
    Ok(runtime.what_if(&candidate, &opts)?)
}

#[utoipa::path(post, path = "/api/v1/admin/replay", tag = "admin", summary = "What-if: decide past instances again under candidate definitions, writing nothing (admin)", request_body(content = Object, description = "{dir | version, since_days, workflow, list}", content_type = "application/json"), responses((status = 200, description = "{version, now, since, summary: {instances, steps, affected, by_kind, by_team, by_month, team_moves}, items: [{id, number, workflow, created_at, team, steps, differences: [{kind, seq, at, step, what, recorded, replayed, message}]}], truncated}", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn admin_replay(
    State(s): State<AppState>,
    Auth(actor): Auth,
    UserLang(lang): UserLang,
    ApiJson(body): ApiJson<ReplayBody>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "admin route")?;
    let runtime = s.runtime.clone();
    let report = tokio::task::spawn_blocking(move || run_replay(&runtime, body, lang)).await.map_err(ApiError::internal)??;
    Ok(Json(json!(report)))
}

#[utoipa::path(get, path = "/api/v1/workflows", tag = "definitions", summary = "Workflows with their states and transitions", responses((status = 200, description = "Workflows with their states and transitions", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn workflows(State(s): State<AppState>, _: Auth) -> Json<Value> {
    let b = s.runtime.bundle();
    Json(b.model.workflows.values().map(views::workflow_summary).collect())
}

#[utoipa::path(get, path = "/api/v1/workflows/{name}", tag = "definitions", summary = "One workflow", params(("name" = String, Path, description = "workflow name")), responses((status = 200, description = "One workflow", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn workflow(State(s): State<AppState>, _: Auth, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let b = s.runtime.bundle();
    let wf = b.workflow(&name).ok_or_else(|| ApiError::new(crate::codes::ErrorCode::UnknownWorkflow, format!("unknown workflow `{name}`")))?;
    Ok(Json(views::workflow_detail(wf, &b)))
}

#[utoipa::path(get, path = "/api/v1/forms/{name}", tag = "definitions", summary = "A form as JSON Schema and UI description", params(("name" = String, Path, description = "form name")), responses((status = 200, description = "A form as JSON Schema and UI description", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn form(State(s): State<AppState>, _: Auth, Path(name): Path<String>) -> Result<Json<Value>, ApiError> {
    let b = s.runtime.bundle();
    let f = b.form(&name).ok_or_else(|| ApiError::new(crate::codes::ErrorCode::UnknownForm, format!("unknown form `{name}`")))?;
    Ok(Json(json!({"name": f.name(), "json_schema": f.json_schema, "ui": f.ui})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    #[serde(default)]
    data: Option<Map<String, Value>>,
}

#[utoipa::path(post, path = "/api/v1/workflows/{name}/instances", tag = "instances", summary = "Start an instance", params(("name" = String, Path, description = "workflow name"), ("Idempotency-Key" = Option<String>, Header, description = "retry-safe key")), request_body(content = Object, description = "{'data': {...}} — the start form", content_type = "application/json"), responses((status = 201, description = "Start an instance", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn start(
    State(s): State<AppState>,
    Auth(actor): Auth,
    UserLang(lang): UserLang,
    IdempotencyKey(key): IdempotencyKey,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<StartBody>,
) -> Result<Response, ApiError> {
    let opts = CommandOptions { lang, idempotency_key: key, expected_version: None };
    let data = Value::Object(body.data.unwrap_or_default());
    let instance = s.runtime.start(&name, &data, &actor, &opts).await.inspect_err(|e| audit_refusal(&s, &actor, &format!("start {name}"), e))?;
    Ok((StatusCode::CREATED, Json(&render(&s, &instance, &actor))).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransitionBody {
    #[serde(default)]
    data: Option<Map<String, Value>>,
    #[serde(default)]
    expected_version: Option<u64>,
}

#[utoipa::path(post, path = "/api/v1/instances/{id}/transitions/{name}", tag = "instances", summary = "Take a transition", params(("id" = String, Path, description = "instance id"), ("name" = String, Path, description = "transition name"), ("Idempotency-Key" = Option<String>, Header, description = "retry-safe key")), request_body(content = Object, description = "{'data': {...}, 'expected_version': N}", content_type = "application/json"), responses((status = 200, description = "Take a transition", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn transition(
    State(s): State<AppState>,
    Auth(actor): Auth,
    UserLang(lang): UserLang,
    IdempotencyKey(key): IdempotencyKey,
    Path((id, name)): Path<(String, String)>,
    ApiJson(body): ApiJson<TransitionBody>,
) -> Result<Response, ApiError> {
    let opts = CommandOptions { lang, idempotency_key: key, expected_version: body.expected_version };
    let data = Value::Object(body.data.unwrap_or_default());
    let instance = s.runtime.transition(&id, &name, &data, &actor, &opts).await.inspect_err(|e| audit_refusal(&s, &actor, &format!("{name} on {id}"), e))?;
    Ok(Json(&render(&s, &instance, &actor)).into_response())
}

/// A start or transition refused for lack of a role goes to the audit log.
fn audit_refusal(s: &AppState, actor: &Actor, what: &str, e: &flowform_runtime::CommandError) {
    if let flowform_runtime::CommandError::Rejected(flowform_core::Rejection::Forbidden(_)) = e {
        s.runtime.audit_denied(actor, what);
    }
}

fn render<'a>(s: &AppState, instance: &'a Instance, actor: &Actor) -> views::InstanceView<'a> {
    let available = s.runtime.available_transitions(instance, actor);
    let bundle = s.runtime.bundle_for(&instance.bundle_version).ok();
    views::instance(instance, available, bundle.as_deref())
}

#[utoipa::path(get, path = "/api/v1/instances/{id}", tag = "instances", summary = "One instance (404 if the caller may not read it)", params(("id" = String, Path, description = "instance id")), responses((status = 200, description = "One instance (404 if the caller may not read it)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn instance(State(s): State<AppState>, Auth(actor): Auth, Path(id): Path<String>) -> Result<Response, ApiError> {
    let instance = s.runtime.instance_for(&id, &actor)?;
    // An old definitions version is compiled off the request's thread, before rendering uses it.
    let _ = s.runtime.bundle_for_async(&instance.bundle_version).await;
    Ok(Json(&render(&s, &instance, &actor)).into_response())
}

#[utoipa::path(get, path = "/api/v1/instances/{id}/history", tag = "instances", summary = "Its events, oldest first", params(("id" = String, Path, description = "instance id")), responses((status = 200, description = "Its events, oldest first", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn history(State(s): State<AppState>, Auth(actor): Auth, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let events = s.runtime.history_for(&id, &actor)?;
    // What each decision read (for what-if replay) stays inside: record versions and the actor's roles.
    let mut out = json!(events);
    if let Value::Array(items) = &mut out {
        for e in items.iter_mut().filter_map(Value::as_object_mut) {
            e.remove("decided_on");
        }
    }
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    workflow: Option<String>,
    state: Option<String>,
    team: Option<String>,
    assignee: Option<String>,
    overdue: Option<bool>,
    limit: Option<usize>,
    cursor: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/instances", tag = "instances", summary = "Instances the caller may read, newest first", params(("workflow" = Option<String>, Query, description = "workflow"), ("state" = Option<String>, Query, description = "state"), ("team" = Option<String>, Query, description = "team"), ("assignee" = Option<String>, Query, description = "user id or `me`"), ("overdue" = Option<bool>, Query, description = "past the deadline"), ("limit" = Option<u32>, Query, description = "1–500 (default 50)"), ("cursor" = Option<String>, Query, description = "next_cursor of the previous page")), responses((status = 200, description = "Instances the caller may read, newest first", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn instances(State(s): State<AppState>, Auth(actor): Auth, ApiQuery(q): ApiQuery<ListQuery>) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if limit == 0 || limit > 500 {
        return Err(ApiError::new(crate::codes::ErrorCode::InvalidQuery, "`limit` must be between 1 and 500"));
    }
    let filter = InstanceFilter {
        workflow: q.workflow,
        state: q.state,
        team: q.team,
        assignee: q.assignee.map(|a| if a == "me" { actor.id.clone() } else { a }),
        before: q.cursor,
        overdue: q.overdue,
        limit,
        visibility: s.runtime.visibility(&actor),
    };
    let runtime = s.runtime.clone();
    let page = tokio::task::spawn_blocking(move || runtime.instances(&filter)).await.map_err(ApiError::internal)??;
    let versions: std::collections::BTreeSet<&str> = page.items.iter().map(|i| i.bundle_version.as_str()).collect();
    for v in versions {
        let _ = s.runtime.bundle_for_async(v).await;
    }
    let items: Vec<views::InstanceView> = page.items.iter().map(|i| render(&s, i, &actor)).collect();
    Ok(Json(&InstancePage { items, next_cursor: &page.next }).into_response())
}

#[derive(serde::Serialize)]
struct InstancePage<'a> {
    items: Vec<views::InstanceView<'a>>,
    next_cursor: &'a Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountsQuery {
    workflow: Option<String>,
    /// Comma-separated: `workflow`, `state`, `team` (default `state,team`).
    by: Option<String>,
}

/// How many instances there are per state and team (or any grouping of
/// workflow, state, team): read from counts the store keeps with every command,
/// so it costs the same for a thousand instances as for millions.
#[utoipa::path(get, path = "/api/v1/instances/counts", tag = "instances", summary = "Counts of the instances the caller may read", params(("workflow" = Option<String>, Query, description = "workflow"), ("by" = Option<String>, Query, description = "comma-separated: workflow, state, team")), responses((status = 200, description = "Counts of the instances the caller may read", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn instance_counts(State(s): State<AppState>, Auth(actor): Auth, ApiQuery(q): ApiQuery<CountsQuery>) -> Result<Json<Value>, ApiError> {
    const GROUPS: [&str; 3] = ["workflow", "state", "team"];
    let by: Vec<String> = q.by.as_deref().unwrap_or("state,team").split(',').map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect();
    if let Some(bad) = by.iter().find(|g| !GROUPS.contains(&g.as_str())) {
        return Err(ApiError::new(crate::codes::ErrorCode::InvalidQuery, format!("`by` takes workflow, state and team, not `{bad}`")));
    }
    let store = s.runtime.store().clone();
    let workflow = q.workflow.clone();
    let visibility = s.runtime.visibility(&actor);
    let rows = tokio::task::spawn_blocking(move || match &visibility {
        None => store.instance_counts(workflow.as_deref()),
        Some(v) => store.instance_counts_visible(workflow.as_deref(), v),
    })
    .await
    .map_err(ApiError::internal)??;
    let mut groups: std::collections::BTreeMap<Vec<Option<String>>, u64> = std::collections::BTreeMap::new();
    let mut total = 0;
    for row in rows {
        let key = by
            .iter()
            .map(|g| match g.as_str() {
                "workflow" => Some(row.workflow.clone()),
                "state" => Some(row.state.clone()),
                _ => row.team.clone(),
            })
            .collect();
        *groups.entry(key).or_default() += row.count;
        total += row.count;
    }
    let items: Vec<Value> = groups
        .into_iter()
        .map(|(values, count)| {
            let mut item = serde_json::Map::new();
            for (g, v) in by.iter().zip(values) {
                item.insert(g.clone(), json!(v));
            }
            item.insert("count".into(), json!(count));
            Value::Object(item)
        })
        .collect();
    Ok(Json(json!({"items": items, "total": total})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InboxQuery {
    unread: Option<bool>,
}

/// The caller's in-app notifications, newest first.
#[utoipa::path(get, path = "/api/v1/inbox", tag = "notifications", summary = "The caller's in-app notifications", params(("unread" = Option<bool>, Query, description = "only unread")), responses((status = 200, description = "The caller's in-app notifications", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn inbox(State(s): State<AppState>, Auth(actor): Auth, ApiQuery(q): ApiQuery<InboxQuery>) -> Result<Json<Value>, ApiError> {
    let runtime = s.runtime.clone();
    let mut items = tokio::task::spawn_blocking(move || runtime.inbox(&actor.id)).await.map_err(ApiError::internal)??;
    items.reverse();
    if q.unread == Some(true) {
        items.retain(|i| !i.read);
    }
    let unread = items.iter().filter(|i| !i.read).count();
    Ok(Json(json!({"items": items, "unread": unread})))
}

#[utoipa::path(post, path = "/api/v1/inbox/{seq}/read", tag = "notifications", summary = "Mark a notification read", params(("seq" = u64, Path, description = "notification number")), responses((status = 200, description = "Mark a notification read", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn mark_read(State(s): State<AppState>, Auth(actor): Auth, Path(seq): Path<u64>) -> Result<Json<Value>, ApiError> {
    let runtime = s.runtime.clone();
    tokio::task::spawn_blocking(move || runtime.mark_read(&actor.id, seq)).await.map_err(ApiError::internal)??;
    Ok(Json(json!({"read": true})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    status: Option<String>,
}

/// Messages to outside channels with their delivery status; `?status=dead` is the dead-letter list.
#[utoipa::path(get, path = "/api/v1/admin/outbox", tag = "admin", summary = "Outgoing messages and dead letters (admin)", params(("status" = Option<String>, Query, description = "pending, delivered or dead")), responses((status = 200, description = "Outgoing messages and dead letters (admin)", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn admin_outbox(State(s): State<AppState>, Auth(actor): Auth, ApiQuery(q): ApiQuery<OutboxQuery>) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "admin route")?;
    let runtime = s.runtime.clone();
    let mut items = tokio::task::spawn_blocking(move || runtime.outbox()).await.map_err(ApiError::internal)??;
    if let Some(status) = &q.status {
        items.retain(|i| &i.status == status);
    }
    Ok(Json(json!({"items": items})))
}

/// A dead letter back in the queue, due now (after its receiver was fixed).
#[utoipa::path(post, path = "/api/v1/admin/outbox/{seq}/retry", tag = "admin", summary = "Send a dead letter again (admin)", params(("seq" = u64, Path, description = "the message's number")), responses((status = 200, description = "queued again: {seq, status}", body = Object), (status = "4XX", description = "an error: {code, message, details}", body = crate::error::ErrorBody)))]
async fn retry_outbox(State(s): State<AppState>, Auth(actor): Auth, Path(seq): Path<u64>) -> Result<Json<Value>, ApiError> {
    require_admin(&s, &actor, "admin route")?;
    let runtime = s.runtime.clone();
    let found = tokio::task::spawn_blocking(move || runtime.retry_outbox(seq)).await.map_err(ApiError::internal)??;
    if !found {
        return Err(ApiError::not_found(format!("no outgoing message {seq}")));
    }
    Ok(Json(json!({"seq": seq, "status": "pending"})))
}
