//! Starting the `flowform` binary as a server, for the tests that run it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `flowform serve --demo` on a free port (logging warnings only)
/// with `extra` arguments; returns the process and the address it listens on.
/// Its output keeps being read, so the server never blocks on a full pipe.
pub fn serve(dir: &Path, data: &Path, extra: &[&OsStr]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowform"))
        .args(["serve", "--demo", "--addr", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .arg("--data")
        .arg(data)
        .args(extra)
        .env("FLOWFORM_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some(rest) = line.split("on http://").nth(1) {
            break rest.trim().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}
