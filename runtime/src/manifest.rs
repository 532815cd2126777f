//! A broker's manifest, `NAME.toml` beside `NAME.wasm`: its OSB credentials, limits and grants.

use crate::sandbox::limits::Limits;
use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::Path;

/// The parsed manifest of one broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The tenant the broker belongs to (one of the runtime config's `[[tenants]]`); none for
    /// the operator's own brokers.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Basic-auth credentials the platform must present on every OSB request.
    pub credentials: Credentials,
    /// Per-call limits; each one defaults when left out.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities granted to the guest; none by default.
    #[serde(default)]
    pub grants: GrantsConfig,
    /// How operations run (sync window, deadline, retries, async-only plans).
    #[serde(default)]
    pub operations: OperationSettings,
    /// Environment variables (configuration) the guest sees; nothing else of the host's
    /// environment reaches it.
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Acceptance tests: `brokerbox check --examples` runs each one's whole life cycle.
    #[serde(default)]
    pub examples: Vec<Example>,
}

/// One `[[examples]]` entry: a life cycle that must work (provision with these parameters,
/// bind, credentials matching the schema, unbind, deprovision).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// Names the example in reports.
    pub name: String,
    /// The plan, by name or id.
    pub plan: String,
    /// The service, by name or id (needed only when several services have a plan so named).
    #[serde(default)]
    pub service: Option<String>,
    /// The provision's `parameters`.
    #[serde(default)]
    pub provision_parameters: Option<serde_json::Value>,
    /// The bind's `parameters`.
    #[serde(default)]
    pub bind_parameters: Option<serde_json::Value>,
    /// A JSON Schema the binding's credentials must satisfy.
    #[serde(default)]
    pub credentials_schema: Option<serde_json::Value>,
}

impl Example {
    /// The `(service id, plan id)` this example provisions, found in `catalog` (the OSB
    /// catalog JSON).
    ///
    /// # Errors
    /// A sentence naming what is not in the catalog, or what is ambiguous.
    pub fn find_plan(&self, catalog: &serde_json::Value) -> Result<(String, String), String> {
        let id_or_name = |v: &serde_json::Value, wanted: &str| {
            v["id"].as_str() == Some(wanted) || v["name"].as_str() == Some(wanted)
        };
        let mut found = Vec::new();
        for service in catalog["services"].as_array().into_iter().flatten() {
            if self
                .service
                .as_deref()
                .is_some_and(|s| !id_or_name(service, s))
            {
                continue;
            }
            for plan in service["plans"].as_array().into_iter().flatten() {
                if id_or_name(plan, &self.plan) {
                    let id =
                        |v: &serde_json::Value| v["id"].as_str().unwrap_or_default().to_string();
                    found.push((id(service), id(plan)));
                }
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(format!(
                "example {:?}: no plan {:?}{} in the catalog",
                self.name,
                self.plan,
                self.service
                    .as_deref()
                    .map(|s| format!(" of service {s:?}"))
                    .unwrap_or_default()
            )),
            _ => Err(format!(
                "example {:?}: several services have a plan {:?}: name one with `service`",
                self.name, self.plan
            )),
        }
    }
}

/// The ways `value` breaks the JSON Schema `schema` (none when it satisfies it).
pub fn schema_problems(schema: &serde_json::Value, value: &serde_json::Value) -> Vec<String> {
    match jsonschema::validator_for(schema) {
        Err(e) => vec![format!("the schema is not a valid JSON Schema: {e}")],
        Ok(validator) => validator
            .iter_errors(value)
            .take(10)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() {
                    e.to_string()
                } else {
                    format!("{at}: {e}")
                }
            })
            .collect(),
    }
}

/// Default time an asynchronous request waits for the guest before answering 202: quick
/// operations get their final answer without making the platform wait a polling interval.
pub const DEFAULT_SYNC_WINDOW_MS: u64 = 2_000;
/// Default time a synchronous request may take: below the 60 s after which platforms give up.
pub const DEFAULT_SYNC_DEADLINE_MS: u64 = 50_000;
/// Default number of attempts of an operation interrupted by a crash before it is failed.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The `[operations]` table: how the host runs a broker's operations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationSettings {
    /// How long a request with `accepts_incomplete=true` waits before answering 202, in ms.
    pub sync_window_ms: u64,
    /// How long a request without it may take before the operation fails, in ms.
    pub sync_deadline_ms: u64,
    /// Attempts of an operation interrupted by a crash (the first included).
    pub max_attempts: u32,
    /// Every provision, update and bind needs `accepts_incomplete=true` (else 422 AsyncRequired).
    pub async_only: bool,
    /// Plans whose operations need `accepts_incomplete=true`.
    pub async_only_plans: Vec<String>,
}

