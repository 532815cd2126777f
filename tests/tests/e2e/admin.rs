//! The admin API and CLI: operator and tenant flows, tenant isolation and quotas, upgrades,
//! versions, rollback, removal.

use crate::process::{RuntimeProcess, BINARY};
use base64::Engine as _;
use brokerbox::config::RuntimeConfig;
use brokerbox_tests::{guests, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const OPERATOR: &str = "operator-token-0123456789";
const TEAM_A: &str = "team-a-token-0123456789";
const TEAM_B: &str = "team-b-token-0123456789";

const CONFIG: &str = r#"
[admin]
operator_token = "operator-token-0123456789"

[[tenants]]
name = "team-a"
token = "team-a-token-0123456789"
max_brokers = 1
max_instances = 1

[[tenants]]
name = "team-b"
token = "team-b-token-0123456789"
max_concurrent_operations = 1
"#;

fn runtime_config() -> RuntimeConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runtime.toml");
    std::fs::write(&path, CONFIG).unwrap();
    RuntimeConfig::load(&path).unwrap()
}

/// A file-broker manifest for `tenant` (credentials `NAME`/`NAME-secret`), with `version`.
fn file_manifest(name: &str, tenant: &str, version: u32) -> String {
    format!(
        "tenant = \"{tenant}\"\n[credentials]\nusername = \"{name}\"\npassword = \"{name}-secret\"\n\
         [grants]\nfiles = true\n[env]\nRELEASE = \"{version}\"\n"
    )
}

