//! Dashboards and report pages: tiles of reports with server-drawn charts, a
//! date range, a report's full table with its downloads, and the drill-down
//! from any bar to the orders behind it.

use crate::charts::{self, Point};
use crate::pages::{P, Rt, base, blocking, card, command_failed, merge, not_found};
use crate::render::page;
use crate::texts;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use flowform_core::Lang;
use flowform_core::reports::ReportQuery;
use flowform_model::DashboardDef;
use flowform_runtime::Runtime;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize, Default)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    by: Option<String>,
    key: Option<String>,
    /// The group's name as the page that links here showed it.
    label: Option<String>,
}

/// The range asked for, or the last 90 days (today included), as dates in the app's zone.
fn range(rt: &Runtime, q: &RangeQuery) -> (String, String, Option<flowform_core::reports::Timestamp>, Option<flowform_core::reports::Timestamp>) {
    let bundle = rt.bundle();
    let today = rt.clock_now().to_zoned_datetime(flowform_runtime::app_zone(&bundle)).date();
    let text =
        |v: &Option<String>, default: jiff::civil::Date| v.clone().filter(|s| s.parse::<jiff::civil::Date>().is_ok()).unwrap_or_else(|| default.to_string());
    let from = text(&q.from, today.checked_sub(jiff::Span::new().days(89)).unwrap_or(today));
    let to = text(&q.to, today.tomorrow().unwrap_or(today));
    let at = |d: &str| flowform_runtime::reports::day_start(&bundle, d).ok();
    (from.clone(), to.clone(), at(&from), at(&to))
}

fn query_string(from: &str, to: &str) -> String {
    format!("from={from}&to={to}")
}

fn encode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// The value of measure `index` of a report row.
fn value(row: &Value, index: usize) -> Option<f64> {
    row["values"].get(index).and_then(Value::as_f64)
}

pub async fn dashboards(rt: Rt, p: P, q: Query<RangeQuery>) -> Response {
    let first = rt.dashboards_for(&p.viewer.actor).into_iter().next();
    match first {
        Some(d) => show(rt, p, d.name, q).await,
        None => not_found(&rt, &p),
    }
}

pub async fn dashboard(rt: Rt, p: P, Path(name): Path<String>, q: Query<RangeQuery>) -> Response {
    show(rt, p, name, q).await
}

async fn show(rt: Rt, p: P, name: String, Query(q): Query<RangeQuery>) -> Response {
    let all = rt.dashboards_for(&p.viewer.actor);
    let Some(d) = all.iter().find(|d| d.name == name).cloned() else { return not_found(&rt, &p) };
    let (from, to, from_t, to_t) = range(&rt, &q);
    let (actor, lang) = (p.viewer.actor.clone(), p.lang);
    let tiles = {
        let d = d.clone();
        let (from, to) = (from.clone(), to.clone());
        blocking(&rt, move |rt| tiles(rt, &d, &actor, lang, from_t, to_t, &from, &to)).await
    };
    let tiles = match tiles {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return command_failed(&rt, &p, &e),
        Err(r) => return r,
    };
    let code = p.lang.code();
    let others: Vec<Value> = all
        .iter()
        .map(|x: &DashboardDef| json!({"url": format!("/dashboards/{}?{}", x.name, query_string(&from, &to)), "title": x.title.get(code, &x.name), "active": x.name == d.name}))
        .collect();
    let title = d.title.get(code, &d.name).to_string();
    let (kpis, charts): (Vec<Value>, Vec<Value>) = tiles.into_iter().partition(|t| t["kpi"].is_string() && t["svg"] == "");
    let data = json!({"heading": title, "kpis": kpis, "charts": charts, "from": from, "to": to, "action": format!("/dashboards/{}", d.name), "others": others, "many": all.len() > 1});
    page(StatusCode::OK, "dashboard", merge(base(&rt, &p, &title, "me"), data))
}

