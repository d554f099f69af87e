//! The page handlers. Each reads through the runtime with the viewer's
//! authorization and hands display-ready values to a template.

use crate::formview::{self, Ctx, Errors};
use crate::render::{fragment, page};
use crate::{Viewer, assets, display, texts};
use axum::extract::{FromRef, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use flowform_core::{Actor, Bundle, Instance, Lang, Rejection};
use flowform_model::{FieldDef, RecordOp, WorkflowDef};
use flowform_runtime::{CommandError, CommandOptions, Runtime};
use flowform_store::{InstanceFilter, Reach, Visibility};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(crate) type Rt = State<Arc<Runtime>>;

/// The language cookie a user's choice is kept in.
const LANG_COOKIE: &str = "ff_lang";

/// A signed-in page request: who, and in which language.
pub struct P {
    pub viewer: Viewer,
    pub lang: Lang,
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// The choice made on this device (cookie), else the language of the
/// user's account, else the browser's `Accept-Language`, else the app's default.
pub fn language(headers: &HeaderMap, account: Option<&str>, bundle: &Bundle) -> Lang {
    match cookie(headers, LANG_COOKIE).or(account) {
        Some("en") => return Lang::En,
        Some("zh-CN") => return Lang::ZhCn,
        _ => {}
    }
    headers
        .get(header::ACCEPT_LANGUAGE)
        .and_then(|h| h.to_str().ok())
        .and_then(Lang::from_accept_language)
        .unwrap_or(if bundle.model.app.default_language == "en" { Lang::En } else { Lang::ZhCn })
}

impl<S> FromRequestParts<S> for P
where
    S: Send + Sync,
    Arc<Runtime>: FromRef<S>,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Some(viewer) = parts.extensions.get::<Viewer>().cloned() else {
            let next = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let to = if next == "/" { "/login".to_string() } else { format!("/login?next={}", encode(next)) };
            return Err(Redirect::to(&to).into_response());
        };
        let runtime = Arc::<Runtime>::from_ref(state);
        let lang = language(&parts.headers, viewer.language.as_deref(), &runtime.bundle());
        Ok(P { viewer, lang })
    }
}

fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// Runs store reads off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(rt: &Arc<Runtime>, f: impl FnOnce(&Runtime) -> T + Send + 'static) -> Result<T, Response> {
    let rt = rt.clone();
    tokio::task::spawn_blocking(move || f(&rt)).await.map_err(|e| {
        tracing::error!(error = %e, "page work panicked");
        StatusCode::INTERNAL_SERVER_ERROR.into_response()
    })
}

/// A store read off the async threads; a refusal becomes its page.
pub(crate) async fn read_or_page<T: Send + 'static>(
    rt: &Arc<Runtime>,
    p: &P,
    f: impl FnOnce(&Runtime) -> Result<T, CommandError> + Send + 'static,
) -> Result<T, Response> {
    match blocking(rt, f).await? {
        Ok(v) => Ok(v),
        Err(e) => Err(command_failed(rt, p, &e)),
    }
}

/// What every page has: texts, the user, the assets, the navigation.
pub(crate) fn base(rt: &Runtime, p: &P, title: &str, nav: &str) -> Value {
    let bundle = rt.bundle();
    let app_title = bundle.model.app.title.get(p.lang.code(), &bundle.model.app.name).to_string();
    json!({
        "t": texts::all(p.lang),
        "lang": p.lang.code(),
        "title": title,
        "app_title": app_title,
        "csrf": p.viewer.csrf,
        "user_name": p.viewer.actor.name,
        "is_admin": p.viewer.actor.has_role("admin"),
        "css": assets::url("app.css"),
        "js": assets::url("app.js"),
        "htmx": assets::url("htmx.min.js"),
        "nav_home": nav == "home",
        "nav_tasks": nav == "tasks",
        "nav_start": nav == "start",
        "nav_me": nav == "me",
        "notice": null,
    })
}

pub(crate) fn merge(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
        a.extend(b);
    }
    a
}

fn message(rt: &Runtime, p: &P, status: StatusCode, text: &str) -> Response {
    let data = merge(base(rt, p, texts::t(p.lang, "error"), ""), json!({"message": text}));
    page(status, "message", data)
}

pub(crate) fn not_found(rt: &Runtime, p: &P) -> Response {
    message(rt, p, StatusCode::NOT_FOUND, texts::t(p.lang, "not_found"))
}

/// A post must carry the session's CSRF token and come from this site.
fn csrf_ok(p: &P, form: &formview::Posted) -> bool {
    let sent = form.get("_csrf").and_then(|v| v.first()).map_or("", String::as_str);
    p.viewer.same_origin && sent.len() == p.viewer.csrf.len() && sent.bytes().zip(p.viewer.csrf.bytes()).fold(0u8, |a, (x, y)| a | (x ^ y)) == 0
}

fn csrf_refused(rt: &Runtime, p: &P) -> Response {
    rt.audit_denied(&p.viewer.actor, "page form without a valid CSRF token");
    message(
        rt,
        p,
        StatusCode::FORBIDDEN,
        if p.lang == Lang::En {
            "This form expired. Go back, reload the page and try again."
        } else {
            "表单已过期，请返回并刷新页面后重试。"
        },
    )
}

fn new_key() -> String {
    let mut raw = [0u8; 16];
    rand::fill(&mut raw);
    hex::encode(raw)
}

fn is_final(bundle: &Bundle, i: &Instance) -> bool {
    bundle.workflow(&i.workflow).and_then(|w| w.state(&i.state)).is_some_and(|s| s.is_final)
}

fn may_start(wf: &WorkflowDef, actor: &Actor) -> bool {
    wf.start.roles.is_empty() || wf.start.roles.iter().any(|r| actor.has_role(&r.value))
}

/// A card of an instance for lists.
pub(crate) fn card(rt: &Runtime, actor: &Actor, bundle: &Bundle, i: &Instance, lang: Lang) -> Value {
    let tz = display::zone(bundle);
    let now = display::runtime_now(rt);
    let (state_label, color) = display::state(bundle, &i.workflow, &i.state, lang);
    let wf_title = bundle.workflow(&i.workflow).map_or_else(|| i.workflow.clone(), |w| w.title.get(lang.code(), &w.name).to_string());
    let due = i.due_at.filter(|_| !is_final(bundle, i)).map(|d| display::countdown(d, now, lang));
    json!({
        "url": format!("/i/{}", i.id),
        "number": display::number(i, &tz),
        "workflow": wf_title,
        "summary": display::summary(rt, actor, bundle, i, lang),
        "state": state_label,
        "color": color,
        "due": due.as_ref().map(|d| d.0.clone()),
        "overdue": due.as_ref().is_some_and(|d| d.1) || i.overdue,
        "updated": display::relative(i.updated_at, &tz, now, lang),
        "assignee": i.assignment.assignee.as_deref().map(|a| rt.display_name(a)),
        "team": i.assignment.team.as_deref().map(|t| display::team(rt, bundle, t, lang)),
        "actions": [],
    })
}

