//! `flowform`: the command line. Glue only: parse arguments, call the library
//! crates, print. See `flowform --help`.

mod bench;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use flowform_core::graph;
use flowform_runtime::watch::{WatchMode, watch};
use flowform_runtime::{LoadError, Runtime, SystemClock, load_bundle, tokens};
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
        Command::Check { dir, format } => check(&dir, format),
        Command::Graph { workflow, dir, format, lang } => graph_cmd(&dir, &workflow, format, &lang).map(|_| ExitCode::SUCCESS),
        Command::Token { user, data } => token(&user, &data).map(|_| ExitCode::SUCCESS),
        Command::Serve { dir, data, addr, demo, demo_dir } => serve(dir, data, addr, demo, demo_dir).map(|_| ExitCode::SUCCESS),
        Command::Bench { dir, reload: Some(edits), .. } => bench::reload(&dir, edits).map(|_| ExitCode::SUCCESS),
        Command::Bench { dir, instances, clients, durable_instances, reload: None } => {
            bench::run(&dir, instances, clients, durable_instances).map(|_| ExitCode::SUCCESS)
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

fn check(dir: &Path, format: Format) -> Result<ExitCode> {
    match load_bundle(dir) {
        Ok(bundle) => {
            match format {
                Format::Json => say!("{}", serde_json::json!({"ok": true, "version": bundle.version, "diagnostics": []})),
                Format::Text => say!(
                    "ok: {} workflow(s), {} form(s), {} rule(s); bundle version {}",
                    bundle.model.workflows.len(),
                    bundle.model.forms.len(),
                    bundle.model.scripts.len(),
                    bundle.version
                ),
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

fn token(user: &str, data: &Path) -> Result<()> {
    let auth = RedbStore::auth_only(data);
    let users = auth.users().context("cannot read the users")?;
    let token = tokens::issue(user, |u| Ok(users.iter().any(|x| x.id == u)), |h, u| auth.add_token(h, u))?;
    match token {
        Some(token) => {
            let roles = users.iter().find(|u| u.id == user).map(|u| u.roles.join(", ")).unwrap_or_default();
            say!("API token for `{user}` (roles: {roles}). Send it as `Authorization: Bearer <token>`:");
            say!("{token}");
            Ok(())
        }
        None if users.is_empty() => bail!(
            "there are no users in {}; start the server once with `flowform serve --demo --data {}` to load the demo users",
            data.display(),
            data.display()
        ),
        None => bail!("no user `{user}` in {}; users: {}", data.display(), users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>().join(", ")),
    }
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
    let actor = flowform_core::Actor { id: "cli".into(), name: "flowform migrate".into(), roles: vec!["admin".into()], teams: Vec::new() };
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
    if demo {
        let demo_dir = demo_dir.unwrap_or_else(|| dir.join("examples/hospital"));
        let loaded = flowform_runtime::demo::load(&demo_dir, &bundle, store.as_ref()).context("cannot load the demo data")?;
        if loaded.is_empty() {
            say!("demo: the store already has users; nothing loaded");
        } else {
            say!("demo: loaded {} users from {}: {}", loaded.len(), demo_dir.display(), loaded.iter().map(|u| u.id.as_str()).collect::<Vec<_>>().join(", "));
        }
    }
    let version = bundle.version.clone();
    let runtime = Arc::new(Runtime::new(bundle, store, Arc::new(SystemClock)).context("cannot record the bundle in the store")?.with_app_dir(dir.clone()));
    if let Some(diags) = rejected {
        runtime.set_rejected(diags);
    }
    let watch_setting = std::env::var("FLOWFORM_WATCH").unwrap_or_default();
    let _watcher = if watch_setting == "off" {
        None
    } else {
        let mode = if watch_setting == "poll" { WatchMode::Poll } else { WatchMode::Auto };
        let w = watch(runtime.clone(), mode).context("cannot watch the definitions")?;
        tracing::info!(polling = w.polling, "watching definitions/, forms/, rules/ for changes");
        Some(w)
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        say!("flowform: serving {} (bundle {version}) on http://{local}", dir.display());
        say!("get an API token with: flowform token --user admin --data {}", data.display());
        tracing::info!(%local, bundle = %version, "listening");
        reload_on_sighup(runtime.clone());
        flowform_server::serve(listener, flowform_server::app(runtime), shutdown_signal()).await.context("server failed")?;
        tracing::info!("stopped");
        Ok(())
    })
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

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
