//! A workflow as a picture: states down the page in file order, transitions
//! as labelled arrows beside them (forward on the right, back on the left).

use flowform_model::WorkflowDef;
use std::fmt::Write;

fn esc(s: &str) -> String {
    flowform_core::bundle::escape_html(s)
}

pub fn svg(wf: &WorkflowDef, lang: &str) -> String {
    const ROW: i64 = 90;
    const BOX_W: i64 = 200;
    const X: i64 = 260;
    let index = |name: &str| wf.states.iter().position(|s| s.name == name).map(|i| i as i64);
    let y = |i: i64| 40 + i * ROW;
    let edges: Vec<(i64, i64, String)> = wf
        .transitions
        .iter()
        .flat_map(|t| {
            let label = t.label.get(lang, &t.name).to_string();
            let to = t.to.as_ref().and_then(|s| index(&s.value));
            t.from.iter().filter_map(move |f| Some((index(&f.value)?, to.or(index(&f.value))?, label.clone())))
        })
        .collect();
    let height = y(wf.states.len() as i64) + 20;
    let width = X * 2 + BOX_W + 40 + 24 * edges.len() as i64 / 2;
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" font-family=\"Noto Sans CJK SC, sans-serif\" font-size=\"13\">\
         <defs><marker id=\"a\" viewBox=\"0 0 10 10\" refX=\"9\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0L10,5L0,10z\" fill=\"#5f6b76\"/></marker></defs>"
    );
    for (n, (from, to, label)) in edges.iter().enumerate() {
        let n = n as i64;
        let (y1, y2) = (y(*from) + 22, y(*to) + 22);
        let (side, offset) = if to >= from { (X + BOX_W, 30 + (n % 8) * 22) } else { (X, -(30 + (n % 8) * 22)) };
        let cx = side + offset;
        let _ = write!(
            out,
            "<path d=\"M{side},{y1} C{cx},{y1} {cx},{y2} {side},{y2}\" fill=\"none\" stroke=\"#5f6b76\" marker-end=\"url(#a)\"/>\
             <text x=\"{tx}\" y=\"{ty}\" text-anchor=\"{anchor}\" fill=\"#1d2730\">{label}</text>",
            tx = cx + if offset > 0 { 4 } else { -4 },
            ty = (y1 + y2) / 2,
            anchor = if offset > 0 { "start" } else { "end" },
            label = esc(label),
        );
    }
    for (i, s) in wf.states.iter().enumerate() {
        let top = y(i as i64);
        let color = crate::display::color(s.color.as_deref());
        let _ = write!(
            out,
            "<rect x=\"{X}\" y=\"{top}\" width=\"{BOX_W}\" height=\"44\" rx=\"10\" fill=\"#fff\" stroke=\"{color}\" stroke-width=\"{sw}\"/>\
             <text x=\"{cx}\" y=\"{ty}\" text-anchor=\"middle\" fill=\"#1d2730\">{label}</text>",
            sw = if s.is_final { 4 } else { 2 },
            cx = X + BOX_W / 2,
            ty = top + 27,
            label = esc(s.label.get(lang, &s.name)),
        );
    }
    out.push_str("</svg>");
    out
}
