//! `flowform`: the command line. Glue only: parse arguments, call the library
//! crates, print. See `flowform --help`.

mod bench;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use flowform_core::graph;
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
#[command(
    name = "flowform",
    version,
    about = "Flowform: a low-code workflow engine driven by YAML and Rhai"
)]
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
        Command::Graph {
            workflow,
            dir,
            format,
            lang,
        } => graph_cmd(&dir, &workflow, format, &lang).map(|_| ExitCode::SUCCESS),
        Command::Token { user, data } => token(&user, &data).map(|_| ExitCode::SUCCESS),
        Command::Serve {
            dir,
            data,
            addr,
            demo,
            demo_dir,
        } => serve(dir, data, addr, demo, demo_dir).map(|_| ExitCode::SUCCESS),
        Command::Bench {
            dir,
            instances,
            clients,
            durable_instances,
        } => bench::run(&dir, instances, clients, durable_instances).map(|_| ExitCode::SUCCESS),
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
                Format::Json => say!(
                    "{}",
                    serde_json::json!({"ok": true, "version": bundle.version, "diagnostics": []})
                ),
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
        bail!(
            "unknown workflow `{workflow}`; workflows: {}",
            names.join(", ")
        );
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
            let text: String = diags
                .iter()
                .map(|d| d.render(sources.get(&d.file)))
                .collect();
            bail!(
                "the definitions in {} have {} problem(s):\n{text}run `flowform check --dir {}` after fixing them",
                dir.display(),
                diags.len(),
                dir.display()
            )
        }
        Err(e) => Err(e).with_context(|| format!("cannot load {}", dir.display())),
    }
}

fn token(user: &str, data: &Path) -> Result<()> {
    let auth = RedbStore::auth_only(data);
    let users = auth.users().context("cannot read the users")?;
    let token = tokens::issue(
        user,
        |u| Ok(users.iter().any(|x| x.id == u)),
        |h, u| auth.add_token(h, u),
    )?;
    match token {
        Some(token) => {
            let roles = users
                .iter()
                .find(|u| u.id == user)
                .map(|u| u.roles.join(", "))
                .unwrap_or_default();
            say!(
                "API token for `{user}` (roles: {roles}). Send it as `Authorization: Bearer <token>`:"
            );
            say!("{token}");
            Ok(())
        }
        None if users.is_empty() => bail!(
            "there are no users in {}; start the server once with `flowform serve --demo --data {}` to load the demo users",
            data.display(),
            data.display()
        ),
        None => bail!(
            "no user `{user}` in {}; users: {}",
            data.display(),
            users
                .iter()
                .map(|u| u.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("FLOWFORM_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if std::env::var("FLOWFORM_LOG_FORMAT").is_ok_and(|f| f == "json") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
}

fn serve(
    dir: PathBuf,
    data: PathBuf,
    addr: String,
    demo: bool,
    demo_dir: Option<PathBuf>,
) -> Result<()> {
    init_logging();
    let bundle = load(&dir)?;
    let store: Arc<dyn Store> = Arc::new(
        RedbStore::open(&data)
            .with_context(|| format!("cannot open the store in {}", data.display()))?,
    );
    if demo {
        let demo_dir = demo_dir.unwrap_or_else(|| dir.join("examples/hospital"));
        let loaded = flowform_runtime::demo::load(&demo_dir, &bundle, store.as_ref())
            .context("cannot load the demo data")?;
        if loaded.is_empty() {
            say!("demo: the store already has users; nothing loaded");
        } else {
            say!(
                "demo: loaded {} users from {}: {}",
                loaded.len(),
                demo_dir.display(),
                loaded
                    .iter()
                    .map(|u| u.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let version = bundle.version.clone();
    let runtime = Arc::new(
        Runtime::new(bundle, store, Arc::new(SystemClock))
            .context("cannot record the bundle in the store")?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        say!(
            "flowform: serving {} (bundle {version}) on http://{local}",
            dir.display()
        );
        say!(
            "get an API token with: flowform token --user admin --data {}",
            data.display()
        );
        tracing::info!(%local, bundle = %version, "listening");
        flowform_server::serve(listener, flowform_server::app(runtime), shutdown_signal())
            .await
            .context("server failed")?;
        tracing::info!("stopped");
        Ok(())
    })
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