#[allow(clippy::too_many_arguments)]
fn tiles(
    rt: &Runtime,
    d: &DashboardDef,
    actor: &flowform_core::Actor,
    lang: Lang,
    from_t: Option<flowform_core::reports::Timestamp>,
    to_t: Option<flowform_core::reports::Timestamp>,
    from: &str,
    to: &str,
) -> Result<Vec<Value>, flowform_runtime::CommandError> {
    let bundle = rt.bundle();
    let code = lang.code();
    let mut out = Vec::new();
    for t in &d.tiles {
        let Some(rep) = bundle.model.reports.get(&t.report.value) else { continue };
        let by = t.by.as_ref().map(|b| b.value.clone()).unwrap_or_default();
        let q = ReportQuery { from: from_t, to: to_t, by: by.clone(), filters: Vec::new(), range_applied: false };
        let view = match rt.run_report(&rep.name, actor, &q, lang) {
            Ok(v) => v,
            // A report this viewer may not run is left out, not an error page.
            Err(flowform_runtime::CommandError::RecordNotFound(_)) => continue,
            Err(e) => return Err(e),
        };
        let index = t.measure.as_ref().and_then(|m| rep.measures.iter().position(|x| x.name == m.value)).unwrap_or(0);
        let measure = &rep.measures[index];
        let unit = measure.unit.clone().unwrap_or_default();
        let chart = t.chart.as_ref().map_or(rep.chart.value.as_str(), |c| c.value.as_str()).to_string();
        let title = if t.title.is_empty() {
            format!("{} · {}", rep.title.get(code, &rep.name), measure.label.get(code, &measure.name))
        } else {
            t.title.get(code, "").to_string()
        };
        let range = query_string(from, to);
        let mut points: Vec<Point> = view
            .rows
            .iter()
            .filter_map(|r| {
                Some(Point {
                    label: r["label"].as_str().unwrap_or_default().to_string(),
                    value: value(r, index)?,
                    href: format!(
                        "/reports/{}/rows?by={}&key={}&label={}&{range}",
                        rep.name,
                        encode(&by),
                        encode(r["key"].as_str().unwrap_or_default()),
                        encode(r["label"].as_str().unwrap_or_default())
                    ),
                })
            })
            .collect();
        // A line over days or months shows every one of the range, counting none as 0.
        let additive = matches!(measure.kind, flowform_model::MeasureKind::Count | flowform_model::MeasureKind::Sum | flowform_model::MeasureKind::Distinct);
        if chart == "line" && additive && (by == "day" || by == "month") {
            points = fill_gaps(points, &by, from, to, &rep.name, &range);
        }
        let svg = match chart.as_str() {
            _ if points.is_empty() => String::new(),
            "line" => charts::line(&points, &unit),
            "pie" => charts::pie(&points, &unit),
            "bar" => charts::bar(&points, &unit),
            _ => String::new(),
        };
        let kpi = (chart == "kpi" || by.is_empty()).then(|| value(&view.total, index).map(charts::number).unwrap_or_else(|| "—".into()));
        out.push(json!({
            "title": title,
            "svg": svg,
            "kpi": kpi,
            "unit": unit,
            "empty": points.is_empty() && kpi.is_none(),
            "rows_url": format!("/reports/{}/rows?{range}", rep.name),
            "report_url": format!("/reports/{}?by={}&{range}", rep.name, encode(&by)),
        }));
    }
    Ok(out)
}

/// Every day (or month) from `from` to `to` (exclusive), with the values
/// known and 0 for the others; at most 400 points.
fn fill_gaps(points: Vec<Point>, by: &str, from: &str, to: &str, report: &str, range: &str) -> Vec<Point> {
    let (Ok(mut day), Ok(end)) = (from.parse::<jiff::civil::Date>(), to.parse::<jiff::civil::Date>()) else { return points };
    let mut out: Vec<Point> = Vec::new();
    while day < end && out.len() < 400 {
        let key = if by == "day" { day.to_string() } else { format!("{:04}-{:02}", day.year(), day.month()) };
        if out.last().is_none_or(|p| p.label != key) {
            let known = points.iter().find(|p| p.label == key);
            out.push(Point {
                label: key.clone(),
                value: known.map_or(0.0, |p| p.value),
                href: known.map_or_else(|| format!("/reports/{report}/rows?by={by}&key={key}&{range}"), |p| p.href.clone()),
            });
        }
        day = match day.tomorrow() {
            Ok(d) => d,
            Err(_) => break,
        };
    }
    out
}

