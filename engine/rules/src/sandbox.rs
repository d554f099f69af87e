//! The hardened Rhai engine. Never `Engine::new()` as is: its defaults allow
//! unbounded loops and `eval` (see DESIGN.md, "Dependency decisions").

use rhai::{Dynamic, Engine, EvalAltResult};
use std::cell::Cell;
use std::time::{Duration, Instant};

use crate::RuleErrorKind;

/// Bounds on every script run.
#[derive(Clone, Debug)]
pub struct Limits {
    pub max_operations: u64,
    pub max_call_levels: usize,
    pub max_expr_depth: usize,
    pub max_string_size: usize,
    pub max_array_size: usize,
    pub max_map_size: usize,
    pub wall_time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 500_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 64 * 1024,
            max_array_size: 10_000,
            max_map_size: 1_000,
            wall_time: Duration::from_millis(50),
        }
    }
}

thread_local! {
    /// The deadline of the script running on this thread. `on_progress` is called
    /// on the evaluating thread, so a thread-local carries the per-run deadline
    /// into the engine's one shared callback.
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

const TIMEOUT_TOKEN: &str = "__flowform_wall_time__";

pub(crate) fn with_deadline<T>(limit: Duration, f: impl FnOnce() -> T) -> T {
    let previous = DEADLINE.with(|d| d.replace(Some(Instant::now() + limit)));
    let out = f();
    DEADLINE.with(|d| d.set(previous));
    out
}

pub(crate) fn engine(limits: &Limits) -> Engine {
    let mut engine = Engine::new();
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(256)
        .set_max_functions(64)
        .set_strict_variables(true)
        .disable_symbol("eval");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    engine.on_progress(|ops| {
        if ops % 256 != 0 {
            return None;
        }
        let late = DEADLINE.with(|d| d.get()).is_some_and(|deadline| Instant::now() > deadline);
        late.then(|| Dynamic::from(TIMEOUT_TOKEN))
    });
    crate::helpers::register(&mut engine);
    engine
}

/// A plain sentence for an evaluation error.
pub(crate) fn describe(e: &EvalAltResult, wall: Duration) -> (RuleErrorKind, String) {
    use EvalAltResult as E;
    match e {
        E::ErrorTerminated(token, _) if token.clone().into_string().is_ok_and(|s| s == TIMEOUT_TOKEN) => {
            (RuleErrorKind::Limit, format!("stopped after running longer than {} ms", wall.as_millis()))
        }
        E::ErrorTooManyOperations(_) => (RuleErrorKind::Limit, "stopped: too many operations (an endless loop?)".into()),
        E::ErrorStackOverflow(_) => (RuleErrorKind::Limit, "stopped: calls nested too deeply (endless recursion?)".into()),
        E::ErrorDataTooLarge(what, _) => (RuleErrorKind::Limit, format!("stopped: {what} grew too large")),
        E::ErrorTooManyVariables(_) => (RuleErrorKind::Limit, "stopped: too many variables".into()),
        E::ErrorRuntime(value, _) => (RuleErrorKind::Runtime, format!("the script raised an error: {value}")),
        E::ErrorInFunctionCall(name, _, inner, _) => {
            let (kind, msg) = describe(inner, wall);
            (kind, format!("in function `{name}`: {msg}"))
        }
        other => (RuleErrorKind::Runtime, other.to_string().split(" (line").next().unwrap_or_default().to_string()),
    }
}
