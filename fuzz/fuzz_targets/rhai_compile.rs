//! Any text as a rule: compiling it (and running it, when it compiles) must
//! end with a value or a clear error, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut sources = flowform_model::Sources::new();
    sources.insert("rules/fuzz.rhai", text);
    let (model, _) = flowform_model::load_and_check(&sources);
    let (rules, _) = flowform_rules::RuleSet::compile(&model, flowform_rules::Limits::default());
    if rules.has("fuzz") {
        let _ = rules.run("fuzz", &flowform_rules::ScriptContext::default());
    }
});