async fn admin(
    rt: &TestRuntime,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("http://{}/admin/brokers{path}", rt.server().addr);
    let request = rt.client().request(method, url).bearer_auth(token);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn upload(wasm: &[u8], manifest: &str) -> Value {
    json!({ "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm), "manifest": manifest })
}

#[tokio::test]
async fn operator_and_tenants_manage_brokers_within_their_rights_and_quotas() {
    let mut rt = TestRuntime::start_with(&[], |config| config.runtime_config = runtime_config())
        .await
        .unwrap();
    let wasm = std::fs::read(guests::FILE_BROKER).unwrap();
    assert_eq!(
        admin(&rt, "wrong-token", Method::GET, "", None).await.0,
        StatusCode::UNAUTHORIZED
    );

    // A tenant adds its broker; it serves OSB at once.
    let (status, added) = admin(
        &rt,
        TEAM_A,
        Method::PUT,
        "/a-files",
        Some(upload(&wasm, &file_manifest("a-files", "team-a", 1))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{added}");
    let first_version = added["version"].as_str().unwrap().to_string();
    assert_eq!(
        rt.osb(Method::GET, "a-files", "/v2/catalog", None)
            .await
            .status,
        StatusCode::OK
    );
    // What the runtime keeps holds the password hashed only.
    let kept = std::fs::read_to_string(rt.dir.path().join("brokers/a-files.toml")).unwrap();
    assert!(
        kept.contains("password_hash") && !kept.contains("a-files-secret"),
        "{kept}"
    );

    // Its quota of brokers, and another tenant's rights.
    let (status, _) = admin(
        &rt,
        TEAM_A,
        Method::PUT,
        "/a-more",
        Some(upload(&wasm, &file_manifest("a-more", "team-a", 1))),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, listed) = admin(&rt, TEAM_B, Method::GET, "", None).await;
    assert_eq!(listed["brokers"], json!([]));
    assert_eq!(
        admin(&rt, TEAM_B, Method::GET, "/a-files", None).await.0,
        StatusCode::NOT_FOUND
    );
    let (status, _) = admin(
        &rt,
        TEAM_B,
        Method::PUT,
        "/a-files",
        Some(upload(&wasm, &file_manifest("a-files", "team-b", 1))),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = admin(
        &rt,
        TEAM_B,
        Method::PUT,
        "/b-files",
        Some(upload(&wasm, &file_manifest("b-files", "team-a", 1))),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a tenant cannot register for another"
    );
    let (_, listed) = admin(&rt, OPERATOR, Method::GET, "", None).await;
    assert_eq!(listed["brokers"][0]["name"], "a-files");

    // Its quota of instances.
    let body = json!({ "service_id": "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01", "plan_id": "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101" });
    assert_eq!(
        rt.osb(
            Method::PUT,
            "a-files",
            "/v2/service_instances/i-1",
            Some(body.clone())
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let over = rt
        .osb(
            Method::PUT,
            "a-files",
            "/v2/service_instances/i-2",
            Some(body),
        )
        .await;
    assert_eq!(over.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(over.body["description"].as_str().unwrap().contains("quota"));

    // Upgrade, a refused broken upload, versions, rollback.
    let (status, upgraded) = admin(
        &rt,
        TEAM_A,
        Method::PUT,
        "/a-files",
        Some(upload(&wasm, &file_manifest("a-files", "team-a", 2))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(upgraded["version"], first_version.as_str());
    let (status, refused) = admin(
        &rt,
        TEAM_A,
        Method::PUT,
        "/a-files",
        Some(upload(b"not wasm", &file_manifest("a-files", "team-a", 3))),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    let (_, shown) = admin(&rt, TEAM_A, Method::GET, "/a-files", None).await;
    assert_eq!(
        shown["version"], upgraded["version"],
        "the previous version keeps serving"
    );
    // The brokers dir holds what serves, so a restart serves it too.
    rt.restart().await.unwrap();
    let (_, shown) = admin(&rt, TEAM_A, Method::GET, "/a-files", None).await;
    assert_eq!(shown["version"], upgraded["version"]);
    assert_eq!(shown["instances"], 1);
    let (_, versions) = admin(&rt, TEAM_A, Method::GET, "/a-files/versions", None).await;
    let states: Vec<_> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["accepted", "accepted", "refused"], "{versions}");
    let (status, rolled) = admin(
        &rt,
        TEAM_A,
        Method::POST,
        "/a-files/rollback",
        Some(json!({ "version": first_version })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["version"], first_version.as_str());

    // Removal: refused while instances exist, then done.
    assert_eq!(
        admin(&rt, TEAM_A, Method::DELETE, "/a-files", None).await.0,
        StatusCode::CONFLICT
    );
    let query = "?service_id=5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01&plan_id=1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";
    assert_eq!(
        rt.osb(
            Method::DELETE,
            "a-files",
            &format!("/v2/service_instances/i-1{query}"),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(
        admin(&rt, TEAM_A, Method::DELETE, "/a-files", None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        rt.osb(Method::GET, "a-files", "/v2/catalog", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED,
        "gone, and named like any unknown broker"
    );
    // OSB credentials never open the admin API.
    let basic = rt
        .client()
        .get(format!("http://{}/admin/brokers", rt.server().addr))
        .basic_auth("a-files", Some("a-files-secret"));
    assert_eq!(
        basic.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn the_cli_adds_lists_and_rolls_back() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = dir.path().join("brokers");
    std::fs::create_dir_all(&brokers).unwrap();
    let config = dir.path().join("runtime.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let process = RuntimeProcess::start(
        &dir.path().join("data"),
        &brokers,
        None,
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let manifest = dir.path().join("b.toml");
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(BINARY)
            .args([
                "admin",
                "--url",
                &format!("http://{}", process.addr),
                "--token",
                TEAM_B,
            ])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    std::fs::write(&manifest, file_manifest("b-files", "team-b", 1)).unwrap();
    let first = cli(&[
        "add",
        "b-files",
        "--wasm",
        guests::FILE_BROKER,
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    std::fs::write(&manifest, file_manifest("b-files", "team-b", 2)).unwrap();
    let second = cli(&[
        "add",
        "b-files",
        "--wasm",
        guests::FILE_BROKER,
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert_ne!(first["version"], second["version"]);
    let listed = cli(&["list"]);
    assert_eq!(listed["brokers"][0]["version"], second["version"]);
    let rolled = cli(&["rollback", "b-files", first["version"].as_str().unwrap()]);
    assert_eq!(rolled["version"], first["version"]);
}

#[tokio::test]
async fn a_tenant_runs_at_most_its_quota_of_operations_at_once() {
    let slow =
        "tenant = \"team-b\"\n[credentials]\nusername = \"slow\"\npassword = \"slow-secret\"\n";
    let rt = TestRuntime::start_with(&[("slow", guests::SLOW_BROKER, slow)], |config| {
        config.runtime_config = runtime_config()
    })
    .await
    .unwrap();
    let body = json!({ "service_id": "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e01",
                       "plan_id": "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e11", "parameters": { "polls": 4 } });
    let first = rt
        .osb(
            Method::PUT,
            "slow",
            "/v2/service_instances/q-1?accepts_incomplete=true",
            Some(body.clone()),
        )
        .await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let second = rt
        .osb(
            Method::PUT,
            "slow",
            "/v2/service_instances/q-2?accepts_incomplete=true",
            Some(body.clone()),
        )
        .await;
    assert_eq!(second.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(second.body["error"], "ConcurrencyError");
    let operation = first.body["operation"].as_str().unwrap();
    rt.poll_until_done("slow", "/v2/service_instances/q-1", operation)
        .await;
    let third = rt
        .osb(
            Method::PUT,
            "slow",
            "/v2/service_instances/q-2?accepts_incomplete=true",
            Some(body),
        )
        .await;
    assert_eq!(third.status, StatusCode::ACCEPTED, "{:?}", third.body);
}
