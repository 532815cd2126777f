//! Starting and stopping a runtime: open the state store, build the engine, load the brokers,
//! serve the OSB API on a listener until shutdown.

use crate::osb::{self, AppState, EdgeConfig};
use crate::registry::Registry;
use crate::store;
use anyhow::Context;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What `brokerbox serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where state and granted directories live.
    pub data_dir: PathBuf,
    /// Where `NAME.wasm` + `NAME.toml` pairs are read from.
    pub brokers_dir: PathBuf,
    /// State store URL; `None` means `sqlite://DATA_DIR/brokerbox.db`.
    pub state_url: Option<String>,
    /// Largest request body, in bytes.
    pub body_limit: usize,
}

impl ServeConfig {
    /// A config with defaults for everything but the two directories.
    pub fn new(data_dir: impl Into<PathBuf>, brokers_dir: impl Into<PathBuf>) -> Self {
        ServeConfig {
            data_dir: data_dir.into(),
            brokers_dir: brokers_dir.into(),
            state_url: None,
            body_limit: osb::DEFAULT_BODY_LIMIT,
        }
    }
}

/// A loaded runtime, ready to serve.
pub struct Runtime {
    state: AppState,
    ticker: tokio::task::JoinHandle<()>,
}

impl Runtime {
    /// Opens the state store, builds the engine and loads every broker.
    ///
    /// # Errors
    /// When the data dir cannot be created, the store cannot be opened, or a broker fails to
    /// load (the message names the file).
    pub async fn load(config: &ServeConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
        let data_dir = config.data_dir.canonicalize()?;
        let url = match &config.state_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", data_dir.join("brokerbox.db").display()),
        };
        let store = store::open(&url).await?;
        let engine = crate::engine::new_engine()?;
        let ticker = crate::engine::spawn_epoch_ticker(engine.clone());
        let registry = Registry::load_dir(&engine, &config.brokers_dir, &data_dir).await;
        let registry = match registry {
            Ok(registry) => registry,
            Err(error) => {
                ticker.abort();
                return Err(error);
            }
        };
        let state = AppState {
            registry: Arc::new(registry),
            store,
            config: EdgeConfig {
                body_limit: config.body_limit,
            },
        };
        Ok(Runtime { state, ticker })
    }

    /// The loaded brokers.
    pub fn registry(&self) -> &Registry {
        &self.state.registry
    }

    /// Serves the OSB API on `listener` until `shutdown` completes, then drains requests.
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let router = osb::router(self.state.clone());
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        self.ticker.abort();
        Ok(result?)
    }
}

/// A runtime serving in the background (for tests and embedding).
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
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
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(runtime.serve(listener, async {
            let _ = rx.await;
        }));
        Ok(RunningServer {
            addr,
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
