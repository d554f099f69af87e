//! A workflow as a diagram (Mermaid or Graphviz dot).

use flowform_model::WorkflowDef;
use std::fmt::Write as _;

pub fn mermaid(wf: &WorkflowDef, lang: &str) -> String {
    let mut out = String::from("stateDiagram-v2\n");
    let _ = writeln!(out, "    [*] --> {}", wf.initial.value);
    for s in &wf.states {
        let _ = writeln!(out, "    {}: {}", s.name, s.label.get(lang, &s.name).replace(':', " "));
    }
    for t in &wf.transitions {
        for from in &t.from {
            let to = t.to.as_ref().map_or(from.value.as_str(), |s| s.value.as_str());
            let _ = writeln!(out, "    {} --> {}: {}", from.value, to, t.label.get(lang, &t.name).replace(':', " "));
        }
    }
    for s in wf.states.iter().filter(|s| s.is_final) {
        let _ = writeln!(out, "    {} --> [*]", s.name);
    }
    out
}

pub fn dot(wf: &WorkflowDef, lang: &str) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut out = format!("digraph {} {{\n    rankdir=LR;\n    node [shape=box, style=rounded];\n", q(&wf.name));
    let _ = writeln!(out, "    __start [shape=point];\n    __start -> {};", q(&wf.initial.value));
    for s in &wf.states {
        let shape = if s.is_final { ", peripheries=2" } else { "" };
        let _ = writeln!(out, "    {} [label={}{shape}];", q(&s.name), q(s.label.get(lang, &s.name)));
    }
    for t in &wf.transitions {
        for from in &t.from {
            let to = t.to.as_ref().map_or(from.value.as_str(), |s| s.value.as_str());
            let _ = writeln!(out, "    {} -> {} [label={}];", q(&from.value), q(to), q(t.label.get(lang, &t.name)));
        }
    }
    out.push_str("}\n");
    out
}
