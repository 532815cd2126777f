//! `brokerbox dev`: builds the project, serves it on localhost with an embedded data dir
//! (`.brokerbox/` in the project), watches the sources, and rebuilds and hot-reloads on every
//! save. A build that fails is reported and the last good version keeps serving.

use super::Project;
use crate::config::ServeConfig;
use crate::server::Runtime;
use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Quiet time after a source change before the rebuild (an editor's save is several events).
const SETTLE: Duration = Duration::from_millis(300);

/// Options of `brokerbox dev`.
#[derive(Debug, Clone, clap::Args)]
pub struct DevArgs {
    /// The project's directory.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Where to serve.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
}

/// Directories whose changes are the build's own, or tools', not the author's.
fn ignored(project: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(project) else {
        return true;
    };
    relative.components().any(|c| {
        matches!(
            c.as_os_str().to_str(),
            Some("build" | "target" | ".brokerbox" | "node_modules" | "__pycache__" | ".git")
        )
    }) || relative
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') || n.ends_with('~') || n.ends_with(".swp"))
}

/// Builds and copies the result into the served brokers dir (each file renamed into place,
/// so the runtime's watcher never reads half a file). Prints what happened.
async fn build_and_install(project: &Project, brokers: &Path) -> bool {
    eprintln!(
        "brokerbox dev: building {} ({})",
        project.name,
        project.lang.title()
    );
    match super::build::build(project).await {
        Ok(valid) => {
            let result = (|| -> anyhow::Result<()> {
                for ext in ["toml", "wasm"] {
                    let from = project.out_dir().join(format!("{}.{ext}", project.name));
                    let staged = brokers.join(format!(".{}.{ext}.tmp", project.name));
                    std::fs::copy(&from, &staged)?;
                    std::fs::rename(&staged, brokers.join(format!("{}.{ext}", project.name)))?;
                }
                Ok(())
            })();
            match result {
                Ok(()) => {
                    eprintln!("brokerbox dev: built {valid}");
                    true
                }
                Err(e) => {
                    eprintln!("brokerbox dev: cannot install the build: {e:#}");
                    false
                }
            }
        }
        Err(e) => {
            eprintln!(
                "brokerbox dev: the build failed, the last good version keeps serving:\n  {e:#}"
            );
            false
        }
    }
}

/// Runs the loop until Ctrl-C.
///
/// # Errors
/// No project in the directory, or a runtime that cannot start.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let project = Project::find(&args.dir)?;
    let state = project.dir.join(".brokerbox");
    let brokers = state.join("brokers");
    std::fs::create_dir_all(&brokers)?;
    // The first build; without a good one yet, the runtime starts empty and serves the broker
    // from the first build that succeeds.
    build_and_install(&project, &brokers).await;

    let mut config = ServeConfig::new(state.join("data"), &brokers);
    config.listen = args.listen;
    config.watch = true;
    config.artifacts_dir = Some(super::embedded::tools_dir().join("artifacts"));
    let runtime = Runtime::load(&config).await?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    print_how_to_reach(&project, args.listen);
    let mut server = tokio::spawn(runtime.serve(listener, crate::cli::shutdown_signal()));

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let root = project.dir.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let relevant =
                event.kind.is_modify() || event.kind.is_create() || event.kind.is_remove();
            if relevant && event.paths.iter().any(|p| !ignored(&root, p)) {
                let _ = tx.send(());
            }
        }
    })?;
    watcher.watch(&project.dir, RecursiveMode::Recursive)?;
    eprintln!(
        "brokerbox dev: watching {} (Ctrl-C stops)",
        project.dir.display()
    );
    loop {
        tokio::select! {
            changed = rx.recv() => {
                if changed.is_none() {
                    return server.await?;
                }
                // Let the burst of events of one save settle, then build once.
                while tokio::time::timeout(SETTLE, rx.recv()).await.is_ok_and(|e| e.is_some()) {}
                build_and_install(&project, &brokers).await;
            }
            result = &mut server => return result?,
        }
    }
}

/// Prints the broker's URL, credentials and the line that registers it with Cloud Foundry.
fn print_how_to_reach(project: &Project, listen: SocketAddr) {
    let url = format!("http://{listen}/brokers/{}", project.name);
    let manifest = crate::manifest::Manifest::load(&project.manifest()).ok();
    let user = manifest
        .as_ref()
        .map_or_else(|| "?".to_string(), |m| m.credentials.username.clone());
    let password = manifest
        .and_then(|m| m.credentials.password)
        .unwrap_or_else(|| "(the password of your password_hash)".to_string());
    eprintln!("brokerbox dev: serving {} at {url}", project.name);
    eprintln!("  user {user}, password {password}, X-Broker-API-Version: 2.17");
    eprintln!(
        "  cf create-service-broker {} {user} {password} {url} --space-scoped",
        project.name
    );
    eprintln!(
        "  brokerbox check {url} --user {user} --password {password} --examples {}",
        project.manifest().display()
    );
}
