//! A throwaway runtime layout (brokers dir + data dir in a temp dir) and an OSB client for it.

use brokerbox::ServeConfig;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A brokers dir and a data dir under one temp dir.
pub struct Site {
    dir: tempfile::TempDir,
}

impl Site {
    /// An empty site.
    pub fn new() -> anyhow::Result<Self> {
        let site = Site {
            dir: tempfile::tempdir()?,
        };
        std::fs::create_dir_all(site.brokers())?;
        std::fs::create_dir_all(site.data())?;
        Ok(site)
    }

    /// The temp dir itself (for files of the bench's own).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Where `NAME.wasm` + `NAME.toml` go.
    pub fn brokers(&self) -> PathBuf {
        self.dir.path().join("brokers")
    }

    /// The runtime's data dir.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Registers broker `name`: its component (copied) and its manifest.
    pub fn add(&self, name: &str, wasm: &[u8], manifest: &str) -> anyhow::Result<()> {
        std::fs::write(self.brokers().join(format!("{name}.wasm")), wasm)?;
        std::fs::write(self.brokers().join(format!("{name}.toml")), manifest)?;
        Ok(())
    }

    /// The runtime config serving this site (embedded SQLite in the data dir).
    pub fn config(&self) -> ServeConfig {
        ServeConfig::new(self.data(), self.brokers())
    }
}

pub use brokerbox_tests::manifest;

/// The file broker's manifest: its credentials and the `files` grant.
pub fn file_broker_manifest(name: &str) -> String {
    manifest(name, "[grants]\nfiles = true\n")
}

/// A provision request of `plan` of `service` for instance `id`, as the runtime hands a guest
/// (no parameters, a first attempt), for calls made in process.
pub fn provision_request(
    service: &str,
    plan: &str,
    id: &str,
) -> brokerbox::sandbox::bindings::types::ProvisionRequest {
    use brokerbox::sandbox::bindings::types::{CallInfo, ProvisionRequest};
    ProvisionRequest {
        instance_id: id.into(),
        service_id: service.into(),
        plan_id: plan.into(),
        organization_guid: None,
        space_guid: None,
        parameters: None,
        context: None,
        maintenance_info: None,
        call: CallInfo {
            accepts_incomplete: false,
            originating_identity: None,
            request_identity: None,
            attempt: 1,
        },
    }
}

/// Reads a built guest component.
pub fn guest(path: &str) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read guest {path}: {e}"))
}

/// `wasm` with a custom section carrying `tag` appended: the same broker, but other bytes,
/// so the runtime sees a new component (and compiles it unless its artifact is cached).
pub fn variant(wasm: &[u8], tag: &str) -> Vec<u8> {
    let name = b"brokerbox-bench";
    let mut payload = leb128(name.len() as u64);
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    let mut out = wasm.to_vec();
    out.push(0); // custom section id
    out.extend(leb128(payload.len() as u64));
    out.extend(payload);
    out
}

fn leb128(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Speaks OSB to one broker of a server as its platform (through the project's OSB client).
#[derive(Clone)]
pub struct Osb {
    client: std::sync::Arc<brokerbox::client::Client>,
    name: String,
}

impl Osb {
    /// A client of broker `name` (credentials `NAME`/`NAME-secret`) at `server` (`host:port`).
    pub fn new(client: reqwest::Client, server: std::net::SocketAddr, name: &str) -> Self {
        let base = format!("http://{server}/brokers/{name}");
        let secret = format!("{name}-secret");
        Osb {
            client: std::sync::Arc::new(brokerbox::client::Client::with_http(
                client, &base, name, &secret,
            )),
            name: name.to_string(),
        }
    }

    /// The `Authorization` header value this client sends.
    pub fn authorization(name: &str) -> String {
        use base64::Engine;
        let pair = format!("{name}:{name}-secret");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }

    /// Sends a request; answers the status and the body (JSON, `Null` when not JSON), or
    /// `None` on a transport error.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(StatusCode, Value)> {
        let answer = self.client.call(method, path, body).await.ok()?;
        Some((answer.status, answer.body))
    }

    /// Whether `method path` answers `expected`.
    pub async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> bool {
        matches!(self.send(method, path, body).await, Some((status, _)) if status == expected)
    }

    /// The broker's catalog.
    pub async fn catalog(&self) -> anyhow::Result<Value> {
        match self.send(Method::GET, "/v2/catalog", None).await {
            Some((StatusCode::OK, body)) => Ok(body),
            other => anyhow::bail!("catalog of {} answered {other:?}", self.name),
        }
    }

    /// Provision → bind → unbind → deprovision of a new instance of `plan` of `service`, all
    /// synchronous; whether every step answered as OSB says.
    pub async fn lifecycle(&self, service: &str, plan: &str) -> bool {
        for (method, path, body, expected) in lifecycle_steps(service, plan) {
            if !self.expect(method, &path, body.as_ref(), expected).await {
                return false;
            }
        }
        true
    }

    /// [`Osb::lifecycle`], saying which step answered what when one failed.
    ///
    /// # Errors
    /// The first step that did not answer as OSB says, with its answer.
    pub async fn lifecycle_checked(&self, service: &str, plan: &str) -> anyhow::Result<()> {
        for (method, path, body, expected) in lifecycle_steps(service, plan) {
            match self.send(method.clone(), &path, body.as_ref()).await {
                Some((status, _)) if status == expected => {}
                other => anyhow::bail!("{} {method} {path} answered {other:?}", self.name),
            }
        }
        Ok(())
    }
}

/// The requests of one lifecycle of a new instance: method, path, body, expected status.
fn lifecycle_steps(service: &str, plan: &str) -> [(Method, String, Option<Value>, StatusCode); 4] {
    let instance = uuid::Uuid::new_v4();
    let binding = uuid::Uuid::new_v4();
    let instance_path = format!("/v2/service_instances/{instance}");
    let binding_path = format!("{instance_path}/service_bindings/{binding}");
    let query = format!("?service_id={service}&plan_id={plan}");
    let provision = json!({
        "service_id": service, "plan_id": plan,
        "organization_guid": "bench-org", "space_guid": "bench-space",
        "context": { "platform": "bench" },
    });
    let bind = json!({ "service_id": service, "plan_id": plan });
    [
        (
            Method::PUT,
            instance_path.clone(),
            Some(provision),
            StatusCode::CREATED,
        ),
        (
            Method::PUT,
            binding_path.clone(),
            Some(bind),
            StatusCode::CREATED,
        ),
        (
            Method::DELETE,
            format!("{binding_path}{query}"),
            None,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            format!("{instance_path}{query}"),
            None,
            StatusCode::OK,
        ),
    ]
}

/// The first service id and its first plan id of a catalog.
pub fn first_plan(catalog: &Value) -> (String, String) {
    let service = &catalog["services"][0];
    (
        service["id"].as_str().unwrap_or_default().to_string(),
        service["plans"][0]["id"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}
