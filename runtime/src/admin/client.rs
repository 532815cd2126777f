//! `brokerbox admin ...`: the admin API from the command line.

use anyhow::{bail, Context};
use base64::Engine as _;
use clap::Subcommand;
use serde_json::{json, Value};
use std::path::PathBuf;

/// What `brokerbox admin` does.
#[derive(Debug, Subcommand)]
pub enum AdminAction {
    /// Lists the brokers you may manage, with version, state and instance count.
    List,
    /// Shows one broker.
    Show {
        /// The broker.
        name: String,
    },
    /// Adds a broker, or upgrades it to a new version (validated before it goes live).
    Add {
        /// The broker's name (its URL is /brokers/NAME).
        name: String,
        /// The component.
        #[arg(long)]
        wasm: PathBuf,
        /// The manifest.
        #[arg(long)]
        manifest: PathBuf,
        /// Replace even when plans in use disappear or ids change.
        #[arg(long)]
        force: bool,
    },
    /// Removes a broker (refused while it has instances unless forced).
    Remove {
        /// The broker.
        name: String,
        /// Remove even with instances.
        #[arg(long)]
        force: bool,
    },
    /// Lists the kept versions of a broker.
    Versions {
        /// The broker.
        name: String,
    },
    /// Serves a version refused before (from the brokers dir or an upload), checked again;
    /// with --force, even when plans in use disappear or ids change.
    Accept {
        /// The broker.
        name: String,
        /// The version (from `versions`).
        version: String,
        /// Accept even when plans in use disappear or ids change.
        #[arg(long)]
        force: bool,
    },
    /// Shows the data keys sealing stored secrets: the primary, how many values each seals,
    /// and how many are not yet under the primary (operator only).
    Keys,
    /// Makes a new primary data key; the older values are resealed in the background and the
    /// older key retired once none uses it (`keys` shows the progress; operator only).
    RotateKey,
    /// Shows the audit trail, newest first (a tenant's token: only its own entries).
    Audit {
        /// At most this many entries.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Only entries before this seq (to page back).
        #[arg(long)]
        before: Option<i64>,
    },
    /// Lists operations in progress and those failed in the last day.
    Operations,
    /// Removes an instance (with its bindings) or a binding from the state without calling
    /// the broker; refused while an operation runs on it unless forced.
    Purge {
        /// The broker.
        name: String,
        /// The instance to purge.
        #[arg(long, conflicts_with = "binding", required_unless_present = "binding")]
        instance: Option<String>,
        /// The binding to purge.
        #[arg(long)]
        binding: Option<String>,
        /// Purge even while an operation runs.
        #[arg(long)]
        force: bool,
    },
    /// Ends a stuck operation as failed; refused while a runtime runs it unless forced.
    Fail {
        /// The broker.
        name: String,
        /// The operation's id (from `operations`).
        operation: String,
        /// What the platform is told.
        #[arg(long)]
        description: Option<String>,
        /// Fail it even while a runtime runs it.
        #[arg(long)]
        force: bool,
    },
    /// Runs a failed operation again, as a new operation with the same request.
    Retry {
        /// The broker.
        name: String,
        /// The failed operation's id (from `operations`).
        operation: String,
    },
    /// Serves a kept version of a broker again.
    Rollback {
        /// The broker.
        name: String,
        /// The version (from `versions`).
        version: String,
        /// Roll back even when plans in use disappear or ids change.
        #[arg(long)]
        force: bool,
    },
}

/// Runs `action` against the admin API at `url` with `token`; prints the answer.
///
/// # Errors
/// When the runtime cannot be reached or refuses (the message holds its description).
pub async fn run(url: &str, token: &str, action: AdminAction) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let root = format!("{}/admin", url.trim_end_matches('/'));
    let base = format!("{root}/brokers");
    let request = match action {
        AdminAction::Audit { limit, before } => {
            let before = before.map(|b| format!("&before={b}")).unwrap_or_default();
            http.get(format!("{root}/audit?limit={limit}{before}"))
        }
        AdminAction::Operations => http.get(format!("{root}/operations")),
        AdminAction::Keys => http.get(format!("{root}/keys")),
        AdminAction::RotateKey => http.post(format!("{root}/keys/rotate")),
        AdminAction::Purge {
            name,
            instance,
            binding,
            force,
        } => {
            let target = match (instance, binding) {
                (Some(instance), _) => format!("instances/{instance}"),
                (None, Some(binding)) => format!("bindings/{binding}"),
                (None, None) => bail!("name the --instance or the --binding to purge"),
            };
            http.post(format!("{base}/{name}/{target}/purge"))
                .query(&[("force", force)])
        }
        AdminAction::Fail {
            name,
            operation,
            description,
            force,
        } => {
            let request = http
                .post(format!("{base}/{name}/operations/{operation}/fail"))
                .query(&[("force", force)]);
            match description {
                Some(description) => request.query(&[("description", description)]),
                None => request,
            }
        }
        AdminAction::Retry { name, operation } => {
            http.post(format!("{base}/{name}/operations/{operation}/retry"))
        }
        AdminAction::List => http.get(&base),
        AdminAction::Show { name } => http.get(format!("{base}/{name}")),
        AdminAction::Add {
            name,
            wasm,
            manifest,
            force,
        } => {
            let wasm =
                std::fs::read(&wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
            let manifest = std::fs::read_to_string(&manifest)
                .with_context(|| format!("cannot read {}", manifest.display()))?;
            let body = json!({
                "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
                "manifest": manifest,
                "force": force,
            });
            http.put(format!("{base}/{name}")).json(&body)
        }
        AdminAction::Remove { name, force } => http.delete(format!("{base}/{name}?force={force}")),
        AdminAction::Versions { name } => http.get(format!("{base}/{name}/versions")),
        AdminAction::Rollback {
            name,
            version,
            force,
        }
        | AdminAction::Accept {
            name,
            version,
            force,
        } => http
            .post(format!("{base}/{name}/rollback"))
            .json(&json!({ "version": version, "force": force })),
    };
    let response = request.bearer_auth(token).send().await.map_err(|error| {
        let why = if error.is_connect() {
            "connection refused or no route: is it running, and is --url right?"
        } else if error.is_timeout() {
            "it did not answer in time"
        } else {
            "the request failed"
        };
        anyhow::anyhow!("cannot reach the runtime at {url}: {why} ({error})")
    })?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let description = body["description"].as_str().unwrap_or("no description");
        bail!("{status}: {description}");
    }
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}
