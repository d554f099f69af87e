//! Pure helper functions available to scripts: time arithmetic on RFC 3339
//! strings and small string utilities. None of them reads the clock: `now` is
//! passed in.

use rhai::{Engine, EvalAltResult, Position};

fn parse(ts: &str) -> Result<jiff::Timestamp, Box<EvalAltResult>> {
    ts.parse::<jiff::Timestamp>().map_err(|e| Box::new(EvalAltResult::ErrorRuntime(format!("`{ts}` is not a time: {e}").into(), Position::NONE)))
}

fn add_seconds(ts: &str, secs: i64) -> Result<String, Box<EvalAltResult>> {
    let t = parse(ts)?;
    let span = jiff::SignedDuration::from_secs(secs);
    t.checked_add(span).map(|t| t.to_string()).map_err(|e| Box::new(EvalAltResult::ErrorRuntime(format!("time out of range: {e}").into(), Position::NONE)))
}

pub(crate) fn register(engine: &mut Engine) {
    engine.register_fn("add_minutes", |ts: &str, n: i64| add_seconds(ts, n.saturating_mul(60)));
    engine.register_fn("add_hours", |ts: &str, n: i64| add_seconds(ts, n.saturating_mul(3600)));
    engine.register_fn("add_days", |ts: &str, n: i64| add_seconds(ts, n.saturating_mul(86400)));
    engine.register_fn("minutes_between", |a: &str, b: &str| -> Result<i64, Box<EvalAltResult>> { Ok(parse(b)?.duration_since(parse(a)?).as_secs() / 60) });
    engine.register_fn("is_before", |a: &str, b: &str| -> Result<bool, Box<EvalAltResult>> { Ok(parse(a)? < parse(b)?) });
    engine.register_fn("is_blank", |s: &str| s.trim().is_empty());
    engine.register_fn("is_blank", |_: ()| true);
}
