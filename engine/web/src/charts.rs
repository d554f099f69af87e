//! Charts of report tiles as inline SVG, drawn on the server: no script to
//! load on a phone, readable at 390 px, printable; each bar, point and slice
//! links to the rows behind it and names its value on hover (`<title>`).

/// One value of a chart: its label, value and drill-down link.
pub struct Point {
    pub label: String,
    pub value: f64,
    pub href: String,
}

const PALETTE: [&str; 8] = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const WIDTH: f64 = 340.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A label cut to what fits beside a bar (wide characters count double).
fn short(s: &str, room: usize) -> String {
    let mut width = 0;
    let mut out = String::new();
    for c in s.chars() {
        width += if c.is_ascii() { 1 } else { 2 };
        if width > room {
            out.push('…');
            return out;
        }
        out.push(c);
    }
    out
}

/// A number as shown: whole numbers without decimals, others with one or two.
pub fn number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 { format!("{}", v.round() as i64) } else { format!("{v:.1}") }
}

/// Horizontal bars, one per point, longest for the largest value.
pub fn bar(points: &[Point], unit: &str) -> String {
    let row = 30.0;
    let height = row * points.len().max(1) as f64;
    let max = points.iter().map(|p| p.value).fold(0.0_f64, f64::max).max(1e-9);
    let (left, room) = (104.0, 170.0);
    let mut svg = format!(r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" xmlns="http://www.w3.org/2000/svg">"#);
    for (i, p) in points.iter().enumerate() {
        let y = i as f64 * row;
        let w = (p.value.max(0.0) / max * room).max(1.0);
        let color = PALETTE[i % PALETTE.len()];
        svg.push_str(&format!(
            r##"<a href="{href}"><title>{label}: {value}{unit}</title><text x="0" y="{ty}" font-size="13" fill="#374151">{short}</text><rect x="{left}" y="{ry}" width="{w:.1}" height="18" rx="3" fill="{color}"/><text x="{vx:.1}" y="{ty}" font-size="12" fill="#111827">{value}</text></a>"##,
            href = esc(&p.href),
            label = esc(&p.label),
            value = number(p.value),
            unit = esc(unit),
            short = esc(&short(&p.label, 14)),
            ty = y + 19.0,
            ry = y + 5.0,
            vx = left + w + 4.0,
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// A line over the points in order (time buckets), from zero.
pub fn line(points: &[Point], unit: &str) -> String {
    let (height, top, bottom, left, right) = (160.0, 12.0, 24.0, 8.0, 8.0);
    let max = points.iter().map(|p| p.value).fold(0.0_f64, f64::max).max(1e-9);
    let n = points.len().max(2) as f64 - 1.0;
    let x = |i: usize| left + (WIDTH - left - right) * i as f64 / n;
    let y = |v: f64| top + (height - top - bottom) * (1.0 - v.max(0.0) / max);
    let mut svg = format!(r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" xmlns="http://www.w3.org/2000/svg">"#);
    svg.push_str(&format!(r##"<line x1="{left}" y1="{b}" x2="{r}" y2="{b}" stroke="#d1d5db"/>"##, b = height - bottom, r = WIDTH - right));
    let path: Vec<String> = points.iter().enumerate().map(|(i, p)| format!("{:.1},{:.1}", x(i), y(p.value))).collect();
    svg.push_str(&format!(r##"<polyline points="{}" fill="none" stroke="#2563eb" stroke-width="2"/>"##, path.join(" ")));
    // Many points: small dots, and none drawn where the value is zero (still a link).
    let many = points.len() > 31;
    for (i, p) in points.iter().enumerate() {
        let (r, opacity) = match (many, p.value == 0.0) {
            (false, _) => (4.0, 1.0),
            (true, false) => (2.5, 1.0),
            (true, true) => (2.5, 0.0),
        };
        svg.push_str(&format!(
            r##"<a href="{href}"><title>{label}: {value}{unit}</title><circle cx="{cx:.1}" cy="{cy:.1}" r="{r}" fill="#2563eb" fill-opacity="{opacity}"/></a>"##,
            href = esc(&p.href),
            label = esc(&p.label),
            value = number(p.value),
            unit = esc(unit),
            cx = x(i),
            cy = y(p.value),
        ));
    }
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        svg.push_str(&format!(r##"<text x="{left}" y="{ty}" font-size="11" fill="#6b7280">{}</text>"##, esc(&first.label), ty = height - 6.0));
        svg.push_str(&format!(
            r##"<text x="{rx}" y="{ty}" font-size="11" fill="#6b7280" text-anchor="end">{}</text>"##,
            esc(&last.label),
            rx = WIDTH - right,
            ty = height - 6.0
        ));
        svg.push_str(&format!(r##"<text x="{left}" y="{top}" font-size="11" fill="#6b7280">{}{}</text>"##, number(max), esc(unit)));
    }
    svg.push_str("</svg>");
    svg
}

/// A ring of slices with a legend beneath.
pub fn pie(points: &[Point], unit: &str) -> String {
    let total: f64 = points.iter().map(|p| p.value.max(0.0)).sum();
    let (cx, cy, r) = (WIDTH / 2.0, 80.0, 70.0);
    let legend = 22.0 * points.len() as f64;
    let height = 170.0 + legend;
    let mut svg = format!(r#"<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" xmlns="http://www.w3.org/2000/svg">"#);
    let mut angle = -std::f64::consts::FRAC_PI_2;
    for (i, p) in points.iter().enumerate() {
        let share = if total > 0.0 { p.value.max(0.0) / total } else { 0.0 };
        let color = PALETTE[i % PALETTE.len()];
        let title = format!("{}: {}{} ({:.0}%)", esc(&p.label), number(p.value), esc(unit), share * 100.0);
        let slice = if share >= 0.9999 {
            format!(r#"<circle cx="{cx}" cy="{cy}" r="{r}" fill="{color}"/>"#)
        } else {
            let end = angle + share * std::f64::consts::TAU;
            let (x1, y1, x2, y2) = (cx + r * angle.cos(), cy + r * angle.sin(), cx + r * end.cos(), cy + r * end.sin());
            let large = if share > 0.5 { 1 } else { 0 };
            let d = format!("M{cx},{cy} L{x1:.2},{y1:.2} A{r},{r} 0 {large} 1 {x2:.2},{y2:.2} Z");
            angle = end;
            format!(r#"<path d="{d}" fill="{color}"/>"#)
        };
        let ly = 170.0 + 22.0 * i as f64;
        svg.push_str(&format!(
            r##"<a href="{href}"><title>{title}</title>{slice}<rect x="8" y="{ry}" width="12" height="12" fill="{color}"/><text x="26" y="{ty}" font-size="13" fill="#374151">{label} · {value}{unit} ({pct:.0}%)</text></a>"##,
            href = esc(&p.href),
            ry = ly,
            ty = ly + 11.0,
            label = esc(&short(&p.label, 24)),
            value = number(p.value),
            unit = esc(unit),
            pct = share * 100.0,
        ));
    }
    svg.push_str(&format!(r##"<circle cx="{cx}" cy="{cy}" r="{}" fill="#fff"/>"##, r * 0.55));
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts() -> Vec<Point> {
        vec![
            Point { label: "重症监护室 <ICU>".into(), value: 3.0, href: "/r?key=a&b".into() },
            Point { label: "检验科".into(), value: 1.5, href: "/r?key=b".into() },
        ]
    }

    #[test]
    fn charts_escape_their_labels_and_link_every_value() {
        for svg in [bar(&pts(), "%"), line(&pts(), ""), pie(&pts(), "")] {
            assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
            assert!(!svg.contains("<ICU>") && svg.contains("&lt;ICU&gt;"), "{svg}");
            assert_eq!(svg.matches("<a href=").count(), 2, "{svg}");
            assert!(svg.contains("/r?key=a&amp;b"));
        }
        assert_eq!(number(3.0), "3");
        assert_eq!(number(1.25), "1.2");
        assert_eq!(short("重症监护室重症监护室", 8), "重症监护…");
    }
}