fn by_deadline(items: &mut [Instance]) {
    items.sort_by(|a, b| match (&a.due_at, &b.due_at) {
        (Some(x), Some(y)) => x.cmp(y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => b.id.cmp(&a.id),
    });
}

struct Work {
    mine: Vec<Instance>,
    queue: Vec<Instance>,
    requests: Vec<Instance>,
    overdue: Vec<Instance>,
    unread: usize,
}

/// The open instances `actor` may read (in a state that is not final),
/// optionally of one team: read state by state through the store's
/// (workflow, state[, team]) index, so the cost follows the open work, not
/// the years of closed orders behind it. At most 500 per state.
fn open_instances(rt: &Runtime, actor: &Actor, team: Option<&str>) -> Result<Vec<Instance>, CommandError> {
    let bundle = rt.bundle();
    let visibility = rt.visibility(actor);
    let mut out = Vec::new();
    for wf in bundle.model.workflows.values() {
        for state in wf.states.iter().filter(|s| !s.is_final) {
            let filter = InstanceFilter {
                workflow: Some(wf.name.clone()),
                state: Some(state.name.clone()),
                team: team.map(str::to_string),
                limit: 500,
                visibility: visibility.clone(),
                ..Default::default()
            };
            out.extend(rt.instances(&filter)?.items);
        }
    }
    Ok(out)
}

/// What the user can do now, read in one go off the async threads.
fn work(rt: &Runtime, actor: &Actor, requests: usize) -> Result<Work, CommandError> {
    let bundle = rt.bundle();
    let open = open_instances(rt, actor, None)?;
    let mut mine: Vec<Instance> = open.iter().filter(|i| i.assignment.assignee.as_deref() == Some(actor.id.as_str())).cloned().collect();
    by_deadline(&mut mine);
    let mut queue = Vec::new();
    for team in &actor.teams {
        queue.extend(open_instances(rt, actor, Some(team))?.into_iter().filter(|i| i.assignment.assignee.is_none()));
    }
    by_deadline(&mut queue);
    let only_mine = Visibility {
        user: actor.id.clone(),
        workflows: bundle.model.workflows.keys().map(|w| (w.clone(), Reach { requester: true, ..Default::default() })).collect(),
        ..Default::default()
    };
    let requests = rt.instances(&InstanceFilter { limit: requests, visibility: Some(only_mine), ..Default::default() })?.items;
    let mut overdue: Vec<Instance> = open.into_iter().filter(|i| i.overdue).collect();
    by_deadline(&mut overdue);
    let unread = rt.inbox(&actor.id)?.iter().filter(|n| !n.read).count();
    Ok(Work { mine, queue, requests, overdue, unread })
}

fn startable(bundle: &Bundle, actor: &Actor, lang: Lang) -> Vec<Value> {
    bundle
        .model
        .workflows
        .values()
        .filter(|w| may_start(w, actor))
        .map(|w| json!({"url": format!("/start/{}", w.name), "title": w.title.get(lang.code(), &w.name), "description": w.description.get(lang.code(), "")}))
        .collect()
}

fn cards(rt: &Runtime, actor: &Actor, bundle: &Bundle, items: &[Instance], lang: Lang, limit: usize) -> Vec<Value> {
    items.iter().take(limit).map(|i| card(rt, actor, bundle, i, lang)).collect()
}

pub async fn home(State(rt): Rt, p: P) -> Response {
    let actor = p.viewer.actor.clone();
    let w = match read_or_page(&rt, &p, move |rt| work(rt, &actor, 10)).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let bundle = rt.bundle();
    let data = json!({
        "start": startable(&bundle, &p.viewer.actor, p.lang),
        "mine": cards(&rt, &p.viewer.actor, &bundle, &w.mine, p.lang, 10),
        "queue": cards(&rt, &p.viewer.actor, &bundle, &w.queue, p.lang, 10),
        "requests": cards(&rt, &p.viewer.actor, &bundle, &w.requests, p.lang, 10),
        "overdue": cards(&rt, &p.viewer.actor, &bundle, &w.overdue, p.lang, 10),
        "unread": w.unread,
        "has_mine": !w.mine.is_empty(),
        "has_queue": !p.viewer.actor.teams.is_empty(),
        "has_overdue": !w.overdue.is_empty(),
        "lists": lists(&bundle, p.lang),
    });
    page(StatusCode::OK, "home", merge(base(&rt, &p, texts::t(p.lang, "home"), "home"), data))
}

fn lists(bundle: &Bundle, lang: Lang) -> Vec<Value> {
    bundle.model.workflows.values().map(|w| json!({"url": format!("/list/{}", w.name), "title": w.title.get(lang.code(), &w.name)})).collect()
}

pub async fn tasks(State(rt): Rt, p: P) -> Response {
    let actor = p.viewer.actor.clone();
    let w = match read_or_page(&rt, &p, move |rt| work(rt, &actor, 30)).await {
        Ok(w) => w,
        Err(r) => return r,
    };
    let bundle = rt.bundle();
    let data = json!({
        "mine": cards(&rt, &p.viewer.actor, &bundle, &w.mine, p.lang, 100),
        "queue": cards(&rt, &p.viewer.actor, &bundle, &w.queue, p.lang, 100),
        "requests": cards(&rt, &p.viewer.actor, &bundle, &w.requests, p.lang, 30),
        "has_queue": !p.viewer.actor.teams.is_empty(),
        "lists": lists(&bundle, p.lang),
    });
    page(StatusCode::OK, "tasks", merge(base(&rt, &p, texts::t(p.lang, "tasks"), "tasks"), data))
}

pub async fn start_list(State(rt): Rt, p: P) -> Response {
    let bundle = rt.bundle();
    let data = json!({"start": startable(&bundle, &p.viewer.actor, p.lang)});
    page(StatusCode::OK, "start", merge(base(&rt, &p, texts::t(p.lang, "start"), "start"), data))
}

/// What the user typed, with the errors it got.
struct Filled {
    data: Map<String, Value>,
    errors: Errors,
    notice: Option<String>,
}

impl Filled {
    fn empty() -> Filled {
        Filled { data: Map::new(), errors: Errors::new(), notice: None }
    }

    /// The typed data with the errors of `e` (on fields where they belong).
    fn failed(data: Map<String, Value>, e: &CommandError) -> Filled {
        match field_errors(e) {
            Some(errs) => Filled { data, errors: formview::errors_by_field(errs), notice: None },
            None => Filled { data, errors: Errors::new(), notice: Some(e.to_string()) },
        }
    }
}

/// What a form page shows.
struct FormPage<'a> {
    title: String,
    subtitle: String,
    action: String,
    back: String,
    fields: &'a [FieldDef],
    data: Map<String, Value>,
    errors: Errors,
    notice: Option<String>,
    version: Option<u64>,
    submit: String,
    /// Where the data lives (`instance=ID`, `record=TYPE/ID`), for its files.
    via: String,
}

fn form_page(rt: &Runtime, p: &P, status: StatusCode, f: FormPage) -> Response {
    let bundle = rt.bundle();
    let ctx = Ctx { runtime: rt, actor: &p.viewer.actor, via: f.via.clone(), bundle: &bundle, lang: p.lang, tz: display::zone(&bundle) };
    let mut used = std::collections::BTreeSet::new();
    let fields = formview::fields(&ctx, f.fields, &f.data, "", &f.errors, &mut used);
    // Errors that belong to no field on the page show above the form.
    let mut general: Vec<String> = f.errors.iter().filter(|(k, _)| !used.contains(*k)).flat_map(|(_, v)| v.iter().cloned()).collect();
    if let Some(n) = f.notice {
        general.insert(0, n);
    } else if !f.errors.is_empty() {
        general.insert(0, texts::t(p.lang, "form_errors").to_string());
    }
    let data = json!({
        "heading": f.title,
        "subtitle": f.subtitle,
        "action": f.action,
        "back": f.back,
        "fields": fields,
        "general": general,
        "key": new_key(),
        "version": f.version,
        "submit": f.submit,
    });
    page(status, "form", merge(base(rt, p, &f.title, "start"), data))
}

pub async fn start_form(State(rt): Rt, p: P, Path(workflow): Path<String>, Query(q): Query<BTreeMap<String, String>>) -> Response {
    let bundle = rt.bundle();
    let Some(wf) = bundle.workflow(&workflow).filter(|w| may_start(w, &p.viewer.actor)) else { return not_found(&rt, &p) };
    let form = wf.start.form.as_ref().and_then(|f| bundle.form(&f.value));
    let fields: &[FieldDef] = form.map_or(&[], |f| &f.def.fields);
    // Values in the address fill the form (a scanned QR label names the record).
    let data: Map<String, Value> = fields.iter().filter_map(|f| q.get(&f.name).map(|v| (f.name.clone(), json!(v)))).collect();
    form_page(
        &rt,
        &p,
        StatusCode::OK,
        FormPage {
            title: wf.title.get(p.lang.code(), &wf.name).to_string(),
            subtitle: wf.description.get(p.lang.code(), "").to_string(),
            action: format!("/start/{workflow}"),
            back: "/".into(),
            fields,
            data,
            errors: Errors::new(),
            notice: None,
            version: None,
            submit: texts::t(p.lang, "submit").to_string(),
            via: String::new(),
        },
    )
}

fn field_errors(e: &CommandError) -> Option<&[flowform_core::FieldError]> {
    match e {
        CommandError::Rejected(Rejection::InvalidInput(errors)) | CommandError::InvalidReferences(errors) => Some(errors),
        _ => None,
    }
}

