//! The `brokerbox` command line: parse it, set up logging, run the runtime or the checker.
//! The binary is a thin wrapper around [`run`].

use crate::{Runtime, ServeConfig};
use anyhow::Context;
use clap::{Parser, Subcommand};
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
    Serve(ServeConfig),
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
        Command::Serve(mut config) => {
            config.read_config_file()?;
            serve(config).await
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

/// `brokerbox serve`: loads the runtime, says where each broker is served, serves until
/// Ctrl-C or SIGTERM.
async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let listen = config.listen;
    let runtime = Runtime::load(&config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    for broker in runtime.generation().all() {
        let url = format!("http://{listen}/brokers/{}", broker.name);
        tracing::info!(broker = %broker.name, %url, "serving");
    }
    runtime.serve(listener, shutdown_signal()).await
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
