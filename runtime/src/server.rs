//! Starting and stopping a runtime: open the state store, build the engine, load the brokers,
//! start the operation worker, serve the OSB API on a listener until shutdown, then drain.

pub use crate::config::ServeConfig;
use crate::ops::{self, OpsRuntime};
use crate::osb::{self, AppState};
use crate::registry::{Brokers, Generation, Loader};
use crate::reload::Reloader;
use crate::store;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A loaded runtime, ready to serve.
pub struct Runtime {
    state: AppState,
    admin: Option<crate::admin::AdminState>,
    reloader: Arc<Reloader>,
    watch: bool,
    brokers_dir: PathBuf,
    _ticker: crate::sandbox::EpochTicker,
    shutdown_grace: Duration,
    telemetry: crate::telemetry::TelemetryState,
    /// What the start-up summary says about the state store (no credentials).
    store_label: String,
    /// TLS on the main listener, when a certificate is given.
    tls: Option<Arc<rustls::ServerConfig>>,
    /// A plain-HTTP listener beside the TLS one.
    plain_listen: Option<SocketAddr>,
}

/// The admin API's state, when the config file has an `[admin]` table.
fn admin_state(
    config: &ServeConfig,
    ops: &ops::OpsState,
    reloader: &Arc<Reloader>,
    data_dir: &Path,
    requests: &crate::telemetry::metrics::RequestMetrics,
) -> Option<crate::admin::AdminState> {
    config.runtime_config.admin.as_ref()?;
    Some(crate::admin::AdminState {
        config: Arc::new(config.runtime_config.clone()),
        reloader: reloader.clone(),
        brokers: ops.brokers.clone(),
        store: ops.store.clone(),
        ops: ops.clone(),
        requests: requests.clone(),
        sessions: Arc::default(),
        brokers_dir: config.brokers_dir.clone(),
        versions_dir: data_dir.join("versions"),
    })
}

