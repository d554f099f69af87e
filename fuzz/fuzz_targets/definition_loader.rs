//! Any bytes as a workflow, a form or a settings file: the pipeline must never
//! panic, and every diagnostic must have a place.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for path in ["definitions/w.yaml", "forms/f.yaml", "definitions/app.yaml"] {
        let mut sources = flowform_model::Sources::new();
        sources.insert(path, text);
        sources.insert("forms/base.yaml", "form: base\nfields:\n  a: { type: string }\n");
        if let Err(diags) = flowform_core::compile(sources) {
            for d in diags {
                assert!(d.line >= 1 && d.column >= 1, "{d:?}");
            }
        }
    }
});