fn command_status(e: &CommandError) -> StatusCode {
    match e {
        CommandError::Rejected(Rejection::Forbidden(_)) => StatusCode::FORBIDDEN,
        CommandError::InstanceNotFound(_) | CommandError::RecordNotFound(_) => StatusCode::NOT_FOUND,
        CommandError::StaleVersion { .. } | CommandError::IdempotencyKeyReused | CommandError::AlreadyExists(_) | CommandError::Referenced(_) => {
            StatusCode::CONFLICT
        }
        CommandError::Store(_) | CommandError::Internal(_) | CommandError::BundleMissing(_) | CommandError::BundleBroken { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

pub(crate) fn command_failed(rt: &Runtime, p: &P, e: &CommandError) -> Response {
    match e {
        CommandError::InstanceNotFound(_) | CommandError::RecordNotFound(_) => not_found(rt, p),
        CommandError::Rejected(Rejection::Forbidden(_)) => message(rt, p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden")),
        other => message(rt, p, command_status(other), &other.to_string()),
    }
}

pub async fn start_submit(State(rt): Rt, p: P, Path(workflow): Path<String>, axum::Form(pairs): axum::Form<Vec<(String, String)>>) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    let bundle = rt.bundle();
    let Some(wf) = bundle.workflow(&workflow).filter(|w| may_start(w, &p.viewer.actor)) else { return not_found(&rt, &p) };
    let form = wf.start.form.as_ref().and_then(|f| bundle.form(&f.value));
    let fields: &[FieldDef] = form.map_or(&[], |f| &f.def.fields);
    let data = formview::data_from(fields, &posted, "", &display::zone(&bundle));
    let key = posted.get("_key").and_then(|v| v.first()).filter(|k| !k.is_empty()).map(|k| format!("web-{k}"));
    let opts = CommandOptions { lang: p.lang, idempotency_key: key, expected_version: None };
    match rt.start(&workflow, &Value::Object(data.clone()), &p.viewer.actor, &opts).await {
        Ok(i) => Redirect::to(&format!("/i/{}?ok=1", i.id)).into_response(),
        Err(e) => {
            let Filled { data, errors, notice } = Filled::failed(data, &e);
            form_page(
                &rt,
                &p,
                command_status(&e),
                FormPage {
                    title: wf.title.get(p.lang.code(), &wf.name).to_string(),
                    subtitle: wf.description.get(p.lang.code(), "").to_string(),
                    action: format!("/start/{workflow}"),
                    back: "/".into(),
                    fields,
                    data,
                    errors,
                    notice,
                    version: None,
                    submit: texts::t(p.lang, "submit").to_string(),
                    via: String::new(),
                },
            )
        }
    }
}

#[derive(Deserialize)]
pub struct OkQuery {
    ok: Option<String>,
}

/// Every field of the workflow's forms, start form first, for showing data.
fn workflow_fields<'b>(bundle: &'b Bundle, wf: &WorkflowDef) -> Vec<&'b FieldDef> {
    let names = wf.start.form.iter().chain(wf.transitions.iter().filter_map(|t| t.form.as_ref()));
    names.filter_map(|n| bundle.form(&n.value)).flat_map(|f| f.def.fields.iter()).collect()
}

pub async fn instance(State(rt): Rt, p: P, Path(id): Path<String>, Query(q): Query<OkQuery>) -> Response {
    let actor = p.viewer.actor.clone();
    let lookup = id.clone();
    let (i, history) = match read_or_page(&rt, &p, move |rt| rt.instance_for(&lookup, &actor).and_then(|i| Ok((rt.history_for(&lookup, &actor)?, i)))).await {
        Ok((h, i)) => (i, h),
        Err(r) => return r,
    };
    let bundle = match rt.bundle_for_async(&i.bundle_version).await {
        Ok(b) => b,
        Err(e) => return command_failed(&rt, &p, &e),
    };
    let Some(wf) = bundle.workflow(&i.workflow) else { return not_found(&rt, &p) };
    let lang = p.lang;
    let tz = display::zone(&bundle);
    let now = display::runtime_now(&rt);
    let fields = workflow_fields(&bundle, wf);
    let via = format!("instance={}", i.id);
    let rows = display::data_rows(&rt, &p.viewer.actor, &bundle, &fields, &i.data, lang, &via);
    let field_by_name: BTreeMap<&str, &FieldDef> = fields.iter().rev().map(|f| (f.name.as_str(), *f)).collect();
    let timeline: Vec<Value> = history
        .iter()
        .rev()
        .map(|e| {
            let who = if e.kind == flowform_core::EventKind::Timer { texts::t(lang, "timer").to_string() } else { rt.display_name(&e.actor) };
            let what = match (&e.kind, &e.transition) {
                (flowform_core::EventKind::Started, _) => texts::t(lang, "started_by").to_string(),
                (_, Some(t)) => wf.transitions.iter().find(|d| &d.name == t).map_or_else(|| t.clone(), |d| d.label.get(lang.code(), &d.name).to_string()),
                _ => String::new(),
            };
            let (to_label, to_color) = display::state(&bundle, &i.workflow, &e.to_state, lang);
            let changes: Vec<Value> = e
                .changes
                .iter()
                .filter_map(|(k, c)| {
                    let (label, after) = match k.as_str() {
                        "assignment.team" => {
                            (texts::t(lang, "team").to_string(), c.after.as_str().map(|t| display::team(&rt, &bundle, t, lang)).unwrap_or_default())
                        }
                        "assignment.assignee" => (texts::t(lang, "assignee").to_string(), c.after.as_str().map(|a| rt.display_name(a)).unwrap_or_default()),
                        other => {
                            let f = field_by_name.get(other)?;
                            (f.label.get(lang.code(), &f.name).to_string(), display::plain(&rt, &p.viewer.actor, &bundle, f, &c.after, lang))
                        }
                    };
                    (!after.is_empty()).then(|| json!({"label": label, "after": after}))
                })
                .collect();
            json!({
                "who": who,
                "what": what,
                "when": display::relative(e.at, &tz, now, lang),
                "at": display::absolute(e.at, &tz, now, lang),
                "state": to_label,
                "color": to_color,
                "changes": changes,
            })
        })
        .collect();
    let available = rt.available_transitions(&i, &p.viewer.actor);
    let actions: Vec<Value> = available
        .iter()
        .map(|t| {
            json!({
                "label": t.label.get(lang.code(), &t.name),
                "url": format!("/i/{}/t/{}", i.id, t.name),
                "has_form": t.form.is_some(),
            })
        })
        .collect();
    // Workflows that start from this one (their start form refers to its kind).
    let linked: Vec<Value> = match (&wf.record, is_final(&bundle, &i)) {
        (Some(kind), false) => qr_workflows(&rt.bundle(), kind, &p.viewer.actor, lang)
            .into_iter()
            .map(|w| {
                json!({
                    "title": w["title"],
                    "url": format!("/start/{}?{}={}", w["workflow"].as_str().unwrap_or(""), w["field"].as_str().unwrap_or(""), i.id),
                })
            })
            .collect(),
        _ => Vec::new(),
    };
    // The instances linked to this one (`starts:`) that the viewer may read.
    let related: Vec<Value> = i
        .parent
        .iter()
        .map(|id| (id, true))
        .chain(i.children.iter().map(|id| (id, false)))
        .filter_map(|(id, is_parent)| {
            let other = rt.instance_for(id, &p.viewer.actor).ok()?;
            let (label, color) = display::state(&bundle, &other.workflow, &other.state, lang);
            let title = bundle.workflow(&other.workflow).map_or_else(|| other.workflow.clone(), |w| w.title.get(lang.code(), &w.name).to_string());
            Some(json!({"url": format!("/i/{}", other.id), "number": display::number(&other, &tz), "workflow": title, "state": label, "color": color, "parent": is_parent}))
        })
        .collect();
    // Deadlines across states: a countdown while the clock runs, else how they ended.
    let deadlines: Vec<Value> = i
        .deadlines
        .iter()
        .filter_map(|run| {
            let def = wf.deadlines.iter().find(|d| d.name == run.name)?;
            let (text, late) = match (&run.met_at, &run.breached_at, &run.due_at) {
                (Some(_), None, _) => (texts::t(lang, "deadline_met").to_string(), false),
                (Some(_), Some(_), _) => (texts::t(lang, "deadline_met_late").to_string(), true),
                (None, Some(_), _) => (texts::t(lang, "deadline_missed").to_string(), true),
                (None, None, Some(due)) => display::countdown(*due, now, lang),
                (None, None, None) => (texts::t(lang, "deadline_paused").to_string(), false),
            };
            Some(json!({"label": def.label.get(lang.code(), &def.name), "text": text, "late": late}))
        })
        .collect();
    let (state_label, color) = display::state(&bundle, &i.workflow, &i.state, lang);
    let due = i.due_at.filter(|_| !is_final(&bundle, &i)).map(|d| display::countdown(d, now, lang));
    let data = json!({
        "linked": linked,
        "related": related,
        "deadlines": deadlines,
        "number": display::number(&i, &tz),
        "workflow": wf.title.get(lang.code(), &wf.name),
        "summary": display::summary(&rt, &p.viewer.actor, &bundle, &i, lang),
        "state": state_label,
        "color": color,
        "due": due.as_ref().map(|d| d.0.clone()),
        "overdue": due.as_ref().is_some_and(|d| d.1) || i.overdue,
        "requester": rt.display_name(&i.requester),
        "created": display::absolute(i.created_at, &tz, now, lang),
        "assignee": i.assignment.assignee.as_deref().map(|a| rt.display_name(a)),
        "team": i.assignment.team.as_deref().map(|t| display::team(&rt, &bundle, t, lang)),
        "rows": rows,
        "timeline": timeline,
        "actions": actions,
        "key": new_key(),
        "version": i.version,
        "saved": q.ok.is_some(),
    });
    page(StatusCode::OK, "instance", merge(base(&rt, &p, &display::number(&i, &tz), "tasks"), data))
}

async fn transition_context(rt: &Arc<Runtime>, p: &P, id: &str, transition: &str) -> Result<(Instance, Arc<Bundle>), Response> {
    let actor = p.viewer.actor.clone();
    let lookup = id.to_string();
    let i = match blocking(rt, move |rt| rt.instance_for(&lookup, &actor)).await? {
        Ok(i) => i,
        Err(e) => return Err(command_failed(rt, p, &e)),
    };
    let bundle = rt.bundle_for_async(&i.bundle_version).await.map_err(|e| command_failed(rt, p, &e))?;
    if bundle.workflow(&i.workflow).and_then(|w| w.transitions.iter().find(|t| t.name == transition)).is_none() {
        return Err(not_found(rt, p));
    }
    Ok((i, bundle))
}

fn transition_page(rt: &Runtime, p: &P, status: StatusCode, bundle: &Bundle, i: &Instance, transition: &str, filled: Filled) -> Response {
    let Filled { data, errors, notice } = filled;
    let Some(wf) = bundle.workflow(&i.workflow) else { return not_found(rt, p) };
    let Some(t) = wf.transitions.iter().find(|t| t.name == transition) else { return not_found(rt, p) };
    let fields: &[FieldDef] = t.form.as_ref().and_then(|f| bundle.form(&f.value)).map_or(&[], |f| &f.def.fields);
    let tz = display::zone(bundle);
    form_page(
        rt,
        p,
        status,
        FormPage {
            title: t.label.get(p.lang.code(), &t.name).to_string(),
            subtitle: format!("{} · {}", display::number(i, &tz), display::summary(rt, &p.viewer.actor, bundle, i, p.lang)),
            action: format!("/i/{}/t/{transition}", i.id),
            back: format!("/i/{}", i.id),
            fields,
            data,
            errors,
            notice,
            version: Some(i.version),
            submit: t.label.get(p.lang.code(), &t.name).to_string(),
            via: format!("instance={}", i.id),
        },
    )
}

pub async fn transition_form(State(rt): Rt, p: P, Path((id, transition)): Path<(String, String)>) -> Response {
    let (i, bundle) = match transition_context(&rt, &p, &id, &transition).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !rt.available_transitions(&i, &p.viewer.actor).iter().any(|t| t.name == transition) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    transition_page(&rt, &p, StatusCode::OK, &bundle, &i, &transition, Filled::empty())
}

pub async fn transition_submit(
    State(rt): Rt,
    p: P,
    Path((id, transition)): Path<(String, String)>,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    let (i, bundle) = match transition_context(&rt, &p, &id, &transition).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    let fields: Vec<FieldDef> = bundle
        .workflow(&i.workflow)
        .and_then(|w| w.transitions.iter().find(|t| t.name == transition))
        .and_then(|t| t.form.as_ref())
        .and_then(|f| bundle.form(&f.value))
        .map_or_else(Vec::new, |f| f.def.fields.clone());
    let data = formview::data_from(&fields, &posted, "", &display::zone(&bundle));
    let key = posted.get("_key").and_then(|v| v.first()).filter(|k| !k.is_empty()).map(|k| format!("web-{k}"));
    let expected_version = posted.get("_version").and_then(|v| v.first()).and_then(|v| v.parse().ok());
    let opts = CommandOptions { lang: p.lang, idempotency_key: key, expected_version };
    match rt.transition(&id, &transition, &Value::Object(data.clone()), &p.viewer.actor, &opts).await {
        Ok(i) => Redirect::to(&format!("/i/{}?ok=1", i.id)).into_response(),
        Err(CommandError::StaleVersion { .. }) => {
            // Someone else moved it: show the form again on the current version, input kept.
            let actor = p.viewer.actor.clone();
            let current = match read_or_page(&rt, &p, move |rt| rt.instance_for(&id, &actor)).await {
                Ok(c) => c,
                Err(r) => return r,
            };
            if !rt.available_transitions(&current, &p.viewer.actor).iter().any(|t| t.name == transition) {
                return Redirect::to(&format!("/i/{}", current.id)).into_response();
            }
            let notice = Some(texts::t(p.lang, "stale").to_string());
            transition_page(&rt, &p, StatusCode::CONFLICT, &bundle, &current, &transition, Filled { data, errors: Errors::new(), notice })
        }
        Err(e) => transition_page(&rt, &p, command_status(&e), &bundle, &i, &transition, Filled::failed(data, &e)),
    }
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    state: Option<String>,
    team: Option<String>,
    mine: Option<String>,
    overdue: Option<String>,
    cursor: Option<String>,
}

pub async fn list(State(rt): Rt, p: P, Path(workflow): Path<String>, Query(q): Query<ListQuery>) -> Response {
    let bundle = rt.bundle();
    let Some(wf) = bundle.workflow(&workflow) else { return not_found(&rt, &p) };
    let lang = p.lang;
    let visibility = rt.visibility(&p.viewer.actor);
    let filter = InstanceFilter {
        workflow: Some(workflow.clone()),
        state: q.state.clone().filter(|s| !s.is_empty()),
        team: q.team.clone().filter(|s| !s.is_empty()),
        assignee: q.mine.as_deref().filter(|m| *m == "1").map(|_| p.viewer.actor.id.clone()),
        overdue: q.overdue.as_deref().filter(|o| *o == "1").map(|_| true),
        before: q.cursor.clone().filter(|s| !s.is_empty()),
        limit: 30,
        visibility: visibility.clone(),
    };
    let wf_name = workflow.clone();
    let read = blocking(&rt, move |rt| -> Result<_, CommandError> {
        let page = rt.instances(&filter)?;
        let counts = match &visibility {
            None => rt.store().instance_counts(Some(&wf_name))?,
            Some(v) => rt.store().instance_counts_visible(Some(&wf_name), v)?,
        };
        Ok((page, counts))
    })
    .await;
    let (found, counts) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return command_failed(&rt, &p, &e),
        Err(r) => return r,
    };
    let mut per_state: BTreeMap<&str, u64> = BTreeMap::new();
    for c in &counts {
        *per_state.entry(c.state.as_str()).or_default() += c.count;
    }
    let total: u64 = per_state.values().sum();
    let keep = |extra: &str| {
        let mut parts = Vec::new();
        if let Some(t) = q.team.as_deref().filter(|s| !s.is_empty()) {
            parts.push(format!("team={}", encode(t)));
        }
        if q.mine.as_deref() == Some("1") {
            parts.push("mine=1".into());
        }
        if q.overdue.as_deref() == Some("1") {
            parts.push("overdue=1".into());
        }
        if !extra.is_empty() {
            parts.push(extra.to_string());
        }
        if parts.is_empty() { format!("/list/{workflow}") } else { format!("/list/{workflow}?{}", parts.join("&")) }
    };
    let current_state = q.state.clone().unwrap_or_default();
    let mut tabs = vec![json!({"label": texts::t(lang, "all"), "count": total, "url": keep(""), "active": current_state.is_empty(), "color": "#1a73e8"})];
    for s in &wf.states {
        let (label, color) = display::state(&bundle, &workflow, &s.name, lang);
        tabs.push(json!({
            "label": label,
            "count": per_state.get(s.name.as_str()).copied().unwrap_or(0),
            "url": keep(&format!("state={}", encode(&s.name))),
            "active": current_state == s.name,
            "color": color,
        }));
    }
    let state_part = if current_state.is_empty() { String::new() } else { format!("state={}", encode(&current_state)) };
    let next = found
        .next
        .as_ref()
        .map(|n| keep(&[state_part.clone(), format!("cursor={}", encode(n))].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("&")));
    let teams: Vec<Value> = bundle
        .model
        .teams
        .values()
        .map(|t| json!({"value": t.name, "label": t.label.get(lang.code(), &t.name), "selected": q.team.as_deref() == Some(t.name.as_str())}))
        .collect();
    let data = json!({
        "heading": wf.title.get(lang.code(), &wf.name),
        "workflow": workflow,
        "tabs": tabs,
        "items": found.items.iter().map(|i| card(&rt, &p.viewer.actor, &bundle, i, lang)).collect::<Vec<_>>(),
        "next": next,
        "teams": teams,
        "state": current_state,
        "mine": q.mine.as_deref() == Some("1"),
        "overdue_only": q.overdue.as_deref() == Some("1"),
        "can_start": may_start(wf, &p.viewer.actor),
        "board": false,
    });
    page(StatusCode::OK, "list", merge(base(&rt, &p, wf.title.get(lang.code(), &wf.name), "tasks"), data))
}

