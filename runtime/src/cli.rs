//! The `brokerbox` command line: parse it, set up logging, run the runtime or the checker.
//! The binary is a thin wrapper around [`run`].

use crate::{Runtime, ServeConfig};
use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use tracing_subscriber::EnvFilter;

/// Hosts Open Service Broker brokers compiled to WebAssembly components.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves every NAME.wasm (with its NAME.toml manifest) of the brokers dir over OSB.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8080", env = "BROKERBOX_LISTEN")]
        listen: SocketAddr,
        /// Directory for state (SQLite database) and granted broker directories.
        #[arg(long, default_value = "./data", env = "BROKERBOX_DATA_DIR")]
        data_dir: PathBuf,
        /// Directory holding NAME.wasm + NAME.toml pairs.
        #[arg(long, default_value = "./brokers", env = "BROKERBOX_BROKERS_DIR")]
        brokers_dir: PathBuf,
        /// State store URL (default: sqlite://DATA_DIR/brokerbox.db).
        #[arg(long, env = "BROKERBOX_STATE")]
        state: Option<String>,
        /// Largest accepted request body, in bytes.
        #[arg(long, default_value_t = crate::osb::DEFAULT_BODY_LIMIT)]
        body_limit: usize,
        /// Lease of a running operation, in ms: another replica takes it over once it expires.
        #[arg(long, default_value_t = 10_000)]
        lease_ms: u64,
        /// How long a shutdown (SIGTERM, Ctrl-C) waits for running guest calls, in ms.
        #[arg(long, default_value_t = 20_000)]
        shutdown_grace_ms: u64,
        /// Reload a broker when its NAME.wasm or NAME.toml changes (or appears).
        #[arg(long)]
        watch: bool,
        /// Guest instances alive at once across all brokers (at most 1000); each broker may
        /// use a quarter of them, and a fifth is reserved for brokers that find the rest busy.
        #[arg(long, default_value_t = crate::sandbox::MAX_LIVE_INSTANCES,
              value_parser = clap::value_parser!(u32).range(10..=i64::from(crate::sandbox::MAX_LIVE_INSTANCES)))]
        max_instances: u32,
        /// The runtime's config file: admin API token, tenants and their quotas.
        #[arg(long, env = "BROKERBOX_CONFIG")]
        config: Option<PathBuf>,
        /// Exit at start-up when any broker cannot serve as it is in the brokers dir (for CI
        /// pipelines), instead of quarantining it and serving the others.
        #[arg(long)]
        strict: bool,
    },
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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse_from(args).command {
        Command::Serve {
            listen,
            data_dir,
            brokers_dir,
            state,
            body_limit,
            lease_ms,
            shutdown_grace_ms,
            watch,
            max_instances,
            config: config_file,
            strict,
        } => {
            let mut config = ServeConfig::new(data_dir, brokers_dir);
            config.state_url = state;
            config.body_limit = body_limit;
            config.lease = std::time::Duration::from_millis(lease_ms.max(100));
            config.shutdown_grace = std::time::Duration::from_millis(shutdown_grace_ms);
            config.watch = watch;
            config.max_instances = max_instances;
            config.strict = strict;
            if let Some(file) = config_file {
                config.runtime_config = crate::admin::config::RuntimeConfig::load(&file)?;
            }
            let runtime = Runtime::load(&config).await?;
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            for broker in runtime.generation().all() {
                tracing::info!(broker = %broker.name, url = %format!("http://{listen}/brokers/{}", broker.name), "serving");
            }
            runtime.serve(listener, shutdown_signal()).await
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
        } => {
            let report = crate::check::run(&url, &user, &password).await?;
            print!("{}", report.render());
            if report.failed() > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
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
