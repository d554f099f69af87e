//! Cross-crate behaviour tests of Flowform. The harness (`TestApp`) and the
//! YAML scenario runner live in `flowform-testkit`, shared with `flowform test`.

pub use flowform_testkit::*;

/// A fixture application under tests/fixtures.
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}