/// A report's full table, grouped as asked, with its downloads.
pub async fn report(rt: Rt, p: P, Path(name): Path<String>, Query(q): Query<RangeQuery>) -> Response {
    let bundle = rt.bundle();
    let Some(rep) = bundle.model.reports.get(&name).cloned() else { return not_found(&rt, &p) };
    let (from, to, from_t, to_t) = range(&rt, &q);
    let by =
        q.by.clone().filter(|b| rep.dimensions.iter().any(|d| d.value == *b)).or_else(|| rep.dimensions.first().map(|d| d.value.clone())).unwrap_or_default();
    let query = ReportQuery { from: from_t, to: to_t, by: by.clone(), filters: Vec::new(), range_applied: false };
    let (actor, lang, n) = (p.viewer.actor.clone(), p.lang, name.clone());
    let view = match blocking(&rt, move |rt| rt.run_report(&n, &actor, &query, lang)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return command_failed(&rt, &p, &e),
        Err(r) => return r,
    };
    let range = query_string(&from, &to);
    let rows: Vec<Value> = view
        .rows
        .iter()
        .chain(std::iter::once(&view.total))
        .enumerate()
        .map(|(i, r)| {
            let total = i == view.rows.len();
            let key = r["key"].as_str().unwrap_or_default();
            json!({
                "label": r["label"],
                "rows": r["rows"],
                "values": r["values"].as_array().into_iter().flatten().map(|v| match v { Value::Number(n) => charts::number(n.as_f64().unwrap_or(0.0)), Value::String(s) => s.clone(), _ => "—".into() }).collect::<Vec<_>>(),
                "total": total,
                "url": if total {
                    format!("/reports/{name}/rows?{range}")
                } else {
                    format!("/reports/{name}/rows?by={}&key={}&label={}&{range}", encode(&by), encode(key), encode(r["label"].as_str().unwrap_or_default()))
                },
            })
        })
        .collect();
    let dims: Vec<Value> = rep
        .dimensions
        .iter()
        .map(|d| {
            let label = d.value.split(',').map(|x| dimension_label(&rt, &rep, x, lang)).collect::<Vec<_>>().join(" · ");
            json!({"value": d.value, "label": label, "selected": d.value == by})
        })
        .collect();
    let columns: Vec<Value> = view.columns.iter().map(|c| json!({"label": c["label"], "unit": c["unit"]})).collect();
    let download = |format: &str| format!("/api/v1/reports/{name}?by={}&{range}&format={format}", encode(&by));
    let data = json!({
        "heading": view.title,
        "description": view.description,
        "by_label": view.by_label,
        "columns": columns,
        "rows": rows,
        "dims": dims,
        "from": from,
        "to": to,
        "action": format!("/reports/{name}"),
        "csv": download("csv"),
        "xlsx": download("xlsx"),
        "has_rows": !view.rows.is_empty(),
        "drill": matches!(rep.source, flowform_model::ReportSource::Instances { .. } | flowform_model::ReportSource::Events { .. }),
    });
    page(StatusCode::OK, "report", merge(base(&rt, &p, &view.title, "me"), data))
}

fn dimension_label(rt: &Runtime, rep: &flowform_model::ReportDef, dim: &str, lang: Lang) -> String {
    if flowform_model::TIME_BUCKETS.contains(&dim) {
        return flowform_runtime::reports::bucket_label(dim, lang).to_string();
    }
    let names = [
        ("team", "班组", "Team"),
        ("state", "状态", "State"),
        ("assignee", "处理人", "Assignee"),
        ("requester", "报修人", "Requester"),
        ("actor", "人员", "Person"),
        ("priority", "紧急程度", "Urgency"),
    ];
    if let Some((_, zh, en)) = names.iter().find(|(k, ..)| *k == dim) {
        return if lang == Lang::En { en.to_string() } else { zh.to_string() };
    }
    let bundle = rt.bundle();
    let fields = flowform_runtime::reports::form_fields(&bundle, rep);
    let (head, sub) = dim.split_once('.').map_or((dim, None), |(a, b)| (a, Some(b)));
    let head_label = fields.iter().find(|f| f.name == head).map_or_else(|| head.to_string(), |f| f.label.get(lang.code(), head).to_string());
    match sub {
        None => head_label,
        Some(sub) => {
            let sub_label = fields
                .iter()
                .find(|f| f.name == head)
                .and_then(|f| f.record.as_ref())
                .and_then(|t| bundle.model.record_types.get(&t.value))
                .and_then(|t| bundle.form(&t.form.value))
                .and_then(|form| form.def.fields.iter().find(|f| f.name == sub).map(|f| f.label.get(lang.code(), sub).to_string()))
                .unwrap_or_else(|| sub.to_string());
            format!("{head_label} · {sub_label}")
        }
    }
}

/// The orders behind one group of a report (the drill-down of a bar).
pub async fn report_rows(rt: Rt, p: P, Path(name): Path<String>, Query(q): Query<RangeQuery>) -> Response {
    let bundle = rt.bundle();
    let Some(rep) = bundle.model.reports.get(&name).cloned() else { return not_found(&rt, &p) };
    let (_, _, from_t, to_t) = range(&rt, &q);
    let by = q.by.clone().unwrap_or_default();
    if !by.is_empty() && !rep.dimensions.iter().any(|d| d.value == by) {
        return not_found(&rt, &p);
    }
    let key = q.key.clone().unwrap_or_default();
    let query = ReportQuery { from: from_t, to: to_t, by, filters: Vec::new(), range_applied: false };
    let (actor, n) = (p.viewer.actor.clone(), name.clone());
    let found = match blocking(&rt, move |rt| rt.report_group_instances(&n, &actor, &query, &key, 200)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return command_failed(&rt, &p, &e),
        Err(r) => return r,
    };
    let items: Vec<Value> = found.iter().map(|i| card(&rt, &p.viewer.actor, &bundle, i, p.lang)).collect();
    let group = q.label.clone().filter(|l| !l.is_empty()).unwrap_or_else(|| texts::t(p.lang, "details").to_string());
    let heading = format!("{} · {group}", rep.title.get(p.lang.code(), &rep.name));
    let count = if p.lang == Lang::En { format!("{} orders", items.len()) } else { format!("共 {} 条", items.len()) };
    let data = json!({"heading": heading, "items": items, "count": count});
    page(StatusCode::OK, "report_rows", merge(base(&rt, &p, &heading, "me"), data))
}
