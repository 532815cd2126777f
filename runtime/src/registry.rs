//! The hosted brokers: each `NAME.wasm` of the brokers dir with its manifest `NAME.toml`,
//! compiled, linked and with its catalog checked before it serves a request.

use crate::catalog::CheckedCatalog;
use crate::manifest::Manifest;
use crate::sandbox::files_quota::FilesQuota;
use crate::sandbox::{CallInfo, Grants, Guest};
use anyhow::{bail, Context};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// One broker, ready to serve.
pub struct LoadedBroker {
    /// Its name, from the file name; the URL prefix is `/brokers/NAME/v2`.
    pub name: String,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its compiled component.
    pub guest: Guest,
    /// Its validated catalog.
    pub catalog: CheckedCatalog,
    /// Its version: the first 16 hex digits of the SHA-256 of its component and manifest.
    pub version: String,
    /// The credentials last verified against its password hash.
    pub verified: crate::auth::VerifiedCache,
}

/// All brokers of a runtime, by name: one generation, never changed once published (a reload
/// publishes a new one).
#[derive(Default, Clone)]
pub struct Generation {
    brokers: BTreeMap<String, Arc<LoadedBroker>>,
}

/// Longest a broker's catalog call may take when the broker loads (a catalog is a constant
/// the guest builds; this is far more than one needs).
pub const CATALOG_LOAD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

/// Versions of each broker kept in memory after a newer one is published, so long operations
/// started on them can be finished by them.
pub const KEPT_VERSIONS: usize = 8;

/// The current generation of brokers. A request takes the broker it needs from the generation
/// current when it starts and keeps that version to its end; a reload publishes a whole new
/// generation at once. Recent versions stay reachable for the operations they started.
#[derive(Default)]
pub struct Brokers {
    current: std::sync::RwLock<Arc<Generation>>,
    recent: std::sync::Mutex<BTreeMap<String, Vec<Arc<LoadedBroker>>>>,
}

impl Brokers {
    /// Brokers serving `generation`.
    pub fn new(generation: Generation) -> Self {
        let set = Brokers::default();
        set.publish(generation);
        set
    }

    /// The current generation.
    pub fn current(&self) -> Arc<Generation> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The broker `name` of the current generation.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedBroker>> {
        self.current().get(name)
    }

    /// Version `version` of broker `name` if the runtime still holds it, else the current one
    /// (`None` when the broker is gone).
    pub fn version(&self, name: &str, version: Option<&str>) -> Option<Arc<LoadedBroker>> {
        let kept = {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.get(name).and_then(|versions| {
                versions
                    .iter()
                    .find(|b| Some(b.version.as_str()) == version)
                    .cloned()
            })
        };
        kept.or_else(|| self.get(name))
    }

    /// Makes `registry` the current generation.
    pub fn publish(&self, generation: Generation) {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            recent.retain(|name, _| generation.get(name).is_some());
            for broker in generation.all() {
                let versions = recent.entry(broker.name.clone()).or_default();
                if !versions.iter().any(|b| b.version == broker.version) {
                    versions.push(broker.clone());
                    if versions.len() > KEPT_VERSIONS {
                        versions.remove(0);
                    }
                }
            }
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(generation);
    }
}

/// A broker declares a service or plan id that another broker of the generation uses: the
/// newcomer is refused, the broker that was there first keeps serving.
#[derive(Debug, thiserror::Error)]
#[error("broker {broker}: service or plan id {id:?} is already used by broker {owner}, which was here first")]
pub struct IdConflict {
    /// The broker refused.
    pub broker: String,
    /// The id both declare.
    pub id: String,
    /// The broker that keeps it.
    pub owner: String,
}

/// Whether `name` can name a broker (it becomes a URL path segment and a directory name).
pub fn valid_broker_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
}

impl Generation {
    /// Adds a loaded broker.
    ///
    /// # Errors
    /// When the name is taken or a service or plan id is used by another broker.
    pub fn insert(&mut self, broker: LoadedBroker) -> anyhow::Result<()> {
        if self.brokers.contains_key(&broker.name) {
            bail!("a broker named {} is loaded already", broker.name);
        }
        self.check_ids(&broker)?;
        self.brokers.insert(broker.name.clone(), Arc::new(broker));
        Ok(())
    }