/// Open work nobody has taken, and overdue work: what whoever dispatches acts on.
pub async fn board(State(rt): Rt, p: P) -> Response {
    let actor = p.viewer.actor.clone();
    let read = blocking(&rt, move |rt| -> Result<_, CommandError> {
        let open = open_instances(rt, &actor, None)?;
        let mut unassigned: Vec<Instance> = open.iter().filter(|i| i.assignment.assignee.is_none()).cloned().collect();
        let mut overdue: Vec<Instance> = open.into_iter().filter(|i| i.overdue).collect();
        by_deadline(&mut unassigned);
        by_deadline(&mut overdue);
        // What a screen shows; the lists per workflow have the rest.
        unassigned.truncate(30);
        overdue.truncate(30);
        Ok((unassigned, overdue))
    })
    .await;
    let (unassigned, overdue) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return command_failed(&rt, &p, &e),
        Err(r) => return r,
    };
    let bundle = rt.bundle();
    let with_actions = |items: &[Instance]| -> Vec<Value> {
        items
            .iter()
            .map(|i| {
                let mut c = card(&rt, &p.viewer.actor, &bundle, i, p.lang);
                let actions: Vec<Value> = rt
                    .available_transitions(i, &p.viewer.actor)
                    .iter()
                    .filter(|t| t.form.is_some())
                    .map(|t| json!({"label": t.label.get(p.lang.code(), &t.name), "url": format!("/i/{}/t/{}", i.id, t.name)}))
                    .collect();
                c["actions"] = json!(actions);
                c
            })
            .collect()
    };
    let data = json!({"unassigned": with_actions(&unassigned), "overdue": with_actions(&overdue)});
    page(StatusCode::OK, "list", merge(base(&rt, &p, texts::t(p.lang, "board"), "tasks"), merge(board_shape(p.lang), data)))
}

/// The board uses the list template with its own sections.
fn board_shape(lang: Lang) -> Value {
    json!({"heading": texts::t(lang, "board"), "workflow": "", "tabs": [], "items": [], "next": null, "teams": [], "state": "", "mine": false, "overdue_only": false, "can_start": false, "board": true})
}

pub async fn inbox(State(rt): Rt, p: P) -> Response {
    let user = p.viewer.actor.id.clone();
    let items = match read_or_page(&rt, &p, move |rt| rt.inbox(&user)).await {
        Ok(items) => items,
        Err(r) => return r,
    };
    let bundle = rt.bundle();
    let tz = display::zone(&bundle);
    let now = display::runtime_now(&rt);
    let list: Vec<Value> = items
        .iter()
        .rev()
        .take(200)
        .map(|n| {
            json!({
                "seq": n.seq,
                "title": n.title,
                "body": n.body,
                "when": display::relative(n.at, &tz, now, p.lang),
                "read": n.read,
                "url": n.instance_id.as_ref().map(|i| format!("/i/{i}")),
            })
        })
        .collect();
    page(StatusCode::OK, "inbox", merge(base(&rt, &p, texts::t(p.lang, "inbox"), "me"), json!({"items": list})))
}

pub async fn mark_read(State(rt): Rt, p: P, Path(seq): Path<u64>, axum::Form(pairs): axum::Form<Vec<(String, String)>>) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    let user = p.viewer.actor.id.clone();
    match blocking(&rt, move |rt| rt.mark_read(&user, seq)).await {
        Ok(Ok(())) => Redirect::to("/inbox").into_response(),
        Ok(Err(e)) => command_failed(&rt, &p, &e),
        Err(r) => r,
    }
}

pub async fn me(State(rt): Rt, p: P) -> Response {
    let bundle = rt.bundle();
    let a = &p.viewer.actor;
    let readable_types: Vec<Value> = bundle
        .model
        .record_types
        .values()
        .filter(|rt_def| rt_def.access.allows(RecordOp::Read, a.roles.iter().map(String::as_str)))
        .map(|t| json!({"url": format!("/records/{}", t.name), "title": t.title.get(p.lang.code(), &t.name)}))
        .collect();
    let ledgers: Vec<Value> = bundle
        .model
        .ledgers
        .values()
        .filter(|l| may_read_ledger(l, a))
        .map(|l| json!({"url": format!("/ledgers/{}", l.name), "title": l.title.get(p.lang.code(), &l.name)}))
        .collect();
    let data = json!({
        "name": a.name,
        "roles": a.roles.iter().map(|r| display::role(&bundle, r, p.lang)).collect::<Vec<_>>().join(" · "),
        "teams": a.teams.iter().map(|t| display::team(&rt, &bundle, t, p.lang)).collect::<Vec<_>>().join(" · "),
        "record_types": readable_types,
        "ledgers": ledgers,
        "has_dashboards": !rt.dashboards_for(a).is_empty(),
        "is_en": p.lang == Lang::En,
    });
    page(StatusCode::OK, "me", merge(base(&rt, &p, texts::t(p.lang, "me"), "me"), data))
}