impl Default for OperationSettings {
    fn default() -> Self {
        OperationSettings {
            sync_window_ms: DEFAULT_SYNC_WINDOW_MS,
            sync_deadline_ms: DEFAULT_SYNC_DEADLINE_MS,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            async_only: false,
            async_only_plans: Vec::new(),
        }
    }
}

impl OperationSettings {
    /// The sync window as a `Duration`.
    pub fn sync_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.sync_window_ms)
    }

    /// The sync deadline as a `Duration`.
    pub fn sync_deadline(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.sync_deadline_ms)
    }

    /// Whether operations on `plan_id` need `accepts_incomplete=true`.
    pub fn async_required(&self, plan_id: &str) -> bool {
        self.async_only || self.async_only_plans.iter().any(|p| p == plan_id)
    }

    /// Whether no plan runs asynchronously only.
    pub fn async_required_by_none(&self) -> bool {
        !self.async_only && self.async_only_plans.is_empty()
    }

    fn validate(&self) -> Result<(), String> {
        if self.sync_deadline_ms == 0 || self.sync_deadline_ms > 600_000 {
            return Err("operations.sync_deadline_ms must be between 1 and 600000".into());
        }
        if self.sync_window_ms > self.sync_deadline_ms {
            return Err("operations.sync_window_ms must not exceed sync_deadline_ms".into());
        }
        if self.max_attempts == 0 {
            return Err("operations.max_attempts must be at least 1".into());
        }
        Ok(())
    }
}

/// OSB basic-auth credentials of one broker.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password in clear text (for development; prefer `password_hash`).
    #[serde(default)]
    pub password: Option<String>,
    /// Argon2 hash of the password (PHC string, from `brokerbox hash-password`).
    #[serde(default)]
    pub password_hash: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The `[grants]` table: which capabilities the guest gets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// A private directory under the data dir, preopened for the guest.
    #[serde(default)]
    pub files: bool,
    /// A private key-value store in the runtime's state store (the `kv` import).
    #[serde(default)]
    pub kv: bool,
    /// The `kv` quota: all keys and values together, in bytes.
    #[serde(default = "default_kv_quota")]
    pub kv_quota_bytes: u64,
    /// Hosts the guest may call over `wasi:http`: `host` (any port) or `host:port`.
    #[serde(default)]
    pub outbound_http: Vec<String>,
    /// Hosts of `outbound_http` that may also reach loopback, link-local, private and
    /// unique-local addresses (refused by default, whatever a name resolves to).
    #[serde(default)]
    pub outbound_http_private: Vec<String>,
    /// The `files` quota: the apparent size of all files together, in bytes.
    #[serde(default = "default_files_quota_bytes")]
    pub files_quota_bytes: u64,
    /// The `files` quota: files, directories and links, in all.
    #[serde(default = "default_files_quota_count")]
    pub files_quota_count: u64,
}

fn default_files_quota_bytes() -> u64 {
    crate::sandbox::files_quota::DEFAULT_QUOTA_BYTES
}

fn default_files_quota_count() -> u64 {
    crate::sandbox::files_quota::DEFAULT_QUOTA_COUNT
}

fn default_kv_quota() -> u64 {
    crate::sandbox::kv::DEFAULT_QUOTA_BYTES
}