/// This runtime's id: kept in `DATA_DIR/runtime-id`, so a restart on the same data dir knows
/// the operations it held before (and recovers them at once).
fn runtime_id(data_dir: &Path) -> anyhow::Result<String> {
    let path = data_dir.join("runtime-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        if !id.trim().is_empty() {
            return Ok(id.trim().to_string());
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    std::fs::write(&path, &id).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(id)
}

impl Runtime {
    /// Opens the state store, builds the engine and loads every broker.
    ///
    /// # Errors
    /// When the data dir cannot be created, the store cannot be opened, or the brokers dir
    /// cannot be read. A broker that fails to load is quarantined (see [`crate::reload`]),
    /// unless the config is strict.
    pub async fn load(config: &ServeConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let data_dir = config.data_dir.canonicalize()?;
        let url = match &config.state_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", data_dir.join("brokerbox.db").display()),
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(Arc::new(
                crate::tls::CertFiles::load(cert, key)?,
            ))?),
            _ => None,
        };
        let keys = store::seal::KeySource::resolve(config.keyring.as_deref(), &data_dir);
        let store = store::open(&url, &keys).await?;
        let id = runtime_id(&data_dir)?;
        store.register_runtime(&id).await?;
        let artifacts =
            (config.artifacts_dir.clone()).unwrap_or_else(|| data_dir.join("artifacts"));
        let components = crate::sandbox::cache::ComponentCache::on_disk(&artifacts)?;
        let sandbox = crate::sandbox::Sandbox::new(components, config.max_instances)?;
        let (calls, lanes) = (sandbox.calls.clone(), sandbox.lanes.metrics.clone());
        let probe_sandbox = sandbox.clone();
        let ticker = crate::sandbox::EpochTicker::start(sandbox.engine.clone());
        let tenants = &config.runtime_config.tenants;
        let loader = Loader {
            sandbox,
            data_dir: data_dir.clone(),
            store: store.clone(),
            files_quotas: Arc::default(),
            tenants: Arc::new(tenants.iter().map(|t| t.name.clone()).collect()),
        };
        let brokers = Arc::new(Brokers::default());
        let dir = config.brokers_dir.clone();
        let reloader = Arc::new(Reloader::new(loader, brokers.clone(), dir, id.clone()));
        reloader.start_up(config.strict).await?;
        let requests = crate::telemetry::metrics::RequestMetrics::default();
        let _ = reloader.forget.set(crate::telemetry::metrics::Forget {
            requests: requests.clone(),
            calls: calls.clone(),
            reloads: reloader.metrics.clone(),
            store: store.metrics(),
            tenants: tenants.iter().map(|t| t.name.clone()).collect(),
        });
        let metrics = crate::telemetry::metrics::Metrics::new(crate::telemetry::metrics::Parts {
            requests: requests.clone(),
            calls,
            lanes,
            reloads: reloader.metrics.clone(),
            store: store.metrics(),
        });
        let health = crate::telemetry::health::Health::new(
            store.clone(),
            brokers.clone(),
            reloader.clone(),
            &probe_sandbox,
        )?;
        let telemetry = crate::telemetry::TelemetryState {
            health: Arc::new(health),
            metrics: Arc::new(metrics),
            metrics_token: config.runtime_config.metrics.token.clone(),
            operator_token: (config.runtime_config.admin.as_ref())
                .map(|admin| admin.operator_token.clone()),
        };
        let ops = ops::OpsState {
            brokers,
            store,
            runtime: Arc::new(OpsRuntime::new(id, config.lease())),
        };
        Ok(Runtime {
            admin: admin_state(config, &ops, &reloader, &data_dir, &requests),
            state: AppState {
                ops,
                config: config.edge(),
                requests,
            },
            telemetry,
            store_label: store_label(&url),
            tls,
            plain_listen: config.plain_listen,
            reloader,
            watch: config.watch,
            brokers_dir: config.brokers_dir.clone(),
            _ticker: ticker,
            shutdown_grace: config.shutdown_grace(),
        })
    }

    /// The brokers serving now.
    pub fn generation(&self) -> Arc<Generation> {
        self.state.ops.brokers.current()
    }

    /// The reloader (hot reload of brokers from the brokers dir).
    pub fn reloader(&self) -> Arc<Reloader> {
        self.reloader.clone()
    }

    /// Logs what an operator checks first: where it listens, the store, the brokers serving
    /// and quarantined, and whether watch, the admin API, metrics and traces are on.
    pub fn log_summary(&self, listen: SocketAddr, metrics: Option<&TcpListener>) {
        let metrics_at = match metrics.and_then(|l| l.local_addr().ok()) {
            Some(addr) => format!("http://{addr}/metrics"),
            None => format!("http://{listen}/metrics"),
        };
        let quarantined = self.reloader.problems().len();
        tracing::info!(
            listen = %listen,
            tls = self.tls.is_some(),
            plain_listen = ?self.plain_listen,
            store = %self.store_label,
            brokers = self.generation().all().count(),
            quarantined,
            watch = self.watch,
            admin = self.admin.is_some(),
            metrics = %metrics_at,
            metrics_token = self.telemetry.metrics_token.is_some(),
            "brokerbox {} ready",
            env!("CARGO_PKG_VERSION")
        );
        if quarantined > 0 {
            for (name, problem) in self.reloader.problems() {
                tracing::warn!(broker = %name, "quarantined or refused: {}", problem.error);
            }
        }
    }

    /// Serves the OSB API on `listener` until `shutdown` completes: then stops accepting,
    /// lets running requests and guest calls finish up to the shutdown grace, and leaves what
    /// is still running to recovery (its operations stay in progress, leased to this runtime).
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.serve_with(listener, None, shutdown).await
    }

    /// [`Runtime::serve`], with `/metrics`, `/healthz` and `/readyz` on `metrics_listener`
    /// instead of `listener` when given.
    ///
    /// # Errors
    /// When a listener fails.
    pub async fn serve_with(
        self,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let stop_worker = CancellationToken::new();
        let worker = tokio::spawn(ops::worker::run_worker(
            self.state.ops.clone(),
            stop_worker.clone(),
        ));
        let resealer = tokio::spawn(store::reseal::run(
            self.state.ops.store.clone(),
            stop_worker.clone(),
        ));
        if self.watch {
            let dir = self.brokers_dir.clone();
            tokio::spawn(crate::watch::watch(
                dir,
                self.reloader.clone(),
                stop_worker.clone(),
            ));
        }
        let mut router = osb::router(self.state.clone());
        let admin = match &self.admin {
            Some(admin) => crate::admin::router(admin.clone()),
            None => crate::admin::disabled_router(),
        };
        router = router.merge(admin.layer(axum::middleware::from_fn(osb::json_errors)));
        if let Some(admin) = &self.admin {
            // HTML pages: outside the JSON error layer.
            router = router.merge(crate::admin::ui::router(admin.clone()));
        }
        let separate = metrics_listener.is_some();
        router = router.merge(crate::telemetry::router(self.telemetry.clone(), !separate));
        let stopping = CancellationToken::new();
        let metrics_server = metrics_listener.map(|listener| {
            let app = crate::telemetry::router(self.telemetry.clone(), true);
            let stop = stopping.clone();
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            })
        });
        let plain = match (self.plain_listen, &self.tls) {
            (Some(addr), Some(_)) => {
                let plain = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on --plain-listen {addr}"))?;
                let (app, stop) = (router.clone(), stopping.clone());
                Some(tokio::spawn(async move {
                    axum::serve(plain, app)
                        .with_graceful_shutdown(stop.cancelled_owned())
                        .await
                }))
            }
            _ => None,
        };
        let result = match &self.tls {
            Some(config) => crate::tls::serve(listener, router, config.clone(), shutdown).await,
            None => {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        };
        stopping.cancel();
        if let Some(plain) = plain {
            let _ = plain.await;
        }
        if let Some(server) = metrics_server {
            let _ = server.await;
        }
        stop_worker.cancel();
        let _ = worker.await;
        let _ = resealer.await;
        let tasks = &self.state.ops.runtime.tasks;
        tasks.close();
        if tokio::time::timeout(self.shutdown_grace, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                running = tasks.len(),
                "shutdown grace over; running operations will be recovered"
            );
        }
        Ok(result?)
    }
}

