//! The runtime's config file (`brokerbox serve --config FILE`): the admin API's operator token
//! and the tenants, each with its token and quotas.

use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::Path;

/// The config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The admin API; without it, no `/admin` route is served.
    pub admin: Option<AdminConfig>,
    /// The tenants.
    #[serde(default)]
    pub tenants: Vec<Tenant>,
    /// `/metrics` settings.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The `[metrics]` table.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// When set, `/metrics` answers only `Authorization: Bearer TOKEN` with this token.
    pub token: Option<String>,
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let token = self.token.as_ref().map(|_| "<redacted>");
        f.debug_struct("MetricsConfig")
            .field("token", &token)
            .finish()
    }
}

/// The `[admin]` table.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Bearer token of the operator: every broker, every tenant.
    pub operator_token: String,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminConfig { operator_token: <redacted> }")
    }
}

/// One `[[tenants]]` entry: a team whose brokers the runtime hosts.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenant {
    /// Its name; a broker's manifest names its tenant with `tenant = "NAME"`.
    pub name: String,
    /// Its bearer token: only its own brokers.
    pub token: String,
    /// Most brokers it may register.
    pub max_brokers: Option<usize>,
    /// Most service instances its brokers may hold together.
    pub max_instances: Option<u64>,
    /// Most operations its brokers may run at once.
    pub max_concurrent_operations: Option<u64>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.name)
            .field("max_brokers", &self.max_brokers)
            .field("max_instances", &self.max_instances)
            .finish_non_exhaustive()
    }
}

impl RuntimeConfig {
    /// Reads and checks the config file at `path`.
    ///
    /// # Errors
    /// When the file is missing or invalid; the message names it.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let config: RuntimeConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        let mut tokens = std::collections::HashSet::new();
        if let Some(admin) = &config.admin {
            if admin.operator_token.len() < 16 {
                bail!(
                    "{}: admin.operator_token must have at least 16 characters",
                    path.display()
                );
            }
            tokens.insert(admin.operator_token.as_str());
        }
        for tenant in &config.tenants {
            if tenant.token.len() < 16 || !tokens.insert(tenant.token.as_str()) {
                bail!(
                    "{}: tenant {} needs its own token of at least 16 characters",
                    path.display(),
                    tenant.name
                );
            }
        }
        Ok(config)
    }

    /// The tenant called `name`.
    pub fn tenant(&self, name: &str) -> Option<&Tenant> {
        self.tenants.iter().find(|t| t.name == name)
    }
}