fn may_read_ledger(l: &flowform_model::LedgerDef, a: &Actor) -> bool {
    l.readable_by(a.roles.iter().map(String::as_str))
}

pub async fn set_lang(State(rt): Rt, p: P, Path(code): Path<String>, axum::Form(pairs): axum::Form<Vec<(String, String)>>) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    let value = if code == "en" { "en" } else { "zh-CN" };
    let mut r = Redirect::to("/me").into_response();
    if let Ok(v) = format!("{LANG_COOKIE}={value}; Path=/; Max-Age=31536000; SameSite=Lax").parse() {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

fn may_records(bundle: &Bundle, record_type: &str, a: &Actor, op: RecordOp) -> bool {
    bundle.model.record_types.get(record_type).is_some_and(|t| t.access.allows(op, a.roles.iter().map(String::as_str)))
}

pub struct PickQuery {
    q: String,
    field: String,
    /// Send each record's fields (`data-fill`): other fields take values from it.
    fill: bool,
}

/// Search results for a record picker (an htmx fragment). The search box
/// of field `F` sends itself as `_q_F`; `field` names the field.
pub async fn pick(State(rt): Rt, p: P, Path(record_type): Path<String>, Query(params): Query<BTreeMap<String, String>>) -> Response {
    let q = PickQuery {
        q: params.iter().find(|(k, _)| k.as_str() == "q" || k.starts_with("_q_")).map(|(_, v)| v.clone()).unwrap_or_default(),
        field: params.get("field").cloned().unwrap_or_default(),
        fill: params.get("fill").is_some_and(|f| f == "1"),
    };
    let bundle = rt.bundle();
    if !bundle.model.record_types.contains_key(&record_type) && bundle.model.workflows.values().any(|w| w.record.as_deref() == Some(record_type.as_str())) {
        return pick_instances(&rt, &p, &record_type, &q).await;
    }
    if !may_records(&bundle, &record_type, &p.viewer.actor, RecordOp::Read) {
        return fragment("pick", &json!({"items": [], "field": q.field, "t": texts::all(p.lang)}));
    }
    // The field's `where` (sent by its picker): only records that fit are offered.
    let filter = params.get("where").and_then(|w| flowform_model::Condition::parse(w).ok());
    let limit = if filter.is_some() { 60 } else { 15 };
    let query = flowform_runtime::records::RecordQuery { q: Some(q.q.trim().to_string()).filter(|s| !s.is_empty()), limit, ..Default::default() };
    let found = match blocking(&rt, move |rt| rt.list_records(&record_type, &query)).await {
        Ok(Ok(r)) => r,
        _ => return fragment("pick", &json!({"items": [], "field": q.field, "t": texts::all(p.lang)})),
    };
    let items: Vec<Value> = found
        .items
        .iter()
        .filter(|r| filter.as_ref().is_none_or(|c| flowform_core::records::matches_filter(c, r)))
        .take(15)
        .map(|r| json!({"id": r.id, "title": r.title, "second": second_line(&bundle, r, p.lang), "fill": if q.fill { json!(Value::Object(r.data.clone()).to_string()) } else { Value::Null }}))
        .collect();
    fragment("pick", &json!({"items": items, "field": q.field, "t": texts::all(p.lang)}))
}

/// Open instances the viewer may read of the workflows whose `record:` is
/// `kind`, matching the search in their number or summary: what a `ref`
/// field to a workflow's instances offers.
async fn pick_instances(rt: &Arc<Runtime>, p: &P, kind: &str, q: &PickQuery) -> Response {
    let (actor, kind_owned) = (p.viewer.actor.clone(), kind.to_string());
    let open = match blocking(rt, move |rt| open_instances(rt, &actor, None)).await {
        Ok(Ok(open)) => open,
        _ => Vec::new(),
    };
    let bundle = rt.bundle();
    let tz = display::zone(&bundle);
    let needle = q.q.trim().to_lowercase();
    let mut found: Vec<&Instance> =
        open.iter().filter(|i| bundle.workflow(&i.workflow).and_then(|w| w.record.as_deref()) == Some(kind_owned.as_str())).collect();
    // Mine first, then newest.
    found.sort_by_key(|i| (i.assignment.assignee.as_deref() != Some(p.viewer.actor.id.as_str()), std::cmp::Reverse(i.id.clone())));
    let items: Vec<Value> = found
        .into_iter()
        .map(|i| (display::number(i, &tz), display::summary(rt, &p.viewer.actor, &bundle, i, p.lang), i))
        .filter(|(n, s, _)| needle.is_empty() || n.to_lowercase().contains(&needle) || s.to_lowercase().contains(&needle))
        .take(15)
        .map(|(n, s, i)| json!({"id": i.id, "title": n, "second": s, "fill": null}))
        .collect();
    fragment("pick", &json!({"items": items, "field": q.field, "t": texts::all(p.lang)}))
}

/// A record's second line in pickers and lists: its id and the titles of
/// the records it refers to (e.g. where it is).
fn second_line(bundle: &Bundle, r: &flowform_core::records::Record, lang: Lang) -> String {
    let mut parts = vec![r.id.clone()];
    if let Some(form) = bundle.model.record_types.get(&r.record_type).and_then(|t| bundle.form(&t.form.value)) {
        for f in form.def.fields.iter().filter(|f| f.field_type == flowform_model::FieldType::Enum).take(1) {
            if let Some(v) = r.data.get(&f.name).and_then(Value::as_str) {
                parts.push(display::option_label(f, v, lang));
            }
        }
    }
    parts.join(" · ")
}

/// Record types live on the "me" page, with the ledgers.
pub async fn record_types() -> Response {
    Redirect::to("/me").into_response()
}

#[derive(Deserialize, Default)]
pub struct RecordsQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    archived: String,
}

