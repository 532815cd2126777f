//! A broker's manifest, `NAME.toml` beside `NAME.wasm`: its OSB credentials, limits and grants.

use crate::engine::limits::Limits;
use anyhow::{bail, Context};
use serde::Deserialize;
use std::path::Path;

/// The parsed manifest of one broker.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Basic-auth credentials the platform must present on every OSB request.
    pub credentials: Credentials,
    /// Per-call limits; each one defaults when left out.
    #[serde(default)]
    pub limits: Limits,
    /// Capabilities granted to the guest; none by default.
    #[serde(default)]
    pub grants: GrantsConfig,
}

/// OSB basic-auth credentials of one broker.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
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
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsConfig {
    /// A private directory under the data dir, preopened for the guest.
    #[serde(default)]
    pub files: bool,
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
        if manifest.credentials.username.is_empty() || manifest.credentials.password.is_empty() {
            bail!("credentials.username and credentials.password must not be empty");
        }
        if manifest.credentials.username.contains(':') {
            bail!("credentials.username must not contain ':' (basic auth separator)");
        }
        manifest.limits.validate().map_err(anyhow::Error::msg)?;
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
        assert!(Manifest::parse("[credentials]\nusername = \"\"\npassword = \"p\"\n").is_err());
        assert!(Manifest::parse("").is_err());
    }
}
