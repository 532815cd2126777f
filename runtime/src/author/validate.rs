//! `brokerbox validate NAME.wasm [NAME.toml]`: offline, the checks the runtime makes before a
//! version goes live (the manifest, the component and its world, the catalog and its schemas,
//! the examples' plans), through the runtime's own loader, so the messages are the same.

use super::Lang;
use crate::registry::Loader;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What a valid broker offers.
#[derive(Debug)]
pub struct Valid {
    /// The broker's name (its files' name).
    pub name: String,
    /// Its version, as the runtime would name it.
    pub version: String,
    /// Its services, each with its plans' names.
    pub services: Vec<(String, Vec<String>)>,
    /// How many `[[examples]]` its manifest has.
    pub examples: usize,
}

impl std::fmt::Display for Valid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{} (version {}) is valid:", self.name, self.version)?;
        for (service, plans) in &self.services {
            writeln!(f, "  service {service}: plans {}", plans.join(", "))?;
        }
        write!(
            f,
            "  {} example(s) for `brokerbox check --examples`",
            self.examples
        )
    }
}

/// The manifest beside `wasm` (`NAME.toml`) when none is named.
pub fn manifest_beside(wasm: &Path) -> PathBuf {
    wasm.with_extension("toml")
}

/// Validates the component `wasm` with its manifest `manifest` as broker `name` (default: the
/// component's file name); `lang`, when known, makes the hint for a missing export the
/// language's own export line.
///
/// # Errors
/// The first check that fails, as the runtime would report it, with a hint where one helps.
pub async fn validate(
    wasm: &Path,
    manifest: &Path,
    name: Option<&str>,
    lang: Option<Lang>,
) -> anyhow::Result<Valid> {
    let name = match name {
        Some(name) => name.to_string(),
        None => wasm
            .file_stem()
            .and_then(|s| s.to_str())
            .with_context(|| format!("{}: not a NAME.wasm path", wasm.display()))?
            .to_string(),
    };
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
    let manifest_text = std::fs::read(manifest)
        .with_context(|| format!("cannot read manifest {}", manifest.display()))?;
    let scratch = tempfile::tempdir()?;
    let store = crate::store::open_ephemeral(&format!(
        "sqlite://{}",
        scratch.path().join("validate.db").display()
    ))
    .await?;
    // Compiled code is kept beside the tools: `dev` and the next validate reuse it.
    let components = crate::sandbox::cache::ComponentCache::on_disk(
        &super::embedded::tools_dir().join("artifacts"),
    )?;
    let loader = Loader {
        sandbox: crate::sandbox::Sandbox::new(components, 4)?,
        data_dir: scratch.path().to_path_buf(),
        store,
        files_quotas: Arc::default(),
        tenants: Arc::default(),
    };
    let label = wasm.display().to_string();
    let loaded = loader
        .load_bytes(&name, &label, bytes, &manifest_text)
        .await
        .map_err(|e| with_hint(e, lang))?;
    let catalog = loaded.catalog.json();
    let services = catalog["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let plans = s["plans"].as_array().into_iter().flatten();
            let plans = plans.filter_map(|p| p["name"].as_str().map(str::to_string));
            (
                s["name"].as_str().unwrap_or_default().to_string(),
                plans.collect(),
            )
        })
        .collect();
    Ok(Valid {
        name,
        version: loaded.version.clone(),
        services,
        examples: loaded.manifest.examples.len(),
    })
}

/// `error` with a sentence that says how to fix it, for the mistakes authors make most.
fn with_hint(error: anyhow::Error, lang: Option<Lang>) -> anyhow::Error {
    let text = format!("{error:#}");
    let hint = if text.contains("no exported instance named") && text.contains("osb") {
        Some(match lang {
            Some(lang) => format!("the component exports no broker: {}", lang.export_hint()),
            None => "the component exports no broker: end the source with the SDK's export \
                     (Rust `export_broker!(YourBroker);`, Python `Osb = export(YourBroker)`, \
                     JavaScript `export const osb = exportBroker(new YourBroker());`)"
                .to_string(),
        })
    } else if text.contains("is not a valid WebAssembly component")
        && text.contains("wasm module with a component parser")
    {
        Some(
            "this is a core WebAssembly module, not a component: build for the \
             wasm32-wasip2 target (`brokerbox build` does)"
                .to_string(),
        )
    } else if text.contains("matching implementation was not found in the linker")
        || text.contains("import `")
    {
        Some(
            "the component imports something the runtime does not offer: build it against \
             the brokerbox world (wit/broker.wit) with the SDK, and use only WASI 0.2"
                .to_string(),
        )
    } else {
        None
    };
    match hint {
        Some(hint) => error.context(hint),
        None => error,
    }
}
