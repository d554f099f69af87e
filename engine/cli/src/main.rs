//! `flowform`: the command line. Glue only: parse arguments, call the library
//! crates, print. See `flowform --help`.

mod admin;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use flowform_core::graph;
use flowform_runtime::watch::{WatchMode, watch};
use flowform_runtime::{LoadError, Runtime, SystemClock, load_bundle};
use flowform_store::{RedbStore, Store};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Prints to stdout, ignoring a closed pipe (`flowform check | head`).
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Prints to stdout without a newline, ignoring a closed pipe.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}
use std::process::ExitCode;

/// mimalloc instead of the system allocator: the engine allocates many small
/// short-lived values (JSON, strings), and glibc's malloc spent ~40 % of the
/// core benchmark in malloc/free (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "flowform", version, about = "Flowform: a low-code workflow engine driven by YAML and Rhai")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the application: the HTTP API on the definitions in DIR.
    Serve {
        /// The application directory (with definitions/, forms/, rules/).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Where the store keeps its files.
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        /// Load demo users into an empty store (from DIR/examples/hospital, or --demo-dir).
        #[arg(long)]
        demo: bool,
        #[arg(long)]
        demo_dir: Option<PathBuf>,
    },
    /// Check the definitions; exit 1 and print every problem if there is any.
    Check {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Keep watching: check again on every save and print what changed
        /// (new and fixed problems) since the last check. Stop with Ctrl-C.
        #[arg(long)]
        watch: bool,
    },
    /// Write JSON Schemas of the definition language for editors (DIR/<kind>.json),
    /// offering the names this bundle declares.
    Schema {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a workflow's state machine as a diagram.
    Graph {
        workflow: String,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
        /// Language of the labels (zh-CN or en).
        #[arg(long, default_value = "zh-CN")]
        lang: String,
    },
    /// Issue an API token for a user in the store; the token is the last line printed.
    Token {
        #[arg(long)]
        user: String,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// The application directory (its roles and teams), when no server runs.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// A name to recognize the token by in `GET /api/v1/tokens`.
        #[arg(long, default_value = "cli")]
        name: String,
        /// How many days the token is valid (default 90).
        #[arg(long)]
        days: Option<i64>,
    },
    /// Manage users: add, set, disable, list, passwd. Works while the server
    /// runs (through its admin socket) and when it is stopped (on the store).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// What changed between two versions of the definitions: each side is a
    /// directory, a stored bundle version (with --data), or `current`.
    Diff {
        old: String,
        new: String,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// What-if: decide the recorded commands of past instances again under the
    /// definitions in --dir, write nothing, and report what would have gone
    /// differently. On a stopped store or a copy (while serving: POST /api/v1/admin/replay).
    Replay {
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// The changed definitions.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Only instances created in the last DAYS days.
        #[arg(long)]
        since: Option<u32>,
        #[arg(long)]
        workflow: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
        /// Language of the report (zh-CN or en).
        #[arg(long, default_value = "zh-CN")]
        lang: String,
        /// How many affected instances to list (the counts cover all).
        #[arg(long, default_value_t = 200)]
        list: usize,
    },
    /// Move the running instances of a workflow to another definitions version.
    /// Run it with the server stopped, or use POST /api/v1/admin/migrate.
    Migrate {
        #[arg(long)]
        workflow: String,
        /// A stored bundle version, or `current` (the definitions in --dir).
        #[arg(long, default_value = "current")]
        to: String,
        /// Map a state that no longer exists: --map old_state=new_state (repeatable).
        #[arg(long = "map", value_parser = parse_mapping)]
        map: Vec<(String, String)>,
        /// Only list what would happen.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[arg(long, value_enum, default_value_t = Format::Text)]
        format: Format,
    },
    /// Run YAML scenarios (given/when/then over the API, with a virtual clock)
    /// against the definitions in DIR, on a throw-away store: try a change
    /// before it goes live.
    Test {
        /// Scenario files, or folders of them (default: tests/scenarios).
        paths: Vec<PathBuf>,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Demo data to load first (default: DIR/examples/hospital when it exists).
        #[arg(long)]
        demo_dir: Option<PathBuf>,
        /// Report which states, transitions and guard outcomes the scenarios exercised.
        #[arg(long)]
        coverage: bool,
    },
    /// Import records from a CSV or Excel file: every row is checked first;
    /// nothing is written if any row is invalid (unless --skip-invalid).
    Import {
        /// The record type, e.g. `asset`.
        record_type: String,
        file: PathBuf,
        #[arg(long)]
        dry_run: bool,
        /// Import the valid rows and report the others.
        #[arg(long)]
        skip_invalid: bool,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        /// Language of the messages (zh-CN or en).
        #[arg(long, default_value = "zh-CN")]
        lang: String,
    },
    /// Export records as CSV (UTF-8 with BOM, for Excel) or xlsx.
    Export {
        record_type: String,
        /// Where to write; the format follows the extension (.csv or .xlsx).
        #[arg(long)]
        out: PathBuf,
        /// Filters as FIELD=VALUE (repeatable), `q=TEXT`, `under=FIELD:ID`.
        #[arg(long = "where", value_parser = parse_mapping)]
        filters: Vec<(String, String)>,
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        #[arg(long, default_value = "./data")]
        data: PathBuf,
        #[arg(long, default_value = "zh-CN")]
        lang: String,
    },
    /// Measure core transitions/s and durable commands/s on the application in DIR.
    Bench {
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Work orders to take through their whole lifecycle.
        #[arg(long, default_value_t = 20_000)]
        instances: usize,
        /// Concurrent clients in the durable run.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Work orders in the durable run.
        #[arg(long, default_value_t = 2_000)]
        durable_instances: usize,
        /// Measure save-to-live latency of hot reload instead (this many edits).
        #[arg(long)]
        reload: Option<usize>,
        /// Run the peers' "repair lifecycle" workload instead (on --dir bench/app),
        /// printing one JSON line: in the pure core, durable, or over HTTP.
        #[arg(long, value_enum)]
        workload: Option<flowform_bench::workload::Mode>,
        /// Work orders of the workload.
        #[arg(long, default_value_t = 10_000)]
        n: usize,
        /// Pace the HTTP clients to this many requests/s in all (latency from the scheduled send time).
        #[arg(long)]
        rate: Option<f64>,
        /// Keep the workload's store here (an empty directory) instead of a temporary one;
        /// with --scale, the store to generate (when empty) and measure.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Generate this many archived work orders of the hospital application into --data
        /// (unless it already has a store), then measure start-up, memory and queries.
        #[arg(long)]
        scale: Option<usize>,
        /// Assets the generated work orders refer to (with --scale).
        #[arg(long, default_value_t = 10_000)]
        assets: usize,
    },
}

#[derive(clap::Args)]
struct UserFields {
    /// Roles, comma-separated (declared in the definitions; `admin` always exists).
    #[arg(long, value_delimiter = ',')]
    roles: Option<Vec<String>>,
    /// Teams, comma-separated (declared in the definitions).
    #[arg(long, value_delimiter = ',')]
    teams: Option<Vec<String>>,
    /// The display name (e.g. 李护士).
    #[arg(long)]
    name: Option<String>,
    #[arg(long)]
    department: Option<String>,
    /// zh-CN or en.
    #[arg(long)]
    language: Option<String>,
    #[arg(long)]
    email: Option<String>,
}

#[derive(clap::Args)]
struct Where {
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    /// The application directory (its roles and teams), when no server runs.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user.
    Add {
        id: String,
        #[command(flatten)]
        fields: UserFields,
        #[command(flatten)]
        at: Where,
    },
    /// Change a user (only what is given).
    Set {
        id: String,
        #[command(flatten)]
        fields: UserFields,
        /// Enable a disabled user again.
        #[arg(long)]
        enable: bool,
        #[command(flatten)]
        at: Where,
    },
    /// Disable a user: their tokens and sessions stop working at once.
    Disable {
        id: String,
        #[command(flatten)]
        at: Where,
    },
    /// List the users.
    List {
        #[command(flatten)]
        at: Where,
    },
    /// Set a user's password, read from standard input (one line).
    Passwd {
        id: String,
        #[command(flatten)]
        at: Where,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check { dir, watch: true, .. } => check_watch(&dir),
        Command::Check { dir, format, watch: false } => check(&dir, format),
        Command::Schema { dir, out } => schema_cmd(&dir, &out).map(|_| ExitCode::SUCCESS),
        Command::Graph { workflow, dir, format, lang } => graph_cmd(&dir, &workflow, format, &lang).map(|_| ExitCode::SUCCESS),
        Command::Token { user, data, dir, name, days } => token(&user, &data, &dir, &name, days).map(|_| ExitCode::SUCCESS),
        Command::User { command } => user(command).map(|_| ExitCode::SUCCESS),
        Command::Serve { dir, data, addr, demo, demo_dir } => serve(dir, data, addr, demo, demo_dir).map(|_| ExitCode::SUCCESS),
        Command::Bench { dir, reload: Some(edits), .. } => flowform_bench::hospital::reload(&dir, edits).map(|_| ExitCode::SUCCESS),
        Command::Bench { dir, scale: Some(n), data, assets, .. } => {
            let data = data.ok_or_else(|| anyhow::anyhow!("--scale needs --data DIR (a store of about 5 GB per million work orders)"));
            data.and_then(|data| flowform_bench::scale::run(&std::env::current_exe()?, &dir, &data, n, assets)).map(|_| ExitCode::SUCCESS)
        }
        Command::Bench { dir, workload: Some(mode), n, clients, rate, data, .. } => {
            flowform_bench::workload::run(&flowform_bench::workload::Options { mode, n, clients, rate, dir, data }).map(|_| ExitCode::SUCCESS)
        }
        Command::Bench { dir, instances, clients, durable_instances, reload: None, .. } => {
            flowform_bench::hospital::run(&dir, instances, clients, durable_instances).map(|_| ExitCode::SUCCESS)
        }
        Command::Test { paths, dir, demo_dir, coverage } => test(paths, &dir, demo_dir, coverage),
        Command::Import { record_type, file, dry_run, skip_invalid, dir, data, lang } => import(&record_type, &file, dry_run, skip_invalid, &dir, &data, &lang),
        Command::Export { record_type, out, filters, dir, data, lang } => export(&record_type, &out, filters, &dir, &data, &lang).map(|_| ExitCode::SUCCESS),
        Command::Replay { data, dir, since, workflow, format, lang, list } => {
            replay_cmd(&data, &dir, since, workflow, format, &lang, list).map(|_| ExitCode::SUCCESS)
        }
        Command::Diff { old, new, data, format } => diff(&old, &new, &data, format).map(|_| ExitCode::SUCCESS),
        Command::Migrate { workflow, to, map, dry_run, dir, data, format } => migrate(workflow, to, map, dry_run, &dir, &data, format),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `check --watch`: polls the definitions (every 200 ms; a poll, not file
/// events, so it works on every file system and editor), checks again when
/// they change, and prints the problems that appeared (`+`) and were fixed
/// (`-`) since the last check, with how long the check took.
fn check_watch(dir: &Path) -> Result<ExitCode> {
    let mut last_sources: Option<flowform_model::Sources> = None;
    let mut last: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    let mut first = true;
    loop {
        let sources = match flowform_runtime::sources::read_dir(dir) {
            Ok(s) => s,
            Err(e) => {
                say!("check: cannot read {}: {e}", dir.display());
                std::thread::sleep(std::time::Duration::from_millis(500));
                continue;
            }
        };
        if last_sources.as_ref() == Some(&sources) {
            std::thread::sleep(std::time::Duration::from_millis(200));
            continue;
        }
        // A save may be caught half-written (an editor truncates, then
        // writes): check only what reads the same a moment later.
        std::thread::sleep(std::time::Duration::from_millis(60));
        if flowform_runtime::sources::read_dir(dir).ok().as_ref() != Some(&sources) {
            continue;
        }
        let started = std::time::Instant::now();
        let diags = match flowform_core::compile(sources.clone()) {
            Ok(bundle) => flowform_model::check::warnings(&bundle.model),
            Err(diags) => diags,
        };
        let took = started.elapsed();
        // Keyed by place, code and message: a problem that only moved lines is "new" and "fixed".
        let now: std::collections::BTreeMap<String, String> =
            diags.iter().map(|d| (format!("{}:{}:{} {} {}", d.file, d.line, d.column, d.code, d.message), d.render(sources.get(&d.file)))).collect();
        let added: Vec<&String> = now.keys().filter(|k| !last.contains_key(*k)).collect();
        let fixed: Vec<&String> = last.keys().filter(|k| !now.contains_key(*k)).collect();
        if first || !added.is_empty() || !fixed.is_empty() {
            for k in &fixed {
                say!("- fixed: {k}");
            }
            for k in &added {
                say_raw!("+ {}\n", now[*k]);
            }
            let state = if now.is_empty() { "ok".to_string() } else { format!("{} problem(s)", now.len()) };
            say!(
                "check: {state} — {} new, {} fixed ({:.0} ms); watching {} (Ctrl-C to stop)",
                added.len(),
                fixed.len(),
                took.as_secs_f64() * 1000.0,
                dir.display()
            );
        }
        first = false;
        last = now;
        last_sources = Some(sources);
    }
}

fn check(dir: &Path, format: Format) -> Result<ExitCode> {
    match load_bundle(dir) {
        Ok(bundle) => {
            let warnings = flowform_model::check::warnings(&bundle.model);
            match format {
                Format::Json => say!("{}", serde_json::json!({"ok": true, "version": bundle.version, "diagnostics": [], "warnings": warnings})),
                Format::Text => {
                    for w in &warnings {
                        let text = w.render(bundle.sources.get(&w.file));
                        say_raw!("{}\n", text.replacen("error[", "warning[", 1));
                    }
                    say!(
                        "ok: {} workflow(s), {} form(s), {} rule(s); bundle version {}",
                        bundle.model.workflows.len(),
                        bundle.model.forms.len(),
                        bundle.model.scripts.len(),
                        bundle.version
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Invalid(diags)) => {
            match format {
                Format::Json => {
                    say!("{}", serde_json::json!({"ok": false, "diagnostics": diags}))
                }
                Format::Text => {
                    let sources = flowform_runtime::sources::read_dir(dir).unwrap_or_default();
                    for d in &diags {
                        say_raw!("{}\n", d.render(sources.get(&d.file)));
                    }
                    say!("{} problem(s) found", diags.len());
                }
            }
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e).with_context(|| format!("cannot load {}", dir.display())),
    }
}

fn schema_cmd(dir: &Path, out: &Path) -> Result<()> {
    let sources = flowform_runtime::sources::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    // The names of the bundle as it is, even with problems: an author fixing one still wants completion.
    let (model, diags) = flowform_model::load_and_check(&sources);
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for (kind, schema) in flowform_model::schema::schemas(&model) {
        let path = out.join(format!("{kind}.json"));
        let text = serde_json::to_string_pretty(&schema)? + "\n";
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    say!("wrote {} schemas to {}", flowform_model::schema::KINDS.len(), out.display());
    if !diags.is_empty() {
        say!("note: the definitions have {} problem(s); `flowform check --dir {}` lists them", diags.len(), dir.display());
    }
    Ok(())
}

fn graph_cmd(dir: &Path, workflow: &str, format: GraphFormat, lang: &str) -> Result<()> {
    let bundle = load(dir)?;
    let Some(wf) = bundle.workflow(workflow) else {
        let names: Vec<&str> = bundle.model.workflows.keys().map(String::as_str).collect();
        bail!("unknown workflow `{workflow}`; workflows: {}", names.join(", "));
    };
    match format {
        GraphFormat::Mermaid => say_raw!("{}", graph::mermaid(wf, lang)),
        GraphFormat::Dot => say_raw!("{}", graph::dot(wf, lang)),
    }
    Ok(())
}

/// Loads the bundle or fails with every diagnostic in the message.
fn load(dir: &Path) -> Result<flowform_core::Bundle> {
    match load_bundle(dir) {
        Ok(b) => Ok(b),
        Err(LoadError::Invalid(diags)) => {
            let sources = flowform_runtime::sources::read_dir(dir).unwrap_or_default();
            let text: String = diags.iter().map(|d| d.render(sources.get(&d.file))).collect();
            bail!("the definitions in {} have {} problem(s):\n{text}run `flowform check --dir {}` after fixing them", dir.display(), diags.len(), dir.display())
        }
        Err(e) => Err(e).with_context(|| format!("cannot load {}", dir.display())),
    }
}

fn token(user: &str, data: &Path, dir: &Path, name: &str, days: Option<i64>) -> Result<()> {
    let answer = admin::token(dir, data, user, name, days)?;
    let secret = answer.get("token").and_then(serde_json::Value::as_str).ok_or_else(|| anyhow::anyhow!("no token in the answer"))?;
    let expires = answer.get("expires_at").and_then(serde_json::Value::as_str).unwrap_or_default();
    say!("API token for `{user}`, valid until {expires}. Send it as `Authorization: Bearer <token>`:");
    say!("{secret}");
    Ok(())
}

fn user(command: UserCommand) -> Result<()> {
    let fields =
        |f: UserFields| admin::UserArgs { roles: f.roles, teams: f.teams, name: f.name, department: f.department, language: f.language, email: f.email };
    let show = |v: &serde_json::Value| {
        let s = |k: &str| v.get(k).and_then(serde_json::Value::as_str).unwrap_or_default().to_string();
        let list = |k: &str| {
            v.get(k).and_then(serde_json::Value::as_array).map(|a| a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(",")).unwrap_or_default()
        };
        let disabled = if v.get("disabled").and_then(serde_json::Value::as_bool) == Some(true) { "  (disabled)" } else { "" };
        format!("{}\t{}\troles={}\tteams={}{disabled}", s("id"), s("name"), list("roles"), list("teams"))
    };
    match command {
        UserCommand::Add { id, fields: f, at } => {
            let v = admin::user_add(&at.dir, &at.data, &id, fields(f))?;
            say!("added {}", show(&v));
        }
        UserCommand::Set { id, fields: f, enable, at } => {
            let v = admin::user_set(&at.dir, &at.data, &id, fields(f), enable.then_some(false))?;
            say!("changed {}", show(&v));
        }
        UserCommand::Disable { id, at } => {
            let none = admin::UserArgs { roles: None, teams: None, name: None, department: None, language: None, email: None };
            let v = admin::user_set(&at.dir, &at.data, &id, none, Some(true))?;
            say!("disabled {}", show(&v));
        }
        UserCommand::List { at } => {
            let v = admin::user_list(&at.dir, &at.data)?;
            for u in v.get("items").and_then(serde_json::Value::as_array).into_iter().flatten() {
                say!("{}", show(u));
            }
        }
        UserCommand::Passwd { id, at } => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("cannot read the password from standard input")?;
            let password = line.trim_end_matches(['\r', '\n']);
            admin::user_passwd(&at.dir, &at.data, &id, password)?;
            say!("password of `{id}` changed; their sessions were ended");
        }
    }
    Ok(())
}

fn parse_mapping(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((a, b)) if !a.trim().is_empty() && !b.trim().is_empty() => Ok((a.trim().to_string(), b.trim().to_string())),
        _ => Err(format!("`{s}` is not old_state=new_state")),
    }
}

fn open_store(data: &Path) -> Result<RedbStore> {
    match RedbStore::open(data) {
        Err(flowform_store::StoreError::Locked { .. }) => {
            bail!("the store in {} is held by a running server; stop it, or use the admin API (docs/api.md)", data.display())
        }
        other => other.with_context(|| format!("cannot open the store in {}", data.display())),
    }
}

fn replay_cmd(data: &Path, dir: &Path, since: Option<u32>, workflow: Option<String>, format: Format, lang: &str, list: usize) -> Result<()> {
    if !data.join("flowform.redb").is_file() {
        bail!("there is no store in {} (expected {}); name it with --data", data.display(), data.join("flowform.redb").display());
    }
    let lang = flowform_core::Lang::from_accept_language(lang).ok_or_else(|| anyhow::anyhow!("unknown language `{lang}`; use zh-CN or en"))?;
    let candidate = Arc::new(load(dir)?);
    let store = open_store(data)?;
    let compiled: std::sync::Mutex<std::collections::HashMap<String, Option<Arc<flowform_core::Bundle>>>> = Default::default();
    let old = |version: &str| -> Option<Arc<flowform_core::Bundle>> {
        if version == candidate.version {
            return Some(candidate.clone());
        }
        let mut cache = compiled.lock().ok()?;
        cache
            .entry(version.to_string())
            .or_insert_with(|| store.bundle(version).ok().flatten().and_then(|s| flowform_core::compile(s).ok()).map(Arc::new))
            .clone()
    };
    let opts = flowform_runtime::replay::ReplayOptions { since_days: since, workflow, lang, list };
    let started = std::time::Instant::now();
    let report = flowform_runtime::replay::replay(&store, &candidate, &old, &opts, flowform_runtime::clock::Clock::time(&SystemClock))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    match format {
        Format::Json => say!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            say_raw!("{}", flowform_runtime::replay::render_text(&report, lang));
            say!("({:.1} s)", started.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

fn diff(old: &str, new: &str, data: &Path, format: Format) -> Result<()> {
    let mut store: Option<RedbStore> = None;
    let mut side = |spec: &str| -> Result<flowform_core::Bundle> {
        let path = Path::new(spec);
        if path.is_dir() {
            return load(path);
        }
        if store.is_none() {
            store = Some(open_store(data)?);
        }
        let store = store.as_ref().context("store")?;
        let version = if spec == "current" { store.current_bundle()?.context("the store has no current version")? } else { spec.to_string() };
        let Some(sources) = store.bundle(&version)? else {
            let known = store.bundle_versions()?;
            bail!("`{spec}` is neither a directory nor a stored version; stored versions: {}", known.join(", "));
        };
        flowform_core::compile(sources).map_err(|d| anyhow::anyhow!("stored version {version} no longer compiles ({} problems)", d.len()))
    };
    let (a, b) = (side(old)?, side(new)?);
    let diff = flowform_core::diff::diff(&a, &b);
    match format {
        Format::Json => say!("{}", serde_json::to_string_pretty(&diff)?),
        Format::Text => say_raw!("{}", diff.to_text()),
    }
    Ok(())
}

fn migrate(workflow: String, to: String, map: Vec<(String, String)>, dry_run: bool, dir: &Path, data: &Path, format: Format) -> Result<ExitCode> {
    let bundle = load(dir)?;
    let store: Arc<dyn Store> = Arc::new(open_store(data)?);
    let runtime = Runtime::new(bundle, store, Arc::new(SystemClock))?;
    let req = flowform_runtime::migrate::MigrationRequest { workflow, to, map: map.into_iter().collect(), dry_run };
    let actor = flowform_core::Actor {
        id: "cli".into(),
        name: "flowform migrate".into(),
        roles: vec!["admin".into()],
        teams: Vec::new(),
        email: None,
        department: None,
    };
    let report = runtime.migrate(&req, &actor).map_err(|e| anyhow::anyhow!("{e}"))?;
    match format {
        Format::Json => say!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => {
            say!("workflow `{}` → version {}{}", report.workflow, report.to_version, if report.dry_run { " (dry run: nothing changes)" } else { "" });
            for a in &report.affected {
                if a.to_state.is_empty() {
                    say!("  {} (version {}, state `{}`): cannot move", a.id, a.from_version, a.state);
                } else {
                    say!("  {} (version {}, state `{}`) → state `{}`", a.id, a.from_version, a.state, a.to_state);
                }
            }
            for b in &report.blocked {
                for p in &b.problems {
                    say!("  blocked {}: {p}", b.id);
                }
            }
            if report.affected.is_empty() {
                say!("no running instance is on another version");
            } else if !report.blocked.is_empty() {
                say!("refused: {} of {} instance(s) cannot move; nothing was migrated", report.blocked.len(), report.affected.len());
            } else if !report.dry_run {
                say!("migrated {} instance(s)", report.migrated);
            }
        }
    }
    Ok(if report.blocked.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn test(paths: Vec<PathBuf>, dir: &Path, demo_dir: Option<PathBuf>, show_coverage: bool) -> Result<ExitCode> {
    let paths = if paths.is_empty() { vec![dir.join("tests/scenarios")] } else { paths };
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut found: Vec<PathBuf> =
                std::fs::read_dir(&p)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml")).collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p);
        }
    }
    if files.is_empty() {
        bail!("no scenario files found");
    }
    let bundle = load(dir)?;
    let demo = demo_dir.or_else(|| Some(dir.join("examples/hospital")).filter(|d| d.is_dir()));
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut failed = 0;
    let mut coverage = flowform_testkit::scenario::Coverage::default();
    for f in &files {
        match rt.block_on(flowform_testkit::scenario::run_file_covered(f, dir, demo.as_deref(), &mut coverage)) {
            Ok(()) => say!("ok    {}", f.display()),
            Err(e) => {
                failed += 1;
                say!("FAIL  {}\n      {e}", f.display());
            }
        }
    }
    say!("{} scenario(s), {} failed", files.len(), failed);
    if show_coverage {
        say!("\ncoverage (what the scenarios exercised):\n{}", coverage.report(&bundle).trim_end());
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn lang_of(lang: &str) -> flowform_core::Lang {
    if lang.starts_with("en") { flowform_core::Lang::En } else { flowform_core::Lang::ZhCn }
}

fn offline_runtime(dir: &Path, data: &Path) -> Result<Runtime> {
    let bundle = load(dir)?;
    let store: Arc<dyn Store> = Arc::new(open_store(data)?);
    Ok(Runtime::new(bundle, store, Arc::new(SystemClock))?)
}

#[allow(clippy::too_many_arguments)]
fn import(record_type: &str, file: &Path, dry_run: bool, skip_invalid: bool, dir: &Path, data: &Path, lang: &str) -> Result<ExitCode> {
    let table = flowform_runtime::import::read_table(file)?;
    let runtime = offline_runtime(dir, data)?;
    let actor = flowform_core::Actor {
        id: "import".into(),
        name: "flowform import".into(),
        roles: vec!["admin".into()],
        teams: Vec::new(),
        email: None,
        department: None,
    };
    let report = runtime.import(record_type, &table, dry_run, skip_invalid, &actor, lang_of(lang))?;
    for e in &report.errors {
        say!("{}: row {}: {}: {}", file.display(), e.row, if e.field.is_empty() { "-" } else { &e.field }, e.message);
    }
    let bad_rows: std::collections::BTreeSet<usize> = report.errors.iter().map(|e| e.row).collect();
    if report.dry_run {
        say!("dry run: {} row(s), {} valid, {} invalid; nothing written", report.rows, report.valid, bad_rows.len());
    } else if report.imported == 0 && !report.errors.is_empty() {
        say!("{} of {} row(s) are invalid; nothing was imported (fix them, or use --skip-invalid)", bad_rows.len(), report.rows);
    } else {
        say!(
            "imported {} {} record(s){}",
            report.imported,
            record_type,
            if bad_rows.is_empty() { String::new() } else { format!("; skipped {} invalid row(s)", bad_rows.len()) }
        );
    }
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn export(record_type: &str, out: &Path, filters: Vec<(String, String)>, dir: &Path, data: &Path, lang: &str) -> Result<()> {
    let runtime = offline_runtime(dir, data)?;
    let mut query = flowform_runtime::records::RecordQuery { limit: 1000, ..Default::default() };
    for (k, v) in filters {
        match k.as_str() {
            "q" => query.q = Some(v),
            "under" => query.under = v.split_once(':').map(|(a, b)| (a.to_string(), b.to_string())),
            _ => query.filters.push((k, v)),
        }
    }
    let (header, rows) = runtime.export_table(record_type, &query, lang_of(lang))?;
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let bytes = match ext.as_str() {
        "csv" => flowform_runtime::import::to_csv(&header, &rows)?,
        "xlsx" => flowform_runtime::import::to_xlsx(record_type, &header, &rows, &runtime.numeric_columns(record_type)?)?,
        _ => bail!("--out must end in .csv or .xlsx"),
    };
    std::fs::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))?;
    say!("exported {} {} record(s) to {}", rows.len(), record_type, out.display());
    Ok(())
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FLOWFORM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("FLOWFORM_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt().with_env_filter(filter).json().init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

fn serve(dir: PathBuf, data: PathBuf, addr: String, demo: bool, demo_dir: Option<PathBuf>) -> Result<()> {
    init_logging();
    let store: Arc<dyn Store> = Arc::new(open_store(&data)?);
    // Closed at a clean stop: background threads may still hold the runtime.
    let closing = store.clone();
    // Broken files at start-up: serve the last good version from the store, if any.
    let (bundle, rejected) = match load_bundle(&dir) {
        Ok(b) => (b, None),
        Err(LoadError::Invalid(diags)) => match store.current_bundle()?.and_then(|v| store.bundle(&v).ok().flatten()) {
            Some(sources) => {
                let bundle = flowform_core::compile(sources).map_err(|d| anyhow::anyhow!("the last good version no longer compiles ({} problems)", d.len()))?;
                let files = flowform_runtime::sources::read_dir(&dir).unwrap_or_default();
                for d in &diags {
                    say_raw!("{}\n", d.render(files.get(&d.file)));
                }
                say!(
                    "warning: the definitions in {} have {} problem(s); serving the last good version {} until they are fixed",
                    dir.display(),
                    diags.len(),
                    bundle.version
                );
                (bundle, Some(diags))
            }
            None => return load(&dir).map(|_| ()),
        },
        Err(e) => return Err(e).with_context(|| format!("cannot load {}", dir.display())),
    };
    let version = bundle.version.clone();
    let max_upload = match std::env::var("FLOWFORM_MAX_UPLOAD_MB") {
        Ok(v) => {
            v.trim()
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .context("FLOWFORM_MAX_UPLOAD_MB must be a whole number of megabytes from 1 to 1024")?
                * 1024
                * 1024
        }
        Err(_) => flowform_runtime::files::DEFAULT_MAX_BYTES,
    };
    let files =
        flowform_runtime::files::FileStore::open(&data.join("files"), max_upload).with_context(|| format!("cannot create {}", data.join("files").display()))?;
    let runtime = Arc::new(
        Runtime::new(bundle, store, Arc::new(SystemClock)).context("cannot record the bundle in the store")?.with_app_dir(dir.clone()).with_files(files),
    );
    // Users and tokens of a store from before accounts moved into it.
    if let Some(legacy) = flowform_store::LegacyAuth::read(&data).context("cannot read the old auth.redb")? {
        let n = runtime.import_legacy_accounts(&legacy).map_err(|e| anyhow::anyhow!("cannot import auth.redb: {e}"))?;
        legacy.retire().context("cannot rename the imported auth.redb")?;
        say!("imported {n} users and tokens from {} (renamed to auth.redb.imported)", legacy.path.display());
    }
    if demo {
        let demo_dir = demo_dir.unwrap_or_else(|| dir.join("examples/hospital"));
        let loaded = flowform_runtime::demo::load(&demo_dir, &runtime).context("cannot load the demo data")?;
        if loaded.users.is_empty() && loaded.records.is_empty() && loaded.movements == 0 {
            say!("demo: the store already has the demo data; nothing loaded");
        } else {
            say!("demo: loaded {} users ({}) from {}", loaded.users.len(), loaded.users.join(", "), demo_dir.display());
            for (t, n) in &loaded.records {
                say!("demo: {n} {t} records");
            }
            if loaded.movements > 0 {
                say!("demo: {} opening stock movements", loaded.movements);
            }
        }
    }
    if let Some(diags) = rejected {
        runtime.set_rejected(diags);
    }
    // Report facts are read into memory in the background: the server
    // answers at once (reports read the store until they are ready).
    {
        let runtime = runtime.clone();
        std::thread::spawn(move || {
            let started = std::time::Instant::now();
            for workflow in runtime.report_workflows() {
                runtime.build_report_facts(&workflow);
            }
            tracing::info!(seconds = started.elapsed().as_secs_f64(), "report facts ready");
        });
    }
    let watch_setting = std::env::var("FLOWFORM_WATCH").unwrap_or_default();
    let _watcher = if watch_setting == "off" {
        None
    } else {
        let mode = if watch_setting == "poll" { WatchMode::Poll } else { WatchMode::Auto };
        let w = watch(runtime.clone(), mode).context("cannot watch the definitions")?;
        tracing::info!(polling = w.polling, "watching definitions/, forms/, rules/ for changes");
        runtime.set_watcher(true);
        Some(w)
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // Bound before anything else is set up, so that a wrong address stops the start cleanly.
        let metrics_listener = match std::env::var("FLOWFORM_METRICS_ADDR").ok().filter(|a| !a.trim().is_empty()) {
            Some(metrics_addr) => Some(
                tokio::net::TcpListener::bind(metrics_addr.trim()).await.with_context(|| format!("FLOWFORM_METRICS_ADDR: cannot listen on {metrics_addr}"))?,
            ),
            None => None,
        };
        // The CLI's socket exists before the server says it serves.
        let socket = admin::socket_path(&data);
        let admin_listener = match flowform_server::bind_admin_socket(&socket) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, socket = %socket.display(), "the admin socket is not available; `flowform user` needs the server stopped");
                None
            }
        };
        let shutdown = shutdown_signal();
        say!("flowform: serving {} (bundle {version}) on http://{local}", dir.display());
        say!("get an API token with: flowform token --user admin --data {}", data.display());
        tracing::info!(%local, bundle = %version, "listening");
        reload_on_sighup(runtime.clone());
        runtime.set_retention(retention()?);
        fire_timers(runtime.clone());
        let trusted_proxies = std::env::var("FLOWFORM_TRUSTED_PROXIES")
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().with_context(|| format!("FLOWFORM_TRUSTED_PROXIES: `{s}` is not an IP address")))
            .collect::<Result<Vec<std::net::IpAddr>>>()?;
        let config = flowform_server::auth::AuthConfig { behind_proxy: behind_proxy(), trusted_proxies };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        // `/metrics` without a token, on an address of its own (for a scraper inside the network).
        let metrics = match metrics_listener {
            Some(listener) => {
                say!("flowform: metrics at http://{}/metrics (no token)", listener.local_addr()?);
                let runtime = runtime.clone();
                let mut stop = stop_rx.clone();
                Some(tokio::spawn(async move {
                    let shutdown = async move {
                        let _ = stop.wait_for(|s| *s).await;
                    };
                    if let Err(e) = flowform_server::metrics::serve_open(listener, runtime, shutdown).await {
                        tracing::warn!(error = %e, "the metrics address stopped");
                    }
                }))
            }
            None => None,
        };
        let app = flowform_server::app_with(runtime, config);
        let admin_app = app.clone();
        let admin = tokio::spawn(async move {
            let mut stop = stop_rx;
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Some(listener) = admin_listener
                && let Err(e) = flowform_server::serve_admin_listener(listener, &socket, admin_app, shutdown).await
            {
                tracing::warn!(error = %e, "the admin socket stopped");
            }
        });
        flowform_server::serve(listener, app, shutdown).await.context("server failed")?;
        let _ = stop_tx.send(true);
        let _ = admin.await;
        if let Some(m) = metrics {
            let _ = m.await;
        }
        // Everything into the database: the log is empty after a clean stop.
        closing.close();
        tracing::info!("stopped");
        Ok(())
    })
}

/// `FLOWFORM_KEEP_OUTBOX_DAYS` (30), `FLOWFORM_KEEP_LEDGER_EVENTS_DAYS` (90),
/// `FLOWFORM_KEEP_IDEMPOTENCY_DAYS` (30); `0` keeps forever.
fn retention() -> Result<flowform_runtime::health::Retention> {
    let days = |name: &str, default: i64| -> Result<Option<i64>> {
        match std::env::var(name) {
            Err(_) => Ok(Some(default)),
            Ok(v) => match v.trim().parse::<i64>() {
                Ok(0) => Ok(None),
                Ok(d) if d > 0 => Ok(Some(d)),
                _ => bail!("{name} must be a number of days (0: keep forever), not `{v}`"),
            },
        }
    };
    Ok(flowform_runtime::health::Retention {
        outbox_days: days("FLOWFORM_KEEP_OUTBOX_DAYS", 30)?,
        ledger_events_days: days("FLOWFORM_KEEP_LEDGER_EVENTS_DAYS", 90)?,
        idempotency_days: days("FLOWFORM_KEEP_IDEMPOTENCY_DAYS", 30)?,
    })
}

/// `FLOWFORM_BEHIND_PROXY=1`: a reverse proxy terminates TLS in front of the
/// server (cookies are `Secure`; the client address is from `X-Forwarded-For`).
fn behind_proxy() -> bool {
    matches!(std::env::var("FLOWFORM_BEHIND_PROXY").as_deref(), Ok("1") | Ok("true"))
}

/// Every second: starts what schedules are due, fires due timers (they are
/// stored, so a restart re-arms them) and delivers pending outbox messages,
/// outside any command.
fn fire_timers(runtime: Arc<Runtime>) {
    // Deliveries to outside channels in a loop of their own: a slow or dead
    // endpoint never holds up timers and schedules.
    let outbox = runtime.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            let runtime = outbox.clone();
            let error = match tokio::task::spawn_blocking(move || runtime.deliver_outbox()).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(format!("outbox: {e}")),
                Err(e) => Some(format!("outbox round panicked: {e}")),
            };
            if let Some(e) = &error {
                tracing::warn!(error = %e, "a delivery round failed; retrying");
            }
            outbox.delivery_done(error);
        }
    });
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            // Each part of a round in a task of its own: an error or even a
            // panic is logged and reported in /healthz, and the loop goes on.
            let mut error: Option<String> = None;
            let schedules = tokio::spawn({
                let runtime = runtime.clone();
                async move { runtime.run_schedules().await }
            });
            match schedules.await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => error = Some(format!("schedules: {e}")),
                Err(e) => error = Some(format!("schedules panicked: {e}")),
            }
            let blocking = tokio::task::spawn_blocking({
                let runtime = runtime.clone();
                move || {
                    if let Err(e) = runtime.prune_daily() {
                        tracing::warn!(error = %e, "pruning failed; it is tried again tomorrow");
                    }
                    if let Err(e) = runtime.compact_store_step() {
                        tracing::warn!(error = %e, "rewriting old events and instances compactly failed; it is tried again in a second");
                    }
                    (runtime.notify_ledger_events(), runtime.fire_due_timers())
                }
            });
            match blocking.await {
                Ok((ledger, timers)) => {
                    if let Err(e) = ledger {
                        error.get_or_insert(format!("ledger notifications: {e}"));
                    }
                    match timers {
                        Ok(n) if n > 0 => tracing::info!(fired = n, "timers fired"),
                        Err(e) => {
                            error.get_or_insert(format!("timers: {e}"));
                        }
                        _ => {}
                    }
                }
                Err(e) => {
                    error.get_or_insert(format!("timer round panicked: {e}"));
                }
            }
            if let Some(e) = &error {
                tracing::warn!(error = %e, "a timer round failed; retrying");
            }
            runtime.tick_done(error);
        }
    });
}

/// SIGHUP reloads the definitions, like a saved file or POST /api/v1/admin/reload.
fn reload_on_sighup(runtime: Arc<Runtime>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            let runtime = runtime.clone();
            let _ = tokio::task::spawn_blocking(move || runtime.reload()).await;
        }
    });
    #[cfg(not(unix))]
    let _ = runtime;
}

/// Resolves on Ctrl-C or SIGTERM. The handlers are installed when this is
/// called (not when first polled), so a signal sent right after the server
/// announced its address is never missed.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let interrupt = tokio::signal::ctrl_c();
    async move {
        #[cfg(unix)]
        let terminate = async move {
            match terminate {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            _ = interrupt => {},
            _ = terminate => {},
        }
    }
}