pub async fn records(State(rt): Rt, p: P, Path(record_type): Path<String>, Query(q): Query<RecordsQuery>) -> Response {
    let bundle = rt.bundle();
    let Some(def) = bundle.model.record_types.get(&record_type) else { return not_found(&rt, &p) };
    if !may_records(&bundle, &record_type, &p.viewer.actor, RecordOp::Read) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    // A tree type without a search is shown whole (up to 500), each record under its parent.
    let as_tree = def.parent.is_some() && q.q.trim().is_empty();
    let query = flowform_runtime::records::RecordQuery {
        q: Some(q.q.trim().to_string()).filter(|s| !s.is_empty()),
        limit: if as_tree { 500 } else { 50 },
        cursor: Some(q.cursor.clone()).filter(|s| !s.is_empty()),
        include_archived: q.archived == "1",
        sort: def.parent.as_ref().map(|_| "title".to_string()),
        ..Default::default()
    };
    let name = record_type.clone();
    let mut found = match read_or_page(&rt, &p, move |rt| rt.list_records(&name, &query)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    if let (true, Some(parent)) = (as_tree, &def.parent) {
        // Depth first: roots (no parent, or a parent not on the page), then their children, by title.
        let ids: std::collections::HashSet<String> = found.items.iter().map(|r| r.id.clone()).collect();
        let parent_of = |r: &flowform_core::records::Record| r.data.get(&parent.value).and_then(Value::as_str).filter(|p| ids.contains(*p)).map(str::to_string);
        let mut children: BTreeMap<Option<String>, Vec<flowform_core::records::Record>> = BTreeMap::new();
        for r in std::mem::take(&mut found.items) {
            children.entry(parent_of(&r)).or_default().push(r);
        }
        let mut ordered = Vec::new();
        let mut stack: Vec<flowform_core::records::Record> = children.remove(&None).unwrap_or_default().into_iter().rev().collect();
        while let Some(r) = stack.pop() {
            if let Some(kids) = children.remove(&Some(r.id.clone())) {
                stack.extend(kids.into_iter().rev());
            }
            ordered.push(r);
        }
        // Whatever a cycle left out still shows, at the end.
        ordered.extend(children.into_values().flatten());
        found.items = ordered;
    }
    // A tree (a type with a parent field): indent each record under its parent.
    let depth_of = |r: &flowform_core::records::Record| -> usize {
        let Some(parent) = &def.parent else { return 0 };
        let mut depth = 0;
        let mut at = r.data.get(&parent.value).and_then(Value::as_str).map(str::to_string);
        while let Some(id) = at.take() {
            depth += 1;
            if depth > 8 {
                break;
            }
            at = found.items.iter().find(|x| x.id == id).and_then(|x| x.data.get(&parent.value)).and_then(Value::as_str).map(str::to_string);
        }
        depth
    };
    let items: Vec<Value> = found
        .items
        .iter()
        .map(|r| {
            json!({
                "url": format!("/records/{record_type}/{}", encode(&r.id)),
                "title": r.title,
                "second": second_line(&bundle, r, p.lang),
                "archived": r.archived,
                "indent": format!("d{}", depth_of(r).min(6)),
            })
        })
        .collect();
    let next = found.next_cursor.as_ref().map(|c| format!("/records/{record_type}?q={}&cursor={}", encode(&q.q), encode(c)));
    let data = json!({
        "heading": def.title.get(p.lang.code(), &def.name),
        "record_type": record_type,
        "q": q.q,
        "items": items,
        "total": found.total,
        "next": next,
        "can_create": may_records(&bundle, &record_type, &p.viewer.actor, RecordOp::Create),
        "has_qr": !qr_workflows(&bundle, &record_type, &p.viewer.actor, p.lang).is_empty(),
    });
    page(StatusCode::OK, "records", merge(base(&rt, &p, def.title.get(p.lang.code(), &def.name), "me"), data))
}

/// Workflows whose start form refers to records of this type: a QR label on
/// such a record opens them with the reference filled in.
fn qr_workflows(bundle: &Bundle, record_type: &str, actor: &Actor, lang: Lang) -> Vec<Value> {
    bundle
        .model
        .workflows
        .values()
        .filter(|w| may_start(w, actor))
        .filter_map(|w| {
            let form = bundle.form(&w.start.form.as_ref()?.value)?;
            let field = form.def.fields.iter().find(|f| f.record.as_ref().is_some_and(|r| r.value == record_type))?;
            Some(json!({"workflow": w.name, "field": field.name, "title": w.title.get(lang.code(), &w.name)}))
        })
        .collect()
}

pub async fn record(State(rt): Rt, p: P, Path((record_type, id)): Path<(String, String)>) -> Response {
    let bundle = rt.bundle();
    let Some(def) = bundle.model.record_types.get(&record_type) else { return not_found(&rt, &p) };
    if !may_records(&bundle, &record_type, &p.viewer.actor, RecordOp::Read) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let (name, rid, actor) = (record_type.clone(), id.clone(), p.viewer.actor.clone());
    let (r, history) = match read_or_page(&rt, &p, move |rt| rt.record(&name, &rid).and_then(|r| Ok((rt.record_history(&name, &rid, &actor)?, r)))).await {
        Ok((h, r)) => (r, h),
        Err(r) => return r,
    };
    let fields: Vec<&FieldDef> = bundle.form(&def.form.value).map(|f| f.def.fields.iter().collect()).unwrap_or_default();
    let via = format!("record={record_type}/{}", encode(&r.id));
    let rows = display::data_rows(&rt, &p.viewer.actor, &bundle, &fields, &r.data, p.lang, &via);
    let tz = display::zone(&bundle);
    let now = display::runtime_now(&rt);
    let timeline: Vec<Value> = history
        .iter()
        .rev()
        .take(50)
        .map(|e| {
            let who = e.get("actor").and_then(Value::as_str).map(|a| rt.display_name(a)).unwrap_or_default();
            let at = e.get("at").and_then(Value::as_str).map(|a| display::relative_text(a, &tz, now, p.lang)).unwrap_or_default();
            let kind = e.get("kind").and_then(Value::as_str).unwrap_or("");
            if e.get("source").and_then(Value::as_str) == Some("instance") {
                // Work on this record: an event of an instance that refers to it.
                let wf = e.get("workflow").and_then(Value::as_str).and_then(|w| bundle.workflow(w));
                let step = match (wf, e.get("transition").and_then(Value::as_str)) {
                    (Some(w), Some(t)) => {
                        w.transitions.iter().find(|d| d.name == t).map_or_else(|| t.to_string(), |d| d.label.get(p.lang.code(), t).to_string())
                    }
                    _ => texts::t(p.lang, "started_by").to_string(),
                };
                let what = format!("{} · {step}", wf.map_or_else(String::new, |w| w.title.get(p.lang.code(), &w.name).to_string()));
                let url = e.get("instance_id").and_then(Value::as_str).map(|i| format!("/i/{i}"));
                return json!({"who": who, "when": at, "what": what, "url": url});
            }
            // A change an instance made (`update:`) links to it.
            let url = e.get("cause").and_then(Value::as_str).map(|i| format!("/i/{i}"));
            json!({"who": who, "when": at, "what": kind_label(kind, p.lang), "url": url})
        })
        .collect();
    let starts: Vec<Value> = qr_workflows(&bundle, &record_type, &p.viewer.actor, p.lang)
        .into_iter()
        .map(|w| {
            json!({
                "title": w["title"],
                "url": format!("/start/{}?{}={}", w["workflow"].as_str().unwrap_or(""), w["field"].as_str().unwrap_or(""), encode(&r.id)),
            })
        })
        .collect();
    let data = json!({
        "heading": r.title,
        "type_title": def.title.get(p.lang.code(), &def.name),
        "list_url": format!("/records/{record_type}"),
        "rows": rows,
        "timeline": timeline,
        "archived": r.archived,
        "starts": starts,
        "qr": if starts.is_empty() { Value::Null } else { json!(format!("/records/{record_type}/{}/qr.svg", encode(&r.id))) },
        "can_edit": may_records(&bundle, &record_type, &p.viewer.actor, RecordOp::Update),
        "can_archive": may_records(&bundle, &record_type, &p.viewer.actor, RecordOp::Archive),
        "archive_url": format!("/records/{record_type}/{}/archive", encode(&r.id)),
        "edit_url": format!("/records/{record_type}/{}/edit", encode(&r.id)),
    });
    page(StatusCode::OK, "record", merge(base(&rt, &p, &r.title, "me"), data))
}

fn kind_label(kind: &str, lang: Lang) -> &'static str {
    match (kind, lang) {
        ("created", Lang::En) => "created",
        ("created", _) => "创建",
        ("archived", Lang::En) => "archived",
        ("archived", _) => "停用",
        ("restored", Lang::En) => "restored",
        ("restored", _) => "恢复",
        (_, Lang::En) => "updated",
        _ => "修改",
    }
}

fn record_form_page(rt: &Runtime, p: &P, status: StatusCode, record_type: &str, id: Option<&str>, filled: Filled, version: Option<u64>) -> Response {
    let Filled { data, errors, notice } = filled;
    let bundle = rt.bundle();
    let Some(def) = bundle.model.record_types.get(record_type) else { return not_found(rt, p) };
    let Some(form) = bundle.form(&def.form.value) else { return not_found(rt, p) };
    let title = def.title.get(p.lang.code(), &def.name).to_string();
    let (action, back, heading) = match id {
        Some(id) => (
            format!("/records/{record_type}/{}/edit", encode(id)),
            format!("/records/{record_type}/{}", encode(id)),
            format!("{} · {}", texts::t(p.lang, "edit"), title),
        ),
        None => (format!("/records/{record_type}/new"), format!("/records/{record_type}"), format!("{} · {}", texts::t(p.lang, "new_record"), title)),
    };
    form_page(
        rt,
        p,
        status,
        FormPage {
            title: heading,
            subtitle: String::new(),
            action,
            back,
            fields: &form.def.fields,
            data,
            errors,
            notice,
            version,
            submit: texts::t(p.lang, "submit").to_string(),
            via: id.map_or_else(String::new, |id| format!("record={record_type}/{}", encode(id))),
        },
    )
}

pub async fn record_new(State(rt): Rt, p: P, Path(record_type): Path<String>) -> Response {
    if !may_records(&rt.bundle(), &record_type, &p.viewer.actor, RecordOp::Create) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    record_form_page(&rt, &p, StatusCode::OK, &record_type, None, Filled::empty(), None)
}

fn record_fields(bundle: &Bundle, record_type: &str) -> Vec<FieldDef> {
    bundle.model.record_types.get(record_type).and_then(|d| bundle.form(&d.form.value)).map_or_else(Vec::new, |f| f.def.fields.clone())
}

pub async fn record_create(State(rt): Rt, p: P, Path(record_type): Path<String>, axum::Form(pairs): axum::Form<Vec<(String, String)>>) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    let bundle = rt.bundle();
    if !may_records(&bundle, &record_type, &p.viewer.actor, RecordOp::Create) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let data = formview::data_from(&record_fields(&bundle, &record_type), &posted, "", &display::zone(&bundle));
    let (name, input, actor, lang) = (record_type.clone(), Value::Object(data.clone()), p.viewer.actor.clone(), p.lang);
    match blocking(&rt, move |rt| rt.create_record(&name, &input, &actor, lang)).await {
        Ok(Ok(r)) => Redirect::to(&format!("/records/{record_type}/{}", encode(&r.id))).into_response(),
        Ok(Err(e)) => record_form_page(&rt, &p, command_status(&e), &record_type, None, Filled::failed(data, &e), None),
        Err(r) => r,
    }
}

pub async fn record_edit(State(rt): Rt, p: P, Path((record_type, id)): Path<(String, String)>) -> Response {
    if !may_records(&rt.bundle(), &record_type, &p.viewer.actor, RecordOp::Update) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let (name, rid) = (record_type.clone(), id.clone());
    match blocking(&rt, move |rt| rt.record(&name, &rid)).await {
        Ok(Ok(r)) => {
            record_form_page(&rt, &p, StatusCode::OK, &record_type, Some(&id), Filled { data: r.data, errors: Errors::new(), notice: None }, Some(r.version))
        }
        Ok(Err(e)) => command_failed(&rt, &p, &e),
        Err(r) => r,
    }
}

pub async fn record_update(
    State(rt): Rt,
    p: P,
    Path((record_type, id)): Path<(String, String)>,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    let bundle = rt.bundle();
    if !may_records(&bundle, &record_type, &p.viewer.actor, RecordOp::Update) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let data = formview::data_from(&record_fields(&bundle, &record_type), &posted, "", &display::zone(&bundle));
    let version: Option<u64> = posted.get("_version").and_then(|v| v.first()).and_then(|v| v.parse().ok());
    let (name, rid, input, actor, lang) = (record_type.clone(), id.clone(), Value::Object(data.clone()), p.viewer.actor.clone(), p.lang);
    match blocking(&rt, move |rt| rt.update_record(&name, &rid, &input, version, &actor, lang)).await {
        Ok(Ok(r)) => Redirect::to(&format!("/records/{record_type}/{}", encode(&r.id))).into_response(),
        Ok(Err(e)) => {
            let mut filled = Filled::failed(data, &e);
            let mut version = version;
            if let CommandError::StaleVersion { .. } = e {
                // Someone else saved it meanwhile: the form again on the current version, input kept.
                filled.notice = Some(texts::t(p.lang, "stale").to_string());
                let (name, rid) = (record_type.clone(), id.clone());
                if let Ok(Ok(current)) = blocking(&rt, move |rt| rt.record(&name, &rid)).await {
                    version = Some(current.version);
                }
            }
            record_form_page(&rt, &p, command_status(&e), &record_type, Some(&id), filled, version)
        }
        Err(r) => r,
    }
}

fn origin(headers: &HeaderMap) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let https = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()) == Some("https");
    format!("{}://{host}", if https { "https" } else { "http" })
}