    /// A new generation without the broker `name`.
    pub fn without(&self, name: &str) -> Generation {
        let mut next = self.clone();
        next.brokers.remove(name);
        next
    }

    /// A new generation with `broker` added or replacing the broker of the same name.
    ///
    /// # Errors
    /// When a service or plan id is used by another broker.
    pub fn with(&self, broker: LoadedBroker) -> anyhow::Result<Generation> {
        let mut next = self.clone();
        next.brokers.remove(&broker.name);
        next.check_ids(&broker)?;
        next.brokers.insert(broker.name.clone(), Arc::new(broker));
        Ok(next)
    }

    /// Fails as [`Generation::with`] would, without building the new generation.
    ///
    /// # Errors
    /// When a service or plan id is used by another broker.
    pub fn with_checked(&self, broker: &LoadedBroker) -> anyhow::Result<()> {
        self.without(&broker.name).check_ids(broker)
    }

    /// Fails when `broker` declares an id another broker of this generation uses.
    fn check_ids(&self, broker: &LoadedBroker) -> anyhow::Result<()> {
        let mut owners: HashMap<&str, &str> = HashMap::new();
        for other in self.brokers.values() {
            for id in other.catalog.ids() {
                owners.insert(id, &other.name);
            }
        }
        for id in broker.catalog.ids() {
            if let Some(owner) = owners.get(id) {
                return Err(IdConflict {
                    broker: broker.name.clone(),
                    id: id.to_string(),
                    owner: (*owner).to_string(),
                }
                .into());
            }
        }
        Ok(())
    }

    /// The broker called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<LoadedBroker>> {
        self.brokers.get(name).cloned()
    }

    /// All brokers, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<LoadedBroker>> {
        self.brokers.values()
    }
}

/// Loads brokers: reads, compiles (off the async threads), links and checks them.
#[derive(Clone)]
pub struct Loader {
    /// The engine and instance cap.
    pub sandbox: crate::sandbox::Sandbox,
    /// Where granted directories live.
    pub data_dir: std::path::PathBuf,
    /// The state store (for the `kv` grant).
    pub store: Arc<dyn crate::store::StateStore>,
    /// Each broker's files quota, by name: the versions of a broker count on one quota.
    pub files_quotas: Arc<std::sync::Mutex<HashMap<String, Arc<FilesQuota>>>>,
    /// The tenants the runtime's config declares: a manifest may name only one of them.
    pub tenants: Arc<std::collections::BTreeSet<String>>,
}

