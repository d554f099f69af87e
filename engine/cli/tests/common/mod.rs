//! Starting the `flowform` binary as a server, for the tests that run it.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `flowform serve --demo` on a free port (logging warnings only)
/// with `extra` arguments; returns the process and the address it listens on.
/// Its output keeps being read, so the server never blocks on a full pipe.
pub fn serve(dir: &Path, data: &Path, extra: &[&OsStr]) -> (Child, String) {
    let (child, addr, _) = serve_with(dir, data, extra, &[], &[]);
    (child, addr)
}

/// [`serve`] with environment variables `env`; also waits for a line
/// announcing each of `also` (e.g. `"metrics at http://"`) and returns the
/// address after each, in order.
pub fn serve_with(dir: &Path, data: &Path, extra: &[&OsStr], env: &[(&str, &str)], also: &[&str]) -> (Child, String, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_flowform"))
        .args(["serve", "--demo", "--addr", "127.0.0.1:0", "--dir"])
        .arg(dir)
        .arg("--data")
        .arg(data)
        .args(extra)
        .env("FLOWFORM_LOG", "warn")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut others) = (None, vec![None; also.len()]);
    while addr.is_none() || others.iter().any(Option::is_none) {
        let line = lines.next().expect("server exited before listening").unwrap();
        if let Some((i, rest)) = also.iter().enumerate().find_map(|(i, m)| line.split(m).nth(1).map(|rest| (i, rest))) {
            others[i] = Some(rest.split('/').next().unwrap_or_default().trim().to_string());
        } else if let Some(rest) = line.split("on http://").nth(1) {
            addr = Some(rest.trim().to_string());
        }
    }
    std::thread::spawn(move || for _ in lines {});
    (child, addr.unwrap_or_default(), others.into_iter().flatten().collect())
}