/// The state store's URL as logs show it: the backend and where, never a password.
fn store_label(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) if scheme.starts_with("postgres") => {
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            let host = host.split_once('?').map_or(host, |(host, _)| host);
            format!("{scheme}://{host}")
        }
        _ => url.split_once('?').map_or(url, |(url, _)| url).to_string(),
    }
}

/// A runtime serving in the background (for tests and embedding).
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when `metrics_listen` moved it off `addr`.
    pub metrics_addr: Option<SocketAddr>,
    /// Its reloader.
    pub reloader: Arc<Reloader>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl RunningServer {
    /// Loads a runtime from `config` and serves it on `listen` (port 0 picks a free port).
    ///
    /// # Errors
    /// As [`Runtime::load`], or when the address cannot be bound.
    pub async fn start(config: &ServeConfig, listen: SocketAddr) -> anyhow::Result<Self> {
        let runtime = Runtime::load(config).await?;
        let reloader = runtime.reloader();
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        let metrics_addr = metrics.as_ref().map(TcpListener::local_addr).transpose()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(runtime.serve_with(listener, metrics, async {
            let _ = rx.await;
        }));
        Ok(RunningServer {
            addr,
            metrics_addr,
            reloader,
            shutdown: Some(tx),
            task,
        })
    }

    /// Stops accepting requests, drains the running ones and waits for the end.
    ///
    /// # Errors
    /// When serving had failed.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await?
    }
}