/// The version of a broker made of `wasm` and `manifest`.
pub fn version_of(wasm: &[u8], manifest: &[u8]) -> String {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update(wasm);
    hash.update(manifest);
    hash.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Loader {
    /// Loads broker `name` from the component `wasm` and the manifest `manifest_path`.
    ///
    /// # Errors
    /// As [`Loader::load_bytes`], or when a file cannot be read.
    pub async fn load_files(
        &self,
        name: &str,
        wasm: &Path,
        manifest_path: &Path,
    ) -> anyhow::Result<LoadedBroker> {
        let manifest = std::fs::read(manifest_path)
            .with_context(|| format!("cannot read manifest {}", manifest_path.display()))?;
        let bytes =
            std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
        self.load_bytes(name, &wasm.display().to_string(), bytes, &manifest)
            .await
    }

    /// Loads broker `name` from a component and its manifest (`label` names them in logs).
    ///
    /// # Errors
    /// A bad name, an invalid manifest or one naming an undeclared tenant, a component that
    /// does not load or does not implement the world, a failing or invalid catalog.
    pub async fn load_bytes(
        &self,
        name: &str,
        label: &str,
        wasm: Vec<u8>,
        manifest_text: &[u8],
    ) -> anyhow::Result<LoadedBroker> {
        if !valid_broker_name(name) {
            bail!("{name:?}: a broker name uses only a-z, 0-9, '-' and '_' (at most 64)");
        }
        let name = name.to_string();
        let version = version_of(&wasm, manifest_text);
        let manifest = self.manifest(&name, label, manifest_text)?;
        let grants = self.grants(&name, &manifest)?;
        let (sandbox, label, limits) = (
            self.sandbox.clone(),
            label.to_string(),
            manifest.limits.clone(),
        );
        let guest_name = name.clone();
        let tenant = manifest.tenant.clone();
        // Compiling takes CPU for a while: keep it off the threads that answer requests, and
        // take turns with other brokers' compiles (the permit goes with the compile, so it is
        // released when the compile ends even if this load is dropped).
        let turn = sandbox.compiles.clone().acquire_owned().await?;
        let guest = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            Guest::load(&sandbox, &guest_name, &label, &wasm, limits, grants)
                .map(|guest| guest.with_tenant(tenant.as_deref()))
        })
        .await??;
        // Under a load-time deadline of its own: a catalog that stalls fails the load quickly
        // rather than holding its reload for the broker's whole call timeout.
        let info = CallInfo {
            deadline: Some(CATALOG_LOAD_DEADLINE),
            ..CallInfo::default()
        };
        let catalog = guest
            .catalog(&info)
            .await
            .map_err(|e| anyhow::anyhow!("broker {name}: catalog failed: {e}"))?;
        let catalog = CheckedCatalog::new(catalog)
            .map_err(|e| anyhow::anyhow!("broker {name}: invalid catalog: {e}"))?;
        for example in &manifest.examples {
            example
                .find_plan(catalog.json())
                .map_err(|e| anyhow::anyhow!("broker {name}: invalid manifest: {e}"))?;
        }
        tracing::info!(broker = %name, %version, "loaded broker");
        Ok(LoadedBroker {
            name,
            manifest,
            guest,
            catalog,
            version,
            verified: Default::default(),
        })
    }

    /// The manifest of broker `name` (its component named `label`), parsed and checked: it may
    /// name only a tenant the runtime's config declares.
    fn manifest(&self, name: &str, label: &str, text: &[u8]) -> anyhow::Result<Manifest> {
        let text = std::str::from_utf8(text)
            .map_err(|_| anyhow::anyhow!("broker {name}: invalid manifest: not UTF-8"))?;
        let manifest = Manifest::parse(text).map_err(|e| {
            let file = label
                .strip_suffix(".wasm")
                .map_or_else(|| format!("{name}.toml"), |stem| format!("{stem}.toml"));
            anyhow::anyhow!("broker {name}: invalid manifest {file}: {e:#}")
        })?;
        if let Some(tenant) = &manifest.tenant {
            if !self.tenants.contains(tenant) {
                bail!("broker {name}: the manifest names tenant {tenant:?}, which the runtime's config does not declare");
            }
        }
        Ok(manifest)
    }

    /// The capabilities `manifest` grants broker `name`.
    fn grants(&self, name: &str, manifest: &Manifest) -> anyhow::Result<Grants> {
        let mut grants = Grants {
            env: manifest
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
                .into(),
            kv: manifest.grants.kv.then(|| crate::sandbox::kv::KvGrant {
                store: self.store.clone(),
                quota_bytes: manifest.grants.kv_quota_bytes,
            }),
            http: crate::sandbox::http::HttpAllowlist::new(
                name,
                &manifest.grants.outbound_http,
                &manifest.grants.outbound_http_private,
            ),
            ..Grants::default()
        };
        if manifest.grants.files {
            let dir = self.data_dir.join("brokers").join(name).join("files");
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let dir = dir.canonicalize()?;
            let (max_bytes, max_files) = (
                manifest.grants.files_quota_bytes,
                manifest.grants.files_quota_count,
            );
            let mut quotas = self.files_quotas.lock().unwrap_or_else(|e| e.into_inner());
            let quota = quotas
                .entry(name.to_string())
                .and_modify(|q| {
                    if !q.is_for(&dir, max_bytes, max_files) {
                        *q = Arc::new(FilesQuota::new(dir.clone(), max_bytes, max_files));
                    }
                })
                .or_insert_with(|| Arc::new(FilesQuota::new(dir.clone(), max_bytes, max_files)));
            grants.files_quota = Some(quota.clone());
            grants.files_dir = Some(dir);
        }
        Ok(grants)
    }
}
