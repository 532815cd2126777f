//! The Python peer: the file broker written natively on `openbrokerapi` (bench/peers), served by
//! gunicorn with 2 sync workers, as people run Python brokers today. The bench installs both
//! from PyPI into a project-local venv (`target/bench-venv`) the first time it needs them.

use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The versions installed (pinned, so runs compare).
const PACKAGES: [&str; 2] = ["openbrokerapi==4.7.3", "gunicorn==27.0.1"];

/// The workspace root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench crate is in the workspace")
        .to_path_buf()
}

/// The venv with openbrokerapi and gunicorn, created on first use.
fn venv() -> anyhow::Result<PathBuf> {
    let venv = root().join("target/bench-venv");
    let gunicorn = venv.join("bin/gunicorn");
    if gunicorn.exists() {
        return Ok(venv);
    }
    let run = |command: &mut Command| -> anyhow::Result<()> {
        let status = command.status().with_context(|| format!("{command:?}"))?;
        if !status.success() {
            bail!("{command:?} failed: {status}");
        }
        Ok(())
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check"])
        .args(PACKAGES))?;
    Ok(venv)
}

/// A running gunicorn serving the peer; killed when dropped.
pub struct PythonPeer {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for PythonPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PythonPeer {
    /// Starts the peer as broker `name` with `catalog`, its instance files in `files`.
    ///
    /// # Errors
    /// When Python, the venv or gunicorn cannot be set up, or the peer does not answer.
    pub fn start(name: &str, catalog: &serde_json::Value, files: &Path) -> anyhow::Result<Self> {
        let venv = venv()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new(venv.join("bin/gunicorn"))
            .args([
                "--workers",
                "2",
                "--bind",
                &addr.to_string(),
                "--log-level",
                "warning",
            ])
            .arg("--chdir")
            .arg(root().join("bench/peers"))
            .arg("openbrokerapi_peer:app")
            .env("PEER_BROKER", name)
            .env("PEER_FILES", files)
            .env("PEER_CATALOG", catalog.to_string())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start gunicorn")?;
        let peer = PythonPeer { child, addr };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("the openbrokerapi peer did not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(peer)
    }

    /// The CPU time its processes (gunicorn's master and workers) used so far.
    pub fn cpu(&self) -> Duration {
        crate::stats::process_tree_cpu(self.child.id())
    }
}
