//! The `brokerbox` command line: parse it, set up logging, run the runtime or the checker.
//! The binary is a thin wrapper around [`run`].

use crate::{Runtime, ServeConfig};
use anyhow::Context;
use clap::{Parser, Subcommand};

/// Hosts Open Service Broker brokers compiled to WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines on stderr are written: text, or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "BROKERBOX_LOG_FORMAT"
    )]
    log_format: crate::telemetry::logs::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Serves every NAME.wasm (with its NAME.toml manifest) of the brokers dir over OSB.
    Serve(Box<ServeConfig>),
    /// Prints the argon2 hash of the password read from standard input (one line), for a
    /// manifest's `credentials.password_hash`.
    HashPassword,
    /// Manages the brokers of a running runtime through its admin API.
    Admin {
        /// The runtime's URL.
        #[arg(
            long,
            global = true,
            env = "BROKERBOX_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        url: String,
        /// An operator or tenant token from the runtime's config file.
        #[arg(long, global = true, env = "BROKERBOX_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: crate::admin::client::AdminAction,
    },
    /// Checks any OSB broker against the OSB rules brokerbox enforces, over HTTP.
    ///
    /// It discovers ids from the catalog and creates and deletes real instances and bindings.
    Check {
        /// The broker's URL, as a platform registers it (before `/v2`).
        url: String,
        /// Basic-auth user name.
        #[arg(long)]
        user: String,
        /// Basic-auth password.
        #[arg(long, env = "BROKERBOX_CHECK_PASSWORD")]
        password: String,
        /// Also run the `[[examples]]` of this manifest (NAME.toml) as acceptance tests: each
        /// one's provision, bind, credentials schema, unbind and deprovision.
        #[arg(long, value_name = "MANIFEST")]
        examples: Option<std::path::PathBuf>,
    },
    /// Makes a new broker project (manifest, source, build config, README) that builds and
    /// passes `brokerbox check --examples` as generated.
    New(crate::author::new::NewArgs),
    /// Builds the broker project in DIR with its language's pinned tool, checks the result as
    /// the runtime would, and writes build/NAME.wasm and build/NAME.toml.
    Build {
        /// The project's directory.
        #[arg(default_value = ".")]
        dir: std::path::PathBuf,
    },
    /// Builds and serves the project on localhost, rebuilding and reloading on every save.
    Dev(crate::author::dev::DevArgs),
    /// Checks a component and its manifest offline, as the runtime does before a version goes
    /// live (world, catalog and schemas, manifest, limits, examples).
    Validate {
        /// The component, NAME.wasm.
        wasm: std::path::PathBuf,
        /// Its manifest (default: NAME.toml beside it).
        manifest: Option<std::path::PathBuf>,
    },
}

/// Parses the command line and runs what it asks for.
///
/// # Errors
/// A bad configuration, a broker that fails to load, or a listener that fails.
pub async fn run() -> anyhow::Result<()> {
    run_from(std::env::args_os()).await
}

/// Like [`run`], with the command line `args` (the first being the program name).
///
/// # Errors
/// As [`run`].
pub async fn run_from<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let command = cli.command;
    // The runtime's own lines matter when it serves; the tools print their own results.
    let default_level = match command {
        Command::Serve(_) | Command::Dev(_) => "info",
        _ => "warn",
    };
    let traces = match &command {
        Command::Serve(config) => (config.otlp_endpoint.as_deref())
            .filter(|e| !e.is_empty())
            .map(crate::telemetry::traces::Traces::start)
            .transpose()?,
        _ => None,
    };
    crate::telemetry::logs::init(cli.log_format, default_level, traces.as_ref());
    match command {
        Command::Serve(mut config) => {
            config.read_config_file()?;
            let served = serve(*config).await;
            if let Some(traces) = traces {
                // Sends the last batch; blocking, so off the async threads.
                let _ = tokio::task::spawn_blocking(move || traces.shutdown()).await;
            }
            served
        }
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            println!(
                "{}",
                crate::auth::hash_password(password.trim_end_matches(['\r', '\n']))?
            );
            Ok(())
        }
        Command::Admin { url, token, action } => {
            let token = token.context(
                "no admin token: pass --token TOKEN or set BROKERBOX_TOKEN (an operator or tenant token of the runtime's config)",
            )?;
            crate::admin::client::run(&url, &token, action).await
        }
        Command::Check {
            url,
            user,
            password,
            examples,
        } => {
            let examples = match examples {
                Some(path) => crate::manifest::Manifest::load(&path)?.examples,
                None => Vec::new(),
            };
            let report = crate::check::run(&url, &user, &password, &examples).await?;
            print!("{}", report.render());
            if report.failed() > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::New(args) => {
            let dir = crate::author::new::create(&args)?;
            println!(
                "made {} ({}) in {}",
                args.name,
                args.lang.title(),
                dir.display()
            );
            println!("next: cd {} && brokerbox dev", dir.display());
            Ok(())
        }
        Command::Build { dir } => {
            let project = crate::author::Project::find(&dir)?;
            let valid = crate::author::build::build(&project).await?;
            println!("{valid}");
            println!("wrote {} and its manifest", project.wasm().display());
            Ok(())
        }
        Command::Dev(args) => crate::author::dev::run(args).await,
        Command::Validate { wasm, manifest } => {
            let manifest =
                manifest.unwrap_or_else(|| crate::author::validate::manifest_beside(&wasm));
            let valid = crate::author::validate::validate(&wasm, &manifest, None, None).await?;
            println!("{valid}");
            Ok(())
        }
    }
}

/// `brokerbox serve`: loads the runtime, says where each broker is served, serves until
/// Ctrl-C or SIGTERM.
async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let runtime = Runtime::load(&config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let listen = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (--metrics-listen)"))?,
        ),
        None => None,
    };
    for broker in runtime.generation().all() {
        let url = format!("http://{listen}/brokers/{}", broker.name);
        tracing::info!(broker = %broker.name, %url, "serving");
    }
    runtime.log_summary(listen, metrics_listener.as_ref());
    runtime
        .serve_with(listener, metrics_listener, shutdown_signal())
        .await
}

/// Completes on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut signal) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            signal.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
