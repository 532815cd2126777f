//! Test harness: start a brokerbox runtime on an ephemeral loopback port with real guest
//! components, and talk OSB to it over real HTTP.

use anyhow::Context;
use base64::Engine as _;
use brokerbox::{RunningServer, ServeConfig};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub mod postgres;

/// Paths of the guest components, built by this crate's build script.
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A runtime under test with its own data and brokers directories.
pub struct TestRuntime {
    /// Holds the data and brokers directories.
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database, when the suite runs on PostgreSQL.
    state_url: Option<String>,
    /// Changes to the default config.
    adjust: Box<dyn Fn(&mut ServeConfig) + Send + Sync>,
    server: Option<RunningServer>,
    client: reqwest::Client,
}

/// An OSB answer: status, JSON body (`Null` when empty or not JSON), headers.
pub use brokerbox::client::Answer;

impl TestRuntime {
    /// A runtime serving the given `(name, wasm path, manifest text)` brokers.
    pub async fn start(brokers: &[(&str, &str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(brokers, |_| {}).await
    }

    /// [`TestRuntime::start`] with the runtime's config adjusted by `adjust`.
    pub async fn start_with(
        brokers: &[(&str, &str, &str)],
        adjust: impl Fn(&mut ServeConfig) + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        init_logs();
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("brokers"))?;
        for (name, wasm, manifest) in brokers {
            std::fs::copy(wasm, dir.path().join(format!("brokers/{name}.wasm")))
                .with_context(|| format!("copy {wasm}"))?;
            std::fs::write(dir.path().join(format!("brokers/{name}.toml")), manifest)?;
        }
        let state_url = match postgres::server() {
            Some(server) if postgres::suite_on_postgres() => {
                Some(postgres::fresh_database(&server).await)
            }
            _ => None,
        };
        let mut runtime = TestRuntime {
            dir,
            state_url,
            adjust: Box::new(adjust),
            server: None,
            client: reqwest::Client::new(),
        };
        runtime.boot().await?;
        Ok(runtime)
    }

    /// A runtime serving the two examples with their own manifests.
    pub async fn examples() -> anyhow::Result<Self> {
        let manifest = |name: &str| {
            std::fs::read_to_string(repo_root().join(format!("examples/{name}/{name}.toml")))
                .unwrap()
        };
        Self::start(&[
            ("file-broker", guests::FILE_BROKER, &manifest("file-broker")),
            ("slow-broker", guests::SLOW_BROKER, &manifest("slow-broker")),
        ])
        .await
    }

    /// The runtime's config.
    pub fn config(&self) -> ServeConfig {
        let data = self.dir.path().join("data");
        let mut config = ServeConfig::new(data, self.dir.path().join("brokers"));
        config.state_url = self.state_url.clone();
        (self.adjust)(&mut config);
        config
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        let server = RunningServer::start(&self.config(), "127.0.0.1:0".parse()?).await?;
        self.server = Some(server);
        Ok(())
    }

    /// Stops the runtime and starts a new one on the same directories.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await?;
        }
        self.boot().await
    }

    /// Stops the runtime; [`TestRuntime::restart`] starts it again.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(server) = self.server.take() {
            server.stop().await?;
        }
        Ok(())
    }

    /// The state as it lies at rest: SQLite's database file and its WAL, or the PostgreSQL
    /// database dumped by `pg_dump` (every table's rows as text when `pg_dump` is missing).
    pub async fn raw_state(&self) -> Vec<u8> {
        match &self.state_url {
            None => {
                let mut raw = Vec::new();
                for file in ["brokerbox.db", "brokerbox.db-wal"] {
                    let path = self.dir.path().join("data").join(file);
                    raw.extend(std::fs::read(path).unwrap_or_default());
                }
                raw
            }
            Some(url) => {
                let dumped = std::process::Command::new("pg_dump")
                    .args(["--data-only", url])
                    .output();
                if let Some(dump) = dumped.ok().filter(|d| d.status.success()) {
                    return dump.stdout;
                }
                let mut raw = Vec::new();
                for table in [
                    "instances",
                    "bindings",
                    "operations",
                    "kv",
                    "audit",
                    "data_keys",
                ] {
                    let sql = format!("SELECT CAST(t AS TEXT) AS r FROM {table} t");
                    for row in self.state_rows(&sql).await {
                        raw.extend(row.into_bytes());
                    }
                }
                raw
            }
        }
    }

    /// The text column `r` of each row `sql` selects in the state store.
    pub async fn state_rows(&self, sql: &str) -> Vec<String> {
        use sqlx::{Connection as _, Row as _};
        match &self.state_url {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
                rows.iter().map(|r| r.get::<String, _>("r")).collect()
            }
            None => {
                let mut conn = sqlx::SqliteConnection::connect(&self.sqlite_url())
                    .await
                    .unwrap();
                let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap();
                rows.iter().map(|r| r.get::<String, _>("r")).collect()
            }
        }
    }

    /// The count `n` that `sql` answers in the state store.
    pub async fn state_count(&self, sql: &str) -> i64 {
        use sqlx::{Connection as _, Row as _};
        match &self.state_url {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::query(sql)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
                    .get("n")
            }
            None => {
                let mut conn = sqlx::SqliteConnection::connect(&self.sqlite_url())
                    .await
                    .unwrap();
                sqlx::query(sql)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap()
                    .get("n")
            }
        }
    }

    /// Runs the statements of `sql` on the state store (while the runtime is stopped).
    pub async fn state_execute(&self, sql: &str) {
        use sqlx::Connection as _;
        match &self.state_url {
            Some(url) => {
                let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
            None => {
                let mut conn = sqlx::SqliteConnection::connect(&self.sqlite_url())
                    .await
                    .unwrap();
                sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
            }
        }
    }

    /// The PostgreSQL database's URL, when the suite runs on PostgreSQL.
    pub fn state_url(&self) -> Option<&str> {
        self.state_url.as_deref()
    }

    /// Whether the state store is PostgreSQL.
    pub fn on_postgres(&self) -> bool {
        self.state_url.is_some()
    }

    fn sqlite_url(&self) -> String {
        let path = self.dir.path().join("data/brokerbox.db");
        format!("sqlite://{}", path.display())
    }

    /// The base URL of broker `name`.
    pub fn url(&self, name: &str) -> String {
        format!(
            "http://{}/brokers/{name}",
            self.server.as_ref().unwrap().addr
        )
    }

    /// The running server (for its reloader).
    pub fn server(&self) -> &RunningServer {
        self.server.as_ref().expect("a running server")
    }

    /// The granted files directory of broker `name`.
    pub fn files_dir(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("data/brokers")
            .join(name)
            .join("files")
            .canonicalize()
            .unwrap()
    }

    /// Sends an OSB request as broker `name`'s platform (its credentials are `NAME`/`NAME-secret`
    /// in the example manifests) with API version 2.17.
    pub async fn osb(&self, method: Method, name: &str, path: &str, body: Option<Value>) -> Answer {
        let body = as_platform_sends(&method, path, body);
        let secret = format!("{name}-secret");
        brokerbox::client::Client::with_http(self.client.clone(), &self.url(name), name, &secret)
            .call(method, path, body.as_ref())
            .await
            .expect("the runtime answers")
    }

    /// Sends a request built by the caller.
    pub async fn send(&self, request: reqwest::RequestBuilder, body: Option<Value>) -> Answer {
        let request = match body {
            Some(body) => request.json(&body),
            None => request,
        };
        let response = request.send().await.expect("the runtime answers");
        Answer::read(response).await.expect("a body")
    }

    /// A raw client for requests the helpers do not build.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Polls an instance's (or binding's) last_operation until it is no longer in progress.
    pub async fn poll_until_done(
        &self,
        name: &str,
        resource_path: &str,
        operation: &str,
    ) -> Answer {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            let answer = self
                .osb(
                    Method::GET,
                    name,
                    &format!("{resource_path}/last_operation?operation={operation}"),
                    None,
                )
                .await;
            if answer.status != StatusCode::OK || answer.body["state"] != "in progress" {
                return answer;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("operation {operation} never finished");
    }
}

/// A provision body as platforms send it: with `organization_guid` and `space_guid` (both
/// required by OSB) unless the test set them itself (set one to `null` to leave it out).
pub fn as_platform_sends(method: &Method, path: &str, body: Option<Value>) -> Option<Value> {
    let provision = *method == Method::PUT
        && path.contains("/service_instances/")
        && !path.contains("/service_bindings/");
    match body {
        Some(Value::Object(mut fields)) if provision => {
            for key in ["organization_guid", "space_guid"] {
                fields
                    .entry(key)
                    .or_insert_with(|| Value::String(format!("test-{key}")));
            }
            Some(Value::Object(fields))
        }
        other => other,
    }
}

/// `Platform base64(JSON)` for the originating identity header.
pub fn originating_identity(platform: &str, value: &Value) -> String {
    format!(
        "{platform} {}",
        base64::engine::general_purpose::STANDARD.encode(value.to_string())
    )
}

/// Starts a local "cloud API" on 127.0.0.1 that answers `GET /ping` with `pong`, for the
/// outbound-HTTP tests; returns its port.
pub async fn ping_api() -> u16 {
    // `/ping` answers `pong`; `/redirect?to=URL` answers a 302 to URL.
    let api = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = api.local_addr().unwrap().port();
    let redirect = |axum::extract::Query(to): axum::extract::Query<
        std::collections::HashMap<String, String>,
    >| async move {
        let to = to.get("to").cloned().unwrap_or_default();
        (axum::http::StatusCode::FOUND, [("location", to)])
    };
    let app = axum::Router::new()
        .route("/ping", axum::routing::get(|| async { "pong" }))
        .route("/redirect", axum::routing::get(redirect));
    tokio::spawn(async move { axum::serve(api, app).await });
    port
}

/// A manifest with credentials `NAME`/`NAME-secret` and extra TOML appended.
pub fn manifest(name: &str, extra: &str) -> String {
    format!("[credentials]\nusername = \"{name}\"\npassword = \"{name}-secret\"\n{extra}")
}

/// Sends the runtime's logs to the test output when `RUST_LOG` is set.
pub fn init_logs() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Sends one OSB request to `url` as broker `name`'s platform (credentials `NAME`/`NAME-secret`,
/// API version 2.17); returns the status and the JSON body (`Null` when not JSON).
pub async fn send_osb(
    method: Method,
    url: String,
    name: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = as_platform_sends(&method, &url, body);
    let http = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .expect("an HTTP client");
    let client = brokerbox::client::Client::with_http(http, "", name, &format!("{name}-secret"));
    let answer = client
        .call(method, &url, body.as_ref())
        .await
        .expect("the runtime answers");
    (answer.status, answer.body)
}

/// A TCP proxy on loopback in front of `upstream` (a database, say) that a test can cut off
/// and restore, to see how the runtime lives through an outage.
pub struct CutProxy {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// The generation of connections: bumping it closes every older one.
    generation: tokio::sync::watch::Sender<u64>,
}

impl CutProxy {
    /// Starts forwarding to `upstream` (`HOST:PORT`).
    pub async fn start(upstream: String) -> Self {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (tx, rx) = tokio::sync::watch::channel(0u64);
        let accepting = open.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !accepting.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let upstream = upstream.clone();
                let mut generation = rx.clone();
                let born = *generation.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = generation.wait_for(|g| *g != born) => {}
                    }
                });
            }
        });
        CutProxy {
            addr,
            open,
            generation: tx,
        }
    }

    /// Closes every forwarded connection and refuses new ones until [`CutProxy::restore`].
    pub fn cut_off(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The value of the Prometheus sample `name` whose labels are exactly `labels`, in the text
/// `metrics` (0 when there is no such series).
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    wanted.sort();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let mut have: Vec<String> = if series_labels.is_empty() {
            Vec::new()
        } else {
            series_labels.split(',').map(str::to_string).collect()
        };
        have.sort();
        if have == wanted {
            return value.parse().expect("a number");
        }
    }
    0.0
}