impl Default for GrantsConfig {
    fn default() -> Self {
        GrantsConfig {
            files: false,
            kv: false,
            kv_quota_bytes: default_kv_quota(),
            outbound_http: Vec::new(),
            outbound_http_private: Vec::new(),
            files_quota_bytes: default_files_quota_bytes(),
            files_quota_count: default_files_quota_count(),
        }
    }
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    ///
    /// # Errors
    /// When the file is missing, is not valid TOML for a manifest, or has values out of range;
    /// the message names the file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid manifest {}", path.display()))
    }

    /// Parses and checks manifest text.
    ///
    /// # Errors
    /// When the text is not a valid manifest.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let manifest: Manifest = toml::from_str(text)?;
        let credentials = &manifest.credentials;
        let password = credentials
            .password
            .as_deref()
            .is_some_and(|p| !p.is_empty());
        let hash = credentials.password_hash.as_deref();
        if credentials.username.is_empty() || password == hash.is_some() {
            bail!("credentials need a username and one of password or password_hash");
        }
        if let Some(hash) = hash {
            argon2::PasswordHash::new(hash).map_err(|e| {
                anyhow::anyhow!("credentials.password_hash is not an argon2 PHC string: {e}")
            })?;
        }
        if manifest.credentials.username.contains(':') {
            bail!("credentials.username must not contain ':' (basic auth separator)");
        }
        manifest.limits.validate().map_err(anyhow::Error::msg)?;
        manifest.operations.validate().map_err(anyhow::Error::msg)?;
        if manifest.grants.files_quota_bytes == 0 || manifest.grants.files_quota_count == 0 {
            bail!("grants.files_quota_bytes and grants.files_quota_count must be positive");
        }
        let granted = |entry: &String| {
            let entry = entry.trim().to_ascii_lowercase();
            let host = entry
                .rsplit_once(':')
                .map_or(entry.as_str(), |(host, _)| host);
            (manifest.grants.outbound_http.iter())
                .map(|g| g.trim().to_ascii_lowercase())
                .any(|g| g == entry || g == host)
        };
        if let Some(stray) = (manifest.grants.outbound_http_private.iter()).find(|e| !granted(e)) {
            bail!(
                "grants.outbound_http_private lists {stray:?}, which grants.outbound_http does \
                 not grant"
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for example in &manifest.examples {
            if !names.insert(example.name.as_str()) {
                bail!(
                    "two examples are named {:?}: give each its own name",
                    example.name
                );
            }
            if let Some(schema) = &example.credentials_schema {
                jsonschema::validator_for(schema).map_err(|e| {
                    anyhow::anyhow!(
                        "example {:?}: credentials_schema is not a valid JSON Schema: {e}",
                        example.name
                    )
                })?;
            }
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_manifest_gets_default_limits_and_no_grants() {
        let m = Manifest::parse("[credentials]\nusername = \"u\"\npassword = \"p\"\n").unwrap();
        assert_eq!(m.limits, Limits::default());
        assert!(!m.grants.files);
    }

    #[test]
    fn unknown_fields_and_bad_limits_are_refused() {
        let base = "[credentials]\nusername = \"u\"\npassword = \"p\"\n";
        assert!(Manifest::parse(&format!("{base}[grants]\nnetwork = true\n")).is_err());
        assert!(Manifest::parse(&format!("{base}[limits]\nmemory_mib = 0\n")).is_err());
        for calls in ["0", "100001"] {
            let toml = format!("{base}[limits]\ncalls_per_instance = {calls}\n");
            let refused = Manifest::parse(&toml).unwrap_err();
            assert!(
                format!("{refused:#}").contains("calls_per_instance"),
                "{refused:#}"
            );
        }
        let warm = Manifest::parse(&format!("{base}[limits]\ncalls_per_instance = 1000\n"));
        assert_eq!(warm.unwrap().limits.calls_per_instance, 1000);
        assert!(Manifest::parse("[credentials]\nusername = \"\"\npassword = \"p\"\n").is_err());
        assert!(Manifest::parse("").is_err());
    }

    #[test]
    fn examples_need_unique_names_and_valid_schemas_and_find_their_plan() {
        let base = "[credentials]\nusername = \"u\"\npassword = \"p\"\n";
        let example = |name: &str, extra: &str| {
            format!("[[examples]]\nname = \"{name}\"\nplan = \"small\"\n{extra}")
        };
        let twice = format!("{base}{}{}", example("a", ""), example("a", ""));
        let error = Manifest::parse(&twice).unwrap_err().to_string();
        assert!(error.contains("two examples are named \"a\""), "{error}");
        let bad = format!(
            "{base}{}",
            example("b", "credentials_schema = { type = 5 }\n")
        );
        let error = Manifest::parse(&bad).unwrap_err().to_string();
        assert!(
            error.contains("credentials_schema is not a valid JSON Schema"),
            "{error}"
        );

        let good = format!(
            "{base}{}",
            example("c", "provision_parameters = { size = 2 }\n")
        );
        let manifest = Manifest::parse(&good).unwrap();
        let example = &manifest.examples[0];
        assert_eq!(
            example.provision_parameters,
            Some(serde_json::json!({ "size": 2 }))
        );
        let catalog = serde_json::json!({ "services": [
            { "id": "s1", "name": "one", "plans": [{ "id": "p1", "name": "small" }] },
            { "id": "s2", "name": "two", "plans": [{ "id": "p2", "name": "small" }] },
        ]});
        let error = example.find_plan(&catalog).unwrap_err();
        assert!(error.contains("several services"), "{error}");
        let mut pinned = example.clone();
        pinned.service = Some("two".into());
        assert_eq!(
            pinned.find_plan(&catalog).unwrap(),
            ("s2".into(), "p2".into())
        );
        pinned.plan = "huge".into();
        let error = pinned.find_plan(&catalog).unwrap_err();
        assert!(
            error.contains("no plan \"huge\" of service \"two\""),
            "{error}"
        );
        assert!(schema_problems(
            &serde_json::json!({ "required": ["x"] }),
            &serde_json::json!({})
        )
        .iter()
        .any(|p| p.contains("x")));
    }
}
