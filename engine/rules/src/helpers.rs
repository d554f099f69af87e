//! Pure helper functions available to scripts: time arithmetic on RFC 3339
//! strings and small string utilities. None of them reads the clock: `now` is
//! passed in.

use rhai::{Dynamic, Engine, EvalAltResult, Position};
use serde_json::Value;
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// The records the command running on this thread was handed (see
    /// [`crate::ScriptContext::records`]): what `lookup` and `find` read.
    static RECORDS: RefCell<Arc<Value>> = RefCell::new(Arc::new(Value::Null));
}

/// Runs `f` with `records` readable by `lookup`/`find` on this thread.
pub(crate) fn with_records<T>(records: &Arc<Value>, f: impl FnOnce() -> T) -> T {
    /// Puts the previous snapshot back even if the run panics.
    struct Restore(Option<Arc<Value>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(previous) = self.0.take() {
                RECORDS.with(|r| *r.borrow_mut() = previous);
            }
        }
    }
    let _restore = Restore(Some(RECORDS.with(|r| r.replace(records.clone()))));
    f()
}

fn to_dynamic(v: &Value) -> Dynamic {
    rhai::serde::to_dynamic(v).unwrap_or(Dynamic::UNIT)
}

/// `lookup(type, id)`: the record (its fields, `id`, `title`, `archived`), or `()`.
fn lookup(record_type: &str, id: &str) -> Dynamic {
    RECORDS.with(|r| r.borrow().get(record_type).and_then(|t| t.get(id)).map_or(Dynamic::UNIT, to_dynamic))
}

/// `find(type, #{field: value, ...})`: the records of the snapshot whose fields equal the given values.
/// A field matches a filter value when it equals it, or, for a list (a
/// multiple choice), when it contains it.
fn matches(field: Option<&Value>, wanted: &Value) -> bool {
    match field {
        Some(Value::Array(items)) if !wanted.is_array() => items.contains(wanted),
        Some(f) => f == wanted,
        None => wanted.is_null(),
    }
}

fn find(record_type: &str, filter: rhai::Map) -> Result<rhai::Array, Box<EvalAltResult>> {
    let filter: serde_json::Map<String, Value> =
        filter.into_iter().map(|(k, v)| Ok((k.to_string(), rhai::serde::from_dynamic::<Value>(&v)?))).collect::<Result<_, Box<EvalAltResult>>>()?;
    Ok(RECORDS.with(|r| {
        r.borrow()
            .get(record_type)
            .and_then(Value::as_object)
            .map(|records| records.values().filter(|rec| filter.iter().all(|(k, v)| matches(rec.get(k), v))).map(to_dynamic).collect())
            .unwrap_or_default()
    }))
}

fn parse(ts: &str) -> Result<jiff::Timestamp, Box<EvalAltResult>> {
    ts.parse::<jiff::Timestamp>().map_err(|e| Box::new(EvalAltResult::ErrorRuntime(format!("`{ts}` is not a time: {e}").into(), Position::NONE)))
}

fn add_seconds(ts: &str, secs: i64) -> Result<String, Box<EvalAltResult>> {
    let t = parse(ts)?;
    let span = jiff::SignedDuration::from_secs(secs);
    t.checked_add(span).map(|t| t.to_string()).map_err(|e| Box::new(EvalAltResult::ErrorRuntime(format!("time out of range: {e}").into(), Position::NONE)))
}

pub(crate) fn register(engine: &mut Engine) {
    engine.register_fn("lookup", lookup);
    engine.register_fn("lookup", |_: &str, _: ()| Dynamic::UNIT);
    engine.register_fn("find", find);
    engine.register_fn("add_minutes", |ts: &str, n: i64| add_seconds(ts, n.saturating_mul(60)));
    engine.register_fn("add_hours", |ts: &str, n: i64| add_seconds(ts, n.saturating_mul(3600)));
    engine.register_fn("add_days", |ts: &str, n: i64| add_seconds(ts, n.saturating_mul(86400)));
    engine.register_fn("minutes_between", |a: &str, b: &str| -> Result<i64, Box<EvalAltResult>> { Ok(parse(b)?.duration_since(parse(a)?).as_secs() / 60) });
    engine.register_fn("is_before", |a: &str, b: &str| -> Result<bool, Box<EvalAltResult>> { Ok(parse(a)? < parse(b)?) });
    engine.register_fn("is_blank", |s: &str| s.trim().is_empty());
    engine.register_fn("is_blank", |_: ()| true);
}