fn qr_svg(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(code.render::<qrcode::render::svg::Color>().min_dimensions(160, 160).quiet_zone(true).build())
}

/// The QR code of a record: its page, where the workflows about it start.
pub async fn qr(State(rt): Rt, p: P, headers: HeaderMap, Path((record_type, id)): Path<(String, String)>) -> Response {
    if !may_records(&rt.bundle(), &record_type, &p.viewer.actor, RecordOp::Read) {
        return StatusCode::FORBIDDEN.into_response();
    }
    let Some(svg) = qr_svg(&format!("{}/records/{record_type}/{}", origin(&headers), encode(&id))) else { return StatusCode::NOT_FOUND.into_response() };
    let mut r = svg.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("image/svg+xml"));
    r.headers_mut().insert("content-security-policy", axum::http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"));
    r.headers_mut().insert("x-content-type-options", axum::http::HeaderValue::from_static("nosniff"));
    r
}

/// A printable sheet of QR labels for the records of a type.
pub async fn labels(State(rt): Rt, p: P, Path(record_type): Path<String>) -> Response {
    let bundle = rt.bundle();
    let Some(def) = bundle.model.record_types.get(&record_type) else { return not_found(&rt, &p) };
    if !may_records(&bundle, &record_type, &p.viewer.actor, RecordOp::Read) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let name = record_type.clone();
    let query = flowform_runtime::records::RecordQuery { limit: 500, ..Default::default() };
    let found = match read_or_page(&rt, &p, move |rt| rt.list_records(&name, &query)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let items: Vec<Value> =
        found.items.iter().map(|r| json!({"title": r.title, "id": r.id, "qr": format!("/records/{record_type}/{}/qr.svg", encode(&r.id))})).collect();
    let data = json!({"heading": def.title.get(p.lang.code(), &def.name), "items": items});
    page(StatusCode::OK, "labels", merge(base(&rt, &p, texts::t(p.lang, "print_labels"), "me"), data))
}

#[derive(Deserialize, Default)]
pub struct LedgerQuery {
    /// `DIMENSION:ID`: the balances under that record of a hierarchical dimension, summed.
    #[serde(default)]
    under: String,
}

pub async fn ledger(State(rt): Rt, p: P, Path(ledger): Path<String>, Query(q): Query<LedgerQuery>) -> Response {
    let bundle = rt.bundle();
    let Some(def) = bundle.model.ledgers.get(&ledger) else { return not_found(&rt, &p) };
    if !may_read_ledger(def, &p.viewer.actor) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let under = q.under.split_once(':').map(|(d, id)| (d.to_string(), id.to_string()));
    // Dimensions whose records form a tree can be rolled up along it.
    let trees: Vec<(String, String)> = def
        .dimensions
        .iter()
        .filter(|(_, r)| bundle.model.record_types.get(&r.value).is_some_and(|t| t.parent.is_some()))
        .filter(|(_, r)| may_records(&bundle, &r.value, &p.viewer.actor, RecordOp::Read))
        .map(|(d, r)| (d.value.clone(), r.value.clone()))
        .collect();
    let (name, under_q, trees_q) = (ledger.clone(), under.clone(), trees.clone());
    let read = blocking(&rt, move |rt| -> Result<_, CommandError> {
        let rollup = under_q.is_some();
        let rows = rt.balances(&name, &[], under_q, rollup)?;
        let below = rt.below_threshold(&name)?;
        let moves = rt.store().recent_movements(&name, 30)?;
        let mut nodes = Vec::new();
        for (dim, record_type) in &trees_q {
            let page = rt.list_records(record_type, &flowform_runtime::records::RecordQuery { limit: 200, ..Default::default() })?;
            nodes.extend(page.items.into_iter().map(|r| (dim.clone(), r.id, r.title)));
        }
        Ok((rows, below, moves, nodes))
    })
    .await;
    let (rows, below, moves, nodes) = match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return command_failed(&rt, &p, &e),
        Err(r) => return r,
    };
    let lang = p.lang;
    let title_of = |dim: &str, id: &str| {
        let record_type = def.dimensions.iter().find(|(d, _)| d.value == dim).map(|(_, r)| r.value.as_str());
        display::record_title(&rt, &p.viewer.actor, record_type, id)
    };
    let dims: Vec<Value> = def
        .dimensions
        .iter()
        .map(|(d, r)| json!(bundle.model.record_types.get(&r.value).map_or(d.value.clone(), |t| t.title.get(lang.code(), &d.value).to_string())))
        .collect();
    let table: Vec<Value> = rows
        .iter()
        .map(|row| {
            let cells: Vec<Value> =
                def.dimensions.iter().map(|(d, _)| json!(row.dims.get(&d.value).map(|id| title_of(&d.value, id)).unwrap_or_default())).collect();
            json!({"cells": cells, "on_hand": row.balance.on_hand, "available": row.balance.available()})
        })
        .collect();
    let below: Vec<Value> = below
        .iter()
        .map(|b| {
            let dim = def.threshold.as_ref().map(|(d, _)| d.value.as_str()).unwrap_or("");
            let id = b.get(dim).or_else(|| b.get("id")).and_then(Value::as_str).unwrap_or("");
            json!({"title": title_of(dim, id), "available": b.get("available").cloned().unwrap_or(Value::Null), "minimum": b.get("minimum").cloned().unwrap_or(Value::Null)})
        })
        .collect();
    let tz = display::zone(&bundle);
    let now = display::runtime_now(&rt);
    let movements: Vec<Value> = moves
        .iter()
        .map(|m| {
            let what: Vec<String> = def.dimensions.iter().filter_map(|(d, _)| m.dims.get(&d.value).map(|id| title_of(&d.value, id))).collect();
            json!({
                "kind": texts::movement(lang, &m.kind),
                "what": what.join(" · "),
                "quantity": m.quantity,
                "reserved": m.reserved_delta,
                "who": rt.display_name(&m.actor),
                "when": display::relative(m.at, &tz, now, lang),
                "reason": m.reason,
                "url": m.instance_id.as_ref().map(|i| format!("/i/{i}")),
            })
        })
        .collect();
    let choices: Vec<Value> =
        nodes.iter().map(|(dim, id, title)| json!({"value": format!("{dim}:{id}"), "label": title, "selected": q.under == format!("{dim}:{id}")})).collect();
    let data = json!({
        "heading": def.title.get(lang.code(), &def.name),
        "ledger": ledger,
        "dims": dims,
        "rows": table,
        "below": below,
        "movements": movements,
        "choices": choices,
        "rolled_up": under.is_some(),
    });
    page(StatusCode::OK, "ledger", merge(base(&rt, &p, def.title.get(lang.code(), &def.name), "me"), data))
}

/// `notice`: what the last action did, and whether it went wrong.
fn admin_page(rt: &Runtime, p: &P, notice: Option<(String, bool)>) -> Response {
    let bundle = rt.bundle();
    let tz = display::zone(&bundle);
    let now = display::runtime_now(rt);
    let rejected = rt.last_rejected().map(|r| {
        json!({
            "when": display::relative(r.at, &tz, now, p.lang),
            "diagnostics": r.diagnostics.iter().map(|d| json!({"place": format!("{}:{}:{}", d.file, d.line, d.column), "code": d.code, "message": d.message, "hint": d.hint})).collect::<Vec<_>>(),
        })
    });
    let versions = rt.store().bundle_versions().unwrap_or_default();
    let dead: Vec<Value> = rt
        .outbox()
        .unwrap_or_default()
        .into_iter()
        .filter(|o| o.status == "dead")
        .take(50)
        .map(|o| json!({"seq": o.seq, "channel": o.channel, "template": o.template, "error": o.last_error, "when": display::relative(o.created_at, &tz, now, p.lang)}))
        .collect();
    let diagrams: Vec<Value> =
        bundle.model.workflows.values().map(|w| json!({"title": w.title.get(p.lang.code(), &w.name), "url": format!("/admin/diagram/{}", w.name)})).collect();
    let data = json!({
        "version": bundle.version,
        "loaded": display::relative_text(&rt.loaded_at(), &tz, now, p.lang),
        "rejected": rejected,
        "versions": versions.iter().rev().take(10).collect::<Vec<_>>(),
        "dead": dead,
        "diagrams": diagrams,
        "admin_notice": notice.as_ref().map(|n| n.0.clone()),
        "admin_notice_bad": notice.as_ref().is_some_and(|n| n.1),
    });
    page(StatusCode::OK, "admin", merge(base(rt, p, texts::t(p.lang, "admin"), "me"), data))
}

