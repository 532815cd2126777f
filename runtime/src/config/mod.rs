//! Every setting of a runtime in one place: `brokerbox serve`'s flags (each with its
//! environment variable and its default, named once), the config file they point to (admin
//! token, tenants and their quotas, see [`mod@file`]), and the edge settings derived from both.
//! A broker's own settings are its manifest ([`crate::manifest`]).

pub mod file;

pub use file::{AdminConfig, RuntimeConfig, Tenant};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default data dir (state, granted directories, kept versions, compiled artifacts).
pub const DEFAULT_DATA_DIR: &str = "./data";
/// Default brokers dir.
pub const DEFAULT_BROKERS_DIR: &str = "./brokers";
/// Default request body limit: far above any real OSB request.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;
/// Default lease of a running operation, in ms: the runtime renews it every third of it;
/// another runtime takes the operation over once it expires.
pub const DEFAULT_LEASE_MS: u64 = 10_000;
/// Shortest lease accepted, in ms.
pub const MIN_LEASE_MS: u64 = 100;
/// Default time a shutdown waits for running guest calls, in ms, before leaving them to
/// recovery.
pub const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 20_000;
/// Default and largest number of guest instances alive at once across all brokers.
pub const MAX_LIVE_INSTANCES: u32 = crate::sandbox::MAX_LIVE_INSTANCES;

/// `brokerbox serve`'s settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeConfig {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN, env = "BROKERBOX_LISTEN")]
    pub listen: SocketAddr,
    /// Directory for state (SQLite database) and granted broker directories.
    #[arg(long, default_value = DEFAULT_DATA_DIR, env = "BROKERBOX_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Directory holding NAME.wasm + NAME.toml pairs.
    #[arg(long, default_value = DEFAULT_BROKERS_DIR, env = "BROKERBOX_BROKERS_DIR")]
    pub brokers_dir: PathBuf,
    /// Where compiled components are kept (default: DATA_DIR/artifacts). Several runtimes of
    /// the same build may share one directory, so a large component compiles once.
    #[arg(long, env = "BROKERBOX_ARTIFACTS_DIR")]
    pub artifacts_dir: Option<PathBuf>,
    /// State store URL (default: sqlite://DATA_DIR/brokerbox.db).
    #[arg(long = "state", env = "BROKERBOX_STATE")]
    pub state_url: Option<String>,
    /// Serve the OSB API (and the admin API) over TLS on --listen with this PEM certificate
    /// chain (with --tls-key); both files are read again when they change.
    #[arg(long, env = "BROKERBOX_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "BROKERBOX_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Also serve plain HTTP on this address (for loopback setups, e.g. 127.0.0.1:8081) while
    /// --listen serves TLS.
    #[arg(long, env = "BROKERBOX_PLAIN_LISTEN", requires = "tls_cert")]
    pub plain_listen: Option<SocketAddr>,
    /// The keyring file holding the master key that opens the stored secrets (default:
    /// DATA_DIR/keyring.toml, made on first start; or the key itself, base64, in
    /// BROKERBOX_KEYRING_KEY).
    #[arg(long, env = "BROKERBOX_KEYRING")]
    pub keyring: Option<PathBuf>,
    /// Largest accepted request body, in bytes.
    #[arg(long, default_value_t = DEFAULT_BODY_LIMIT)]
    pub body_limit: usize,
    /// Lease of a running operation, in ms: another replica takes it over once it expires.
    #[arg(long, default_value_t = DEFAULT_LEASE_MS,
          value_parser = clap::value_parser!(u64).range(MIN_LEASE_MS..))]
    pub lease_ms: u64,
    /// How long a shutdown (SIGTERM, Ctrl-C) waits for running guest calls, in ms.
    #[arg(long, default_value_t = DEFAULT_SHUTDOWN_GRACE_MS)]
    pub shutdown_grace_ms: u64,
    /// Reload a broker when its NAME.wasm or NAME.toml changes (or appears).
    #[arg(long)]
    pub watch: bool,
    /// Guest instances alive at once across all brokers (at most 1000); each broker may use a
    /// quarter of them, and a fifth is reserved for brokers that find the rest busy.
    #[arg(long, default_value_t = MAX_LIVE_INSTANCES,
          value_parser = clap::value_parser!(u32).range(10..=i64::from(MAX_LIVE_INSTANCES)))]
    pub max_instances: u32,
    /// The runtime's config file: admin API token, tenants and their quotas.
    #[arg(long = "config", env = "BROKERBOX_CONFIG")]
    pub config_file: Option<PathBuf>,
    /// Exit at start-up when any broker cannot serve as it is in the brokers dir (for CI
    /// pipelines), instead of quarantining it and serving the others.
    #[arg(long)]
    pub strict: bool,
    /// Serve `/metrics` (and `/healthz`, `/readyz`) on this address only, not on the OSB
    /// listener: e.g. an address only the monitoring network reaches.
    #[arg(long, env = "BROKERBOX_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Export traces to the OpenTelemetry collector at this URL, over OTLP/HTTP with protobuf
    /// (e.g. http://127.0.0.1:4318; `/v1/traces` is added unless given).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// The config file's contents (see [`ServeConfig::read_config_file`]).
    #[arg(skip)]
    pub runtime_config: RuntimeConfig,
}

impl ServeConfig {
    /// A config with defaults for everything but the two directories.
    pub fn new(data_dir: impl Into<PathBuf>, brokers_dir: impl Into<PathBuf>) -> Self {
        ServeConfig {
            listen: DEFAULT_LISTEN.parse().expect("a valid default address"),
            data_dir: data_dir.into(),
            brokers_dir: brokers_dir.into(),
            artifacts_dir: None,
            state_url: None,
            keyring: None,
            tls_cert: None,
            tls_key: None,
            plain_listen: None,
            body_limit: DEFAULT_BODY_LIMIT,
            lease_ms: DEFAULT_LEASE_MS,
            shutdown_grace_ms: DEFAULT_SHUTDOWN_GRACE_MS,
            watch: false,
            max_instances: MAX_LIVE_INSTANCES,
            config_file: None,
            strict: false,
            metrics_listen: None,
            otlp_endpoint: None,
            runtime_config: RuntimeConfig::default(),
        }
    }

    /// Reads the config file named by `--config`, if any, into `runtime_config`.
    ///
    /// # Errors
    /// When the file is missing or invalid; the message names it.
    pub fn read_config_file(&mut self) -> anyhow::Result<()> {
        if let Some(file) = &self.config_file {
            self.runtime_config = RuntimeConfig::load(file)?;
        }
        Ok(())
    }

    /// The lease of running operations.
    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms.max(MIN_LEASE_MS))
    }

    /// How long a shutdown waits for running guest calls.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    /// The settings of the OSB edge.
    pub fn edge(&self) -> EdgeConfig {
        let tenants = &self.runtime_config.tenants;
        EdgeConfig {
            body_limit: self.body_limit,
            tenant_max_instances: tenants
                .iter()
                .filter_map(|t| Some((t.name.clone(), t.max_instances?)))
                .collect(),
            tenant_max_operations: tenants
                .iter()
                .filter_map(|t| Some((t.name.clone(), t.max_concurrent_operations?)))
                .collect(),
        }
    }
}

/// Settings of the OSB edge.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Most instances the brokers of each tenant may hold together.
    pub tenant_max_instances: HashMap<String, u64>,
    /// Most operations the brokers of each tenant may run at once.
    pub tenant_max_operations: HashMap<String, u64>,
}
