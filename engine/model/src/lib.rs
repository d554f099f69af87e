//! The Flowform definition model.
//!
//! Turns the text of an application's files ([`Sources`]) into a typed,
//! cross-checked [`Model`], reporting every problem as a [`Diagnostic`] with a
//! file, line and column. Pure: no I/O, no clock. Scripts are only collected
//! here; `flowform-rules` compiles them and `flowform-forms` compiles forms, and
//! `flowform-core` runs the whole pipeline.

pub mod check;
pub mod condition;
pub mod defs;
pub mod diagnostic;
pub mod grammar;
pub mod label;
pub mod load;
pub mod node;
pub mod reader;
pub mod schema;
pub mod sources;

pub use condition::Condition;
pub use defs::*;
pub use diagnostic::{DiagCode, Diagnostic, Pos};
pub use label::Label;
pub use reader::Sp;
pub use sources::{SourceKind, Sources};

/// Loads and checks a model. The model is returned even when there are
/// diagnostics, so later stages can report their own problems too.
pub fn load_and_check(sources: &Sources) -> (Model, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    let model = load::load(sources, &mut diags);
    check::check(&model, &mut diags);
    (model, diags)
}