pub async fn admin(State(rt): Rt, p: P) -> Response {
    if !p.viewer.actor.has_role("admin") {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    admin_page(&rt, &p, None)
}

pub async fn admin_reload(State(rt): Rt, p: P, axum::Form(pairs): axum::Form<Vec<(String, String)>>) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    if !p.viewer.actor.has_role("admin") {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let outcome = match blocking(&rt, |rt| rt.reload()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let key = match outcome {
        flowform_runtime::reload::ReloadOutcome::Reloaded { .. } => "reloaded",
        flowform_runtime::reload::ReloadOutcome::Unchanged { .. } => "unchanged",
        _ => "rejected",
    };
    admin_page(&rt, &p, Some((texts::t(p.lang, key).to_string(), key == "rejected")))
}

/// A workflow's states and transitions as a picture (SVG): states down the
/// page in file order, each transition an arrow labelled with its name.
pub async fn diagram(State(rt): Rt, p: P, Path(workflow): Path<String>) -> Response {
    if !p.viewer.actor.has_role("admin") {
        return StatusCode::FORBIDDEN.into_response();
    }
    let bundle = rt.bundle();
    let Some(wf) = bundle.workflow(&workflow) else { return StatusCode::NOT_FOUND.into_response() };
    let mut r = crate::diagram::svg(wf, p.lang.code()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static("image/svg+xml"));
    r.headers_mut().insert("content-security-policy", axum::http::HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'"));
    r.headers_mut().insert("x-content-type-options", axum::http::HeaderValue::from_static("nosniff"));
    r
}

pub async fn admin_retry(State(rt): Rt, p: P, Path(seq): Path<u64>, axum::Form(pairs): axum::Form<Vec<(String, String)>>) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    if !p.viewer.actor.has_role("admin") {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    match blocking(&rt, move |rt| rt.retry_outbox(seq)).await {
        Ok(Ok(_)) => admin_page(&rt, &p, Some((texts::t(p.lang, "queued_again").to_string(), false))),
        Ok(Err(e)) => command_failed(&rt, &p, &e),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub struct DiffQuery {
    from: String,
}

/// What changed from a stored version to the current one, in words.
pub async fn admin_diff(State(rt): Rt, p: P, Query(q): Query<DiffQuery>) -> Response {
    if !p.viewer.actor.has_role("admin") {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let from = q.from.clone();
    let diff = match blocking(&rt, move |rt| -> Result<String, CommandError> {
        let old = rt.bundle_named(&from)?;
        let new = rt.bundle_named("current")?;
        Ok(flowform_core::diff::diff(&old, &new).to_text())
    })
    .await
    {
        Ok(Ok(text)) => text,
        Ok(Err(e)) => return command_failed(&rt, &p, &e),
        Err(r) => return r,
    };
    let heading = format!("{} → {}", q.from, rt.bundle().version);
    page(StatusCode::OK, "diff", merge(base(&rt, &p, texts::t(p.lang, "versions"), "me"), json!({"heading": heading, "diff": diff})))
}

#[derive(Deserialize, Default)]
pub struct ReplayQuery {
    #[serde(default)]
    dir: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    workflow: Option<String>,
}

/// What-if replay for admins: past instances decided again under a
/// candidate (a directory on the server, or a stored version), nothing written.
pub async fn admin_replay(State(rt): Rt, p: P) -> Response {
    replay_page(rt, p, ReplayQuery::default(), false).await
}

/// Runs a replay (a post with the session's CSRF token: a replay is heavy
/// work that another site must not be able to start with a link).
pub async fn admin_replay_run(State(rt): Rt, p: P, axum::Form(pairs): axum::Form<Vec<(String, String)>>) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    let field = |k: &str| posted.get(k).and_then(|v| v.first()).cloned();
    let q = ReplayQuery { dir: field("dir"), version: field("version"), since: field("since"), workflow: field("workflow") };
    replay_page(rt, p, q, true).await
}

async fn replay_page(rt: Arc<Runtime>, p: P, q: ReplayQuery, run: bool) -> Response {
    use flowform_runtime::replay::{Candidate, CandidateError, ReplayOptions};
    if !p.viewer.actor.has_role("admin") {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let bundle = rt.bundle();
    let lang = p.lang;
    let text = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
    let (dir, version, workflow, since) = (text(&q.dir), text(&q.version), text(&q.workflow), text(&q.since));
    let versions: Vec<Value> = rt
        .store()
        .bundle_versions()
        .unwrap_or_default()
        .into_iter()
        .rev()
        .take(20)
        .map(|v| json!({"value": v, "selected": version.as_deref() == Some(v.as_str()), "current": v == bundle.version}))
        .collect();
    let workflows: Vec<Value> = bundle
        .model
        .workflows
        .values()
        .map(|w| json!({"value": w.name, "label": w.title.get(lang.code(), &w.name), "selected": workflow.as_deref() == Some(w.name.as_str())}))
        .collect();
    let mut data = json!({"dir": dir, "since": since, "versions": versions, "workflows": workflows});
    let since_days = match since.as_deref().map(str::parse::<u32>) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => {
            data["error"] = json!(texts::t(lang, "replay_bad_since"));
            return page(StatusCode::UNPROCESSABLE_ENTITY, "replay", merge(base(&rt, &p, texts::t(lang, "replay"), "me"), data));
        }
    };
    if dir.is_some() && version.is_some() {
        data["error"] = json!(texts::t(lang, "replay_one_candidate"));
        return page(StatusCode::UNPROCESSABLE_ENTITY, "replay", merge(base(&rt, &p, texts::t(lang, "replay"), "me"), data));
    }
    if !run {
        return page(StatusCode::OK, "replay", merge(base(&rt, &p, texts::t(lang, "replay"), "me"), data));
    }
    if dir.is_none() && version.is_none() {
        data["error"] = json!(texts::t(lang, "replay_one_candidate"));
        return page(StatusCode::UNPROCESSABLE_ENTITY, "replay", merge(base(&rt, &p, texts::t(lang, "replay"), "me"), data));
    }
    let wf = workflow.clone();
    let ran = blocking(&rt, move |rt| {
        let which = match (&dir, &version) {
            (Some(d), _) => Candidate::Dir(std::path::Path::new(d)),
            (_, Some(v)) => Candidate::Version(v),
            _ => Candidate::Version("current"),
        };
        let candidate = rt.candidate(which)?;
        Ok::<_, CandidateError>(rt.what_if(&candidate, &ReplayOptions { since_days, workflow: wf, lang, list: 200 })?)
    })
    .await;
    let report = match ran {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            data["error"] = json!(e.to_string());
            if let CandidateError::Invalid { diagnostics, .. } = &e {
                data["diagnostics"] = json!(
                    diagnostics
                        .iter()
                        .map(|d| json!({"place": format!("{}:{}:{}", d.file, d.line, d.column), "code": d.code, "message": d.message}))
                        .collect::<Vec<_>>()
                );
            }
            return page(StatusCode::UNPROCESSABLE_ENTITY, "replay", merge(base(&rt, &p, texts::t(lang, "replay"), "me"), data));
        }
        Err(r) => return r,
    };
    let tz = display::zone(&bundle);
    let now = display::runtime_now(&rt);
    let s = &report.summary;
    let team = |name: &str| if name == "—" { name.to_string() } else { rt.team_label(&bundle, name, lang.code()) };
    let counts = |m: &std::collections::BTreeMap<String, usize>, label: &dyn Fn(&str) -> String| -> Vec<Value> {
        m.iter().map(|(k, n)| json!({"label": label(k), "n": n})).collect()
    };
    let step_label = |workflow: &str, step: &str| match step {
        "start" => texts::t(lang, "start").to_string(),
        _ => bundle.workflow(workflow).and_then(|w| w.transition(step)).map_or_else(|| step.to_string(), |t| t.label.get(lang.code(), step).to_string()),
    };
    // Teams and people as users know them; the other kinds say it in their message.
    let said = |d: &flowform_core::replay::Difference| {
        let name = |v: &Value, f: &dyn Fn(&str) -> String| v.as_str().map_or_else(|| "—".to_string(), f);
        match d.kind {
            flowform_core::replay::DiffKind::Team => format!("{} → {}", name(&d.recorded, &|t| team(t)), name(&d.replayed, &|t| team(t))),
            flowform_core::replay::DiffKind::Assignee if d.replayed.get("picked_by").is_none() => {
                format!("{} → {}", name(&d.recorded, &|u| rt.display_name(u)), name(&d.replayed, &|u| rt.display_name(u)))
            }
            _ => d.message.clone(),
        }
    };
    let items: Vec<Value> = report
        .items
        .iter()
        .filter_map(|i| {
            let d = i.differences.first()?;
            Some(json!({
                "href": format!("/instances/{}", encode(&i.id)),
                "name": i.number.clone().unwrap_or_else(|| i.id.clone()),
                "step": step_label(&i.workflow, &d.step),
                "when": display::absolute(d.at, &tz, now, lang),
                "kind": d.kind.label(lang),
                "message": said(d),
                "more": i.differences.len() - 1,
            }))
        })
        .collect();
    data["report"] = json!({
        "not_replayable": (s.not_replayable > 0).then(|| texts::t(lang, "replay_not_replayable").replace("{n}", &s.not_replayable.to_string())),
        "headline": texts::t(lang, "replay_headline").replace("{instances}", &s.instances.to_string()).replace("{steps}", &s.steps.to_string()).replace("{affected}", &s.affected.to_string()),
        "version": report.version,
        "kinds": s.by_kind.iter().map(|(k, n)| json!({"label": k.label(lang), "n": n})).collect::<Vec<_>>(),
        "moves": counts(&s.team_moves, &|m: &str| m.split(" → ").map(&team).collect::<Vec<_>>().join(" → ")),
        "teams": counts(&s.by_team, &|t: &str| team(t)),
        "months": counts(&s.by_month, &|m: &str| m.to_string()),
        "items": items,
        "truncated": report.truncated,
    });
    page(StatusCode::OK, "replay", merge(base(&rt, &p, texts::t(lang, "replay"), "me"), data))
}

/// Archives a record (it stays, with its history, but cannot be chosen any
/// more) or restores it.
pub async fn record_archive(
    State(rt): Rt,
    p: P,
    Path((record_type, id)): Path<(String, String)>,
    axum::Form(pairs): axum::Form<Vec<(String, String)>>,
) -> Response {
    let posted = formview::posted(pairs);
    if !csrf_ok(&p, &posted) {
        return csrf_refused(&rt, &p);
    }
    if !may_records(&rt.bundle(), &record_type, &p.viewer.actor, RecordOp::Archive) {
        return message(&rt, &p, StatusCode::FORBIDDEN, texts::t(p.lang, "forbidden"));
    }
    let archived = posted.get("archived").and_then(|v| v.first()).is_some_and(|v| v == "true");
    let (name, rid, actor) = (record_type.clone(), id.clone(), p.viewer.actor.clone());
    match blocking(&rt, move |rt| rt.archive_record(&name, &rid, archived, &actor)).await {
        Ok(Ok(r)) => Redirect::to(&format!("/records/{record_type}/{}", encode(&r.id))).into_response(),
        Ok(Err(e)) => command_failed(&rt, &p, &e),
        Err(r) => r,
    }
}
