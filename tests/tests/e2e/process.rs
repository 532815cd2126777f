//! The runtime as a real process (the `brokerbox serve` command), for what only a process can
//! show: a SIGKILL in the middle of operations, a SIGTERM, several replicas on one database.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The `brokerbox` command built by this crate.
pub const BINARY: &str = env!("CARGO_BIN_EXE_brokerbox-under-test");

/// One `brokerbox serve` process.
pub struct RuntimeProcess {
    child: Option<Child>,
    /// Where it listens.
    pub addr: String,
    data_dir: PathBuf,
    brokers_dir: PathBuf,
    state_url: Option<String>,
    extra: Vec<String>,
    /// Environment variables set for the process.
    envs: Vec<(String, String)>,
    /// Where its stderr goes (inherited when `None`).
    log: Option<PathBuf>,
}

/// A free loopback port (bound, then released for the process to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RuntimeProcess {
    /// Starts `brokerbox serve` on `data_dir` and `brokers_dir` (state in `state_url`, or
    /// SQLite under the data dir), with `extra` arguments, and waits until it answers.
    pub async fn start(
        data_dir: &Path,
        brokers_dir: &Path,
        state_url: Option<String>,
        extra: &[&str],
    ) -> Self {
        Self::start_logged(data_dir, brokers_dir, state_url, extra, &[], None).await
    }

    /// [`RuntimeProcess::start`] with environment variables `envs` set and stderr written to
    /// `log` (appended, across restarts).
    pub async fn start_logged(
        data_dir: &Path,
        brokers_dir: &Path,
        state_url: Option<String>,
        extra: &[&str],
        envs: &[(&str, &str)],
        log: Option<&Path>,
    ) -> Self {
        let mut process = RuntimeProcess {
            child: None,
            addr: String::new(),
            data_dir: data_dir.to_path_buf(),
            brokers_dir: brokers_dir.to_path_buf(),
            state_url,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            envs: (envs.iter())
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            log: log.map(Path::to_path_buf),
        };
        process.spawn().await;
        process
    }

    async fn spawn(&mut self) {
        self.addr = format!("127.0.0.1:{}", free_port());
        let mut command = Command::new(BINARY);
        command
            .args(["serve", "--listen", &self.addr, "--data-dir"])
            .arg(&self.data_dir)
            .arg("--brokers-dir")
            .arg(&self.brokers_dir)
            .args(&self.extra)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(log) = &self.log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("the log file opens");
            command.stderr(file);
        }
        if let Some(url) = &self.state_url {
            command.args(["--state", url]);
        }
        self.child = Some(command.spawn().expect("brokerbox starts"));
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(&self.addr).await.is_ok() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("brokerbox exited at start: {status}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("brokerbox did not listen on {}", self.addr);
    }

    /// The process's resident memory, in KiB (from `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("a running process");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// The base URL of broker `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/brokers/{name}", self.addr)
    }

    /// Kills the process with SIGKILL: no clean-up of any kind.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("SIGKILL");
        }
    }

    /// Sends SIGTERM and waits (up to `limit`) for the process to exit; returns how long it took.
    pub async fn terminate(&mut self, limit: Duration) -> Duration {
        let mut child = self.child.take().expect("a running process");
        let pid = child.id().expect("a pid").to_string();
        let started = Instant::now();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success(), "kill -TERM");
        let exit = tokio::time::timeout(limit, child.wait())
            .await
            .expect("exits in time")
            .unwrap();
        assert!(exit.success(), "clean exit after SIGTERM: {exit}");
        started.elapsed()
    }

    /// Starts the process again on the same directories and state.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}

/// The state store of a process test: a fresh PostgreSQL database when the suite runs on
/// PostgreSQL, else SQLite under the data dir.
pub async fn state_url() -> Option<String> {
    use brokerbox_tests::postgres;
    match postgres::server() {
        Some(server) if postgres::suite_on_postgres() => {
            Some(postgres::fresh_database(&server).await)
        }
        _ => None,
    }
}
